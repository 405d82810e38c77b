"""Stacked (bi)directional LSTM / GRU encoder with a direct multi-horizon head."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.models.heads import MLPHead

Cell = Literal["lstm", "gru"]
_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentForecaster(nn.Module):
    """Reads the last `input_size` steps, predicts the next `horizon` steps at once.

    Each input step carries the scaled value and an observed flag, so masked (missing) inputs
    are distinguishable from zeros. `window_norm` additionally standardises every input window
    by its own mean and std and undoes it on the output (reversible instance normalisation,
    Kim et al. 2022), which helps when levels drift between training and forecasting;
    `window_norm="last"` only subtracts the window's last observed value and adds it back
    (SegRNN's and NLinear's normalisation: the forecast starts from where the series is).

    `segment_len` > 1 feeds the RNN one segment of that many steps per recurrent step, through
    a linear embedding (segment-wise recurrence, Lin et al. 2023, SegRNN): 24 hourly steps per
    step turns 168 sequential steps into 7, which is faster and learns long inputs better.

    `linear_skip` adds a linear map from the (normalised) input window straight to the
    horizon, so the recurrent path learns the residual of a linear forecast (as RLinear /
    DLinear show, that linear part alone is a strong long-horizon forecaster).

    `cycle_len` > 0 learns a cycle of that many steps (24: the hour of day in hourly data),
    removed from the (normalised) input and added back to the forecast, so the recurrent path
    models what the cycle does not explain (residual cycle forecasting, Lin et al. 2024,
    CycleNet). The phase comes from `step`, each window's absolute step number of its first
    forecast step (`forecast.data.calendar`). With `n_series` > 0 every training series adds its
    own learned deviation to the shared cycle (CycleNet's per-channel cycles); `series` is its
    code (1 .. n_series, 0 = a series not seen in training, which gets the shared cycle).
    """

    def __init__(
        self,
        input_size: int,
        horizon: int,
        cell: Cell = "lstm",
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.0,
        bidirectional: bool = False,
        n_outputs: int = 1,
        head_hidden: int = 256,
        window_norm: bool | Literal["revin", "last"] = False,
        segment_len: int = 1,
        linear_skip: bool = False,
        cycle_len: int = 0,
        n_series: int = 0,
        decoder: Literal["mlp", "segments"] = "mlp",
    ) -> None:
        super().__init__()
        if decoder not in ("mlp", "segments"):
            raise ConfigError(f"unknown decoder {decoder!r}; use mlp or segments")
        if decoder == "segments" and bidirectional:
            raise ConfigError(
                "decoder=segments continues the encoder's state forward: use bidirectional=false"
            )
        if cell not in _CELLS:
            raise ConfigError(f"unknown cell {cell!r}; use one of {sorted(_CELLS)}")
        if segment_len < 1:
            raise ConfigError(f"segment_len must be >= 1, got {segment_len}")
        if cycle_len < 0 or n_series < 0:
            raise ConfigError(f"cycle_len and n_series must be >= 0, got {cycle_len}, {n_series}")
        if window_norm not in (True, False, "revin", "last"):
            raise ConfigError(f"window_norm must be true, false, 'revin' or 'last', got {window_norm!r}")
        self.input_size, self.horizon = input_size, horizon
        self.window_norm = "revin" if window_norm is True else window_norm or None
        self.segment_len = segment_len
        self.n_segments = -(-input_size // segment_len)  # ceil: the oldest segment is padded
        self.embed = (
            nn.Sequential(nn.Linear(2 * segment_len, hidden_size), nn.ReLU()) if segment_len > 1 else None
        )
        self.rnn = _CELLS[cell](
            input_size=hidden_size if segment_len > 1 else 2,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
            batch_first=True,
        )
        self.directions = 2 if bidirectional else 1
        self.decoder, self.n_outputs = decoder, n_outputs
        if decoder == "segments":
            # One recurrent step per output segment, all in parallel from the encoder's final
            # state, told which segment it is by a learned position (SegRNN's parallel decoding).
            self.n_out_segments = -(-horizon // segment_len)
            self.positions = nn.Parameter(torch.randn(self.n_out_segments, self.rnn.input_size))
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, segment_len * n_outputs))
        else:
            self.head = MLPHead(hidden_size * self.directions, horizon, n_outputs, head_hidden, dropout)
        self.skip = nn.Linear(input_size, horizon) if linear_skip else None
        self.cycle_len = cycle_len
        self.cycle = nn.Parameter(torch.zeros(cycle_len)) if cycle_len else None
        # Row 0 (unseen series) stays zero: padding_idx gets no gradient.
        self.series_cycle = (
            nn.Embedding(n_series + 1, cycle_len, padding_idx=0) if cycle_len and n_series else None
        )
        if self.series_cycle is not None:
            nn.init.zeros_(self.series_cycle.weight)

    def _cycles(
        self, step: torch.Tensor | None, series: torch.Tensor | None, L: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned cycle over the input (B, L) and the horizon (B, H) of every window."""
        if step is None:
            raise ConfigError(
                "this model learns a cycle (cycle_len > 0): pass `step`, the absolute step "
                "number of each window's first forecast step"
            )
        table = self.cycle[None, :].expand(step.shape[0], -1)  # (B, C)
        if self.series_cycle is not None and series is not None:
            table = table + self.series_cycle(series.long().clamp(0, self.series_cycle.num_embeddings - 1))
        step = step.long()[:, None]
        phase_in = torch.remainder(step + torch.arange(-L, 0, device=step.device), self.cycle_len)
        phase_out = torch.remainder(step + torch.arange(self.horizon, device=step.device), self.cycle_len)
        return table.gather(1, phase_in), table.gather(1, phase_out)

    def _decode_segments(self, state: torch.Tensor | tuple[torch.Tensor, ...], batch: int) -> torch.Tensor:
        """Encoder state -> (B, H, Q): one step of the same RNN per output segment, in parallel."""
        M = self.n_out_segments
        inputs = self.positions[None].expand(batch, -1, -1).reshape(batch * M, 1, -1)  # (B * M, 1, in)
        # (layers, B, hidden) -> (layers, B * M, hidden): every segment starts from its window's state
        if isinstance(state, tuple):
            state = tuple(s.repeat_interleave(M, dim=1) for s in state)
        else:
            state = state.repeat_interleave(M, dim=1)
        steps, _ = self.rnn(inputs, state)  # (B * M, 1, hidden)
        out = self.head(steps[:, 0])  # (B * M, seg * Q)
        return out.reshape(batch, M * self.segment_len, self.n_outputs)[:, : self.horizon]

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        step: torch.Tensor | None = None,
        series: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x, x_mask: (B, L); step, series: (B,) int -> (B, H, n_outputs), on the scale of x."""
        observed = torch.ones_like(x) if x_mask is None else x_mask.to(x.dtype)
        # Unobserved steps (missing values, the padding before a short series) carry no value
        # on any path: zero in the RNN input and the linear skip, left out of the window norms.
        x = x * observed
        if self.window_norm == "last":
            # Position of each window's last observed step (the largest observed index).
            last = (observed * torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)).argmax(1)
            mean, std = x.gather(1, last[:, None]), torch.ones_like(x[:, :1])  # (B, 1)
            x = (x - mean) * observed
        elif self.window_norm:
            count = observed.sum(1, keepdim=True).clamp_min(1.0)
            mean = (x * observed).sum(1, keepdim=True) / count  # (B, 1)
            std = (((x - mean) * observed).square().sum(1, keepdim=True) / count).sqrt() + 1e-5
            x = (x - mean) / std * observed
        if self.cycle is not None:
            cycle_in, cycle_out = self._cycles(step, series, x.shape[1])
            x = (x - cycle_in) * observed
        inputs = torch.stack([x, observed], dim=-1)  # (B, L, 2)
        if self.embed is not None:
            pad = self.n_segments * self.segment_len - x.shape[1]
            inputs = nn.functional.pad(inputs, (0, 0, pad, 0))  # (B, S * seg, 2), zeros in front
            inputs = inputs.reshape(x.shape[0], self.n_segments, 2 * self.segment_len)  # (B, S, 2 * seg)
            inputs = self.embed(inputs)  # (B, S, hidden)
        _, state = self.rnn(inputs)
        if self.decoder == "segments":
            out = self._decode_segments(state, x.shape[0])  # (B, H, Q)
        else:
            h_n = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, hidden)
            last = h_n[-self.directions :].transpose(0, 1).reshape(x.shape[0], -1)  # (B, dirs * hidden)
            out = self.head(last)  # (B, H, Q)
        if self.skip is not None:
            out = out + self.skip(x)[:, :, None]  # (B, H, 1) shared by every output column
        if self.cycle is not None:
            out = out + cycle_out[:, :, None]
        if self.window_norm:
            out = out * std[:, :, None] + mean[:, :, None]
        return out
