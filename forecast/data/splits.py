"""Where each series' training, validation and test parts begin, and MASE's in-sample scale:
the per-series arithmetic behind `SeriesDataModule`'s time split (plain NumPy)."""

from __future__ import annotations

import numpy as np


def seasonal_mae(values: np.ndarray, offsets: np.ndarray, ends: np.ndarray, season: int) -> np.ndarray:
    """Per-series in-sample MAE of the seasonal naive forecast over [start, end): MASE's scale.

    A series no longer than `season` uses lag 1; a series with no pair of observed values, or
    no error at all, gets 1. Vectorised (a loop over a million series took minutes of a mapped
    store's set-up): per lag, the differences of the whole array with itself `lag` rows on, then
    each series' segment summed in float64 (`reduceat`, exact per segment, unlike prefix sums
    that mix the scales of neighbouring series).
    """
    starts = offsets[:-1].astype(np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lags = np.where(ends > season, season, 1)
    out = np.ones(len(starts), dtype=np.float32)
    complete = not np.isnan(values).any()
    for lag in np.unique(lags):
        pick = np.flatnonzero(lags == lag)
        diffs = np.zeros(len(values) + 1)  # diffs[t] = |y[t] - y[t - lag]|; one spare 0 at the end
        np.subtract(values[lag:], values[:-lag], out=diffs[lag:-1], dtype=np.float64)
        np.abs(diffs, out=diffs)
        first, last = starts[pick] + lag, starts[pick] + ends[pick]  # [first, last) of each series
        empty = last <= first
        bounds = np.stack([np.where(empty, 0, first), np.where(empty, 0, last)], axis=1).reshape(-1)
        if complete:  # no value missing: every pair is observed
            sums = np.add.reduceat(diffs, bounds)[::2]
            count = np.where(empty, 0, last - first).astype(np.float64)
        else:
            observed = ~np.isnan(diffs)
            diffs[~observed] = 0.0
            sums = np.add.reduceat(diffs, bounds)[::2]
            count = np.add.reduceat(observed.astype(np.float64), bounds)[::2]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(empty | (count == 0), 0.0, sums / count)
        out[pick] = np.where(mean > 1e-8, mean, 1.0)
    return out


def split_points(
    lengths: np.ndarray, horizon: int, val_size: int, test_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(val_start, test_start) per series: where its validation and test targets begin.

    A series long enough for all three parts ends with `test_size` test steps after `val_size`
    validation steps. A shorter one serves training first, then validation, then test: one
    training window needs horizon + 1 steps, and a series the model never learns from would
    only be scored as a stranger (its scaler comes from the training part too), so training
    gets its steps before validation, which early stopping needs, before test. A part the series
    is too short for is empty (its start is the series' length).
    """
    n = np.asarray(lengths, dtype=np.int64)
    train_min = horizon + 1
    has_test = n >= train_min + val_size + test_size
    has_val = n >= train_min + val_size
    test_start = np.where(has_test, n - test_size, n)
    val_start = np.where(has_test, n - test_size - val_size, np.where(has_val, n - val_size, n))
    return val_start, test_start
