"""Tracking-server outages: down at start, down but offline, hung, and lost in the middle of a run.

Before: a server down at start cost 257 s of MLflow's retries before training failed, and a server
lost mid-run stalled training for 8 minutes, then lost the model and left the run RUNNING. Now
a server down at start fails in seconds with one line; `logger.offline=true` trains into a local
store that `python -m forecast.tracking.sync` copies over later; a hung server costs one short
timeout; a lost server costs nothing: training finishes, the model and the unlogged metrics are
kept beside the run's outputs, the exit code is 6 and the message gives the upload command.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from app_runner import AppResult, run_isolated
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN
from server_helpers import MlflowServer, free_port
from stores import new_store

import forecast.tracking.store as tracking_store
from forecast.data import synthetic_long
from forecast.errors import TrackingUnavailableError
from forecast.forecaster import Forecaster
from forecast.tracking import http, outage, sync
from forecast.tracking.http import RETRIES_ENV, TIMEOUT_ENV, check_server
from forecast.tracking.outage import ResilientMLFlowLogger

HISTORY = synthetic_long(n_series=4, length=150, seed=5)


@contextmanager
def _hung_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers: a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _train_args(**overrides: object) -> list[str]:
    """TINY_TRAIN on history.parquet with `overrides` replacing its values."""
    keys = {k.replace("__", ".") for k in overrides}
    args = [a for a in TINY_TRAIN if a.split("=", 1)[0] not in keys]
    return [
        *args,
        "data.path=history.parquet",
        *(f"{k.replace('__', '.')}={v}" for k, v in overrides.items()),
    ]


def _train(args: list[str], tracking_uri: str, tmp_path: Path, monkeypatch, capsys) -> AppResult:
    """`python pipelines/train.py ARGS` from tmp_path with MLFLOW_TRACKING_URI=tracking_uri, in process.

    What the run sets for the rest of its process (MLflow's HTTP retries and timeout, the offline
    store's URI, Lightning's seed) is undone afterwards, as the end of a process would (`run_isolated`).
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return run_isolated("train.py", args, tmp_path, monkeypatch, capsys)


def _sync(argv: list[str], capsys) -> tuple[int, str, str]:
    """`python -m forecast.tracking.sync ARGV` in this process (torch is imported already)."""
    capsys.readouterr()
    try:
        code = sync.main(argv)
    finally:
        mlflow.set_tracking_uri(None)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_refused_server_fails_the_check_at_once():
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError) as info:
        check_server(uri)
    assert time.monotonic() - started < 5
    assert f"MLflow tracking server {uri} is unreachable (connection refused" in str(info.value)
    assert "logger.offline=true" in str(info.value)


def test_hung_server_fails_the_check_after_the_short_timeouts(monkeypatch):
    # Scaled down from (5 s, 10 s): two health checks and a second's pause, about 21 s at most.
    monkeypatch.setattr(http, "HEALTH_TIMEOUT", (0.25, 0.25))
    with _hung_server() as uri:
        started = time.monotonic()
        with pytest.raises(TrackingUnavailableError, match="no answer in time; 2 attempts"):
            check_server(uri)
        # MLflow's defaults (120 s timeout, 7 retries) would wait up to 17 minutes here.
        assert time.monotonic() - started < 6


