"""Backtests that refit: the model is trained again at rolling origins, on the data before each.

`refit=every:N` splits the backtest's `n_windows` cutoffs (oldest first) into groups of N: refit
r trains on every series cut at its own cutoff of window rN (its origin, `cutoff_ends`) and
forecasts the windows [rN, rN + N). Refit 0 trains too, so every window is forecast by a model
whose data ended at or before the window's cutoff.

Leak rule: nothing at or after the origin reaches a refit. Each series is truncated at its origin
before the training job sees it (`history_before`); the job then fits its scaler on the training
part of that data and carves its validation part (early stopping, the best checkpoint, the
conformal intervals) from its tail, with no test part (`test_size=0`).

A refit trains with the saved model's own options (`settings.config`: data, model, train) through
the training job of `pipelines/train.py` (`forecast.training.run`), in this process, without an
MLflow run (logger off) and at most `steps` optimizer steps (`trainer.max_steps`; early stopping
on the refit's validation part may end it sooner). `warm`: from the previous refit's weights (and
covariate encoder), refit 0 from the saved model's; `scratch`: fresh weights from the saved
model's seed, and its own covariate encoder. All refits are trained, then every window is
forecast by its refit and the whole table scored once (`forecast.backtest.score_windows`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from forecast.backtest import (
    BacktestResult,
    BacktestWindows,
    RefitPlan,
    RefitStats,
    backtest_windows,
    score_windows,
)
from forecast.errors import ConfigError, DataValidationError
from forecast.forecaster import Forecaster
from forecast.intervals import check_levels
from forecast.jobs import job_config, saved_options
from forecast.training import run

log = logging.getLogger(__name__)


def check_refittable(forecaster: Forecaster) -> dict[str, Any]:
    """The options the model was trained with: a refit trains the same model with them."""
    saved = forecaster.settings.config
    if not saved:
        raise ConfigError(
            "this model was saved before its training options were (model.json format 1, no `config`): "
            "a refit cannot train the same model again; use refit=none, or retrain it with this version"
        )
    return saved


def refit_job(
    forecaster: Forecaster, out: Path, steps: int, val_size: int | None = None, lr: float | None = None
) -> Any:
    """The training job of one refit: the saved model's options, on a table in memory, with no
    test part, no logger and no progress bar, for at most `steps` optimizer steps; `val_size`
    steps of each series validate and `lr` is the learning rate (None: the saved model's own)."""
    options = saved_options(check_refittable(forecaster))
    data = replace(options["data"], path=None, dataset=None, test_size=0)
    if val_size is not None:
        data = replace(data, val_size=val_size)
    if lr is not None:
        options["model"] = replace(options["model"], lr=lr)
    # Epochs unbounded: the step budget ends the training (or early stopping before it).
    train = replace(options["train"], max_epochs=-1, enable_progress_bar=False, export=[])
    cfg = job_config(data, options["model"], train, out, root_dir=out)
    cfg.trainer.max_steps = steps
    cfg.callbacks.step_budget = {"_target_": f"{__name__}.StepBudget", "steps": steps}
    return cfg


class StepBudget(Callback):
    """Stop after `steps` optimizer steps, validating at that step: Lightning's `max_steps` alone
    ends mid-epoch without a validation, so the last steps would never be scored (or, with a
    budget below one epoch, early stopping would find no validation score at all)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True  # the epoch loop validates before it stops


def history_before(w: BacktestWindows, k: int) -> pd.DataFrame:
    """Every series' rows before its own cutoff of window `k` (the refit's origin), none at or
    after it; a series with no row before it is left out."""
    block = w.block
    cut = np.clip(w.ends[:, k], block.starts, block.ends)  # (n,) exclusive end row of each series
    edges = np.zeros(len(w.frame) + 1, dtype=np.int64)
    np.add.at(edges, block.starts, 1)
    np.add.at(edges, cut, -1)
    keep = np.cumsum(edges[:-1]) > 0  # rows in [start, cut) of their series
    return w.frame[keep].reset_index(drop=True)


def origin_of(w: BacktestWindows, k: int) -> Any:
    """The latest cutoff of window `k` over the series (each series is cut at its own)."""
    ends = w.ends[:, k]
    has = ends > w.block.starts
    return w.times[ends[has] - 1].max() if has.any() else None


def refit_backtest(
    forecaster: Forecaster,
    history: pd.DataFrame,
    n_windows: int,
    step: int | None = None,
    season_length: int = 1,
    batch_size: int = 4096,
    calibrate_levels: Sequence[int] = (),
    plan: RefitPlan | None = None,
) -> BacktestResult:
    """The backtest of `forecast.backtest.backtest_frame`, with the model refit every
    `plan.every` windows (see the module docstring); the table gains a `refit` column, the
    result's `info["refits"]` one `RefitStats` per refit."""
    started = time.perf_counter()
    plan = plan or RefitPlan(every=1)
    check_refittable(forecaster)
    calibrate_levels = check_levels(calibrate_levels)
    w = backtest_windows(forecaster, history, n_windows, step, season_length)
    firsts = plan.first_windows(w.n_windows)
    models: list[Forecaster] = []
    stats: list[RefitStats] = []
    parent = forecaster
    with tempfile.TemporaryDirectory(prefix="forecast-refit-") as tmp:
        for r, k in enumerate(firsts):
            origin = origin_of(w, k)
            frame = history_before(w, k)
            cfg = refit_job(forecaster, Path(tmp) / f"refit{r}", plan.steps, plan.val_size, plan.lr)
            begun = time.perf_counter()
            try:
                trained = run(cfg, frame=frame, init=parent if plan.mode == "warm" else None)
            except DataValidationError as err:
                raise DataValidationError(
                    f"refit {r} (data before the cutoff of window {k}, at most {origin}): {err}"
                ) from err
            assert trained.forecaster is not None
            seconds = time.perf_counter() - begun
            fit = trained.fit
            monitor = str(cfg.get("optimized_metric") or "val/loss")
            best = fit.value if fit.value is not None else fit.metrics.get(monitor, float("nan"))
            stats.append(
                RefitStats(
                    refit=r,
                    origin=origin,
                    first_window=k,
                    windows=min(plan.every, w.n_windows - k),
                    series=int(fit.datamodule.n_series),
                    rows=len(frame),
                    steps=int(fit.metrics.get("train/steps", fit.trainer.global_step)),
                    seconds=seconds,
                    monitor=monitor,
                    best=float(best),
                )
            )
            log.info(
                "refit %d of %d (%s, data before %s): %d series, %d steps in %.1fs, %s %.4g",
                r + 1,
                len(firsts),
                plan.mode,
                origin,
                stats[-1].series,
                stats[-1].steps,
                seconds,
                monitor,
                stats[-1].best,
            )
            models.append(trained.forecaster)
            parent = trained.forecaster
    result = score_windows(w, models, plan.every, batch_size, calibrate_levels, started)
    result.info.update(
        refit=plan.refit,
        refit_mode=plan.mode,
        refit_steps=plan.steps,
        refit_val_size=plan.val_size,
        refit_lr=plan.lr,
        refits=stats,
    )
    return result
