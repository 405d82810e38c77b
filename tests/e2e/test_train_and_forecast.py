"""The daily path end to end: train (Hydra app) -> MLflow run + registry -> batch forecast."""

from __future__ import annotations

import os

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN, run_pipeline

from forecast.data import synthetic_long

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run in a fresh folder with the default (local SQLite) store."""
    work = tmp_path_factory.mktemp("work")
    frame = synthetic_long(n_series=5, length=160, seed=3)
    frame.to_csv(work / "history.csv", index=False)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = run_pipeline(
        "train.py", [*TINY_TRAIN, "data.path=history.csv", "register=true", "registry.name=e2e"], work, env
    )
    return work, env, frame, proc


def _client(work) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    return MlflowClient()


def test_training_tracks_a_run_in_the_local_store(trained):
    work, _, _, _ = trained
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


def test_model_is_registered_with_the_champion_alias(trained):
    work, _, _, _ = trained
    client = _client(work)
    version = client.get_model_version_by_alias("e2e", "champion")
    assert str(version.version) == "1"
    local = mlflow.artifacts.download_artifacts("models:/e2e@champion")
    names = {n for _, _, files in os.walk(local) for n in files}
    # export=auto logs the ONNX serving copy when onnx + onnxruntime are installed (dev extra)
    assert {"weights.safetensors", "scaler.parquet", "model.json", "config.yaml", "model.onnx"} <= names
    # intervals: [80, 95] by default; 5 validation windows per step support 80% only (95% needs 19)
    assert "intervals.json" in names


def test_batch_forecast_writes_every_series(trained):
    work, env, frame, _ = trained
    proc = run_pipeline(
        "batch_forecast.py",
        ["model_uri=models:/e2e@champion", "input=history.csv", "output=out/forecast.parquet"],
        work,
        env,
    )
    out = pd.read_parquet(work / "out" / "forecast.parquet")
    assert list(out.columns) == ["unique_id", "ds", "y_hat", "y_hat_lo_80", "y_hat_hi_80"]
    assert len(out) == 5 * 6 and out["y_hat"].notna().all()
    assert (out["y_hat_lo_80"] < out["y_hat"]).all() and (out["y_hat"] < out["y_hat_hi_80"]).all()
    last = pd.to_datetime(frame["ds"]).max()
    assert out["ds"].min() == last + pd.Timedelta("1h") and out["ds"].max() == last + pd.Timedelta("6h")
    meta = pq.read_schema(work / "out" / "forecast.parquet").metadata
    assert meta[b"forecast.name"] == b"e2e" and meta[b"forecast.version"] == b"1"
    assert "; onnx)" in proc.stdout + proc.stderr  # runtime=auto took the logged ONNX copy


def test_failed_batch_forecast_keeps_the_earlier_output(trained):
    work, env, frame, _ = trained
    target = work / "keep" / "forecast.parquet"
    run_pipeline(
        "batch_forecast.py",
        ["model_uri=models:/e2e@champion", "input=history.csv", f"output={target}"],
        work,
        env,
    )
    before = target.read_bytes()
    bad = frame.copy()
    bad.loc[3, "y"] = float("nan")
    bad.to_csv(work / "bad.csv", index=False)
    proc = run_pipeline(
        "batch_forecast.py",
        ["model_uri=models:/e2e@champion", "input=bad.csv", f"output={target}"],
        work,
        env,
        check=False,
    )
    assert proc.returncode != 0
    assert "missing value" in proc.stderr + proc.stdout
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["forecast.parquet"]


def test_bad_data_fails_training_with_a_clear_message(tmp_path):
    frame = synthetic_long(n_series=2, length=160, seed=0)
    frame = pd.concat([frame, frame.iloc[[5]]])
    frame.to_csv(tmp_path / "dup.csv", index=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    proc = run_pipeline("train.py", [*TINY_TRAIN, "data.path=dup.csv"], tmp_path, env, check=False)
    assert proc.returncode != 0
    assert "share a (unique_id, ds) pair" in proc.stderr
