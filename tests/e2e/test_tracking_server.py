"""MLFLOW_TRACKING_URI switches every pipeline to a real tracking server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from app_runner import AppResult, run_isolated
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN

from forecast.data import synthetic_long

pytestmark = [pytest.mark.slow, pytest.mark.server]

NAME = "served-through-a-server"  # the session's server is shared: its own experiment and model


def _run(script: str, args: list[str], url: str, tmp_path: Path, monkeypatch, capsys) -> AppResult:
    """`python pipelines/<script> ARGS` in process with MLFLOW_TRACKING_URI=url.

    What the run sets for the rest of its process (MLflow's HTTP retries and timeout, Lightning's
    seed) is undone afterwards, as the end of a process would (`run_isolated`).
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    return run_isolated(script, args, tmp_path, monkeypatch, capsys)


def test_train_register_and_forecast_through_a_server(mlflow_server, tmp_path, monkeypatch, capsys):
    url, home = mlflow_server.url, mlflow_server.home
    synthetic_long(n_series=4, length=150, seed=5).to_parquet(tmp_path / "history.parquet")
    train = [*TINY_TRAIN, "data.path=history.parquet", "register=true", f"registry.name={NAME}"]
    result = _run("train.py", [*train, f"logger.experiment_name={NAME}"], url, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-5000:]
    args = [f"model_uri=models:/{NAME}@champion", "input=history.parquet", "output=forecast.parquet"]
    result = _run("batch_forecast.py", args, url, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-5000:]

    assert not (tmp_path / "mlflow.db").exists(), "the local store must not be used when a server is set"
    assert len(pd.read_parquet(tmp_path / "forecast.parquet")) == 4 * 6
    client = MlflowClient(url)
    version = client.get_model_version_by_alias(NAME, "champion")
    run = client.get_run(version.run_id)
    assert "test/mae" in run.data.metrics
    # This experiment's artifacts, not another test's on the same server.
    artifacts = home / "artifacts" / run.info.experiment_id
    assert any(artifacts.rglob("weights.safetensors")), "artifacts went to the server's store"
