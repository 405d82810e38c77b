"""Parts that act around any encoder and decoder: window normalisation and the learned cycle.

Both work on the target alone (covariates are scaled by the data side) and are undone on the
forecast's location columns by the output part (`forecast.models.outputs`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from forecast.errors import ConfigError

NormKind = Literal["revin", "last"]


class WindowNorm(nn.Module):
    """Normalises each input window by its own statistics; the forecast is mapped back with them.

    "revin": the window's observed mean and std (reversible instance normalisation, Kim et al.
    2022), for levels that drift between training and forecasting; "last": only subtracts the
    last observed value (SegRNN's and NLinear's normalisation: the forecast starts where the
    series is). None: identity (no mean and std to undo). Unobserved steps are left out of the
    statistics.
    """

    def __init__(self, kind: NormKind | None) -> None:
        super().__init__()
        if kind not in (None, "revin", "last"):
            raise ConfigError(f"window_norm must be true, false, 'revin' or 'last', got {kind!r}")
        self.kind = kind

    def forward(
        self, x: torch.Tensor, observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x, observed (B, L) -> normalised x (B, L), mean (B, 1) | None, std (B, 1) | None."""
        if self.kind == "last":
            # Position of each window's last observed step (the largest observed index).
            last = (observed * torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)).argmax(1)
            mean, std = x.gather(1, last[:, None]), torch.ones_like(x[:, :1])  # (B, 1)
            return (x - mean) * observed, mean, std
        if self.kind == "revin":
            count = observed.sum(1, keepdim=True).clamp_min(1.0)
            mean = (x * observed).sum(1, keepdim=True) / count  # (B, 1)
            std = (((x - mean) * observed).square().sum(1, keepdim=True) / count).sqrt() + 1e-5
            return (x - mean) / std * observed, mean, std
        return x, None, None


class LearnedCycle(nn.Module):
    """A learned cycle of `cycle_len` steps, removed from the input and added to the forecast.

    Residual cycle forecasting (Lin et al. 2024, CycleNet): the encoder models what the cycle
    does not explain. The phase comes from `step`, each window's absolute step number of its
    first forecast step (`forecast.data.calendar`). With `n_series` > 0 every training series
    adds its own learned deviation (`series` codes 1 .. n_series; 0, a series not seen in
    training, gets the shared cycle: row 0 is padding and stays zero).
    """

    def __init__(self, cycle_len: int, n_series: int = 0) -> None:
        super().__init__()
        if cycle_len < 1 or n_series < 0:
            raise ConfigError(f"cycle_len must be >= 1 and n_series >= 0, got {cycle_len}, {n_series}")
        self.cycle_len = cycle_len
        self.table = nn.Parameter(torch.zeros(cycle_len))
        self.series = nn.Embedding(n_series + 1, cycle_len, padding_idx=0) if n_series else None
        if self.series is not None:
            nn.init.zeros_(self.series.weight)

    def forward(
        self, step: torch.Tensor | None, series: torch.Tensor | None, L: int, H: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cycle over the input (B, L) and the horizon (B, H) of every window."""
        if step is None:
            raise ConfigError(
                "this model learns a cycle (cycle_len > 0): pass `step`, the absolute step "
                "number of each window's first forecast step"
            )
        table = self.table[None, :].expand(step.shape[0], -1)  # (B, C)
        if self.series is not None and series is not None:
            table = table + self.series(series.long().clamp(0, self.series.num_embeddings - 1))
        step = step.long()[:, None]
        phase_in = torch.remainder(step + torch.arange(-L, 0, device=step.device), self.cycle_len)
        phase_out = torch.remainder(step + torch.arange(H, device=step.device), self.cycle_len)
        return table.gather(1, phase_in), table.gather(1, phase_out)
