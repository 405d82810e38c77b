"""The daily path end to end: train (Hydra app) -> MLflow run + registry -> batch forecast.

The apps run in process, as their `__main__` does (app_runner); the training is real."""

from __future__ import annotations

import os
from contextlib import redirect_stderr, redirect_stdout

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
from app_runner import AppResult, Capture, run_isolated
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN
from stores import new_store

from forecast.data import synthetic_long


def run_app(script: str, args: list[str], cwd, monkeypatch, capsys) -> AppResult:
    """The pipeline in process from `cwd`; MLflow's URI back on its default afterwards."""
    return run_isolated(script, args, cwd, monkeypatch, capsys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run in a fresh folder with the default (local SQLite) store."""
    work = tmp_path_factory.mktemp("work")
    new_store(work / "mlflow.db")  # the store a run from `work` creates (migrated: a copy)
    frame = synthetic_long(n_series=5, length=160, seed=3)
    frame.to_csv(work / "history.csv", index=False)
    args = [*TINY_TRAIN, "data.path=history.csv", "register=true", "registry.name=e2e"]
    capture = Capture()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(capture.out), redirect_stderr(capture.err):
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(None)
        result = run_app("train.py", args, work, mp, capture)
    assert result.code == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return work, frame, result


@pytest.fixture(autouse=True)
def _default_store(monkeypatch):
    """Each test starts and ends with MLflow on its default: no MLFLOW_TRACKING_URI, no URI set."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    yield
    mlflow.set_tracking_uri(None)


def _client(work) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    return MlflowClient()


def forecast(args: list[str], work, monkeypatch, capsys) -> AppResult:
    """`python pipelines/batch_forecast.py <args>` from `work`, in process (its local store)."""
    return run_app("batch_forecast.py", args, work, monkeypatch, capsys)


@pytest.mark.slow
def test_training_tracks_a_run_in_the_local_store(trained):
    work, _, _ = trained
    assert (work / "mlflow.db").exists() and (work / "mlartifacts").is_dir()
    client = _client(work)
    (run,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id])
    assert run.info.status == "FINISHED"
    for key in (
        "val/mae",
        "val/smape",
        "val/mase",
        "test/mae",
        "test/rmse",
        "test/snaive_mae",
        "train/loss_epoch",
    ):
        assert key in run.data.metrics, key
    assert run.data.params["model/cell"] == "lstm" and run.data.params["data/horizon"] == "6"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "forecasts.png"} <= artifacts


@pytest.mark.slow
def test_model_is_registered_with_the_champion_alias(trained):
    work, _, _ = trained
    client = _client(work)
    version = client.get_model_version_by_alias("e2e", "champion")
    assert str(version.version) == "1"
    local = mlflow.artifacts.download_artifacts("models:/e2e@champion")
    names = {n for _, _, files in os.walk(local) for n in files}
    # export=auto logs the ONNX serving copy when onnx + onnxruntime are installed (dev extra)
    assert {"weights.safetensors", "scaler.parquet", "model.json", "config.yaml", "model.onnx"} <= names
    # intervals: [80, 95] by default; 5 validation windows per step support 80% only (95% needs 19)
    assert "intervals.json" in names


@pytest.mark.slow
def test_batch_forecast_writes_every_series(trained, monkeypatch, capsys):
    work, frame, _ = trained
    args = ["model_uri=models:/e2e@champion", "input=history.csv", "output=out/forecast.parquet"]
    result = forecast(args, work, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    out = pd.read_parquet(work / "out" / "forecast.parquet")
    assert list(out.columns) == ["unique_id", "ds", "y_hat", "y_hat_lo_80", "y_hat_hi_80"]
    assert len(out) == 5 * 6 and out["y_hat"].notna().all()
    assert (out["y_hat_lo_80"] < out["y_hat"]).all() and (out["y_hat"] < out["y_hat_hi_80"]).all()
    last = pd.to_datetime(frame["ds"]).max()
    assert out["ds"].min() == last + pd.Timedelta("1h") and out["ds"].max() == last + pd.Timedelta("6h")
    meta = pq.read_schema(work / "out" / "forecast.parquet").metadata
    assert meta[b"forecast.name"] == b"e2e" and meta[b"forecast.version"] == b"1"
    assert "; onnx)" in result.stdout + result.stderr  # runtime=auto took the logged ONNX copy


@pytest.mark.slow
def test_failed_batch_forecast_keeps_the_earlier_output(trained, monkeypatch, capsys):
    work, frame, _ = trained
    target = work / "keep" / "forecast.parquet"
    args = ["model_uri=models:/e2e@champion", "input=history.csv", f"output={target}"]
    result = forecast(args, work, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    before = target.read_bytes()
    bad = frame.copy()
    bad.loc[3, "y"] = float("nan")
    bad.to_csv(work / "bad.csv", index=False)
    args = ["model_uri=models:/e2e@champion", "input=bad.csv", f"output={target}"]
    result = forecast(args, work, monkeypatch, capsys)
    assert result.code != 0
    assert "missing value" in result.stderr + result.stdout
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["forecast.parquet"]


def test_bad_data_fails_training_with_a_clear_message(tmp_path, monkeypatch, capsys):
    frame = synthetic_long(n_series=2, length=160, seed=0)
    frame = pd.concat([frame, frame.iloc[[5]]])
    frame.to_csv(tmp_path / "dup.csv", index=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store(tmp_path / "m.db"))
    result = run_app("train.py", [*TINY_TRAIN, "data.path=dup.csv"], tmp_path, monkeypatch, capsys)
    assert result.code != 0
    assert "share a (unique_id, ds) pair" in result.stderr
