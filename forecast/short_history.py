"""Young series: the forecast from a short input blended with seasonal naive, weighed on validation.

A series shorter than `input_size` is forecast from a window padded in front (NaN, masked).
The net meets such inputs rarely in training, and from a few days of history seasonal naive
(the last season of what was observed, tiled over the horizon) can be the better forecast
(bench/README.md, Short series). So for a window with n < input_size observed steps (n: the
steps from its first observed value to its end), the forecast becomes

    w(n) * net + (1 - w(n)) * seasonal naive,

with w(n) interpolated linearly between knots k = season_length, 2 * season_length, ... and
input_size - 1. Each knot's weight is fitted at training time (`calibrate_short_history`): the
validation windows with at least k observed steps are cut to their last k (the rest padded, as
a young series' window is), forecast by the net and by seasonal naive, and w_k in 0, 0.05, ..., 1
is the one with the least OWA relative to seasonal naive (the mean of sMAPE and MASE on the raw
values, each divided by seasonal naive's, as M4 combines them): w = 0 scores exactly 1, so the
net only gets a weight where it improves on seasonal naive in the two scores the benchmarks use.
(Mean absolute error on the scaled values, tried first, gave the net small weights that raised
the padded series' validation MASE above seasonal naive's: bench/README.md, Short series.)
A window with fewer observed steps than one season keeps the net's forecast (w = 1): seasonal
naive needs a whole season, and the net has the partial one. A full window (its first step
observed) is never touched, so forecasts of long series are bit-identical with or without the
blend. Every forecast column moves by the point forecast's shift (quantiles and intervals keep
their spread around it).

Stored beside `model.json` as `short_history.json`; a model without the file (every model saved
before it existed) forecasts with the net alone. This module is the maths and the file: the
forecaster applies it (`Forecaster.predict_scaled`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from forecast.errors import ModelNotFoundError
from forecast.models.inputs import COVARIATE_KEYS

if TYPE_CHECKING:
    from forecast.data.datamodule import SeriesDataModule
    from forecast.data.windows import WindowDataset
    from forecast.forecaster import Forecaster

log = logging.getLogger(__name__)

SHORT_HISTORY = "short_history.json"  # beside model.json in the forecaster's folder; optional
FORMAT_VERSION = 1
GRID = np.round(np.linspace(0.0, 1.0, 21), 2)  # the weights of the net tried at every knot
MAX_KNOTS = 8  # whole seasons below input_size kept as knots (evenly spread when more)
MIN_WINDOWS = 10  # validation windows a knot needs for its weight to be fitted
MAX_WINDOWS = 2_000  # validation windows read at most (evenly spread): a bounded cost (about
# 14,000 forecasts for 7 knots: seconds on a CPU) for a weight on a grid of 0.05
# Covariate windows over the input (and the horizon, for future-known ones): padded steps are 0.
INPUT_KEYS = ("futr", "futr_cat", "hist", "hist_cat")


def observed_steps(windows: np.ndarray) -> np.ndarray:
    """(N, L) scaled windows, NaN where missing or padded -> (N,) steps from the first observed
    value to the end of the window (L: a full window; 0: nothing observed)."""
    seen = ~np.isnan(windows)
    first = np.argmax(seen, axis=1)
    return np.where(seen.any(axis=1), windows.shape[1] - first, 0).astype(np.int64)


def seasonal_naive(windows: np.ndarray, season_length: int, horizon: int) -> np.ndarray:
    """(N, L) windows -> (N, H) the last season of each, tiled (NaN where that step is missing)."""
    m = season_length
    return windows[:, windows.shape[1] - m + np.arange(horizon) % m]


def truncate(windows: np.ndarray, keep: int) -> np.ndarray:
    """The windows with only their last `keep` steps left, the ones before padded (NaN)."""
    out = np.array(windows, dtype=np.float32, copy=True)
    out[:, : windows.shape[1] - keep] = np.nan
    return out


def knots_for(input_size: int, season_length: int, max_knots: int = MAX_KNOTS) -> list[int]:
    """Observed lengths to fit a weight at: whole seasons below `input_size`, and input_size - 1."""
    m = season_length
    seasons = np.arange(m, input_size, m)
    if len(seasons) > max_knots:
        seasons = seasons[np.round(np.linspace(0, len(seasons) - 1, max_knots)).astype(int)]
    knots = sorted({int(k) for k in seasons} | ({input_size - 1} if input_size - 1 >= m else set()))
    return knots


@dataclass
class ShortHistoryBlend:
    """Per observed length, the weight of the net's forecast against seasonal naive."""

    season_length: int
    input_size: int
    knots: np.ndarray  # (K,) int64 observed steps, ascending, all in [season_length, input_size)
    weights: np.ndarray  # (K,) float64 weight of the net at each knot (1 - weight: seasonal naive)
    windows: np.ndarray  # (K,) int64 validation windows each weight was fitted on
    source: str = "validation"

    def weight(self, observed: np.ndarray) -> np.ndarray:
        """(N,) observed steps -> (N,) weight of the net: interpolated between the knots, the
        nearest knot's beyond the last one, 1 for a full window or less than one season."""
        observed = np.asarray(observed)
        w = np.interp(observed, self.knots, self.weights)
        keep_net = (observed >= self.input_size) | (observed < self.season_length)
        return np.where(keep_net, 1.0, w)

    def apply(self, preds: np.ndarray, windows: np.ndarray, floor: np.ndarray | None = None) -> np.ndarray:
        """(N, H, C) scaled forecasts (point first) of (N, L) scaled windows -> the blended ones.

        Returns `preds` itself when no window is short; `floor` (N,), when given, is the least
        value a forecast column may take (a count model's zero, in scaled units).
        """
        if windows.shape[1] != self.input_size:
            raise ValueError(
                f"the short-history blend was fitted on windows of {self.input_size} steps, got "
                f"{windows.shape[1]}"
            )
        if len(windows) == 0 or not np.isnan(windows[:, 0]).any():
            return preds  # every window full: the net's forecast, untouched
        w = self.weight(observed_steps(windows))
        short = np.flatnonzero(w < 1.0)
        if len(short) == 0:
            return preds
        part = preds[short]  # (S, H, C)
        naive = seasonal_naive(windows[short], self.season_length, preds.shape[1])  # (S, H)
        point = part[:, :, 0]
        blended = w[short, None] * point + (1.0 - w[short, None]) * naive
        shift = np.where(np.isnan(naive), 0.0, blended - point).astype(preds.dtype)  # (S, H)
        part = part + shift[:, :, None]
        if floor is not None:
            part = np.maximum(part, np.asarray(floor, dtype=preds.dtype)[short, None, None])
        out = preds.copy()
        out[short] = part
        return out

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "method": "w * net + (1 - w) * seasonal naive, w per observed length (linear between knots)",
            "source": self.source,
            "season_length": int(self.season_length),
            "input_size": int(self.input_size),
            "knots": [int(k) for k in self.knots],
            "weights": [float(w) for w in self.weights],
            "windows": [int(n) for n in self.windows],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> ShortHistoryBlend:
        if raw.get("format_version", 0) > FORMAT_VERSION:
            raise ModelNotFoundError(
                f"the model's {SHORT_HISTORY} has format {raw['format_version']}, newer than this "
                f"forecast reads ({FORMAT_VERSION}); upgrade the package"
            )
        return cls(
            season_length=int(raw["season_length"]),
            input_size=int(raw["input_size"]),
            knots=np.asarray(raw["knots"], dtype=np.int64),
            weights=np.asarray(raw["weights"], dtype=np.float64),
            windows=np.asarray(raw["windows"], dtype=np.int64),
            source=raw.get("source", "?"),
        )

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SHORT_HISTORY
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ShortHistoryBlend | None:
        """The blend saved with a model, or None for a model without it (older ones too)."""
        path = Path(folder) / SHORT_HISTORY
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else None


