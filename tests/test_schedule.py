"""Scheduled batch forecasts (docs/batch.md, Scheduling): `as_of` cuts the history at the end of a
day and names the output's partition; a second run for the same day is "already done" and leaves
one MLflow run; `overwrite=true` redoes it atomically; bad dates end with exit 2, a date before
the history with exit 4."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from app_runner import run_inprocess
from model_helpers import tiny_forecaster
from pipeline_helpers import store_with_models

from forecast.asof import AsOf
from forecast.data import synthetic_long
from forecast.errors import ConfigError, DataValidationError, NoHistoryError
from forecast.schedule import EXPERIMENT, already_done, output_path
from forecast.tracking.resolve import ModelRef

L, H = 24, 6
MODEL = "models:/scheduled@champion"
TEMPLATE = "forecasts/as_of={as_of}/forecast.parquet"


def history() -> pd.DataFrame:
    """3 hourly series from 2024-01-01 00:00 to 2024-01-04 07:00 (80 steps)."""
    return synthetic_long(n_series=3, length=80, seed=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One tiny registered model (version 1 of `scheduled`) in a module-wide SQLite store."""
    frame = history()
    model = tiny_forecaster(frame, segment_len=6)
    return store_with_models(tmp_path_factory.mktemp("store"), [model], frame, "scheduled", L)


