"""Hyperparameter sweeps: Optuna pruning inside a trial, MLflow parent/child runs, the best trial.

The sweep itself is the `forecast_optuna` Hydra sweeper (hydra_plugins/); this module is the
training side of it: a job that runs as trial N reports its validation metric each epoch (and
stops when the pruner says so), logs to a child run of the study's parent run, and at the end
of the multirun a Hydra callback tags the best trial and registers it when `register=best`.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import Callback
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from forecast.tracking.registry import register
from forecast.tracking.store import ensure_experiment, use_store
from forecast.trials import resolve_storage

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
# Study user attribute the sweeper sets to {name: str}: each swept parameter's expression
# (`model.hidden_size` -> `choice(32, 64, 128)`) and its settings (`optuna.sampler`, ...,
# storage password masked). The parent run logs it as params when it is created.
SWEEP_PARAMS_ATTR = "sweep_params"
STUDY_TAG, TRIAL_TAG, STATE_TAG = "optuna.study", "optuna.trial", "optuna.state"
SWEEP_TAG = "forecast.sweep"


class OptunaPruning(Callback):
    """Report the monitored validation metric to the trial each epoch; stop when pruned.

    Rank zero talks to the study and broadcasts the decision, so every DDP rank stops together.
    Stopping (rather than raising) lets the run close cleanly; the caller raises TrialPruned.
    """

    def __init__(self, trial: Any, monitor: str):
        self.trial, self.monitor, self.pruned = trial, monitor, False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        prune = False
        if trainer.is_global_zero:
            self.trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune):
            self.pruned = True
            trainer.should_stop = True


def parent_run(trial: Any, experiment_name: str, root_dir: str) -> str:
    """The study's MLflow parent run: found by the study's attribute or tag, else created.

    Workers sharing a study may race to create it; the oldest parent wins and a duplicate is
    deleted, so every trial ends up under one parent. A new parent logs the study's search
    space and settings (`SWEEP_PARAMS_ATTR`) as its params.
    """
    study = trial.study
    known = study.user_attrs.get(PARENT_ATTR)
    if known:
        return known
    experiment_id = ensure_experiment(experiment_name, root_dir)
    client = MlflowClient()
    query = f"tags.`{SWEEP_TAG}` = '{study.study_name}'"

    def oldest() -> str | None:
        order = ["attributes.start_time ASC"]
        runs = client.search_runs([experiment_id], query, order_by=order, max_results=1)
        return runs[0].info.run_id if runs else None

    parent = oldest()
    if parent is None:
        mine = client.create_run(
            experiment_id, run_name=f"sweep {study.study_name}", tags={SWEEP_TAG: study.study_name}
        ).info.run_id
        _log_sweep_params(client, mine, study.user_attrs.get(SWEEP_PARAMS_ATTR) or {})
        parent = oldest() or mine
        if parent != mine:
            client.delete_run(mine)
    study.set_user_attr(PARENT_ATTR, parent)
    return parent


def _log_sweep_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    # MLflow keys allow alphanumerics, `_ - . / : ` and spaces: `+model.x` -> `model.x`, `a@b` -> `a_b`.
    items = [Param(re.sub(r"[^\w./: -]", "_", k.lstrip("+~")), str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def trial_tags(trial: Any, parent_id: str) -> dict[str, str]:
    """Tags that make a training run the child run of its sweep."""
    return {"mlflow.parentRunId": parent_id, STUDY_TAG: trial.study.study_name, TRIAL_TAG: str(trial.number)}


class MLflowSweepCallback(HydraCallback):
    """At the end of a multirun: tag the best trial's run and the parent; `register=best` registers it."""

    def __init__(self, alias: str = "candidate"):
        self.alias = alias

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the store and experiment before parallel jobs start (a new SQLite store would
        otherwise have every job race to create its schema)."""
        experiment = OmegaConf.select(config, "logger.experiment_name", default=None)
        if experiment:
            ensure_experiment(experiment, _root_dir(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import optuna

        sweeper = config.hydra.sweeper
        storage = resolve_storage(sweeper.get("storage"))
        if storage is None:
            log.warning("sweep study is in memory; cannot tag the best MLflow run")
            return
        study_name = sweeper.get("study_name") or str(config.hydra.job.name)
        study = optuna.load_study(study_name=study_name, storage=storage)
        completed = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        parent = study.user_attrs.get(PARENT_ATTR)
        if not completed or parent is None:
            if completed:  # the sweeper printed the best trial; say why no run follows
                print(f"  MLflow run: none (study {study_name} has no MLflow parent run)", flush=True)
            log.warning("no completed trial with an MLflow run in study %s", study_name)
            return
        use_store(_root_dir(config))
        client = MlflowClient()
        best = study.best_trial
        experiment_id = client.get_run(parent).info.experiment_id
        children = client.search_runs([experiment_id], f"tags.`{STUDY_TAG}` = '{study_name}'")
        best_run = None
        for run in children:
            is_best = run.data.tags.get(TRIAL_TAG) == str(best.number)
            client.set_tag(run.info.run_id, "best", str(is_best).lower())
            if is_best:
                best_run = run
        client.set_tag(parent, "best_trial", str(best.number))
        client.log_metric(parent, f"best/{config.get('optimized_metric', 'value')}", float(best.value))
        client.set_terminated(parent, "FINISHED")
        if best_run is None:
            print(f"  MLflow run: none found for best trial {best.number}", flush=True)
            return
        client.set_tag(parent, "best_run_id", best_run.info.run_id)
        # Ends the block the sweeper printed (best trial, value, params, results file).
        print(f"  MLflow run: {best_run.info.run_id} (tagged best=true; parent run {parent})", flush=True)
        mode = str(config.get("register"))
        if mode == "best":
            model_uri = best_run.data.tags.get("model_uri")
            if not model_uri:
                log.warning("best run %s logged no model; nothing registered", best_run.info.run_id)
                return
            register(model_uri, config.registry.name, self.alias, tags={"run_id": best_run.info.run_id})
        elif mode.startswith("best:"):
            k = best_k(mode)
            ranked = sorted(completed, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")
            runs = {run.data.tags.get(TRIAL_TAG): run for run in children}
            chosen = [(t.value, runs[str(t.number)]) for t in ranked if runs.get(str(t.number)) is not None]
            chosen = [(value, run) for value, run in chosen if run.data.tags.get("model_uri")][:k]
            if len(chosen) < k:
                log.warning(
                    "register=%s: only %d completed trials logged a model; combining those", mode, len(chosen)
                )
            self._register_ensemble(config, experiment_id, parent, chosen)

    def _register_ensemble(self, config: DictConfig, experiment_id: str, parent: str, chosen: list) -> None:
        """The K best trials (their values and runs) as one ensemble model: logged to a child run
        of the sweep (each member's trial, run and validation figure beside the ensemble's own)
        and registered."""
        import mlflow

        from forecast.ensembles import ensemble_of_models, input_example
        from forecast.models.ensemble import DEFAULT_COMBINE
        from forecast.tracking.pyfunc import log_forecaster

        metric = str(config.get("optimized_metric") or "val/loss")
        runs = [run for _, run in chosen]
        ensemble, scores, dm = ensemble_of_models(
            [run.data.tags["model_uri"] for run in runs],
            str(OmegaConf.select(config, "ensemble.combine", default=None) or DEFAULT_COMBINE),
            list(config.get("intervals") or []),
            str(config.get("interval_scale", "window")),
        )
        trials = ",".join(run.data.tags.get(TRIAL_TAG, "?") for run in runs)
        tags = {
            "mlflow.parentRunId": parent,
            "ensemble.trials": trials,
            "ensemble.member_runs": ",".join(run.info.run_id for run in runs),
        }
        name = f"ensemble of {len(runs)} best trials"
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            mlflow.log_params({"ensemble.members": len(runs), "ensemble.combine": ensemble.net.combine})
            members = {
                f"member{i}/{metric.replace('/', '_')}": float(value) for i, (value, _) in enumerate(chosen)
            }
            mlflow.log_metrics({**scores, **members})
            info = log_forecaster(ensemble, input_example(dm))
            mlflow.set_tag("model_uri", info.model_uri)
        version = register(
            info.model_uri,
            config.registry.name,
            self.alias,
            tags={"run_id": run.info.run_id, "ensemble.trials": trials},
        )
        print(
            f"  ensemble of trials {trials}: {metric} {scores.get(metric, float('nan')):.4g} "
            f"(members {', '.join(f'{v:.4g}' for v in members.values())}); registered "
            f"models:/{config.registry.name}@{self.alias} = version {version.version}",
            flush=True,
        )


def best_k(mode: str) -> int:
    """K of `register=best:K`, a positive integer, else a one-line error."""
    from forecast.errors import ConfigError

    try:
        k = int(mode.split(":", 1)[1])
    except ValueError:
        k = 0
    if k < 1:
        raise ConfigError(f"register={mode}: give best:K with K a positive number of trials (e.g. best:3)")
    return k


def _root_dir(config: DictConfig) -> str:
    return OmegaConf.select(config, "paths.root_dir", default=None) or os.getcwd()
