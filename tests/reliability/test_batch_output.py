"""The batch forecast's output side breaks on purpose: stray temporary files of dead writers,
outputs it cannot write, NaN/inf forecasts and a model registry that is down or lacks the model.
Each case ends in its documented error (forecast.errors) and leaves the previous output intact."""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from app_runner import AppResult, run_inprocess
from model_helpers import tiny_forecaster
from pipeline_helpers import register_forecaster, run_pipeline
from safetensors.torch import load_file, save_file
from stores import new_store

import forecast.data.staging as staging
from forecast.batch import run_batch_forecast
from forecast.data import synthetic_long, write_parquet_atomic
from forecast.data.parquet_writer import AtomicParquetWriter
from forecast.data.staging import prepare_output, staging_path, sweep_stale
from forecast.engines.local import forecast_file
from forecast.errors import ModelNotFoundError, NonFiniteError, OutputError, TrackingUnavailableError
from forecast.tracking import resolve as batch  # the model loading the batch job uses
from forecast.tracking.resolve import LoadRetry, resolve_model

L, H = 24, 6
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def history() -> pd.DataFrame:
    """7 hourly series of 60 steps, s0..s6."""
    return synthetic_long(n_series=7, length=60, seed=3)


@pytest.fixture
def source(history, tmp_path) -> Path:
    path = tmp_path / "history.parquet"
    history.to_parquet(path, index=False)
    return path


