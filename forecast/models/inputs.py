"""The batch a net reads: its keys, which of them a given net needs, and a positional wrapper.

One batch structure (a dict of tensors) flows from the window dataset and the forecaster to every
net; adding a feature adds a key, not a `forward()` argument. Shapes (L input steps, H horizon):

    x (B, L) float32           scaled target, 0 where missing
    x_mask (B, L) bool          True where observed
    step (B,) int64             absolute step number of the first forecast step (learned cycles)
    series (B,) int64           series code, 0 = unseen (per-series parameters)
    futr (B, L + H, F) float32  future-known numeric (incl. calendar sin/cos), input window AND horizon
    futr_cat (B, L + H, Fc) int64
    hist (B, L, P) float32, hist_cat (B, L, Pc) int64   past-only: input window only
    static (B, S) float32, static_cat (B, Sc) int64     one row per series

Categorical codes: 0 = unknown / missing / padding, 1.. = the fitted vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from forecast.errors import ConfigError

BATCH_KEYS: tuple[str, ...] = (
    "x",
    "x_mask",
    "step",
    "series",
    "futr",
    "futr_cat",
    "hist",
    "hist_cat",
    "static",
    "static_cat",
)
COVARIATE_KEYS: tuple[str, ...] = BATCH_KEYS[4:]


@dataclass(frozen=True)
class CovariateDims:
    """How many covariate columns of each kind a net takes (numeric: a count; categorical: the
    number of codes of each column, 0 = unknown included). Built from the encoder's `dims` dict."""

    futr: int = 0
    futr_cat: tuple[int, ...] = ()
    hist: int = 0
    hist_cat: tuple[int, ...] = ()
    static: int = 0
    static_cat: tuple[int, ...] = ()

    @classmethod
    def parse(cls, dims: Mapping[str, Any] | None) -> CovariateDims:
        """None or {} -> no covariates; unknown keys fail loudly (a dims dict from a newer version)."""
        if not dims:
            return cls()
        unknown = set(dims) - set(COVARIATE_KEYS)
        if unknown:
            raise ConfigError(f"unknown covariate kinds {sorted(unknown)}; known: {list(COVARIATE_KEYS)}")
        values: dict[str, Any] = {}
        for key in COVARIATE_KEYS:
            value = dims.get(key) or (() if key.endswith("_cat") else 0)
            if key.endswith("_cat"):
                value = tuple(int(v) for v in value)
                if any(v < 1 for v in value):
                    raise ConfigError(f"covariates.{key}: every column needs >= 1 code, got {list(value)}")
            else:
                value = int(value)
                if value < 0:
                    raise ConfigError(f"covariates.{key} must be >= 0, got {value}")
            values[key] = value
        return cls(**values)

    @property
    def empty(self) -> bool:
        return not self.keys()

    def keys(self) -> list[str]:
        """The batch keys these covariates need, in BATCH_KEYS order."""
        return [key for key in COVARIATE_KEYS if getattr(self, key)]


def input_keys(net_params: Mapping[str, Any]) -> list[str]:
    """The batch keys a net built from `net_params` reads, in BATCH_KEYS order.

    `step` when the net learns a cycle, `series` when that cycle is also per series, then the
    covariate keys of `net_params["covariates"]` (the encoder's dims).
    """
    keys = ["x", "x_mask"]
    if net_params.get("cycle_len"):
        keys.append("step")
        if net_params.get("n_series"):
            keys.append("series")
    return keys + CovariateDims.parse(net_params.get("covariates")).keys()


def as_batch(
    x: torch.Tensor | Mapping[str, torch.Tensor],
    x_mask: torch.Tensor | None = None,
    step: torch.Tensor | None = None,
    series: torch.Tensor | None = None,
) -> Mapping[str, torch.Tensor]:
    """A batch from either a batch or the old positional call `net(x, x_mask, step, series)`."""
    if not isinstance(x, torch.Tensor):
        return x
    given = {"x": x, "x_mask": x_mask, "step": step, "series": series}
    return {k: v for k, v in given.items() if v is not None}


class PositionalNet(nn.Module):
    """Calls `net` with a batch built from positional tensors named by `keys` (ONNX export, runners)."""

    def __init__(self, net: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        unknown = [k for k in keys if k not in BATCH_KEYS]
        if unknown:
            raise ConfigError(f"unknown batch keys {unknown}; known: {list(BATCH_KEYS)}")
        self.net, self.keys = net, tuple(keys)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        if len(tensors) != len(self.keys):
            raise TypeError(f"expected {len(self.keys)} tensors ({', '.join(self.keys)}), got {len(tensors)}")
        return self.net(dict(zip(self.keys, tensors, strict=True)))