def window_scores(
    forecast: np.ndarray, y: np.ndarray, mase_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H) raw forecasts and targets (NaN: missing), (N,) in-sample seasonal MAE -> each
    window's sMAPE and MASE over its known steps, (N,) each (NaN: no known step, or no scale)."""
    known = np.isfinite(forecast) & np.isfinite(y)
    err = np.where(known, np.abs(forecast - y), 0.0)
    denom = np.where(known, np.abs(forecast) + np.abs(y), 0.0)
    cells = np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = known.sum(axis=1)
        smape = np.where(count > 0, cells.sum(axis=1) / np.maximum(count, 1), np.nan)
        usable = (count > 0) & np.isfinite(mase_scale) & (mase_scale > 0)
        mase = np.where(
            usable, err.sum(axis=1) / np.maximum(count, 1) / np.where(usable, mase_scale, 1.0), np.nan
        )
    return smape, mase


def fit_weight(net: np.ndarray, naive: np.ndarray, y: np.ndarray, mase_scale: np.ndarray) -> float:
    """The weight in GRID of `net` against `naive` ((N, H) raw forecasts of targets `y`, (N,)
    in-sample seasonal MAE of each window's series) with the least OWA relative to naive: the
    mean of sMAPE and MASE (averaged over windows) each divided by seasonal naive's, so w = 0
    scores exactly 1 and the net only gets a weight that improves on seasonal naive.
    Where naive has no value (a missing step a season back) the forecast is the net's. Ties: the
    larger weight."""
    naive = np.where(np.isnan(naive), net, naive)
    base_smape, base_mase = (
        np.nanmean(v) if np.isfinite(v).any() else np.nan for v in window_scores(naive, y, mase_scale)
    )
    scores = []
    for w in GRID:
        smape, mase = window_scores(w * net + (1.0 - w) * naive, y, mase_scale)
        terms = [  # a naive that is exact (base 0) leaves the score itself: 0 at w = 0
            np.nanmean(v) / (base if base > 0 else 1.0)
            for v, base in ((smape, base_smape), (mase, base_mase))
            if np.isfinite(base)
        ]
        scores.append(float(np.mean(terms)) if terms else 0.0)
    return float(GRID[len(GRID) - 1 - int(np.argmin(scores[::-1]))])


