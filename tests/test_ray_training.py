"""trainer=ray: the training job on 2 Ray Train CPU workers (the session's Ray head) gives one
MLflow run, checkpoints in the run folder and the model one process registers; a bad address or
a missing Ray is a one-line ConfigError before any run exists."""

from __future__ import annotations

import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from app_runner import run_inprocess
from mlflow import MlflowClient
from pipeline_helpers import TINY_TRAIN
from server_helpers import free_port

from forecast.checkpoints import load_checkpoint
from forecast.data import synthetic_long
from forecast.errors import ConfigError
from forecast.ray_training import RayTrainOptions, _check_resources, check_ray
from forecast.tracking.resolve import load_registered

pytest.importorskip("ray.train")

LENGTH, H = 160, 6


@pytest.fixture
def work(tmp_path, isolated_mlflow):
    synthetic_long(n_series=6, length=LENGTH, seed=7).to_parquet(tmp_path / "history.parquet")
    return tmp_path


def _train(path, args, monkeypatch, capsys):
    base = [*TINY_TRAIN, "data.path=history.parquet", "trainer=ray", "export=[]", "hydra.run.dir=run"]
    return run_inprocess("train.py", [*base, *args], path, monkeypatch, capsys)


@pytest.mark.slow
def test_two_ray_workers_train_the_model_one_process_registers(work, ray_cluster, monkeypatch, capsys):
    args = [f"trainer.ray.address={ray_cluster.address}", "register=true"]
    result = _train(work, args, monkeypatch, capsys)
    assert result.code == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"

    runs = mlflow.search_runs(experiment_names=["forecast"])
    assert len(runs) == 1, "one MLflow run for the driver and both workers"
    run = runs.iloc[0]
    assert run.status == "FINISHED"
    # As in one process: 2 epochs of 3 batches (per rank), each validated, and the job's
    # checkpoints (the best by val/loss and the last) in the run folder.
    client = MlflowClient()
    assert len(client.get_metric_history(run.run_id, "val/loss")) == 2
    checkpoints = work / "run" / "checkpoints"
    assert list(checkpoints.glob("epoch_*.ckpt"))
    last = load_checkpoint(checkpoints / "last.ckpt")
    assert last["global_step"] == 6 and last["mlflow_run_id"] == run.run_id
    assert not list((work / "run").glob(".ray-reach-*")), "the reachability marker is removed"
    assert (work / "run" / "ray").is_dir(), "Ray Train's own folder in the run folder"

    # The test windows were each scored once across the ranks: the registered model's own
    # forecast error on the test part is the run's test/mae.
    forecaster, ref = load_registered("models:/forecast-lstm@champion")
    assert ref.run_id == run.run_id
    frame = pd.read_parquet(work / "history.parquet")
    history = frame.groupby("unique_id").head(LENGTH - H)
    actual = frame.groupby("unique_id").tail(H)
    pred = forecaster.predict(history)
    mae = np.abs(pred["y_hat"].to_numpy() - actual["y"].to_numpy()).mean()
    assert run["metrics.test/mae"] == pytest.approx(mae, rel=1e-4)


def test_an_address_without_a_cluster_fails_before_any_run(work, monkeypatch, capsys):
    result = _train(work, [f"trainer.ray.address=127.0.0.1:{free_port()}"], monkeypatch, capsys)
    assert result.code == 2
    assert (
        "trainer.ray.address=127.0.0.1:" in result.stderr and "no Ray cluster answers there" in result.stderr
    )
    assert mlflow.search_runs(experiment_names=["forecast"]).empty


def test_bad_options_and_a_missing_ray_are_one_line_errors(monkeypatch):
    with pytest.raises(
        ConfigError, match=r"unknown trainer.ray option\(s\) workers; valid: address, num_workers"
    ):
        check_ray({"ray": {"workers": 2}})
    with pytest.raises(ConfigError, match=r"trainer.ray.num_workers"):
        check_ray({"ray": {"num_workers": "two"}})
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"^trainer=ray needs Ray Train, an optional extra: pip install"):
        check_ray({"ray": {}})
    assert check_ray({"accelerator": "cpu"}) is None


class _Cluster:
    def __init__(self, **resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


def test_a_local_ray_too_small_for_the_workers_is_refused(caplog):
    four = RayTrainOptions(num_workers=4)
    with pytest.raises(ConfigError, match=r"4 workers need 4 CPUs, the cluster has 2: lower trainer.ray"):
        _check_resources(_Cluster(CPU=2.0), four, fixed=True)
    _check_resources(_Cluster(CPU=2.0), four, fixed=False)  # a cluster may grow: a warning
    assert "waits until the cluster grows" in caplog.text
    _check_resources(_Cluster(CPU=4.0), four, fixed=True)
    with pytest.raises(ConfigError, match=r"4 GPUs, the cluster has 0"):
        _check_resources(_Cluster(CPU=8.0), RayTrainOptions(num_workers=4, use_gpu=True), fixed=True)
