"""Covariates: config, encoder (fit on training rows, JSON), validation errors, window contents."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecast.data.covariates import (
    CALENDAR_PERIODS,
    CovariateConfig,
    CovariateEncoder,
    validate_covariates,
)
from forecast.data.validation import ColumnSpec
from forecast.errors import ConfigError, DataValidationError

N = 12  # rows per series in the small tables
COLS = ColumnSpec()


def small_frame(n: int = N) -> pd.DataFrame:
    """Two hourly series with a numeric and a categorical future-known column, a past-only
    column, and numeric and categorical static columns."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "unique_id": np.repeat(["a", "b"], n),
            "ds": np.tile(pd.date_range("2024-01-01", periods=n, freq="h"), 2),
            "y": rng.normal(size=2 * n),
            "price": rng.normal(3.0, 2.0, size=2 * n),
            "promo": np.tile(["no", "yes", "no"], 2 * n // 3 + 1)[: 2 * n],
            "load": rng.normal(size=2 * n),
            "size": np.repeat([10.0, 20.0], n),
            "region": np.repeat([1, 2], n),
        }
    )


FULL = CovariateConfig(
    futr=("price", "promo"),
    hist=("load",),
    static=("size", "region"),
    categorical=("promo", "region"),
    calendar=("hour", "dayofweek"),
)


def train_rows(frame: pd.DataFrame, first: int = 8) -> np.ndarray:
    """Rows before position `first` of each series train."""
    return (frame.groupby("unique_id").cumcount() < first).to_numpy()


# ---- config ----------------------------------------------------------------------------------