@pytest.fixture
def work(store, tmp_path, monkeypatch) -> Path:
    """A working folder holding history.parquet, with the store as MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    history().to_parquet(tmp_path / "history.parquet", index=False)
    return tmp_path


def forecast(work: Path, monkeypatch, capsys, *overrides: str, output: str = TEMPLATE):
    args = [f"model_uri={MODEL}", "input=history.parquet", f"output='{output}'", "progress=none", *overrides]
    return run_inprocess("batch_forecast.py", args, work, monkeypatch, capsys)


def runs_for(store: str, output: Path) -> list:
    """The runs of the batch experiment (deleted ones aside) that wrote `output`."""
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if r.data.params.get("output") == str(output.resolve())]


def test_as_of_cuts_at_the_end_of_the_day_and_names_the_partition(work, store, monkeypatch, capsys):
    result = forecast(work, monkeypatch, capsys, "as_of=2024-01-02")
    assert result.code == 0, result.stderr[-2000:]
    out = work / "forecasts" / "as_of=2024-01-02" / "forecast.parquet"
    got = pd.read_parquet(out)
    # Kept: every stamp of 2024-01-02 (up to 23:00); the forecast starts right after the last one.
    assert (got.groupby("unique_id")["ds"].min() == pd.Timestamp("2024-01-03 00:00")).all()
    assert len(got) == 3 * H
    assert pq.read_schema(out).metadata[b"forecast.as_of"] == b"2024-01-02"
    # No silent cut: the rows after as_of, and their series, are a WARNING.
    assert (
        "WARNING" in result.stdout
        and (
            "as_of=2024-01-02 cut 96 later row(s) of 3 series: they are forecast from their history up to "
            "as_of, not from the end of the input; give as_of=null to forecast from the end"
        )
        in result.stdout
    )
    # The same forecast as the history cut by hand, forecast with no cut at all.
    frame = history()
    frame[frame["ds"] < "2024-01-03"].to_parquet(work / "cut.parquet", index=False)
    by_hand = forecast(work, monkeypatch, capsys, "as_of=null", "input=cut.parquet", output="by-hand.parquet")
    assert by_hand.code == 0, by_hand.stderr[-2000:]
    assert "later row(s) of" not in by_hand.stdout
    pd.testing.assert_frame_equal(got, pd.read_parquet(work / "by-hand.parquet"))
    assert b"forecast.as_of" not in pq.read_schema(work / "by-hand.parquet").metadata
    (run,) = runs_for(store, out)
    assert run.info.status == "FINISHED"
    assert run.data.tags["as_of"] == "2024-01-02" and run.data.tags["model_version"] == "1"
    assert run.data.params["model_uri"] == MODEL and run.data.params["model_version"] == "1"
    assert run.data.params["input"] == str(work / "history.parquet") and run.data.params["engine"] == "local"
    metrics = run.data.metrics
    assert metrics["series"] == 3 and metrics["rows"] == 3 * 48 and metrics["rows_dropped"] == 3 * 32
    assert metrics["seconds"] > 0


def test_a_strict_as_of_refuses_later_targets_and_writes_nothing(work, store, monkeypatch, capsys):
    """as_of_strict=true: the cut that warns by default is exit 4 naming the rows and series of
    the whole input (counted across chunks), and nothing is written; an input that ends on
    as_of passes."""
    done = forecast(work, monkeypatch, capsys, "as_of=2024-01-02")
    assert done.code == 0, done.stderr[-2000:]
    out = work / "forecasts" / "as_of=2024-01-02" / "forecast.parquet"
    before = out.read_bytes()
    refused = forecast(
        work, monkeypatch, capsys, "as_of=2024-01-02", "as_of_strict=true", "overwrite=true", "chunk_rows=50"
    )
    assert refused.code == DataValidationError.exit_code == 4, refused.stderr[-2000:]
    assert refused.last_line == (
        "error: as_of=2024-01-02 with as_of_strict=true: the input has 96 row(s) with an observed "
        "target after as_of (kept rows: ds < 2024-01-03 00:00:00) in 3 series ('s0', 's1', 's2'); "
        "nothing was written: give the as_of of the input's last day or an input that ends on as_of, "
        "or as_of_strict=false to forecast from the history up to as_of"
    )
    assert "Traceback" not in refused.stderr and out.read_bytes() == before  # the previous output stays
    (run,) = runs_for(store, out)
    assert run.info.status == "FAILED" and run.data.tags["error.type"] == "LateRowsError"
    assert run.data.tags["as_of_strict"] == "true"
    fresh = forecast(
        work, monkeypatch, capsys, "as_of=2024-01-02", "as_of_strict=true", output="strict/f.parquet"
    )
    assert fresh.code == 4 and not any((work / "strict").iterdir())  # no output, no temporary file
    # The input ends on 2024-01-04: nothing after it, nothing refused.
    last = forecast(work, monkeypatch, capsys, "as_of=2024-01-04", "as_of_strict=true")
    assert last.code == 0, last.stderr[-2000:]
    assert "later row(s) of" not in last.stdout  # no cut, no WARNING
    bad = forecast(work, monkeypatch, capsys, "as_of=2024-01-02", "as_of_strict=maybe")
    assert bad.code == 2 and bad.last_line == "error: as_of_strict must be true or false, got 'maybe'"


def test_a_strict_as_of_lets_placeholder_rows_pass(work, store, monkeypatch, capsys):
    """Rows after as_of with an empty target (tomorrow's placeholders) are cut, not refused."""
    frame = history()
    kept = frame[frame["ds"] < "2024-01-03"]
    later = kept.groupby("unique_id").tail(3).assign(ds=lambda f: f["ds"] + pd.Timedelta(hours=3), y=None)
    pd.concat([kept, later]).to_parquet(work / "placeholders.parquet", index=False)
    args = ("as_of=2024-01-02", "input=placeholders.parquet")
    strict = forecast(work, monkeypatch, capsys, *args, "as_of_strict=true", output="strict.parquet")
    assert strict.code == 0, strict.stderr[-2000:]
    assert "as_of=2024-01-02 cut 9 later row(s) of 3 series" in strict.stdout  # still said
    loose = forecast(work, monkeypatch, capsys, *args, output="loose.parquet")
    assert loose.code == 0, loose.stderr[-2000:]
    pd.testing.assert_frame_equal(
        pd.read_parquet(work / "strict.parquet"), pd.read_parquet(work / "loose.parquet")
    )


def test_a_second_run_is_already_done_and_overwrite_redoes_it(work, store, monkeypatch, capsys):
    assert forecast(work, monkeypatch, capsys, "as_of=2024-01-03").code == 0
    out = work / "forecasts" / "as_of=2024-01-03" / "forecast.parquet"
    first, stat = out.read_bytes(), out.stat()
    (run,) = runs_for(store, out)

    again = forecast(work, monkeypatch, capsys, "as_of=2024-01-03")
    assert again.code == 0, again.stderr[-2000:]
    line = f"already done: {Path('forecasts/as_of=2024-01-03/forecast.parquet')} (as_of=2024-01-03, "
    assert line + "model version 1); overwrite=true to redo" in again.stdout
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # untouched
    assert [r.info.run_id for r in runs_for(store, out)] == [run.info.run_id]

    redo = forecast(work, monkeypatch, capsys, "as_of=2024-01-03", "overwrite=true")
    assert redo.code == 0, redo.stderr[-2000:]
    assert "already done" not in redo.stdout
    assert out.stat().st_ino != stat.st_ino  # a new file renamed into place
    assert out.read_bytes() == first  # the same forecast, byte for byte
    (after,) = runs_for(store, out)
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.info.end_time >= run.info.end_time
    assert sorted(p.name for p in out.parent.iterdir()) == ["forecast.parquet"]


def test_another_day_is_another_partition_and_run(work, store, monkeypatch, capsys):
    for day in ("2024-01-02", "2024-01-03"):
        assert forecast(work, monkeypatch, capsys, f"as_of={day}").code == 0
    days = sorted(p.name for p in (work / "forecasts").iterdir())
    assert days == ["as_of=2024-01-02", "as_of=2024-01-03"]
    # Arrow reads the partitions as one table with an as_of column.
    table = pd.read_parquet(work / "forecasts", partitioning="hive")
    assert sorted(table["as_of"].astype(str).unique()) == ["2024-01-02", "2024-01-03"]
    assert len(table) == 2 * 3 * H
    for day in days:
        (run,) = runs_for(store, work / "forecasts" / day / "forecast.parquet")
        assert run.data.tags["as_of"] == day.split("=")[1]


def test_the_default_is_today_in_utc(work, store, monkeypatch, capsys):
    before = datetime.now(UTC).date().isoformat()
    result = forecast(work, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-2000:]
    (folder,) = (work / "forecasts").iterdir()
    today = folder.name.removeprefix("as_of=")
    assert today in (before, datetime.now(UTC).date().isoformat())  # the run may cross midnight
    out = folder / "forecast.parquet"
    assert pq.read_schema(out).metadata[b"forecast.as_of"] == today.encode()
    # Today is after the history's end: nothing cut, the forecast follows the last stamp.
    assert pd.read_parquet(out)["ds"].min() == pd.Timestamp("2024-01-04 08:00")


def test_a_failed_run_is_marked_failed_and_its_retry_reuses_it(work, store, monkeypatch, capsys):
    bad = history()
    bad.loc[20, "y"] = float("nan")  # missing=error: the run fails with exit code 4
    bad.to_parquet(work / "history.parquet", index=False)
    failed = forecast(work, monkeypatch, capsys, "as_of=2024-01-03")
    assert failed.code == DataValidationError.exit_code, failed.stderr[-2000:]
    out = work / "forecasts" / "as_of=2024-01-03" / "forecast.parquet"
    assert not out.exists()
    (run,) = runs_for(store, out)
    assert run.info.status == "FAILED" and "missing value" in run.data.tags["error"]
    assert run.data.tags["error.type"] == "DataValidationError"

    history().to_parquet(work / "history.parquet", index=False)  # the input is fixed: the retry
    assert forecast(work, monkeypatch, capsys, "as_of=2024-01-03").code == 0
    (retry,) = runs_for(store, out)
    assert retry.info.run_id == run.info.run_id and retry.info.status == "FINISHED"
    assert "error" not in retry.data.tags and retry.data.metrics["series"] == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-13-01", r"as_of='2024-13-01' is not a calendar date \(month must be in 1\.\.12\)"),
        ("yesterday", r"as_of='yesterday' is not a date: give a date YYYY-MM-DD, today"),
        ("2024-01-02T10:00", r"as_of='2024-01-02T10:00' is not a date"),
        ("7", r"as_of=7 is an integer time step, but the model's time column 'ds' holds time stamps"),
    ],
)
def test_a_bad_as_of_exits_2_with_one_line(value, message, work, store, monkeypatch, capsys):
    result = forecast(work, monkeypatch, capsys, f"as_of={value}")
    assert result.code == ConfigError.exit_code, result.stderr[-2000:]
    assert result.last_line.startswith("error: ") and "Traceback" not in result.stderr
    assert re.search(message, result.last_line), result.last_line
    assert not (work / "forecasts").exists() or not any((work / "forecasts").rglob("*.parquet"))


