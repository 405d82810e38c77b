"""Data contract: reading, validation, scaling and windows.

Names resolve lazily (PEP 562): the batch-forecast path needs validation and scaling but not the
Lightning data module, and importing Lightning costs seconds of start-up per process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forecast._lazy import lazy_getattr

if TYPE_CHECKING:
    from forecast.data.covariate_encoder import CovariateEncoder
    from forecast.data.covariates import CovariateConfig, validate_covariates
    from forecast.data.datamodule import SeriesDataModule
    from forecast.data.io import read_table, write_parquet_atomic
    from forecast.data.scaling import SeriesScaler
    from forecast.data.synthetic import synthetic_long, synthetic_values
    from forecast.data.validation import ColumnSpec, DataValidationError, validate_long_frame

_WHERE = {
    "CovariateConfig": "covariates",
    "CovariateEncoder": "covariate_encoder",
    "ColumnSpec": "validation",
    "DataValidationError": "validation",
    "SeriesDataModule": "datamodule",
    "SeriesScaler": "scaling",
    "read_table": "io",
    "synthetic_long": "synthetic",
    "synthetic_values": "synthetic",
    "validate_covariates": "covariates",
    "validate_long_frame": "validation",
    "write_parquet_atomic": "io",
}
__all__ = [
    "CovariateConfig",
    "CovariateEncoder",
    "ColumnSpec",
    "DataValidationError",
    "SeriesDataModule",
    "SeriesScaler",
    "read_table",
    "synthetic_long",
    "synthetic_values",
    "validate_covariates",
    "validate_long_frame",
    "write_parquet_atomic",
]


__getattr__ = lazy_getattr(__name__, _WHERE)
