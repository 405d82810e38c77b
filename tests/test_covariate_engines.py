"""Covariates through every engine: streamed (local), ONNX, the pyfunc and Ray agree with
`Forecaster.predict` to 1e-5; missing future rows write nothing; as_of keeps later rows as
future rows."""

from __future__ import annotations

from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
from covariate_helpers import ALL, FUTR, H, build, covariate_frame, split, with_future_rows
from mlflow.exceptions import MlflowException

from forecast.asof import AsOf
from forecast.data.validation import DataValidationError
from forecast.engines.local import forecast_file
from forecast.errors import MissingFutureError
from forecast.forecaster import Forecaster
from forecast.onnx import onnx_export_available
from forecast.tracking import ensure_experiment, log_forecaster, register

CUT = 48  # each series' history ends at the end of 2024-01-02 (hourly from 2024-01-01 00:00)


@pytest.fixture(scope="module")
def data():
    frame = covariate_frame(n_series=7, length=60, seed=2)
    history, future = split(frame, CUT)
    return frame, history, future


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> tuple[Forecaster, Forecaster | None]:
    """The model (torch) and, when ONNX is installed, its ONNX copy loaded back."""
    frame, _, _ = data
    forecaster = build(frame, **ALL)
    if not onnx_export_available():
        return forecaster, None
    path = forecaster.save(tmp_path_factory.mktemp("model") / "m", export=["onnx"])
    return forecaster, Forecaster.load(path, runtime="onnx")


