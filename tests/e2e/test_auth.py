"""The pipelines against an MLflow server with authentication (its basic-auth app).

Credentials come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as MLflow's client
reads them; the user is created through the server's admin API, as an operator would
(docs/tracking.md). Wrong credentials end in one line naming the variables, not a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from app_runner import AppResult, run_isolated
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN
from server_helpers import ADMIN_PASSWORD, MlflowServer

from forecast.data import synthetic_long
from forecast.errors import TrackingUnavailableError
from forecast.tracking.http import TrackingAuthError, check_server

pytestmark = [pytest.mark.slow, pytest.mark.server]
pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth] (pip install 'mlflow[auth]')")

USER, PASSWORD = "forecaster", "forecaster-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    """A basic-auth server with one ordinary user (not an admin) besides its admin."""
    srv = MlflowServer(tmp_path_factory.mktemp("auth-server"), auth=True)
    srv.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        mp.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        from mlflow.server import get_app_client

        get_app_client("basic-auth", tracking_uri=srv.url).create_user(USER, PASSWORD)
    yield srv
    srv.kill()  # nothing on it is needed any more: no polite shutdown to wait for


def _run(
    script: str, args: list[str], url: str, password: str, tmp_path: Path, monkeypatch, capsys
) -> AppResult:
    """`python pipelines/<script> ARGS` in process, as USER with `password` on the server at `url`.

    What the run sets for the rest of its process (MLflow's HTTP retries and timeout, Lightning's
    seed) is undone afterwards, as the end of a process would (`run_isolated`).
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    return run_isolated(script, args, tmp_path, monkeypatch, capsys)


def test_train_register_and_forecast_with_credentials(server, tmp_path, monkeypatch, capsys):
    synthetic_long(n_series=4, length=150, seed=5).to_parquet(tmp_path / "history.parquet")
    train = [*TINY_TRAIN, "data.path=history.parquet", "register=true", "registry.name=secured"]
    result = _run("train.py", train, server.url, PASSWORD, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-5000:]
    forecast = ["model_uri=models:/secured@champion", "input=history.parquet", "output=forecast.parquet"]
    result = _run("batch_forecast.py", forecast, server.url, PASSWORD, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-5000:]

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


def test_wrong_password_fails_training_with_one_line(server, tmp_path, monkeypatch, capsys):
    synthetic_long(n_series=4, length=150, seed=5).to_parquet(tmp_path / "history.parquet")
    args = [*TINY_TRAIN, "data.path=history.parquet"]
    result = _run("train.py", args, server.url, "not-the-password", tmp_path, monkeypatch, capsys)
    assert result.code == 6, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.last_line == (
        f"error: MLflow tracking server {server.url} rejected the credentials of user '{USER}' (HTTP 401): "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )
    assert not list(tmp_path.glob("mlflow*.db"))


def test_wrong_password_fails_the_batch_forecast_with_one_line(server, tmp_path, monkeypatch, capsys):
    synthetic_long(n_series=4, length=150, seed=5).to_parquet(tmp_path / "history.parquet")
    args = ["model_uri=models:/secured@champion", "input=history.parquet", "output=forecast.parquet"]
    result = _run("batch_forecast.py", args, server.url, "not-the-password", tmp_path, monkeypatch, capsys)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.code == 6
    line = result.last_line
    assert line.startswith("error: ") and "MLFLOW_TRACKING_PASSWORD" in line and server.url in line
    assert not (tmp_path / "forecast.parquet").exists()
