"""Attention over the encoder states: one query per horizon step (Bahdanau et al. 2015; Luong et al. 2015).

Written out rather than `nn.MultiheadAttention` because the additive score has no library module
and both kinds must return their weights per head and export to ONNX with the same code.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.models.encoders import Encoded
from forecast.models.heads import MLPHead

AttentionKind = Literal["dot", "additive"]


class AttentionDecoder(nn.Module):
    """Each horizon step attends over every recurrent step's output, on top of any encoder.

    The query of step h is a learned position for h, plus the window's context (final state and
    static features), plus (when the data has them) step h's future-known covariates: the
    Monday-9am step can look for the input segments that matter to it. The attended summary and
    the query go through a per-step MLP shared by all steps, added to the direct MLP head's
    output (so the decoder can fall back on the MLP decoder when attention does not help).
    `kind`: "dot" (scaled dot product) or "additive" (a learned tanh score; memory grows with
    B x heads x H x N x dim, so prefer "dot" at `segment_len=1`). `heads` split `dim`.
    """

    def __init__(
        self,
        enc_dim: int,
        context_dim: int,
        futr_dim: int,
        horizon: int,
        n_outputs: int,
        hidden: int,
        dropout: float,
        heads: int = 4,
        kind: AttentionKind = "dot",
        dim: int = 64,
    ) -> None:
        super().__init__()
        if kind not in ("dot", "additive"):
            raise ConfigError(f"unknown attention {kind!r}; use dot or additive")
        if heads < 1 or dim % heads:
            raise ConfigError(f"attention_dim ({dim}) must be a multiple of attention_heads ({heads})")
        self.kind, self.heads, self.dim = kind, heads, dim
        self.head = MLPHead(context_dim, horizon, n_outputs, hidden, dropout)
        self.position = nn.Parameter(0.1 * torch.randn(horizon, dim))
        self.query_context = nn.Linear(context_dim, dim)
        self.query_futr = nn.Linear(futr_dim, dim, bias=False) if futr_dim else None
        self.keys = nn.Linear(enc_dim, dim)
        self.values = nn.Linear(enc_dim, dim)
        # Additive score per head: v_h . tanh(q + k) over that head's slice.
        self.score = (
            nn.Parameter(torch.randn(heads, dim // heads) / math.sqrt(dim // heads))
            if kind == "additive"
            else None
        )
        self.out = nn.Sequential(
            nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_outputs)
        )

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        # (B, T, dim) -> (B, heads, T, dim / heads)
        return t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    def weights(self, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, H, dim) and attention weights (B, heads, H, N) over the N recurrent steps."""
        query = self.position[None] + self.query_context(enc.context)[:, None]  # (B, H, dim)
        if self.query_futr is not None:
            query = query + self.query_futr(enc.futr)
        q, k = self._split(query), self._split(self.keys(enc.outputs))  # (B, h, H, d), (B, h, N, d)
        if self.score is None:
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, H, N)
        else:
            mixed = torch.tanh(q[:, :, :, None] + k[:, :, None])  # (B, h, H, N, d)
            scores = (mixed * self.score[None, :, None, None]).sum(-1)  # (B, h, H, N)
        return query, scores.softmax(-1)

    def forward(self, enc: Encoded, rnn: nn.Module) -> torch.Tensor:
        query, weights = self.weights(enc)
        v = self._split(self.values(enc.outputs))  # (B, h, N, d)
        attended = (weights @ v).transpose(1, 2).reshape(query.shape)  # (B, H, dim)
        out = self.head(enc.context)  # (B, H, P)
        return out + self.out(torch.cat([attended, query], dim=-1))  # (B, H, P)
