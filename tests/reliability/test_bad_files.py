"""Bad input files end in one error naming the file and the fix, in the readers and the pipelines.

Every case goes through the three readers (training's `read_table`, the streamed batch reader
and the Ray engine's pre-check); the pipelines' Hydra apps then run in process, as their
`__main__` does, and must exit with code 4, no traceback and a last stderr line `error: ...`
naming the file. Every file-level case runs through one pipeline and the column check through
both (docs/errors.md lists them all).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from app_runner import AppResult, run_isolated
from model_helpers import tiny_forecaster
from pipeline_helpers import TINY_TRAIN, register_forecaster
from stores import new_store

from forecast.data import read_table
from forecast.data.synthetic import synthetic_long
from forecast.data.validation import ColumnSpec
from forecast.engines import ray as ray_engine
from forecast.engines.local import input_rows, read_batches
from forecast.errors import DataValidationError, InputFileError

L, H = 24, 6
NAMES = ["unique_id", "ds", "y"]
HISTORY = synthetic_long(n_series=3, length=60, seed=1)


def _folder(path: Path, files: dict[str, Callable[[Path], object]]) -> None:
    path.mkdir()
    for name, write in files.items():
        write(path / name)


def _truncated(path: Path) -> None:
    HISTORY.to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, the error, the message parts, whether it fails before reading."""

    file: str
    make: Callable[[Path], object] | None
    error: type[Exception]
    parts: tuple[str, ...]
    at_check: bool = True  # found by the path check, before any row or header is read


CASES: dict[str, Case] = {
    "missing path": Case("nope.csv", None, InputFileError, ("input not found", "check the path")),
    "empty folder": Case("empty", lambda p: p.mkdir(), InputFileError, ("folder with no Parquet files",)),
    "folder of CSV files": Case(
        "csvs",
        lambda p: _folder(p, {"a.csv": lambda f: HISTORY.to_csv(f, index=False)}),
        InputFileError,
        ("folder holding files that are not Parquet", "'a.csv'"),
    ),
    "empty CSV": Case("empty.csv", lambda p: p.write_bytes(b""), InputFileError, ("empty (0 bytes)",)),
    "empty Parquet": Case(
        "empty.parquet", lambda p: p.write_bytes(b""), InputFileError, ("empty (0 bytes)",)
    ),
    "unknown extension": Case(
        "history.txt",
        lambda p: HISTORY.to_csv(p, index=False),
        InputFileError,
        ("unknown extension '.txt'", ".csv, .parquet or .pq"),
    ),
    "header-only CSV": Case(
        "header.csv",
        lambda p: HISTORY.head(0).to_csv(p, index=False),
        InputFileError,
        ("has no rows", "['unique_id', 'ds', 'y']"),
        at_check=False,
    ),
    "Parquet of no rows": Case(
        "none.parquet",
        lambda p: HISTORY.head(0).to_parquet(p, index=False),
        InputFileError,
        ("has no rows", "'unique_id', 'ds', 'y'"),
        at_check=False,
    ),
    "truncated Parquet": Case(
        "cut.parquet", _truncated, InputFileError, ("as Parquet", "truncated, corrupt"), at_check=False
    ),
    "misnamed columns": Case(
        "renamed.csv",
        lambda p: HISTORY.rename(columns={"ds": "DS", "y": "value"}).to_csv(p, index=False),
        DataValidationError,
        (
            "missing column(s) ['ds', 'y']",
            "did you mean 'DS' for 'ds', 'value' for 'y'",
            "the table has ['unique_id', 'DS', 'value']",
        ),
        at_check=False,
    ),
    "semicolon CSV, misnamed column": Case(
        "semi.csv",
        lambda p: HISTORY.rename(columns={"unique_id": "id"}).to_csv(p, index=False, sep=";"),
        DataValidationError,
        ("missing column(s) ['unique_id']", "'id' for 'unique_id'", "the table has ['id', 'ds', 'y']"),
        at_check=False,
    ),
    "space-delimited CSV": Case(
        "spaced.csv",
        lambda p: HISTORY.to_csv(p, index=False, sep=" "),
        DataValidationError,
        ("missing column(s)", "the header is one field 'unique_id ds y'"),
        at_check=False,
    ),
}
# Which cases also run through each pipeline: every file-level case through one of them, the
# column check through both (their hints differ).
TRAIN_CASES = ["empty folder", "empty Parquet", "header-only CSV", "misnamed columns"]
BATCH_CASES = [
    "missing path",
    "folder of CSV files",
    "empty CSV",
    "unknown extension",
    "truncated Parquet",
    "misnamed columns",
    "semicolon CSV, misnamed column",
]


