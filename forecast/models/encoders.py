"""The recurrent encoder part: cell kind, layers, direction.

Every kind is called like `nn.LSTM(batch_first=True)`: `(inputs (B, T, in), state=None) ->
(outputs (B, T, dirs * hidden), state)`, the state a tensor (GRU) or a tuple of tensors, each
(layers * dirs, B, hidden). The decoders rely on nothing else, so a new cell is one entry in
`ENCODERS` (and its module). `Encoded` is what the encoder read, as the decoders take it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from forecast.errors import ConfigError


def _cells(name: str) -> Callable[..., nn.Module]:
    # Imported on use: the fused kinds need nothing beyond torch.nn.
    from forecast.models import cells

    return getattr(cells, name)


ENCODERS: dict[str, Callable[[], Callable[..., nn.Module]]] = {
    "lstm": lambda: nn.LSTM,  # fused (oneDNN / cuDNN)
    "gru": lambda: nn.GRU,  # fused
    "peephole": lambda: _cells("PeepholeLSTM"),  # Gers & Schmidhuber 2000: gates see the cell state
    "slstm": lambda: _cells("SLSTM"),  # Beck et al. 2024 (xLSTM): exponential gates, normaliser state
}


def build_encoder(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, bidirectional: bool
) -> nn.Module:
    """The recurrent layers for `cell`; dropout acts between layers only (none with one layer)."""
    if cell not in ENCODERS:
        raise ConfigError(f"unknown cell {cell!r}; use one of {sorted(ENCODERS)}")
    return ENCODERS[cell]()(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )


def last_hidden(state: torch.Tensor | tuple[torch.Tensor, ...], directions: int) -> torch.Tensor:
    """The top layer's final hidden state, both directions joined: (B, dirs * hidden)."""
    h_n = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, hidden)
    return h_n[-directions:].transpose(0, 1).reshape(h_n.shape[1], -1)


class Encoded(NamedTuple):
    """What the encoder produced for a batch, with the covariates the decoders may read."""

    outputs: torch.Tensor  # (B, N, dirs * hidden): every recurrent step's top-layer output
    state: torch.Tensor | tuple[torch.Tensor, ...]  # final state, each (layers * dirs, B, hidden)
    context: torch.Tensor  # (B, dirs * hidden + S): final hidden state (+ static features)
    static: torch.Tensor | None  # (B, S)
    futr: torch.Tensor | None  # (B, H, F): future-known covariates of the horizon steps
