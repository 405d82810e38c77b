"""`make serve` starts MLflow's scoring server for the champion on 127.0.0.1 from a shell whose PATH
lacks the venv (MLflow starts `uvicorn` by name), and answers with the batch pipeline's forecast."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
from model_helpers import tiny_forecaster
from pipeline_helpers import ROOT, register_forecaster
from server_helpers import free_port

from forecast.batch import run_batch_forecast
from forecast.data import synthetic_long

pytestmark = [pytest.mark.slow, pytest.mark.server]
L, H = 24, 6
# `-o`: the venv counts as installed, so make does not reinstall it when pyproject.toml is newer.
MAKE = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "mlflow").exists(), reason="make serve runs .venv's mlflow")
def test_make_serve_answers_with_the_batch_forecast(tmp_path, isolated_mlflow):
    uri = isolated_mlflow
    history = synthetic_long(n_series=3, length=60, seed=4)
    model_uri = register_forecaster(tiny_forecaster(history, segment_len=6), history, "served", tmp_path, L)
    history.to_parquet(tmp_path / "history.parquet", index=False)
    out = run_batch_forecast(model_uri, str(tmp_path / "history.parquet"), str(tmp_path / "b.parquet"))
    expected = pd.read_parquet(out)
    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    port = free_port()
    server = subprocess.Popen(
        [*MAKE, "serve", "MODEL_NAME=served", f"SERVE_PORT={port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make, mlflow and uvicorn in one group, ended together below
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "make serve did not answer /ping within 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=history.to_csv(index=False).encode(),
            headers={"Content-Type": "text/csv"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            got = pd.DataFrame(json.loads(response.read())["predictions"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # only the group this test started
        server.wait(timeout=60)
    got["ds"] = pd.to_datetime(got["ds"])
    got = got.sort_values(["unique_id", "ds"], ignore_index=True)
    want = expected.sort_values(["unique_id", "ds"], ignore_index=True)
    assert list(got["unique_id"]) == list(want["unique_id"])
    assert (got["ds"].to_numpy() == want["ds"].to_numpy()).all()
    assert got["y_hat"].to_numpy() == pytest.approx(want["y_hat"].to_numpy(), rel=1e-5, abs=1e-4)


def test_make_serve_defaults_to_the_local_store_of_the_checkout():
    if shutil.which("make") is None:
        pytest.skip("needs make")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    dry = subprocess.run([*MAKE, "-n", "serve"], env=env, capture_output=True, text=True, check=True)
    command = " ".join(dry.stdout.replace("\\\n", " ").split())  # one line, continuations joined
    assert f'MLFLOW_TRACKING_URI="${{MLFLOW_TRACKING_URI:-sqlite:///{ROOT}/mlflow.db}}"' in command
    assert f'PATH="{ROOT / ".venv" / "bin"}:$PATH"' in command
    assert '-m "models:/forecast-lstm@champion" --env-manager local --host 127.0.0.1 --port 5001' in command