def make(case: Case, folder: Path) -> Path:
    path = folder / case.file
    if case.make is not None:
        case.make(path)
    return path


def assert_names(err: BaseException, case: Case, path: Path) -> None:
    assert type(err) is case.error, f"{type(err).__name__}: {err}"
    text = str(err)
    assert str(path) in text and "\n" not in text, text
    for part in case.parts:
        assert part in text, f"{part!r} not in {text!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_readers_name_the_file_and_the_fix(name, tmp_path):
    case = CASES[name]
    path = make(case, tmp_path)
    readers = {
        "train": lambda: read_table(path, columns=NAMES),
        "batch": lambda: list(read_batches(path, ColumnSpec(), chunk_rows=50)),
        "ray": lambda: ray_engine.check_input(path, ColumnSpec()),
    }
    if case.at_check:  # the progress bar's row count runs first in the batch forecast
        readers["batch rows"] = lambda: input_rows(path)
    for reader, read in readers.items():
        with pytest.raises(case.error) as info:
            read()
        try:
            assert_names(info.value, case, path)
        except AssertionError as err:
            raise AssertionError(f"{reader}: {err}") from None


def test_csv_that_does_not_parse_is_named(tmp_path):
    # Ray's engine checks the header and first row only; a bad later row fails in its tasks.
    path = tmp_path / "ragged.csv"
    path.write_text("unique_id,ds,y\na,2024-01-01 00:00,1\na,2024-01-01 01:00,2,7\n")
    for read in (
        lambda: read_table(path, columns=NAMES),
        lambda: list(read_batches(path, ColumnSpec(), chunk_rows=50)),
    ):
        with pytest.raises(InputFileError, match="as CSV: Error tokenizing data") as info:
            read()
        assert str(path) in str(info.value) and "UTF-8 CSV table" in str(info.value)


def test_corrupt_file_inside_a_parquet_folder_is_named(tmp_path):
    folder = tmp_path / "parts"
    _folder(folder, {"a.parquet": lambda p: HISTORY.to_parquet(p, index=False), "b.parquet": _truncated})
    for read in (
        lambda: read_table(folder, columns=NAMES),
        lambda: list(read_batches(folder, ColumnSpec(), chunk_rows=50)),
        lambda: ray_engine.check_input(folder, ColumnSpec()),
    ):
        with pytest.raises(InputFileError, match="truncated, corrupt") as info:
            read()
        assert str(folder) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "locked.csv"
    HISTORY.to_csv(path, index=False)
    path.chmod(0)
    try:
        for read in (
            lambda: read_table(path, columns=NAMES),
            lambda: list(read_batches(path, ColumnSpec(), chunk_rows=50)),
            lambda: ray_engine.check_input(path, ColumnSpec()),
        ):
            with pytest.raises(InputFileError, match="permission denied") as info:
                read()
            assert str(path) in str(info.value)
    finally:
        path.chmod(0o644)


