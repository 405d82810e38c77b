"""Per-series scaling fitted on training data only, stored with the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

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
            raise ValueError(f"unknown scaler {kind!r}; use standard, robust, minmax or none")
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
