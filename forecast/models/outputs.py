"""Output parts: the decoder's raw columns -> the forecast's columns on the scale of the input.

The wrappers' shifts (the linear skip and the learned cycle, on the normalised scale) and the
window norm's mean and std are applied here, because only the output part knows which of its
columns are locations (shifted and scaled) and which are spreads (scaled only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from forecast.errors import ConfigError


class PointOutput(nn.Module):
    """Unconstrained columns, each a location: a point forecast or (models saved before monotone
    quantiles existed) free quantiles."""

    def __init__(self, n_outputs: int = 1) -> None:
        super().__init__()
        self.n_params = n_outputs

    def forward(
        self,
        raw: torch.Tensor,
        shifts: Sequence[torch.Tensor],
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
    ) -> torch.Tensor:
        """raw (B, H, P), shifts each (B, H), window mean and std (B, 1) or None -> (B, H, P)."""
        for shift in shifts:
            raw = raw + shift[:, :, None]  # shared by every column
        if mean is None or std is None:
            return raw
        return raw * std[:, :, None] + mean[:, :, None]


class MonotoneQuantiles(PointOutput):
    """Quantiles that cannot cross, by construction: the lowest, then positive increments.

    Column 0 is the lowest quantile; each next one adds softplus(raw), so q_1 <= q_2 <= ... for
    any weights and inputs (a sort would let gradients through in the wrong order).
    """

    def forward(
        self,
        raw: torch.Tensor,
        shifts: Sequence[torch.Tensor],
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
    ) -> torch.Tensor:
        steps = F.softplus(raw[..., 1:]).cumsum(-1)  # (B, H, P - 1), increasing
        ordered = torch.cat([raw[..., :1], raw[..., :1] + steps], dim=-1)  # (B, H, P)
        return super().forward(ordered, shifts, mean, std)


SPREAD_EPS = 1e-4  # keeps scales, dispersions and df - 2 away from 0 (finite NLL, finite ppf)


class DistributionOutput(PointOutput):
    """A distribution's parameters: column 0 its location, the rest positive spreads or shapes.

    Only the location is shifted and scaled like a point forecast (by `PointOutput`); a spread
    is multiplied by the window std alone. `n_outputs` is not read: a distribution fixes its
    parameter count. `forecast.models.distributions` turns the columns into a torch
    distribution, a likelihood and quantiles.
    """

    N_PARAMS = 2

    def __init__(self, n_outputs: int | None = None) -> None:
        super().__init__(self.N_PARAMS)

    def forward(
        self,
        raw: torch.Tensor,
        shifts: Sequence[torch.Tensor],
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
    ) -> torch.Tensor:
        """raw (B, H, P) -> (B, H, P): the location, then the other parameters."""
        location = super().forward(raw[..., :1], shifts, mean, std)  # (B, H, 1)
        return torch.cat([location, self.others(raw[..., 1:], std)], dim=-1)

    def others(self, raw: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
        """raw (B, H, P - 1) -> the parameters after the location (B, H, P - 1)."""
        raise NotImplementedError


def spread(raw: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
    """raw (B, H, 1) -> (B, H, 1) > 0 on the scale of x (times the window std, if any)."""
    positive = F.softplus(raw) + SPREAD_EPS
    return positive if std is None else positive * std[:, :, None]


class NormalOutput(DistributionOutput):
    """Normal(loc, scale): columns loc, scale > 0."""

    def others(self, raw: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
        return spread(raw, std)


class StudentTOutput(DistributionOutput):
    """Student-t(df, loc, scale): columns loc, scale > 0, df > 2 (so the variance is finite)."""

    N_PARAMS = 3

    def others(self, raw: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
        df = 2.0 + F.softplus(raw[..., 1:2]) + SPREAD_EPS  # (B, H, 1)
        return torch.cat([spread(raw[..., :1], std), df], dim=-1)


class NegBinOutput(DistributionOutput):
    """Negative binomial for counts: columns a location on the scale of x and a dispersion > 0.

    The counts live on the raw scale, which the net does not see: the module maps column 0 with
    the series' loc and scale to the mean, mean_raw = softplus(col0 * scale + loc), and the
    dispersion alpha (variance = mean + alpha * mean^2) to total_count = 1 / alpha
    (`forecast.models.distributions`). The dispersion has no unit: the window std leaves it be.
    """

    def others(self, raw: torch.Tensor, std: torch.Tensor | None) -> torch.Tensor:
        return F.softplus(raw) + SPREAD_EPS


OUTPUTS: dict[str, type[PointOutput]] = {
    "point": PointOutput,
    "quantiles": MonotoneQuantiles,
    "normal": NormalOutput,
    "student_t": StudentTOutput,
    "negbin": NegBinOutput,
}


def build_output(kind: str, n_outputs: int) -> PointOutput:
    """The output part named `kind` with `n_outputs` columns (quantiles: one per quantile; a
    distribution has its own count, `n_params`)."""
    if kind not in OUTPUTS:
        raise ConfigError(f"unknown output {kind!r}; use one of {sorted(OUTPUTS)}")
    return OUTPUTS[kind](n_outputs)


def median_of_quantiles(values: Any, levels: Sequence[float]) -> Any:
    """(..., Q) forecasts (NumPy or torch) at ascending quantile `levels` -> (...) their median,
    the point forecast of a quantile head: the 0.5 column when it was trained; else linear
    interpolation in the level between the two quantiles around 0.5 (0.4 and 0.6 -> their
    mean); the nearest quantile when all lie on one side of 0.5 (no extrapolation)."""
    levels = np.asarray(levels, dtype=np.float64)
    upper = int(np.searchsorted(levels, 0.5))  # the first level >= 0.5
    if upper < len(levels) and levels[upper] == 0.5:
        return values[..., upper]
    if upper == 0 or upper == len(levels):
        return values[..., min(upper, len(levels) - 1)]
    lo, hi = levels[upper - 1], levels[upper]
    weight = float((0.5 - lo) / (hi - lo))  # a Python float keeps the array's dtype (NumPy, torch)
    below = values[..., upper - 1]
    return below + weight * (values[..., upper] - below)