def test_unreadable_file_is_named_even_as_root(tmp_path, monkeypatch):
    # Root reads any file, so the permission check is made to fail as it would for a user.
    path = tmp_path / "locked.parquet"
    HISTORY.to_parquet(path, index=False)
    monkeypatch.setattr("forecast.data.io.os.access", lambda *_: False)
    with pytest.raises(InputFileError, match="permission denied; make it readable") as info:
        read_table(path, columns=NAMES)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_other_delimiters_are_read_from_the_header(sep, tmp_path):
    path = tmp_path / "history.csv"
    HISTORY.to_csv(path, index=False, sep=sep)
    expected = pd.read_csv(path, sep=sep)
    pd.testing.assert_frame_equal(read_table(path, columns=NAMES), expected)
    streamed = pd.concat(t.to_pandas() for t in read_batches(path, ColumnSpec(), chunk_rows=50))
    pd.testing.assert_frame_equal(streamed.reset_index(drop=True), expected)
    assert ray_engine.check_input(path, ColumnSpec()) == (path, sep)


def test_a_delimiter_inside_quoted_names_is_not_the_delimiter(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('unique_id,ds,"y;units|eur"\na,2024-01-01,1.5\n')
    assert list(read_table(path).columns) == ["unique_id", "ds", "y;units|eur"]


# -- the pipelines -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder whose default local store (./mlflow.db) holds `bad-files@champion`."""
    import mlflow

    work = tmp_path_factory.mktemp("bad-files")
    new_store(work / "mlflow.db")  # where the pipelines' default store is when run from `work`
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        register_forecaster(tiny_forecaster(HISTORY), HISTORY, "bad-files", work, L)
    mlflow.set_tracking_uri(None)
    return work


def run_app(script: str, args: list[str], work: Path, monkeypatch, capsys) -> AppResult:
    """The pipeline in process from `work`, with its default store (`work/mlflow.db`)."""
    return run_isolated(script, args, work, monkeypatch, capsys, default_store=True)


def assert_one_line_error(result: AppResult, case: Case, path: Path) -> None:
    assert result.code == 4, f"exit {result.code}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.last_line
    assert last.startswith("error: ") and str(path) in last, last
    for part in case.parts:
        assert part in last, f"{part!r} not in {last!r}"


def run_cases(names: list[str], folder: Path, run: Callable[[Path], AppResult]) -> None:
    """Run the pipeline on every case and check each one's exit and last line."""
    for name in names:
        case_folder = folder / name.replace(" ", "_").replace(",", "")
        case_folder.mkdir()
        path = make(CASES[name], case_folder)
        try:
            assert_one_line_error(run(path), CASES[name], path)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None


def test_train_pipeline_exits_4_naming_the_file(workdir, tmp_path, monkeypatch, capsys):
    run_cases(
        TRAIN_CASES,
        tmp_path,
        lambda path: run_app("train.py", [*TINY_TRAIN, f"data.path={path}"], workdir, monkeypatch, capsys),
    )


def test_batch_pipeline_exits_4_naming_the_file_and_writes_nothing(workdir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"

    def forecast(path: Path) -> AppResult:
        target = out / f"{path.parent.name}.parquet"
        args = ["model_uri=models:/bad-files@champion", f"input={path}", f"output={target}", "progress=none"]
        return run_app("batch_forecast.py", args, workdir, monkeypatch, capsys)

    run_cases(BATCH_CASES, tmp_path, forecast)
    assert not out.exists() or not any(out.iterdir())


def test_batch_pipeline_forecasts_a_semicolon_csv(workdir, tmp_path, monkeypatch, capsys):
    source, target = tmp_path / "semi.csv", tmp_path / "forecast.parquet"
    HISTORY.to_csv(source, index=False, sep=";")
    args = ["model_uri=models:/bad-files@champion", f"input={source}", f"output={target}", "progress=none"]
    result = run_app("batch_forecast.py", args, workdir, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    out = pd.read_parquet(target)
    assert len(out) == 3 * H and out["y_hat"].notna().all()
    assert sorted(out["unique_id"].unique()) == sorted(HISTORY["unique_id"].unique())
