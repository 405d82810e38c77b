"""The search-path plugin (hydra_plugins/forecast_searchpath): our config groups in a user's Hydra app."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]

USER_CONFIG = """\
defaults:
  - forecast/model: bilstm
  - forecast/data: file
  - _self_

forecast:
  data:
    path: sales.parquet
"""

USER_APP = """\
import json

import hydra
from omegaconf import OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    print(json.dumps(OmegaConf.to_container(cfg.forecast)))


main()
"""


def _user_app(folder: Path, config: str = USER_CONFIG) -> Path:
    """A user's own Hydra app in `folder`: app.py and conf/config.yaml."""
    (folder / "conf").mkdir(parents=True)
    (folder / "conf" / "config.yaml").write_text(config)
    (folder / "app.py").write_text(USER_APP)
    return folder


def _groups() -> list[str]:
    return GlobalHydra.instance().config_loader().list_groups("")


@pytest.mark.slow  # the user's app in a process of its own: the plugin found from the path alone
def test_external_app_composes_forecast_model_and_data(tmp_path):
    app = _user_app(tmp_path / "myapp")
    proc = subprocess.run(
        [sys.executable, "app.py", "forecast.model.hidden_size=32"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout.strip().splitlines()[-1])
    model, data = cfg["model"], cfg["data"]
    assert model["_target_"] == "forecast.models.ForecastModule"
    # bilstm.yaml extends `lstm` (a relative default): both resolve under forecast/model/
    assert model["bidirectional"] is True and model["cell"] == "lstm"
    assert model["hidden_size"] == 32
    assert data["_target_"] == "forecast.data.SeriesDataModule"
    assert data["path"] == "sales.parquet" and data["horizon"] == 24 and data["missing"] == "error"


def test_package_override_places_the_groups_where_their_interpolations_look(tmp_path):
    """`forecast/model@model` puts the model at `model`, so `${data.input_size}` resolves."""
    config = textwrap.dedent(
        """\
        defaults:
          - forecast/model@model: gru
          - forecast/data@data: file
          - _self_
        data:
          path: sales.parquet
          input_size: 12
          horizon: 3
        """
    )
    conf = _user_app(tmp_path / "myapp", config) / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        small = ["model.hidden_size=8", "model.head_hidden=8", "model.segment_len=3"]
        cfg = compose("config", overrides=small)
        assert "forecast" in _groups()
    assert cfg.model.cell == "gru" and cfg.model.input_size == 12 and cfg.model.horizon == 3
    module = instantiate(cfg.model)
    assert module.hparams.cell == "gru" and module.hparams.horizon == 3


def test_unknown_option_lists_ours(tmp_path):
    conf = _user_app(tmp_path / "myapp", "defaults:\n  - forecast/model: transformer\n") / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(MissingConfigException) as raised:
            compose("config")
    assert raised.value.options == ["attention", "bilstm", "gru", "lstm", "peephole", "slstm"]


@pytest.mark.parametrize("init", ["dir", "module"])
def test_our_own_apps_get_no_second_copy(init):
    """Our pipelines read conf/ as their primary configs: `forecast/` would list every group twice."""
    if init == "dir":
        context = initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3")
    else:
        context = initialize_config_module(config_module="forecast.conf", version_base="1.3")
    with context:
        groups = _groups()
        cfg = compose("train", overrides=["model=bilstm"])
    assert "model" in groups and "forecast" not in groups
    assert cfg.model.bidirectional is True
    assert OmegaConf.select(cfg, "forecast") is None
