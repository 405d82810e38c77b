"""The recurrent forecaster, composed of parts chosen by config.

    input embedding (`embedding.InputEmbedding`: per step or per segment, with covariates)
      -> encoder (`encoders.ENCODERS`: the cell kind; layers; direction)
      -> decoder (`decoders.DECODERS`: direct multi-horizon decoders)
      -> output (`outputs`: point, monotone quantiles, or a distribution's parameters,
         `distributions.DISTRIBUTIONS`)
    wrapped by the window norm, the learned cycle and the linear skip (`wrappers`).

The net rebuilds from its plain constructor values; state dicts saved before the parts existed
(flat names such as `rnn.*`, `head.*`, `cycle`) load through a key map (`_OLD_KEYS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.models.attention import AttentionDecoder
from forecast.models.decoders import DecoderArgs, decoder_builder
from forecast.models.embedding import InputEmbedding
from forecast.models.encoders import ENCODERS, Encoded, build_encoder, last_hidden
from forecast.models.inputs import CovariateDims, as_batch
from forecast.models.outputs import build_output
from forecast.models.wrappers import LearnedCycle, WindowNorm

# State-dict names before the parts split (issue 12) -> now. Order matters: first match wins.
_OLD_KEYS: tuple[tuple[str, str], ...] = (
    ("embed.", "inputs.embed."),
    ("covariates.", "inputs.covariates."),
    ("rnn.", "encoder."),
    ("positions", "decoder.positions"),
    ("segment_covariates.", "decoder.covariates."),
    ("head.", "decoder.head."),
    ("future.", "decoder.future."),
    ("series_cycle.", "cycle.series."),
    ("cycle", "cycle.table"),
)


class RecurrentForecaster(nn.Module):
    """Reads the last `input_size` steps, predicts the next `horizon` steps at once.

    Every option selects or configures a part (the module docstring lists them):

    - `cell`, `hidden_size`, `num_layers`, `dropout`, `bidirectional`: the encoder.
    - `segment_len`, `covariates`: the input embedding (`covariates` is the data encoder's dims;
      `forecast.models.inputs` lists the batch keys). Static features also join the context.
    - `decoder`: "mlp" (direct head on the final state; future-known covariates through a
      per-step MLP), "segments" (SegRNN's parallel segment decoding), or "attention" (queries
      per horizon step over the encoder states: `attention` dot | additive, `attention_heads`,
      `attention_dim`). `head_hidden`: the hidden width of the heads.
    - `output` with `n_outputs` columns: "point" (free columns), "quantiles" (monotone), or a
      distribution's parameters (`forecast.models.outputs`).
    - Wrappers on the target: `window_norm` (true / "revin", "last", false), `cycle_len` and
      `n_series` (a learned, optionally per-series cycle; needs `step` and `series` in the
      batch), `linear_skip` (a linear map from the window to the horizon, so the recurrent
      path learns a linear forecast's residual, as RLinear / DLinear show is strong).
    """

    def __init__(
        self,
        input_size: int,
        horizon: int,
        cell: str = "lstm",
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
        decoder: str = "mlp",
        covariates: Mapping[str, Any] | None = None,
        output: str = "point",
        attention: Literal["dot", "additive"] = "dot",
        attention_heads: int = 4,
        attention_dim: int = 64,
    ) -> None:
        super().__init__()
        build_decoder = decoder_builder(decoder)  # an unknown name fails before anything is built
        if cell not in ENCODERS:
            raise ConfigError(f"unknown cell {cell!r}; use one of {sorted(ENCODERS)}")
        if cycle_len < 0 or n_series < 0:
            raise ConfigError(f"cycle_len and n_series must be >= 0, got {cycle_len}, {n_series}")
        if window_norm not in (True, False, "revin", "last"):
            raise ConfigError(f"window_norm must be true, false, 'revin' or 'last', got {window_norm!r}")
        self.input_size, self.horizon, self.segment_len = input_size, horizon, segment_len
        self.norm = WindowNorm("revin" if window_norm is True else window_norm or None)
        self.cycle = LearnedCycle(cycle_len, n_series) if cycle_len else None
        self.skip = nn.Linear(input_size, horizon) if linear_skip else None
        self.inputs = InputEmbedding(CovariateDims.parse(covariates), segment_len, hidden_size)
        self.n_segments = -(-input_size // segment_len)  # recurrent steps: the oldest segment is padded
        self.encoder = build_encoder(
            cell, self.inputs.out_dim, hidden_size, num_layers, dropout, bidirectional
        )
        self.directions = 2 if bidirectional else 1
        self.output = build_output(output, n_outputs)
        self.decoder = build_decoder(
            DecoderArgs(
                input_dim=self.inputs.out_dim,
                hidden_size=hidden_size,
                directions=self.directions,
                static_dim=self.inputs.static_dim,
                futr_dim=self.inputs.futr_dim,
                horizon=horizon,
                segment_len=segment_len,
                n_outputs=self.output.n_params,
                head_hidden=head_hidden,
                dropout=dropout,
                attention=attention,
                attention_heads=attention_heads,
                attention_dim=attention_dim,
            )
        )
        self._register_load_state_dict_pre_hook(_rename_old_keys)

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    def encode(self, batch: Mapping[str, torch.Tensor]) -> tuple[Encoded, dict[str, Any]]:
        """Input embedding and encoder; also what the wrappers must undo on the output."""
        x, x_mask = batch["x"], batch.get("x_mask")
        observed = torch.ones_like(x) if x_mask is None else x_mask.to(x.dtype)
        # Unobserved steps (missing values, the padding before a short series) carry no value
        # on any path: zero in the encoder input and the linear skip, left out of the window norm.
        x, mean, std = self.norm(x * observed, observed)  # (B, L), (B, 1) | None
        cycle_out = None
        if self.cycle is not None:
            cycle_in, cycle_out = self.cycle(batch.get("step"), batch.get("series"), x.shape[1], self.horizon)
            x = (x - cycle_in) * observed
        rows, static, futr = self.inputs(x, observed, batch, self.horizon)  # (B, N, in)
        outputs, state = self.encoder(rows)  # (B, N, dirs * hidden)
        h = last_hidden(state, self.directions)  # (B, dirs * hidden)
        context = h if static is None else torch.cat([h, static], dim=-1)  # (B, dirs * hidden + S)
        shifts = ([] if self.skip is None else [self.skip(x)]) + ([] if cycle_out is None else [cycle_out])
        return Encoded(outputs, state, context, static, futr), {"shifts": shifts, "mean": mean, "std": std}

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
        enc, around = self.encode(as_batch(batch, x_mask, step, series))
        raw = self.decoder(enc, self.encoder)  # (B, H, P)
        return self.output(raw, around["shifts"], around["mean"], around["std"])

    @property
    def has_attention(self) -> bool:
        """Whether the decoder attends over the encoder's states (`attention_weights` works)."""
        return isinstance(self.decoder, AttentionDecoder)

    def attention_weights(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, H, N): each horizon step's attention over the recurrent steps, averaged over heads."""
        if not self.has_attention:
            raise ConfigError("attention_weights needs decoder=attention")
        enc, _ = self.encode(batch)
        return self.decoder.weights(enc)[1].mean(1)


def _rename_old_keys(state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    """Renames a state dict saved before the parts split (in place), so old models load strictly."""
    if not any(k.startswith(prefix + "rnn.") for k in state_dict):
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        for old, new in _OLD_KEYS:
            if rest == old or (old.endswith(".") and rest.startswith(old)):
                state_dict[prefix + new + rest[len(old) :]] = state_dict.pop(key)
                break
