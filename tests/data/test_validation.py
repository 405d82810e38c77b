import numpy as np
import pandas as pd
import pytest

from forecast.data.validation import ColumnSpec, DataValidationError, validate_long_frame


def frame(n_series: int = 2, length: int = 10, freq: str = "h") -> pd.DataFrame:
    ds = pd.date_range("2024-01-01", periods=length, freq=freq)
    return pd.DataFrame(
        {
            "unique_id": np.repeat([f"s{i}" for i in range(n_series)], length),
            "ds": np.tile(ds, n_series),
            "y": np.arange(n_series * length, dtype=float),
        }
    )


def test_valid_frame_is_sorted_and_typed():
    df = frame().sample(frac=1.0, random_state=0)
    out = validate_long_frame(df, freq="h")
    assert out.freq == "h"
    assert out.frame["y"].dtype == np.float32
    assert out.frame["ds"].is_monotonic_increasing is False  # two series, sorted per series
    assert (out.frame.groupby("unique_id")["ds"].diff().dropna() == pd.Timedelta("1h")).all()


def test_missing_column_names_it():
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['y'\]"):
        validate_long_frame(frame().drop(columns="y"))


def test_custom_column_names():
    df = frame().rename(columns={"unique_id": "store", "ds": "time", "y": "sales"})
    out = validate_long_frame(df, columns=ColumnSpec("store", "time", "sales"))
    assert list(out.frame.columns[:3]) == ["store", "time", "sales"]


def test_duplicates_are_reported_with_examples():
    df = pd.concat([frame(), frame().iloc[[3]]])
    with pytest.raises(DataValidationError, match=r"share a \(unique_id, ds\) pair.*'s0'"):
        validate_long_frame(df)


def test_irregular_frequency_names_series_and_gap():
    df = frame().drop(index=4)
    with pytest.raises(DataValidationError, match=r"not regular at frequency 'h'.*'s0'.*2024-01-01 03:00"):
        validate_long_frame(df, freq="h")


def test_frequency_is_inferred():
    assert validate_long_frame(frame(freq="D")).freq == "D"


def test_bad_frequency_alias():
    with pytest.raises(DataValidationError, match="not a pandas frequency alias"):
        validate_long_frame(frame(), freq="fortnightly")


def test_nan_target_errors_or_masks():
    df = frame()
    df.loc[5, "y"] = np.nan
    with pytest.raises(
        DataValidationError, match=r"1 missing value\(s\) in 1 series \('s0'\).*data.missing=mask"
    ):
        validate_long_frame(df)
    out = validate_long_frame(df, missing="mask")
    assert out.has_missing and out.frame["y"].isna().sum() == 1


def test_non_numeric_target():
    df = frame()
    df["y"] = df["y"].astype(str)
    df.loc[2, "y"] = "n/a"
    with pytest.raises(DataValidationError, match=r"must be numeric.*1 value\(s\) are not numbers"):
        validate_long_frame(df)


def test_numeric_strings_are_accepted():
    df = frame()
    df["y"] = df["y"].astype(str)
    assert validate_long_frame(df).frame["y"].dtype == np.float32


def test_unparseable_timestamps():
    df = frame()
    df["ds"] = df["ds"].astype(str)
    df.loc[1, "ds"] = "yesterday-ish"
    with pytest.raises(DataValidationError, match="do not parse"):
        validate_long_frame(df)


def test_string_timestamps_are_parsed():
    df = frame()
    df["ds"] = df["ds"].astype(str)
    assert pd.api.types.is_datetime64_any_dtype(validate_long_frame(df).frame["ds"])


def test_two_date_formats_in_one_column_are_one_line_naming_them():
    """Parsed value by value, 01/02 beside 2024-01-02 swapped day and month for some rows, which
    came out as hundreds of duplicate (id, time) pairs."""
    df = frame(length=4)
    df["ds"] = df["ds"].dt.strftime("%Y-%m-%d %H:%M:%S")
    df.loc[[0, 1], "ds"] = ["01/01/2024 00:00", "01/01/2024 01:00"]
    with pytest.raises(DataValidationError) as err:
        validate_long_frame(df)
    assert str(err.value) == (
        "time column 'ds' mixes 2 formats: '99/99/9999 99:99' (row 0: '01/01/2024 00:00'), "
        "'9999-99-99 99:99:99' (row 2: '2024-01-01 02:00:00'); write every time stamp in one format "
        "(ISO 8601: 2024-01-31 13:00:00)"
    )


def test_iso_dates_with_and_without_times_are_one_format():
    df = frame(n_series=1, length=3, freq="D")
    df["ds"] = ["2024-01-01", "2024-01-02T00:00", "2024-01-03 00:00:00"]
    out = validate_long_frame(df, freq="D").frame
    assert list(out["ds"]) == list(pd.date_range("2024-01-01", periods=3, freq="D"))


def test_integer_steps():
    df = frame()
    df["ds"] = np.tile(np.arange(10), 2)
    assert validate_long_frame(df).freq == 1
    with pytest.raises(DataValidationError, match="not regular"):
        validate_long_frame(df, freq=2)


def test_series_of_any_length_pass():
    """Short series are the data module's and the forecast's business (padding), not an error."""
    df = pd.concat([frame(1, 20), frame(1, 1).assign(unique_id="one")])
    out = validate_long_frame(df)
    assert out.frame.groupby("unique_id").size().to_dict() == {"one": 1, "s0": 20}


def test_empty_ids_and_empty_table():
    df = frame()
    df.loc[0, "unique_id"] = None
    with pytest.raises(DataValidationError, match="empty values"):
        validate_long_frame(df)
    with pytest.raises(DataValidationError, match="no rows"):
        validate_long_frame(frame().iloc[:0])
