"""The covariates of a batch as features: per input step, per horizon step and per series.

Numeric covariates arrive scaled (the data side's encoder); categorical ones are codes that get a
learned embedding per column. Code 0 (unknown, missing, padding) is a fixed zero vector, so an
unseen category at forecast time contributes nothing rather than failing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.models.inputs import CovariateDims


def embedding_dim(n_codes: int) -> int:
    """fastai's rule of thumb (1.6 * n^0.56), capped at 16: small tables for short vocabularies."""
    return max(1, min(16, round(1.6 * n_codes**0.56)))


class CategoricalEmbedding(nn.Module):
    """Codes (..., C) int64 -> (..., dim): one learned table per column, concatenated."""

    def __init__(self, n_codes: Sequence[int]) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, embedding_dim(n), padding_idx=0) for n in n_codes)
        self.dim = sum(t.embedding_dim for t in self.tables)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        out = []
        for i, table in enumerate(self.tables):
            code = codes[..., i].long()
            # A code outside the table (a vocabulary that grew after training) reads as unknown.
            code = torch.where((code > 0) & (code < table.num_embeddings), code, torch.zeros_like(code))
            out.append(table(code))  # (..., dim_i)
        return torch.cat(out, dim=-1)


def _take(batch: Mapping[str, torch.Tensor], key: str, width: int, steps: int | None = None) -> torch.Tensor:
    """batch[key], checked: present, `width` columns, at least `steps` steps (time-varying keys)."""
    if key not in batch:
        shape = "(B, S)" if steps is None else "(B, steps, columns)"
        raise ConfigError(
            f"this model was trained with covariates {key!r} {shape}: the batch lacks them "
            "(declare the same covariates in the data config, or pass them with the forecast input)"
        )
    value = batch[key]
    if value.shape[-1] != width or (steps is not None and value.shape[1] < steps):
        want = f"{steps}+ steps and " if steps is not None else ""
        raise ConfigError(
            f"covariates {key!r}: expected {want}{width} columns, got shape {tuple(value.shape)}"
        )
    return value


