"""The streamed batch forecast: same output as the one-shot forecast, chunked or not, validated per
chunk, written atomically, with plain progress lines when not on a terminal."""

import logging
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from model_helpers import tiny_forecaster
from pipeline_helpers import batch_forecast, register_forecaster, run_pipeline

from forecast.batch import run_batch_forecast
from forecast.data import synthetic_long
from forecast.data.validation import ColumnSpec, DataValidationError
from forecast.engines.local import forecast_file, read_batches, whole_series
from forecast.engines.progress import Progress

L, H = 24, 6


def make_forecaster(frame, **model):
    return tiny_forecaster(frame, data={"freq": model.pop("freq", "h")}, **model)


@pytest.fixture
def history():
    """7 series of 60 hourly steps, sorted by id: s0..s6."""
    return synthetic_long(n_series=7, length=60, seed=3)


@pytest.fixture
def forecaster(history):
    return make_forecaster(history)


def stream(forecaster, frame, tmp_path, name="out.parquet", **kw) -> pd.DataFrame:
    source = tmp_path / f"in-{name}"
    frame.to_parquet(source, index=False)
    forecast_file(forecaster, source, tmp_path / name, {"forecast.name": "t"}, progress="none", **kw)
    return pd.read_parquet(tmp_path / name)


def by_series(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["unique_id", "ds"], ignore_index=True)


@pytest.mark.parametrize("chunk_rows", [1, 7, 59, 61, 10_000])
@pytest.mark.parametrize("batch_size", [1, 3, 4096])
def test_streaming_gives_the_one_shot_forecast(forecaster, history, tmp_path, chunk_rows, batch_size):
    got = stream(forecaster, history, tmp_path, chunk_rows=chunk_rows, batch_size=batch_size)
    expected = forecaster.predict(history)
    # Same windows and weights; only the forward passes' batch composition differs.
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-6)


def test_streamed_cycle_model_matches_predict(history, tmp_path):
    # A learned per-series cycle needs each series' phase and code in every chunk and batch.
    f = make_forecaster(history, cycle_len=24, cycle_per_series=True, n_series=7)
    with torch.no_grad():
        f.net.cycle.table.copy_(torch.linspace(-1.0, 1.0, 24))
        f.net.cycle.series.weight[1:].normal_()
    got = stream(f, history, tmp_path, chunk_rows=59, batch_size=3)
    pd.testing.assert_frame_equal(got, f.predict(history), check_exact=False, rtol=1e-6)
    shifted = history.assign(ds=history.ds + pd.Timedelta("5h"))
    assert not np.allclose(stream(f, shifted, tmp_path, "s.parquet")["y_hat"], got["y_hat"])


def test_many_small_chunks_give_identical_results(forecaster, history, tmp_path):
    whole = stream(forecaster, history, tmp_path, "a.parquet", chunk_rows=10_000, batch_size=4)
    chunked = stream(forecaster, history, tmp_path, "b.parquet", chunk_rows=5, batch_size=4)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


def test_chunks_never_split_a_series(history, tmp_path):
    path = tmp_path / "h.parquet"
    history.to_parquet(path, index=False)
    for chunk_rows in (1, 13, 60, 100):
        chunks = list(whole_series(read_batches(path, ColumnSpec(), chunk_rows), "unique_id"))
        ids = [set(t.column("unique_id").to_pylist()) for t, _ in chunks]
        assert sum(len(i) for i in ids) == 7  # every series in exactly one chunk
        assert sum(t.num_rows for t, _ in chunks) == len(history)
        assert [first for _, first in chunks] == list(np.cumsum([0] + [t.num_rows for t, _ in chunks])[:-1])
        # Memory stays bounded: a chunk holds at most one read batch plus one carried series.
        assert max(t.num_rows for t, _ in chunks) <= chunk_rows + 60


def test_rows_unsorted_in_time_are_handled(forecaster, history, tmp_path):
    shuffled = history.groupby("unique_id", group_keys=False).sample(frac=1.0, random_state=0)
    got = stream(forecaster, shuffled, tmp_path, chunk_rows=50)
    pd.testing.assert_frame_equal(got, forecaster.predict(history), check_exact=False, rtol=1e-6)


def test_series_keep_the_input_order(forecaster, history, tmp_path):
    order = ["s4", "s1", "s6", "s0", "s2", "s5", "s3"]
    grouped = pd.concat([history[history.unique_id == i] for i in order], ignore_index=True)
    got = stream(forecaster, grouped, tmp_path, chunk_rows=100)
    assert list(pd.unique(got.unique_id)) == order
    pd.testing.assert_frame_equal(by_series(got), forecaster.predict(history), check_exact=False, rtol=1e-6)


def test_ungrouped_input_is_read_whole_with_a_warning(forecaster, history, tmp_path, caplog):
    mixed = history.sample(frac=1.0, random_state=1)
    with caplog.at_level(logging.WARNING):
        got = stream(forecaster, mixed, tmp_path, chunk_rows=40)
    assert "not grouped by series" in caplog.text
    pd.testing.assert_frame_equal(got, forecaster.predict(history), check_exact=False, rtol=1e-6)


