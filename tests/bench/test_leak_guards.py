"""Leak guards of the accuracy benchmarks: the exact tables the scripts hand to training (ours and
neuralforecast's) hold no test value.

The scripts run their real `main` up to the point where training starts; `common.train` (and
neuralforecast's `fit`) are replaced by stand-ins that keep the table they are given and stop.
The expected tables are rebuilt here from the CSV files, independently of `protocol.py`.
Needs the benchmark data: the folder in FORECAST_BENCH_DATA, else `shared/data` beside the
repository root; skipped when it is absent.
"""

import importlib
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
common = importlib.import_module("common")  # the scripts' own module object
DATA = Path(os.environ.get("FORECAST_BENCH_DATA") or REPO / ".." / "shared" / "data").resolve()

ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
ETT_TRAIN_END, ETT_VAL_END = 8640, 11520  # the protocol's borders, written out on purpose


class Stop(Exception):
    """Raised by the stand-ins once they hold the training table."""


def _require(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data not found: {path}")
    return DATA


@pytest.fixture(autouse=True)
def _restore_logging():
    """The scripts' `quiet()` sets library loggers to ERROR: undo it for the tests that follow."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "forecast")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def handed_to_training(monkeypatch):
    """What the scripts give `common.train`: (overrides, the table read back from data.path)."""
    seen = []

    def fake_train(overrides, seed, last_checkpoint=False):
        path = next(o.split("=", 1)[1] for o in overrides if o.startswith("data.path="))
        seen.append((list(overrides), pd.read_parquet(path)))
        raise Stop

    monkeypatch.setattr(common, "train", fake_train)
    return seen


@pytest.fixture
def handed_to_neuralforecast(monkeypatch):
    """What the scripts give neuralforecast's `fit`: (table, val_size); a stand-in package."""
    seen = []

    class FakeNeuralForecast:
        def __init__(self, models, freq):
            pass

        def fit(self, df, val_size=0, **kwargs):
            seen.append((df.copy(), val_size))
            raise Stop

    fake = types.ModuleType("neuralforecast")
    fake.NeuralForecast = FakeNeuralForecast
    monkeypatch.setitem(sys.modules, "neuralforecast", fake)
    monkeypatch.setattr(common, "neuralforecast_lstm", lambda *args, **kwargs: object())
    return seen


# -- B1, M4 Hourly --------------------------------------------------------------------------------
def _m4_expected() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every training value (long: unique_id, y in order) and every test value, from the CSVs."""
    root = _require("m4-hourly", "Hourly-train.csv") / "m4-hourly"
    train, test = pd.read_csv(root / "Hourly-train.csv"), pd.read_csv(root / "Hourly-test.csv")
    long = train.melt(id_vars=train.columns[0], var_name="step", value_name="y").dropna()
    long["step"] = long["step"].str[1:].astype(int)  # V2, V3, ...: the order within a series
    long = long.rename(columns={train.columns[0]: "unique_id"}).sort_values(["unique_id", "step"])
    return long.reset_index(drop=True), test.set_index(test.columns[0])


def _check_m4_table(table: pd.DataFrame) -> None:
    expected, test = _m4_expected()
    got = table.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    # Exactly the training part of every series, in order: no test value, nothing dropped.
    assert got["unique_id"].nunique() == len(test) == 414 and len(got) == len(expected)
    assert (got["unique_id"].to_numpy() == expected["unique_id"].to_numpy()).all()
    np.testing.assert_array_equal(got["y"].to_numpy(dtype=float), expected["y"].to_numpy(dtype=float))
    # And per series: the table stops before the test part (its 48 values never follow the
    # training part in the table).
    last = got.groupby("unique_id", sort=False)["y"].apply(lambda y: y.to_numpy()[-48:])
    firsts = test.to_numpy(dtype=float)
    assert not any(np.array_equal(last[uid], firsts[i]) for i, uid in enumerate(test.index))


def test_m4_training_table_holds_no_test_value(handed_to_training):
    m4 = importlib.import_module("m4_hourly")
    with pytest.raises(Stop):
        m4.main(["--no-baselines", "--data", str(_require("m4-hourly", "Hourly-test.csv"))])
    [(overrides, table)] = handed_to_training
    assert "data.test_size=0" in overrides  # the table is training + validation, no test split
    _check_m4_table(table)


def test_m4_neuralforecast_table_holds_no_test_value(handed_to_neuralforecast):
    m4 = importlib.import_module("m4_hourly")
    protocol = importlib.import_module("protocol")
    train, test, ids = protocol.load_m4_hourly(_require("m4-hourly", "Hourly-test.csv"))
    windows = m4.Windows.build(train, test)
    steps = {"max_steps": 10, "val_every": 5, "patience": 5}
    with pytest.raises(Stop):
        m4.run_neuralforecast(windows, ids, 168, steps, 256, 1)
    [(table, val_size)] = handed_to_neuralforecast
    assert val_size == 48  # validates on the last 48 training values, like ours
    _check_m4_table(table)


# -- B2, ETTh1 ------------------------------------------------------------------------------------
def _ett_expected(columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows [0, 11520) of `columns`, standardised with the mean and std of rows [0, 8640)."""
    frame = pd.read_csv(_require("ett", "ETTh1.csv") / "ett" / "ETTh1.csv", parse_dates=["date"])
    raw = frame[columns].to_numpy(dtype=float)
    mean, std = raw[:ETT_TRAIN_END].mean(0), raw[:ETT_TRAIN_END].std(0)
    return frame, (raw - mean) / std


def _check_ett_table(table: pd.DataFrame, columns: list[str]) -> None:
    frame, values = _ett_expected(columns)
    assert sorted(table["unique_id"].unique()) == sorted(columns)
    for k, column in enumerate(columns):
        part = table[table["unique_id"] == column].sort_values("ds")
        # Rows 0 .. 11519 exactly: the table ends at row 11520, before the first test target.
        assert len(part) == ETT_VAL_END
        assert (part["ds"].to_numpy() == frame["date"].to_numpy()[:ETT_VAL_END]).all()
        assert part["ds"].max() < frame["date"].iloc[ETT_VAL_END]
        np.testing.assert_allclose(part["y"].to_numpy(), values[:ETT_VAL_END, k], rtol=0, atol=1e-9)


@pytest.mark.parametrize("setting", ["univariate", "multivariate"])
def test_etth1_training_table_ends_at_row_11520(handed_to_training, setting):
    etth1 = importlib.import_module("etth1")
    args = ["--setting", setting, "--horizons", "96", "--no-baselines"]
    with pytest.raises(Stop):
        etth1.main([*args, "--data", str(_require("ett", "ETTh1.csv"))])
    [(overrides, table)] = handed_to_training
    assert "data.test_size=0" in overrides  # the table is training + validation, no test split
    _check_ett_table(table, ["OT"] if setting == "univariate" else ETT_COLUMNS)


def test_etth1_neuralforecast_table_ends_at_row_11520(handed_to_neuralforecast):
    etth1 = importlib.import_module("etth1")
    protocol = importlib.import_module("protocol")
    frame = protocol.load_etth1(_require("ett", "ETTh1.csv"))
    values, _, _ = protocol.etth1_standardized(frame, ETT_COLUMNS)
    steps = {"max_steps": 10, "val_every": 5, "patience": 5}
    with pytest.raises(Stop):
        etth1.run_neuralforecast("multivariate", values, frame["date"], 96, 96, steps, 256, 1)
    [(table, val_size)] = handed_to_neuralforecast
    assert val_size == ETT_VAL_END - ETT_TRAIN_END  # early stopping on the validation part
    _check_ett_table(table, ETT_COLUMNS)
