"""The store a job reads is the one it names: a registry or run URI against a local store that
does not exist is refused before MLflow creates it empty, and every "not found" names the store."""

from __future__ import annotations

import mlflow
import pytest
from app_runner import run_inprocess
from model_helpers import tiny_forecaster
from pipeline_helpers import register_forecaster

from forecast.data import synthetic_long
from forecast.errors import ModelNotFoundError
from forecast.tracking.resolve import resolve_model
from forecast.tracking.store import require_store


@pytest.mark.parametrize("uri", ["models:/m@champion", "models:/m/3", "runs:/abc/model"])
def test_a_missing_local_store_is_refused_and_not_created(uri, tmp_path, monkeypatch):
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        with pytest.raises(ModelNotFoundError) as err:
            require_store(uri)
    finally:
        mlflow.set_tracking_uri(None)
    assert str(err.value) == (
        f"model not found: {uri}: there is no MLflow store at {db}; run the job from the folder the "
        "model was trained in, or set MLFLOW_TRACKING_URI to its store"
    )
    assert not db.exists()


def test_a_path_needs_no_store(tmp_path, monkeypatch):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        require_store(str(tmp_path / "model"))  # a local model folder: nothing to look up
    finally:
        mlflow.set_tracking_uri(None)


def test_not_found_names_the_store_it_looked_in(isolated_mlflow, tmp_path):
    history = synthetic_long(n_series=2, length=60, seed=1)
    register_forecaster(tiny_forecaster(history), history, "store-test", tmp_path, 24)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("models:/store-test@nope")
    assert str(err.value).startswith("model not found: models:/store-test@nope (")
    assert str(err.value).endswith(f") in the MLflow store {isolated_mlflow}")


def test_a_batch_job_from_another_folder_exits_5_and_creates_no_store(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    synthetic_long(n_series=2, length=60, seed=1).to_parquet(elsewhere / "history.parquet")
    args = ["model_uri=models:/forecast-lstm@champion", "input=history.parquet", "output=out.parquet"]
    try:
        result = run_inprocess("batch_forecast.py", args, elsewhere, monkeypatch, capsys)
    finally:
        mlflow.set_tracking_uri(None)
    assert result.code == ModelNotFoundError.exit_code == 5
    assert result.last_line == (
        "error: model not found: models:/forecast-lstm@champion: there is no MLflow store at "
        f"{elsewhere / 'mlflow.db'}; run the job from the folder the model was trained in, or set "
        "MLFLOW_TRACKING_URI to its store"
    )
    assert not (elsewhere / "mlflow.db").exists() and not (elsewhere / "out.parquet").exists()
