"""The training job: config in, tracked (and optionally registered) model out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from forecast.calibration import window_residuals
from forecast.checkpoints import (
    OVERRIDES_KEY,
    RUN_ID_KEY,
    CheckpointMetadata,
    config_yaml,
    load_checkpoint,
    resolve_resume,
    restore_config,
    task_overrides,
)
from forecast.cli import one_line
from forecast.config import SavedConfig, train_options
from forecast.console import EpochLine, on_terminal, quiet, summary
from forecast.data.datamodule import SeriesDataModule
from forecast.distributed import hydra_job_argv
from forecast.errors import TrackingUnavailableError
from forecast.finite import require_finite
from forecast.forecaster import Forecaster, ForecasterSettings
from forecast.intervals import calibrate, check_levels, check_scale
from forecast.lr_finder import check_tune_lr, find_lr
from forecast.models.module import ForecastModule
from forecast.publishing import Published, flatten, keep_unpublished_run, publish
from forecast.stale_runs import claim_run
from forecast.tracking.http import check_server, is_outage
from forecast.tracking.http import reason as outage_reason
from forecast.tracking.outage import ResilientMLFlowLogger
from forecast.tracking.pyfunc import serving_exports
from forecast.tracking.store import tracking_uri
from forecast.trials import trial_from_config
from forecast.tuning import STATE_TAG, OptunaPruning, parent_run, trial_tags

log = logging.getLogger(__name__)


def build_forecaster(
    module: ForecastModule,
    dm: SeriesDataModule,
    intervals: Sequence[int] = (),
    interval_scale: str = "window",
) -> Forecaster:
    """Package the trained net with the data module's scaler and settings.

    `intervals` (levels in percent): conformal intervals calibrated on the validation windows,
    out of sample for the weights though early stopping chose among checkpoints on them;
    `interval_scale`: their unit, `series` or `window` (`forecast.intervals`).
    """
    assert dm.scaler is not None and dm.data_freq is not None, "data module not set up"
    settings = ForecasterSettings(
        net=module.net_kind,
        net_params=dict(module.net_params),
        input_size=dm.input_size,
        horizon=dm.horizon,
        freq=dm.data_freq,
        columns={
            "id_col": dm.columns.id_col,
            "time_col": dm.columns.time_col,
            "target_col": dm.columns.target_col,
        },
        scaler=dm.scaler.kind,
        quantiles=sorted(module.hparams.quantiles or []),
        missing=dm.missing,
        covariates=None if dm.covariates is None else dm.covariates.to_dict(),
    )
    forecaster = Forecaster(module.net.cpu(), dm.scaler, settings)
    if intervals:
        scores = window_residuals(forecaster, dm.datasets["val"], dm.eval_batch_size, interval_scale)
        forecaster.intervals = calibrate(scores, intervals, "validation", interval_scale)
        if forecaster.intervals is not None:
            log.info(
                "intervals %s%% calibrated on %d validation windows", forecaster.intervals.levels, len(scores)
            )
    return forecaster


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None


@dataclass
class FitResult:
    """What a fit leaves behind: the best weights, the data, the scores and the MLflow run."""

    module: ForecastModule
    datamodule: SeriesDataModule
    trainer: L.Trainer
    metrics: dict[str, float]
    value: float | None
    run_id: str | None
    pruned: bool = False
    config: DictConfig | None = None  # the config the fit ran with (a resume restores the run's own)


def fit(
    cfg: DictConfig, on_run: Callable[[str], None] | None = None, frame: pd.DataFrame | None = None
) -> FitResult:
    """Fit, restore the best checkpoint, score the test split (when there is one).

    `on_run` is told the MLflow run id as soon as the run exists, so a caller can mark the
    run FAILED when anything later goes wrong. `frame`: the table in memory (the Python API),
    instead of `data.path` / `data.dataset`.
    """
    quiet()
    # A resume reads its checkpoint safely (weights only) before anything else and restores
    # the run's own config from it (forecast.checkpoints; docs/training.md).
    resume = resolve_resume(cfg.get("resume"), cfg.paths.log_dir)
    # Bad interval settings fail now, not after the training.
    check_levels(cfg.get("intervals"))
    check_scale(cfg.get("interval_scale", "window"))
    if cfg.get("tune_lr") and not resume:
        check_tune_lr(cfg.trainer)
    saved = load_checkpoint(resume) if resume else {}
    overrides = task_overrides()
    if resume:
        cfg = restore_config(cfg, saved, resume, overrides)
        overrides = list(saved.get(OVERRIDES_KEY) or overrides)
    resumed_run_id: str | None = saved.get(RUN_ID_KEY)
    del saved  # only the metadata is needed here; Lightning reads the weights itself
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    # A frame in memory cannot go through the config (OmegaConf holds plain values): a partial.
    dm: SeriesDataModule = (
        instantiate(cfg.data) if frame is None else instantiate(cfg.data, _partial_=True)(frame=frame)
    )
    if cfg.get("logger") and not cfg.logger.get("offline"):
        # A tracking server that is down fails the start in seconds, before the data is read.
        check_server(tracking_uri(cfg.paths.root_dir), cfg.logger.get("request_timeout", 30))
    # Validate the data before any MLflow run exists: bad data leaves no run behind.
    dm.setup("fit")
    module: ForecastModule = instantiate(cfg.model, **dm.model_sizes())  # covariate widths, series
    callbacks: list[Callback] = [instantiate(cb) for cb in (cfg.get("callbacks") or {}).values() if cb]
    trial = trial_from_config(cfg)

    logger = False
    if cfg.get("logger"):
        tags: dict[str, str] = {}
        if trial is not None and rank_zero_only.rank == 0:
            tags = trial_tags(trial, parent_run(trial, cfg.logger.experiment_name, cfg.paths.root_dir))
        run_id = resumed_run_id
        name = cfg.logger.get("run_name") or (None if run_id else run_name(cfg, trial))
        logger = instantiate(cfg.logger, run_id=run_id, tags=tags, run_name=name)
        if on_run is not None and rank_zero_only.rank == 0:
            on_run(logger.run_id)
        if rank_zero_only.rank == 0:
            # Host/PID tags; runs of killed trainings still RUNNING are closed (forecast.stale_runs).
            claim_run(logger.experiment, logger.run_id, logger.experiment_id, resumed=run_id is not None)
            if run_id is None:  # a resumed run already holds its params; MLflow forbids changes
                logger.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))
    own_run = logger.run_id if logger and rank_zero_only.rank == 0 else None
    callbacks.append(CheckpointMetadata(config_yaml(cfg), overrides, own_run))
    pruning = OptunaPruning(trial, cfg.optimized_metric) if trial is not None else None
    if pruning is not None:
        callbacks.append(pruning)
    bar = bool(cfg.trainer.get("enable_progress_bar", True)) and on_terminal()
    if not bar:
        callbacks.append(EpochLine())  # a scheduler's log gets one line per epoch instead
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, enable_progress_bar=bar)

    if cfg.get("tune_lr"):
        find_lr(trainer, module, dm, resumed=bool(resume))
    with hydra_job_argv([f"resume={resume}"] if resume else None):
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        checkpoint = _checkpoint_callback(trainer)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if dm.test_size and not (pruning and pruning.pruned):
            trainer.test(
                module, datamodule=dm, ckpt_path="best" if best else None, weights_only=True, verbose=False
            )
            metrics.update(
                {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            )
        elif best:
            state = load_checkpoint(best)["state_dict"]
            module.load_state_dict(state)

    target = cfg.get("optimized_metric")
    value = metrics.get(target) if target else None
    if best and checkpoint.monitor == target and checkpoint.best_model_score is not None:
        value = float(checkpoint.best_model_score)
    if value is not None and not np.isfinite(value):
        log.warning("optimized metric %s is %s", target, value)
    run_id = getattr(logger, "run_id", None) if logger and rank_zero_only.rank == 0 else None
    pruned = bool(pruning and pruning.pruned)
    if isinstance(logger, ResilientMLFlowLogger) and not pruned and logger.settle():
        raise _keep_unpublished(cfg, logger, module, dm, metrics)
    return FitResult(module, dm, trainer, metrics, value, run_id, pruned, config=cfg)


def _keep_unpublished(
    cfg: DictConfig,
    logger: ResilientMLFlowLogger,
    module: ForecastModule,
    dm: SeriesDataModule,
    metrics: dict[str, float],
) -> TrackingUnavailableError:
    """The server was lost mid-run: package the model as `_publish` would and keep it on disk with
    what was not logged."""
    forecaster = package(cfg, module, dm)  # as a published model: its options, its serving copies
    return keep_unpublished_run(cfg, logger, forecaster, dm, metrics)


def check_finite(metrics: dict[str, float], value: float | None = None, name: str = "") -> None:
    """Refuse to publish a model whose scores are NaN or infinite.

    The test scores (of the restored best checkpoint) when there is a test split, else the
    validation ones, and the optimized metric `value` (`name`).
    """
    split = "test/" if any(k.startswith("test/") for k in metrics) else "val/"
    scores = [(k, v) for k, v in metrics.items() if k.startswith(split)]
    if value is not None:
        scores.append((name or "optimized metric", value))

    def message(bad: np.ndarray) -> str:
        named = dict(score for score, is_bad in zip(scores, bad, strict=True) if is_bad)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(named.items())[:6])
        return (
            f"validation/test metrics are not finite ({shown}): the model was not logged, "
            "registered or given an alias. Look for extreme target values (e.g. 1e30) or "
            "lower model.lr"
        )

    require_finite([v for _, v in scores], message)


class _RunGuard:
    """Marks the training's MLflow run FAILED (KILLED on Ctrl-C), with the error as a tag."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def started(self, run_id: str) -> None:
        self.run_id = run_id

    def fail(self, err: BaseException) -> None:
        if self.run_id is None:
            return
        killed = isinstance(err, KeyboardInterrupt) or type(err).__name__ in (
            "Terminated",
            "SIGTERMException",
        )
        status = "KILLED" if killed else "FAILED"
        try:
            client = MlflowClient()
            client.set_tag(self.run_id, "error", one_line(err)[:4000])
            client.set_tag(self.run_id, "error.type", type(err).__name__)
            client.set_terminated(self.run_id, status)
        except Exception as tracking_err:  # the store itself may be what failed
            log.warning("could not mark MLflow run %s %s: %s", self.run_id, status, one_line(tracking_err))


