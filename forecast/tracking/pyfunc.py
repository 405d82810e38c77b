"""The model as an MLflow pyfunc: a loader module over plain files, nothing pickled.

MLflow calls `_load_pyfunc(data_path)` with the folder logged as `data_path`; the folder holds
the files `Forecaster.save` writes, so a logged model loads in any process that has `forecast`
installed, whatever version of the classes pickling would have frozen.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, Schema

from forecast.forecaster import Forecaster

ARTIFACT_NAME = "model"


class ForecastPyfunc:
    """What `mlflow.pyfunc.load_model(...).predict(history)` runs."""

    def __init__(self, forecaster: Forecaster):
        self.forecaster = forecaster

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        batch_size = int((params or {}).get("batch_size", 4096))
        return self.forecaster.predict(model_input, batch_size=batch_size)


def _load_pyfunc(data_path: str) -> ForecastPyfunc:
    """MLflow's loader-module entry point."""
    return ForecastPyfunc(Forecaster.load(data_path))


def _requirements() -> list[str]:
    """Pin what loading needs; `forecast` itself must be installed where the model loads."""
    import safetensors
    import torch

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"pandas=={pd.__version__}",
        f"safetensors=={safetensors.__version__}",
        f"mlflow=={mlflow.__version__}",
        "forecast",
    ]


def log_forecaster(
    forecaster: Forecaster,
    input_example: pd.DataFrame,
    extra_files: dict[str, str] | None = None,
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log the model to the active run as a pyfunc with a signature and an input example."""
    output_example = forecaster.predict(input_example)
    signature = infer_signature(input_example, output_example, params={"batch_size": 4096})
    # The input columns are typed `Any`: MLflow's own schema check would otherwise reject text
    # time stamps (CSV, JSON), integer ids or a bad value with a generic "Failed to enforce
    # schema" (or "missing inputs") before the data contract's validation (`Forecaster.validate`) can name the
    # problem, the column and the rows. The signature still lists the columns it reads.
    signature.inputs = Schema(
        [ColSpec(AnyType(), str(name), required=False) for name in input_example.columns]
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = forecaster.save(Path(tmp) / "forecaster")
        for name, text in (extra_files or {}).items():
            (data / name).write_text(text)
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            loader_module=__name__,
            data_path=str(data),
            signature=signature,
            input_example=input_example,
            pip_requirements=_requirements(),
            registered_model_name=registered_model_name,
        )
