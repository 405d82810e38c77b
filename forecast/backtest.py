"""Rolling-origin backtest of a saved model: how users choose models and the gate promotes them.

For every series and each of `n_windows` cutoffs (the last leaves exactly `horizon` steps after
it, earlier ones step back by `step`), the model forecasts the `horizon` steps after the cutoff
from the history up to it, without refitting. All windows of all series are one array of index
arithmetic over the series' values (`SeriesBlock`), scaled and padded by the forecaster's own
`scaled_windows` and pushed through `predict_scaled` in large batches: no loop per window or
per series. The same windows are scored for the seasonal-naive baseline.
The pipeline around it (resolve the model, write the table, log the run) is
`forecast.backtest_job`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forecast.blocks import SeriesBlock
from forecast.errors import ConfigError, DataValidationError, require_int
from forecast.forecaster import Forecaster
from forecast.intervals import ConformalIntervals, calibrate, check_levels, interval_scores, score_units
from forecast.layout import check_finite

log = logging.getLogger(__name__)

# Metrics where lower is better: the ones the promotion gate may compare on.
LOWER_IS_BETTER = ("mae", "rmse", "smape", "mase", "pinball")


@dataclass
class BacktestResult:
    """The forecasts of every window and their scores, beside the seasonal-naive baseline."""

    table: pd.DataFrame  # unique_id, cutoff, ds, y, y_hat, [y_hat_qNN ...], [y_hat_lo_80 ...]
    # overall: mae, rmse, smape, mase, [pinball, coverage], [coverage_80, width_80 ...], snaive_*
    metrics: dict[str, float]
    by_window: pd.DataFrame  # one row per window (0 = oldest cutoff): the same metrics
    by_step: pd.DataFrame  # one row per horizon step (1..H): the same metrics
    n_series: int
    n_windows: int  # windows scored (series x cutoffs with enough history)
    skipped: int  # windows left out: history up to the cutoff shorter than season_length + 1
    season_length: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    calibrated: ConformalIntervals | None = None  # conformal quantiles of these windows' errors


def check_refit(refit: str | None) -> None:
    """Only the saved model is backtested in this version: any refit is a ConfigError."""
    if refit in (None, "none", False):
        return
    raise ConfigError(
        f"refit={refit} is not supported yet: the backtest scores the saved model as it is; use refit=none"
    )


def levels_to_calibrate(calibrate: object, levels: Sequence[int]) -> list[int]:
    """The levels to calibrate from a backtest: `levels` when `calibrate` is true, none when false."""
    if not isinstance(calibrate, bool):
        raise ConfigError(
            f"calibrate must be true or false, got {calibrate!r} (levels go in intervals=[80,95])"
        )
    return check_levels(levels) if calibrate else []


def cutoff_ends(block: SeriesBlock, horizon: int, n_windows: int, step: int) -> np.ndarray:
    """(n_series, n_windows) exclusive end row of each cutoff's history, oldest cutoff first."""
    back = step * np.arange(n_windows - 1, -1, -1, dtype=np.int64)  # (K,) K-1 steps back .. 0
    return block.ends[:, None] - horizon - back[None, :]


def seasonal_scale(block: SeriesBlock, ends: np.ndarray, series: np.ndarray, m: int) -> np.ndarray:
    """(W,) in-sample seasonal-naive MAE of each window's history (MASE's denominator).

    Prefix sums of |y_t - y_{t-m}| over all rows, so every window costs two lookups.
    """
    values = block.values.astype(np.float64)
    lengths = block.ends - block.starts
    row_start = np.repeat(block.starts, lengths)  # (rows,) first row of each row's series
    rows = np.arange(len(values))
    diff = np.full(len(values), np.nan)
    diff[m:] = np.abs(values[m:] - values[:-m])
    usable = (rows - m >= row_start) & np.isfinite(diff)
    total = np.concatenate([[0.0], np.cumsum(np.where(usable, diff, 0.0))])
    count = np.concatenate([[0], np.cumsum(usable)])
    first = block.starts[series] + m
    n = count[ends] - count[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[ends] - total[first]) / np.maximum(n, 1), np.nan)