def test_as_of_null_with_the_placeholder_exits_2(work, store, monkeypatch, capsys):
    result = forecast(work, monkeypatch, capsys, "as_of=null")
    assert result.code == ConfigError.exit_code
    assert result.last_line == (
        f"error: output={TEMPLATE!r} holds {{as_of}}, but as_of=null: give a date or step"
    )


def test_as_of_before_the_history_exits_4_naming_the_date(work, store, monkeypatch, capsys):
    result = forecast(work, monkeypatch, capsys, "as_of=2023-12-31")
    assert result.code == NoHistoryError.exit_code == 4, result.stderr[-2000:]
    assert result.last_line == (
        "error: no history at or before as_of=2023-12-31 in history.parquet: its first time stamp "
        "is 2024-01-01 00:00:00 (kept rows: ds < 2024-01-01 00:00:00); give a later as_of or check "
        "the input"
    )
    out = work / "forecasts" / "as_of=2023-12-31" / "forecast.parquet"
    assert not out.exists() and list(out.parent.iterdir()) == []
    (run,) = runs_for(store, out)
    assert run.info.status == "FAILED" and run.data.tags["error.type"] == "NoHistoryError"


# -- the rules, without the pipeline -----------------------------------------------------------
def test_as_of_parses_dates_today_steps_and_null():
    now = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    assert AsOf.parse("today", now=now) == AsOf(date(2026, 11, 22))
    assert AsOf.parse("2026-11-22") == AsOf(date(2026, 11, 22))
    assert AsOf.parse(42) == AsOf(42) and AsOf.parse("42") == AsOf(42)
    assert AsOf.parse(None) == AsOf.parse("none") == AsOf(None)
    for bad in (True, 1.5, "2026-02-30", "22/11/2026", ""):
        with pytest.raises(ConfigError, match="as_of="):
            AsOf.parse(bad)