@dataclass
class Trained:
    """A finished training job: the fit, the packaged model (rank 0) and where it was published."""

    fit: FitResult
    forecaster: Forecaster | None
    published: Published | None


def train(cfg: DictConfig) -> float | None:
    """Fit, test with the best checkpoint, track in MLflow; return the optimized metric.

    Nothing broken is published: a run whose scores are not finite is marked FAILED and its
    model is neither logged nor registered; any failure after the run started marks it FAILED
    with the error text as the `error` tag.
    """
    return run(cfg).fit.value


def run(cfg: DictConfig, frame: pd.DataFrame | None = None) -> Trained:
    """`train` for callers that want the model too (the Python API, `forecast.api`): the same
    job, on `data` or on a table in memory (`frame`)."""
    guard = _RunGuard()
    try:
        return _train(cfg, guard, frame)
    except BaseException as err:
        if not (type(err).__name__ == "TrialPruned"):
            guard.fail(err)
        raise


def _train(cfg: DictConfig, guard: _RunGuard, frame: pd.DataFrame | None = None) -> Trained:
    result = fit(cfg, on_run=guard.started, frame=frame)
    cfg = result.config or cfg  # a resume ran with the run's own config
    if result.pruned:
        if result.run_id:
            MlflowClient().set_tag(result.run_id, STATE_TAG, "PRUNED")
        import optuna

        raise optuna.TrialPruned(f"pruned at epoch {result.trainer.current_epoch}")
    check_finite(result.metrics, result.value, cfg.get("optimized_metric") or "")
    published = forecaster = None
    if rank_zero_only.rank == 0:
        forecaster = package(cfg, result.module, result.datamodule)
    if result.run_id and forecaster is not None:
        try:
            published = publish(cfg, result.run_id, forecaster, result.module, result.datamodule)
        except Exception as err:
            logger = result.trainer.logger
            if not (is_outage(err) and isinstance(logger, ResilientMLFlowLogger)):
                raise
            # The server went away while the model was being logged: keep it locally, as a
            # loss during training does, and say how to upload it.
            logger.failure = outage_reason(err)
            raise _keep_unpublished(cfg, logger, result.module, result.datamodule, result.metrics) from err
    if published is not None:
        print(summary(result.metrics, published.baseline, published.link, published.version, published.split))
    elif rank_zero_only.rank == 0:
        scores = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("val/", "test/"))}
        log.info("metrics: %s", scores)
    return Trained(result, forecaster, published)


