"""The benchmark protocol reproduces the reference figures of BENCHMARKS.md.

Needs the benchmark data: the folder in FORECAST_BENCH_DATA, else `shared/data` beside
the repository root; skipped when it is absent.
"""

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from forecast.baselines import forecast_many, naive2, seasonal_naive, seasonality_test

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
protocol = importlib.import_module("protocol")  # bench scripts import it the same way

DATA = Path(os.environ.get("FORECAST_BENCH_DATA") or REPO / ".." / "shared" / "data").resolve()


def _require(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data not found: {path}")
    return DATA


@pytest.fixture(scope="module")
def m4():
    return protocol.load_m4_hourly(_require("m4-hourly", "Hourly-train.csv"))


@pytest.fixture(scope="module")
def etth1():
    return protocol.load_etth1(_require("ett", "ETTh1.csv"))


def test_m4_loading(m4):
    train, test, ids = m4
    assert len(train) == len(ids) == 414
    assert test.shape == (414, 48)
    assert ids[0] == "H1"
    lengths = [s.size for s in train]
    assert min(lengths) == 700 and max(lengths) == 960
    assert not any(np.isnan(s).any() for s in train)


def test_m4_long_format_round_trip(m4):
    train, test, ids = m4
    long = protocol.m4_to_long(train[:3], ids[:3])
    assert list(long.columns) == ["unique_id", "ds", "y"]
    assert len(long) == sum(s.size for s in train[:3])
    first = long[long.unique_id == ids[1]]
    assert str(first.ds.iloc[0]) == "2000-01-01 00:00:00"
    np.testing.assert_array_equal(first.y.to_numpy(), train[1])
    # Forecast frames in long format come back in the order of ids.
    fc = protocol.m4_to_long(list(test[:3]), ids[:3])
    np.testing.assert_array_equal(protocol.long_to_array(fc[::-1], ids[:3], "y"), test[:3])


def test_m4_seasonal_naive_reference(m4):
    train, test, _ = m4
    scores = protocol.score_m4(forecast_many(seasonal_naive, train, 48, season_length=24), train, test)
    assert round(scores["smape"], 3) == 13.912
    assert round(scores["mase"], 3) == 1.193
    assert round(scores["owa"], 3) == 0.628


def test_m4_validation_windows(m4):
    """B1's validation windows: each series' last 48 training values, from the values before them;
    scored like the test (MASE on the history's own seasonal error, OWA against Naive2 there)."""
    train, _, _ = m4
    history, target = protocol.m4_validation(train)
    assert target.shape == (414, 48) and len(history) == 414
    for series, before, after in zip(train, history, target, strict=True):
        assert before.size == series.size - 48
        np.testing.assert_array_equal(np.concatenate([before, after]), series)
    n2 = protocol.score_m4(forecast_many(naive2, history, 48, season_length=24), history, target)
    reference = (n2["smape"], n2["mase"])
    assert (round(reference[0], 3), round(reference[1], 3)) == (19.225, 2.455)
    sn = protocol.score_m4(
        forecast_many(seasonal_naive, history, 48, season_length=24), history, target, reference=reference
    )
    assert (round(sn["smape"], 3), round(sn["mase"], 3), round(sn["owa"], 3)) == (14.570, 1.228, 0.629)


def test_m4_naive2_reference(m4):
    train, test, _ = m4
    assert sum(seasonality_test(s, 24) for s in train) == 413
    scores = protocol.score_m4(forecast_many(naive2, train, 48, season_length=24), train, test)
    assert round(scores["smape"], 3) == protocol.NAIVE2_SMAPE == 18.383
    assert round(scores["mase"], 3) == protocol.NAIVE2_MASE == 2.395
    assert round(scores["owa"], 3) == 1.0


def test_etth1_standardization(etth1):
    values, mean, std = protocol.etth1_standardized(etth1, ["OT"])
    assert round(float(mean[0]), 3) == 17.128
    assert round(float(std[0]), 3) == 9.176
    assert values.shape == (17420, 1)
    assert abs(values[: protocol.ETT_TRAIN_END].mean()) < 1e-12


def test_etth1_split_bounds():
    bounds = protocol.etth1_bounds(96)
    assert bounds == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}


@pytest.mark.parametrize(
    ("horizon", "n_windows", "naive_ref", "snaive_ref"),
    [
        (24, 2857, (0.0343, 0.139), (0.0458, 0.166)),
        (96, 2785, (0.0693, 0.203), (0.0715, 0.211)),
    ],
)
def test_etth1_ot_reference(etth1, horizon, n_windows, naive_ref, snaive_ref):
    x, y = protocol.etth1_test_windows(etth1, 96, horizon, ["OT"])
    assert x.shape == (n_windows, 96, 1)
    assert y.shape == (n_windows, horizon, 1)
    # The first target is the first test row, the last target the last test row.
    values, _, _ = protocol.etth1_standardized(etth1, ["OT"])
    assert y[0, 0, 0] == values[protocol.ETT_VAL_END, 0]
    assert y[-1, -1, 0] == values[protocol.ETT_TEST_END - 1, 0]
    np.testing.assert_array_equal(x[1:, -1], y[:-1, 0])

    last = protocol.score_windows(protocol.last_value_windows(x, horizon), y)
    assert (round(last["mse"], 4), round(last["mae"], 3)) == naive_ref
    seas = protocol.score_windows(protocol.seasonal_naive_windows(x, horizon, 24), y)
    assert (round(seas["mse"], 4), round(seas["mae"], 3)) == snaive_ref


def test_etth1_long_multivariate_windows_are_views(etth1):
    values, _, _ = protocol.etth1_standardized(etth1, protocol.ETT_COLUMNS)
    x, y = protocol.etth1_windows(values, "test", 336, 720)
    assert x.shape == (2161, 336, 7) and y.shape == (2161, 720, 7)
    assert np.shares_memory(x, values) and np.shares_memory(y, values)
    np.testing.assert_array_equal(x[5, :, 3], values[11520 - 336 + 5 : 11520 + 5, 3])
