"""The model as an MLflow pyfunc: a loader module over plain files, nothing pickled.

MLflow calls `_load_pyfunc(data_path)` with the folder logged as `data_path`; the folder holds
the files `Forecaster.save` writes, so a logged model loads in any process that has `forecast`
installed, whatever version of the classes pickling would have frozen.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from forecast import __version__
from forecast.cli import one_line
from forecast.errors import ForecastError
from forecast.forecaster import Forecaster

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model"


class ModelInputError(MlflowException, ForecastError):
    """A forecast error as MLflow reports it: the model's one-line message, HTTP 400.

    MLflow's scoring server answers any other exception with a generic "unexpected error"
    and a stack trace, and rewrites an MlflowException's message to "Failed to predict data
    '<the whole input frame>'. Error: ..."; this one keeps its own message (the setter ignores
    the rewrite), so `mlflow models serve` clients read what the data contract says. In Python
    it is also a ForecastError, with the original error as its cause.
    """

    def __init__(self, err: ForecastError):
        self._own = one_line(err)
        super().__init__(self._own, error_code=INVALID_PARAMETER_VALUE)
        self.exit_code = err.exit_code

    @property
    def message(self) -> str:
        return self._own

    @message.setter
    def message(self, value: str) -> None:  # the scoring server's rewrite: keep ours
        pass


class ForecastPyfunc:
    """What `mlflow.pyfunc.load_model(...).predict(history)` runs."""

    def __init__(self, forecaster: Forecaster):
        self.forecaster = forecaster

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        batch_size = int((params or {}).get("batch_size", 4096))
        try:
            return self.forecaster.predict(model_input, batch_size=batch_size)
        except ForecastError as err:
            raise ModelInputError(err) from err


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
        # The version that trained the model: its files are read by this version's loader.
        f"forecast=={__version__}",
    ]


def input_metadata(forecaster: Forecaster) -> dict[str, Any]:
    """What a request must carry, for the MLmodel file: the id, time and target columns, the
    covariate columns by kind, and how many future rows (target empty) each series needs."""
    c, enc = forecaster.columns, forecaster.encoder
    columns: dict[str, Any] = {"id": c.id_col, "time": c.time_col, "target": c.target_col}
    if enc is not None:
        kinds = forecaster.covariate_columns
        columns.update({"futr": kinds["futr"], "hist": kinds["hist"], "static": kinds["static"]})
        columns["categorical"] = enc.futr_cat + enc.hist_cat + enc.static_cat
        columns["calendar"] = kinds["calendar"]  # computed from the time stamps: no column needed
    horizon = forecaster.settings.horizon
    return {
        "input_columns": columns,
        "horizon": horizon,
        # the next `horizon` rows of every series with the future-known columns, target empty
        "future_rows": horizon if enc is not None and enc.needs_future else 0,
    }


def log_forecaster(
    forecaster: Forecaster,
    input_example: pd.DataFrame,
    extra_files: dict[str, str] | None = None,
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log the model to the active run as a pyfunc with a signature and an input example."""
    output_example = forecaster.predict(input_example)
    signature = infer_signature(input_example, output_example, params={"batch_size": 4096})
    # No input schema: MLflow checks inputs against it before the data contract's validation
    # (`Forecaster.validate`) can name the problem, the column and the rows, rejecting text
    # time stamps from CSV or JSON ("Can not safely convert str to datetime64"), integer ids or
    # a single bad value with a generic "Failed to enforce schema"; and a schema of `Any` columns
    # breaks `mlflow models serve` for text/csv (its CSV parser needs concrete types). The
    # same holds for covariate columns (categorical ones arrive as text or numbers, future rows
    # leave the target empty). The columns the model reads are listed in the MLmodel file's
    # metadata instead (`input_metadata`), and the input example carries them.
    signature.inputs = None
    with tempfile.TemporaryDirectory() as tmp:
        data = forecaster.save(Path(tmp) / "forecaster")
        for name, text in (extra_files or {}).items():
            (data / name).write_text(text)
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            loader_module=__name__,
            data_path=str(data),
            signature=signature,
            metadata=input_metadata(forecaster),
            input_example=input_example,
            pip_requirements=_requirements(),
            registered_model_name=registered_model_name,
        )


def serving_exports(export: str | Sequence[str] | None) -> tuple[str, ...]:
    """Which serving copies to log with the model: `auto` = ONNX when onnx/onnxruntime are installed.

    An explicit list (`export=[onnx]`) fails loudly later if the packages are missing; `auto`
    only logs which path it took, so a minimal install still trains and registers.
    """
    if export is None:
        return ()
    if isinstance(export, str):
        if export != "auto":
            return (export,)
        from forecast.onnx import onnx_export_available

        if onnx_export_available():
            return ("onnx",)
        log.info("not logging an ONNX copy: pip install forecast[onnx] for the faster serving path")
        return ()
    return tuple(export)
