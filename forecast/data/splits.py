"""Where each series' training, validation and test parts begin, and MASE's in-sample scale:
the per-series arithmetic behind `SeriesDataModule`'s time split (plain NumPy)."""

from __future__ import annotations

import numpy as np


def seasonal_mae(values: np.ndarray, offsets: np.ndarray, ends: np.ndarray, season: int) -> np.ndarray:
    """Per-series in-sample MAE of the seasonal naive forecast over [start, end): MASE's scale."""
    out = np.ones(len(offsets) - 1, dtype=np.float32)
    for i in range(len(out)):
        y = values[offsets[i] : offsets[i] + ends[i]]
        m = season if len(y) > season else 1
        diffs = np.abs(y[m:] - y[:-m])
        mean = float(np.nanmean(diffs)) if np.isfinite(diffs).any() else 0.0
        out[i] = mean if mean > 1e-8 else 1.0
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
