"""What a training run shows and records: one line per epoch off a terminal, no banners, a
one-screen summary; a run name telling model, data and time; the data as an MLflow dataset."""

from __future__ import annotations

import logging
import re

import mlflow
import pytest
from app_runner import run_inprocess
from pipeline_helpers import TINY_TRAIN

from forecast.console import summary
from forecast.data import synthetic_long


def test_summary_puts_the_model_beside_the_baseline():
    text = summary(
        {"test/mae": 1.5, "test/smape": 10.0},
        {"test/snaive_mae": 2.0, "test/snaive_smape": 12.5},
        "http://mlflow:5000/#/experiments/1/runs/abc",
        "models:/m@champion = version 3",
    )
    assert re.search(r"mae\s+1\.5\s+2\n", text) and re.search(r"smape\s+10\s+12\.5\n", text)
    assert "runs/abc" in text and "version 3" in text and "rmse" not in text


@pytest.mark.slow
def test_training_console_run_name_and_dataset(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = tmp_path / "sales.parquet"
    synthetic_long(n_series=3, length=80, seed=2).to_parquet(path, index=False)
    args = [*TINY_TRAIN, f"data.path={path}", f"paths.root_dir={tmp_path}", f"paths.log_dir={tmp_path}/logs"]
    args = [a for a in args if not a.startswith("trainer.enable_progress_bar")]
    # The epoch lines are log records: collected on their own logger, whatever an earlier test
    # in this process did to the root logger's handlers.
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("forecast.training")
    logger.addHandler(handler)
    # A bench script run in process (tests/bench) sets the `forecast` loggers to ERROR.
    monkeypatch.setattr(logger, "level", logging.INFO)
    monkeypatch.setattr(logger, "disabled", False)
    try:
        result = run_inprocess(
            "train.py", [*args, "register=true", "export=[]"], tmp_path, monkeypatch, capsys
        )
    finally:
        logger.removeHandler(handler)
    assert result.code == 0, result.stderr[-3000:]
    out, log = result.stdout, "\n".join(lines)
    # Off a terminal: one plain line per epoch instead of a progress bar, then the summary.
    assert re.search(r"epoch 1/2, train/loss \d+\.\d+, val/loss \d+\.\d+, \d+s", log), log[-3000:]
    assert re.search(r"epoch 2/2, ", log) and "Epoch 0:" not in out + result.stderr
    assert "it/s" not in out + result.stderr
    assert re.search(r"test metrics\s+model\s+seasonal naive", out)
    assert "registered     models:/forecast-lstm@champion = version 1" in out
    # No banners or known-harmless warnings.
    for noise in (
        "GPU available",
        "Tip:",
        "Seed set",
        "LeafSpec",
        "log_every_n_steps",
        "Successfully registered",
    ):
        assert noise not in result.stderr + out, noise

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert re.fullmatch(r"lstm-sales-\d{8}-\d{6}", runs.loc[0, "tags.mlflow.runName"])
    inputs = mlflow.get_run(runs.loc[0, "run_id"]).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    assert dataset.name == "sales" and str(path) in dataset.source and len(dataset.digest) == 16
    assert tags["rows"] == "240" and tags["series"] == "3" and tags["mlflow.data.context"] == "training"