def _group_scores(
    y: np.ndarray,
    point: np.ndarray,
    scale: np.ndarray,
    mask: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    quantiles: list[float] | None = None,
    qpred: np.ndarray | None = None,
    cells: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """MAE, RMSE, sMAPE, MASE (and pinball, coverage) per group of cells, all cells at once.

    `y`, `point`, `mask`, `groups`: (W, H); `scale`: (W,); `qpred`: (W, H, Q); `cells`: more
    (W, H) per-cell scores to average (interval coverage and width). Means are over the cells
    in `mask` (observed target, baseline defined), as the training metrics weigh them.
    """
    g = groups.ravel()
    w = mask.astype(np.float64)

    def mean(x: np.ndarray, weight: np.ndarray = w) -> np.ndarray:
        x = np.where(weight > 0, x, 0.0)
        num = np.bincount(g, weights=(x * weight).ravel(), minlength=n_groups)
        den = np.bincount(g, weights=weight.ravel(), minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)

    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(point - y)
        denom = np.abs(y) + np.abs(point)
        smape = np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1.0), 0.0)
        scaled = err / scale[:, None]
    mase_w = w * (np.isfinite(scale) & (scale > 0))[:, None]
    out = {
        "mae": mean(err),
        "rmse": np.sqrt(mean(err * err)),
        "smape": mean(smape),
        "mase": mean(scaled, mase_w),
    }
    if quantiles and qpred is not None:
        q = np.asarray(quantiles, dtype=np.float64)
        diff = y[..., None] - qpred  # (W, H, Q)
        out["pinball"] = mean(np.maximum(q * diff, (q - 1.0) * diff).mean(axis=-1))
        inside = (qpred[..., 0] <= y) & (y <= qpred[..., -1])
        out["coverage"] = mean(inside.astype(np.float64))
    for name, values in (cells or {}).items():
        out[name] = mean(values)
    return out


