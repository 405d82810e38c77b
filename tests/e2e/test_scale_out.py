"""Issue 3: DDP on 2 CPU processes, resume into the same MLflow run, Optuna sweeps with MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from app_runner import run_inprocess
from mlflow import MlflowClient
from pipeline_helpers import ROOT, TINY_TRAIN, env_with_tests_on_path, run_pipeline

from forecast.data import synthetic_long
from forecast.tracking.resolve import load_registered

pytestmark = pytest.mark.slow


@pytest.fixture
def work(tmp_path, isolated_mlflow):
    """A working folder with the data and a migrated MLflow store (MLFLOW_TRACKING_URI, here and
    in the env for the subprocesses): as on a cluster, the store exists before the workers start."""
    synthetic_long(n_series=6, length=160, seed=7).to_parquet(tmp_path / "history.parquet")
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return tmp_path, env


def _runs(experiment: str = "forecast") -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[experiment])


def test_ddp_two_cpu_processes_each_on_its_own_share(work):
    path, env = work
    env = {**env_with_tests_on_path(env), "FORECAST_CACHE": str(path / "cache")}
    args = [*TINY_TRAIN, "data.path=history.parquet", "trainer=ddp_cpu", "trainer.devices=2", "register=true"]
    args += ["data.store=mapped", "+callbacks.share._target_=pipeline_helpers.RecordShare"]
    run_pipeline("train.py", args, path, env)

    # Each rank mapped its own half of the series (6 series of one length: 3 each), no more.
    shares = [json.loads((path / f"share-{r}.json").read_text()) for r in (0, 1)]
    assert [s["series"] for s in shares] == [3, 3]
    assert sum(s["values"] for s in shares) == shares[0]["total_values"]
    assert sum(s["windows"] for s in shares) == shares[0]["total_windows"]

    runs = _runs()
    assert len(runs) == 1, "one MLflow run for the whole DDP training"
    assert len(list((path / "logs" / "train" / "runs").iterdir())) == 1, "all ranks share one run folder"
    run = runs.iloc[0]
    # Test metrics must cover each test window exactly once: recompute them from the
    # registered model (single process) and compare.
    forecaster, ref = load_registered("models:/forecast-lstm@champion")
    assert ref.run_id == run.run_id
    frame = pd.read_parquet(path / "history.parquet")
    history = frame.groupby("unique_id").head(160 - 6)
    actual = frame.groupby("unique_id").tail(6)
    pred = forecaster.predict(history)
    mae = np.abs(pred["y_hat"].to_numpy() - actual["y"].to_numpy()).mean()
    assert run["metrics.test/mae"] == pytest.approx(mae, rel=1e-4)


def test_ddp_killed_mid_epoch_resumes_to_the_same_step(work):
    path, env = work
    env = env_with_tests_on_path(env)
    args = [*TINY_TRAIN, "data.path=history.parquet", "trainer=ddp_cpu", "trainer.devices=2"]
    args += ["trainer.max_epochs=3", "callbacks.early_stopping=null"]
    kill = ["+callbacks.kill._target_=pipeline_helpers.KillMidEpoch", "+callbacks.kill.epoch=1"]
    killed = run_pipeline("train.py", [*args, *kill, "+callbacks.kill.batch=1"], path, env, check=False)
    assert killed.returncode == 137, killed.stderr[-3000:]
    (run_id,) = _runs().run_id

    run_pipeline("train.py", [*args, "resume=latest"], path, env)
    runs = _runs()
    assert list(runs.run_id) == [run_id] and runs.iloc[0].status == "FINISHED"
    # An unbroken run takes 3 epochs x 3 batches: the resumed one ends at that step, its epoch
    # 1 redone from the checkpoint of epoch 0 (the batches after it were lost with the ranks).
    (last,) = path.glob("logs/train/runs/*/checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert (state["global_step"], state["epoch"]) == (9, 2)
    train_steps = {m.step for m in MlflowClient().get_metric_history(run_id, "train/loss_epoch")}
    assert len(train_steps) == 3


def test_resume_after_a_crash_continues_the_same_run(work, monkeypatch, capsys):
    path, env = work
    env = env_with_tests_on_path(env)
    args = [*TINY_TRAIN, "data.path=history.parquet", "trainer.max_epochs=4", "callbacks.early_stopping=null"]
    crash = ["+callbacks.crash._target_=pipeline_helpers.CrashAfterEpoch", "+callbacks.crash.epoch=1"]
    crashed = run_pipeline("train.py", [*args, *crash], path, env, check=False)  # os._exit: a process
    assert crashed.returncode == 137, crashed.stderr[-3000:]
    (run_id,) = _runs().run_id

    # The resume runs here. The restored config still has the crash callback, which must not
    # fire in a resumed fit: were it to, it fails the run instead of ending this process.
    def crashed_again(code):
        raise AssertionError(f"the resumed fit called os._exit({code})")

    monkeypatch.setattr(os, "_exit", crashed_again)
    resumed = run_inprocess("train.py", [*args, "resume=latest"], path, monkeypatch, capsys)
    assert resumed.code == 0, resumed.stderr[-5000:]

    runs = _runs()
    assert list(runs.run_id) == [run_id], "the resumed fit logs to the run it started"
    assert runs.iloc[0].status == "FINISHED"
    # Epochs 0-1 before the crash, 2-3 after. (Lightning replays the validation of the epoch
    # whose checkpoint it resumes from, so epoch 1 may be scored twice, at the same step.)
    client = MlflowClient()
    val_steps = {m.step for m in client.get_metric_history(run_id, "val/mae")}
    train_steps = {m.step for m in client.get_metric_history(run_id, "train/loss_epoch")}
    assert len(val_steps) == 4 and len(train_steps) == 4
    assert "test/mae" in runs.iloc[0].filter(like="metrics.").index.str.replace("metrics.", "").tolist()


# Trials skip the ONNX export (`export=[]`): what a sweep tracks is the subject here.
SWEEP = ["-m", "hparams_search=lstm_optuna", "hydra.sweeper.storage=sqlite:///optuna.db", "export=[]"]


def _sweep(args: list[str], path, monkeypatch, capsys) -> None:
    result = run_inprocess("train.py", args, path, monkeypatch, capsys)
    assert result.code == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def test_sweep_tracks_trials_under_one_parent_and_resumes(work, monkeypatch, capsys):
    path, _ = work
    base = [*SWEEP, *TINY_TRAIN, "data.path=history.parquet", "hydra.sweeper.sampler.n_startup_trials=2"]
    _sweep([*base, "hydra.sweeper.n_trials=3", "register=best"], path, monkeypatch, capsys)

    study = optuna.load_study(study_name="lstm_optuna", storage=f"sqlite:///{path / 'optuna.db'}")
    assert len(study.trials) == 3
    runs = _runs()
    parents = runs[runs["tags.forecast.sweep"] == "lstm_optuna"]
    children = runs[runs["tags.optuna.study"] == "lstm_optuna"]
    assert len(parents) == 1 and len(children) == 3
    assert set(children["tags.mlflow.parentRunId"]) == set(parents.run_id)
    best = children[children["tags.best"] == "true"]
    assert len(best) == 1 and best.iloc[0]["tags.optuna.trial"] == str(study.best_trial.number)
    assert {"params.model/hidden_size", "metrics.val/mae"} <= set(children.columns)
    candidate = MlflowClient().get_model_version_by_alias("forecast-lstm", "candidate")
    assert candidate.run_id == best.iloc[0].run_id

    _sweep([*base, "hydra.sweeper.n_trials=4", "register=best:2"], path, monkeypatch, capsys)
    study = optuna.load_study(study_name="lstm_optuna", storage=f"sqlite:///{path / 'optuna.db'}")
    assert len(study.trials) == 4, "re-running adds trials to the study instead of restarting it"
    runs = _runs()
    assert len(runs[runs["tags.forecast.sweep"] == "lstm_optuna"]) == 1
    assert len(runs[runs["tags.optuna.study"] == "lstm_optuna"]) == 4

    # register=best:2: the two best trials by validation, as one registered ensemble model.
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    two_best = sorted(completed, key=lambda t: t.value)[:2]
    candidate = MlflowClient().get_model_version_by_alias("forecast-lstm", "candidate")
    assert candidate.tags["ensemble.trials"] == ",".join(str(t.number) for t in two_best)
    run = MlflowClient().get_run(candidate.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parents.run_id.iloc[0]
    assert run.data.metrics["member0/val_loss"] == pytest.approx(two_best[0].value, rel=1e-5)
    assert run.data.metrics["member1/val_loss"] == pytest.approx(two_best[1].value, rel=1e-5)
    assert np.isfinite(run.data.metrics["val/loss"])
    forecaster, _ = load_registered("models:/forecast-lstm@candidate")
    assert forecaster.settings.net == "ensemble" and len(forecaster.net.members) == 2
    assert forecaster.intervals is not None  # calibrated on the ensemble's own validation residuals


def test_two_workers_share_one_study(work):
    path, env = work
    args = [*SWEEP, *TINY_TRAIN, "data.path=history.parquet", "hydra.sweeper.n_trials=4"]
    cmd = [sys.executable, str(ROOT / "pipelines" / "train.py"), *args]
    # The tracking store exists before the workers start (`work`), as on a cluster: a new SQLite
    # file would have both workers race to create MLflow's schema. The study's database is new.
    workers = [
        subprocess.Popen(cmd, cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    study = optuna.load_study(study_name="lstm_optuna", storage=f"sqlite:///{path / 'optuna.db'}")
    finished = [t for t in study.trials if t.state.is_finished()]
    # Each worker re-reads the study before every trial; the two can overlap by one at most.
    assert 4 <= len(finished) <= 5
    runs = _runs()
    assert len(runs[runs["tags.forecast.sweep"] == "lstm_optuna"]) == 1, "one parent run for both workers"
