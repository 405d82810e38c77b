"""PeepholeLSTM and SLSTM (forecast.models.cells): one step against numbers written out with
numpy, nn.LSTM's shapes and state contract, sLSTM's stabiliser, gradients, the ONNX copy."""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from forecast.models import cells
from forecast.models.cells import SLSTM, PeepholeLSTM
from forecast.models.encoders import ENCODERS

# Every registered cell written here (the fused kinds are torch's own): nn.LSTM's contract.
CELLS = [kind for kind in (build() for build in ENCODERS.values()) if kind.__module__ == cells.__name__]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _set(module: nn.Module, **values: np.ndarray) -> None:
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).copy_(torch.as_tensor(value, dtype=torch.float32))


# Explicit small weights for one layer, input 2, hidden 2 (rows: the 4 gates x 2 units).
W = np.array(
    [[0.5, -0.3], [0.2, 0.1], [-0.4, 0.6], [0.3, 0.3], [0.1, -0.2], [-0.5, 0.4], [0.7, 0.2], [0.0, -0.6]]
)
U = np.array(
    [[0.1, 0.2], [-0.3, 0.1], [0.2, -0.2], [0.4, 0.0], [-0.1, 0.3], [0.2, 0.2], [0.0, -0.4], [0.3, 0.1]]
)
B = np.array([0.1, -0.1, 0.2, 0.0, -0.2, 0.3, 0.05, -0.05])
X = np.array([0.8, -1.2])
H0 = np.array([0.3, -0.5])
C0 = np.array([0.7, -0.2])


