"""The bad-input catalogue (docs/errors.md): every table-level problem the project detects ends
training, the batch forecast and the pyfunc with its documented one-line message and exit code,
and leaves nothing behind (no MLflow run for bad data, no output file)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from app_runner import AppResult, run_inprocess
from model_helpers import tiny_forecaster
from pipeline_helpers import TINY_TRAIN, store_with_models

from forecast.data import synthetic_long
from forecast.errors import ConfigError, DataValidationError, ForecastError

L, H = 24, 6


def base() -> pd.DataFrame:
    """3 hourly series of 80 steps: long enough to train with TINY_TRAIN's sizes."""
    return synthetic_long(n_series=3, length=80, seed=2)


def _with_y(values: dict[int, object]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({"y": object})
        for row, value in values.items():
            df.loc[row, "y"] = value
        return df

    return edit


def _duplicate(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.iloc[[10]]], ignore_index=True)


def _gap(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(index=[30, 31]).reset_index(drop=True)


def _off_grid(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[40, "ds"] = df.loc[40, "ds"] + pd.Timedelta("30min")
    return df


def _mixed_zones(df: pd.DataFrame) -> pd.DataFrame:
    text = df["ds"].dt.strftime("%Y-%m-%d %H:%M:%S+00:00")
    text[5] = (df.loc[5, "ds"] + pd.Timedelta("1h")).strftime("%Y-%m-%d %H:%M:%S+01:00")
    return df.assign(ds=text)


def _aware(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(ds=df["ds"].dt.tz_localize("UTC"))


def _nan_last(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[79, "y"] = np.nan  # the last step of s0: in the forecast's input window
    return df


def _no_target(df: pd.DataFrame) -> pd.DataFrame:
    return df.rename(columns={"y": "value"})


# (name, edit, message regex): the same problems for training, the batch forecast and the pyfunc.
DATA_CASES = [
    ("non-numeric target", _with_y({3: "abc", 4: "x"}), r"target column 'y' must be numeric.*2 value"),
    ("infinite target", _with_y({7: np.inf}), r"infinite or out-of-range value.*'s0'"),
    ("target beyond float32", _with_y({7: 1e39}), r"infinite or out-of-range value.*'s0'"),
    ("duplicate (id, time) rows", _duplicate, r"share a \(unique_id, ds\) pair.*'s0'"),
    ("gap in the time stamps", _gap, r"not regular at frequency 'h'.*'s0'"),
    ("off-grid time stamp", _off_grid, r"not regular at frequency 'h'.*'s0'"),
    ("mixed time zones", _mixed_zones, r"time column 'ds' mixes time zones"),
    ("time-zone-aware time stamps", _aware, r"time column 'ds' .*(time zone|timezone-aware)"),
    ("missing target, missing=error", _nan_last, r"target column 'y' has 1 missing value.*'s0'"),
    ("missing target column", _no_target, r"missing column\(s\) \['y'\]"),
]


def _write(frame: pd.DataFrame, folder: Path, name: str) -> Path:
    # Text time stamps (mixed zones) and mixed-type targets only survive as CSV; the rest as Parquet.
    text = frame["ds"].dtype == object or ("y" in frame and frame["y"].apply(type).eq(str).any())
    path = folder / (f"{name}.csv" if text else f"{name}.parquet")
    frame = frame if text or "y" not in frame else frame.astype({"y": "float64"})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def assert_one_line_error(result: AppResult, error: type[ForecastError], message: str) -> None:
    """The job ended with `error`'s exit code and one `error: ` line matching `message`, no traceback."""
    assert result.code == error.exit_code, result.stderr[-2000:]
    assert result.last_line.startswith("error: ") and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.search(message, result.last_line), result.last_line


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory) -> str:
    """One tiny registered model (naive time stamps, missing=error) in a module-wide store."""
    history = base()
    model = tiny_forecaster(history, segment_len=6)
    return store_with_models(tmp_path_factory.mktemp("store"), [model], history, "catalogue", L)


@pytest.mark.parametrize(("name", "edit", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_training_refuses_bad_data_with_one_line(name, edit, message, tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = _write(edit(base()), tmp_path, "data")
    args = [*TINY_TRAIN, f"data.path={path}", f"paths.root_dir={tmp_path}", f"paths.log_dir={tmp_path}/logs"]
    result = run_inprocess("train.py", args, tmp_path, monkeypatch, capsys)
    assert_one_line_error(result, DataValidationError, message)
    # Bad data is refused before any MLflow run exists: nothing half-written in the store.
    mlflow.set_tracking_uri(uri)
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.parametrize(("name", "edit", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_batch_forecast_refuses_bad_data_with_one_line(
    name, edit, message, model_uri, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", model_uri)
    path = _write(edit(base()), tmp_path, "history")
    out = tmp_path / "out" / "forecast.parquet"
    args = ["model_uri=models:/catalogue@champion", f"input={path}", f"output={out}", "progress=none"]
    result = run_inprocess("batch_forecast.py", args, tmp_path, monkeypatch, capsys)
    assert_one_line_error(result, DataValidationError, message)
    assert not out.exists()
    assert not list(out.parent.glob(".*")) if out.parent.exists() else True  # no temporary file left


@pytest.mark.parametrize(("name", "edit", "message"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_pyfunc_refuses_bad_data_with_the_same_message(name, edit, message, model_uri):
    mlflow.set_tracking_uri(model_uri)
    model = mlflow.pyfunc.load_model("models:/catalogue@champion")
    frame = edit(base())
    with pytest.raises(Exception) as caught:
        model.predict(frame)
    text = str(caught.value)
    assert re.search(message, text), text


def test_unsorted_rows_are_sorted_not_refused(model_uri, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", model_uri)
    history = base()
    shuffled = history.sample(frac=1.0, random_state=0)
    outputs = []
    for name, frame in (("sorted", history), ("shuffled", shuffled)):
        path = _write(frame, tmp_path, name)
        out = tmp_path / f"{name}.parquet"
        args = ["model_uri=models:/catalogue@champion", f"input={path}", f"output={out}", "progress=none"]
        assert run_inprocess("batch_forecast.py", args, tmp_path, monkeypatch, capsys).code == 0
        outputs.append(pd.read_parquet(out).sort_values(["unique_id", "ds"], ignore_index=True))
    pd.testing.assert_frame_equal(outputs[0], outputs[1])


CONFIG_CASES = [
    (["foo=1"], r"unknown config key 'foo'.*\+foo="),
    (["data.hoizon=24"], r"unknown config key 'data.hoizon'"),
    (["data.horizon=0"], r"data.horizon must be an integer >= 1, got 0"),
    (["data.horizon=-1"], r"data.horizon must be an integer >= 1, got -1"),
    # a wrong type is refused while the typed config (forecast.config) is composed
    (["data.horizon=abc"], r"data.horizon: Value 'abc' of type 'str' could not be converted to Integer"),
    (["data.input_size=1.5"], r"data.input_size: Value '1.5' of type 'float' could not be converted"),
    (["data.scaler=zscore"], r"data.scaler must be standard, robust, minmax or none, got 'zscore'"),
    (["model.lr=-0.1"], r"model.lr must be a positive number"),
    (["model=nonexistent"], r"model.*nonexistent"),
]


@pytest.mark.parametrize(("overrides", "message"), CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_training_config_errors_are_one_line(overrides, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = [f"paths.root_dir={tmp_path}", f"paths.log_dir={tmp_path}/logs", *overrides]
    result = run_inprocess("train.py", args, tmp_path, monkeypatch, capsys)
    assert_one_line_error(result, ConfigError, message)


BATCH_CONFIG_CASES = [
    (["batch_size=0"], r"batch_size must be >= 1|batch_size.*0"),
    (["engine=spark"], r"unknown engine 'spark'"),
    (["runtime=tpu"], r"unknown runtime 'tpu'"),
    (["progress=loud"], r"unknown progress mode 'loud'"),
    (["bogus=1"], r"unknown config key 'bogus'"),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BATCH_CONFIG_CASES, ids=[" ".join(c[0]) for c in BATCH_CONFIG_CASES]
)
def test_batch_config_errors_are_one_line(overrides, message, model_uri, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", model_uri)
    path = _write(base(), tmp_path, "history")
    out = tmp_path / "forecast.parquet"
    args = ["model_uri=models:/catalogue@champion", f"input={path}", f"output={out}", *overrides]
    result = run_inprocess("batch_forecast.py", args, tmp_path, monkeypatch, capsys)
    assert_one_line_error(result, ConfigError, message)
    assert not out.exists()
