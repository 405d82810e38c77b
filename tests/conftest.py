"""Shared fixtures: tiny seeded data, isolated MLflow stores, a Ray cluster; one thread per test
process. docs/testing.md says which fixture to reach for."""

from __future__ import annotations

import os

# One thread per test process, set before torch is imported, and inherited by every pipeline a
# test spawns: tiny models run 10-80x slower on two threads when the other core is busy (and
# under pytest-xdist it is).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the tests' Ray cluster listens on loopback only
if "FORECAST_CACHE" not in os.environ:  # mapped training stores (data.store): never in ~/.cache
    import atexit
    import shutil
    import tempfile

    os.environ["FORECAST_CACHE"] = tempfile.mkdtemp(prefix="forecast-test-cache-")
    atexit.register(shutil.rmtree, os.environ["FORECAST_CACHE"], True)

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from stores import new_store  # noqa: E402

from forecast.data.synthetic import synthetic_long  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = (
    "needs a CUDA device and torch.cuda.is_available() is False here; "
    "bench/gpu.sh runs these tests on a GPU machine (bench/README.md, GPU)"
)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run where CUDA is; elsewhere (CI, laptops) they are skipped, saying why."""
    if torch.cuda.is_available():
        return
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(pytest.mark.skip(reason=NO_CUDA))


@pytest.fixture
def tiny_frame() -> pd.DataFrame:
    """6 hourly series of 200 steps."""
    return synthetic_long(n_series=6, length=200, seed=1)


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """`tiny_frame`'s data (6 hourly series of 200 steps) as a parquet file, for the pipelines."""
    path = tmp_path / "history.parquet"
    synthetic_long(n_series=6, length=200, seed=1).to_parquet(path)
    return path


@pytest.fixture
def isolated_mlflow(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store in tmp_path (a copy of one migrated per session), also for
    subprocesses (via the env)."""
    uri = new_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running the pipelines as a user would, quietly."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A Ray head on 127.0.0.1 for the whole session (per xdist worker that asks): engines join it
    with `ray.address=<this>` instead of starting and stopping a local Ray per run."""
    pytest.importorskip("ray")
    from ray_helpers import RayHead

    head = RayHead(tmp_path_factory.mktemp("ray"))
    head.start()
    yield head
    head.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One `mlflow server` (SQLite store, artifacts proxied) per session and xdist worker, for the
    tests that only use it. A test that kills or restarts a server starts its own
    (`server_helpers.MlflowServer`). Names of experiments and models must be unique per test."""
    from server_helpers import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.kill()  # a throwaway store: no need to wait for a polite shutdown
