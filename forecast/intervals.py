"""Split conformal prediction intervals per horizon step, stored with the model as plain JSON.

The conformity score of a forecast step is its absolute error in units of the series' scale,
|y - y_hat| / scale (the scale the saved scaler divides by, or an unseen series' own), so one
set of per-step quantiles serves series of every level. With `scale="window"` the unit is also
multiplied by the spread of the window's own input (its standard deviation in series scales),
so intervals widen after volatile inputs and narrow after calm ones. For each configured level
(in percent) and horizon step h, the stored quantile q_h is the ceil((n + 1) * level)-th
smallest of the n held-out scores of step h; the forecast's interval is y_hat -/+ q_h * unit.
When the held-out windows and the future ones are exchangeable, that interval covers the truth
with probability at least `level` (and less than `level` + 1 / (n + 1) without ties).

Scores come from held-out windows: the validation windows at training time
(`forecast.calibration.window_residuals`) or the windows of a backtest (`forecast.backtest`).
docs/evaluation.md says which is which. This module is the maths and the file alone: it runs no
model.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.errors import ConfigError, ModelNotFoundError

log = logging.getLogger(__name__)

INTERVALS = "intervals.json"  # beside model.json in the forecaster's folder; optional
FORMAT_VERSION = 1
SCALES = ("series", "window")
# Floor of a window's spread (in series scales): a flat input must not give a zero-width interval.
MIN_SPREAD = 1e-2


def check_scale(scale: object) -> str:
    """`series` or `window`, else a ConfigError naming the option."""
    if scale not in SCALES:
        raise ConfigError(f"interval_scale must be 'series' or 'window', got {scale!r}")
    return str(scale)


def score_units(scale: str, windows: np.ndarray | None) -> np.ndarray | float:
    """(N,) what each window's errors are divided by, in series scales: 1, or its input's spread.

    `windows`: (N, L) inputs scaled by the series' scale, NaN where missing (or padded).
    """
    if scale == "series":
        return 1.0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an input with one observed step
        spread = np.nanstd(np.asarray(windows, dtype=np.float64), axis=1)
    return np.maximum(np.nan_to_num(spread, nan=MIN_SPREAD), MIN_SPREAD)


def check_levels(levels: Iterable[object] | None) -> list[int]:
    """Levels as sorted whole percents in 1..99: they name the columns (`y_hat_lo_80`)."""
    out: set[int] = set()
    for level in levels or ():
        ok = not isinstance(level, bool) and isinstance(level, int | float) and float(level).is_integer()
        if not ok or not 1 <= int(level) <= 99:
            raise ConfigError(
                f"intervals must be whole percents between 1 and 99 (e.g. intervals=[80,95], or [] for "
                f"none), got {level!r}"
            )
        out.add(int(level))
    return sorted(out)


def rank_of(n: int, level: int) -> int:
    """ceil((n + 1) * level / 100) in integers: which order statistic of n scores is the quantile."""
    return -(-(n + 1) * level // 100)


def min_windows(level: int) -> int:
    """The fewest held-out scores that give a finite `level`% quantile (4 for 80%, 19 for 95%)."""
    n = 1
    while rank_of(n, level) > n:
        n += 1
    return n


def conformal_quantile(scores: np.ndarray, level: int) -> np.ndarray:
    """(n, H) scores, NaN where a target was missing -> (H,) the conformal quantile of each step.

    Step h's quantile is the ceil((n_h + 1) * level / 100)-th smallest of its n_h finite scores,
    infinite when n_h is too small for the level (no finite bound has the guarantee).
    """
    scores = np.asarray(scores, dtype=np.float64)
    ordered = np.sort(scores, axis=0)  # NaN sort last
    counts = np.isfinite(scores).sum(axis=0)  # (H,)
    ranks = np.array([rank_of(int(n), level) for n in counts])
    finite = ranks <= counts
    out = np.full(scores.shape[1], np.inf)
    steps = np.flatnonzero(finite)
    out[steps] = ordered[ranks[steps] - 1, steps]
    return out


@dataclass
class ConformalIntervals:
    """Per-step conformal quantiles of scaled absolute errors, one row per level."""

    levels: list[int]
    quantiles: np.ndarray  # (n_levels, H) float64, in units of the series' scale
    windows: np.ndarray  # (H,) int64 held-out scores per step
    source: str = "validation"  # where the scores came from: validation | backtest
    scale: str = "series"  # the unit of the scores: series | window (see the module docstring)

    @property
    def columns(self) -> list[str]:
        """`y_hat_lo_80`, `y_hat_hi_80`, ... in the order of the levels."""
        return [f"y_hat_{side}_{level}" for level in self.levels for side in ("lo", "hi")]

    def bounds(
        self, point: np.ndarray, scale: np.ndarray, windows: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """(N, H) point forecasts, (N,) series scales and (N, L) scaled inputs (NaN where
        missing) -> {column: (N, H) bound}."""
        out: dict[str, np.ndarray] = {}
        scale = (np.asarray(scale, dtype=np.float64) * score_units(self.scale, windows))[:, None]
        for level, q in zip(self.levels, self.quantiles, strict=True):
            half = (q[None, :] * scale).astype(point.dtype, copy=False)
            out[f"y_hat_lo_{level}"] = point - half
            out[f"y_hat_hi_{level}"] = point + half
        return out

    def to_dict(self) -> dict:
        pairs = zip(self.levels, self.quantiles, strict=True)
        return {
            "format_version": FORMAT_VERSION,
            "method": "split conformal, |y - y_hat| / unit, per horizon step",
            "scale": self.scale,
            "source": self.source,
            "levels": list(self.levels),
            "quantiles": {str(level): [float(v) for v in q] for level, q in pairs},
            "windows": [int(n) for n in self.windows],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> ConformalIntervals:
        if raw.get("format_version", 0) > FORMAT_VERSION:
            raise ModelNotFoundError(
                f"the model's {INTERVALS} has format {raw['format_version']}, newer than this forecast "
                f"reads ({FORMAT_VERSION}); upgrade the package"
            )
        levels = [int(level) for level in raw["levels"]]
        quantiles = np.array([raw["quantiles"][str(level)] for level in levels], dtype=np.float64)
        windows = np.asarray(raw["windows"], dtype=np.int64)
        return cls(
            levels, quantiles, windows, raw.get("source", "?"), check_scale(raw.get("scale", "series"))
        )

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / INTERVALS
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ConformalIntervals | None:
        """The intervals saved with a model, or None for a model without them (older ones too)."""
        path = Path(folder) / INTERVALS
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else None


def calibrate(
    scores: np.ndarray, levels: Iterable[int], source: str = "validation", scale: str = "series"
) -> ConformalIntervals | None:
    """Conformal quantiles of (n, H) held-out scores (in `scale`'s unit, see `score_units`) for
    every level the scores suffice for.

    A level that needs more held-out windows than some step has (19 for 95%) is left out with
    a warning rather than stored as an infinite bound; None when no level is left.
    """
    levels, scale = check_levels(levels), check_scale(scale)
    scores = np.asarray(scores, dtype=np.float64)
    counts = np.isfinite(scores).sum(axis=0) if scores.ndim == 2 else np.zeros(0, np.int64)
    fewest = int(counts.min()) if counts.size else 0
    kept = [level for level in levels if min_windows(level) <= fewest]
    for level in sorted(set(levels) - set(kept)):
        log.warning(
            "no %d%% interval: it needs at least %d %s windows per horizon step, there are %d; give "
            "more held-out windows (a larger data.val_size) or choose a lower level",
            level,
            min_windows(level),
            source,
            fewest,
        )
    if not kept:
        return None
    quantiles = np.stack([conformal_quantile(scores, level) for level in kept])
    return ConformalIntervals(kept, quantiles, counts.astype(np.int64), source, scale)


def interval_scores(
    y: np.ndarray, bounds: dict[str, np.ndarray], levels: Iterable[int]
) -> dict[str, np.ndarray]:
    """Per cell: `coverage_L` (1.0 inside [lo, hi], else 0.0) and `width_L` (hi - lo) per level."""
    out: dict[str, np.ndarray] = {}
    for level in levels:
        lo, hi = bounds[f"y_hat_lo_{level}"], bounds[f"y_hat_hi_{level}"]
        out[f"coverage_{level}"] = ((lo <= y) & (y <= hi)).astype(np.float64)
        out[f"width_{level}"] = (hi - lo).astype(np.float64)
    return out