def beside(target: Path) -> list[str]:
    """Hidden entries beside `target` that belong to it (temporary files and folders)."""
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def dead_pid() -> int:
    """The id of a process that has just ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def token_name(target: Path, host: str, pid: int, start: int, suffix: str = ".tmp") -> Path:
    return target.parent / f".{target.name}.{host}.{pid}.{start}.0badf00d{suffix}"


# -- temporary names and the sweep -------------------------------------------------------------
def test_temporary_names_carry_host_pid_and_start_time(tmp_path):
    target = tmp_path / "out.parquet"
    first, second = staging_path(target), staging_path(target)
    assert first != second and first.parent == tmp_path
    host, pid, start = staging._writer(target, first)
    assert (pid, host) == (os.getpid(), staging._host())
    assert start == staging._start_time(os.getpid()) and start > 0
    assert staging._writer(target, tmp_path / "out.parquet") is None
    assert staging._writer(target, tmp_path / ".out.parquet.x1y2z3.tmp") is None  # mkstemp style
    assert staging._writer(tmp_path / "other.parquet", first) is None


def test_sweep_removes_dead_writers_only(tmp_path):
    target = tmp_path / "out.parquet"
    target.write_bytes(b"good output")
    host = staging._host()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live_start = staging._start_time(sleeper.pid)
        dead = token_name(target, host, dead_pid(), 12345)
        dead_folder = token_name(target, host, dead_pid(), 1, ".old")  # target exists: removed
        recycled = token_name(target, host, sleeper.pid, live_start + 1)  # same pid, other process
        live = token_name(target, host, sleeper.pid, live_start)
        mine = staging_path(target)
        foreign = token_name(target, "another-host-1", dead_pid(), 7)
        unrelated = [tmp_path / ".out.parquet.x1y2z3.tmp", token_name(tmp_path / "o2.parquet", host, 1, 1)]
        for path in [dead, recycled, live, mine, foreign, *unrelated]:
            path.write_bytes(b"partial")
        dead_folder.mkdir()
        (dead_folder / "part-0.parquet").write_bytes(b"old")
        swept = sweep_stale(target)
        assert sorted(swept) == sorted([dead, dead_folder, recycled])
        assert all(not p.exists() for p in swept)
        assert all(p.exists() for p in [live, mine, foreign, *unrelated])
        assert target.read_bytes() == b"good output"
    finally:
        sleeper.kill()
        sleeper.wait()
    sweep_stale(target)
    assert not live.exists()  # its writer is gone now


def test_a_dead_swap_puts_the_previous_folder_back(tmp_path):
    # Killed between the two renames of a folder swap: the output is missing, `.old` holds it.
    target = tmp_path / "out"
    old = token_name(target, staging._host(), dead_pid(), 1, ".old")
    old.mkdir()
    (old / "part-0.parquet").write_bytes(b"previous")
    half = token_name(target, staging._host(), dead_pid(), 1)
    half.mkdir()
    sweep_stale(target)
    assert (target / "part-0.parquet").read_bytes() == b"previous"
    assert beside(target) == []


def test_writers_sweep_leftovers_and_keep_a_live_writers_file(history, tmp_path):
    target = tmp_path / "out.parquet"
    stale = token_name(target, staging._host(), dead_pid(), 99)
    stale.write_bytes(b"killed half-way")
    with AtomicParquetWriter(target) as first:  # a concurrent writer in this (live) process
        assert not stale.exists()
        first.write(history)
        write_parquet_atomic(history.head(3), target)
        assert first._tmp.exists()
        first.commit()
    assert len(pd.read_parquet(target)) == len(history)
    assert beside(target) == []


# -- outputs that cannot be written ------------------------------------------------------------
def test_output_under_a_file_is_an_output_error(history, source, tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    target = tmp_path / "afile" / "sub" / "out.parquet"
    f = tiny_forecaster(history)
    with pytest.raises(
        OutputError, match=r"cannot write the output .*afile/sub/out\.parquet: .*afile is a file"
    ):
        forecast_file(f, source, target, progress="none")
    with pytest.raises(OutputError, match="afile is a file"):
        write_parquet_atomic(history, target)
    with pytest.raises(OutputError, match="afile is a file"):
        prepare_output(target, folder=True)
    assert OutputError.exit_code == 7


@pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders: permissions do not apply")
def test_read_only_folder_is_an_output_error(history, source, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "out.parquet").write_bytes(b"previous")
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"cannot write the output .*ro/out\.parquet: no permission"):
            forecast_file(tiny_forecaster(history), source, folder / "out.parquet", progress="none")
        with pytest.raises(OutputError, match="no permission"):
            prepare_output(folder / "out.parquet")
    finally:
        folder.chmod(0o755)
    assert (folder / "out.parquet").read_bytes() == b"previous"


def test_os_errors_become_one_line_naming_the_output(tmp_path):
    # What the read-only and disk-full cases say (as root the first cannot be provoked).
    target = tmp_path / "out" / "f.parquet"
    denied = staging.output_error(target, PermissionError(errno.EACCES, "Permission denied"))
    assert (
        str(denied)
        == f"cannot write the output {target}: no permission to write in {target.parent} (Permission denied)"
    )
    full = staging.output_error(target, OSError(errno.ENOSPC, "No space left on device"))
    assert str(full) == f"cannot write the output {target}: no space left on the device of {target.parent}"
    assert isinstance(full, OutputError) and full.exit_code == 7


def test_output_of_the_other_kind_is_an_output_error(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(OutputError, match="it is a folder, and this engine writes one Parquet file"):
        prepare_output(tmp_path / "folder")
    with pytest.raises(OutputError, match="it is a file, and this engine writes a folder"):
        prepare_output(tmp_path / "file", folder=True)
    # Checked before the model is looked up (no store, no model: the output error comes first).
    with pytest.raises(OutputError):
        run_batch_forecast("models:/none@champion", "in.parquet", str(tmp_path / "folder"), str(tmp_path))


# -- non-finite forecasts ----------------------------------------------------------------------
def test_infinite_weights_are_refused_and_nothing_is_written(history, source, tmp_path):
    f = tiny_forecaster(history)
    with torch.no_grad():
        list(f.net.parameters())[-1].fill_(float("inf"))
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous output")
    with pytest.raises(
        NonFiniteError, match=r"for 7 of 7 series \(s0, s1, s2, s3, s4, \.\.\.\); nothing was"
    ):
        forecast_file(f, source, target, chunk_rows=1000, batch_size=7, progress="none")
    # Streamed in small batches, the run stops at the first one and says which series it held.
    with pytest.raises(
        NonFiniteError, match=r"^stopped at series 1 to 2 of the input: .* 2 of 2 series \(s0, s1\)"
    ):
        forecast_file(f, source, target, chunk_rows=60, batch_size=2, progress="none")
    assert target.read_bytes() == b"previous output"
    assert beside(target) == []
    with pytest.raises(NonFiniteError, match="for 7 of 7 series"):
        f.predict(history)


def test_nan_for_one_series_names_it(history, source, tmp_path):
    # A per-series weight gone NaN: only s4 (series code 5) breaks; it is named and counted.
    f = tiny_forecaster(history, cycle_len=24, cycle_per_series=True, n_series=7)
    with torch.no_grad():
        f.net.cycle.series.weight[5].fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"for 1 of \d+ series \(s4\); nothing was written"):
        forecast_file(f, source, tmp_path / "out.parquet", chunk_rows=60, batch_size=7, progress="none")
    assert not (tmp_path / "out.parquet").exists() and beside(tmp_path / "out.parquet") == []


# -- model loading: retries and missing models -------------------------------------------------
def _refused() -> Exception:
    """What MLflow raises when nothing listens: an MlflowException over a ConnectionRefusedError."""
    from mlflow.exceptions import MlflowException

    err = MlflowException("API request to http://tracking:5000/api/2.0/mlflow/... failed with exception ...")
    err.__context__ = ConnectionRefusedError(111, "Connection refused")  # no `from` in MLflow
    return err


def test_unreachable_server_is_retried_with_backoff_then_fails(monkeypatch, caplog):
    calls, sleeps, seen_env = [], [], []

    def down(uri):
        calls.append(uri)
        seen_env.append(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
        raise _refused()

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setattr(batch, "_resolve_once", down)
    monkeypatch.setattr(batch.time, "sleep", sleeps.append)
    monkeypatch.setattr(batch.mlflow, "get_tracking_uri", lambda: "http://user:secret@tracking:5000")
    with caplog.at_level(logging.WARNING, logger="forecast.batch"):
        with pytest.raises(TrackingUnavailableError) as err:
            resolve_model("models:/m@champion", LoadRetry(retries=3, backoff_s=0.5))
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]
    assert seen_env == ["0"] * 4 and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    text = str(err.value)
    assert "http://tracking:5000" in text and "secret" not in text
    assert "models:/m@champion" in text and "connection refused, 4 attempt(s)" in text
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 3


def test_a_model_that_is_missing_is_not_retried(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    calls = []

    def missing(uri):
        calls.append(uri)
        raise MlflowException("Registered model alias nope not found.", error_code=INVALID_PARAMETER_VALUE)

    monkeypatch.setattr(batch, "_resolve_once", missing)
    monkeypatch.setattr(batch.mlflow, "get_tracking_uri", lambda: "http://tracking:5000")
    named = r"model not found: models:/m@nope \(Registered model alias .*\) in the MLflow store "
    with pytest.raises(ModelNotFoundError, match=named + r"http://tracking:5000$"):
        resolve_model("models:/m@nope", LoadRetry(retries=5, backoff_s=10))
    assert len(calls) == 1


def test_refused_credentials_are_not_retried(monkeypatch):
    from mlflow.exceptions import MlflowException

    calls = []

    def refused(uri):
        calls.append(uri)
        raise MlflowException(
            "API request to endpoint /api/2.0/mlflow/registered-models/alias failed with error code "
            "401 != 200. Response body: 'You are not authenticated.'"
        )

    monkeypatch.setattr(batch, "_resolve_once", refused)
    monkeypatch.setattr(batch.mlflow, "get_tracking_uri", lambda: "http://tracking:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    with pytest.raises(TrackingUnavailableError) as err:
        resolve_model("models:/m@champion", LoadRetry(retries=3, backoff_s=10))
    assert str(err.value) == (
        "MLflow tracking server http://tracking:5000 rejected the credentials of user 'ana' (HTTP 401): "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )
    assert len(calls) == 1


@pytest.mark.parametrize("retries, backoff, timeout", [(-1, 2, 10), (3, -1, 10), (3, 2, 0), ("3", 2, 10)])
def test_bad_retry_settings_are_config_errors(retries, backoff, timeout):
    from forecast.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a number"):
        LoadRetry(retries=retries, backoff_s=backoff, timeout_s=timeout)


@dataclass
class Store:
    """A local MLflow store with three registered models: good, NaN and inf weights."""

    uri: str
    root: Path

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "MLFLOW_TRACKING_URI": self.uri}


def _set_weights(weights: Path, value: float) -> None:
    """Set the last weight tensor of a saved model to `value` (what a diverged training leaves)."""
    state = load_file(str(weights))
    last = list(state)[-1]
    state[last] = torch.full_like(state[last], value)
    save_file(state, str(weights))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Registered once for the module: registering costs seconds per model."""
    import mlflow

    root = tmp_path_factory.mktemp("store")
    uri = new_store(root / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        try:
            mlflow.set_tracking_uri(uri)
            history = synthetic_long(n_series=7, length=60, seed=3)
            for name, value in [("rel-test", None), ("rel-nan", float("nan")), ("rel-inf", float("inf"))]:
                before = set(root.rglob("weights.safetensors"))
                register_forecaster(tiny_forecaster(history), history, name, root, L)
                (weights,) = set(root.rglob("weights.safetensors")) - before
                if value is not None:  # the model was checked when logged; it breaks afterwards
                    _set_weights(weights, value)
        finally:
            mlflow.set_tracking_uri(previous)
    return Store(uri, root)


def test_a_path_that_is_no_forecast_model(store, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    mlflow.set_tracking_uri(store.uri)
    try:
        _, ref = resolve_model("models:/rel-test@champion")
        assert (ref.name, ref.version) == ("rel-test", "1")
        with pytest.raises(ModelNotFoundError, match=r"runs:/\w+/model/MLmodel is not an MLflow model"):
            resolve_model(f"runs:/{ref.run_id}/model/MLmodel")
        with pytest.raises(ModelNotFoundError, match=r"model not found: models:/rel-test/9 \(Model Version"):
            resolve_model("models:/rel-test/9")
    finally:
        mlflow.set_tracking_uri(None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connections are refused


def _args(model: str, source: Path, output: Path, tmp_path: Path) -> list[str]:
    return [f"model_uri={model}", f"input={source}", f"output={output}", f"hydra.run.dir={tmp_path / 'run'}"]


def forecast_app(args: list[str], tracking_uri: str, tmp_path: Path, monkeypatch, capsys) -> AppResult:
    """`python pipelines/batch_forecast.py <args>` in process, on the store at `tracking_uri`, and
    afterwards nothing of it left that its own process would have taken with it: the store it
    pointed MLflow at, the variables it set."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    environ = dict(os.environ)
    try:
        return run_inprocess("batch_forecast.py", args, tmp_path, monkeypatch, capsys)
    finally:
        mlflow.set_tracking_uri(None)
        for name in os.environ.keys() - environ.keys():
            del os.environ[name]
        os.environ.update(environ)


def test_cli_server_down_fails_in_bounded_time_with_exit_6(source, tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    # The waits between attempts are recorded, not slept: each attempt itself must fail at once
    # (MLflow's own retries turned off), whatever the waits.
    sleeps: list[float] = []
    clock = SimpleNamespace(monotonic=time.monotonic, perf_counter=time.perf_counter, sleep=sleeps.append)
    monkeypatch.setattr(batch, "time", clock)
    started = time.monotonic()
    # The defaults: 3 retries 2, 4 and 8 s apart.
    args = _args("models:/m@champion", source, tmp_path / "o.parquet", tmp_path)
    result = forecast_app(args, url, tmp_path, monkeypatch, capsys)
    took = time.monotonic() - started
    assert result.code == 6, result.stderr[-2000:]
    last = result.last_line
    assert last.startswith(
        f"error: cannot reach the MLflow tracking server at {url} to load models:/m@champion"
    )
    assert "connection refused, 4 attempt(s)" in last
    assert (result.stdout + result.stderr).count("retrying in") == 3
    assert sleeps == [2, 4, 8]
    assert took + sum(sleeps) < 60, took  # 257 s before this change
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "uri, named",
    [
        ("models:/rel-test@nope", "Registered model alias nope not found."),
        ("models:/no-such-model@champion", "Registered Model with name=no-such-model not found"),
    ],
)
def test_cli_missing_alias_or_name_exits_5(store, source, tmp_path, monkeypatch, capsys, uri, named):
    target = tmp_path / "o.parquet"
    target.write_bytes(b"previous")
    result = forecast_app(_args(uri, source, target, tmp_path), store.uri, tmp_path, monkeypatch, capsys)
    assert result.code == 5, result.stderr[-2000:]
    assert result.last_line == f"error: model not found: {uri} ({named}) in the MLflow store {store.uri}"
    assert "retrying" not in result.stdout + result.stderr
    assert target.read_bytes() == b"previous" and beside(target) == []


def test_cli_nan_model_exits_8_and_keeps_the_output(store, source, tmp_path, monkeypatch, capsys):
    target = tmp_path / "o.parquet"
    target.write_bytes(b"previous")
    args = [*_args("models:/rel-nan@champion", source, target, tmp_path), "chunk_rows=120", "batch_size=3"]
    result = forecast_app(args, store.uri, tmp_path, monkeypatch, capsys)
    assert result.code == 8, result.stderr[-2000:]
    last = result.last_line
    expected = (
        r"error: stopped at series 1 to (\d) of the input: the forecast is NaN or infinite for \1 of \1 "
    )
    assert re.match(expected + r"series \(s0, s1, s2", last), last
    assert target.read_bytes() == b"previous" and beside(target) == []


@pytest.mark.slow
def test_cli_output_under_a_file_exits_7(store, source, tmp_path, subprocess_env):
    # The one real process here: the command's exit status and its last stderr line, as a
    # scheduler sees them (the other exit codes are checked in process, through the same run_app).
    (tmp_path / "afile").write_bytes(b"x")
    target = tmp_path / "afile" / "o.parquet"
    args = _args("models:/rel-test@champion", source, target, tmp_path)
    proc = run_pipeline("batch_forecast.py", args, tmp_path, store.env(subprocess_env), check=False)
    assert proc.returncode == 7, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot write the output {target}: {tmp_path / 'afile'} is a file, not a folder"
    )


@pytest.mark.slow
def test_cli_ray_infinite_model_exits_8_with_one_line(
    store, source, tmp_path, monkeypatch, capsys, ray_cluster
):
    pytest.importorskip("ray")
    target = tmp_path / "out"
    target.mkdir()
    (target / "part-0.parquet").write_bytes(b"previous")
    args = [
        *_args("models:/rel-inf@champion", source, target, tmp_path),
        "engine=ray",
        f"ray.address={ray_cluster.address}",
        "ray.rows_per_partition=200",
    ]
    result = forecast_app(args, store.uri, tmp_path, monkeypatch, capsys)
    assert result.code == 8, result.stderr[-3000:]
    last = result.last_line
    assert last.startswith("error: the forecast is NaN or infinite for ") and "nothing was written" in last
    assert "Failed to apply" not in last and "Traceback" not in last
    assert sorted(p.name for p in target.iterdir()) == ["part-0.parquet"]
    assert (target / "part-0.parquet").read_bytes() == b"previous" and beside(target) == []
