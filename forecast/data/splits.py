"""Where each series' training, validation and test parts begin, and MASE's in-sample scale:
the per-series arithmetic behind `SeriesDataModule`'s time split (plain NumPy)."""

from __future__ import annotations

import numpy as np


def seasonal_mae(values: np.ndarray, offsets: np.ndarray, ends: np.ndarray, season: int) -> np.ndarray:
    """Per-series in-sample MAE of the seasonal naive forecast over [start, end): MASE's scale.

    A series no longer than `season` uses lag 1; a series with no pair of observed values, or
    no error at all, gets 1. Vectorised over all series (one pass over the values, float64
    sums): a loop over a million series took minutes of a mapped store's set-up.
    """
    starts = offsets[:-1].astype(np.int64)
    lengths = np.asarray(ends, dtype=np.int64)
    lag = np.where(lengths > season, season, 1)
    pairs = np.maximum(lengths - lag, 0)  # |y[t] - y[t - lag]| for t in [lag, length)
    total = int(pairs.sum())
    series = np.repeat(np.arange(len(starts)), pairs)
    within = np.arange(total) - np.repeat(np.cumsum(pairs) - pairs, pairs) + np.repeat(lag, pairs)
    rows = np.repeat(starts, pairs) + within
    diffs = np.abs(values[rows].astype(np.float64) - values[rows - np.repeat(lag, pairs)])
    observed = ~np.isnan(diffs)
    count = np.bincount(series, weights=observed, minlength=len(starts))
    sums = np.bincount(series, weights=np.where(observed, diffs, 0.0), minlength=len(starts))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / count
    return np.where((count > 0) & (mean > 1e-8), mean, 1.0).astype(np.float32)


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
