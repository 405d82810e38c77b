"""The parts are named once, in their registries: every name a config or a sweep uses is
registered, and an unknown name is refused with the registered ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from covariate_helpers import MODEL_CONF, model_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from forecast.models import RecurrentForecaster
from forecast.models.decoders import DECODERS
from forecast.models.distributions import DISTRIBUTIONS
from forecast.models.encoders import ENCODERS
from forecast.models.module import LOSSES
from forecast.models.outputs import OUTPUTS

SWEEPS = sorted((MODEL_CONF.parent / "hparams_search").glob("*.yaml"))
# The model options that name a part, and the names each may take.
REGISTRIES = {"model.cell": ENCODERS, "model.decoder": DECODERS, "model.loss": LOSSES}


def _searched(sweep: Path) -> dict[str, list[str]]:
    """The part names a sweep file searches (or fixes), per option."""
    params = OmegaConf.load(sweep).hydra.sweeper.params
    parser = OverridesParser.create()
    names = {}
    for key in REGISTRIES.keys() & params.keys():
        override = parser.parse_override(f"{key}={params[key]}")
        names[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [params[key]]
    return names


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda path: path.stem)
def test_every_part_a_sweep_searches_is_registered(sweep):
    """A sweep chooses which names it searches (its own list); each must be one the net builds."""
    for key, names in _searched(sweep).items():
        assert names and set(names) <= set(REGISTRIES[key]), (
            f"{sweep.name}: {key} searches {names}; registered: {list(REGISTRIES[key])}"
        )


def test_the_lstm_sweep_searches_registered_cells():
    cells = _searched(MODEL_CONF.parent / "hparams_search" / "lstm_optuna.yaml")["model.cell"]
    assert len(cells) > 1 and set(cells) <= set(ENCODERS)


@pytest.mark.parametrize("name", sorted(path.stem for path in MODEL_CONF.glob("*.yaml")))
def test_every_model_config_names_registered_parts(name):
    config = model_config(name)
    for key, registry in REGISTRIES.items():
        option = key.removeprefix("model.")
        assert config[option] in registry, f"conf/model/{name}.yaml: {option}={config[option]!r}"


@pytest.mark.parametrize(
    ("option", "registry"),
    [("cell", ENCODERS), ("decoder", DECODERS), ("output", [*OUTPUTS, *DISTRIBUTIONS])],
)
def test_an_unknown_part_is_refused_with_the_registered_names(option, registry):
    with pytest.raises(ValueError, match=f"unknown {option} 'nope'; use one of") as error:
        RecurrentForecaster(input_size=4, horizon=2, **{option: "nope"})
    assert all(name in str(error.value) for name in registry)
