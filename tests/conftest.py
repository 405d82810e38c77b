"""Shared fixtures: tiny seeded data, an isolated MLflow store, the repo root."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from forecast.data.synthetic import synthetic_long

ROOT = Path(__file__).resolve().parents[1]


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
    """A fresh SQLite MLflow store in tmp_path, also for subprocesses (via the env)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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
