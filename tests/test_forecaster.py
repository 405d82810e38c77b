from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from model_helpers import tiny_forecaster

from forecast.data import SeriesDataModule
from forecast.forecaster import Forecaster, ForecasterSettings
from forecast.layout import future_timestamps
from forecast.models import ForecastModule
from forecast.training import build_forecaster


@pytest.fixture
def forecaster(tiny_frame) -> Forecaster:
    return tiny_forecaster(tiny_frame)


def test_forecast_table_shape_and_timestamps(forecaster, tiny_frame):
    out = forecaster.predict(tiny_frame)
    assert list(out.columns) == ["unique_id", "ds", "y_hat"]
    assert len(out) == 6 * 6
    first = out[out.unique_id == "s0"]["ds"]
    last_seen = tiny_frame[tiny_frame.unique_id == "s0"]["ds"].max()
    assert list(first) == list(pd.date_range(last_seen + pd.Timedelta("1h"), periods=6, freq="h"))
    assert np.isfinite(out["y_hat"]).all()


def test_save_load_gives_identical_forecasts(forecaster, tiny_frame, tmp_path):
    path = forecaster.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "scaler.parquet", "weights.safetensors"]
    again = Forecaster.load(path)
    pd.testing.assert_frame_equal(again.predict(tiny_frame), forecaster.predict(tiny_frame))


def test_forecast_uses_only_the_last_input_window(forecaster, tiny_frame):
    tail = tiny_frame.groupby("unique_id").tail(24)
    pd.testing.assert_frame_equal(forecaster.predict(tail), forecaster.predict(tiny_frame))


def test_unknown_series_are_scaled_by_their_own_history(forecaster, tiny_frame):
    new = tiny_frame[tiny_frame.unique_id == "s0"].assign(unique_id="brand-new")
    out = forecaster.predict(new)
    assert set(out.unique_id) == {"brand-new"} and np.isfinite(out.y_hat).all()


def test_history_shorter_than_the_input_is_padded(forecaster, tiny_frame):
    """10 of 24 steps: forecast from a padded window, as if the 14 before were missing."""
    out = forecaster.predict(tiny_frame.groupby("unique_id").head(10))
    assert len(out) == 6 * 6 and np.isfinite(out["y_hat"]).all()


def test_quantile_columns(tiny_frame):
    dm = SeriesDataModule(frame=tiny_frame, freq="h", input_size=24, horizon=6)
    dm.setup()
    module = ForecastModule(
        input_size=24, horizon=6, hidden_size=8, loss="quantile", quantiles=[0.1, 0.5, 0.9]
    )
    out = build_forecaster(module, dm).predict(tiny_frame)
    assert list(out.columns) == ["unique_id", "ds", "y_hat", "y_hat_q10", "y_hat_q50", "y_hat_q90"]
    np.testing.assert_array_equal(out["y_hat"], out["y_hat_q50"])  # the point forecast: the median


def test_future_timestamps_for_calendar_and_integer_steps():
    last = pd.Series(pd.to_datetime(["2024-01-31", "2024-02-29"]))
    got = future_timestamps(last, 2, "ME")
    assert list(pd.DatetimeIndex(got).strftime("%Y-%m-%d")) == [
        "2024-02-29",
        "2024-03-31",
        "2024-03-31",
        "2024-04-30",
    ]
    assert future_timestamps(pd.Series([10, 20]), 3, 2).tolist() == [12, 14, 16, 22, 24, 26]


def test_newer_format_is_refused(forecaster, tmp_path):
    path = forecaster.save(tmp_path / "m")
    settings = (path / "model.json").read_text().replace('"format_version": 2', '"format_version": 99')
    (path / "model.json").write_text(settings)
    with pytest.raises(ValueError, match="upgrade the package"):
        Forecaster.load(path)


def test_settings_output_columns():
    s = ForecasterSettings(
        net="recurrent", net_params={}, input_size=1, horizon=1, freq="h", columns={}, scaler="none"
    )
    assert s.output_columns == ["y_hat"] and s.quantile_columns == []
    quantiles = replace(s, quantiles=[0.05, 0.5, 0.95])
    assert quantiles.output_columns == ["y_hat", "y_hat_q05", "y_hat_q50", "y_hat_q95"]
