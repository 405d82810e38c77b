"""MLflow's own clients on a registered model: `mlflow models predict` (CSV and JSON) and
`mlflow models serve` (text/csv and JSON requests) give the batch pipeline's forecasts, in the
columns of the output contract (a quantile model: y_hat, then its quantiles), and a bad request
gets the model's one-line message with HTTP 400. The console script runs once per command;
the JSON `predict` runs the same command (`mlflow.cli`) in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.cli import cli
from model_helpers import tiny_forecaster
from pipeline_helpers import register_forecaster
from server_helpers import free_port
from stores import new_store

from forecast.batch import run_batch_forecast
from forecast.data import synthetic_long

pytestmark = [pytest.mark.slow, pytest.mark.server]
L, H = 24, 6
BIN = Path(sys.executable).parent
QUANTILES = [0.1, 0.5, 0.9]
COLUMNS = ["unique_id", "ds", "y_hat", "y_hat_q10", "y_hat_q50", "y_hat_q90"]  # docs/batch.md, Output columns


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A registered tiny quantile model, the batch pipeline's forecast of `history`, and the env to
    reach it."""
    root = tmp_path_factory.mktemp("clients")
    uri = new_store(root / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    history = synthetic_long(n_series=3, length=60, seed=4)
    model = tiny_forecaster(history, segment_len=6, loss="quantile", quantiles=QUANTILES)
    model_uri = register_forecaster(model, history, "clients", root, L)
    history.to_parquet(root / "history.parquet", index=False)
    out = run_batch_forecast(model_uri, str(root / "history.parquet"), str(root / "batch.parquet"), str(root))
    expected = pd.read_parquet(out)
    # PATH as a user of the README has it after `source .venv/bin/activate`: the scoring server
    # starts `uvicorn` by name.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    yield root, model_uri, history, expected, env
    mlflow.set_tracking_uri(None)


def _frame(records: list[dict]) -> pd.DataFrame:
    got = pd.DataFrame(records)
    got["ds"] = pd.to_datetime(got["ds"])
    return got.sort_values(["unique_id", "ds"], ignore_index=True)


def _same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    want = expected.sort_values(["unique_id", "ds"], ignore_index=True)
    assert list(got.columns) == list(want.columns) == COLUMNS
    assert list(got["unique_id"]) == list(want["unique_id"])
    assert (got["ds"].to_numpy() == want["ds"].to_numpy()).all()
    for column in COLUMNS[2:]:
        assert got[column].to_numpy() == pytest.approx(want[column].to_numpy(), rel=1e-5, abs=1e-4)
    assert (got["y_hat"] == got["y_hat_q50"]).all()


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_mlflow_models_predict_gives_the_batch_forecast(served, kind):
    root, model_uri, history, expected, env = served
    source = root / f"input.{kind}"
    if kind == "csv":
        history.to_csv(source, index=False)
    else:
        frame = history.assign(ds=history["ds"].dt.strftime("%Y-%m-%d %H:%M:%S"))
        source.write_text(json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}))
    out = root / f"predict-{kind}.json"
    command = ["models", "predict", "-m", model_uri, "-i", str(source), "-t", kind, "-o", str(out),
               "--env-manager", "local"]  # fmt: skip
    if kind == "csv":  # the console script, as a user runs it
        proc = subprocess.run(
            [str(BIN / "mlflow"), *command], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:  # the console script's own entry point in process (its tracking URI: the fixture's)
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, f"{result.output[-3000:]}\n{result.exception!r}"
    _same(_frame(json.loads(out.read_text())["predictions"]), expected)


def _post(port: int, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_mlflow_models_serve_answers_csv_and_json_and_explains_bad_input(served):
    root, model_uri, history, expected, env = served
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "-h", "127.0.0.1", "-p", str(port),
         "--env-manager", "local", "-w", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                assert time.time() < deadline, "scoring server did not start"
                time.sleep(0.5)
        status, body = _post(port, history.to_csv(index=False).encode(), "text/csv")
        assert status == 200, body
        _same(_frame(body["predictions"]), expected)

        frame = history.assign(ds=history["ds"].dt.strftime("%Y-%m-%d %H:%M:%S"))
        payload = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()
        status, body = _post(port, payload, "application/json")
        assert status == 200, body
        _same(_frame(body["predictions"]), expected)

        broken = history.drop(index=[10, 11]).to_csv(index=False).encode()  # a gap in s0
        status, body = _post(port, broken, "text/csv")
        assert status == 400
        assert body["message"].startswith("series are not regular at frequency 'h'"), body
        assert "\n" not in body["message"] and "Failed to predict" not in body["message"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
