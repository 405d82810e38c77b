"""Decoder parts: from what the encoder read to the horizon's raw outputs (B, H, P).

All are direct multi-horizon decoders (every future step at once, no recursive feedback). They
take an `Encoded` and the encoder itself (the segment decoder runs one more step of it), and
return P raw columns per horizon step, which the output part (`forecast.models.outputs`) turns
into a point forecast, quantiles or a distribution's parameters.

`DECODERS` names each kind once, with a builder that takes the common arguments
(`DecoderArgs`); a new decoder is its module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.models.attention import AttentionDecoder
from forecast.models.encoders import Encoded
from forecast.models.heads import FutureHead, MLPHead


class MLPDecoder(nn.Module):
    """The final state (+ static) -> every horizon step through one hidden layer.

    With future-known covariates a per-step MLP (`FutureHead`) adds what is known about each
    forecast step (its calendar, the day-ahead load forecast of that hour) to that step.
    """

    def __init__(
        self, context_dim: int, futr_dim: int, horizon: int, n_outputs: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.head = MLPHead(context_dim, horizon, n_outputs, hidden, dropout)
        self.future = (
            FutureHead(context_dim, futr_dim, horizon, n_outputs, hidden, dropout) if futr_dim else None
        )

    def forward(self, enc: Encoded, rnn: nn.Module) -> torch.Tensor:
        out = self.head(enc.context)  # (B, H, P)
        if self.future is not None:
            out = out + self.future(enc.context, enc.futr)  # (B, H, P): each step's known future
        return out


class SegmentDecoder(nn.Module):
    """One more step of the encoder's cell per output segment, all in parallel from its final state.

    Each segment is told which it is by a learned position, plus (with covariates) its steps'
    future-known values and the static features (SegRNN's parallel decoding, Lin et al. 2023).
    Unidirectional encoders only: it continues the encoder's state forward.
    """

    def __init__(
        self,
        rnn_input: int,
        hidden_size: int,
        horizon: int,
        segment_len: int,
        n_outputs: int,
        futr_dim: int,
        static_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.horizon, self.segment_len, self.n_outputs = horizon, segment_len, n_outputs
        self.n_segments = -(-horizon // segment_len)
        self.positions = nn.Parameter(torch.randn(self.n_segments, rnn_input))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, segment_len * n_outputs))
        self.covariates = (
            nn.Linear(segment_len * futr_dim + static_dim, rnn_input) if futr_dim or static_dim else None
        )

    def _covariate_inputs(self, futr: torch.Tensor | None, static: torch.Tensor | None) -> torch.Tensor:
        """futr (B, H, F), static (B, S) -> (B, M, in): each output segment's covariate input."""
        M, parts = self.n_segments, []
        if futr is not None:
            pad = M * self.segment_len - futr.shape[1]  # the last segment runs past the horizon
            futr = nn.functional.pad(futr, (0, 0, 0, pad))  # (B, M * seg, F), zeros at the end
            parts.append(futr.reshape(futr.shape[0], M, -1))  # (B, M, seg * F)
        if static is not None:
            parts.append(static[:, None].expand(-1, M, -1))  # (B, M, S)
        return self.covariates(torch.cat(parts, dim=-1))

    def forward(self, enc: Encoded, rnn: nn.Module) -> torch.Tensor:
        B, M = enc.context.shape[0], self.n_segments
        inputs = self.positions[None].expand(B, -1, -1)  # (B, M, in)
        if self.covariates is not None:
            inputs = inputs + self._covariate_inputs(enc.futr, enc.static)
        inputs = inputs.reshape(B * M, 1, -1)  # (B * M, 1, in)
        # (layers, B, hidden) -> (layers, B * M, hidden): every segment starts from its window's state
        state = enc.state
        if isinstance(state, tuple):
            state = tuple(s.repeat_interleave(M, dim=1) for s in state)
        else:
            state = state.repeat_interleave(M, dim=1)
        steps, _ = rnn(inputs, state)  # (B * M, 1, hidden)
        out = self.head(steps[:, 0])  # (B * M, seg * P)
        return out.reshape(B, M * self.segment_len, self.n_outputs)[:, : self.horizon]


@dataclass(frozen=True)
class DecoderArgs:
    """What a decoder may be built from: the sizes of the parts around it and the decoder options."""

    input_dim: int  # the encoder's input width per recurrent step (the input embedding's)
    hidden_size: int  # per direction
    directions: int  # 2: a bidirectional encoder
    static_dim: int  # S: static features joined to the context
    futr_dim: int  # F: future-known covariates per step
    horizon: int
    segment_len: int
    n_outputs: int  # P: the output part's raw columns per step
    head_hidden: int
    dropout: float
    attention: str  # the options of decoder=attention (`OWN_OPTIONS`)
    attention_heads: int
    attention_dim: int

    @property
    def enc_dim(self) -> int:
        """The width of every recurrent step's top-layer output: dirs * hidden."""
        return self.hidden_size * self.directions

    @property
    def context_dim(self) -> int:
        """The width of `Encoded.context`: dirs * hidden + S."""
        return self.enc_dim + self.static_dim


def _mlp(a: DecoderArgs) -> nn.Module:
    return MLPDecoder(a.context_dim, a.futr_dim, a.horizon, a.n_outputs, a.head_hidden, a.dropout)


def _segments(a: DecoderArgs) -> nn.Module:
    if a.directions != 1:
        raise ConfigError("decoder=segments continues the encoder's state forward: use bidirectional=false")
    return SegmentDecoder(
        a.input_dim, a.hidden_size, a.horizon, a.segment_len, a.n_outputs, a.futr_dim, a.static_dim, a.dropout
    )


def _attention(a: DecoderArgs) -> nn.Module:
    return AttentionDecoder(
        a.enc_dim, a.context_dim, a.futr_dim, a.horizon, a.n_outputs, a.head_hidden, a.dropout,
        a.attention_heads, a.attention, a.attention_dim,
    )  # fmt: skip


DECODERS: dict[str, Callable[[DecoderArgs], nn.Module]] = {
    "mlp": _mlp,  # a direct MLP head on the final state
    "segments": _segments,  # SegRNN's parallel segment decoding
    "attention": _attention,  # per horizon step a query over the encoder's states
}
# Options that one decoder alone reads: a model saves them only when it uses that decoder (as
# models saved before the decoder existed did not have them).
OWN_OPTIONS: dict[str, tuple[str, ...]] = {"attention": ("attention", "attention_heads", "attention_dim")}


def decoder_builder(name: str) -> Callable[[DecoderArgs], nn.Module]:
    """The builder of the decoder `name`, or a ConfigError that lists the known ones."""
    if name not in DECODERS:
        raise ConfigError(f"unknown decoder {name!r}; use one of {', '.join(DECODERS)}")
    return DECODERS[name]
