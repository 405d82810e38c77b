"""Direct multi-horizon heads: every future step at once, no recursive feedback."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    """Encoder state -> (horizon, n_outputs) through one hidden layer."""

    def __init__(
        self, in_dim: int, horizon: int, n_outputs: int = 1, hidden: int = 256, dropout: float = 0.0
    ):
        super().__init__()
        self.horizon, self.n_outputs = horizon, n_outputs
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, horizon * n_outputs),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (B, in_dim) -> (B, H * Q) -> (B, H, Q)
        return self.net(h).view(h.shape[0], self.horizon, self.n_outputs)


class FutureHead(nn.Module):
    """Per horizon step: [context, future-known covariates of that step, learned position] -> (Q,).

    Its output is added to the direct head's, so what is known about each forecast step (the
    day-ahead load forecast of that hour, its calendar) reaches that step's forecast. The
    weights are shared by every step (data-efficient: one relation, H examples per window); the
    learned position lets the relation differ with the lead time. Concatenation into one hidden
    layer is written as a sum of three linear maps, so the context is mapped once per window.
    """

    def __init__(
        self,
        context_dim: int,
        futr_dim: int,
        horizon: int,
        n_outputs: int = 1,
        hidden: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.context = nn.Linear(context_dim, hidden)
        self.futr = nn.Linear(futr_dim, hidden, bias=False)
        self.position = nn.Parameter(0.1 * torch.randn(horizon, hidden))
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_outputs))

    def forward(self, context: torch.Tensor, futr: torch.Tensor) -> torch.Tensor:
        # context (B, C), futr (B, H, F) -> hidden (B, H, hidden) -> (B, H, Q)
        hidden = self.context(context)[:, None] + self.futr(futr) + self.position
        return self.out(hidden)
