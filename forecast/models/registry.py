"""Network kinds by name, so a saved model can be rebuilt from plain values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from forecast.errors import ConfigError
from forecast.models.recurrent import RecurrentForecaster

NETS: dict[str, type[nn.Module]] = {"recurrent": RecurrentForecaster}


def build_net(kind: str, params: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network from its kind and the constructor values saved with the model."""
    if kind not in NETS:
        raise ConfigError(f"unknown network {kind!r}; known: {sorted(NETS)}")
    return NETS[kind](**params)