def cut_covariates(covariates: dict[str, np.ndarray], keep: int, input_size: int) -> dict[str, np.ndarray]:
    """Covariate windows with the input steps before the last `keep` zeroed, as padding is."""
    out = {}
    for key, values in covariates.items():
        if key in INPUT_KEYS:
            values = values.copy()
            values[:, : input_size - keep] = 0
        out[key] = values
    return out


def validation_arrays(dataset: WindowDataset, indices: np.ndarray, batch_size: int) -> dict:
    """The windows at `indices` as numpy, gathered `batch_size` at a time: x, y (scaled, NaN
    where missing), step, series (None when the model has no cycle), covariates (key -> array),
    loc, scale, mase_scale (each series' in-sample seasonal MAE, raw)."""
    parts = []
    for i in range(0, len(indices), batch_size):
        batch = dataset.__getitems__(list(indices[i : i + batch_size]))
        parts.append(
            {
                "x": np.where(batch["x_mask"].numpy(), batch["x"].numpy(), np.float32(np.nan)),
                "y": np.where(batch["y_mask"].numpy(), batch["y"].numpy().astype(np.float64), np.nan),
                **{k: batch[k].numpy() for k in ("step", "series", *COVARIATE_KEYS) if k in batch},
                "loc": batch["loc"].numpy().astype(np.float64),
                "scale": batch["scale"].numpy().astype(np.float64),
                "mase_scale": batch["mase_scale"].numpy().astype(np.float64),
            }
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def calibrate_short_history(
    forecaster: Forecaster, dm: SeriesDataModule, knots: Sequence[int] | None = None
) -> ShortHistoryBlend | None:
    """Fit the blend on `dm`'s validation windows and set it on `forecaster` (also returned).

    None (and the forecaster left without a blend) where no knot can be fitted: an input window
    of one season or less, or fewer than MIN_WINDOWS validation windows.
    """
    dataset = dm.datasets["val"]
    L, H = forecaster.settings.input_size, forecaster.settings.horizon
    m = int(dm.season_length or 1)
    knots = knots_for(L, m) if knots is None else sorted(int(k) for k in knots if m <= k < L)
    forecaster.short_history = None
    if not knots or len(dataset) < MIN_WINDOWS:
        log.info("no short-history blend: no whole season (%d) below input_size %d, or no windows", m, L)
        return None
    # At most MAX_WINDOWS validation windows, evenly spread: a bounded cost on large data.
    picked = np.unique(np.round(np.linspace(0, len(dataset) - 1, min(len(dataset), MAX_WINDOWS))).astype(int))
    a = validation_arrays(dataset, picked, dm.eval_batch_size)
    lengths = observed_steps(a["x"])  # a short series' windows are padded: its own length
    covariates = {k: a[k] for k in COVARIATE_KEYS if k in a}
    fitted: list[tuple[int, float, int]] = []
    for k in knots:
        rows = np.flatnonzero(lengths >= k)
        if len(rows) < MIN_WINDOWS:
            log.info("short-history blend: %d validation windows hold %d steps, too few to fit", len(rows), k)
            continue
        x = truncate(a["x"][rows], k)
        pred = forecaster.predict_scaled(
            x,
            dm.eval_batch_size,
            a["step"][rows] if "step" in a else None,
            a["series"][rows] if "series" in a else None,
            cut_covariates({key: v[rows] for key, v in covariates.items()}, k, L),
            a["loc"][rows],
            a["scale"][rows],
            blend=False,
        )
        loc, scale = a["loc"][rows, None], a["scale"][rows, None]  # sMAPE and MASE score raw values
        weight = fit_weight(
            pred[:, :, forecaster.settings.point_index] * scale + loc,
            seasonal_naive(x, m, H) * scale + loc,
            a["y"][rows] * scale + loc,
            a["mase_scale"][rows],
        )
        fitted.append((k, weight, len(rows)))
    if not fitted:
        return None
    blend = ShortHistoryBlend(
        season_length=m,
        input_size=L,
        knots=np.array([k for k, _, _ in fitted], dtype=np.int64),
        weights=np.array([w for _, w, _ in fitted], dtype=np.float64),
        windows=np.array([n for _, _, n in fitted], dtype=np.int64),
    )
    log.info(
        "short-history blend fitted on validation windows: weight of the net %s at %s observed steps",
        blend.weights.tolist(),
        blend.knots.tolist(),
    )
    forecaster.short_history = blend
    return blend