def assert_close(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = got.sort_values(["unique_id", "ds"], ignore_index=True)
    expected = expected.sort_values(["unique_id", "ds"], ignore_index=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize("source", ["rows.parquet", "rows.csv", "future.parquet", "future.csv"])
def test_streamed_engine_matches_predict(data, model, tmp_path, runtime, source):
    frame, history, future = data
    torch_model, onnx_model = model
    forecaster = torch_model if runtime == "torch" else onnx_model
    if forecaster is None:
        pytest.skip("onnxruntime not installed")
    expected = torch_model.predict(history, future=future[["unique_id", "ds", *FUTR]])
    kind, suffix = source.split(".")
    table = with_future_rows(history, future) if kind == "rows" else history
    path = tmp_path / f"input.{suffix}"
    extra = {}
    if suffix == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    if kind == "future":
        extra["future"] = tmp_path / f"future.{suffix}"
        ahead = future[["unique_id", "ds", *FUTR]]
        ahead.to_csv(extra["future"], index=False) if suffix == "csv" else ahead.to_parquet(extra["future"])
    # 25 rows a read: series are carried across reads and chunks hold a few series each
    summary = forecast_file(
        forecaster, path, tmp_path / "out.parquet", chunk_rows=25, progress="none", **extra
    )
    assert summary.series == 7 and summary.chunks > 1
    assert_close(pd.read_parquet(tmp_path / "out.parquet"), expected)


def test_missing_future_rows_write_nothing(data, model, tmp_path):
    _, history, future = data
    forecaster, _ = model
    out = tmp_path / "out.parquet"
    out.write_bytes(b"yesterday's forecast")
    short = future[~((future.unique_id == "s5") & (future.ds == future.ds.max()))]
    with_future_rows(history, short).to_parquet(tmp_path / "in.parquet", index=False)
    # Counted over the whole input (chunks of 25 rows), so no chunk's row range.
    with pytest.raises(
        DataValidationError, match=r"^1 series .*'s5' at 2024-01-03 03:00:00\. Give .*written$"
    ):
        forecast_file(forecaster, tmp_path / "in.parquet", out, chunk_rows=25, progress="none")
    history.to_parquet(tmp_path / "history.parquet", index=False)
    short.to_parquet(tmp_path / "future.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"'s5' at 2024-01-03 03:00:00"):
        forecast_file(
            forecaster, tmp_path / "history.parquet", out, progress="none", future=tmp_path / "future.parquet"
        )
    assert out.read_bytes() == b"yesterday's forecast"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "future.parquet",
        "history.parquet",
        "in.parquet",
        "out.parquet",
    ]


def test_as_of_keeps_later_rows_as_future_rows(data, model, tmp_path):
    """A backfill: the input holds the actuals after as_of; their covariates are the horizon's."""
    frame, history, future = data
    forecaster, _ = model
    frame.to_parquet(tmp_path / "all.parquet", index=False)
    summary = forecast_file(
        forecaster,
        tmp_path / "all.parquet",
        tmp_path / "out.parquet",
        progress="none",
        as_of=AsOf(date(2024, 1, 2)),
    )
    assert summary.dropped == 7 * (60 - CUT)
    assert_close(pd.read_parquet(tmp_path / "out.parquet"), forecaster.predict(history, future=future))


def test_a_streamed_forecast_counts_every_chunks_series_and_names_as_of(data, model, tmp_path):
    """Read a series at a time, every series lacks future values: the message gives all 7 (not the
    first chunk's 1) and says that as_of cut the input."""
    frame, _, _ = data
    forecaster, _ = model
    within = frame.groupby("unique_id").cumcount()
    frame[within < CUT + 2].to_parquet(tmp_path / "all.parquet", index=False)  # 2 rows after as_of, H = 4
    with pytest.raises(MissingFutureError) as err:
        forecast_file(
            forecaster,
            tmp_path / "all.parquet",
            tmp_path / "out.parquet",
            chunk_rows=CUT + 2,
            progress="none",
            as_of=AsOf(date(2024, 1, 2)),
        )
    message = str(err.value)
    assert message.startswith(f"7 series lack future values of {FUTR} for the full horizon of {H} steps")
    assert "as_of=2024-01-02 cut the input there" in message and "; and 2 more series" in message
    assert "in input rows" not in message  # a count over the whole input, not a chunk's rows
    assert not (tmp_path / "out.parquet").exists()


def test_pyfunc_takes_one_long_table(data, model, isolated_mlflow, tmp_path):
    _, history, future = data
    forecaster, _ = model
    table = with_future_rows(history, future)
    example = table[table.unique_id.isin(["s0", "s1"])].groupby("unique_id").tail(12 + H)
    with mlflow.start_run(experiment_id=ensure_experiment("cov-pyfunc", tmp_path)):
        info = log_forecaster(forecaster, example.reset_index(drop=True))
    columns = info.metadata["input_columns"]
    assert columns["futr"] == ["price", "promo"] and columns["hist"] == ["load", "weather"]
    assert columns["static"] == ["size", "store"] and columns["calendar"] == ["hour"]
    assert info.metadata["future_rows"] == H
    register(info.model_uri, "cov-pyfunc", "champion")
    loaded = mlflow.pyfunc.load_model("models:/cov-pyfunc@champion")
    assert_close(loaded.predict(table), forecaster.predict(table))
    with pytest.raises(MlflowException, match="lack future values"):
        loaded.predict(history)


@pytest.mark.slow
def test_ray_engine_matches_the_local_engine(data, model, isolated_mlflow, tmp_path, ray_cluster):
    pytest.importorskip("ray")
    from pipeline_helpers import register_forecaster

    from forecast.batch import run_batch_forecast
    from forecast.engines.request import RayOptions

    frame, history, future = data
    forecaster, _ = model
    table = with_future_rows(history, future)
    uri = register_forecaster(forecaster, table, "cov-ray", tmp_path, 12 + H)
    table.to_parquet(tmp_path / "rows.parquet", index=False)
    history.to_parquet(tmp_path / "history.parquet", index=False)
    future[["unique_id", "ds", *FUTR]].to_parquet(tmp_path / "future.parquet", index=False)
    expected = forecaster.predict(table)
    options = RayOptions(address=ray_cluster.address, rows_per_partition=150)
    frame.to_parquet(tmp_path / "all.parquet", index=False)  # actuals after as_of: future rows
    cases = [
        ("rows", {"as_of": AsOf(None)}),
        ("history", {"as_of": AsOf(None), "future": str(tmp_path / "future.parquet")}),
        ("all", {"as_of": AsOf(date(2024, 1, 2))}),
    ]
    for name, extra in cases:
        out = tmp_path / f"ray-{name}"
        run_batch_forecast(
            uri,
            str(tmp_path / f"{name}.parquet"),
            str(out),
            str(tmp_path),
            engine="ray",
            runtime="torch",
            ray=options,
            **extra,
        )
        got = pd.read_parquet(out)
        assert np.isfinite(got["y_hat"]).all()
        assert_close(got[expected.columns.tolist()], expected)


def test_ungrouped_input_is_read_whole_and_gives_the_same_forecast(data, model, tmp_path, caplog):
    """Rows of the series interleaved: the one-shot path (read whole, sorted) takes covariates too."""
    _, history, future = data
    forecaster, _ = model
    table = with_future_rows(history, future).sample(frac=1.0, random_state=0)
    table.to_parquet(tmp_path / "shuffled.parquet", index=False)
    forecast_file(
        forecaster, tmp_path / "shuffled.parquet", tmp_path / "out.parquet", chunk_rows=25, progress="none"
    )
    assert "not grouped by series" in caplog.text
    assert_close(pd.read_parquet(tmp_path / "out.parquet"), forecaster.predict(history, future=future))
