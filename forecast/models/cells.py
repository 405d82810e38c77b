"""Recurrent layers beyond nn.LSTM / nn.GRU: a peephole LSTM and the xLSTM paper's sLSTM.

Both are drop-in replacements for `nn.LSTM(..., batch_first=True)` in the forecaster: the same
constructor, `forward(inputs, state=None) -> (outputs, state)`, states stacked as
(num_layers * dirs, B, hidden) in nn.LSTM's order (layer-major, direction-minor), dropout between
layers. They cannot use the fused oneDNN kernel, so the speed comes from the layout: the input
projections of all time steps are one matmul per layer and direction before the loop, and each
step does one fused (B, H) @ (H, 4H) matmul (`addmm`) plus a few element-wise ops.

The time loop is plain Python over a fixed T, so the TorchScript-based ONNX exporter
(`torch.onnx.export(..., dynamo=False)`) unrolls it; no Python branch reads tensor values.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

State = tuple[torch.Tensor, ...]


class _StackedRecurrent(nn.Module):
    """Layers x directions of one cell, wired like nn.LSTM; subclasses define the step.

    Parameters per layer k (suffix `_reverse` for the backward direction), named as nn.LSTM's:
    `weight_ih_l{k}` (4H, in), `weight_hh_l{k}` (4H, H), one bias `bias_l{k}` (4H) (nn.LSTM's two
    biases are redundant), plus whatever `_extra_parameters` adds.
    """

    n_states: int = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError(f"{type(self).__name__} supports batch_first=True only")
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError("input_size, hidden_size and num_layers must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.bidirectional, self.batch_first = float(dropout), bidirectional, True
        self.directions = 2 if bidirectional else 1
        H = hidden_size
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else H * self.directions
            for suffix in self._suffixes(layer):
                self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(4 * H, in_size)))
                self.register_parameter(f"weight_hh{suffix}", nn.Parameter(torch.empty(4 * H, H)))
                self.register_parameter(f"bias{suffix}", nn.Parameter(torch.empty(4 * H)))
                self._extra_parameters(suffix)
        self.reset_parameters()

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.directions]

    def _extra_parameters(self, suffix: str) -> None:
        """Register a cell's own per-layer-direction parameters (peepholes)."""

    def _extras(self, suffix: str) -> torch.Tensor | None:
        """The extra tensor `_step` gets for this layer and direction."""
        return None

    def _recurrent_weight(self, suffix: str) -> torch.Tensor:
        """(4H, H) recurrent matrix as used in the loop (sLSTM masks it to blocks per head)."""
        return getattr(self, f"weight_hh{suffix}")

    def reset_parameters(self) -> None:
        """nn.LSTM's init: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def _zero_step(self, gates: torch.Tensor, extra: torch.Tensor | None) -> State:
        """The first step from the all-zero state: (B, 4H) input projections (h = 0, so no
        recurrent part) -> new states, hidden state first."""
        raise NotImplementedError

    def _step(self, gates: torch.Tensor, state: State, extra: torch.Tensor | None, first: bool) -> State:
        """(B, 4H) pre-activations (input + recurrent + bias) and the (B, H) states -> new states,
        hidden state first. `first`: the states were given by the caller, not made by a step."""
        raise NotImplementedError

    def _run(
        self,
        xw: torch.Tensor,
        w_hh: torch.Tensor,
        extra: torch.Tensor | None,
        state: State | None,
        reverse: bool,
    ) -> tuple[list[torch.Tensor], State]:
        """One direction of one layer over the input projections xw (T, B, 4H) from `state`
        (None: zeros) -> the T hidden states (B, H) in time order, the final states."""
        steps = xw.unbind(0)  # contiguous (B, 4H) each; its backward is one stack, not T zero-fills
        T = len(steps)
        w_hh_t = w_hh.t()  # (H, 4H), a view: addmm reads it transposed without a copy
        outputs: list[torch.Tensor] = list(steps)  # placeholders, every slot is overwritten
        for k, t in enumerate(range(T - 1, -1, -1) if reverse else range(T)):
            if state is None:
                state = self._zero_step(steps[t], extra)
            else:
                gates = torch.addmm(steps[t], state[0], w_hh_t)  # (B, 4H): input + recurrent + bias
                state = self._step(gates, state, extra, k == 0)
            outputs[t] = state[0]
        assert state is not None
        return outputs, state

    def forward(self, inputs: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """inputs (B, T, input_size), state: `n_states` tensors (layers * dirs, B, H) or None
        (zeros) -> outputs (B, T, dirs * H) of the last layer, final states like `state`."""
        if inputs.dim() != 3 or inputs.shape[1] < 1:
            raise ValueError(
                f"expected inputs of shape (B, T >= 1, {self.input_size}), got {tuple(inputs.shape)}"
            )
        if state is not None and len(state) != self.n_states:
            raise ValueError(f"{type(self).__name__} takes a state of {self.n_states} tensors")
        finals: list[list[torch.Tensor]] = [[] for _ in range(self.n_states)]
        x = inputs.transpose(0, 1)  # (T, B, in): time-major inside, so every step's slice is contiguous
        for layer in range(self.num_layers):
            last = layer == self.num_layers - 1
            outs = []
            for d, suffix in enumerate(self._suffixes(layer)):
                w_ih, bias = getattr(self, f"weight_ih{suffix}"), getattr(self, f"bias{suffix}")
                xw = F.linear(x, w_ih, bias)  # (T, B, 4H): every step's input projection at once
                start = None if state is None else tuple(s[layer * self.directions + d] for s in state)
                steps, end = self._run(
                    xw, self._recurrent_weight(suffix), self._extras(suffix), start, d == 1
                )
                outs.append(torch.stack(steps, dim=1 if last else 0))  # (B, T, H) last, else (T, B, H)
                for i, s in enumerate(end):
                    finals[i].append(s)
            x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # dirs * H features
            if self.dropout and not last:
                x = F.dropout(x, self.dropout, self.training)
        return x, tuple(torch.stack(f, dim=0) for f in finals)  # (B, T, dirs * H), each (layers * dirs, B, H)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class PeepholeLSTM(_StackedRecurrent):
    """LSTM whose gates also see the cell state (Gers & Schmidhuber 2000), so they can time on
    the memory's content, not only on the hidden output.

        i = σ(x W_i + h U_i + p_i ⊙ c_{t-1} + b_i)    f = σ(x W_f + h U_f + p_f ⊙ c_{t-1} + b_f)
        g = tanh(x W_g + h U_g + b_g)                 c_t = f ⊙ c_{t-1} + i ⊙ g
        o = σ(x W_o + h U_o + p_o ⊙ c_t + b_o)        h_t = o ⊙ tanh(c_t)

    Gate order in the weights is nn.LSTM's (i, f, g, o). The diagonal peepholes are
    `weight_ch_l{k}` (3, H), rows p_i, p_f, p_o, initialised to zero: a fresh layer is a plain
    LSTM and learns how much to peek. State: (h, c), zeros when not given.
    """

    n_states = 2

    def _extra_parameters(self, suffix: str) -> None:
        self.register_parameter(f"weight_ch{suffix}", nn.Parameter(torch.empty(3, self.hidden_size)))

    def _extras(self, suffix: str) -> torch.Tensor:
        return getattr(self, f"weight_ch{suffix}")

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for layer in range(self.num_layers):
            for suffix in self._suffixes(layer):
                nn.init.zeros_(getattr(self, f"weight_ch{suffix}"))

    def _zero_step(self, gates: torch.Tensor, extra: torch.Tensor | None) -> State:
        assert extra is not None
        H = self.hidden_size
        i = torch.sigmoid(gates[:, :H])  # c_{t-1} = 0: no peephole term, and f does not matter
        c = i * torch.tanh(gates[:, 2 * H : 3 * H])
        o = torch.sigmoid(torch.addcmul(gates[:, 3 * H :], extra[2], c))
        return o * torch.tanh(c), c

    def _step(self, gates: torch.Tensor, state: State, extra: torch.Tensor | None, first: bool) -> State:
        assert extra is not None
        _, c = state
        H = self.hidden_size
        # i and f together: (B, 2, H) + (2, H) ⊙ c[:, None] in one addcmul and one sigmoid
        i_f = torch.sigmoid(torch.addcmul(gates[:, : 2 * H].unflatten(1, (2, H)), extra[:2], c[:, None]))
        g = torch.tanh(gates[:, 2 * H : 3 * H])  # (B, H)
        c = torch.addcmul(i_f[:, 0] * g, i_f[:, 1], c)  # f ⊙ c + i ⊙ g
        o = torch.sigmoid(torch.addcmul(gates[:, 3 * H :], extra[2], c))  # peeks at the new c_t
        return o * torch.tanh(c), c


class SLSTM(_StackedRecurrent):
    """sLSTM (Beck et al. 2024, xLSTM, arXiv 2405.04517, section 2.2 and appendix A): exponential
    input gate with a normaliser state n and a stabiliser m, so the memory can revise a stored
    value by a strongly weighted new one, and h = o ⊙ c / n stays a bounded weighted mean of z.

        ĩ, f̃, z̃, õ = x W + h_{t-1} R + b           (gate order i, f, z, o as in the reference)
        log f = logsigmoid(f̃)  (forget_gate="sigmoid", default) | f̃  (forget_gate="exp")
        m_t = max(log f + m_{t-1}, ĩ)                 (m_t = ĩ where n_{t-1} = 0: the first step)
        i' = exp(ĩ - m_t)   f' = exp(log f + m_{t-1} - m_t)   (both <= 1, exp never overflows)
        c_t = f' c_{t-1} + i' tanh(z̃)   n_t = f' n_{t-1} + i'   h_t = σ(õ) ⊙ c_t / n_t

    Choices, after the paper's reference code (NX-AI/xlstm, its vanilla and CUDA sLSTM cells):
    the forget gate is a sigmoid by default (the reference implements only that; the paper allows
    both), `forget_gate="exp"` gives the exponential one. The state (h, c, n, m) starts at zeros;
    where n = 0 the stabiliser restarts at m_t = ĩ, so i' = 1 and n_1 = 1. From there n_t >= 1
    (one of f', i' is exactly 1 at every step and n_{t-1} >= 1), so c / n needs no clamp (a
    caller's state with 0 < n < 1 keeps n_t >= min(n_{t-1}, 1) > 0). The
    recurrent matrix is full (memory mixing across all units) with `num_heads=1`; `num_heads` > 1
    masks it to the paper's block-diagonal form (one block per head and gate), at the same cost.
    Forget-gate biases start at linspace(3, 6) for the sigmoid gate (f ≈ 0.95 .. 0.998, keep the
    memory) and at 0 for the exp gate (f ≈ 1); the rest is nn.LSTM's uniform init.
    """

    n_states = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        batch_first: bool = True,
        *,
        forget_gate: Literal["sigmoid", "exp"] = "sigmoid",
        num_heads: int = 1,
    ) -> None:
        if forget_gate not in ("sigmoid", "exp"):
            raise ValueError(f"forget_gate must be 'sigmoid' or 'exp', got {forget_gate!r}")
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
        self.forget_gate, self.num_heads = forget_gate, num_heads
        super().__init__(input_size, hidden_size, num_layers, dropout, bidirectional, batch_first)
        if num_heads > 1:
            head = torch.arange(hidden_size) // (hidden_size // num_heads)  # (H,)
            mask = (head.repeat(4)[:, None] == head[None, :]).to(torch.get_default_dtype())  # (4H, H)
            self.register_buffer("head_mask", mask, persistent=False)
            with torch.no_grad():
                for name, weight in self.named_parameters():
                    if name.startswith("weight_hh"):
                        weight.mul_(mask)
        else:
            self.head_mask = None

    def reset_parameters(self) -> None:
        super().reset_parameters()
        H = self.hidden_size
        with torch.no_grad():
            for layer in range(self.num_layers):
                for suffix in self._suffixes(layer):
                    forget = getattr(self, f"bias{suffix}")[H : 2 * H]
                    if self.forget_gate == "sigmoid":
                        forget.copy_(torch.linspace(3.0, 6.0, H))
                    else:
                        forget.zero_()

    def _recurrent_weight(self, suffix: str) -> torch.Tensor:
        weight = getattr(self, f"weight_hh{suffix}")
        return weight if self.head_mask is None else weight * self.head_mask

    def _log_forget(self, f_raw: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(f_raw) if self.forget_gate == "sigmoid" else f_raw

    def _zero_step(self, gates: torch.Tensor, extra: torch.Tensor | None) -> State:
        i_raw, _, z_raw, o_raw = gates.chunk(4, dim=1)  # each (B, H)
        # n_{t-1} = 0: m_t = ĩ, so i' = 1, c_t = tanh(z̃), n_t = 1 (f' multiplies zeros)
        c = torch.tanh(z_raw)
        return torch.sigmoid(o_raw) * c, c, torch.ones_like(c), i_raw

    def _step(self, gates: torch.Tensor, state: State, extra: torch.Tensor | None, first: bool) -> State:
        _, c, n, m = state
        i_raw, f_raw, z_raw, o_raw = gates.chunk(4, dim=1)  # each (B, H)
        log_f_m = self._log_forget(f_raw) + m  # log f + m_{t-1}
        if first:  # a given state: restart the stabiliser wherever it has no memory yet (n = 0)
            m_new = torch.where(n == 0, i_raw, torch.maximum(log_f_m, i_raw))
            f = torch.exp((log_f_m - m_new).clamp_max(0.0))  # finite where n = 0 too (f' * 0 there)
        else:  # n_{t-1} > 0 after any step (n_t >= min(n_{t-1}, 1)): no restart
            m_new = torch.maximum(log_f_m, i_raw)
            f = torch.exp(log_f_m - m_new)  # <= 1
        i = torch.exp(i_raw - m_new)  # <= 1
        c = torch.addcmul(i * torch.tanh(z_raw), f, c)
        n = torch.addcmul(i, f, n)
        return torch.sigmoid(o_raw) * c / n, c, n, m_new

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.forget_gate != "sigmoid":
            text += f", forget_gate={self.forget_gate!r}"
        if self.num_heads > 1:
            text += f", num_heads={self.num_heads}"
        return text
