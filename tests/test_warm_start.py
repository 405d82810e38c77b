"""Warm starts (`init_from=`): the child begins from its parent's weights and encoders, records
its lineage, and a job that would build another net is a one-line error naming what differs."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from app_runner import run_isolated
from pipeline_helpers import TINY_TRAIN

import forecast
from forecast.data import synthetic_long
from forecast.errors import ConfigError, ModelNotFoundError

TINY = {
    "freq": "h",
    "input_size": 24,
    "horizon": 6,
    "hidden_size": 8,
    "head_hidden": 8,
    "segment_len": 6,
    "max_epochs": 1,
    "limit_train_batches": 3,
    "intervals": [],
    "enable_progress_bar": False,
    "seed": 3,
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_long(n_series=6, length=150, seed=2)


@pytest.fixture(scope="module")
def parent(frame) -> forecast.Model:
    return forecast.Model(**TINY).fit(frame)


def test_a_fine_tune_starts_from_the_parents_weights(parent, frame, tmp_path):
    """No training steps: the child is its parent, forecast for forecast, from memory, a saved
    folder or a checkpoint."""
    frozen = {**TINY, "limit_train_batches": 0}
    folder = parent.save(tmp_path / "parent")
    for source in (parent, folder):
        child = forecast.Model(**frozen).fit(frame, init_from=source)
        pd.testing.assert_frame_equal(child.predict(frame), parent.predict(frame))
    fresh = forecast.Model(**{**frozen, "seed": 4}).fit(frame)
    assert not np.allclose(fresh.predict(frame)["y_hat"], parent.predict(frame)["y_hat"])


def test_new_series_get_their_own_scalers(parent, frame):
    newcomers = synthetic_long(n_series=3, length=150, seed=8).assign(
        unique_id=lambda d: "new_" + d["unique_id"]
    )
    child = forecast.Model(**TINY).fit(pd.concat([frame, newcomers]), init_from=parent)
    stats = child.forecaster_.scaler.stats
    assert {"new_s0", "new_s1", "new_s2"} <= set(stats.index) and len(stats) == 9


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"hidden_size": 16}, "model.hidden_size 16 != 8"),
        ({"horizon": 12}, "data.horizon 12 != 6"),
        ({"input_size": 48}, "data.input_size 48 != 24"),
        ({"cell": "gru"}, "model.cell 'gru' != 'lstm'"),
        ({"loss": "quantile", "quantiles": [0.1, 0.5, 0.9]}, "model.output 'quantiles' != 'point'"),
        ({"calendar": ["hour"]}, "data.calendar ['hour'] != []"),
        ({"scaler": "robust"}, "data.scaler 'robust' != 'standard'"),
    ],
)
def test_a_mismatch_is_one_line_naming_what_differs(parent, frame, change, named):
    with pytest.raises(ConfigError) as err:
        forecast.Model(**{**TINY, **change}).fit(frame, init_from=parent)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_a_missing_parent_is_one_line(frame, tmp_path):
    with pytest.raises(ModelNotFoundError, match="init_from=.*no such model"):
        forecast.Model(**TINY).fit(frame, init_from=tmp_path / "nothing-here")


def test_covariates_keep_the_parents_encoder_and_unseen_categories_are_unknown(tmp_path):
    rng = np.random.default_rng(0)
    frame = synthetic_long(n_series=4, length=150, seed=5)
    frame["promo"] = rng.choice(["a", "b"], len(frame))
    options = {**TINY, "futr_exog": ["promo"], "categorical": ["promo"]}
    parent = forecast.Model(**options).fit(frame)
    later = frame.assign(promo=rng.choice(["a", "b", "c"], len(frame)))  # "c": never seen by the parent
    child = forecast.Model(**options).fit(later, init_from=parent)
    assert child.forecaster_.encoder.vocab == parent.forecaster_.encoder.vocab == {"promo": ["a", "b"]}
    with pytest.raises(ConfigError, match=r"covariates differ.*data.futr_exog \[\] != \['promo'\]"):
        forecast.Model(**TINY).fit(frame.drop(columns="promo"), init_from=parent)


def test_an_ensemble_parent_refits_each_member(frame):
    parent = forecast.Model(**TINY, members=2).fit(frame)
    child = forecast.Model(**{**TINY, "limit_train_batches": 0}).fit(frame, init_from=parent)
    assert child.forecaster_.settings.net == "ensemble" and len(child.forecaster_.net.members) == 2
    pd.testing.assert_frame_equal(child.predict(frame), parent.predict(frame))
    with pytest.raises(ConfigError, match="ensemble of 2 members.*ensemble.members=3"):
        forecast.Model(**TINY, members=3).fit(frame, init_from=parent)


@pytest.mark.slow
def test_the_command_line_fine_tune_records_its_lineage_and_waits_for_the_gate(
    history, tmp_path, monkeypatch, capsys, isolated_mlflow
):
    tiny = [*TINY_TRAIN, f"data.path={history}"]
    first = run_isolated(
        "train.py", [*tiny, "register=true", "registry.name=nightly"], tmp_path, monkeypatch, capsys
    )
    assert first.code == 0, first.stderr[-2000:]

    args = [
        *tiny,
        "init_from=models:/nightly@champion",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
    ]
    second = run_isolated("train.py", args, tmp_path, monkeypatch, capsys)
    assert second.code == 0, second.stderr[-2000:]
    mlflow.set_tracking_uri(isolated_mlflow)
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("nightly", "champion")
    candidate = client.get_model_version_by_alias("nightly", "candidate")  # not promoted: the gate decides
    assert (str(champion.version), str(candidate.version)) == ("1", "2")
    assert candidate.tags["init_from"] == "models:/nightly@champion"
    run = client.get_run(candidate.run_id)
    assert run.data.params["init_from"] == "models:/nightly@champion"
    assert run.data.tags["parent.run_id"] == champion.run_id
    assert (run.data.tags["parent.name"], run.data.tags["parent.version"]) == ("nightly", "1")
    assert run.data.metrics["train/steps"] == 2
    assert len(run.data.tags["data_digest"]) == 16
    parent_net = forecast.Model.load("models:/nightly@champion").forecaster_.net.state_dict()
    child_net = forecast.Model.load("models:/nightly@candidate").forecaster_.net.state_dict()
    moved = [not torch.equal(parent_net[k], child_net[k]) for k in parent_net]
    assert any(moved) and all(parent_net[k].shape == child_net[k].shape for k in parent_net)

    # Only the data and the budget: the parent's options build its model (sizes, cell, window).
    bare = [
        "data=file",
        f"data.path={history}",
        "init_from=models:/nightly@candidate",
        "trainer.max_epochs=1",
    ]
    third = run_isolated("train.py", [*bare, "trainer.limit_train_batches=1"], tmp_path, monkeypatch, capsys)
    assert third.code == 0, third.stderr[-2000:]
    latest = client.get_model_version_by_alias("nightly", "candidate")
    assert str(latest.version) == "3"
    params = client.get_run(latest.run_id).data.params
    assert float(params["model/lr"]) == pytest.approx(1e-4)  # a tenth of the recipe's 1e-3 when not given
    assert (params["model/hidden_size"], params["data/input_size"], params["model/segment_len"]) == (
        "16",
        "24",
        "6",
    )

    bad = run_isolated("train.py", [*args, "model.hidden_size=32"], tmp_path, monkeypatch, capsys)
    assert bad.code == 2
    assert bad.last_line.startswith(
        "error: init_from=models:/nightly@champion: the job builds a different model"
    )
    assert "model.hidden_size 32 != 16" in bad.last_line
