"""The saved model's format: its file names, its settings (`model.json`) and the columns it forecasts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecast import __version__
from forecast.intervals import ConformalIntervals
from forecast.models import distributions

FORMAT_VERSION = 2  # 2: settings carry `config` (the typed options); 1 still loads
WEIGHTS, SETTINGS, SCALER = "weights.safetensors", "model.json", "scaler.parquet"
ONNX = "model.onnx"  # optional serving copy of the network (see `Forecaster.save(export=...)`)
POINT = "y_hat"  # the point forecast: the first forecast column of every model (docs/batch.md)


@dataclass
class ForecasterSettings:
    """Everything besides weights and scaler that forecasting needs, saved as JSON."""

    net: str
    net_params: dict[str, Any]
    input_size: int
    horizon: int
    freq: str | int
    columns: dict[str, str]
    scaler: str
    quantiles: list[float] = field(default_factory=list)
    missing: str = "error"
    # The fitted covariate encoder (`forecast.data.covariate_encoder.CovariateEncoder.to_dict()`);
    # None: the model reads the target alone (every model saved before covariates existed).
    covariates: dict[str, Any] | None = None
    # The options it was trained with (`forecast.config.SavedConfig`: data, model, train and
    # their schema version); None for models saved before format 2.
    config: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    forecast_version: str = __version__

    @property
    def quantile_columns(self) -> list[str]:
        """One `y_hat_qNN` per quantile level, in the order of `quantiles` (ascending)."""
        return [f"y_hat_q{round(q * 100):02d}" for q in self.quantiles]

    @property
    def output_columns(self) -> list[str]:
        """The forecast columns the network's output becomes, in order: `y_hat`, then the
        quantiles (`predict_scaled`'s last axis). Computed from the settings at forecast time, so
        a model saved before `y_hat` was always written writes it too."""
        return [POINT, *self.quantile_columns]

    @property
    def distribution(self) -> str | None:
        """The distribution whose parameters the net outputs (`forecast.models.distributions`),
        or None: the net outputs the forecast columns themselves."""
        kind = self.net_params.get("output", "point")
        return kind if kind in distributions.KINDS else None

    @property
    def point_index(self) -> int:
        """Where the point forecast is among `output_columns`: first, always (`y_hat`)."""
        return 0


def read_settings(folder: str | Path) -> ForecasterSettings:
    """The settings saved in `folder`, refused when a newer forecast wrote them."""
    folder = Path(folder)
    raw = json.loads((folder / SETTINGS).read_text())
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"model at {folder} has format {raw['format_version']}, newer than this forecast "
            f"{__version__} reads ({FORMAT_VERSION}); upgrade the package"
        )
    return ForecasterSettings(**raw)


def forecast_columns(settings: ForecasterSettings, intervals: ConformalIntervals | None) -> list[str]:
    """The output contract (docs/batch.md, Output columns): id, time, `y_hat`, the quantiles
    ascending, then `y_hat_lo_NN`, `y_hat_hi_NN` per interval level ascending."""
    c = settings.columns
    bands = intervals.columns if intervals is not None else []
    return [c["id_col"], c["time_col"], *settings.output_columns, *bands]


def saved_columns(folder: str | Path) -> list[str]:
    """The columns the model saved in `folder` forecasts, read from its settings and intervals
    files alone (no weights, no forecast): what the promotion gate compares."""
    return forecast_columns(read_settings(folder), ConformalIntervals.load(folder))