def test_integer_steps_quantiles_and_masked_values(tmp_path):
    frame = synthetic_long(n_series=4, length=80, seed=2)
    frame["ds"] = np.tile(np.arange(0, 80 * 5, 5), 4)
    frame.loc[[70, 150], "y"] = np.nan  # missing inputs, masked
    f = make_forecaster(frame.fillna(1.0), freq=5, loss="quantile", quantiles=[0.1, 0.5, 0.9])
    f.settings.missing = "mask"
    got = stream(f, frame, tmp_path, chunk_rows=30, batch_size=3)
    assert list(got.columns) == ["unique_id", "ds", "y_hat", "y_hat_q10", "y_hat_q50", "y_hat_q90"]
    assert got.ds.iloc[0] == 80 * 5
    pd.testing.assert_frame_equal(got, f.predict(frame), check_exact=False, rtol=1e-6)


def test_csv_and_folder_inputs(forecaster, history, tmp_path):
    expected = forecaster.predict(history)
    csv = tmp_path / "h.csv"
    history.to_csv(csv, index=False)
    forecast_file(forecaster, csv, tmp_path / "csv.parquet", chunk_rows=50, progress="none")
    got = pd.read_parquet(tmp_path / "csv.parquet")
    np.testing.assert_allclose(got.y_hat, expected.y_hat, rtol=1e-6)
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(7), 3)):  # series whole, across files
        history[history.unique_id.isin([f"s{i}" for i in part])].to_parquet(folder / f"p{k}.parquet")
    forecast_file(forecaster, folder, tmp_path / "dir.parquet", chunk_rows=50, progress="none")
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "dir.parquet"), expected, check_exact=False, rtol=1e-6
    )


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda df: df.assign(y=df.y.where(df.index != 400)), "missing value"),
        (lambda df: df[df.index != 400], "not regular"),
        (lambda df: df.drop(columns="y"), "missing column"),
        (lambda df: df.iloc[:0], "no rows"),
    ],
)
def test_bad_chunks_fail_clearly_and_leave_earlier_output(forecaster, history, tmp_path, breakage, message):
    target = tmp_path / "out.parquet"
    target.write_bytes(b"earlier output")
    source = tmp_path / "bad.parquet"
    breakage(history).to_parquet(source, index=False)
    with pytest.raises(DataValidationError, match=message):
        forecast_file(forecaster, source, target, chunk_rows=100, batch_size=2, progress="none")
    assert target.read_bytes() == b"earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet", "out.parquet"]  # no temp file


def test_error_names_the_chunk_rows(forecaster, history, tmp_path):
    source = tmp_path / "bad.parquet"
    history.assign(y=history.y.where(history.index != 400)).to_parquet(source, index=False)
    with pytest.raises(DataValidationError, match=r"in input rows 360 to 419"):
        forecast_file(forecaster, source, tmp_path / "o.parquet", chunk_rows=60, progress="none")


def test_progress_log_lines_are_plain(caplog):
    with caplog.at_level(logging.INFO, logger="forecast.engines.local"):
        bar = Progress(total_rows=1000, mode="log", every_s=0.0)
        for _ in range(4):
            bar.update(series=25, rows=250)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5
    assert lines[0].startswith("forecast: 25 of ~100 series") and "series/s" in lines[0]
    assert lines[-1].startswith("forecast: 100 series (done)")
    assert not any("\r" in line or "\x1b" in line for line in lines)


@pytest.fixture
def registered(history, isolated_mlflow, tmp_path):
    f = make_forecaster(history)
    register_forecaster(f, history, "batch-test", tmp_path, L)
    return f


def test_registered_model_end_to_end_with_metadata(registered, history, tmp_path):
    out = batch_forecast(
        "models:/batch-test@champion", history, tmp_path / "h.parquet", tmp_path / "f.parquet", chunk_rows=100
    )
    meta = pq.read_schema(out).metadata
    assert meta[b"forecast.name"] == b"batch-test" and meta[b"forecast.version"] == b"1"
    assert len(meta[b"forecast.run_id"]) == 32
    pd.testing.assert_frame_equal(
        pd.read_parquet(out), registered.predict(history), check_exact=False, rtol=1e-6
    )


@pytest.mark.slow
def test_cli_prints_plain_progress_lines_when_not_a_terminal(registered, history, tmp_path, subprocess_env):
    source = tmp_path / "h.parquet"
    history.to_parquet(source, index=False)
    proc = run_pipeline(
        "batch_forecast.py",
        [
            "model_uri=models:/batch-test@champion",
            f"input={source}",
            f"output={tmp_path / 'f.parquet'}",
            "chunk_rows=100",
            "batch_size=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
        subprocess_env,
        timeout=180,
    )
    text = proc.stdout + proc.stderr
    assert "forecast: 7 series (done)" in text and "series/s" in text
    assert "\r" not in text and "it/s" not in text  # no tqdm bar
    assert pq.ParquetFile(tmp_path / "f.parquet").metadata.num_rows == 7 * H


def test_ray_engine_without_ray_is_a_clear_error(registered, history, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    source = tmp_path / "h.parquet"
    history.to_parquet(source, index=False)
    with pytest.raises(ImportError, match=r"pip install 'forecast\[ray\]'"):
        run_batch_forecast("models:/batch-test@champion", str(source), str(tmp_path / "o"), engine="ray")
