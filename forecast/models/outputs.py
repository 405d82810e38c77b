"""Output parts: the decoder's raw columns -> the forecast's columns on the scale of the input.

The wrappers' shifts (the linear skip and the learned cycle, on the normalised scale) and the
window norm's mean and std are applied here, because only the output part knows which of its
columns are locations (shifted and scaled) and which are spreads (scaled only).
"""

from __future__ import annotations

from collections.abc import Sequence

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


OUTPUTS: dict[str, type[PointOutput]] = {"point": PointOutput, "quantiles": MonotoneQuantiles}


def build_output(kind: str, n_outputs: int) -> PointOutput:
    """The output part named `kind` with `n_outputs` columns (quantiles: one per quantile)."""
    if kind not in OUTPUTS:
        raise ConfigError(f"unknown output {kind!r}; use one of {sorted(OUTPUTS)}")
    return OUTPUTS[kind](n_outputs)