def test_logger_holds_back_while_the_server_hangs_and_sends_it_when_back(tmp_path, monkeypatch):
    """The run exists (created while the server answered); then the server hangs, then returns.

    The logger's run is set by hand and, once "back", its client is swapped for a local store
    holding that run, so the test needs no server that can be frozen and thawed.
    """
    for name in (RETRIES_ENV, TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    store = MlflowClient(new_store(tmp_path / "mlflow.db"))
    experiment = store.create_experiment("outage", artifact_location=(tmp_path / "art").as_uri())
    run_id = store.create_run(experiment).info.run_id
    with _hung_server() as uri:
        logger = ResilientMLFlowLogger(
            experiment_name="outage", tracking_uri=uri, request_timeout=1, request_retries=0
        )
        logger._run_id, logger._experiment_id, logger._initialized = run_id, experiment, True
        started = time.monotonic()
        logger.log_metrics({"val/loss": 0.5}, step=3)
        assert time.monotonic() - started < 4  # one request, one second
        assert logger.lost and logger.failure == "no answer in time"
        assert os.environ[RETRIES_ENV] == "0", "the rest of the process must fail fast too"
        started = time.monotonic()
        logger.log_metrics({"val/loss": 0.4}, step=6)
        logger.log_hyperparams({"lr": 0.1})
        logger.finalize("success")
        assert time.monotonic() - started < 0.5, "while lost, logging must not wait on the server"
    assert [(m["key"], m["step"]) for m in logger.held.metrics] == [("val/loss", 3), ("val/loss", 6)]
    assert logger.held.params == {"lr": "0.1"}

    monkeypatch.setattr(outage, "health_problem", lambda uri, timeout=None: None)  # it answers again
    logger._mlflow_client._client = store
    logger._retry_at = 0.0  # the next log call checks again
    logger.log_metrics({"val/loss": 0.3}, step=9)
    assert not logger.lost
    assert sorted(m.step for m in store.get_metric_history(run_id, "val/loss")) == [3, 6, 9]
    assert store.get_run(run_id).data.params == {"lr": "0.1"}
    assert RETRIES_ENV not in os.environ, "the process's HTTP settings are restored"


def test_upload_of_a_kept_model_with_non_finite_scores_fails_the_run(tmp_path, tiny_frame, capsys):
    """The upload applies the training's rule: scores that are not finite publish nothing."""
    import torch

    from forecast.data import SeriesDataModule
    from forecast.models import ForecastModule
    from forecast.training import build_forecaster

    store_uri = new_store(tmp_path / "mlflow.db")
    store = MlflowClient(store_uri)
    experiment = store.create_experiment("outage", artifact_location=(tmp_path / "art").as_uri())
    run_id = store.create_run(experiment).info.run_id
    logger = ResilientMLFlowLogger(experiment_name="outage", tracking_uri=f"http://127.0.0.1:{free_port()}")
    logger._run_id, logger._experiment_id, logger.failure = run_id, experiment, "connection refused"
    logger._hold_metric("val/loss", 0.5, 3, 1_700_000_000_000)
    logger.held.params["lr"] = "0.1"
    torch.manual_seed(0)
    dm = SeriesDataModule(frame=tiny_frame, freq="h", input_size=24, horizon=6)
    dm.setup()
    net = ForecastModule(input_size=24, horizon=6, hidden_size=8, head_hidden=8, segment_len=4)
    error = outage.keep_unpublished(
        tmp_path / "unpublished",
        logger,
        build_forecaster(net, dm),
        tiny_frame.groupby("unique_id").tail(24).reset_index(drop=True),
        "export: []\n",
        {"model/lr": "0.1"},
        {"val/loss": 0.5, "test/mae": float("nan")},
        {"name": "broken", "alias": "champion"},
    )
    assert error.exit_code == 6
    assert (
        f"run {run_id} lacks 1 metric values from step 3, 1 params, the model, its registration as "
        in str(error)
    )

    code, _, err = _sync([str(tmp_path / "unpublished"), store_uri], capsys)
    assert code == 8, err
    assert err.startswith("error: the kept model's scores are not finite (test/mae)")
    run = store.get_run(run_id)
    assert run.info.status == "FAILED" and "not finite" in run.data.tags["error"]
    assert [m.step for m in store.get_metric_history(run_id, "val/loss")] == [3], (
        "what was held is still sent"
    )
    assert run.data.params == {"lr": "0.1", "model/lr": "0.1"}
    assert not store.search_registered_models(), "nothing is registered"
    assert not (tmp_path / "unpublished" / sync.UPLOADED_FILE).exists()


def test_training_with_the_server_down_fails_within_30_s(tmp_path, monkeypatch, capsys):
    HISTORY.to_parquet(tmp_path / "history.parquet")
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _train(_train_args(), url, tmp_path, monkeypatch, capsys)
    elapsed = time.monotonic() - started
    assert result.code == 6, result.stderr[-3000:]
    assert result.last_line.startswith(f"error: MLflow tracking server {url} is unreachable")
    assert "logger.offline=true" in result.last_line
    assert "Traceback" not in result.stderr
    # In process: the config, the data and the check, not the imports (the same with the server up).
    assert elapsed < 30, f"took {elapsed:.0f} s (the config, the data, the check)"
    assert not list(tmp_path.glob("mlflow*.db")), "no local store is made up when the server is down"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    """One server for the module, killed and restarted by the tests on the same port and store."""
    srv = MlflowServer(tmp_path_factory.mktemp("server"))
    yield srv
    srv.kill()  # nothing on it is needed any more: no polite shutdown to wait for


@pytest.mark.slow
@pytest.mark.server
def test_offline_training_while_the_server_is_down_then_sync(server, tmp_path, monkeypatch, capsys):
    server.kill()
    HISTORY.to_parquet(tmp_path / "history.parquet")
    # The sync hint is printed as the process ends (atexit): here the end is the test's, so the
    # run's exit handlers are kept and called once it is done.
    at_exit: list = []
    keep = SimpleNamespace(
        register=lambda function, *args, **kwargs: at_exit.append((function, args, kwargs))
    )
    monkeypatch.setattr(tracking_store, "atexit", keep)
    monkeypatch.setattr(tracking_store, "_hinted", set())
    args = _train_args(logger__offline="true", register="true", registry__name="offline")
    result = _train([*args, "logger.experiment_name=offline"], server.url, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    for function, args, kwargs in at_exit:
        function(*args, **kwargs)
    stdout = result.stdout + capsys.readouterr().out
    db = tmp_path / "mlflow-offline.db"
    command = f"python -m forecast.tracking.sync {db} {server.url}"
    assert command in stdout, stdout[-2000:]
    assert db.is_file() and not (tmp_path / "mlflow.db").exists()

    server.start()
    code, out, err = _sync(command.split()[3:], capsys)
    assert code == 0, err
    assert "copied 1 run(s); registered offline/1@champion" in out
    client = MlflowClient(server.url)
    version = client.get_model_version_by_alias("offline", "champion")
    run = client.get_run(version.run_id)
    assert (
        run.info.status == "FINISHED"
        and run.info.experiment_id == client.get_experiment_by_name("offline").experiment_id
    )
    assert np.isfinite(run.data.metrics["test/mae"]) and run.data.params["model/hidden_size"] == "16"
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2, (
        "the whole history, not the last value"
    )
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "forecasts.png"}
    assert run.data.tags["model_uri"] == version.source and run.data.tags["registered_version"] == "offline/1"
    mlflow.set_tracking_uri(server.url)
    try:
        assert len(mlflow.pyfunc.load_model("models:/offline@champion").predict(HISTORY)) == 4 * 6
    finally:
        mlflow.set_tracking_uri(None)

    code, out, _ = _sync([str(db), server.url], capsys)
    assert code == 0 and "copied 0 run(s)" in out, "a second sync copies nothing twice"
    assert len(client.search_model_versions("name = 'offline'")) == 1


@pytest.mark.slow
@pytest.mark.server
def test_server_lost_mid_run_keeps_the_model_and_uploads_it_later(server, tmp_path, monkeypatch, capsys):
    if server.proc is None:
        server.start()
    HISTORY.to_parquet(tmp_path / "history.parquet")
    # The server is killed as soon as epoch 0's validation metrics are on it: four epochs and
    # the test are still to come.
    loss: dict = {}
    log_metrics = ResilientMLFlowLogger.log_metrics

    def log_then_lose_the_server(self, metrics, step=None):
        log_metrics(self, metrics, step)
        if "val/loss" in metrics and not loss and not self.lost:
            server.kill()
            loss.update(run_id=self.run_id, at=time.monotonic())

    monkeypatch.setattr(ResilientMLFlowLogger, "log_metrics", log_then_lose_the_server)
    args = _train_args(trainer__max_epochs=5, register="true")
    args += ["registry.name=lost", "logger.experiment_name=lost"]
    result = _train(args, server.url, tmp_path, monkeypatch, capsys)
    assert loss, f"no val/loss was logged before the end:\n{result.stderr[-3000:]}"
    after_loss = time.monotonic() - loss["at"]
    run_id, stderr = loss["run_id"], result.stderr

    assert result.code == 6, stderr[-3000:]
    line = result.last_line
    lost = (
        rf"error: MLflow tracking server {server.url} was lost during training \(connection (refused|dropped)"
    )
    assert re.match(lost, line), line
    assert f"run {run_id} lacks" in line and "the model, its registration as lost@champion" in line
    assert "Traceback" not in stderr
    # MLflow's own retries stalled every metric logged for minutes (8 in all); now the rest of
    # training runs at full speed (seconds here).
    assert after_loss < 150, f"training took {after_loss:.0f} s after the server was lost"
    folder = Path(re.search(r"python -m forecast\.tracking\.sync (\S+)$", line).group(1))
    assert folder.name == "unpublished" and folder.parent.parent == tmp_path / "logs" / "train" / "runs"
    forecaster = Forecaster.load(folder / "model")
    assert len(forecaster.predict(HISTORY)) == 4 * 6
    kept = json.loads((folder / "metrics.json").read_text())
    assert np.isfinite(kept["final"]["test/mae"]) and "test/snaive_mae" in kept["final"]
    assert {"val/loss", "test/mae"} <= {m["key"] for m in kept["held_back"]}

    server.start()  # the same store: the run is there, RUNNING, with epoch 0's metrics
    code, out, err = _sync([str(folder)], capsys)
    assert code == 0, err
    assert "registered lost/1@champion" in out
    client = MlflowClient(server.url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # Epoch 0's value from before the loss, the other four uploaded.
    assert len(client.get_metric_history(run_id, "val/loss")) == 5
    assert run.data.metrics["test/mae"] == pytest.approx(kept["final"]["test/mae"])
    assert client.get_model_version_by_alias("lost", "champion").run_id == run_id
    code, out, _ = _sync([str(folder)], capsys)
    assert code == 0 and "uploaded already" in out
    assert len(client.search_model_versions("name = 'lost'")) == 1, "uploading twice registers once"
