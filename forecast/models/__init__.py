"""Forecasting networks (plain nn.Modules) and the LightningModule that trains them.

Names resolve lazily (PEP 562) so that serving code, which needs the networks only, does not
import Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast._lazy import lazy_getattr

if TYPE_CHECKING:
    from forecast.models.inputs import BATCH_KEYS, PositionalNet, input_keys
    from forecast.models.module import ForecastModule
    from forecast.models.recurrent import RecurrentForecaster
    from forecast.models.registry import NETS, build_net

_WHERE = {
    "BATCH_KEYS": "inputs",
    "ForecastModule": "module",
    "NETS": "registry",
    "PositionalNet": "inputs",
    "RecurrentForecaster": "recurrent",
    "build_net": "registry",
    "input_keys": "inputs",
}
__all__ = [
    "BATCH_KEYS",
    "ForecastModule",
    "NETS",
    "PositionalNet",
    "RecurrentForecaster",
    "build_net",
    "input_keys",
]


__getattr__ = lazy_getattr(__name__, _WHERE)
