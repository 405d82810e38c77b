"""Rolling-origin backtest of a saved model: how users choose models and the gate promotes them.

For every series and each of `n_windows` cutoffs (the last leaves exactly `horizon` steps after
it, earlier ones step back by `step`), the model forecasts the `horizon` steps after the cutoff
from the history up to it. All windows of all series are one array of index arithmetic over the
series' values (`SeriesBlock`, `backtest_windows`), scaled and padded by the forecaster's own
`scaled_windows` and pushed through `predict_scaled` in large batches: no loop per window or
per series. The same windows are scored for the seasonal-naive baseline.

Without refits one model forecasts every window (`backtest_frame`). With refits
(`RefitPlan`, trained by `forecast.refit`) the windows [rN, rN + N) are forecast by refit r,
and the table of all of them is scored once (`score_windows`), exactly as one model's.
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

REFIT_MODES = ("warm", "scratch")
# Optimizer steps per refit at most (`trainer.max_steps`; early stopping may end one sooner): a
# warm refit fine-tunes, so a few hundred steps; conf/backtest.yaml's `refit_steps` default.
REFIT_STEPS = 200


@dataclass
class BacktestResult:
    """The forecasts of every window and their scores, beside the seasonal-naive baseline."""

    # unique_id, cutoff, [refit], ds, y, y_hat, [y_hat_qNN ...], [y_hat_lo_80 ...]
    table: pd.DataFrame
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


@dataclass(frozen=True)
class RefitPlan:
    """A backtest that refits: refit r trains on the data before the cutoff of window r * every
    and forecasts the windows [r * every, (r + 1) * every); `mode` warm (from the previous refit,
    the first from the saved model) or scratch (fresh seeded weights); at most `steps` steps each."""

    every: int
    mode: str = "warm"
    steps: int = REFIT_STEPS
    # validation steps per series of each refit (early stopping, checkpoint, intervals), carved
    # from the end of its data; None: the saved model's own `data.val_size`
    val_size: int | None = None
    # the refits' learning rate; None: the saved model's own `model.lr`
    lr: float | None = None

    @property
    def refit(self) -> str:
        """The `refit=` value that asks for this plan."""
        return f"every:{self.every}"

    def first_windows(self, n_windows: int) -> list[int]:
        """The first window of each refit (its origin's cutoff), oldest first."""
        return list(range(0, n_windows, self.every))


@dataclass
class RefitStats:
    """One refit of a backtest: where it was cut, what it trained on and how long it took."""

    refit: int  # 0 = the oldest
    origin: Any  # the latest cutoff of its first window (each series is cut at its own cutoff)
    first_window: int
    windows: int  # cutoffs it forecasts: [first_window, first_window + windows)
    series: int  # series it trained on (the ones with a training window before their cutoff)
    rows: int  # rows of the data it was given (all before each series' cutoff)
    steps: int  # optimizer steps taken (early stopping may end before the budget)
    seconds: float
    monitor: str  # the validation metric early stopping watched (`val/loss`)
    best: float  # its best value: the checkpoint kept

    def origin_number(self) -> float:
        """The origin as a number an MLflow metric holds: Unix seconds, or the integer step."""
        if isinstance(self.origin, np.datetime64 | pd.Timestamp):
            return float(pd.Timestamp(self.origin).timestamp())
        return float(self.origin)


def check_refit(refit: object) -> int | None:
    """`none` (or null, false): None, the saved model scores every window as it is; `every:N`
    (or N from Python): refit every N windows. Anything else is a one-line ConfigError."""
    if refit is None or refit is False or (isinstance(refit, str) and refit.strip().lower() == "none"):
        return None
    every = None
    if isinstance(refit, int) and not isinstance(refit, bool):
        every = refit
    elif isinstance(refit, str) and refit.strip().lower().startswith("every:"):
        count = refit.strip()[len("every:") :].strip()
        every = int(count) if count.isdigit() else None
    if every is None or every < 1:
        raise ConfigError(
            f"refit must be none or every:N with N >= 1 (refit the model every N windows), got {refit!r}"
        )
    return every


def refit_plan(
    refit: object, mode: object = "warm", steps: object = None, val_size: object = None, lr: object = None
) -> RefitPlan | None:
    """The refit options checked (all of them, refit=none too): None when nothing is refit."""
    every = check_refit(refit)
    if mode not in REFIT_MODES:
        raise ConfigError(
            f"refit_mode must be warm (each refit starts from the previous model) or scratch (fresh "
            f"weights), got {mode!r}"
        )
    steps = REFIT_STEPS if steps is None else require_int("refit_steps", steps)
    val = None if val_size is None else require_int("refit_val_size", val_size)
    rate = None
    if lr is not None:
        try:
            rate = float(lr)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            rate = float("nan")
        if not rate > 0 or rate == float("inf"):
            raise ConfigError(f"refit_lr must be a positive number (the refits' learning rate), got {lr!r}")
    return None if every is None else RefitPlan(every, str(mode), steps, val, rate)


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


@dataclass
class BacktestWindows:
    """Every series cut at every cutoff with enough history before it: what a backtest forecasts.

    Windows are series-major, oldest cutoff first (`series`, `window`, `end` are (W,) each).
    """

    frame: pd.DataFrame  # the validated history, sorted by id then time (rows of `block`)
    block: SeriesBlock  # the first model's encoding of it (its covariates, when it reads them)
    times: np.ndarray  # (rows,) time stamps
    ends: np.ndarray  # (n_series, n_windows) exclusive end row of each cutoff's history
    series: np.ndarray  # (W,) series of each window
    window: np.ndarray  # (W,) cutoff number of each window, 0 = oldest
    end: np.ndarray  # (W,) exclusive end row of each window's history
    skipped: int  # windows left out: too little history before their cutoff
    n_windows: int
    step: int
    season_length: int
    horizon: int
    # each covariate encoder's block (models of one backtest may encode covariates differently)
    encoded: list[tuple[Any, SeriesBlock]] = field(default_factory=list)

    def block_for(self, forecaster: Forecaster) -> SeriesBlock:
        """The series with `forecaster`'s covariates (the same rows; encoded once per encoder)."""
        if forecaster.encoder is None:
            return self.block
        for encoder, block in self.encoded:
            if encoder is forecaster.encoder:
                return block
        block = forecaster.covariate_block(self.frame, need_future=False)
        if not np.array_equal(block.starts, self.block.starts) or not np.array_equal(
            block.ends, self.block.ends
        ):
            raise AssertionError("a refit's covariate block has other rows than the backtest's")
        self.encoded.append((forecaster.encoder, block))
        return block


def backtest_windows(
    forecaster: Forecaster,
    history: pd.DataFrame,
    n_windows: int,
    step: int | None = None,
    season_length: int = 1,
) -> BacktestWindows:
    """The windows of a backtest of `history` at `n_windows` cutoffs `step` apart (default: the
    horizon), validated by `forecaster`; a cutoff with fewer than season_length + 1 steps of
    history is skipped (counted), no window at all is a DataValidationError."""
    H = forecaster.settings.horizon
    n_windows = require_int("n_windows", n_windows)
    step = H if step is None else require_int("step", step)
    m = require_int("season_length", season_length)
    c = forecaster.columns
    frame = forecaster.validate(history).frame
    encoded = []
    if forecaster.encoder is not None:
        # Covariates encoded once for the whole table; each window reads its own rows (its
        # input window, and for future-known ones its horizon), as a forecast at that origin would.
        block = forecaster.covariate_block(frame, need_future=False)
        encoded.append((forecaster.encoder, block))
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
    return BacktestWindows(
        frame, block, times, ends, series, window, end, skipped, n_windows, step, m, H, encoded
    )


def backtest_frame(
    forecaster: Forecaster,
    history: pd.DataFrame,
    n_windows: int,
    step: int | None = None,
    season_length: int = 1,
    batch_size: int = 4096,
    calibrate_levels: Sequence[int] = (),
) -> BacktestResult:
    """Rolling-origin forecasts of every series at `n_windows` cutoffs `step` apart, scored,
    without refitting.

    A model with intervals also gets their coverage and width per level; `calibrate_levels`
    computes conformal quantiles from these windows' errors (`BacktestResult.calibrated`).
    """
    started = time.perf_counter()
    calibrate_levels = check_levels(calibrate_levels)
    windows = backtest_windows(forecaster, history, n_windows, step, season_length)
    return score_windows(windows, [forecaster], None, batch_size, calibrate_levels, started)


@dataclass
class _Forecasts:
    """One model's forecasts of some of the windows, and what scores them."""

    preds: np.ndarray  # (n, H, 1 + Q) in data units: y_hat, then the quantiles
    scale: np.ndarray  # (n,) the series' scale the model divided each window by
    windows: np.ndarray  # (n, L) its scaled inputs, NaN where missing or padded
    bounds: dict[str, np.ndarray]  # interval column -> (n, H)
    unseen: int
    padded: int


def _forecast(
    forecaster: Forecaster, w: BacktestWindows, pick: np.ndarray, levels: Sequence[int], batch_size: int
) -> _Forecasts:
    """`forecaster`'s forecasts of the windows `pick` (indices into `w`'s windows)."""
    block = w.block_for(forecaster)
    series, end = w.series[pick], w.end[pick]
    # Each window is a series cut at its cutoff: the forecaster scales and pads it as it would
    # the whole series, from the history up to the cutoff only (no look-ahead in the scaling of
    # unseen series either).
    cut = SeriesBlock(
        ids=block.ids[series],
        starts=block.starts[series],
        ends=end,
        values=block.values,
        last_time=w.times[end - 1],
        covariates=None if block.covariates is None else block.covariates.take(series).ahead_at(end),
    )
    scaled = forecaster.scaled_windows(cut)
    preds = forecaster.predict_scaled(
        scaled.windows, batch_size, scaled.step, scaled.series, scaled.covariates, scaled.loc, scaled.scale
    )  # (W, H, 1 + Q): y_hat, then the quantiles
    preds = preds * scaled.scale[:, None, None] + scaled.loc[:, None, None]
    check_finite(preds, cut.ids)
    bounds: dict[str, np.ndarray] = {}
    if levels:
        point = preds[:, :, 0].astype(np.float64)
        every = forecaster.intervals.bounds(point, scaled.scale, scaled.windows)
        bounds = {k: v for k, v in every.items() if int(k.rsplit("_", 1)[1]) in levels}
    return _Forecasts(preds, scaled.scale, scaled.windows, bounds, scaled.unseen, scaled.padded)


def _common_levels(forecasters: Sequence[Forecaster]) -> list[int]:
    """The interval levels every model has (refits calibrate their own; one may lack a level)."""
    levels = [set(f.intervals.levels) if f.intervals is not None else set() for f in forecasters]
    common = sorted(set.intersection(*levels))
    dropped = sorted(set.union(*levels) - set(common))
    if dropped:
        log.warning("interval levels %s left out of the backtest: not every refit has them", dropped)
    return common


def score_windows(
    w: BacktestWindows,
    forecasters: Sequence[Forecaster],
    every: int | None = None,
    batch_size: int = 4096,
    calibrate_levels: Sequence[int] = (),
    started: float | None = None,
) -> BacktestResult:
    """Forecast every window and score them all at once. One model (`every` None) forecasts
    them all; with refits, window k is forecast by `forecasters[k // every]`."""
    started = time.perf_counter() if started is None else started
    calibrate_levels = check_levels(calibrate_levels)
    first = forecasters[0]
    s = first.settings
    c = first.columns
    H, m, n_windows, step = w.horizon, w.season_length, w.n_windows, w.step
    block, series, window, end = w.block, w.series, w.window, w.end
    refit = window // every if every is not None else np.zeros_like(window)
    if int(refit.max()) >= len(forecasters):
        raise ValueError(f"{len(forecasters)} models for {int(refit.max()) + 1} refits")
    levels = _common_levels(forecasters)
    parts = [(np.flatnonzero(refit == r), f) for r, f in enumerate(forecasters) if (refit == r).any()]
    done = [(pick, _forecast(f, w, pick, levels, batch_size)) for pick, f in parts]

    def joined(name: str) -> np.ndarray:
        values = [getattr(part, name) for _, part in done]
        out = np.empty((len(end), *values[0].shape[1:]), dtype=values[0].dtype)
        for (pick, _), value in zip(done, values, strict=True):
            out[pick] = value
        return out

    preds, unit_scale, inputs = joined("preds"), joined("scale"), joined("windows")
    bounds = {}
    for name in done[0][1].bounds:
        bounds[name] = np.empty((len(end), H), dtype=done[0][1].bounds[name].dtype)
        for pick, part in done:
            bounds[name][pick] = part.bounds[name]

    target = end[:, None] + np.arange(H)  # (W, H) rows of the forecast steps
    y = block.values[target].astype(np.float64)
    snaive = block.values[end[:, None] - m + np.arange(H) % m].astype(np.float64)  # last season, tiled
    scale = seasonal_scale(block, end, series, m)
    mask = np.isfinite(y) & np.isfinite(snaive)

    quantiles = list(s.quantiles)
    point = preds[:, :, 0].astype(np.float64)  # y_hat: a quantile or distribution model's median
    qpred = np.sort(preds[:, :, 1:].astype(np.float64), axis=-1) if quantiles else None
    cells = interval_scores(y, bounds, levels) if levels else {}
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
        kind = first.intervals.scale if first.intervals is not None else "series"
        unit = unit_scale.astype(np.float64) * score_units(kind, inputs)
        errors = np.abs(y - point) / unit[:, None]  # NaN where y is missing
        calibrated = calibrate(errors, calibrate_levels, "backtest", kind)
    if calibrated is not None:
        for level, q in zip(calibrated.levels, calibrated.quantiles, strict=True):
            by_step[f"calibrated_q{level}"] = q
            metrics[f"calibrated_q{level}"] = float(q.mean())  # the mean half-width, in series scales
    cutoff_times = pd.Series(w.times[end - 1])
    by_window = pd.DataFrame(
        {
            "window": np.arange(n_windows),
            "steps_before_last": step * np.arange(n_windows - 1, -1, -1),
            "series": np.bincount(window, minlength=n_windows),
            # Series may end at different times: the latest cutoff of each window names it.
            "cutoff": cutoff_times.groupby(window).max().reindex(range(n_windows)).to_numpy(),
            **({"refit": np.arange(n_windows) // every} if every is not None else {}),
            **scores["window"],
        }
    )

    table = pd.DataFrame(
        {
            c.id_col: np.repeat(block.ids[series], H),
            "cutoff": np.repeat(w.times[end - 1], H),
            **({"refit": np.repeat(refit, H)} if every is not None else {}),
            c.time_col: w.times[target].reshape(-1),
            c.target_col: y.reshape(-1).astype(np.float32),
        }
    )
    for q, name in enumerate(s.output_columns):  # the forecast's own columns, in its order
        table[name] = preds[:, :, q].reshape(-1)
    for name, values in bounds.items():
        table[name] = values.reshape(-1).astype(np.float32)
    seconds = time.perf_counter() - started
    log.info(
        "backtest: %d series x %d cutoffs (%d windows, %d skipped%s) in %.2fs: mae %.4g "
        "(seasonal naive %.4g)",
        len(block),
        n_windows,
        len(end),
        w.skipped,
        f"; {len(forecasters)} refits" if every is not None else "",
        seconds,
        metrics["mae"],
        metrics["snaive_mae"],
    )
    info: dict[str, Any] = {
        "step": step,
        "cutoffs": n_windows,
        "unseen_windows": sum(part.unseen for _, part in done),
        "padded": sum(part.padded for _, part in done),
    }
    return BacktestResult(
        table=table,
        metrics=metrics,
        by_window=by_window,
        by_step=by_step,
        n_series=len(block),
        n_windows=len(end),
        skipped=w.skipped,
        season_length=m,
        seconds=seconds,
        info=info,
        calibrated=calibrated,
    )