class CovariateEmbedding(nn.Module):
    """A batch -> its covariates as features: per input step, per horizon step, per series.

    `past` (B, L, step_dim) is what each input step carries besides the target: the
    future-known values of that step, the past-only ones and the embeddings of the categorical
    ones. `future` (B, H, futr_dim) is what each horizon step is known to carry (future-known
    only). `static` (B, static_dim) is per series, for the caller to attach to every step and
    to the head.
    """

    def __init__(self, dims: CovariateDims) -> None:
        super().__init__()
        self.dims = dims
        self.futr_cat = CategoricalEmbedding(dims.futr_cat) if dims.futr_cat else None
        self.hist_cat = CategoricalEmbedding(dims.hist_cat) if dims.hist_cat else None
        self.static_cat = CategoricalEmbedding(dims.static_cat) if dims.static_cat else None
        self.futr_dim = dims.futr + (self.futr_cat.dim if self.futr_cat else 0)
        self.step_dim = self.futr_dim + dims.hist + (self.hist_cat.dim if self.hist_cat else 0)
        self.static_dim = dims.static + (self.static_cat.dim if self.static_cat else 0)

    def _futr(self, batch: Mapping[str, torch.Tensor], start: int, stop: int) -> list[torch.Tensor]:
        parts = []
        if self.dims.futr:
            parts.append(_take(batch, "futr", self.dims.futr, stop)[:, start:stop].float())  # (B, T, F)
        if self.futr_cat is not None:
            codes = _take(batch, "futr_cat", len(self.dims.futr_cat), stop)[:, start:stop]
            parts.append(self.futr_cat(codes))  # (B, T, Fc embedded)
        return parts

    def past(self, batch: Mapping[str, torch.Tensor], L: int) -> torch.Tensor | None:
        """(B, L, step_dim) for the L input steps, or None without time-varying covariates."""
        parts = self._futr(batch, 0, L)
        if self.dims.hist:
            # The input window is the first L steps (like futr); nothing after the origin is read.
            parts.append(_take(batch, "hist", self.dims.hist, L)[:, :L].float())  # (B, L, P)
        if self.hist_cat is not None:
            parts.append(self.hist_cat(_take(batch, "hist_cat", len(self.dims.hist_cat), L)[:, :L]))
        return torch.cat(parts, dim=-1) if parts else None

    def future(self, batch: Mapping[str, torch.Tensor], L: int, H: int) -> torch.Tensor | None:
        """(B, H, futr_dim): the future-known covariates of horizon steps L .. L + H - 1."""
        parts = self._futr(batch, L, L + H)
        return torch.cat(parts, dim=-1) if parts else None

    def static(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, static_dim) per series, or None without static covariates."""
        parts = []
        if self.dims.static:
            parts.append(_take(batch, "static", self.dims.static).float())  # (B, S)
        if self.static_cat is not None:
            parts.append(self.static_cat(_take(batch, "static_cat", len(self.dims.static_cat))))
        return torch.cat(parts, dim=-1) if parts else None


def recurrent_inputs(inputs: torch.Tensor, static: torch.Tensor | None, segment_len: int) -> torch.Tensor:
    """Per-step features (B, L, C) (+ static (B, S)) -> one row per recurrent step (B, N, seg * C + S).

    The steps are grouped into segments of `segment_len` (the oldest padded with zeros in front)
    and the static features joined once per recurrent step.
    """
    B, L, _ = inputs.shape
    # Ceiling division of positive numbers: the ONNX trace keeps it as integer division, which
    # truncates toward zero, so -(-L // seg) would export as a floor (one segment short).
    n_segments = (L + segment_len - 1) // segment_len
    pad = n_segments * segment_len - L
    if pad:
        inputs = nn.functional.pad(inputs, (0, 0, pad, 0))  # (B, N * seg, C), zeros in front
    inputs = inputs.reshape(B, n_segments, -1)  # (B, N, seg * C)
    if static is not None:
        inputs = torch.cat([inputs, static[:, None].expand(-1, n_segments, -1)], dim=-1)
    return inputs


class InputEmbedding(nn.Module):
    """The input part: the normalised target, its observed flag and the covariates -> encoder rows.

    Each input step carries the target and an observed flag (a masked input is not a zero), then
    its covariates (`CovariateEmbedding.past`); static features join every recurrent step. With
    `segment_len` > 1 one row holds a segment of that many steps, mapped to `hidden_size` by a
    linear embedding (segment-wise recurrence, Lin et al. 2023, SegRNN: 168 hourly steps become
    7 recurrent steps, faster and better at long inputs). Without covariates the part has
    exactly the parameters the net had before covariates existed.
    """

    def __init__(self, dims: CovariateDims, segment_len: int, hidden_size: int) -> None:
        super().__init__()
        if segment_len < 1:
            raise ConfigError(f"segment_len must be >= 1, got {segment_len}")
        self.segment_len = segment_len
        self.covariates = None if dims.empty else CovariateEmbedding(dims)
        step_dim = 2 + (self.covariates.step_dim if self.covariates else 0)  # target, flag, covariates
        self.static_dim = self.covariates.static_dim if self.covariates else 0
        self.futr_dim = self.covariates.futr_dim if self.covariates else 0
        self.embed = (
            nn.Sequential(nn.Linear(step_dim * segment_len + self.static_dim, hidden_size), nn.ReLU())
            if segment_len > 1
            else None
        )
        self.out_dim = hidden_size if segment_len > 1 else step_dim + self.static_dim

    def forward(
        self, x: torch.Tensor, observed: torch.Tensor, batch: Mapping[str, torch.Tensor], horizon: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x, observed (B, L) -> encoder rows (B, N, out_dim), static (B, S) | None, futr (B, H, F) | None."""
        L = x.shape[1]
        inputs = torch.stack([x, observed], dim=-1)  # (B, L, 2)
        static = futr = None
        if self.covariates is not None:
            past = self.covariates.past(batch, L)  # (B, L, C) or None
            if past is not None:
                inputs = torch.cat([inputs, past], dim=-1)  # (B, L, 2 + C)
            static = self.covariates.static(batch)  # (B, S) or None
            futr = self.covariates.future(batch, L, horizon)  # (B, H, F) or None
        rows = recurrent_inputs(inputs, static, self.segment_len)  # (B, N, seg * (2 + C) + S)
        if self.embed is not None:
            rows = self.embed(rows)  # (B, N, hidden)
        return rows, static, futr
