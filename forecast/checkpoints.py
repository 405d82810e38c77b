"""Checkpoints that resume a run as it was and never run code when read (docs/training.md).

Every checkpoint carries the run's resolved config (YAML text), its command-line overrides and
its MLflow run id, and nothing but plain values and tensors, so `torch.load(weights_only=True)`
reads it: a file that needs any other class to unpickle is refused, not executed.
`resume=latest` alone then restores the run's own config; overrides given beside it must agree
with that config (repeating the original command is fine), otherwise the resume is refused.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import Container, DictConfig, OmegaConf, open_dict

from forecast.errors import ConfigError, InputFileError, UnsafeCheckpointError

log = logging.getLogger(__name__)

CONFIG_KEY = "forecast_config"  # the resolved training config, YAML text
OVERRIDES_KEY = "forecast_overrides"  # the run's command-line overrides, list[str]
RUN_ID_KEY = "mlflow_run_id"
# Lightning stores the class of a LightningModule's hparams when they are an OmegaConf
# container: a class reference, which weights_only loading rightly refuses.
_HPARAM_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")
_HPARAM_TYPE_KEYS = ("hparams_type", "datamodule_hparams_type")
_ABSENT = object()


def plain(value: Any) -> Any:
    """`value` with OmegaConf containers, mappings and paths turned into builtins (weights_only-loadable)."""
    if isinstance(value, Container):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    if isinstance(value, PurePath):
        return str(value)
    return value


def config_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML, without the `hydra` node that composed test configs carry."""
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.pop("hydra")
    return OmegaConf.to_yaml(cfg, resolve=True)


class CheckpointMetadata(Callback):
    """Put the run's config, overrides and MLflow run id in every checkpoint, as plain values only."""

    def __init__(self, config: str, overrides: Sequence[str], run_id: str | None = None):
        self.config = config
        self.overrides = list(overrides)
        self.run_id = run_id

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Add the metadata and make the hyperparameters plain (a ListConfig would not load safely)."""
        checkpoint[CONFIG_KEY] = self.config
        checkpoint[OVERRIDES_KEY] = list(self.overrides)
        if self.run_id:
            checkpoint[RUN_ID_KEY] = self.run_id
        for key in _HPARAM_KEYS:
            if key in checkpoint:
                checkpoint[key] = plain(checkpoint[key])
        for key in _HPARAM_TYPE_KEYS:
            checkpoint.pop(key, None)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors and plain values only, no code runs."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" not in text:
            raise _unreadable(path, text) from None
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it holds pickled objects other than tensors and plain "
            f"values ({_unsafe_detail(text)}), and unpickling them could run code. Resume only from "
            "checkpoints this project wrote"
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:  # truncated or not a torch file at all
        raise _unreadable(path, str(err)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputFileError(f"checkpoint {path} holds no model weights (no state_dict): not a training one")
    return checkpoint


def _unreadable(path: str | Path, text: str) -> InputFileError:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "unknown error")
    return InputFileError(f"checkpoint {path} is not a readable checkpoint: {first}")


def _unsafe_detail(text: str) -> str:
    """The part of torch's long weights-only message that names what was refused."""
    found = re.search(r"GLOBAL ([\w.]+)", text)  # "Unsupported global: GLOBAL x", "unsupported GLOBAL x"
    if found:
        return f"it needs {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    return found.group(1).strip() if found else "not allowed by torch.load(weights_only=True)"


def resolve_resume(resume: str | None, log_dir: str) -> str | None:
    """`resume`: null, `latest` (newest last.ckpt under logs/), a .ckpt file, or a run folder."""
    if not resume:
        return None
    if resume == "latest":
        found = sorted(Path(log_dir).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise InputFileError(
                f"resume=latest: nothing to resume, no checkpoints/last.ckpt under {log_dir}"
            )
        return str(found[-1].resolve())
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise InputFileError(f"resume={resume}: no checkpoint at {path}")
    return str(path.resolve())


def task_overrides() -> list[str]:
    """This job's command-line overrides, without `hydra.*` and `resume` (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    overrides = list(HydraConfig.get().overrides.task)
    return [line for line, key in zip(overrides, override_keys(overrides), strict=True) if _ours(key)]


def _ours(key: str) -> bool:
    return key != "resume" and key != "hydra" and not key.startswith("hydra.")


def override_keys(overrides: Sequence[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


def restore_config(
    cfg: DictConfig, checkpoint: Mapping[str, Any], path: str, overrides: Sequence[str]
) -> DictConfig:
    """The run's own config from `checkpoint`, with `resume` set to `path`.

    `overrides` (this command's, as from `task_overrides`) must agree with it: each one is
    either one of the run's original overrides or gives the value the run already has.
    Anything else would change the run mid-way (a net of another size, other data, a run
    whose logged params no longer describe it), so it is a ConfigError, not applied.
    A checkpoint from before configs were saved resumes with `cfg` as composed.
    """
    text = checkpoint.get(CONFIG_KEY)
    if not isinstance(text, str):
        log.warning(
            "checkpoint %s holds no config (an older version wrote it): resuming with the "
            "command line's config, which must repeat the run's overrides",
            path,
        )
        with open_dict(cfg):
            cfg.resume = path
        return cfg
    saved = OmegaConf.create(text)
    original = [str(o) for o in checkpoint.get(OVERRIDES_KEY) or []]
    conflicts = _conflicts(cfg, saved, [o for o in overrides if o not in original])
    if conflicts:
        raise ConfigError(
            f"resume={path} restores the run's own config from the checkpoint, and these overrides "
            f"would change it: {'; '.join(conflicts)}. Resume with resume=... alone (or with the "
            "run's original overrides), or start a new run"
        )
    with open_dict(saved):
        saved.resume = path
    OmegaConf.set_struct(saved, True)
    log.info(
        "resume: restored the run's config from %s (original overrides: %s)",
        path,
        " ".join(original) or "none",
    )
    return saved


def _conflicts(cfg: DictConfig, saved: DictConfig, overrides: Sequence[str]) -> list[str]:
    """The overrides whose composed value differs from the run's (or cannot be checked)."""
    if not overrides:
        return []
    current = cfg.copy()
    with open_dict(current):
        current.pop("hydra", None)
        if "paths" in saved:  # where the run writes is the run's, so interpolations resolve alike
            current.paths = saved.paths
    conflicts = []
    for line, key in zip(overrides, override_keys(overrides), strict=True):
        new, old = _value(current, key), _value(saved, key)
        if new is _ABSENT and old is _ABSENT:
            conflicts.append(f"{line} (not among the run's overrides)")
        elif new != old:
            conflicts.append(f"{line} (the run has {key}: {'nothing' if old is _ABSENT else repr(old)})")
    return conflicts


def _value(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if isinstance(node, Container):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    return node
