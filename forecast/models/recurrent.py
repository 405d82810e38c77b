"""Stacked (bi)directional LSTM / GRU encoder with a direct multi-horizon head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.models.embedding import CovariateEmbedding, recurrent_inputs
from forecast.models.heads import FutureHead, MLPHead
from forecast.models.inputs import CovariateDims, as_batch

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

    `covariates` (the data encoder's dims; `forecast.models.inputs` lists the batch keys) adds
    to every input step its future-known and past-only values and categorical embeddings, and
    the static ones of its series (with `segment_len` > 1 the segment embedding reads all of
    these for its steps; static ones once per segment). Static features also join the head's
    context. The future-known values of each horizon step reach that step's forecast: through
    a per-step MLP (`FutureHead`) added to the direct head's output, or, with
    `decoder="segments"`, through each output segment's input. Window norms, the cycle and the
    linear skip act on the target only. Without covariates the net has exactly the parameters
    (and numbers) it had before they existed, so models saved then still load.
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
        covariates: Mapping[str, Any] | None = None,
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
        dims = CovariateDims.parse(covariates)
        # Only nets with covariates get these modules: old nets keep their state-dict keys.
        self.covariates = None if dims.empty else CovariateEmbedding(dims)
        step_dim = 2 + (self.covariates.step_dim if self.covariates else 0)  # target, flag, covariates
        static_dim = self.covariates.static_dim if self.covariates else 0
        futr_dim = self.covariates.futr_dim if self.covariates else 0
        self.embed = (
            nn.Sequential(nn.Linear(step_dim * segment_len + static_dim, hidden_size), nn.ReLU())
            if segment_len > 1
            else None
        )
        self.rnn = _CELLS[cell](
            input_size=hidden_size if segment_len > 1 else step_dim + static_dim,
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
            # Each output segment's future-known values (its steps', flattened) and the static
            # features, mapped into that segment's input beside its position.
            self.segment_covariates = (
                nn.Linear(segment_len * futr_dim + static_dim, self.rnn.input_size)
                if futr_dim or static_dim
                else None
            )
        else:
            context = hidden_size * self.directions + static_dim
            self.head = MLPHead(context, horizon, n_outputs, head_hidden, dropout)
            self.future = (
                FutureHead(context, futr_dim, horizon, n_outputs, head_hidden, dropout) if futr_dim else None
            )
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

    def _decode_segments(
        self,
        state: torch.Tensor | tuple[torch.Tensor, ...],
        batch: int,
        covariates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encoder state (+ (B, M, in) covariate inputs) -> (B, H, Q): one RNN step per output segment."""
        M = self.n_out_segments
        inputs = self.positions[None].expand(batch, -1, -1)  # (B, M, in)
        if covariates is not None:
            inputs = inputs + covariates
        inputs = inputs.reshape(batch * M, 1, -1)  # (B * M, 1, in)
        # (layers, B, hidden) -> (layers, B * M, hidden): every segment starts from its window's state
        if isinstance(state, tuple):
            state = tuple(s.repeat_interleave(M, dim=1) for s in state)
        else:
            state = state.repeat_interleave(M, dim=1)
        steps, _ = self.rnn(inputs, state)  # (B * M, 1, hidden)
        out = self.head(steps[:, 0])  # (B * M, seg * Q)
        return out.reshape(batch, M * self.segment_len, self.n_outputs)[:, : self.horizon]

    def _segment_covariates(
        self, futr: torch.Tensor | None, static: torch.Tensor | None, batch: int
    ) -> torch.Tensor | None:
        """futr (B, H, F), static (B, S) -> (B, M, in): each output segment's covariate input."""
        if self.segment_covariates is None:
            return None
        M, parts = self.n_out_segments, []
        if futr is not None:
            pad = M * self.segment_len - futr.shape[1]  # the last segment runs past the horizon
            futr = nn.functional.pad(futr, (0, 0, 0, pad))  # (B, M * seg, F), zeros at the end
            parts.append(futr.reshape(batch, M, -1))  # (B, M, seg * F)
        if static is not None:
            parts.append(static[:, None].expand(-1, M, -1))  # (B, M, S)
        return self.segment_covariates(torch.cat(parts, dim=-1))

    def forward(
        self,
        batch: Mapping[str, torch.Tensor] | torch.Tensor,
        x_mask: torch.Tensor | None = None,
        step: torch.Tensor | None = None,
        series: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A batch (`forecast.models.inputs`) -> (B, H, n_outputs), on the scale of x.

        The old positional call `net(x, x_mask, step, series)` still works.
        """
        batch = as_batch(batch, x_mask, step, series)
        x, x_mask, step, series = batch["x"], batch.get("x_mask"), batch.get("step"), batch.get("series")
        L = x.shape[1]
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
        static = futr = None
        if self.covariates is not None:
            past = self.covariates.past(batch, L)  # (B, L, C) or None
            if past is not None:
                inputs = torch.cat([inputs, past], dim=-1)  # (B, L, 2 + C)
            static = self.covariates.static(batch)  # (B, S) or None
            futr = self.covariates.future(batch, L, self.horizon)  # (B, H, F) or None
        inputs = recurrent_inputs(inputs, static, self.segment_len)  # (B, N, seg * (2 + C) + S)
        if self.embed is not None:
            inputs = self.embed(inputs)  # (B, N, hidden)
        _, state = self.rnn(inputs)
        if self.decoder == "segments":
            covariates = self._segment_covariates(futr, static, x.shape[0])  # (B, M, in) or None
            out = self._decode_segments(state, x.shape[0], covariates)  # (B, H, Q)
        else:
            h_n = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, hidden)
            last = h_n[-self.directions :].transpose(0, 1).reshape(x.shape[0], -1)  # (B, dirs * hidden)
            context = last if static is None else torch.cat([last, static], dim=-1)  # (B, dirs * hidden + S)
            out = self.head(context)  # (B, H, Q)
            if self.future is not None:
                out = out + self.future(context, futr)  # (B, H, Q): each step's known future
        if self.skip is not None:
            out = out + self.skip(x)[:, :, None]  # (B, H, 1) shared by every output column
        if self.cycle is not None:
            out = out + cycle_out[:, :, None]
        if self.window_norm:
            out = out * std[:, :, None] + mean[:, :, None]
        return out
