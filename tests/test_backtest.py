"""Rolling-origin backtest: the vectorised windows equal forecasting each cut history one at a
time, the scores equal a plain per-window computation, and the pipeline writes and logs them."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from app_runner import run_inprocess
from model_helpers import tiny_forecaster as shared_tiny_forecaster
from pipeline_helpers import store_with_models

from forecast.backtest import backtest_frame, cutoff_ends
from forecast.backtest_job import data_digest, resolve_season_length
from forecast.baselines import seasonal_naive
from forecast.blocks import SeriesBlock
from forecast.data import synthetic_long
from forecast.errors import ConfigError, DataValidationError, ModelNotFoundError

L, H, M = 24, 6, 12


def tiny_forecaster(
    history: pd.DataFrame,
    quantiles: list[float] | None = None,
    seed: int = 0,
    cycle: bool = False,
    missing: str = "error",
):
    """`model_helpers.tiny_forecaster` with segments of 6. `cycle`: a learned per-series daily
    cycle, set to random values so that a wrong step number or series code changes the forecast."""
    kwargs: dict = {"loss": "quantile", "quantiles": quantiles} if quantiles else {}
    if cycle:
        kwargs |= {"cycle_len": 24, "cycle_per_series": True, "n_series": history["unique_id"].nunique()}

    def random_cycle(module, _dm):
        for name, param in module.net.named_parameters():
            if "cycle" in name:
                param.normal_()

    return shared_tiny_forecaster(
        history, seed=seed, data={"missing": missing}, segment_len=6, tweak=random_cycle, **kwargs
    )


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    """4 series of 80 hourly steps, one ending 5 steps early, and one short series (padded)."""
    frame = synthetic_long(n_series=4, length=80, seed=3)
    frame = frame[~((frame["unique_id"] == "s1") & (frame.index % 80 >= 75))]
    short = synthetic_long(n_series=1, length=30, seed=4).assign(unique_id="short")
    return pd.concat([frame, short], ignore_index=True)


@pytest.fixture(scope="module")
def forecaster(history):
    return tiny_forecaster(history[history["unique_id"] != "short"])


@pytest.mark.parametrize("cycle", [False, True], ids=["plain", "learned cycle"])
def test_windows_equal_forecasting_each_cut_history(forecaster, history, cycle):
    if cycle:
        forecaster = tiny_forecaster(history[history["unique_id"] != "short"], cycle=True)
        assert forecaster.settings.net_params["cycle_len"] == 24
    result = backtest_frame(forecaster, history, n_windows=3, step=4, season_length=M)
    table = result.table
    for (uid, cutoff), rows in table.groupby(["unique_id", "cutoff"]):
        series = history[history["unique_id"] == uid]
        cut = series[series["ds"] <= cutoff]
        expected = forecaster.predict(cut)
        np.testing.assert_allclose(
            rows["y_hat"].to_numpy(), expected["y_hat"].to_numpy(), rtol=1e-5, atol=1e-4
        )
        assert (rows["ds"].to_numpy() == expected["ds"].to_numpy()).all()
        truth = series.set_index("ds").loc[rows["ds"], "y"].to_numpy()
        np.testing.assert_allclose(rows["y"].to_numpy(), truth)
    # The last cutoff leaves exactly H steps; earlier ones step back by 4; per series.
    for uid, rows in table.groupby("unique_id"):
        last = history.loc[history["unique_id"] == uid, "ds"].max()
        cutoffs = sorted(rows["cutoff"].unique())
        expected = [last - pd.Timedelta(hours=H + 4 * k) for k in (2, 1, 0)]
        # "short" (30 steps) has M + 1 = 13 steps of history before every one of them too.
        assert cutoffs == expected, uid
    assert result.info["padded"] == 2  # "short" cut at 16 and 20 steps: fewer than L = 24
    assert list(table.columns) == ["unique_id", "cutoff", "ds", "y", "y_hat"]
    assert result.n_series == 5 and result.n_windows == 15 and result.skipped == 0


def test_scores_equal_a_plain_per_window_computation(forecaster, history):
    result = backtest_frame(forecaster, history, n_windows=4, step=3, season_length=M)
    abs_err, sq, smape, scaled, base_abs, base_scaled = [], [], [], [], [], []
    by_window: dict[int, list[float]] = {}
    rank = result.table.groupby("unique_id")["cutoff"].rank(method="dense").astype(int) - 1
    for (uid, cutoff), rows in result.table.groupby(["unique_id", "cutoff"]):
        past = history[(history["unique_id"] == uid) & (history["ds"] <= cutoff)]["y"].to_numpy(np.float64)
        y, y_hat = rows["y"].to_numpy(np.float64), rows["y_hat"].to_numpy(np.float64)
        naive = seasonal_naive(past, H, M)
        scale = np.mean(np.abs(past[M:] - past[:-M]))
        err = np.abs(y_hat - y)
        abs_err += list(err)
        sq += list(err**2)
        smape += list(200 * err / (np.abs(y) + np.abs(y_hat)))
        scaled += list(err / scale)
        base_abs += list(np.abs(naive - y))
        base_scaled += list(np.abs(naive - y) / scale)
        by_window.setdefault(int(rank[rows.index[0]]), []).extend(err)
    m = result.metrics
    assert m["mae"] == pytest.approx(np.mean(abs_err), rel=1e-5)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(sq)), rel=1e-5)
    assert m["smape"] == pytest.approx(np.mean(smape), rel=1e-5)
    assert m["mase"] == pytest.approx(np.mean(scaled), rel=1e-5)
    assert m["snaive_mae"] == pytest.approx(np.mean(base_abs), rel=1e-5)
    assert m["snaive_mase"] == pytest.approx(np.mean(base_scaled), rel=1e-5)
    for k, errs in by_window.items():
        assert result.by_window.loc[k, "mae"] == pytest.approx(np.mean(errs), rel=1e-5)
    assert result.by_window["series"].tolist() == [5, 5, 5, 5]
    step_mae = result.table.assign(err=np.abs(result.table["y_hat"] - result.table["y"]))
    step_mae = step_mae.groupby(result.table.groupby(["unique_id", "cutoff"]).cumcount())["err"].mean()
    np.testing.assert_allclose(result.by_step["mae"], step_mae.to_numpy(), rtol=1e-5)


def test_missing_targets_are_left_out_of_every_score(history):
    gappy = history.copy()
    last = gappy.groupby("unique_id")["ds"].transform("max")
    hole = (gappy["unique_id"] == "s0") & (gappy["ds"] == last - pd.Timedelta(hours=2))
    gappy.loc[hole, "y"] = np.nan  # a target of s0's last window
    model = tiny_forecaster(history, missing="mask")
    full = backtest_frame(model, history, n_windows=2, season_length=M)
    result = backtest_frame(model, gappy, n_windows=2, season_length=M)
    t, f = result.table, full.table
    assert t["y"].isna().sum() == 1 and len(t) == len(f)
    keep = t["y"].notna().to_numpy()
    assert result.metrics["mae"] == pytest.approx(np.abs(t["y_hat"] - t["y"])[keep].mean(), rel=1e-5)
    assert np.isfinite(list(result.metrics.values())).all()
    # The hole is after the last cutoff: every forecast is the same as without it.
    np.testing.assert_allclose(t["y_hat"], f["y_hat"], rtol=1e-6)


def test_quantile_model_scores_pinball_and_coverage(history):
    qs = [0.1, 0.5, 0.9]
    model = tiny_forecaster(history, quantiles=qs)
    result = backtest_frame(model, history, n_windows=2, season_length=M)
    t = result.table
    assert [c for c in t.columns if c.startswith("y_hat")] == ["y_hat", "y_hat_q10", "y_hat_q50", "y_hat_q90"]
    np.testing.assert_array_equal(t["y_hat"], t["y_hat_q50"])
    preds = np.sort(t[["y_hat_q10", "y_hat_q50", "y_hat_q90"]].to_numpy(np.float64), axis=1)
    y = t["y"].to_numpy(np.float64)
    diff = y[:, None] - preds
    pinball = np.maximum(np.array(qs) * diff, (np.array(qs) - 1) * diff).mean()
    inside = ((preds[:, 0] <= y) & (y <= preds[:, 2])).mean()
    assert result.metrics["pinball"] == pytest.approx(pinball, rel=1e-5)
    assert result.metrics["coverage"] == pytest.approx(inside)
    assert result.metrics["coverage_nominal"] == pytest.approx(0.8)
    assert result.metrics["mae"] == pytest.approx(np.abs(t["y_hat_q50"] - t["y"]).mean(), rel=1e-5)


def test_one_forward_pass_per_batch_not_per_window(forecaster, history, monkeypatch):
    calls = []
    run = forecaster._run
    monkeypatch.setattr(forecaster, "_run", lambda batch: calls.append(len(batch["x"])) or run(batch))
    result = backtest_frame(forecaster, history, n_windows=8, step=2, season_length=M, batch_size=4096)
    assert result.n_windows == 40 - result.skipped and len(calls) == 1 and calls[0] == result.n_windows


def test_short_histories_are_skipped_and_counted(forecaster, history):
    # "short" has 30 steps: cut at 24, 20, 16, 12 and 8 steps; the last two lack M + 1 = 13.
    result = backtest_frame(forecaster, history, n_windows=5, step=4, season_length=M)
    counts = result.table.groupby("unique_id")["cutoff"].nunique()
    assert counts["short"] == 3 and (counts.drop("short") == 5).all()
    assert result.skipped == 2


def test_cutoff_ends_step_back_from_the_last_horizon():
    block = SeriesBlock(
        ids=np.array(["a", "b"]),
        starts=np.array([0, 50]),
        ends=np.array([50, 80]),
        values=np.zeros(80, np.float32),
        last_time=np.array([49, 79]),
    )
    np.testing.assert_array_equal(cutoff_ends(block, 6, 3, 4), [[36, 40, 44], [66, 70, 74]])


def test_bad_settings_and_too_short_data_name_the_problem(forecaster, history):
    with pytest.raises(ConfigError, match="n_windows"):
        backtest_frame(forecaster, history, n_windows=0, season_length=M)
    with pytest.raises(ConfigError, match="step"):
        backtest_frame(forecaster, history, n_windows=2, step=-1, season_length=M)
    with pytest.raises(DataValidationError, match="long enough to backtest"):
        backtest_frame(forecaster, history, n_windows=2, season_length=100)


def test_season_length_from_option_else_the_models_config(tmp_path):
    assert resolve_season_length(7, tmp_path) == 7
    with pytest.raises(ConfigError, match="season_length=N"):
        resolve_season_length(None, tmp_path)
    (tmp_path / "config.yaml").write_text("data:\n  season_length: 24\n")
    assert resolve_season_length(None, tmp_path) == 24
    with pytest.raises(ConfigError, match="season_length"):
        resolve_season_length("x", tmp_path)


def test_digest_changes_with_the_data(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("unique_id,ds,y\n")
    first = data_digest(a)
    a.write_text("unique_id,ds,y\ns,1,2\n")
    assert data_digest(a) != first and first.startswith("sha256:")


# -- the pipeline --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(tmp_path_factory, history):
    """A tiny model registered as bt@champion in a module-wide store, and its data file."""
    root = tmp_path_factory.mktemp("store")
    uri = store_with_models(root, [tiny_forecaster(history)], history, "bt", L)
    data = root / "history.parquet"
    history.to_parquet(data)
    return root, uri, data


def test_pipeline_writes_the_table_and_logs_one_run(registered, tmp_path, monkeypatch, capsys):
    root, uri, data = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "bt.parquet"
    args = [
        "model_uri=models:/bt@champion",
        f"input={data}",
        "n_windows=3",
        "step=4",
        f"season_length={M}",
        f"output={out}",
        f"paths.root_dir={root}",
        f"paths.log_dir={tmp_path}/logs",
    ]
    result = run_inprocess("backtest.py", args, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    table = pd.read_parquet(out)
    assert list(table.columns) == ["unique_id", "cutoff", "ds", "y", "y_hat"] and len(table) == 15 * H
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["backtest"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert {"backtest/mae", "backtest/mase", "backtest/snaive_mae", "backtest/smape"} <= set(run.data.metrics)
    assert run.data.tags["model_version"] == "1" and run.data.tags["data_digest"] == data_digest(data)
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "backtest/step_mae")) == H
    assert len(client.get_metric_history(run.info.run_id, "backtest/window_mae")) == 3
    names = {f.path for f in client.list_artifacts(run.info.run_id, "backtest")}
    assert {"backtest/forecasts.parquet", "backtest/errors.png", "backtest/by_window.csv"} <= names
    logged = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="backtest/forecasts.parquet"
        )
    )
    pd.testing.assert_frame_equal(logged, table)
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    ("override", "code", "message"),
    [
        # The tiny model here has no saved options (as before format 2): a refit cannot retrain it.
        ("refit=every:2", ConfigError.exit_code, "saved before its training options"),
        ("refit=sometimes", ConfigError.exit_code, "refit must be none or every:N"),
        ("model_uri=models:/nope@champion", ModelNotFoundError.exit_code, "nope"),
        ("n_windows=0", ConfigError.exit_code, "n_windows must be an integer >= 1"),
    ],
)
def test_pipeline_errors_are_one_line(registered, override, code, message, tmp_path, monkeypatch, capsys):
    root, uri, data = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = ["model_uri=models:/bt@champion", f"input={data}", f"season_length={M}", f"paths.root_dir={root}"]
    args += [f"paths.log_dir={tmp_path}/logs", override]
    result = run_inprocess("backtest.py", args, tmp_path, monkeypatch, capsys)
    assert result.code == code, result.stderr[-2000:]
    assert result.last_line.startswith("error: ") and message in result.last_line, result.last_line
