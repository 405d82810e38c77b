"""B4 (EPF): the loader, split and metrics reproduce the reference figures of BENCHMARKS.md.

Needs the benchmark data: the folder in FORECAST_BENCH_DATA, else `shared/data` beside the
repository root; the tests that read it are skipped when it is absent.
"""

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
protocol = importlib.import_module("protocol")  # bench scripts import it the same way

DATA = Path(os.environ.get("FORECAST_BENCH_DATA") or REPO / ".." / "shared" / "data").resolve()

# BENCHMARKS.md, B4: (weekly naive MAE, daily naive MAE) over the 728 test days.
REFERENCE = {"NP": (4.125, 2.886), "PJM": (6.294, 4.431), "BE": (10.121, 9.379)}


def _load(market: str):
    path = DATA / "epf" / f"{market}.csv"
    if not path.exists():
        pytest.skip(f"benchmark data not found: {path}")
    return protocol.load_epf(DATA, market)


@pytest.fixture(scope="module", params=protocol.EPF_MARKETS)
def market(request):
    return request.param, _load(request.param)


def test_loading(market):
    name, frame = market
    assert list(frame.columns) == ["unique_id", "ds", "y", *protocol.EPF_COVARIATES[name]]
    assert len(frame) == 52416 and (frame["unique_id"] == name).all()
    assert frame["ds"].iloc[0].hour == 0 and not frame.isna().any().any()


def test_split_is_whole_days_and_test_is_last_728(market):
    _, frame = market
    b = protocol.epf_bounds(len(frame))
    assert b["test"] == (len(frame) - 728 * 24, len(frame))
    assert b["train"][1] == b["test"][0] == b["val"][1]
    assert b["val"][1] - b["val"][0] == 364 * 24 and b["fit"][1] == b["val"][0]
    for start, end in b.values():
        assert start % 24 == 0 and end % 24 == 0
    assert all(frame["ds"].iloc[protocol.epf_origins(*b["test"])].dt.hour == 0)


def test_reference_naive_figures(market):
    name, frame = market
    y = frame["y"].to_numpy()
    start, end = protocol.epf_bounds(len(frame))["test"]
    actual = y[start:end].reshape(-1, 24)
    weekly = protocol.epf_naive(y, start, end, 168)
    daily = protocol.epf_naive(y, start, end, 24)
    w = protocol.score_epf(actual, weekly, weekly)
    d = protocol.score_epf(actual, daily, weekly)
    assert round(w["mae"], 3) == REFERENCE[name][0]
    assert round(d["mae"], 3) == REFERENCE[name][1]
    assert w["rmae"] == 1.0
    assert d["rmae"] == pytest.approx(REFERENCE[name][1] / REFERENCE[name][0], abs=1e-3)
    if name == "NP":
        assert round(w["smape"], 2) == 11.66


def test_day_windows_end_before_the_day():
    values = np.arange(24 * 20, dtype=float)
    x, y = protocol.epf_day_windows(values, 24 * 10, 24 * 12, 168)
    assert x.shape == (2, 168) and y.shape == (2, 24)
    assert x[0, -1] == 24 * 10 - 1 and y[0, 0] == 24 * 10 and y[1, -1] == 24 * 12 - 1
    np.testing.assert_array_equal(protocol.epf_naive(values, 240, 288, 24), x[:, -24:])


def test_scores_by_hand():
    y = np.array([[10.0, 20.0], [0.0, 40.0]])
    f = np.array([[12.0, 20.0], [0.0, 30.0]])
    w = np.array([[11.0, 25.0], [4.0, 40.0]])
    s = protocol.score_epf(y, f, w)
    assert s["mae"] == pytest.approx(3.0)
    assert s["rmse"] == pytest.approx(np.sqrt((4 + 100) / 4))
    assert s["smape"] == pytest.approx(200 * (2 / 22 + 10 / 70) / 4)  # 0/0 counts as 0
    assert s["rmae"] == pytest.approx(3.0 / 2.5)
    with pytest.raises(ValueError):
        protocol.epf_origins(5, 48)
    with pytest.raises(ValueError):
        protocol.load_epf(DATA, "XX")


def test_day_inputs_see_prices_before_the_day_and_covariates_through_it():
    """bench/epf.py's batch for day d: prices up to the end of d - 1, covariates (and calendar)
    of rows [o - L, o + 24): changing a price of day d or a covariate after it changes nothing."""
    from types import SimpleNamespace

    import pandas as pd

    from forecast.data.covariate_encoder import CovariateEncoder
    from forecast.data.covariates import CovariateConfig

    epf = importlib.import_module("epf")
    n, L = 24 * 12, 48
    frame = pd.DataFrame(
        {
            "unique_id": "NP",
            "ds": pd.date_range("2018-01-01", periods=n, freq="h"),
            "y": np.arange(n, dtype=float),
            "load_forecast": np.arange(n, dtype=float) * 10,
            "wind_forecast": np.ones(n),
        }
    )
    config = CovariateConfig(futr=("load_forecast", "wind_forecast"), calendar=("hour",))
    encoder = CovariateEncoder.fit(frame, config, np.ones(n, bool))

    class Scaler:
        def lookup(self, ids):
            return np.array([10.0]), np.array([2.0]), np.array([True])

    forecaster = SimpleNamespace(
        scaler=Scaler(),
        settings=SimpleNamespace(net_params={}, freq="h", covariates=encoder.to_dict()),
    )
    origins = np.array([24 * 5, 24 * 8])
    batch = epf.day_inputs(forecaster, frame, origins, L)
    assert batch["x"].shape == (2, L) and batch["futr"].shape == (2, L + 24, 4)
    np.testing.assert_allclose(batch["x"][0], (np.arange(24 * 5 - L, 24 * 5) - 10) / 2)
    changed = frame.copy()
    changed.loc[24 * 5 : 24 * 6 - 1, "y"] = -1.0  # the prices of the first forecast day
    changed.loc[24 * 6 :, "load_forecast"] = -1.0  # covariates after it
    again = epf.day_inputs(forecaster, changed, origins[:1], L)
    np.testing.assert_array_equal(again["x"], batch["x"][:1])
    np.testing.assert_array_equal(again["futr"], batch["futr"][:1])
    changed.loc[24 * 6 - 1, "load_forecast"] = 0.0  # the last hour of the day: an input
    assert not np.array_equal(epf.day_inputs(forecaster, changed, origins[:1], L)["futr"], batch["futr"][:1])