def test_peephole_step_matches_the_equations():
    P = np.array([[0.5, -0.4], [0.3, 0.2], [-0.6, 0.1]])  # p_i, p_f, p_o
    cell = PeepholeLSTM(2, 2)
    _set(cell, weight_ih_l0=W, weight_hh_l0=U, bias_l0=B, weight_ch_l0=P)
    a = W @ X + U @ H0 + B
    i = _sigmoid(a[0:2] + P[0] * C0)
    f = _sigmoid(a[2:4] + P[1] * C0)
    g = np.tanh(a[4:6])
    c = f * C0 + i * g
    o = _sigmoid(a[6:8] + P[2] * c)
    h = o * np.tanh(c)
    state = (
        torch.tensor(H0, dtype=torch.float32)[None, None],
        torch.tensor(C0, dtype=torch.float32)[None, None],
    )
    out, (h_n, c_n) = cell(torch.tensor(X, dtype=torch.float32)[None, None], state)
    np.testing.assert_allclose(out[0, 0].detach().numpy(), h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h_n[0, 0].detach().numpy(), h, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c_n[0, 0].detach().numpy(), c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize("start", ["zeros", "given"])
def test_slstm_step_matches_the_equations(forget_gate, start):
    cell = SLSTM(2, 2, forget_gate=forget_gate)
    _set(cell, weight_ih_l0=W, weight_hh_l0=U, bias_l0=B)
    if start == "zeros":
        h0 = c0 = n0 = m0 = np.zeros(2)
    else:
        h0, c0, n0, m0 = H0, C0, np.array([1.5, 2.0]), np.array([0.3, -0.7])
    a = W @ X + U @ h0 + B
    i_raw, f_raw, z_raw, o_raw = a[0:2], a[2:4], a[4:6], a[6:8]
    log_f = -np.log1p(np.exp(-f_raw)) if forget_gate == "sigmoid" else f_raw
    m = i_raw if start == "zeros" else np.maximum(log_f + m0, i_raw)  # restart where n = 0
    i = np.exp(i_raw - m)
    f = np.exp(log_f + m0 - m)
    c = f * c0 + i * np.tanh(z_raw)
    n = f * n0 + i
    h = _sigmoid(o_raw) * c / n
    state = tuple(torch.tensor(s, dtype=torch.float32)[None, None] for s in (h0, c0, n0, m0))
    out, got = cell(torch.tensor(X, dtype=torch.float32)[None, None], state)
    np.testing.assert_allclose(out[0, 0].detach().numpy(), h, rtol=1e-6, atol=1e-6)
    for tensor, expected in zip(got, (h, c, n, m), strict=True):
        np.testing.assert_allclose(tensor[0, 0].detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    if start == "zeros":
        np.testing.assert_allclose(got[2][0, 0].detach().numpy(), 1.0)  # n_1 = 1


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes_and_state_order_match_nn_lstm(cls, layers, bidirectional):
    torch.manual_seed(0)
    rnn = cls(3, 5, num_layers=layers, dropout=0.2, bidirectional=bidirectional, batch_first=True)
    ref = nn.LSTM(
        3,
        5,
        num_layers=layers,
        dropout=0.2 if layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )
    for attr in ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first"):
        assert getattr(rnn, attr) == getattr(ref, attr)
    x = torch.randn(4, 6, 3)
    out, state = rnn(x)
    ref_out, (ref_h, _) = ref(x)
    assert out.shape == ref_out.shape == (4, 6, 5 * (2 if bidirectional else 1))
    assert isinstance(state, tuple) and len(state) == cls.n_states
    assert all(s.shape == ref_h.shape for s in state)
    # the final h of the last layer: forward direction at t = T-1, backward direction at t = 0
    rnn.eval()
    out, (h, *_) = rnn(x)
    dirs = 2 if bidirectional else 1
    torch.testing.assert_close(h[-dirs], out[:, -1, :5])
    if bidirectional:
        torch.testing.assert_close(h[-1], out[:, 0, 5:])


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_all_steps_at_once_equal_one_step_at_a_time(cls, layers):
    torch.manual_seed(1)
    rnn = cls(3, 4, num_layers=layers, dropout=0.5).eval()  # eval: no dropout
    x = torch.randn(5, 7, 3)
    whole, whole_state = rnn(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        out, state = rnn(x[:, t : t + 1], state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole)
    for a, b in zip(state, whole_state, strict=True):
        torch.testing.assert_close(a, b)


def test_batch_first_false_is_refused():
    for cls in CELLS:
        with pytest.raises(ValueError, match="batch_first"):
            cls(3, 4, batch_first=False)


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_slstm_stays_finite_where_a_naive_exp_overflows(forget_gate):
    torch.manual_seed(2)
    rnn = SLSTM(3, 8, num_layers=2, forget_gate=forget_gate)
    x = (torch.randn(4, 20, 3) * 1e3).requires_grad_()
    raw = nn.functional.linear(x, rnn.weight_ih_l0, rnn.bias_l0)  # (B, T, 4H)
    assert torch.isinf(raw[..., :8].exp()).any()  # exp(ĩ) alone would overflow float32
    out, state = rnn(x)
    assert torch.isfinite(out).all() and all(torch.isfinite(s).all() for s in state)
    assert out.abs().max() <= 1.0  # h = o * (a weighted mean of tanh z)
    assert (state[2] >= 1.0 - 1e-6).all()  # n >= 1 after the first step
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in rnn.parameters())


@pytest.mark.parametrize("cls", CELLS)
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(3)
    rnn = cls(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 6, 3, requires_grad=True)
    state0 = tuple(torch.rand(4, 5, 4) + (1.0 if i == 2 else 0.0) for i in range(cls.n_states))
    out, state = rnn(x, state0)
    (out.square().sum() + state[0].sum() + state[1].sum()).backward()
    for name, p in rnn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("cls, kwargs", [(PeepholeLSTM, {}), (SLSTM, {}), (SLSTM, {"forget_gate": "exp"})])
def test_gradients_match_finite_differences(cls, kwargs):
    torch.manual_seed(8)
    rnn = cls(3, 4, num_layers=2, bidirectional=True, **kwargs).double()
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("weight_ch"):
                p.uniform_(-0.5, 0.5)  # peepholes start at zero: make them count
    x = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
    state = [torch.rand(4, 2, 4, dtype=torch.double) for _ in range(cls.n_states)]
    if cls is SLSTM:
        state[2] += 1.0  # n > 0, as the layer makes it
    state = [s.requires_grad_() for s in state]
    assert torch.autograd.gradcheck(lambda x: rnn(x)[0], (x,))
    assert torch.autograd.gradcheck(lambda x, *s: rnn(x, s)[0], (x, *state))


def test_slstm_heads_use_block_diagonal_recurrence():
    torch.manual_seed(4)
    rnn = SLSTM(3, 8, num_heads=2)
    assert rnn.weight_hh_l0[:4, 4:].abs().sum() == 0  # gate i, head 0 units <- head 1 units
    x = torch.randn(2, 5, 3)
    before, _ = rnn(x)
    with torch.no_grad():
        rnn.weight_hh_l0[:4, 4:] = 1.0  # off-block entries are masked out
    after, _ = rnn(x)
    torch.testing.assert_close(before, after)
    with torch.no_grad():
        rnn.weight_hh_l0[:4, :4] += 1.0  # in-block entries count
    assert not torch.allclose(rnn(x)[0], before)


@pytest.mark.parametrize("cls", CELLS)
def test_the_forecasters_parallel_segment_decoder_call(cls):
    """The net's calls, written out here (forecast.models' nets are being refactored): the
    encoder over the segments, then one step per output segment, all at once, from the
    encoder's state repeated along the batch dimension (B * M rows of T = 1)."""
    torch.manual_seed(5)
    rnn = cls(8, 8, num_layers=2).eval()
    B, M = 3, 4
    _, state = rnn(torch.randn(B, 7, 8))  # encoder
    positions = torch.randn(M, 8)
    inputs = positions[None].expand(B, -1, -1).reshape(B * M, 1, 8)  # (B * M, 1, in)
    repeated = tuple(s.repeat_interleave(M, dim=1) for s in state)  # (layers, B * M, H)
    steps, _ = rnn(inputs, repeated)  # (B * M, 1, H)
    for b in range(B):  # the same as stepping each window's state alone, segment by segment
        for j in range(M):
            alone, _ = rnn(positions[j][None, None], tuple(s[:, b : b + 1] for s in state))
            torch.testing.assert_close(steps[b * M + j], alone[0])


class _Flat(nn.Module):
    """Tensors in, flat tensors out, for the exporter."""

    def __init__(self, rnn: nn.Module, with_state: bool) -> None:
        super().__init__()
        self.rnn, self.with_state = rnn, with_state

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, final = self.rnn(x, tuple(state) if self.with_state else None)
        return (out, *final)


@pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="needs onnx and onnxruntime",
)
@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize(
    "layers, bidirectional, steps, with_state",
    [(2, False, 7, False), (2, False, 1, True), (1, True, 5, False)],
)
def test_onnx_copy_agrees_with_pytorch(cls, layers, bidirectional, steps, with_state):
    import onnxruntime as ort

    torch.manual_seed(6)
    rnn = cls(6, 16, num_layers=layers, bidirectional=bidirectional).eval()
    module = _Flat(rnn, with_state).eval()
    dirs = 2 if bidirectional else 1

    def inputs(batch: int) -> list[torch.Tensor]:
        x = [torch.randn(batch, steps, 6) * 3]
        if with_state:  # a state the layer itself produced, as the segment decoder passes
            with torch.no_grad():
                x += list(rnn(torch.randn(batch, 3, 6))[1])
        return x

    names = ["x"] + [f"s{i}" for i in range(cls.n_states)] * with_state
    outputs = ["y"] + [f"final{i}" for i in range(cls.n_states)]
    axes = {"x": {0: "batch"}, "y": {0: "batch"}}
    axes.update({n: {1: "batch"} for n in [*names[1:], *outputs[1:]]})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs(2)),
            buffer,
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    probe = inputs(9)  # another batch size than the traced one
    with torch.no_grad():
        expected = module(*probe)
    got = session.run(None, {n: t.numpy() for n, t in zip(names, probe, strict=True)})
    assert got[0].shape == (9, steps, 16 * dirs)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cls", CELLS)
def test_no_state_is_the_zero_state(cls):
    torch.manual_seed(7)
    rnn = cls(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 6, 3)
    zeros = tuple(torch.zeros(4, 5, 4) for _ in range(cls.n_states))
    out, state = rnn(x)
    out_zeros, state_zeros = rnn(x, zeros)
    torch.testing.assert_close(out, out_zeros)
    for a, b in zip(state, state_zeros, strict=True):
        torch.testing.assert_close(a, b)
