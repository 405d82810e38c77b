"""The short-history blend (`forecast.short_history`): young series forecast at least as well as
seasonal naive, full windows untouched, the blend saved and loaded with the model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from covariate_helpers import ALL, covariate_frame
from covariate_helpers import H as CH
from covariate_helpers import L as CL
from model_helpers import quiet_trainer, tiny_forecaster

from forecast.backtest import backtest_frame
from forecast.data import SeriesDataModule
from forecast.data.synthetic import synthetic_long
from forecast.errors import ModelNotFoundError
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule
from forecast.short_history import (
    SHORT_HISTORY,
    ShortHistoryBlend,
    calibrate_short_history,
    cut_covariates,
    fit_weight,
    knots_for,
    observed_steps,
    seasonal_naive,
    truncate,
    validation_arrays,
)
from forecast.training import build_forecaster

L, H, M = 48, 12, 24  # two days in, half a day out, a daily season


def blend_of(weights: list[float], knots: list[int] = (24, 47)) -> ShortHistoryBlend:
    n = len(knots)
    return ShortHistoryBlend(M, L, np.array(knots), np.array(weights, dtype=np.float64), np.full(n, 100))


def young(frame: pd.DataFrame, steps: int, every: int = 2) -> pd.DataFrame:
    """Every `every`-th series keeps only its last `steps` rows."""
    codes = frame["unique_id"].str[1:].astype(int)
    tail = frame.groupby("unique_id").cumcount(ascending=False) < steps
    return frame[(codes % every != 0) | tail].reset_index(drop=True)


def test_observed_steps_and_the_last_season_tiled():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    x[1, :4] = np.nan
    assert observed_steps(x).tolist() == [6, 2]
    assert seasonal_naive(x, 3, 5)[0].tolist() == [3, 4, 5, 3, 4]
    assert knots_for(168, 24) == [24, 48, 72, 96, 120, 144, 167]
    assert knots_for(24, 24) == []  # no whole season below the window: nothing to blend


def test_weight_interpolates_and_keeps_the_net_for_full_windows_and_less_than_a_season():
    blend = blend_of([0.0, 0.5])
    w = blend.weight(np.array([48, 47, 40, 35, 24, 23, 5]))
    assert w.tolist() == pytest.approx([1.0, 0.5, 0.5 * 16 / 23, 0.5 * 11 / 23, 0.0, 1.0, 1.0])


def test_fit_weight_finds_the_mix_of_the_truth():
    rng = np.random.default_rng(0)
    net, naive, scale = rng.uniform(1, 2, size=(50, H)), rng.uniform(1, 2, size=(50, H)), np.ones(50)
    assert fit_weight(net, naive, 0.3 * net + 0.7 * naive, scale) == pytest.approx(0.3)
    assert fit_weight(net, naive, naive, scale) == 0.0 and fit_weight(net, naive, net, scale) == 1.0


def test_apply_moves_every_column_by_the_point_shift():
    x = np.tile(np.arange(L, dtype=np.float32), (2, 1))
    x[1, :10] = np.nan  # 38 observed steps
    preds = np.stack([np.zeros((2, H)), -np.ones((2, H)), np.ones((2, H))], axis=-1).astype(np.float32)
    out = blend_of([0.0, 0.0]).apply(preds, x)
    assert np.array_equal(out[0], preds[0])  # full window: untouched
    naive = x[1, L - M + np.arange(H) % M]
    np.testing.assert_allclose(out[1, :, 0], naive)
    np.testing.assert_allclose(out[1, :, 2] - out[1, :, 1], 2.0)  # the spread is kept


def test_full_windows_are_bit_identical_with_the_blend(tiny_frame):
    forecaster = tiny_forecaster(tiny_frame, input_size=L, horizon=H)
    before = forecaster.predict(tiny_frame)
    forecaster.short_history = blend_of([0.0, 0.0])  # as far from the net as a blend goes
    pd.testing.assert_frame_equal(forecaster.predict(tiny_frame), before)
    x = np.random.default_rng(0).normal(size=(5, L)).astype(np.float32)
    x[2, 7] = np.nan  # a missing value inside a full window: still a full window
    assert np.array_equal(forecaster.predict_scaled(x), forecaster.predict_scaled(x, blend=False))


def test_short_windows_get_the_blend_in_predict_and_in_the_backtest(tiny_frame):
    forecaster = tiny_forecaster(tiny_frame, input_size=L, horizon=H)
    history = young(tiny_frame, 30, every=1)  # 30 of 48 steps observed
    net = forecaster.predict(history)
    forecaster.short_history = blend_of([0.0, 0.0])  # seasonal naive alone
    blended = forecaster.predict(history)
    last_day = history.groupby("unique_id").tail(M).groupby("unique_id")["y"].apply(list)
    expected = np.concatenate([np.resize(v, H) for v in last_day])
    np.testing.assert_allclose(blended["y_hat"], expected, rtol=1e-5)
    assert not np.allclose(net["y_hat"], blended["y_hat"])
    # The backtest forecasts through the same method: its forecast is its own seasonal naive.
    result = backtest_frame(forecaster, young(tiny_frame, 30 + H, every=1), n_windows=1, season_length=M)
    assert result.metrics["mae"] == pytest.approx(result.metrics["snaive_mae"], rel=1e-5)


def test_saved_model_round_trips_the_blend(tiny_frame, tmp_path):
    forecaster = tiny_forecaster(tiny_frame, input_size=L, horizon=H)
    history = young(tiny_frame, 30)
    plain = forecaster.save(tmp_path / "plain")
    assert not (plain / SHORT_HISTORY).exists() and Forecaster.load(plain).short_history is None
    forecaster.short_history = blend_of([0.2, 0.7])
    path = forecaster.save(tmp_path / "model")
    again = Forecaster.load(path)
    assert again.short_history.to_dict() == forecaster.short_history.to_dict()
    pd.testing.assert_frame_equal(again.predict(history), forecaster.predict(history))
    stored = json.loads((path / SHORT_HISTORY).read_text())
    (path / SHORT_HISTORY).write_text(json.dumps({**stored, "input_size": 24}))
    with pytest.raises(ModelNotFoundError, match="input windows of 24 steps"):
        Forecaster.load(path)
    (path / SHORT_HISTORY).write_text(json.dumps({**stored, "format_version": 99}))
    with pytest.raises(ModelNotFoundError, match="newer"):
        Forecaster.load(path)


def test_no_blend_without_a_whole_season_below_the_window(tiny_frame):
    dm = SeriesDataModule(frame=tiny_frame, input_size=24, horizon=6, freq="h", season_length=24)
    dm.setup()
    forecaster = tiny_forecaster(tiny_frame, input_size=24, horizon=6)
    assert calibrate_short_history(forecaster, dm) is None and forecaster.short_history is None


def test_young_series_forecast_at_least_as_well_as_seasonal_naive():
    """Seasonal series, half of them young (30 training steps, then validation and test): a
    briefly trained model, its blend calibrated on validation windows; the young series' test
    part forecast from the 42 steps before it scores at or below seasonal naive on average (the
    net alone: 2.99 MAE against 2.99, the blend 2.75; sMAPE 7.3, 7.0 against 8.4)."""
    frame = young(synthetic_long(n_series=24, length=400, seed=3), 30 + 2 * H)
    dm = SeriesDataModule(frame=frame, input_size=L, horizon=H, freq="h", batch_size=64)
    dm.setup()
    torch.manual_seed(0)
    module = ForecastModule(input_size=L, horizon=H, hidden_size=16, head_hidden=16, segment_len=4)
    quiet_trainer(300).fit(module, datamodule=dm)  # about 2 s
    forecaster = build_forecaster(module, dm)
    blend = calibrate_short_history(forecaster, dm)
    assert blend is not None and forecaster.short_history is blend

    ids = [f"s{i}" for i in range(0, 24, 2)]
    series = frame[frame.unique_id.isin(ids)].sort_values(["unique_id", "ds"])  # the output's order
    history = series[series.groupby("unique_id").cumcount(ascending=False) >= H]  # 42 steps
    truth = series.groupby("unique_id").tail(H)["y"].to_numpy().reshape(-1, H)
    assert (history.groupby("unique_id").size() < L).all()
    blended = forecaster.predict(history)["y_hat"].to_numpy().reshape(-1, H)
    last = history.groupby("unique_id").tail(M)["y"].to_numpy().reshape(-1, M)
    naive = np.tile(last, (1, -(-H // M)))[:, :H]

    def smape(f):
        return np.mean(200 * np.abs(f - truth) / (np.abs(f) + np.abs(truth)))

    assert np.abs(blended - truth).mean() <= np.abs(naive - truth).mean()
    assert smape(blended) <= smape(naive)


def test_calibration_forecasts_what_a_young_series_forecast_sees():
    """A validation window cut to its last k steps, as the calibration forecasts it, is the
    forecast of the series from those k steps alone: covariates of the padded steps zeroed and
    the learned cycle's step kept, as `Forecaster.predict` pads."""
    frame = covariate_frame(n_series=5, length=60)
    dm = SeriesDataModule(
        frame=frame, freq="h", input_size=CL, horizon=CH, val_size=2 * CH, season_length=4, **ALL
    )
    dm.setup()
    torch.manual_seed(0)
    dims = dm.covariates.dims
    module = ForecastModule(
        input_size=CL, horizon=CH, hidden_size=8, head_hidden=8, segment_len=4, covariates=dims, cycle_len=24
    )
    forecaster = build_forecaster(module, dm)
    blend = calibrate_short_history(forecaster, dm, knots=[2, 4, 8, 12])  # 2 < a season, 12 = L
    assert blend.knots.tolist() == [4, 8] and ((0 <= blend.weights) & (blend.weights <= 1)).all()

    ds, k, i = dm.datasets["val"], 8, 3
    a = validation_arrays(ds, np.array([i]), 16)
    covariates = {key: a[key] for key in ("futr", "futr_cat", "hist", "hist_cat", "static", "static_cat")}
    x = truncate(a["x"], k)
    scaled = forecaster.predict_scaled(
        x, 16, a["step"], a["series"], cut_covariates(covariates, k, CL), a["loc"], a["scale"], blend=False
    )
    origin = int(ds.starts[i]) + CL  # the window's first target, a row of the whole table
    history, future = frame.iloc[origin - k : origin], frame.iloc[origin : origin + CH]
    assert origin >= k and history["unique_id"].nunique() == 1 and future["unique_id"].nunique() == 1
    forecaster.short_history = None
    expected = forecaster.predict(history, future)["y_hat"].to_numpy()
    np.testing.assert_allclose(scaled[0, :, 0] * a["scale"][0] + a["loc"][0], expected, rtol=1e-5)
