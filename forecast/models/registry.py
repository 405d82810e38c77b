"""Network kinds by name, so a saved model can be rebuilt from plain values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from forecast.errors import ConfigError
from forecast.models.ensemble import EnsembleNet
from forecast.models.recurrent import RecurrentForecaster

ENSEMBLE = "ensemble"  # K nets of the other kinds, combined (`forecast.models.ensemble`)
NETS: dict[str, type[nn.Module]] = {"recurrent": RecurrentForecaster, ENSEMBLE: EnsembleNet}


def build_net(kind: str, params: Mapping[str, Any]) -> nn.Module:
    """Rebuild a network from its kind and the constructor values saved with the model."""
    if kind not in NETS:
        raise ConfigError(f"unknown network {kind!r}; known: {sorted(NETS)}")
    if kind == ENSEMBLE:  # its members first, each by its own kind
        nets = [build_net(params.get("member_net", "recurrent"), p) for p in params["members"]]
        return EnsembleNet(nets=nets, **params)
    return NETS[kind](**params)
