"""Forecasting with covariates: future rows in the history or a future table, the errors, old models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from covariate_helpers import ALL, FUTR, KINDS, H, build, covariate_frame, split, with_future_rows

from forecast.blocks import SeriesBlock
from forecast.data.validation import DataValidationError
from forecast.errors import ConfigError
from forecast.forecaster import Forecaster
from forecast.onnx import onnx_export_available

FIXTURES = Path(__file__).parent / "fixtures"
CUT = 50  # each series' history: its first 50 of 60 rows


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return covariate_frame()


@pytest.fixture(scope="module")
def model(frame) -> Forecaster:
    """Every kind at once: future-known numeric and categorical, past-only, static, calendar."""
    return build(frame, **ALL)


@pytest.mark.parametrize("kind", [*KINDS, "all"])
def test_future_rows_and_future_table_give_the_same_forecast(frame, kind):
    forecaster = build(frame, **(ALL if kind == "all" else KINDS[kind]))
    history, future = split(frame, CUT)
    combined = forecaster.predict(with_future_rows(history, future))
    tabled = forecaster.predict(history, future=future[["unique_id", "ds", *FUTR]])
    pd.testing.assert_frame_equal(combined, tabled)
    # the forecast's time stamps are the future rows'
    assert (combined["ds"].to_numpy() == future["ds"].to_numpy()).all()
    assert np.isfinite(combined["y_hat"]).all()


@pytest.mark.parametrize(
    ("kind", "column", "rows"),
    [
        ("futr", "price", "future"),  # the horizon's values reach the forecast
        ("futr_cat", "promo", "future"),
        ("hist", "load", "window"),
        ("hist_cat", "weather", "window"),
        ("static", "size", "all"),
        ("static_cat", "store", "all"),
    ],
)
def test_each_kind_moves_the_forecast(frame, kind, column, rows):
    forecaster = build(frame, **KINDS[kind])
    history, future = split(frame, CUT)
    base = forecaster.predict(with_future_rows(history, future))
    changed_history, changed_future = history.copy(), future.copy()
    new = {"price": 3.0, "promo": "b", "load": 3.0, "weather": "rain", "size": 99.0, "store": "mid"}[column]
    if rows in ("future", "all"):
        changed_future[column] = new
    if rows in ("window", "all"):
        changed_history[column] = new
    moved = forecaster.predict(with_future_rows(changed_history, changed_future))
    assert np.abs(moved["y_hat"] - base["y_hat"]).max() > 1e-4


def test_nothing_leaks_past_the_origin_or_the_horizon(frame, model):
    """Past-only values in the future rows, and future-known values after the horizon, are unread."""
    history, future = split(frame, CUT, horizon=H + 3)  # 3 rows beyond the horizon
    base = model.predict(with_future_rows(history, future))
    noisy = with_future_rows(history, future)
    after = noisy["y"].isna()
    noisy.loc[after, "load"] = 1e3  # past-only columns of future rows
    noisy.loc[after, "weather"] = "snow"
    beyond = noisy[after].groupby("unique_id").cumcount() >= H
    noisy.loc[beyond[beyond].index, "price"] = -1e3  # future-known after the horizon
    pd.testing.assert_frame_equal(model.predict(noisy), base)
    assert len(base) == 5 * H


def test_missing_future_rows_name_the_series_and_time_stamps(frame, model):
    history, future = split(frame, CUT)
    short = future[~((future.unique_id == "s2") & (future.ds > future.ds.min() + pd.Timedelta("1h")))]
    with pytest.raises(DataValidationError) as err:
        model.predict(with_future_rows(history, short))
    message = str(err.value)
    assert "1 series" in message and "'s2'" in message and "'s1'" not in message
    assert "2024-01-03 04:00:00" in message and "2024-01-03 05:00:00" in message
    # a future table without one step in the middle: that stamp alone
    gap = future[~((future.unique_id == "s4") & (future.ds == pd.Timestamp("2024-01-03 04:00")))]
    with pytest.raises(DataValidationError, match=r"'s4' at 2024-01-03 04:00:00\. Give") as err:
        model.predict(history, future=gap)
    # none at all: every series is named (up to five)
    with pytest.raises(DataValidationError, match="5 series lack future values"):
        model.predict(history)


def test_future_table_errors(frame, model):
    history, future = split(frame, CUT)
    with pytest.raises(DataValidationError, match=r"future table lacks column\(s\) \['promo'\]"):
        model.predict(history, future=future[["unique_id", "ds", "price"]])
    doubled = pd.concat([future, future.head(1)])
    with pytest.raises(DataValidationError, match="share a"):
        model.predict(history, future=doubled)
    holes = future.assign(price=np.where(future.index == 3, np.nan, future.price))
    with pytest.raises(DataValidationError, match="'price' has 1 missing value"):
        model.predict(history, future=holes)


def test_unseen_categories_map_to_unknown(frame, model):
    """A category training never saw is no error: it takes the unknown slot (code 0), so any
    two unseen labels forecast alike."""
    history, future = split(frame, CUT)
    table = with_future_rows(history, future)
    one = model.predict(table.assign(promo=table.promo.replace("c", "never-seen"), store="new-store"))
    other = model.predict(table.assign(promo=table.promo.replace("c", "also-new"), store="another"))
    assert np.isfinite(one["y_hat"]).all()
    pd.testing.assert_frame_equal(one, other)
    assert np.abs(one["y_hat"] - model.predict(table)["y_hat"]).max() > 1e-4
    codes = model.covariate_block(table.assign(store="new-store")).covariates.static["static_cat"]
    assert (codes == 0).all()


def test_series_without_history_is_named(frame, model):
    history, future = split(frame, CUT)
    table = with_future_rows(history, future)
    table.loc[table.unique_id == "s3", "y"] = np.nan
    with pytest.raises(DataValidationError, match=r"1 series have no observed value in 'y': 's3'"):
        model.predict(table)


def test_calendar_alone_needs_no_future_rows(frame):
    forecaster = build(frame, **KINDS["calendar"])
    history, future = split(frame, CUT)
    plain = forecaster.predict(history[["unique_id", "ds", "y"]])
    assert (plain["ds"].to_numpy() == future["ds"].to_numpy()).all()
    pd.testing.assert_frame_equal(plain, forecaster.predict(with_future_rows(history, future)))


def test_save_load_and_onnx_agree(frame, model, tmp_path):
    history, future = split(frame, CUT)
    table = with_future_rows(history, future)
    expected = model.predict(table)
    export = ["onnx"] if onnx_export_available() else []
    path = model.save(tmp_path / "m", export=export)
    settings = json.loads((path / "model.json").read_text())
    assert settings["covariates"]["futr_num"] == ["price"] and settings["covariates"]["static_cat"] == [
        "store"
    ]
    again = Forecaster.load(path)
    pd.testing.assert_frame_equal(again.predict(table), expected)
    if export:
        onnx = Forecaster.load(path, runtime="onnx")
        assert onnx.runtime == "onnx"
        got = onnx.predict(history, future=future)
        np.testing.assert_allclose(
            got["y_hat"], expected["y_hat"], rtol=0, atol=1e-5 * expected["y_hat"].abs().max()
        )


def test_a_block_without_covariates_is_refused_clearly(frame, model):
    """What a caller that builds series by hand (the backtest) meets with a covariate model."""
    history, _ = split(frame, CUT)
    block = SeriesBlock.from_frame(model.validate(history[["unique_id", "ds", "y"]]).frame, model.columns)
    with pytest.raises(ConfigError, match="reads covariates .*futr: \\['price', 'promo'\\]"):
        model.scaled_windows(block)
    with pytest.raises(ValueError, match="predict_scaled needs"):
        model.predict_scaled(np.zeros((2, 12), np.float32))


@pytest.mark.parametrize("name", ["model_v1", "model_v1_cycle"])
@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_models_saved_before_covariates_forecast_the_same(name, runtime):
    if runtime == "onnx" and not onnx_export_available():
        pytest.skip("onnxruntime not installed")
    folder = FIXTURES / name
    assert "covariates" not in json.loads((folder / "model.json").read_text())
    history = pd.read_csv(FIXTURES / "model_v1" / "history.csv", parse_dates=["ds"])
    expected = pd.read_csv(folder / "forecast.csv", parse_dates=["ds"])
    forecaster = Forecaster.load(folder, runtime=runtime)
    assert forecaster.runtime == runtime and forecaster.encoder is None
    got = forecaster.predict(history)
    assert list(got.columns) == list(expected.columns)
    assert (got["ds"].to_numpy() == expected["ds"].to_numpy()).all()
    # the CSV holds the float32 forecasts rounded to 8 significant digits
    np.testing.assert_allclose(got.iloc[:, 2:].to_numpy(), expected.iloc[:, 2:].to_numpy(), rtol=1e-6)


def test_origins_inside_the_history_forecast_as_a_cut_history(frame, model):
    """The backtest's recipe: encode the whole table once (need_future=False), cut each series
    at an earlier origin and point `ahead` there: the same forecast as the cut history with
    its next rows as future rows."""
    from forecast.blocks import CovariateRows

    block = model.covariate_block(frame, need_future=False)
    cut_at = block.starts + 40  # (n,) origins: 40 rows into every series
    rows = block.covariates
    cut = SeriesBlock(
        block.ids,
        block.starts,
        cut_at,
        block.values,
        frame["ds"].to_numpy()[cut_at - 1],
        CovariateRows(rows.rows, rows.static, cut_at),
    )
    got = model.forecast_windows(model.scaled_windows(cut))
    history, future = split(frame, 40)
    pd.testing.assert_frame_equal(got, model.predict(with_future_rows(history, future)))


def test_backtest_of_a_covariate_model_is_the_forecast_at_each_cutoff(frame, model):
    """Each backtest window reads its own covariates: the same forecast as `predict` on the
    history cut at that cutoff with its next rows as future rows."""
    from forecast.backtest import backtest_frame

    table = backtest_frame(model, frame, n_windows=2, step=H, season_length=2).table
    length = int(frame.groupby("unique_id").size().min())
    assert (frame.groupby("unique_id").size() == length).all()
    for cut in (length - 2 * H, length - H):
        history, future = split(frame, cut)
        expected = model.predict(with_future_rows(history, future))
        cutoffs = history.groupby("unique_id")["ds"].max().rename("cutoff").reset_index()
        got = table.merge(cutoffs, on=["unique_id", "cutoff"]).sort_values(["unique_id", "ds"])
        assert len(got) == len(expected)
        np.testing.assert_array_equal(got["ds"].to_numpy(), expected["ds"].to_numpy())
        np.testing.assert_allclose(
            got["y_hat"].to_numpy(), expected["y_hat"].to_numpy(), rtol=1e-5, atol=1e-6
        )
