"""Covariates end to end through the Hydra apps: train on a table with a future-known, a past-only
and a static categorical column and calendar features, register, batch-forecast from future rows
in the input and from a future table. The apps run in process, as their `__main__` does."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from app_runner import AppResult, Capture, run_isolated
from covariate_helpers import covariate_frame, split, with_future_rows
from pipeline_helpers import TINY_TRAIN
from stores import new_store

pytestmark = pytest.mark.slow

H = 6  # TINY_TRAIN's horizon
COVARIATES = [
    "data.futr_exog=[price]",
    "data.hist_exog=[load]",
    "data.static=[store]",
    "data.categorical=[store]",
    "data.calendar=[hour,dayofweek]",
]


def run_app(script: str, args: list[str], work: Path, monkeypatch, capsys) -> AppResult:
    """The pipeline in process from `work`, with its default store (`work/mlflow.db`)."""
    return run_isolated(script, args, work, monkeypatch, capsys, default_store=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The covariate model, trained and registered by the train app in a fresh folder."""
    work = tmp_path_factory.mktemp("work")
    new_store(work / "mlflow.db")  # the store a run from `work` creates (migrated: a copy)
    frame = covariate_frame(n_series=5, length=160, seed=4)
    columns = ["unique_id", "ds", "y", "price", "load", "store"]
    frame = frame[columns]
    history, future = split(frame, 150, horizon=H)
    history.to_csv(work / "train.csv", index=False)
    args = [*TINY_TRAIN, "data.path=train.csv", *COVARIATES, "register=true", "registry.name=cov"]
    capture = Capture()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(capture.out), redirect_stderr(capture.err):
        result = run_app("train.py", args, work, mp, capture)
    assert result.code == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return work, history, future


@pytest.fixture(autouse=True)
def _default_store():
    """Each test ends with MLflow's tracking URI back on its default."""
    yield
    mlflow.set_tracking_uri(None)


def _registered(work):
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    from forecast.tracking.resolve import load_registered

    forecaster, _ = load_registered("models:/cov@champion", runtime="torch")
    return forecaster


def test_the_registered_model_records_its_covariates(trained):
    work, _, _ = trained
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    local = mlflow.artifacts.download_artifacts("models:/cov@champion")
    settings = json.loads(next(Path(local).rglob("model.json")).read_text())
    enc = settings["covariates"]
    assert enc["futr_num"] == ["price"] and enc["hist_num"] == ["load"] and enc["static_cat"] == ["store"]
    assert enc["calendar"] == ["hour", "dayofweek"]
    meta = mlflow.models.Model.load(local).metadata
    assert meta["input_columns"]["futr"] == ["price"] and meta["future_rows"] == H


def test_batch_forecast_from_future_rows_in_the_input(trained, monkeypatch, capsys):
    work, history, future = trained
    with_future_rows(history, future).to_parquet(work / "rows.parquet", index=False)
    args = ["model_uri=models:/cov@champion", "input=rows.parquet", "output=out/rows.parquet", "as_of=null"]
    result = run_app("batch_forecast.py", args, work, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    out = pd.read_parquet(work / "out" / "rows.parquet")
    assert list(out.columns)[:3] == ["unique_id", "ds", "y_hat"] and len(out) == 5 * H
    assert (out["ds"].to_numpy() == future["ds"].to_numpy()).all()
    expected = _registered(work).predict(history, future=future)
    assert list(out.columns) == list(expected.columns)  # intervals too, when calibrated
    np.testing.assert_allclose(out.iloc[:, 2:], expected.iloc[:, 2:], rtol=1e-5, atol=1e-5)


def test_batch_forecast_with_a_future_table(trained, monkeypatch, capsys):
    work, history, future = trained
    history.to_csv(work / "history.csv", index=False)
    future[["unique_id", "ds", "price"]].to_csv(work / "future.csv", index=False)
    args = ["model_uri=models:/cov@champion", "input=history.csv", "future=future.csv", "as_of=null"]
    result = run_app("batch_forecast.py", [*args, "output=out/table.parquet"], work, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    out = pd.read_parquet(work / "out" / "table.parquet")
    expected = _registered(work).predict(history, future=future)
    assert list(out.columns) == list(expected.columns)
    np.testing.assert_allclose(out.iloc[:, 2:], expected.iloc[:, 2:], rtol=1e-5, atol=1e-5)
    # a series without its future rows: an error naming it, nothing written
    future[future.unique_id != "s3"].to_csv(work / "short.csv", index=False)
    args = ["model_uri=models:/cov@champion", "input=history.csv", "future=short.csv", "as_of=null"]
    result = run_app("batch_forecast.py", [*args, "output=out/short.parquet"], work, monkeypatch, capsys)
    assert result.code != 0 and "'s3' at" in result.stderr
    assert not (work / "out" / "short.parquet").exists()


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_mlflow_models_predict_takes_one_long_table(trained, kind, subprocess_env, monkeypatch):
    """MLflow's own client: one request with the future rows (target empty) carries everything."""
    work, history, future = trained
    table = with_future_rows(history, future).assign(ds=lambda t: t.ds.astype(str))
    source = work / f"request.{kind}"
    if kind == "csv":
        table.to_csv(source, index=False)
    else:
        records = table.astype(object).where(table.notna(), None)
        source.write_text(json.dumps({"dataframe_split": records.to_dict(orient="split", index=False)}))
    out = work / f"predict-{kind}.json"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    if kind == "csv":  # the console script, as a user runs it
        bin_dir = Path(sys.executable).parent
        proc = subprocess.run(
            [str(bin_dir / "mlflow"), "models", "predict", "-m", "models:/cov@champion", "-i", str(source),
             "-t", kind, "-o", str(out), "--env-manager", "local"],
            env={**subprocess_env, "MLFLOW_TRACKING_URI": uri},
            cwd=work, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:  # what that command calls (`mlflow models predict` is this function behind click), in process
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.models.predict(
            "models:/cov@champion",
            input_path=str(source),
            content_type=kind,
            output_path=str(out),
            env_manager="local",
        )
    got = pd.DataFrame(json.loads(out.read_text())["predictions"])
    expected = _registered(work).predict(history, future=future)
    assert (pd.to_datetime(got["ds"]).to_numpy() == expected["ds"].to_numpy()).all()
    np.testing.assert_allclose(got["y_hat"], expected["y_hat"], rtol=1e-5, atol=1e-5)
