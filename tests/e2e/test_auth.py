"""The pipelines against an MLflow server with authentication (its basic-auth app).

Credentials come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as MLflow's client
reads them; the user is created through the server's admin API, as an operator would
(docs/tracking.md). Wrong credentials end in one line naming the variables, not a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pandas as pd
import pytest
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN, run_pipeline
from server_helpers import ADMIN_PASSWORD, MlflowServer

from forecast.data import synthetic_long
from forecast.errors import TrackingUnavailableError
from forecast.tracking.outage import TrackingAuthError, check_server

pytestmark = [pytest.mark.slow, pytest.mark.server]
pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth] (pip install 'mlflow[auth]')")

USER, PASSWORD = "forecaster", "forecaster-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A basic-auth server with one ordinary user (not an admin) besides its admin."""
    srv = MlflowServer(tmp_path_factory.mktemp("auth-server"), auth=True)
    srv.start()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
    try:
        from mlflow.server import get_app_client

        get_app_client("basic-auth", tracking_uri=srv.url).create_user(USER, PASSWORD)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    yield srv
    srv.stop()


def _env(base: dict, url: str, password: str) -> dict:
    return {
        **base,
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": USER,
        "MLFLOW_TRACKING_PASSWORD": password,
    }


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_train_register_and_forecast_with_credentials(server, tmp_path, subprocess_env, monkeypatch):
    synthetic_long(n_series=4, length=150, seed=5).to_parquet(tmp_path / "history.parquet")
    env = _env(subprocess_env, server.url, PASSWORD)
    train = [*TINY_TRAIN, "data.path=history.parquet", "register=true", "registry.name=secured"]
    run_pipeline("train.py", train, tmp_path, env)
    forecast = ["model_uri=models:/secured@champion", "input=history.parquet", "output=forecast.parquet"]
    run_pipeline("batch_forecast.py", forecast, tmp_path, env)

    assert len(pd.read_parquet(tmp_path / "forecast.parquet")) == 4 * 6
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(server.url)
    version = client.get_model_version_by_alias("secured", "champion")
    assert "test/mae" in client.get_run(version.run_id).data.metrics
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(Exception, match="401"):  # the server does refuse anonymous requests
        client.get_model_version_by_alias("secured", "champion")


def test_no_credentials_are_named_in_the_check(server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(TrackingAuthError) as info:
        check_server(server.url)
    assert isinstance(info.value, TrackingUnavailableError) and info.value.exit_code == 6
    assert str(info.value) == (
        f"MLflow tracking server {server.url} requires a login: set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD"
    )


def test_wrong_password_fails_training_with_one_line(server, tmp_path, subprocess_env):
    synthetic_long(n_series=4, length=150, seed=5).to_parquet(tmp_path / "history.parquet")
    env = _env(subprocess_env, server.url, "not-the-password")
    proc = run_pipeline("train.py", [*TINY_TRAIN, "data.path=history.parquet"], tmp_path, env, check=False)
    assert proc.returncode == 6, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert _last_line(proc.stderr) == (
        f"error: MLflow tracking server {server.url} rejected the credentials of user '{USER}' (HTTP 401): "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )
    assert not list(tmp_path.glob("mlflow*.db"))


def test_wrong_password_fails_the_batch_forecast_with_one_line(server, tmp_path, subprocess_env):
    synthetic_long(n_series=4, length=150, seed=5).to_parquet(tmp_path / "history.parquet")
    env = _env(subprocess_env, server.url, "not-the-password")
    args = ["model_uri=models:/secured@champion", "input=history.parquet", "output=forecast.parquet"]
    proc = run_pipeline("batch_forecast.py", args, tmp_path, env, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 6
    line = _last_line(proc.stderr)
    assert line.startswith("error: ") and "MLFLOW_TRACKING_PASSWORD" in line and server.url in line
    assert not (tmp_path / "forecast.parquet").exists()
