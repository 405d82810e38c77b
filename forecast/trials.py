"""A sweep's trial as the training job sees it: the study's storage, and the live Optuna trial
the sweeper created for this job.

The `forecast_optuna` Hydra sweeper (hydra_plugins/) launches the jobs and imports these; the
training job (`forecast.training`) reattaches to its trial here, so the package never imports
the plugin. Light on purpose: no Lightning, no torch (the sweeper's process imports it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    import optuna

SQLITE_PREFIX = "sqlite:///"


def resolve_storage(url: str | None) -> str | None:
    """Make a relative SQLite path absolute so jobs in other cwds/processes open the same file."""
    if url is None or not url.startswith(SQLITE_PREFIX):
        return url
    path, sep, query = url[len(SQLITE_PREFIX) :].partition("?")
    if path in ("", ":memory:"):
        return url
    path = os.path.abspath(path)
    # SQLite creates the file but not its folder.
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{path}{sep}{query}"


def trial_from_config(
    cfg: DictConfig, pruner: optuna.pruners.BasePruner | None = None
) -> optuna.trial.Trial | None:
    """Return the job's live Trial (for report/should_prune), or None outside a sweep."""
    study_name = OmegaConf.select(cfg, "optuna.study_name", default=None)
    storage = OmegaConf.select(cfg, "optuna.storage", default=None)
    number = OmegaConf.select(cfg, "optuna.trial_number", default=None)
    if study_name is None or storage is None or number is None:
        return None

    import optuna

    study = optuna.load_study(
        study_name=study_name, storage=storage, pruner=pruner if pruner is not None else _sweeper_pruner()
    )
    # Optuna has no public "trial by number" lookup that returns a live Trial.
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def _sweeper_pruner() -> optuna.pruners.BasePruner:
    # Pruners are not persisted in the storage, so rebuild the one configured for the
    # sweep (the job's hydra config carries it); load_study would default to MedianPruner.
    import optuna

    if HydraConfig.initialized():
        node = OmegaConf.select(HydraConfig.get(), "sweeper.pruner", default=None)
        if node is not None:
            return instantiate(node)
    return optuna.pruners.NopPruner()
