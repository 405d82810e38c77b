"""Covariates: config, encoder (fit on training rows, JSON), validation errors, window contents."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from forecast.data.covariate_encoder import CALENDAR_PERIODS, CovariateEncoder
from forecast.data.covariates import CovariateConfig, validate_covariates
from forecast.data.datamodule import SeriesDataModule
from forecast.data.validation import ColumnSpec
from forecast.data.windows import SeriesArrays, WindowDataset, window_starts
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


# ---- the data module and its windows ---------------------------------------------------------

L, H = 8, 4
LENGTH = 40  # per series: training rows [0, 32), validation [32, 36), test [36, 40)
KINDS = {
    "futr_exog": ["price", "promo"],
    "hist_exog": ["load"],
    "static": ["size", "region"],
    "categorical": ["promo", "region"],
    "calendar": ["hour"],
}


def covariate_frame(lengths: dict[str, int] | None = None) -> pd.DataFrame:
    """Hourly series ending together, with every kind of covariate; `price` and `load` are
    distinct per row, so a window's rows can be told apart."""
    lengths = lengths or {"a": LENGTH, "b": LENGTH, "c": LENGTH}
    parts = []
    for k, (uid, n) in enumerate(lengths.items()):
        end = pd.Timestamp("2024-01-03")
        ds = pd.date_range(end=end, periods=n, freq="h")
        rows = np.arange(n, dtype=float)
        parts.append(
            pd.DataFrame(
                {
                    "unique_id": uid,
                    "ds": ds,
                    "y": np.sin(rows / 3) + k,
                    "price": 100.0 * k + rows,
                    "promo": np.where(rows % 3 == 0, "yes", "no"),
                    "load": -100.0 * k - rows,
                    "size": 10.0 * (k + 1),
                    "region": k % 2,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def covariate_dm(frame: pd.DataFrame, **kw) -> SeriesDataModule:
    dm = SeriesDataModule(frame=frame, freq="h", input_size=L, horizon=H, **{**KINDS, **kw})
    dm.setup()
    return dm


def batch_of(dm: SeriesDataModule, split: str) -> dict:
    dataset = dm.datasets[split]
    return dataset.__getitems__(list(range(len(dataset))))


def test_batch_keys_shapes_and_dtypes():
    dm = covariate_dm(covariate_frame())
    batch = batch_of(dm, "train")
    B = len(dm.datasets["train"])
    assert batch["futr"].shape == (B, L + H, 1 + 2) and batch["futr"].dtype == torch.float32
    assert batch["futr_cat"].shape == (B, L + H, 1) and batch["futr_cat"].dtype == torch.int64
    assert batch["hist"].shape == (B, L, 1) and "hist_cat" not in batch
    assert batch["static"].shape == (B, 1) and batch["static_cat"].shape == (B, 1)
    assert batch["static_cat"].dtype == torch.int64
    assert dm.covariates.dims == {
        "futr": 3,
        "futr_cat": [3],
        "hist": 1,
        "hist_cat": [],
        "static": 1,
        "static_cat": [3],
    }


def test_without_covariates_the_batch_is_unchanged():
    frame = covariate_frame()
    plain = SeriesDataModule(frame=frame[["unique_id", "ds", "y"]], freq="h", input_size=L, horizon=H)
    plain.setup()
    assert plain.covariates is None and plain.arrays.futr is None
    batch = batch_of(plain, "train")
    assert set(batch) == {"x", "x_mask", "y", "y_mask", "loc", "scale", "mase_scale", "step", "series"}
    # extra columns of the table that are not declared change nothing either
    other = SeriesDataModule(frame=frame, freq="h", input_size=L, horizon=H)
    other.setup()
    again = batch_of(other, "train")
    assert set(again) == set(batch)
    for key in batch:
        torch.testing.assert_close(again[key], batch[key])


def test_covariates_are_stored_once_per_row_and_series():
    frame = covariate_frame()
    dm = covariate_dm(frame)
    a = dm.arrays
    assert a.futr.shape == (len(frame), 3) and a.futr.dtype == np.float32
    assert a.futr_cat.dtype == np.int32 and a.hist.shape == (len(frame), 1)
    assert a.static.shape == (3, 1) and a.static_cat.shape == (3, 1)


def test_window_contents_futr_over_input_and_horizon_hist_over_input_only():
    frame = covariate_frame()
    dm = covariate_dm(frame)
    encoded = dm.covariates.encode_rows(frame, "ds")  # the frame is sorted: rows match the arrays
    dataset = dm.datasets["train"]
    batch = batch_of(dm, "train")
    for i, start in enumerate(dataset.starts.astype(np.int64)):
        np.testing.assert_array_equal(batch["futr"][i].numpy(), encoded["futr"][start : start + L + H])
        np.testing.assert_array_equal(
            batch["futr_cat"][i].numpy(), encoded["futr_cat"][start : start + L + H]
        )
        np.testing.assert_array_equal(batch["hist"][i].numpy(), encoded["hist"][start : start + L])
    # raw values back: price of row r of series k is 100 k + r
    enc = dm.covariates
    raw = batch["futr"][:, :, 0].numpy() * enc.std["price"] + enc.mean["price"]
    first = raw[:, 0]
    np.testing.assert_allclose(raw, first[:, None] + np.arange(L + H), atol=1e-3)
    static = dm.covariates.encode_static(frame, dm.ids, "unique_id")
    series = np.searchsorted(dm.arrays.offsets, dataset.starts + L, side="right") - 1
    np.testing.assert_array_equal(batch["static"].numpy(), static["static"][series])
    np.testing.assert_array_equal(batch["static_cat"].numpy(), static["static_cat"][series])


def test_scaling_is_fitted_on_training_rows_of_the_data_module():
    frame = covariate_frame()
    dm = covariate_dm(frame)
    train = frame[frame.groupby("unique_id").cumcount() < LENGTH - 2 * H]
    assert dm.covariates.mean["price"] == pytest.approx(train["price"].mean())
    assert dm.covariates.std["load"] == pytest.approx(train["load"].std(ddof=0))
    changed = frame.copy()
    later = (changed.groupby("unique_id").cumcount() >= LENGTH - 2 * H).to_numpy()
    changed.loc[later, ["price", "load"]] *= 1000
    changed.loc[later, "promo"] = "new"
    assert covariate_dm(changed).covariates == dm.covariates


@pytest.mark.parametrize("column, after", [("load", L), ("price", L + H), ("promo", L + H)])
def test_no_leakage_past_only_after_origin_future_known_after_horizon(column, after):
    # The validation windows' origins are at row 32 of each series: past-only values from the
    # origin on, and future-known values after the horizon, are never in the window. Those rows
    # are validation and test rows, so the encoder's statistics do not move either.
    frame = covariate_frame()
    base = batch_of(covariate_dm(frame), "val")
    changed = frame.copy()
    first = LENGTH - 2 * H - L  # window start within each series
    late = (changed.groupby("unique_id").cumcount() >= first + after).to_numpy()
    changed.loc[late, column] = "maybe" if column == "promo" else 1e9
    again = batch_of(covariate_dm(changed), "val")
    assert again.keys() == base.keys()
    for key in base:
        torch.testing.assert_close(again[key], base[key], rtol=0, atol=0)
    # ...while a change just inside the window does show
    inside = (changed.groupby("unique_id").cumcount() == first + after - 1).to_numpy()
    changed.loc[inside, column] = "maybe" if column == "promo" else 1e9
    moved = batch_of(covariate_dm(changed), "val")
    key = {"load": "hist", "price": "futr", "promo": "futr_cat"}[column]
    assert not torch.equal(moved[key], base[key])


def test_padding_before_a_short_series_is_zero():
    # "short" has 15 rows, 7 of them training: its windows start before it (padded inputs)
    frame = covariate_frame({"a": LENGTH, "b": LENGTH, "short": 15})
    dm = covariate_dm(frame)
    dataset = dm.datasets["train"]
    batch = batch_of(dm, "train")
    a = dm.arrays
    starts = dataset.starts.astype(np.int64)
    series = np.searchsorted(a.offsets, starts + L, side="right") - 1
    before = (starts[:, None] + np.arange(L + H)) < a.offsets[series][:, None]  # (B, L + H)
    assert before.any()
    assert (batch["futr"].numpy()[before] == 0).all() and (batch["futr_cat"].numpy()[before] == 0).all()
    assert (batch["hist"].numpy()[before[:, :L]] == 0).all()
    assert (~batch["x_mask"].numpy()[before[:, :L]]).all()
    inside = ~before
    assert (batch["futr_cat"].numpy()[inside] > 0).all()  # every real row has a known category
    np.testing.assert_array_equal(batch["static_cat"].numpy(), a.static_cat[series].astype(np.int64))


def test_history_rebuilds_the_covariate_columns():
    frame = covariate_frame()
    dm = covariate_dm(frame)
    hist = dm.history(None)
    assert list(hist.columns) == ["unique_id", "ds", "y", "price", "promo", "load", "size", "region"]
    np.testing.assert_allclose(hist["price"], frame["price"], atol=1e-4)
    assert (hist["promo"] == frame["promo"]).all()
    assert (hist["region"] == frame["region"].astype(str)).all()
    encoded = dm.covariates.encode_rows(hist, "ds")
    np.testing.assert_allclose(encoded["futr"], dm.arrays.futr, atol=1e-6)
    np.testing.assert_array_equal(encoded["futr_cat"], dm.arrays.futr_cat)


def test_history_future_rows_carry_future_known_values_only():
    frame = covariate_frame()
    dm = covariate_dm(frame)
    cut = dm.history("test")
    ahead = dm.history("test", future=True)
    assert len(ahead) == len(cut) + 3 * H
    tail = ahead.groupby("unique_id").tail(H)
    assert tail["y"].isna().all() and tail["load"].isna().all()
    assert tail["price"].notna().all() and tail["region"].notna().all()
    pd.testing.assert_frame_equal(ahead.drop(tail.index).reset_index(drop=True), cut)


def test_missing_covariate_values_error_or_mask():
    frame = covariate_frame()
    frame.loc[5, "load"] = np.nan
    with pytest.raises(DataValidationError, match=r"'load' has 1 missing value.*'a'"):
        covariate_dm(frame)
    dm = covariate_dm(frame, missing="mask")
    assert dm.arrays.hist[5, 0] == 0.0


def test_data_module_validation_errors():
    frame = covariate_frame()
    with pytest.raises(DataValidationError, match=r"\['load'\].*not in the table"):
        covariate_dm(frame.drop(columns=["load"]))
    varying = frame.copy()
    varying.loc[LENGTH + 1, "size"] = 0.0
    with pytest.raises(DataValidationError, match=r"'size' varies within 1 series \('b'\)"):
        covariate_dm(varying)
    with pytest.raises(ConfigError, match="id, time or target"):
        covariate_dm(frame, futr_exog=["y", "price", "promo"])
    steps = frame.assign(ds=frame.groupby("unique_id").cumcount())
    with pytest.raises(DataValidationError, match="needs time stamps"):
        SeriesDataModule(frame=steps, input_size=L, horizon=H, calendar=["hour"]).setup()


def test_static_table_and_file_reading(tmp_path):
    frame = covariate_frame()
    path = tmp_path / "long.parquet"
    frame.drop(columns=["size", "region"]).assign(unused="x").to_parquet(path)
    static_path = tmp_path / "static.csv"
    pd.DataFrame({"unique_id": ["c", "b", "a", "zz"], "size": [30.0, 20.0, 10.0, 0.0]}).to_csv(
        static_path, index=False
    )
    kw = {**KINDS, "static": ["size"], "categorical": ["promo"], "static_path": str(static_path)}
    dm = SeriesDataModule(path=str(path), freq="h", input_size=L, horizon=H, **kw)
    dm.setup()
    assert dm.covariates.static_table and dm.covariates.mean["size"] == 20.0
    np.testing.assert_allclose(dm.arrays.static[:, 0], np.array([-10.0, 0.0, 10.0]) / np.std([10, 20, 30]))
    # the static table's values come with the history (a forecast input may carry them)
    assert dm.history("test").groupby("unique_id")["size"].first().tolist() == pytest.approx([10, 20, 30])
    pd.DataFrame({"unique_id": ["a", "c"], "size": [1.0, 3.0]}).to_csv(static_path, index=False)
    dm = SeriesDataModule(path=str(path), freq="h", input_size=L, horizon=H, **kw)
    with pytest.raises(DataValidationError, match=r"no row for 1 series \('b'\)"):
        dm.setup()


# ---- property: every window's covariates, padded or not, against a per-window reference ------


@settings(deadline=None, derandomize=True, database=None, print_blob=False, max_examples=60)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=4),
    input_size=st.integers(1, 8),
    horizon=st.integers(1, 5),
    data=st.data(),
)
def test_window_covariates_match_a_per_window_reference(lengths, input_size, horizon, data):
    L_, H_ = input_size, horizon
    n = np.array(lengths)
    assume((n >= H_).any())
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    rows = int(offsets[-1])
    futr = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) + 1  # every stored value nonzero
    hist = -np.arange(rows, dtype=np.float32).reshape(rows, 1) - 1
    codes = (np.arange(rows, dtype=np.int32) % 5 + 1).reshape(rows, 1)
    static = np.arange(len(n), dtype=np.float32).reshape(-1, 1) + 0.5
    arrays = SeriesArrays(
        values=np.ones(rows, dtype=np.float32),
        offsets=offsets,
        loc=np.zeros(len(n), np.float32),
        scale=np.ones(len(n), np.float32),
        mase_scale=np.ones(len(n), np.float32),
        futr=futr,
        futr_cat=codes,
        hist=hist,
        hist_cat=codes,
        static=static,
        static_cat=codes[: len(n)],
    )
    # every window whose horizon lies inside its series, the input padded where it starts before
    starts = window_starts(offsets, np.full(len(n), 1), n, L_, H_)
    assume(len(starts) > 0)
    picks = data.draw(st.lists(st.integers(0, len(starts) - 1), min_size=1, max_size=6))
    batch = WindowDataset(arrays, starts, L_, H_, padded=True).__getitems__(picks)
    for b, i in enumerate(picks):
        start = int(starts[i])
        series = int(np.searchsorted(offsets, start + L_, side="right") - 1)
        first = offsets[series]
        pos = start + np.arange(L_ + H_)
        inside = pos >= first
        want_futr = np.where(inside[:, None], futr[np.maximum(pos, 0)], 0)
        want_codes = np.where(inside[:, None], codes[np.maximum(pos, 0)], 0)
        np.testing.assert_array_equal(batch["futr"][b].numpy(), want_futr)
        np.testing.assert_array_equal(batch["futr_cat"][b].numpy(), want_codes)
        np.testing.assert_array_equal(
            batch["hist"][b].numpy(), np.where(inside[:L_, None], hist[np.maximum(pos[:L_], 0)], 0)
        )
        np.testing.assert_array_equal(batch["hist_cat"][b].numpy(), want_codes[:L_])
        assert batch["static"][b].item() == static[series, 0]
        assert batch["static_cat"][b].item() == codes[series, 0]


def test_a_file_without_a_declared_covariate_names_it(tmp_path):
    path = tmp_path / "long.csv"
    covariate_frame().drop(columns=["load"]).to_csv(path, index=False)
    dm = SeriesDataModule(path=str(path), freq="h", input_size=L, horizon=H, **KINDS)
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['load'\].*data.hist_exog"):
        dm.setup()
