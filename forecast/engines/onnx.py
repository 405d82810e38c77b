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
    """Write `net` as ONNX (dynamic batch size) and check it against PyTorch to 1e-5."""
    if not onnx_export_available():
        raise ImportError(
            "export=['onnx'] needs the onnx and onnxruntime packages: pip install onnx onnxruntime"
        )
    path = Path(path)
    net = net.eval()
    x, mask = _probe(input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            net,
            (torch.from_numpy(x[:2]), torch.from_numpy(mask[:2])),
            buffer,
            input_names=["x", "x_mask"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "x_mask": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    model = buffer.getvalue()
    with torch.inference_mode():
        expected = net(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
    got = onnx_runner(model)(x, mask)
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    if not diff <= TOLERANCE:
        raise ValueError(f"the ONNX export differs from PyTorch by {diff:.2e} (> {TOLERANCE}); not saving it")
    path.write_bytes(model)
    return path


def onnx_runner(model: str | Path | bytes, threads: int | None = None):
    """(x, mask) -> outputs through an ONNX Runtime session on `threads` (torch's count) threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": x, "x_mask": mask})[0]

    return run
