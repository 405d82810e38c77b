"""What runs the network: PyTorch, or ONNX Runtime on the model's `model.onnx` copy."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.settings import ONNX

Runtime = Literal["auto", "torch", "onnx"]
# The batch (forecast.models.inputs: x (B, L) float32 scaled windows with zeros where missing,
# x_mask (B, L) bool, step/series (B,) int64 for learned cycles, covariates) -> (B, H, Q) float32.
# A runner reads the keys its net needs and ignores the others.
NetRunner = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def torch_runner(net: nn.Module, keys: Sequence[str] = ("x", "x_mask")) -> NetRunner:
    """Run the PyTorch network on the batch keys it reads (`input_keys`), without autograd, on
    the device its weights are on when it runs: a net moved to CUDA (`forecaster.net.cuda()`)
    forecasts there, and its output comes back as a NumPy array all the same."""
    keys = tuple(keys)

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        weight = next(net.parameters(), None)
        device = torch.device("cpu") if weight is None else weight.device
        with torch.inference_mode():
            return net({k: torch.from_numpy(batch[k]).to(device) for k in keys}).cpu().numpy()

    return run


def choose_runner(
    runtime: Runtime, path: str | Path | None, net: nn.Module, keys: Sequence[str]
) -> tuple[str, NetRunner]:
    """The runtime that runs `net` (its batch keys `keys`; its ONNX copy, if any, in the model
    folder `path`) and its runner: `torch`, `onnx`, or `auto` (ONNX Runtime when the copy and the
    `onnxruntime` package are both there, else PyTorch)."""
    if runtime not in ("auto", "torch", "onnx"):
        raise ConfigError(f"unknown runtime {runtime!r}; use auto, torch or onnx")
    onnx_file = Path(path) / ONNX if path is not None else None
    has_copy = onnx_file is not None and onnx_file.is_file()
    if runtime == "onnx" and not has_copy:
        raise FileNotFoundError(
            f"runtime=onnx needs {ONNX} beside the model (at {path}); log the model with "
            "export=['onnx'] or use runtime=torch"
        )
    if runtime == "torch" or not has_copy:
        return "torch", torch_runner(net, keys)
    from forecast.onnx import onnx_runner, onnxruntime_available

    if not onnxruntime_available():
        if runtime == "onnx":
            raise ImportError("runtime=onnx needs the onnxruntime package: pip install onnxruntime")
        return "torch", torch_runner(net, keys)
    return "onnx", onnx_runner(onnx_file)
