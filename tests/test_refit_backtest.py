"""Backtests that refit (`forecast.refit`): nothing at or after a refit's origin reaches it, windows
[rN, rN + N) are forecast by refit r, warm and scratch refits run, and the pipeline and the Python
API write the `refit` column and log the per-refit figures."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from app_runner import run_inprocess
from model_helpers import tiny_forecaster
from pipeline_helpers import register_forecaster, store_with_models

import forecast
from forecast import refit as refit_module
from forecast.backtest import REFIT_STEPS, RefitPlan, check_refit, refit_plan
from forecast.data import synthetic_long
from forecast.errors import ConfigError
from forecast.refit import refit_backtest

L, H, M = 24, 6, 12
TINY = {
    "freq": "h",
    "input_size": L,
    "horizon": H,
    "season_length": M,
    "hidden_size": 8,
    "head_hidden": 8,
    "segment_len": 6,
    "batch_size": 16,
    "max_epochs": 1,
    "limit_train_batches": 3,
    "intervals": [80],
    "enable_progress_bar": False,
    "seed": 3,
}


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    """4 hourly series of 120 steps, one of them ending 5 steps early."""
    frame = synthetic_long(n_series=4, length=120, seed=3)
    return frame[~((frame["unique_id"] == "s1") & (frame.index % 120 >= 115))].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(history) -> forecast.Model:
    """A tiny model trained through the API: its saved options are what a refit trains with."""
    return forecast.Model(**TINY).fit(history)


@pytest.fixture
def trainings(monkeypatch) -> list[SimpleNamespace]:
    """Every refit's training job as it ran: its config, the table it was given, its warm start
    and the model it made."""
    calls: list[SimpleNamespace] = []
    real = refit_module.run

    def spy(cfg, frame=None, init=None):
        trained = real(cfg, frame=frame, init=init)
        calls.append(
            SimpleNamespace(
                cfg=cfg, frame=frame.copy(), init=init, model=trained.forecaster, dm=trained.fit.datamodule
            )
        )
        return trained

    monkeypatch.setattr(refit_module, "run", spy)
    return calls


def cutoffs(history: pd.DataFrame, n_windows: int, step: int = H) -> pd.DataFrame:
    """(series x window) cutoff time stamps of a backtest, hourly: the last leaves H steps."""
    last = history.groupby("unique_id")["ds"].max()
    back = {k: pd.Timedelta(hours=H + step * (n_windows - 1 - k)) for k in range(n_windows)}
    return pd.DataFrame({k: last - back[k] for k in range(n_windows)})


def same_model(a, b) -> None:
    """Two forecasters with equal weights, scaler statistics and intervals."""
    for (name, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    pd.testing.assert_frame_equal(a.scaler.stats, b.scaler.stats)
    np.testing.assert_array_equal(a.intervals.quantiles, b.intervals.quantiles)


# -- options ---------------------------------------------------------------------------------------


def test_refit_options_parse_and_bad_values_are_one_line_errors():
    assert [check_refit(v) for v in (None, False, "none", "None")] == [None] * 4
    assert check_refit("every:3") == 3 and check_refit(2) == 2
    for bad in ("every:0", "sometimes", "every:x", "every:", 0, -1, True, 1.5):
        with pytest.raises(ConfigError, match=r"refit must be none or every:N") as err:
            check_refit(bad)
        assert "\n" not in str(err.value)
    assert refit_plan("every:2") == RefitPlan(2, "warm", REFIT_STEPS)
    assert refit_plan("every:2", "scratch", 50) == RefitPlan(2, "scratch", 50)
    assert refit_plan("none", "warm", 10) is None
    assert refit_plan("every:2", "warm", 10, 48) == RefitPlan(2, "warm", 10, 48)
    with pytest.raises(ConfigError, match="refit_val_size must be an integer >= 1"):
        refit_plan("every:2", "warm", 10, 0)
    assert refit_plan("every:2", "warm", 10, None, "1e-4") == RefitPlan(2, "warm", 10, None, 1e-4)
    for bad in (0, -1e-3, "fast", float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="refit_lr must be a positive number") as err:
            refit_plan("every:2", "warm", 10, None, bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="refit_mode must be warm .* or scratch .*, got 'hot'"):
        refit_plan("every:2", "hot")
    with pytest.raises(ConfigError, match="refit_steps must be an integer >= 1"):
        refit_plan("every:2", "warm", 0)


def test_a_model_without_its_saved_options_is_refused(history):
    old = tiny_forecaster(history)  # packaged without `settings.config`, as before format 2
    with pytest.raises(ConfigError, match="saved before its training options") as err:
        refit_backtest(old, history, 2, season_length=M, plan=RefitPlan(1, "warm", 2))
    assert "\n" not in str(err.value)


# -- the leak rule ----------------------------------------------------------------------------------


def test_each_refit_gets_only_the_data_before_its_origin(fitted, history, trainings):
    n, every, steps = 5, 2, 4
    result = refit_backtest(
        fitted.forecaster_, history, n, season_length=M, plan=RefitPlan(every, "warm", steps)
    )
    assert len(trainings) == 3  # windows [0, 2), [2, 4), [4, 5)
    cuts = cutoffs(history, n)
    for r, job in enumerate(trainings):
        origin = cuts[r * every]  # each series' own cutoff of the refit's first window
        seen = job.frame.groupby("unique_id")["ds"].max()
        assert (seen == origin.loc[seen.index]).all(), r  # up to its cutoff, nothing after
        expected = history[history["ds"] <= history["unique_id"].map(origin)]
        pd.testing.assert_frame_equal(
            job.frame[["unique_id", "ds", "y"]].reset_index(drop=True),
            expected[["unique_id", "ds", "y"]].reset_index(drop=True),
            check_dtype=False,
        )
        # No test part (validation is the tail of that data), no MLflow run, the step budget.
        assert job.cfg.data.test_size == 0 and job.cfg.data.path is None and not job.cfg.logger
        assert job.cfg.trainer.max_steps == steps and job.cfg.trainer.enable_progress_bar is False
    stats = result.info["refits"]
    assert [s.first_window for s in stats] == [0, 2, 4] and [s.windows for s in stats] == [2, 2, 1]
    assert [s.steps for s in stats] == [steps] * 3  # the budget exactly (validated at its end)
    assert all(np.isfinite(s.best) and s.monitor == "val/loss" for s in stats)
    assert stats[0].origin == cuts[0].max() and stats[2].origin == cuts[4].max()
    assert {job.cfg.data.val_size for job in trainings} == {fitted.data.val_size}  # the model's own


def test_refit_val_size_validates_each_refit_on_the_last_steps_before_its_origin(fitted, history, trainings):
    refit_backtest(fitted.forecaster_, history, 2, season_length=M, plan=refit_plan("every:1", "warm", 2, 30))
    assert [job.cfg.data.val_size for job in trainings] == [30, 30]
    assert [job.dm.val_size for job in trainings] == [30, 30]  # the data module the refit trained with


def test_refit_lr_is_each_refits_learning_rate(fitted, history, trainings):
    refit_backtest(
        fitted.forecaster_, history, 2, season_length=M, plan=refit_plan("every:1", "warm", 2, None, 3e-4)
    )
    assert [job.cfg.model.lr for job in trainings] == [3e-4, 3e-4]
    assert [job.model.settings.config["model"]["lr"] for job in trainings] == [3e-4, 3e-4]
    assert fitted.forecaster_.settings.config["model"]["lr"] == fitted.model.lr  # the saved model untouched


@pytest.mark.parametrize("poisoned", [0, 1], ids=["after refit 0's origin", "after refit 1's origin"])
def test_data_at_or_after_an_origin_changes_nothing_of_the_refits_before_it(
    fitted, history, monkeypatch, poisoned
):
    """The refits up to `poisoned` are identical (weights, scaler statistics, intervals, the best
    validation score early stopping kept) when every value at or after refit `poisoned`'s origin
    is replaced by a huge one: their training windows, scalers and validation never saw it."""
    n, every = 4, 2
    origin = cutoffs(history, n)[poisoned * every]
    bad = history.copy()
    after = bad["ds"] > bad["unique_id"].map(origin)
    bad.loc[after, "y"] = 1e6
    runs = []
    for table in (history, bad):
        calls: list = []
        real = refit_module.run

        def spy(cfg, frame=None, init=None, calls=calls, real=real):
            trained = real(cfg, frame=frame, init=init)
            calls.append(trained.forecaster)
            return trained

        monkeypatch.setattr(refit_module, "run", spy)
        result = refit_backtest(
            fitted.forecaster_, table, n, season_length=M, plan=RefitPlan(every, "warm", 5)
        )
        monkeypatch.setattr(refit_module, "run", real)
        runs.append((calls, result.info["refits"]))
    (clean, clean_stats), (dirty, dirty_stats) = runs
    for r in range(poisoned + 1):
        same_model(clean[r], dirty[r])
        assert clean_stats[r].best == dirty_stats[r].best
    if poisoned == 0:  # the poison reaches refit 1 (its data runs past refit 0's origin)
        assert clean_stats[1].best != dirty_stats[1].best


# -- which refit forecasts which window ---------------------------------------------------------------


def test_windows_r_n_to_r_n_plus_n_are_forecast_by_refit_r(fitted, history, trainings):
    n, every = 5, 2
    result = refit_backtest(
        fitted.forecaster_, history, n, step=4, season_length=M, plan=RefitPlan(every, "warm", 3)
    )
    table = result.table
    columns = ["unique_id", "cutoff", "refit", "ds", "y", "y_hat", "y_hat_lo_80", "y_hat_hi_80"]
    assert list(table.columns) == columns
    window = table.groupby("unique_id")["cutoff"].rank(method="dense").astype(int) - 1
    np.testing.assert_array_equal(table["refit"], window // every)
    assert result.by_window["refit"].tolist() == [0, 0, 1, 1, 2]
    models = [job.model for job in trainings]
    for (uid, cutoff, r), rows in table.groupby(["unique_id", "cutoff", "refit"]):
        series = history[history["unique_id"] == uid]
        expected = models[r].predict(series[series["ds"] <= cutoff])
        np.testing.assert_allclose(rows["y_hat"], expected["y_hat"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(rows["y_hat_hi_80"], expected["y_hat_hi_80"], rtol=1e-5, atol=1e-4)
    # Scored once, as one model's table would be.
    assert result.metrics["mae"] == pytest.approx(np.abs(table["y_hat"] - table["y"]).mean(), rel=1e-5)
    assert result.n_windows == 20 and 0 <= result.metrics["coverage_80"] <= 1


def test_warm_refits_chain_and_scratch_refits_start_fresh(fitted, history, trainings):
    warm = refit_backtest(fitted.forecaster_, history, 4, season_length=M, plan=RefitPlan(2, "warm", 3))
    assert trainings[0].init is fitted.forecaster_ and trainings[1].init is trainings[0].model
    del trainings[:]
    scratch = refit_backtest(fitted.forecaster_, history, 4, season_length=M, plan=RefitPlan(2, "scratch", 3))
    assert [job.init for job in trainings] == [None, None]
    for result in (warm, scratch):
        assert set(result.table["refit"]) == {0, 1} and np.isfinite(result.metrics["mase"])
        assert result.info["refit_mode"] in ("warm", "scratch") and len(result.info["refits"]) == 2
    assert not np.allclose(warm.table["y_hat"], scratch.table["y_hat"])


def test_an_ensemble_refits_each_member(history, trainings):
    ensemble = forecast.Model(**TINY, members=2).fit(history)
    assert ensemble.forecaster_.settings.net == "ensemble"
    result = refit_backtest(ensemble.forecaster_, history, 2, season_length=M, plan=RefitPlan(2, "warm", 3))
    (job,) = trainings
    assert job.init is ensemble.forecaster_ and job.cfg.ensemble.members == 2
    assert job.model.settings.net == "ensemble" and len(job.model.settings.net_params["members"]) == 2
    assert result.info["refits"][0].steps == 2 * 3  # both members, the budget each
    assert set(result.table["refit"]) == {0}


def test_the_python_api_refits(fitted, history):
    cv = fitted.cross_validation(history, n_windows=3, refit="every:2", refit_steps=3)
    assert {"refit", "cutoff", "y_hat"} <= set(cv.columns) and set(cv["refit"]) == {0, 1}
    assert len(fitted.cv_refits_) == 2 and fitted.cv_refits_[1].first_window == 2
    plain = fitted.cross_validation(history, n_windows=3)
    assert "refit" not in plain.columns and fitted.cv_refits_ == []
    with pytest.raises(ConfigError, match="refit_mode"):
        fitted.cross_validation(history, refit="every:2", refit_mode="hot")


# -- the pipeline -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory, history, fitted):
    """The tiny model registered as rf@champion, a model without saved options as old@champion,
    and the data file."""
    root = tmp_path_factory.mktemp("store")
    uri = store_with_models(root, [fitted.forecaster_], history, "rf", L)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        register_forecaster(tiny_forecaster(history), history, "old", root, L)
    finally:
        mlflow.set_tracking_uri(previous)
    data = root / "history.parquet"
    history.to_parquet(data)
    return root, uri, data


def pipeline_args(root, data, tmp_path, *more: str) -> list[str]:
    return [
        f"input={data}",
        f"season_length={M}",
        f"paths.root_dir={root}",
        f"paths.log_dir={tmp_path}/logs",
        *more,
    ]


def test_pipeline_refits_and_logs_each_refit(registered, tmp_path, monkeypatch, capsys):
    root, uri, data = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "bt.parquet"
    args = pipeline_args(
        root, data, tmp_path, "model_uri=models:/rf@champion", "n_windows=4", "refit=every:2",
        "refit_steps=4", f"output={out}", "experiment_name=refits",
    )  # fmt: skip
    result = run_inprocess("backtest.py", args, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    table = pd.read_parquet(out)
    assert list(table.columns[:4]) == ["unique_id", "cutoff", "refit", "ds"] and len(table) == 16 * H
    assert sorted(set(table["refit"])) == [0, 1]
    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(experiment_names=["refits"], output_format="list")
    params, metrics = run.data.params, run.data.metrics
    assert (params["refit"], params["refit_mode"], params["refit_steps"]) == ("every:2", "warm", "4")
    for r in (0, 1):
        for name in ("val_loss", "steps", "seconds", "origin", "series"):
            assert f"refit/{r}/{name}" in metrics, (r, name)
        assert metrics[f"refit/{r}/steps"] == 4
    cuts = cutoffs(pd.read_parquet(data), 4)
    assert metrics["refit/1/origin"] == cuts[2].max().timestamp()
    assert {"backtest/mae", "backtest/mase", "backtest/snaive_mae"} <= set(metrics)
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "backtest")}
    assert {"backtest/refits.csv", "backtest/forecasts.parquet", "backtest/by_window.csv"} <= names
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["refit=every:0"], "refit must be none or every:N with N >= 1"),
        (["refit=sometimes"], "refit must be none or every:N with N >= 1"),
        (["refit=every:2", "refit_mode=hot"], "refit_mode must be warm"),
        (["refit=every:2", "refit_steps=0"], "refit_steps must be an integer >= 1"),
        (["refit=every:2", "model_uri=models:/old@champion"], "saved before its training options"),
    ],
)
def test_pipeline_refit_errors_are_one_line(registered, overrides, message, tmp_path, monkeypatch, capsys):
    root, uri, data = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = pipeline_args(root, data, tmp_path, "model_uri=models:/rf@champion", *overrides)
    result = run_inprocess("backtest.py", args, tmp_path, monkeypatch, capsys)
    assert result.code == ConfigError.exit_code, result.stderr[-2000:]
    assert result.last_line.startswith("error: ") and message in result.last_line, result.last_line