def test_config_lists_columns_and_accepts_lists():
    cfg = CovariateConfig(futr=["a"], hist="b", static=["s"], calendar=["month"])
    assert cfg.futr == ("a",) and cfg.hist == ("b",) and cfg.columns == ("a", "b", "s")
    assert CovariateConfig(static=["s"], static_path="t.csv").columns == ()
    assert CovariateConfig().empty and not CovariateConfig(calendar=["hour"]).empty


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"calendar": ("fortnight",)}, "unknown feature"),
        ({"futr": ("a",), "hist": ("a",)}, "more than once"),
        ({"futr": ("a",), "categorical": ("b",)}, "not declared"),
        ({"futr": ("y",), "reserved": ("unique_id", "ds", "y")}, "id, time or target"),
        ({"static_path": "s.csv"}, "static_path"),
    ],
)
def test_config_errors(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        CovariateConfig(**kwargs)


# ---- encoder ---------------------------------------------------------------------------------


def test_encoder_fit_dims_and_json_round_trip():
    frame = small_frame()
    enc = CovariateEncoder.fit(frame, FULL, train_rows(frame))
    assert enc.futr_num == ["price"] and enc.futr_cat == ["promo"] and enc.hist_num == ["load"]
    assert enc.static_num == ["size"] and enc.static_cat == ["region"]
    assert enc.vocab == {"promo": ["no", "yes"], "region": ["1", "2"]}
    assert enc.dims == {
        "futr": 1 + 2 * 2,
        "futr_cat": [3],
        "hist": 1,
        "hist_cat": [],
        "static": 1,
        "static_cat": [3],
    }
    assert enc.needs_future and enc.table_columns == ["price", "promo", "load", "size", "region"]
    back = CovariateEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc
    a, b = enc.encode_rows(frame, "ds"), back.encode_rows(frame, "ds")
    assert a.keys() == b.keys() == {"futr", "futr_cat", "hist"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["futr"].dtype == np.float32 and a["futr_cat"].dtype == np.int64
    assert a["futr"].shape == (2 * N, 5) and a["hist"].shape == (2 * N, 1)


def test_calendar_alone_needs_no_future_rows():
    frame = small_frame()
    enc = CovariateEncoder.fit(frame, CovariateConfig(calendar=("month",)), train_rows(frame))
    assert not enc.needs_future and enc.table_columns == [] and enc.dims["futr"] == 2
    assert enc.encode_rows(frame, "ds").keys() == {"futr"}


def test_numeric_scaling_uses_training_rows_only():
    frame = small_frame()
    rows = train_rows(frame)
    enc = CovariateEncoder.fit(frame, FULL, rows)
    train = frame.loc[rows, "price"]
    assert enc.mean["price"] == pytest.approx(train.mean())
    assert enc.std["price"] == pytest.approx(train.std(ddof=0))
    changed = frame.copy()
    changed.loc[~rows, ["price", "load"]] = 1e6
    changed.loc[~rows, "promo"] = "flash sale"
    other = CovariateEncoder.fit(changed, FULL, rows)
    assert other == enc
    scaled = enc.encode_rows(frame, "ds")["futr"][:, 0]
    np.testing.assert_allclose(scaled, (frame["price"] - train.mean()) / train.std(ddof=0), rtol=1e-5)


def test_constant_column_is_centred_not_divided_by_zero():
    frame = small_frame().assign(price=5.0)
    enc = CovariateEncoder.fit(frame, FULL, train_rows(frame))
    assert enc.std["price"] == 1.0
    assert (enc.encode_rows(frame, "ds")["futr"][:, 0] == 0).all()


def test_unseen_and_missing_categories_get_code_zero():
    frame = small_frame()
    enc = CovariateEncoder.fit(frame, FULL, train_rows(frame))
    later = frame.head(4).copy()
    later["promo"] = ["no", "yes", "flash sale", None]
    assert enc.encode_rows(later, "ds")["futr_cat"][:, 0].tolist() == [1, 2, 0, 0]


def test_category_labels_ignore_int_or_float_columns():
    # A CSV column with a gap reads as float (1.0), the same column without as int (1).
    frame = small_frame()
    enc = CovariateEncoder.fit(frame, FULL, train_rows(frame))
    as_float = frame.astype({"region": "float64"})
    np.testing.assert_array_equal(
        enc.encode_static(as_float, np.array(["a", "b"]), "unique_id")["static_cat"],
        enc.encode_static(frame, np.array(["a", "b"]), "unique_id")["static_cat"],
    )


def test_missing_numeric_encodes_as_training_mean():
    frame = small_frame()
    enc = CovariateEncoder.fit(frame, FULL, train_rows(frame))
    frame.loc[3, "price"] = np.nan
    assert enc.encode_rows(frame, "ds")["futr"][3, 0] == 0.0


def test_calendar_values_for_known_time_stamps():
    frame = pd.DataFrame(
        {"unique_id": "a", "ds": pd.to_datetime(["2024-03-04 06:15", "2024-12-31 18:00"]), "y": 0.0}
    )
    names = tuple(CALENDAR_PERIODS)
    enc = CovariateEncoder.fit(frame, CovariateConfig(calendar=names), np.ones(2, bool))
    futr = enc.encode_rows(frame, "ds")["futr"]
    # 2024-03-04 06:15, a Monday: minute 15, hour 6, dayofweek 0, day 4, dayofyear 64, ISO week 10,
    # month 3, quarter 1. 2024-12-31 18:00, a Tuesday: day 366 of a leap year, ISO week 1.
    values = {
        "minute": (15, 0),
        "hour": (6, 18),
        "dayofweek": (0, 1),
        "day": (4, 31),
        "dayofyear": (64, 366),
        "weekofyear": (10, 1),
        "month": (3, 12),
        "quarter": (1, 4),
    }
    for i, name in enumerate(names):
        angle = 2 * np.pi * np.array(values[name]) / CALENDAR_PERIODS[name]
        np.testing.assert_allclose(futr[:, 2 * i], np.sin(angle), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(futr[:, 2 * i + 1], np.cos(angle), atol=1e-6, err_msg=name)


def test_calendar_needs_time_stamps():
    frame = small_frame().assign(ds=np.tile(np.arange(N), 2))
    cfg = CovariateConfig(calendar=("hour",))
    with pytest.raises(DataValidationError, match="needs time stamps"):
        validate_covariates(frame, cfg, COLS, "error")
    enc = CovariateEncoder(calendar=["hour"])
    with pytest.raises(DataValidationError, match="needs time stamps"):
        enc.encode_rows(frame, "ds", 1)


def test_static_from_a_static_table():
    frame = small_frame().drop(columns=["size", "region"])
    table = pd.DataFrame({"unique_id": ["c", "b", "a"], "size": [1.0, 20.0, 10.0], "region": [9, 2, 1]})
    cfg = CovariateConfig(static=("size", "region"), categorical=("region",), static_path="static.csv")
    validate_covariates(frame, cfg, COLS, "error", static_table=table)
    enc = CovariateEncoder.fit(frame, cfg, train_rows(frame), static_table=table)
    # fitted on the series of the training table only (a, b), not on the extra id c
    assert enc.mean["size"] == 15.0 and enc.vocab["region"] == ["1", "2"]
    assert enc.static_table and enc.table_columns == []
    out = enc.encode_static(table, np.array(["b", "a", "c"]), "unique_id")
    np.testing.assert_allclose(out["static"][:, 0], [1.0, -1.0, (1.0 - 15.0) / 5.0])
    assert out["static_cat"][:, 0].tolist() == [2, 1, 0]  # region 9 unseen in training


# ---- validation errors -----------------------------------------------------------------------


def test_missing_declared_column_lists_the_tables_columns():
    frame = small_frame().drop(columns=["load"])
    with pytest.raises(DataValidationError, match=r"\['load'\].*not in the table.*'price'"):
        validate_covariates(frame, FULL, COLS, "error")


def test_non_numeric_numeric_covariate_names_column_and_values():
    frame = small_frame().astype({"price": object})
    frame.loc[5, "price"] = "n/a"
    with pytest.raises(DataValidationError, match=r"'price' must be numeric.*'n/a'.*data.categorical"):
        validate_covariates(frame, FULL, COLS, "error")


def test_numeric_strings_and_booleans_are_numbers():
    frame = small_frame().astype({"price": str}).assign(load=lambda f: f["load"] > 0)
    validate_covariates(frame, FULL, COLS, "error")
    enc = CovariateEncoder.fit(frame, FULL, train_rows(frame))
    assert np.isfinite(enc.encode_rows(frame, "ds")["hist"]).all()


def test_infinite_covariate_is_an_error():
    frame = small_frame()
    frame.loc[N + 2, "load"] = np.inf
    with pytest.raises(DataValidationError, match=r"'load' has 1 infinite.*'b'"):
        validate_covariates(frame, FULL, COLS, "error")


def test_static_varying_within_a_series_names_it():
    frame = small_frame()
    frame.loc[N + 3, "size"] = 21.0
    with pytest.raises(DataValidationError, match=r"static column 'size' varies within 1 series \('b'\)"):
        validate_covariates(frame, FULL, COLS, "error")


def test_static_table_missing_an_id_names_it():
    frame = small_frame().drop(columns=["size", "region"])
    table = pd.DataFrame({"unique_id": ["a", "z"], "size": [1.0, 2.0], "region": [1, 2]})
    cfg = CovariateConfig(static=("size", "region"), categorical=("region",), static_path="static.csv")
    with pytest.raises(DataValidationError, match=r"no row for 1 series \('b'\)"):
        validate_covariates(frame, cfg, COLS, "error", static_table=table)
    with pytest.raises(DataValidationError, match=r"lacks column\(s\) \['region'\]"):
        validate_covariates(frame, cfg, COLS, "error", static_table=table.drop(columns=["region"]))
    twice = pd.concat([table, table.assign(unique_id="b")]).iloc[[0, 2, 3]]
    with pytest.raises(DataValidationError, match="more than one row"):
        validate_covariates(frame, cfg, COLS, "error", static_table=twice)


@pytest.mark.parametrize("col", ["price", "promo", "load"])
def test_missing_values_error_or_mask(col):
    frame = small_frame()
    frame.loc[N + 4, col] = None
    with pytest.raises(DataValidationError, match=rf"{col!r} has 1 missing value.*'b'.*data.missing=mask"):
        validate_covariates(frame, FULL, COLS, "error")
    validate_covariates(frame, FULL, COLS, "mask")


def test_missing_static_value_error_or_mask():
    frame = small_frame()
    frame.loc[frame.unique_id == "a", "size"] = np.nan
    with pytest.raises(DataValidationError, match=r"static column 'size' has no value for 1 series \('a'\)"):
        validate_covariates(frame, FULL, COLS, "error")
    validate_covariates(frame, FULL, COLS, "mask")
    frame.loc[0, "size"] = 10.0  # one value per series is enough (future rows may leave it empty)
    validate_covariates(frame, FULL, COLS, "error")


def test_rows_limit_where_past_only_values_are_needed():
    frame = small_frame()
    future = (frame.groupby("unique_id").cumcount() >= N - 3).to_numpy()
    frame.loc[future, "load"] = np.nan
    with pytest.raises(DataValidationError, match="'load'"):
        validate_covariates(frame, FULL, COLS, "error")
    validate_covariates(frame, FULL, COLS, "error", rows=~future)
    frame.loc[future, "price"] = np.nan  # future-known values are needed in future rows
    with pytest.raises(DataValidationError, match="'price'"):
        validate_covariates(frame, FULL, COLS, "error", rows=~future)