STAMPS = ["2024-01-02 00:00", "2024-01-02 23:59:59", "2024-01-03 00:00", "2024-01-04 00:00"]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_the_cut_keeps_the_whole_day_in_every_unit(unit):
    stamps = pd.to_datetime(STAMPS, format="ISO8601").as_unit(unit)
    table = pa.table({"ds": pa.array(stamps.to_numpy()), "y": [1.0, 2.0, 3.0, 4.0]})
    assert table.column("ds").type == pa.timestamp(unit)
    assert AsOf(date(2024, 1, 2)).keep(table, "ds").column("y").to_pylist() == [1.0, 2.0]
    assert AsOf(date(2024, 1, 3)).keep(table, "ds").column("y").to_pylist() == [1.0, 2.0, 3.0]
    assert AsOf(date(2024, 1, 1)).keep(table, "ds").num_rows == 0
    assert AsOf(date(9999, 12, 31)).keep(table, "ds") is table  # beyond the unit's range: no cut


def test_the_cut_of_text_dates_and_integer_steps():
    text = pa.table({"ds": STAMPS + [None, "not a date"], "y": [1.0] * 6})
    kept = AsOf(date(2024, 1, 2)).keep(text, "ds").column("ds").to_pylist()
    assert kept == [STAMPS[0], STAMPS[1], None, "not a date"]  # validation refuses the last two
    days = pa.table({"ds": pa.array([date(2024, 1, 2), date(2024, 1, 3)]), "y": [1.0, 2.0]})
    assert AsOf(date(2024, 1, 2)).keep(days, "ds").num_rows == 1
    steps = pa.table({"ds": [5, 6, 7, 8], "y": [1.0] * 4})
    assert AsOf(6).keep(steps, "ds").column("ds").to_pylist() == [5, 6]
    assert AsOf(None).keep(steps, "ds") is steps
    with pytest.raises(ConfigError, match="holds integer steps"):
        AsOf(date(2024, 1, 2)).keep(steps, "ds")
    with pytest.raises(ConfigError, match="holds integer steps"):
        AsOf(date(2024, 1, 2)).check(1)
    AsOf(6).check(1)


def test_output_paths_and_what_already_done_compares(tmp_path):
    day = AsOf(date(2026, 11, 22))
    assert output_path("f/as_of={as_of}/x.parquet", day) == Path("f/as_of=2026-11-22/x.parquet")
    assert output_path("f/latest.parquet", day) == Path("f/latest.parquet")
    with pytest.raises(ConfigError, match="as_of=null"):
        output_path("f/as_of={as_of}/x.parquet", AsOf(None))

    out = tmp_path / "x.parquet"
    meta = {b"forecast.as_of": b"2026-11-22", b"forecast.name": b"m", b"forecast.version": b"3"}
    meta[b"forecast.uri"] = b"models:/m@champion"
    meta[b"forecast.input"] = str(tmp_path / "in.parquet").encode()
    pq.write_table(pa.table({"y": [1.0]}).replace_schema_metadata(meta), out)
    v3, source = ModelRef("models:/m@champion", "m", "3", "r"), str(tmp_path / "in.parquet")
    assert already_done(out, day, v3, source)
    assert not already_done(out, AsOf(date(2026, 11, 23)), v3, source)
    assert not already_done(out, day, ModelRef("models:/m@champion", "m", "4", "r"), source)
    assert not already_done(out, day, v3, str(tmp_path / "other.parquet"))
    assert not already_done(out, AsOf(None), v3, source)  # no cut: the input decides, always redone
    assert already_done(out, day, ModelRef("models:/m@champion", "", "", ""), source)  # by URI
    assert not already_done(out, day, ModelRef("runs:/abc/model", "", "", ""), source)
    assert not already_done(tmp_path / "missing.parquet", day, v3, source)
    (tmp_path / "torn.parquet").write_bytes(b"PAR1 not really")
    assert not already_done(tmp_path / "torn.parquet", day, v3, source)


