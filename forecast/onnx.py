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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forecast.models.inputs import CovariateDims, PositionalNet, input_keys

TOLERANCE = 1e-5  # max abs difference on the scaled outputs, checked at export


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_export_available() -> bool:
    """Exporting needs both the `onnx` package (the exporter) and ONNX Runtime (the 1e-5 check)."""
    return importlib.util.find_spec("onnx") is not None and onnxruntime_available()


def probe_batch(net_params: Mapping[str, Any], n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for every batch key the net reads, to compare the two runtimes on: scaled
    windows with a few missing steps, step numbers and series codes of a learned cycle, and
    covariates of the saved widths (categorical codes within each column's vocabulary, 0 too)."""
    L, H = int(net_params["input_size"]), int(net_params["horizon"])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, L)).astype(np.float32)
    mask = rng.random((n, L)) > 0.05
    batch = {"x": np.where(mask, x, np.float32(0.0)), "x_mask": mask}
    if net_params.get("cycle_len"):
        batch["step"] = rng.integers(0, 10**6, n)
        batch["series"] = rng.integers(0, int(net_params.get("n_series") or 0) + 1, n)
    dims = CovariateDims.parse(net_params.get("covariates"))
    steps = {"futr": L + H, "hist": L}
    for kind in ("futr", "hist"):
        if getattr(dims, kind):
            batch[kind] = rng.standard_normal((n, steps[kind], getattr(dims, kind))).astype(np.float32)
        if getattr(dims, f"{kind}_cat"):
            codes = [rng.integers(0, card, (n, steps[kind])) for card in getattr(dims, f"{kind}_cat")]
            batch[f"{kind}_cat"] = np.stack(codes, axis=-1)
    if dims.static:
        batch["static"] = rng.standard_normal((n, dims.static)).astype(np.float32)
    if dims.static_cat:
        batch["static_cat"] = np.stack([rng.integers(0, card, n) for card in dims.static_cat], axis=-1)
    return batch


def export_onnx(net: nn.Module, net_params: Mapping[str, Any], path: str | Path) -> Path:
    """Write `net` as ONNX (dynamic batch size) and check it against PyTorch to 1e-5.

    The graph's inputs are the batch keys the net reads (`input_keys`: x, x_mask, then step
    and series of a learned cycle, then the covariates), named as in the batch; the runner
    passes the ones the graph declares. The net is traced through PositionalNet (tensors in,
    the batch dict to the net).
    """
    if not onnx_export_available():
        raise ImportError(
            "export=['onnx'] needs the onnx and onnxruntime packages: pip install onnx onnxruntime"
        )
    path = Path(path)
    net = net.eval()
    keys = input_keys(net_params)
    module = PositionalNet(net, keys).eval()  # eval as a whole: the exporter restores its mode after
    probe = probe_batch(net_params)
    tensors = [torch.from_numpy(probe[k]) for k in keys]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            module,
            tuple(t[:2] for t in tensors),
            buffer,
            input_names=keys,
            output_names=["y"],
            dynamic_axes={**{k: {0: "batch"} for k in keys}, "y": {0: "batch"}},
            dynamo=False,
        )
    model = buffer.getvalue()
    with torch.inference_mode():
        expected = module(*tensors).numpy()
    got = onnx_runner(model)(probe)
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    if not diff <= TOLERANCE:
        raise ValueError(f"the ONNX export differs from PyTorch by {diff:.2e} (> {TOLERANCE}); not saving it")
    path.write_bytes(model)
    return path


def onnx_runner(model: str | Path | bytes, threads: int | None = None):
    """batch dict -> outputs through an ONNX Runtime session on `threads` (torch's count)
    threads; the batch keys the graph does not declare are not passed (models saved before
    covariates declare x, x_mask and, with a learned cycle, step and series)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    declared = [i.name for i in session.get_inputs()]

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        absent = [k for k in declared if k not in batch]
        if absent:
            raise ValueError(f"the ONNX model needs inputs {absent}, not in the batch ({sorted(batch)})")
        return session.run(None, {k: batch[k] for k in declared})[0]

    return run