def backtest_frame(
    forecaster: Forecaster,
    history: pd.DataFrame,
    n_windows: int,
    step: int | None = None,
    season_length: int = 1,
    batch_size: int = 4096,
    calibrate_levels: Sequence[int] = (),
) -> BacktestResult:
    """Rolling-origin forecasts of every series at `n_windows` cutoffs `step` apart, scored.

    A model with intervals also gets their coverage and width per level; `calibrate_levels`
    computes conformal quantiles from these windows' errors (`BacktestResult.calibrated`).
    """
    started = time.perf_counter()
    s = forecaster.settings
    H = s.horizon
    n_windows = require_int("n_windows", n_windows)
    step = H if step is None else require_int("step", step)
    m = require_int("season_length", season_length)
    calibrate_levels = check_levels(calibrate_levels)
    c = forecaster.columns
    frame = forecaster.validate(history).frame
    if forecaster.encoder is not None:
        # Covariates encoded once for the whole table; each window reads its own rows (its
        # input window, and for future-known ones its horizon), as a forecast at that origin would.
        block = forecaster.covariate_block(frame, need_future=False)
    else:
        block = SeriesBlock.from_frame(frame, c)
    times = frame[c.time_col].to_numpy()

    ends = cutoff_ends(block, H, n_windows, step)  # (n, K)
    usable = ends - block.starts[:, None] >= m + 1  # a season for the baseline, one more for MASE
    series, window = np.nonzero(usable)  # (W,) each, series-major, oldest cutoff first
    end = ends[series, window]
    skipped = int(usable.size - len(series))
    if len(series) == 0:
        raise DataValidationError(
            f"no series is long enough to backtest: each cutoff needs at least season_length + 1 = "
            f"{m + 1} steps before it and horizon = {H} after it; with n_windows={n_windows} and "
            f"step={step} the longest series ({int((block.ends - block.starts).max())} steps) needs "
            f"{m + 1 + H + step * (n_windows - 1)}: lower n_windows or step, or give longer series"
        )
    if skipped:
        log.info("%d of %d windows skipped: too little history before their cutoff", skipped, usable.size)

    # Each window is a series cut at its cutoff: the forecaster scales and pads it as it would
    # the whole series, from the history up to the cutoff only (no look-ahead in the scaling of
    # unseen series either).
    cut = SeriesBlock(
        ids=block.ids[series],
        starts=block.starts[series],
        ends=end,
        values=block.values,
        last_time=times[end - 1],
        covariates=None if block.covariates is None else block.covariates.take(series).ahead_at(end),
    )
    scaled = forecaster.scaled_windows(cut)
    preds = forecaster.predict_scaled(
        scaled.windows, batch_size, scaled.step, scaled.series, scaled.covariates, scaled.loc, scaled.scale
    )  # (W, H, 1 + Q): y_hat, then the quantiles
    preds = preds * scaled.scale[:, None, None] + scaled.loc[:, None, None]
    check_finite(preds, cut.ids)

    target = end[:, None] + np.arange(H)  # (W, H) rows of the forecast steps
    y = block.values[target].astype(np.float64)
    snaive = block.values[end[:, None] - m + np.arange(H) % m].astype(np.float64)  # last season, tiled
    scale = seasonal_scale(block, end, series, m)
    mask = np.isfinite(y) & np.isfinite(snaive)

    quantiles = list(s.quantiles)
    point = preds[:, :, 0].astype(np.float64)  # y_hat: a quantile or distribution model's median
    qpred = np.sort(preds[:, :, 1:].astype(np.float64), axis=-1) if quantiles else None
    intervals = forecaster.intervals
    bounds = intervals.bounds(point, scaled.scale, scaled.windows) if intervals is not None else {}
    cells = interval_scores(y, bounds, intervals.levels) if intervals is not None else {}
    steps = np.broadcast_to(np.arange(H), (len(end), H))
    windows = np.broadcast_to(window[:, None], (len(end), H))
    overall = np.zeros((len(end), H), dtype=np.int64)
    groupings = {"overall": (overall, 1), "step": (steps, H), "window": (windows, n_windows)}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, (groups, n) in groupings.items():
        model = _group_scores(y, point, scale, mask, groups, n, quantiles, qpred, cells)
        base = _group_scores(y, snaive, scale, mask, groups, n)
        scores[name] = {**model, **{f"snaive_{k}": v for k, v in base.items()}}

    metrics = {k: float(v[0]) for k, v in scores["overall"].items()}
    if quantiles:
        metrics["coverage_nominal"] = float(max(quantiles) - min(quantiles))
    by_step = pd.DataFrame({"step": np.arange(1, H + 1), **scores["step"]})
    calibrated = None
    if calibrate_levels:
        # The conformity scores of forecast.intervals, in the unit of the model's own intervals.
        kind = intervals.scale if intervals is not None else "series"
        unit = scaled.scale.astype(np.float64) * score_units(kind, scaled.windows)
        errors = np.abs(y - point) / unit[:, None]  # NaN where y is missing
        calibrated = calibrate(errors, calibrate_levels, "backtest", kind)
    if calibrated is not None:
        for level, q in zip(calibrated.levels, calibrated.quantiles, strict=True):
            by_step[f"calibrated_q{level}"] = q
            metrics[f"calibrated_q{level}"] = float(q.mean())  # the mean half-width, in series scales
    cutoff_times = pd.Series(times[end - 1])
    by_window = pd.DataFrame(
        {
            "window": np.arange(n_windows),
            "steps_before_last": step * np.arange(n_windows - 1, -1, -1),
            "series": np.bincount(window, minlength=n_windows),
            # Series may end at different times: the latest cutoff of each window names it.
            "cutoff": cutoff_times.groupby(window).max().reindex(range(n_windows)).to_numpy(),
            **scores["window"],
        }
    )

    table = pd.DataFrame(
        {
            c.id_col: np.repeat(cut.ids, H),
            "cutoff": np.repeat(cut.last_time, H),
            c.time_col: times[target].reshape(-1),
            c.target_col: y.reshape(-1).astype(np.float32),
        }
    )
    for q, name in enumerate(s.output_columns):  # the forecast's own columns, in its order
        table[name] = preds[:, :, q].reshape(-1)
    for name, values in bounds.items():
        table[name] = values.reshape(-1).astype(np.float32)
    seconds = time.perf_counter() - started
    log.info(
        "backtest: %d series x %d cutoffs (%d windows, %d skipped) in %.2fs: mae %.4g (seasonal naive %.4g)",
        len(block),
        n_windows,
        len(end),
        skipped,
        seconds,
        metrics["mae"],
        metrics["snaive_mae"],
    )
    return BacktestResult(
        table=table,
        metrics=metrics,
        by_window=by_window,
        by_step=by_step,
        n_series=len(block),
        n_windows=len(end),
        skipped=skipped,
        season_length=m,
        seconds=seconds,
        info={"step": step, "cutoffs": n_windows, "unseen_windows": scaled.unseen, "padded": scaled.padded},
        calibrated=calibrated,
    )