def test_an_experiment_created_meanwhile_by_another_job_is_used(isolated_mlflow, tmp_path, monkeypatch):
    """Two jobs starting together on a fresh store both try to create `forecast-batch`."""
    from forecast.tracking import store as tracking_store

    other = mlflow.create_experiment(EXPERIMENT)  # the other job won the race
    real, calls = mlflow.get_experiment_by_name, []

    def not_yet_then_real(name):
        calls.append(name)
        return None if len(calls) == 1 else real(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", not_yet_then_real)
    assert tracking_store.ensure_experiment(EXPERIMENT, tmp_path) == other
    assert len(calls) == 2


@pytest.mark.slow
def test_the_ray_engine_cuts_partitions_and_is_done_once(work, store, monkeypatch, capsys, ray_cluster):
    pytest.importorskip("ray")
    ray_out = "ray-forecasts/as_of={as_of}/part"  # not "forecast": Ray workers would import it
    options = [
        "as_of=2024-01-02",
        "engine=ray",
        f"ray.address={ray_cluster.address}",
        "ray.rows_per_partition=100",
    ]
    result = forecast(work, monkeypatch, capsys, *options, output=ray_out)
    assert result.code == 0, result.stderr[-3000:]
    folder = work / "ray-forecasts" / "as_of=2024-01-02" / "part"
    files = sorted(folder.glob("*.parquet"))
    assert files and all(pq.read_schema(f).metadata[b"forecast.as_of"] == b"2024-01-02" for f in files)
    got = pd.read_parquet(folder).sort_values(["unique_id", "ds"], ignore_index=True)
    assert forecast(work, monkeypatch, capsys, "as_of=2024-01-02").code == 0  # the local engine
    local = pd.read_parquet(work / "forecasts" / "as_of=2024-01-02" / "forecast.parquet")
    pd.testing.assert_frame_equal(got, local, check_exact=False, rtol=1e-5)
    (run,) = runs_for(store, folder)
    assert run.data.params["engine"] == "ray" and run.data.metrics["series"] == 3
    assert run.data.metrics["rows_dropped"] == 3 * 32
    assert "WARNING" in result.stdout and "as_of=2024-01-02 cut 96 later row(s) of 3 series" in result.stdout

    again = forecast(work, monkeypatch, capsys, *options, output=ray_out)
    assert again.code == 0 and "already done: " in again.stdout
    assert [r.info.run_id for r in runs_for(store, folder)] == [run.info.run_id]

    # as_of_strict=true: refused before anything is forecast; the previous folder stays as it was.
    strict = forecast(
        work, monkeypatch, capsys, *options, "as_of_strict=true", "overwrite=true", output=ray_out
    )
    assert strict.code == 4, strict.stderr[-3000:]
    assert "the input has 96 row(s) with an observed target after as_of" in strict.last_line
    assert "in 3 series ('s0', 's1', 's2')" in strict.last_line
    assert sorted(folder.glob("*.parquet")) == files
    pd.testing.assert_frame_equal(
        pd.read_parquet(folder).sort_values(["unique_id", "ds"], ignore_index=True), got
    )

    early = forecast(work, monkeypatch, capsys, *options[1:], "as_of=2023-12-31", output=ray_out)
    assert early.code == 4, early.stderr[-3000:]
    assert "no history at or before as_of=2023-12-31" in early.last_line
    assert "2024-01-01 00:00:00" in early.last_line


def test_two_runs_started_together_do_the_work_once(work, store, monkeypatch):
    """A scheduler that fires twice at the same instant: the second waits on the output's lock,
    then finds it done; one forecast, one MLflow run, no lock file left."""
    import threading

    import forecast.schedule as schedule

    real, calls, entered = schedule.forecast_batch, [], threading.Event()

    def slow_forecast(*args, **kwargs):
        calls.append(args[0].output_path)
        entered.set()
        time.sleep(1.0)  # the twin arrives while this one holds the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(schedule, "forecast_batch", slow_forecast)
    monkeypatch.chdir(work)
    results: list = []

    def run() -> None:
        results.append(
            schedule.run_scheduled_forecast(
                MODEL, "history.parquet", TEMPLATE, str(work), as_of="2024-01-02", progress="none"
            )
        )

    first = threading.Thread(target=run)
    first.start()
    assert entered.wait(60)
    second = threading.Thread(target=run)
    second.start()
    first.join(120)
    second.join(120)
    assert len(calls) == 1 and sorted(r is None for r in results) == [False, True]
    target = work / "forecasts" / "as_of=2024-01-02" / "forecast.parquet"
    assert len(runs_for(store, target)) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["forecast.parquet"]
