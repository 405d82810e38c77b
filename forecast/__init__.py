"""forecast: recurrent-network time-series forecasting, trained with Lightning, tracked in MLflow.

From Python: `forecast.Model` (fit, predict, cross_validation, save, load; docs/python.md) with
the typed options `DataConfig`, `ModelConfig` and `TrainConfig`. Names resolve lazily (PEP 562):
`import forecast` stays quick, and serving code never imports Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast._lazy import lazy_getattr

__version__ = "0.1.0"

if TYPE_CHECKING:
    from forecast.api import Model
    from forecast.config import DataConfig, ModelConfig, TrainConfig

_WHERE = {"Model": "api", "DataConfig": "config", "ModelConfig": "config", "TrainConfig": "config"}
__all__ = ["DataConfig", "Model", "ModelConfig", "TrainConfig", "__version__"]

__getattr__ = lazy_getattr(__name__, _WHERE)
