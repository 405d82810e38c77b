"""The training job: config in, tracked (and optionally registered) model out."""

from __future__ import annotations

import logging
import re
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
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from forecast.calibration import window_residuals
from forecast.checkpoints import (
    OVERRIDES_KEY,
    RUN_ID_KEY,
    CheckpointMetadata,
    config_yaml,
    load_checkpoint,
    override_keys,
    resolve_resume,
    restore_config,
    task_overrides,
)
from forecast.cli import one_line
from forecast.config import SavedConfig, train_options
from forecast.console import EpochLine, on_terminal, quiet, summary
from forecast.data.datamodule import SeriesDataModule
from forecast.distributed import hydra_job_argv
from forecast.errors import ConfigError, TrackingUnavailableError, require_int
from forecast.finite import require_finite
from forecast.fitting import FitOutcome, fit_and_test
from forecast.forecaster import Forecaster, ForecasterSettings
from forecast.intervals import calibrate, check_levels, check_scale
from forecast.lr_finder import check_tune_lr, find_lr
from forecast.models.ensemble import COMBINE, DEFAULT_COMBINE, EnsembleNet, check_members, ensemble_params
from forecast.models.module import ForecastModule
from forecast.publishing import Published, flatten, keep_unpublished_run, publish
from forecast.ray_training import (
    RayJob,
    check_ray,
    fit_on_ray,
    lightning_options,
    ray_options,
    worker_trainer_options,
)
from forecast.short_history import calibrate_short_history
from forecast.stale_runs import claim_run
from forecast.tracking.http import check_server, is_outage
from forecast.tracking.http import reason as outage_reason
from forecast.tracking.outage import ResilientMLFlowLogger
from forecast.tracking.pyfunc import serving_exports
from forecast.tracking.store import tracking_uri
from forecast.trials import trial_from_config
from forecast.tuning import STATE_TAG, OptunaPruning, parent_run, trial_tags
from forecast.warm_start import (
    Parent,
    adopt_config,
    check_compatible,
    check_covariates,
    load_member,
    resolve_parent,
)

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
    cfg: DictConfig,
    on_run: Callable[[str], None] | None = None,
    frame: pd.DataFrame | None = None,
    init: Forecaster | Parent | None = None,
) -> FitResult:
    """Fit, restore the best checkpoint, score the test split (when there is one).

    `on_run` is told the MLflow run id as soon as the run exists, so a caller can mark the
    run FAILED when anything later goes wrong. `frame`: the table in memory (the Python API),
    instead of `data.path` / `data.dataset`. `init`: a model in memory to start from, instead of
    `init_from` (a warm start, `forecast.warm_start`). `ensemble.members` > 1 trains that many
    members (seeds `seed`, `seed + 1`, ...), each in a child run, and packages them as one net.
    """
    quiet()
    # A resume reads its checkpoint safely (weights only) before anything else and restores
    # the run's own config from it (forecast.checkpoints; docs/training.md).
    resume = resolve_resume(cfg.get("resume"), cfg.paths.log_dir)
    # Bad interval settings fail now, not after the training.
    check_levels(cfg.get("intervals"))
    check_scale(cfg.get("interval_scale", "window"))
    members, combine = ensemble_options(cfg)
    check_ray(cfg.trainer)  # trainer=ray: its options, Ray installed, the cluster answering
    if cfg.get("tune_lr") and not resume:
        check_tune_lr(cfg.trainer)
    if members > 1 and (resume or cfg.get("tune_lr")):
        raise ConfigError(
            f"ensemble.members={members} trains {members} models in turn: resume and tune_lr work on one "
            "(set ensemble.members=1, or resume=null tune_lr=false)"
        )
    saved = load_checkpoint(resume) if resume else {}
    overrides = task_overrides()
    if resume:
        cfg = restore_config(cfg, saved, resume, overrides)
        overrides = list(saved.get(OVERRIDES_KEY) or overrides)
    resumed_run_id: str | None = saved.get(RUN_ID_KEY)
    del saved  # only the metadata is needed here; Lightning reads the weights itself
    # A resumed fine-tune continues from its own checkpoint, not from its parent again.
    source = init if init is not None else cfg.get("init_from")
    parent = None
    if source is not None and not resume:
        parent = source if isinstance(source, Parent) else resolve_parent(source, cfg.paths.root_dir)
    if parent is not None:
        members = _members_from_parent(parent, members, cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    # A frame in memory cannot go through the config (OmegaConf holds plain values): a partial.
    dm: SeriesDataModule = (
        instantiate(cfg.data) if frame is None else instantiate(cfg.data, _partial_=True)(frame=frame)
    )
    if parent is not None:
        check_covariates(parent, dm.covariate_config)
        dm.fitted_covariates = parent.encoder
    if cfg.get("logger") and not cfg.logger.get("offline"):
        # A tracking server that is down fails the start in seconds, before the data is read.
        check_server(tracking_uri(cfg.paths.root_dir), cfg.logger.get("request_timeout", 30))
    # Validate the data before any MLflow run exists: bad data leaves no run behind.
    dm.setup("fit")
    sizes = dm.model_sizes()  # covariate widths, series
    module: ForecastModule = instantiate(cfg.model, **sizes)
    if members > 1:  # a head that cannot be combined fails now, not after K trainings
        check_members([module.net_params], combine)
    if parent is not None:
        check_compatible(parent, module.net_params, dm.scaler_kind)
        load_member(module.net, parent, 0)
    trial = trial_from_config(cfg)

    logger = False
    name = None
    if cfg.get("logger"):
        tags: dict[str, str] = lineage_tags(parent) if parent is not None else {}
        if trial is not None and rank_zero_only.rank == 0:
            tags.update(trial_tags(trial, parent_run(trial, cfg.logger.experiment_name, cfg.paths.root_dir)))
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
    pruning = OptunaPruning(trial, cfg.optimized_metric) if trial is not None else None
    if members > 1:
        return _fit_ensemble(cfg, dm, module, logger, name, parent, members, combine, pruning)

    callbacks = _callbacks(cfg, overrides, own_run, pruning)
    trainer: L.Trainer = _trainer(cfg, callbacks, logger)
    if cfg.get("tune_lr"):
        find_lr(trainer, module, dm, resumed=bool(resume))
    with hydra_job_argv([f"resume={resume}"] if resume else None):
        outcome = _fit(cfg, trainer, callbacks, module, dm, resume, bool(dm.test_size), pruning)
    metrics = outcome.metrics

    target = cfg.get("optimized_metric")
    value = metrics.get(target) if target else None
    if outcome.best_model_path and outcome.monitor == target and outcome.best_model_score is not None:
        value = outcome.best_model_score
    if value is not None and not np.isfinite(value):
        log.warning("optimized metric %s is %s", target, value)
    metrics["train/steps"] = float(outcome.global_step)
    if logger and rank_zero_only.rank == 0 and parent is not None:
        logger.log_metrics({"train/steps": float(outcome.global_step)})
    run_id = getattr(logger, "run_id", None) if logger and rank_zero_only.rank == 0 else None
    pruned = outcome.pruned
    if isinstance(logger, ResilientMLFlowLogger) and not pruned and logger.settle():
        raise _keep_unpublished(cfg, logger, module, dm, metrics)
    return FitResult(module, dm, trainer, metrics, value, run_id, pruned, config=cfg)


def ensemble_options(cfg: DictConfig) -> tuple[int, str]:
    """`ensemble.members` and `ensemble.combine`, checked (1 and the mean when the job has none)."""
    members = require_int("ensemble.members", OmegaConf.select(cfg, "ensemble.members", default=1) or 1)
    combine = str(OmegaConf.select(cfg, "ensemble.combine", default=None) or DEFAULT_COMBINE)
    if combine not in COMBINE:
        raise ConfigError(f"ensemble.combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    return members, combine


def _members_from_parent(parent: Parent, members: int, cfg: DictConfig) -> int:
    """A warm start from an ensemble of K refits each of its K members (unless told otherwise);
    from one model, `ensemble.members` members all start from its weights."""
    theirs = len(parent.members)
    if theirs == 1 or members == theirs:
        return members
    if OmegaConf.select(cfg, "ensemble.members", default=None) in (None, 1):
        log.info("init_from is an ensemble of %d members: fine-tuning each of them", theirs)
        return theirs
    raise ConfigError(
        f"init_from={parent.source} is an ensemble of {theirs} members, the job asks for ensemble.members="
        f"{members}: set ensemble.members={theirs} (each member refit) or 1"
    )


def lineage_tags(parent: Parent) -> dict[str, str]:
    """The child run's tags naming its parent model (`parent.*`)."""
    tags = {"init_from": parent.source}
    tags.update({f"parent.{k}": v for k, v in parent.lineage.items()})
    return tags


def _callbacks(
    cfg: DictConfig,
    overrides: Sequence[str],
    run_id: str | None,
    pruning: Callback | None,
    member: int | None = None,
) -> list[Callback]:
    """The job's callbacks, the checkpoint metadata, pruning and the epoch line; a member of an
    ensemble keeps its checkpoints in a folder of its own (`member<i>` below the job's)."""
    callbacks: list[Callback] = []
    for cb in (cfg.get("callbacks") or {}).values():
        if not cb:
            continue
        if (
            member is not None
            and str(cb.get("_target_", "")).endswith("ModelCheckpoint")
            and cb.get("dirpath")
        ):
            callbacks.append(instantiate(cb, dirpath=f"{cb.dirpath}/member{member}"))
        else:
            callbacks.append(instantiate(cb))
    callbacks.append(CheckpointMetadata(config_yaml(cfg), overrides, run_id))
    if pruning is not None:
        callbacks.append(pruning)
    if not _progress_bar(cfg):
        callbacks.append(EpochLine())  # a scheduler's log gets one line per epoch instead
    return callbacks


def _progress_bar(cfg: DictConfig) -> bool:
    # Ray workers' output reaches this terminal line by line: an epoch line each, not a bar.
    on_ray = cfg.trainer.get("ray") is not None
    return bool(cfg.trainer.get("enable_progress_bar", True)) and on_terminal() and not on_ray


def _trainer(cfg: DictConfig, callbacks: list[Callback], logger: Any) -> L.Trainer:
    """The job's Lightning trainer (under `trainer=ray`, this process's, which fits nothing)."""
    return instantiate(
        lightning_options(cfg.trainer),
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=_progress_bar(cfg),
    )


def _fit(
    cfg: DictConfig,
    trainer: L.Trainer,
    callbacks: list[Callback],
    module: ForecastModule,
    dm: SeriesDataModule,
    ckpt_path: str | None = None,
    test: bool = True,
    pruning: Any = None,
    seed: int | None = None,
) -> FitOutcome:
    """Fit (and test) in this process, or on Ray Train workers under `trainer=ray`
    (`forecast.ray_training`); `seed`: the workers', the job's unless given."""
    options = ray_options(cfg.trainer)
    if options is None:
        return fit_and_test(trainer, module, dm, ckpt_path, test, pruning)
    seed = cfg.get("seed") if seed is None else seed
    job = RayJob(module, dm, callbacks, worker_trainer_options(cfg.trainer), ckpt_path, test, pruning, seed)
    return fit_on_ray(options, job, trainer)


def _fit_ensemble(
    cfg: DictConfig,
    dm: SeriesDataModule,
    first: ForecastModule,
    logger: Any,
    name: str | None,
    parent: Parent | None,
    members: int,
    combine: str,
    pruning: Callback | None,
) -> FitResult:
    """Train `members` nets on the same data with seeds `seed + i` (member 0 is the single model
    of the same config), each logged to a child run of the job's run, restore each one's best
    checkpoint, then score their combination (`forecast.models.ensemble`) on validation and test
    under the job's run: the figures of the model that is published."""
    seed = cfg.get("seed")
    nets, params, summary_metrics, steps = [], [], {}, 0
    parent_id = logger.run_id if logger and rank_zero_only.rank == 0 else None
    for i in range(members):
        member_seed = None if seed is None else int(seed) + i
        if i:
            if member_seed is not None:
                L.seed_everything(member_seed, workers=True)
                dm.sampler_seed = member_seed  # a mapped store's draws: those of seed + i's single model
            module = instantiate(cfg.model, **dm.model_sizes())
            if parent is not None:
                load_member(module.net, parent, i)
        else:
            module = first
        child = False
        if logger:
            tags = {"ensemble.member": str(i), "ensemble.seed": str(member_seed)}
            if parent_id:
                tags["mlflow.parentRunId"] = parent_id
            child = instantiate(
                cfg.logger, run_id=None, tags=tags, run_name=f"{name or 'ensemble'}-member{i}"
            )
            if rank_zero_only.rank == 0:
                child.log_hyperparams(
                    flatten({**OmegaConf.to_container(cfg, resolve=True), "seed": member_seed})
                )
        member_pruning = pruning if i == 0 else None
        callbacks = _callbacks(cfg, [], getattr(child, "run_id", None), member_pruning, member=i)
        trainer = _trainer(cfg, callbacks, child)
        log.info("ensemble member %d of %d (seed %s)", i + 1, members, member_seed)
        # Untested: the best checkpoint's weights are loaded into `module`.
        outcome = _fit(
            cfg, trainer, callbacks, module, dm, test=False, pruning=member_pruning, seed=member_seed
        )
        if outcome.pruned:
            return FitResult(module, dm, trainer, {}, None, parent_id, True, config=cfg)
        target = cfg.get("optimized_metric") or "val/loss"
        score = outcome.best_model_score
        value = score if score is not None else float(outcome.metrics.get(target, float("nan")))
        summary_metrics[f"member{i}/{target.replace('/', '_')}"] = value
        steps += outcome.global_step
        if isinstance(child, ResilientMLFlowLogger) and child.settle():
            log.warning("member %d's training curves were not all logged: %s", i, child.failure)
        nets.append(module.net)
        params.append(dict(module.net_params))
    ensemble = instantiate(cfg.model, **dm.model_sizes())
    net_params = ensemble_params(params, first.net_kind, combine)
    ensemble.use_ensemble(EnsembleNet(nets=nets, **net_params), net_params)
    # The combination is scored under the job's run, as a single model's best checkpoint is.
    trainer = _trainer(cfg, [], logger)
    trainer.validate(ensemble, datamodule=dm, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if dm.test_size:
        trainer.test(ensemble, datamodule=dm, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics.update(summary_metrics)
    metrics["train/steps"] = float(steps)
    if logger and rank_zero_only.rank == 0:
        logger.log_metrics({**summary_metrics, "train/steps": float(steps)})
    target = cfg.get("optimized_metric")
    value = metrics.get(target) if target else None
    log.info(
        "ensemble of %d (%s): %s %.4g; members %s",
        members,
        combine,
        target,
        value if value is not None else float("nan"),
        ", ".join(f"{v:.4g}" for v in summary_metrics.values()),
    )
    if isinstance(logger, ResilientMLFlowLogger) and logger.settle():
        raise _keep_unpublished(cfg, logger, ensemble, dm, metrics)
    return FitResult(ensemble, dm, trainer, metrics, value, parent_id, False, config=cfg)


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
    overrides = task_overrides()
    parent = None
    if cfg.get("init_from") and not cfg.get("resume"):
        # A fine-tune from the command line builds its parent's model unless told otherwise.
        parent = resolve_parent(cfg.init_from, cfg.paths.root_dir)
        cfg = adopt_config(cfg, parent, set(override_keys(overrides)))
    return run(finetune_defaults(cfg, overrides), init=parent).fit.value


def finetune_defaults(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A warm start from the command line registers its model as `candidate` of the parent's
    registered name unless the command says otherwise: the promotion gate then decides. Its
    learning rate is a tenth of the job's `model.lr` unless the command sets one
    (`FINETUNE_LR_FACTOR`)."""
    if not cfg.get("init_from") or cfg.get("resume"):
        return cfg
    given = set(override_keys(overrides))
    cfg = cfg.copy()
    with open_dict(cfg):
        if "register" not in given:
            cfg.register = True
        if "registry.alias" not in given:
            cfg.registry.alias = "candidate"
        if "model.lr" not in given and cfg.model.get("lr") is not None:
            cfg.model.lr = float(cfg.model.lr) * FINETUNE_LR_FACTOR
        named = _REGISTERED.match(str(cfg.init_from))
        if named and "registry.name" not in given:
            cfg.registry.name = named["name"]
    return cfg


_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)[/@]")
# A fine-tune starts a fresh AdamW on weights already near a minimum: at the full rate it walks
# away from it. Chosen on validation (bench/README.md, "Warm start"; B4 NP, one more month: best
# val MAE 1.4023 at lr 1e-4, reached in 9.5% of the scratch model's time, against 1.4236 at 1e-3,
# never reaching the scratch model's 1.4045; weekly B4 refits: the same ordering on NP and PJM).
FINETUNE_LR_FACTOR = 0.1


def run(
    cfg: DictConfig, frame: pd.DataFrame | None = None, init: Forecaster | Parent | None = None
) -> Trained:
    """`train` for callers that want the model too (the Python API, `forecast.api`): the same
    job, on `data` or on a table in memory (`frame`), warm-started from `init` when given."""
    guard = _RunGuard()
    try:
        return _train(cfg, guard, frame, init)
    except BaseException as err:
        if not (type(err).__name__ == "TrialPruned"):
            guard.fail(err)
        raise


def _train(
    cfg: DictConfig,
    guard: _RunGuard,
    frame: pd.DataFrame | None = None,
    init: Forecaster | Parent | None = None,
) -> Trained:
    result = fit(cfg, on_run=guard.started, frame=frame, init=init)
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
    was trained with), intervals, the short-history blend, exports."""
    forecaster = build_forecaster(module, dm, cfg.get("intervals") or (), cfg.get("interval_scale", "window"))
    calibrate_short_history(forecaster, dm)  # young series: the blend with seasonal naive
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
