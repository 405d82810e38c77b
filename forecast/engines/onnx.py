"""An ONNX copy of the network for serving, run by ONNX Runtime.

ONNX is a plain protobuf file (no pickled code), so it fits the model's "plain files" rule.
On this project's 2-core benchmark machine ONNX Runtime ran the segment-wise LSTM about 1.4x
faster than PyTorch eager and the classic one about as fast (bench/README.md, B3); the copy is
checked against PyTorch to 1e-5 when it is written.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

TOLERANCE = 1e-5  # max abs difference on the scaled outputs, checked at export


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_export_available() -> bool:
    """Exporting needs both the `onnx` package (the exporter) and ONNX Runtime (the 1e-5 check)."""
    return importlib.util.find_spec("onnx") is not None and onnxruntime_available()


def _probe(input_size: int, n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded scaled windows with a few missing steps, to compare the two runtimes on."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, input_size)).astype(np.float32)
    mask = rng.random((n, input_size)) > 0.05
    return np.where(mask, x, np.float32(0.0)), mask


def export_onnx(net: nn.Module, input_size: int, path: str | Path) -> Path:
    """Write `net` as ONNX (dynamic batch size) and check it against PyTorch to 1e-5.

    A net with a learned cycle (`cycle_len`) takes two more inputs, `step` and `series`
    ((B,) int64), which the runner passes when the graph declares them.
    """
    if not onnx_export_available():
        raise ImportError(
            "export=['onnx'] needs the onnx and onnxruntime packages: pip install onnx onnxruntime"
        )
    path = Path(path)
    net = net.eval()
    x, mask = _probe(input_size)
    names = ["x", "x_mask"]
    probe = [x, mask]
    if getattr(net, "cycle_len", 0):
        rng = np.random.default_rng(1)
        n_codes = getattr(getattr(net, "series_cycle", None), "num_embeddings", 1)
        names += ["step", "series"]
        probe += [rng.integers(0, 10**6, len(x)), rng.integers(0, n_codes, len(x))]
    tensors = [torch.from_numpy(a) for a in probe]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            net,
            tuple(t[:2] for t in tensors),
            buffer,
            input_names=names,
            output_names=["y"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "y": {0: "batch"}},
            dynamo=False,
        )
    model = buffer.getvalue()
    with torch.inference_mode():
        expected = net(*tensors).numpy()
    got = onnx_runner(model)(*probe)
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    if not diff <= TOLERANCE:
        raise ValueError(f"the ONNX export differs from PyTorch by {diff:.2e} (> {TOLERANCE}); not saving it")
    path.write_bytes(model)
    return path


def onnx_runner(model: str | Path | bytes, threads: int | None = None):
    """(x, mask[, step, series]) -> outputs through an ONNX Runtime session on `threads` (torch's
    count) threads; inputs the graph does not declare are not passed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    declared = {i.name for i in session.get_inputs()}

    def run(x: np.ndarray, mask: np.ndarray, step=None, series=None) -> np.ndarray:
        given = {"x": x, "x_mask": mask, "step": step, "series": series}
        return session.run(None, {k: v for k, v in given.items() if k in declared and v is not None})[0]

    return run
