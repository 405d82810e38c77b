"""Output parts: the decoder's raw columns -> the forecast's columns on the scale of the input.

The wrappers' shifts (the linear skip and the learned cycle, on the normalised scale) and the
window norm's mean and std are applied here, because only the output part (with its
distribution's `constrain`) knows which of its columns are locations (shifted and scaled) and
which are spreads (scaled only) or shapes (left be).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from forecast.errors import ConfigError
from forecast.models.distributions import DISTRIBUTIONS, Distribution


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


class DistributionOutput(PointOutput):
    """A distribution's parameters (`forecast.models.distributions`): column 0 its location, the
    rest what the distribution's `constrain` makes of them (positive spreads, shapes).

    Only the location is shifted and scaled like a point forecast (by `PointOutput`); a spread
    is multiplied by the window std alone. The distribution fixes the parameter count.
    """

    def __init__(self, distribution: Distribution) -> None:
        super().__init__(distribution.n_params)
        self.distribution = distribution

    def forward(
        self,
        raw: torch.Tensor,
        shifts: Sequence[torch.Tensor],
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
    ) -> torch.Tensor:
        """raw (B, H, P) -> (B, H, P): the location, then the other parameters."""
        location = super().forward(raw[..., :1], shifts, mean, std)  # (B, H, 1)
        return torch.cat([location, self.distribution.constrain(raw[..., 1:], std)], dim=-1)


# The output parts by name, built from their column count; each distribution
# (`distributions.DISTRIBUTIONS`) is an output part of its own name too.
OUTPUTS: dict[str, type[PointOutput]] = {"point": PointOutput, "quantiles": MonotoneQuantiles}


def build_output(kind: str, n_outputs: int) -> PointOutput:
    """The output part named `kind` with `n_outputs` columns (quantiles: one per quantile; a
    distribution has its own count, `n_params`)."""
    if kind in DISTRIBUTIONS:
        return DistributionOutput(DISTRIBUTIONS[kind])
    if kind not in OUTPUTS:
        raise ConfigError(f"unknown output {kind!r}; use one of {sorted([*OUTPUTS, *DISTRIBUTIONS])}")
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
