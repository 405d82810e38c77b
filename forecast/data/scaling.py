"""Per-series scaling fitted on training data only, stored with the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from forecast.errors import ConfigError

ScalerKind = Literal["standard", "robust", "minmax", "none"]

_EPS = 1e-6


@dataclass
class SeriesScaler:
    """Location and scale per series: `(y - loc) / scale`.

    sklearn's scalers fit one set of statistics per column; here every series needs its own,
    over a long table of possibly 100k series, so the statistics come from one pandas groupby
    instead of one sklearn object per series.
    """

    kind: ScalerKind
    stats: pd.DataFrame  # index: series id; columns: loc, scale (float32)

    @classmethod
    def fit(cls, ids: pd.Series, values: pd.Series, kind: ScalerKind = "standard") -> SeriesScaler:
        """Fit one (loc, scale) per id from the given (training) values; NaNs are ignored."""
        grouped = values.astype("float64").groupby(ids.to_numpy(), sort=False)
        if kind == "standard":
            loc, scale = grouped.mean(), grouped.std(ddof=0)
        elif kind == "robust":
            loc = grouped.median()
            scale = grouped.quantile(0.75) - grouped.quantile(0.25)
        elif kind == "minmax":
            loc = grouped.min()
            scale = grouped.max() - loc
        elif kind == "none":
            loc = grouped.size() * 0.0
            scale = loc + 1.0
        else:
            raise ConfigError(f"unknown scaler {kind!r}; use standard, robust, minmax or none")
        # A constant series has no spread: leave it unscaled rather than divide by zero.
        scale = scale.where(scale.abs() > _EPS, 1.0).fillna(1.0)
        stats = pd.DataFrame({"loc": loc.fillna(0.0), "scale": scale}).astype("float32")
        stats.index.name = "unique_id"
        return cls(kind=kind, stats=stats)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return loc, scale and a known-mask for each id (unknown ids get loc 0, scale 1)."""
        pos = self.stats.index.get_indexer(ids)
        known = pos >= 0
        loc = np.where(known, self.stats["loc"].to_numpy()[pos], 0.0).astype("float32")
        scale = np.where(known, self.stats["scale"].to_numpy()[pos], 1.0).astype("float32")
        return loc, scale, known

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """(n,) int64 code of each id: 1 + its row in the scaler (the training series), 0 if unknown.

        The scaler is the one record of the training series saved with the model, so per-series
        parameters (a learned cycle) are keyed by these codes in training and forecasting alike.
        """
        return (self.stats.index.get_indexer(ids) + 1).astype(np.int64)

    def to_frame(self) -> pd.DataFrame:
        """Plain table for saving next to the weights (id, loc, scale)."""
        return self.stats.reset_index()

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, kind: ScalerKind) -> SeriesScaler:
        """Inverse of `to_frame`."""
        return cls(kind=kind, stats=frame.set_index(frame.columns[0])[["loc", "scale"]])


def segment_stats(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-series (loc, scale) of values[starts[i]:ends[i]], as `SeriesScaler.fit` computes them.

    `standard` (the default scaler) is vectorised with segment sums: pandas' groupby was a tenth
    of the batch forecast's time on series the model never saw, and gigabytes of temporaries when
    fitting 100M training rows; other kinds use the fit.
    """
    lengths = ends - starts
    if kind != "standard":
        first = np.cumsum(lengths) - lengths  # each series' first row in the gathered rows
        rows = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - np.repeat(first, lengths))
        codes = np.repeat(np.arange(len(starts)), lengths)
        own = SeriesScaler.fit(pd.Series(codes), pd.Series(values[rows].astype(np.float64)), kind)
        loc, scale, _ = own.lookup(np.arange(len(starts)))
        return loc, scale
    # Segment sums straight over `values` (no gathered copy): reduceat over the interleaved
    # bounds (start_0, end_0, start_1, end_1, ...) sums [start_i, end_i) at the even places.
    ordered = len(starts) < 2 or bool(np.all(starts[1:] >= ends[:-1]))
    if not ordered or len(starts) == 0 or (lengths <= 0).any():
        return _segment_stats_gathered(values, starts, ends)
    if not np.isnan(values).any() and ends[-1] < len(values):
        return _finish(*_complete_stats(values, starts, ends))
    x = np.append(values.astype(np.float64), 0.0)  # the extra 0 lets the last end be an index
    missing = np.isnan(x)
    x[missing] = 0.0
    bounds = np.stack([starts, ends], axis=1).reshape(-1)

    def sums(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(a, bounds)[::2]

    count = sums((~missing).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums(x) / count
        # Second pass about the mean, as pandas' std does, for the same rounding.
        dev = np.where(missing, 0.0, x - np.repeat(np.append(mean, 0.0), _gaps(starts, ends, len(x))))
        std = np.sqrt(sums(dev * dev) / count)
    return _finish(mean, std)


def _complete_stats(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of ordered, non-empty segments with no value missing and the last ending
    before the array does: the same float64 sums as the general case, without its copies and
    masks (a mapped store's set-up spends its time here)."""
    bounds = np.stack([starts, ends], axis=1).reshape(-1)
    count = (ends - starts).astype(np.float64)
    mean = np.add.reduceat(values, bounds, dtype=np.float64)[::2] / count
    dev = np.subtract(
        values, np.repeat(np.append(mean, 0.0), _gaps(starts, ends, len(values))), dtype=np.float64
    )
    np.multiply(dev, dev, out=dev)
    std = np.sqrt(np.add.reduceat(dev, bounds)[::2] / count)
    return mean, std


def _gaps(starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """Repeat counts that lay out mean_i over [prev_end, end_i) and 0 after the last end."""
    bounds = np.append(ends, n)
    return np.diff(np.concatenate([[0], bounds]))


def _finish(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # As SeriesScaler.fit: no spread (or no values) -> scale 1; no values -> loc 0.
    std = np.where(np.isfinite(std) & (np.abs(std) > _EPS), std, 1.0)
    return np.nan_to_num(mean, nan=0.0).astype(np.float32), std.astype(np.float32)


def _segment_stats_gathered(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The standard statistics over gathered rows: for overlapping or empty segments."""
    lengths = ends - starts
    first = np.cumsum(lengths) - lengths
    rows = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - np.repeat(first, lengths))
    gathered = values[rows].astype(np.float64)
    missing = np.isnan(gathered)
    n = len(starts)
    codes = np.repeat(np.arange(n), lengths)
    count = np.bincount(codes, weights=~missing, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(codes, weights=np.where(missing, 0.0, gathered), minlength=n) / count
        dev = np.where(missing, 0.0, gathered - np.repeat(mean, lengths))
        std = np.sqrt(np.bincount(codes, weights=dev * dev, minlength=n) / count)
    return _finish(mean, std)
