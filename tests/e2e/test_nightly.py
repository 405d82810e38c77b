"""The nightly loop (`pipelines/nightly.sh`, `make nightly`): fine-tune the champion, let the gate
decide, forecast with the champion, as one process chain with real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import mlflow
import pandas as pd
import pytest
from app_runner import run_isolated
from pipeline_helpers import ROOT, TINY_TRAIN

pytestmark = pytest.mark.slow


def test_the_nightly_loop_fine_tunes_gates_and_forecasts(
    history, tmp_path, monkeypatch, capsys, isolated_mlflow
):
    first = [*TINY_TRAIN, f"data.path={history}", "register=true", "registry.name=nightly"]
    result = run_isolated("train.py", first, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-2000:]

    env = {
        **os.environ,
        "MODEL": "nightly",
        "DATA": str(history),
        "OUT": str(tmp_path / "forecasts"),
        "PY": sys.executable,
        "FINETUNE": "trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.enable_progress_bar=false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    loop = subprocess.run(
        ["bash", str(ROOT / "pipelines" / "nightly.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert loop.returncode == 0, loop.stdout[-3000:] + loop.stderr[-3000:]
    assert "nightly: promotion gate" in loop.stdout

    mlflow.set_tracking_uri(isolated_mlflow)
    client = mlflow.MlflowClient()
    candidate = client.get_model_version("nightly", "2")
    assert candidate.tags["init_from"] == "models:/nightly@champion"
    champion = client.get_model_version_by_alias("nightly", "champion")
    gate = mlflow.search_runs(experiment_names=["promotion"])
    assert len(gate) == 1  # the gate ran once and recorded its decision
    promoted = str(champion.version) == "2"
    assert (gate.iloc[0]["tags.decision"] == "promoted") == promoted

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    forecast = pd.read_parquet(tmp_path / "forecasts" / f"as_of={today}" / "forecast.parquet")
    assert forecast["unique_id"].nunique() == 6 and len(forecast) == 6 * 6
