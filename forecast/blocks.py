"""The arrays every forecast path works on: whole series laid end to end (`SeriesBlock`), their
encoded covariates (`CovariateRows`), and the network's scaled input for them (`ScaledWindows`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.validation import ColumnSpec


@dataclass
class CovariateRows:
    """A block's encoded covariates: per row, per series, and where each series' horizon is.

    `rows` holds the `CovariateEncoder.encode_rows` arrays ("futr", "futr_cat", "hist",
    "hist_cat"), one row per row of the block's values and possibly more after them (horizon
    rows from a separate future table); `ahead[i]` is the first of series i's `horizon`
    consecutive rows there. The input window of series i ending at row e is rows[e - L:e], as
    for the target, so a backtest that cuts series earlier sets `ahead` to the cut.
    """

    rows: dict[str, np.ndarray]  # key -> (rows, width)
    static: dict[str, np.ndarray]  # "static" (n, S) float32, "static_cat" (n, Sc) int64
    ahead: np.ndarray  # (n,) int64

    def take(self, order: np.ndarray) -> CovariateRows:
        """The same rows for the series in `order`."""
        return CovariateRows(self.rows, {k: v[order] for k, v in self.static.items()}, self.ahead[order])

    def ahead_at(self, ends: np.ndarray) -> CovariateRows:
        """The same rows with each series' horizon starting at `ends` (origins inside the history)."""
        return CovariateRows(self.rows, self.static, np.asarray(ends, dtype=np.int64))

    def windows(self, positions: np.ndarray, padded: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
        """Batch arrays for windows at `positions` ((n, L) rows, `padded` True before a series'
        start): futr over the input window and the horizon, hist over the window, static."""
        safe = np.maximum(positions, 0)  # (n, L); padded steps are zeroed below
        ahead = self.ahead[:, None] + np.arange(horizon)  # (n, H)
        out: dict[str, np.ndarray] = {}
        for key, values in self.rows.items():
            window = values[safe]  # (n, L, width)
            window[padded] = 0
            if key in ("futr", "futr_cat"):
                window = np.concatenate([window, values[ahead]], axis=1)  # (n, L + H, width)
            out[key] = window
        out.update(self.static)
        return out


@dataclass
class SeriesBlock:
    """Whole, validated series laid end to end: series i is values[starts[i]:ends[i]].

    The unit of work of every forecast path (one-shot, streamed chunks, Ray partitions), so
    that they all compute the same numbers. Series are in output order (sorted by id).
    `covariates`: the encoded covariates of a model that reads them (`Forecaster.covariate_block`).
    """

    ids: np.ndarray  # (n,) series ids
    starts: np.ndarray  # (n,) int64
    ends: np.ndarray  # (n,) int64
    values: np.ndarray  # (rows,) float32, NaN where missing
    last_time: np.ndarray  # (n,) datetime64 or int64: each series' last time stamp
    covariates: CovariateRows | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: ColumnSpec) -> SeriesBlock:
        """From a validated frame (sorted by id then time)."""
        ids = frame[columns.id_col].to_numpy()
        starts = run_starts(ids)
        ends = np.append(starts[1:], len(ids)).astype(np.int64)
        return cls(
            ids=ids[starts],
            starts=starts,
            ends=ends,
            values=frame[columns.target_col].to_numpy(dtype=np.float32),
            last_time=frame[columns.time_col].to_numpy()[ends - 1],
        )

    def take(self, order: np.ndarray) -> SeriesBlock:
        """The same rows, series in `order`."""
        return SeriesBlock(
            self.ids[order],
            self.starts[order],
            self.ends[order],
            self.values,
            self.last_time[order],
            None if self.covariates is None else self.covariates.take(order),
        )


def run_starts(ids: np.ndarray) -> np.ndarray:
    """(n_runs,) int64 first row of every run of equal consecutive ids."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return np.concatenate([[0], change]).astype(np.int64)


@dataclass
class ScaledWindows:
    """The network's input for a set of series, and what turns its output into a forecast."""

    ids: np.ndarray  # (n,)
    last_time: np.ndarray  # (n,)
    windows: np.ndarray  # (n, L) float32, scaled, NaN where missing
    loc: np.ndarray  # (n,) float32
    scale: np.ndarray  # (n,) float32
    unseen: int = 0  # how many series were not in training (scaled by their own history)
    padded: int = 0  # how many series were shorter than the input (padded in front, masked)
    step: np.ndarray | None = None  # (n,) int64 step number of the first forecast step (cycles)
    series: np.ndarray | None = None  # (n,) int64 series code, 0 = unseen (per-series cycles)
    covariates: dict[str, np.ndarray] | None = None  # batch key -> (n, ...) encoded covariates

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: Sequence[ScaledWindows]) -> ScaledWindows:
        if len(parts) == 1:
            return parts[0]

        def joined(name: str) -> np.ndarray | None:
            first = getattr(parts[0], name)
            return None if first is None else np.concatenate([getattr(p, name) for p in parts])

        covariates = None
        if parts[0].covariates is not None:
            covariates = {k: np.concatenate([p.covariates[k] for p in parts]) for k in parts[0].covariates}
        return cls(
            ids=joined("ids"),
            last_time=joined("last_time"),
            windows=joined("windows"),
            loc=joined("loc"),
            scale=joined("scale"),
            unseen=sum(p.unseen for p in parts),
            padded=sum(p.padded for p in parts),
            step=joined("step"),
            series=joined("series"),
            covariates=covariates,
        )