def package(cfg: DictConfig, module: ForecastModule, dm: SeriesDataModule) -> Forecaster:
    """The trained model as it is saved and logged: net, scaler, settings (with the options it
    was trained with), intervals, exports."""
    forecaster = build_forecaster(module, dm, cfg.get("intervals") or (), cfg.get("interval_scale", "window"))
    forecaster.export = serving_exports(cfg.get("export", "auto"))
    forecaster.settings.config = asdict(
        SavedConfig(data=dm.config.to_dict(), model=module.config.to_dict(), train=train_options(cfg))
    )
    return forecaster


def run_name(cfg: DictConfig, trial: Any = None) -> str:
    """`<model>-<data>-<time>` (and the trial number in a sweep): runs told apart at a glance.

    MLflow's random names repeated: the global seed is set before it draws them.
    """
    model = data = None
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
        model, data = choices.get("model"), choices.get("data")
    except ValueError:  # not inside a Hydra app
        pass
    model = model or cfg.model.get("cell", "model")
    data = data or Path(str(cfg.data.get("path") or cfg.data.get("dataset") or "data")).stem
    if data == "file" and cfg.data.get("path"):
        data = Path(str(cfg.data.path)).stem
    name = f"{model}-{data}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return f"{name}-trial{trial.number}" if trial is not None else name
