"""Warm starts: a new training that begins from a trained model's weights (`init_from=`).

The parent is a registered or logged model (`models:/NAME@ALIAS`, `models:/NAME/3`,
`runs:/ID/model`, or a bare run id), a saved model folder, a Forecaster in memory (refits in the
backtest), or a Lightning checkpoint. What is taken from it: the net's weights and, for a model
with covariates, its covariate encoder (so a category it never saw is code 0, as at forecast
time). What is not: the scaler (every series of the new data gets its own, as in any training)
and the optimizer state (a fine-tune starts a fresh AdamW at `model.lr`).

The job must build the same net: `check_compatible` names every difference (sizes, cell,
covariates, loss) in one line instead of a shape error from `load_state_dict`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forecast.data.covariate_encoder import CovariateEncoder
from forecast.data.covariates import CovariateConfig
from forecast.errors import ConfigError, ModelNotFoundError
from forecast.forecaster import Forecaster
from forecast.models.registry import ENSEMBLE

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# Net options that may change between parent and child without changing a weight's shape or role.
_FREE = frozenset({"dropout"})
# Where a user sets each net option, for the error message.
_DATA_KEYS = frozenset({"input_size", "horizon"})


@dataclass
class Parent:
    """The model a warm start begins from, and where it came from (the child's lineage)."""

    source: str  # what init_from said
    net_kind: str
    net_params: dict[str, Any]
    state: dict[str, torch.Tensor]  # the net's state dict
    encoder: CovariateEncoder | None = None
    scaler: str | None = None
    lineage: dict[str, str] = field(default_factory=dict)  # run id, name, version, uri
    config: dict[str, Any] | None = None  # the options it was trained with (`SavedConfig`), if saved

    @property
    def members(self) -> list[dict[str, Any]]:
        """Each member's net values (one for a single model)."""
        if self.net_kind == ENSEMBLE:
            return [dict(p) for p in self.net_params["members"]]
        return [self.net_params]

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member `i`'s weights, keyed as a single net's."""
        if self.net_kind != ENSEMBLE:
            return self.state
        prefix = f"members.{i}."
        return {k[len(prefix) :]: v for k, v in self.state.items() if k.startswith(prefix)}

    @classmethod
    def of(cls, forecaster: Forecaster, source: str, lineage: Mapping[str, str] | None = None) -> Parent:
        """A parent from a model in memory (a folder or a registry entry once loaded)."""
        s = forecaster.settings
        state = {k: v.detach().clone() for k, v in forecaster.net.state_dict().items()}
        parent = cls(
            source, s.net, dict(s.net_params), state, forecaster.encoder, s.scaler, dict(lineage or {})
        )
        parent.config = s.config
        return parent


def resolve_parent(init_from: str | Path | Forecaster, root_dir: str | Path = ".") -> Parent:
    """Load what `init_from` names (see the module docstring); one-line errors when it is not there."""
    if isinstance(init_from, Forecaster):
        return Parent.of(init_from, "<a fitted model>")
    source = str(init_from)
    path = Path(source)
    if source.startswith(("models:/", "runs:/")) or _RUN_ID.match(source):
        from forecast.tracking.resolve import load_registered
        from forecast.tracking.store import use_store

        use_store(root_dir)
        uri = f"runs:/{source}/model" if _RUN_ID.match(source) else source
        forecaster, ref = load_registered(uri)
        lineage = {"uri": uri, "run_id": ref.run_id, "name": ref.name, "version": ref.version}
        return Parent.of(forecaster, source, {k: v for k, v in lineage.items() if v})
    if path.is_dir():
        return Parent.of(Forecaster.load(path), source, {"uri": str(path.resolve())})
    if path.is_file() and path.suffix == ".ckpt":
        return _from_checkpoint(path)
    raise ModelNotFoundError(
        f"init_from={source}: no such model; give models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, "
        "a run id, a saved model folder or a .ckpt file"
    )


def _from_checkpoint(path: Path) -> Parent:
    """A Lightning checkpoint's net: its weights and the values it was built with (no covariate
    encoder is saved in a checkpoint: the new data's is fitted, and must size the net alike)."""
    from forecast.checkpoints import load_checkpoint
    from forecast.models.module import ForecastModule

    saved = load_checkpoint(path)
    hparams = dict(saved.get("hyper_parameters") or {})
    module = ForecastModule(**hparams)
    model = {k: v for k, v in module.config.to_dict().items() if k not in ("input_size", "horizon")}
    state = {k[len("net.") :]: v for k, v in saved["state_dict"].items() if k.startswith("net.")}
    parent = Parent(
        str(path), module.net_kind, dict(module.net_params), state, lineage={"uri": str(path.resolve())}
    )
    parent.config = {"model": model}
    return parent


def check_covariates(parent: Parent, declared: CovariateConfig) -> None:
    """The job declares the parent's covariates, column for column (its encoder is reused)."""
    enc = parent.encoder
    theirs: dict[str, list[str]] = {"futr_exog": [], "hist_exog": [], "static": [], "calendar": []}
    if enc is not None:
        theirs = {
            "futr_exog": sorted(enc.futr_num + enc.futr_cat),
            "hist_exog": sorted(enc.hist_num + enc.hist_cat),
            "static": sorted(enc.static_num + enc.static_cat),
            "calendar": sorted(enc.calendar),
        }
    ours = {
        "futr_exog": sorted(declared.futr),
        "hist_exog": sorted(declared.hist),
        "static": sorted(declared.static),
        "calendar": sorted(declared.calendar),
    }
    differs = [f"data.{k} {ours[k]} != {theirs[k]}" for k in ours if ours[k] != theirs[k]]
    if enc is not None:
        cats = sorted(enc.futr_cat + enc.hist_cat + enc.static_cat)
        if sorted(c for c in declared.categorical if c in sum(ours.values(), [])) != cats:
            differs.append(f"data.categorical {sorted(declared.categorical)} != {cats}")
    if differs:
        raise ConfigError(
            f"init_from={parent.source}: the job's covariates differ from the parent's: {'; '.join(differs)}"
        )


def check_compatible(parent: Parent, net_params: Mapping[str, Any], scaler: str | None = None) -> None:
    """The net this job builds (`net_params` of one member) is the parent's: else one line naming
    every option that differs, as the job's config key."""
    theirs = parent.members[0]
    keys = sorted((set(theirs) | set(net_params)) - _FREE)
    differs = []
    for key in keys:
        mine, old = net_params.get(key), theirs.get(key)
        if _plain(mine) != _plain(old):
            where = "data" if key in _DATA_KEYS else "model"
            differs.append(f"{where}.{key} {mine!r} != {old!r}")
    if scaler is not None and parent.scaler is not None and scaler != parent.scaler:
        differs.append(f"data.scaler {scaler!r} != {parent.scaler!r}")
    if differs:
        raise ConfigError(
            f"init_from={parent.source}: the job builds a different model than the parent's (job != parent): "
            + "; ".join(differs)
        )


def _plain(value: Any) -> Any:
    """Lists and tuples alike, dicts by value (covariate dims come back from JSON as lists)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_member(net: nn.Module, parent: Parent, i: int = 0) -> None:
    """Member `i`'s weights (the single model's for i = 0) into `net`, strictly."""
    net.load_state_dict(parent.member_state(i % len(parent.members)))


# Options that never come from the parent: where the new data is.
_OWN_DATA = frozenset({"path", "dataset"})
# The job's own, never the parent's: a fine-tune's rate is a tenth of the config's
# (`forecast.training.FINETUNE_LR_FACTOR`); taking the parent's would shrink it tenfold per generation.
_OWN_MODEL = frozenset({"lr"})


def adopt_config(cfg: Any, parent: Parent, overridden: set[str]) -> Any:
    """The job's config with the parent's saved data and model options wherever the command line
    did not set them itself (`overridden`: the override keys, `data.horizon`, `model`, ...):
    `init_from=models:/NAME@champion data.path=new.parquet` fine-tunes the champion as it was
    built. An option the command sets to another value than the parent's is then the one-line
    mismatch of `check_compatible` (or a choice that changes no weight, such as `model.lr`). A
    model group chosen on the command line (`model=gru`) is the command's, not adopted."""
    from omegaconf import OmegaConf, open_dict

    saved = parent.config or {}
    cfg = cfg.copy()
    adopted = []
    with open_dict(cfg):
        for group in ("data", "model"):
            if group == "model" and "model" in overridden:
                continue
            for key, value in (saved.get(group) or {}).items():
                if (
                    key in _OWN_DATA
                    or (group == "model" and (key in _DATA_KEYS or key in _OWN_MODEL))
                    or f"{group}.{key}" in overridden
                ):
                    continue
                if OmegaConf.select(cfg, f"{group}.{key}", default=None) != value:
                    adopted.append(f"{group}.{key}")
                OmegaConf.update(cfg, f"{group}.{key}", value, force_add=True)
    if adopted:
        log.info("init_from=%s: took the parent's %s", parent.source, ", ".join(adopted))
    return cfg
