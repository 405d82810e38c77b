"""Read and write long tables as CSV or Parquet, and write files atomically.

Reading checks the input first (`check_input`) and turns pandas', pyarrow's and the file
system's errors into one `InputFileError` that names the path and the fix: a scheduled run
that fails must say which file is wrong and how, not where in pyarrow it stopped.

CSV delimiter: read from the header line (`csv_delimiter`): ',' unless ';', a tab or '|'
splits the header into more fields, so a semicolon-separated export is read as it is (and
logged) rather than as one column named "unique_id;ds;y". No option needed; quoted names may
hold any of these characters.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from forecast.errors import DataValidationError, InputFileError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
CSV_DELIMITERS = (",", ";", "\t", "|")  # the first wins ties
TRAIN_COLUMNS_HINT = "Rename them in the file or set data.id_col / data.time_col / data.target_col."
_SHOWN = 20  # column or file names an error message lists

# What pandas, pyarrow and the file system raise for a file they cannot read or parse.
_READ_ERRORS = (
    pa.ArrowException,
    OSError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    UnicodeDecodeError,
)


def _listed(names: Sequence[str]) -> str:
    """At most `_SHOWN` names, then how many more: a message stays one readable line."""
    more = f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return f"{list(names[:_SHOWN])}{more}"


def _hidden(path: Path, root: Path) -> bool:
    """Whether pyarrow's datasets skip this file ('.' or '_' prefixes, e.g. _SUCCESS, .crc)."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(Parquet files, other files) a folder dataset would read, hidden ones left out."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))
    parquet = [p for p in files if p.suffix.lower() in PARQUET_SUFFIXES]
    return parquet, [p for p in files if p.suffix.lower() not in PARQUET_SUFFIXES]


def check_input(path: str | os.PathLike) -> Path:
    """The input path, checked before any reader sees it: a missing, unreadable, empty or
    unknown file, or a folder without Parquet files, is an `InputFileError` naming it."""
    path = Path(path)
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise InputFileError(f"input not found: {path}{where}; check the path")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InputFileError(f"cannot read {path}: permission denied; make it readable by this user (chmod)")
    if path.is_dir():
        parquet, others = folder_files(path)
        if others:
            names = _listed([str(p.relative_to(path)) for p in others])
            raise InputFileError(
                f"{path} is a folder holding files that are not Parquet: {names}; give a CSV or "
                "Parquet file, or a folder holding only Parquet files (*.parquet, *.pq)"
            )
        if not parquet:
            raise InputFileError(
                f"{path} is a folder with no Parquet files; give a CSV or Parquet file, or a "
                "folder of Parquet files (*.parquet, *.pq)"
            )
        return path
    if path.suffix.lower() not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise InputFileError(
            f"cannot read {path}: unknown extension {path.suffix!r}; give a .csv, .parquet or .pq "
            "file, or a folder of Parquet files"
        )
    if path.stat().st_size == 0:
        raise InputFileError(f"{path} is empty (0 bytes); write the table again, header and rows")
    return path


def is_parquet(path: Path) -> bool:
    """Whether `path` (already checked) is read as Parquet: a Parquet file or a folder of them."""
    return path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn a reader's error (pyarrow, pandas, the file system) into an InputFileError naming `path`."""
    try:
        yield
    except _READ_ERRORS as err:
        detail = "; ".join(line.strip().rstrip(".") for line in str(err).splitlines() if line.strip())
        if is_parquet(path):
            fix = "the file is truncated, corrupt or not Parquet: write it again"
            kind = "Parquet"
        else:
            fix = "check that it is a UTF-8 CSV table with one header line and the same fields in every row"
            kind = "CSV"
        raise InputFileError(f"cannot read {path} as {kind}: {detail or type(err).__name__}; {fix}") from err


def csv_delimiter(path: Path) -> str:
    """The CSV delimiter: the one of `CSV_DELIMITERS` that splits the header line most often."""
    with reading(path), open(path, "rb") as file:
        header = file.readline(1 << 16).decode("utf-8", errors="replace")
    header = re.sub(r'"[^"]*"', "", header)  # a quoted name may hold a delimiter
    best = max(CSV_DELIMITERS, key=header.count)
    if best != "," and header.count(best) > header.count(","):
        log.info("reading %s as %r-separated (the delimiter of its header line)", path, best)
        return best
    return ","


def table_columns(path: Path, sep: str = ",") -> list[str]:
    """Column names of a checked input, from its header or Parquet schema (no rows read)."""
    with reading(path):
        if path.is_dir():
            return list(pds.dataset(path, format="parquet", partitioning="hive").schema.names)
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return list(pq.read_schema(path).names)
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]


def require_columns(available: Sequence[str], wanted: Sequence[str], path: Path, hint: str) -> None:
    """A DataValidationError naming the missing columns, the file's columns and the closest names."""
    missing = [name for name in wanted if name not in available]
    if not missing:
        return
    spare = [str(c) for c in available if c not in wanted]
    lowered = {c.lower().replace("_", "").replace(" ", ""): c for c in spare}
    guesses, unmatched = [], []
    for name in missing:
        key = name.lower().replace("_", "").replace(" ", "")
        close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.6)
        if close:
            guesses.append(f"{lowered.pop(close[0])!r} for {name!r}")
        else:
            unmatched.append(name)
    if len(unmatched) == len(lowered) == 1:  # the one column left over is the one missing
        guesses.append(f"{next(iter(lowered.values()))!r} for {unmatched[0]!r}")
    maybe = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    field = str(available[0]) if len(available) == 1 else ""
    if field not in wanted and any(name in field for name in wanted):  # "unique_id ds y"
        maybe += f" (the header is one field {field!r}: separate the columns by ',', ';', a tab or '|')"
    raise DataValidationError(
        f"{path}: missing column(s) {missing}{maybe}; the table has {_listed(list(map(str, available)))}. "
        f"{hint}"
    )


def no_rows(path: Path, columns: Sequence[str]) -> InputFileError:
    """The error for an input with a header or schema but not one row."""
    return InputFileError(
        f"{path} has no rows (only the columns {_listed(list(map(str, columns)))}); "
        "check that the export wrote its data"
    )


def has_rows(path: Path, sep: str = ",") -> bool:
    """Whether a checked input holds at least one row (Parquet metadata, or one CSV row)."""
    with reading(path):
        if path.is_dir():
            return pds.dataset(path, format="parquet", partitioning="hive").count_rows() > 0
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return pq.ParquetFile(path).metadata.num_rows > 0
        return len(pd.read_csv(path, sep=sep, nrows=1)) > 0


def read_table(
    path: str | os.PathLike,
    columns: Sequence[str] = (),
    hint: str = TRAIN_COLUMNS_HINT,
    only: bool = False,
) -> pd.DataFrame:
    """Read a CSV or Parquet file (or a folder of Parquet files) into a DataFrame.

    `columns` must be in it (checked from the header, before the rows are read); every problem
    with the file is an InputFileError or DataValidationError naming the path. `only`: read just
    those columns (a wide table's other columns would cost memory until validation drops them).
    """
    path = check_input(path)
    sep = "," if is_parquet(path) else csv_delimiter(path)
    if columns:
        require_columns(table_columns(path, sep), columns, path, hint)
    with reading(path):
        usecols = list(columns) if only and columns else None
        if is_parquet(path):
            frame = pd.read_parquet(path, columns=usecols)
        else:
            frame = pd.read_csv(path, sep=sep, usecols=usecols)
    if len(frame) == 0:
        raise no_rows(path, list(frame.columns))
    return frame


def write_parquet_atomic(
    frame: pd.DataFrame, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write a Parquet file so that readers see either the old file or the complete new one.

    The table goes to a temporary file in the same folder, then `os.replace` moves it into
    place, which is atomic on POSIX: a crash leaves no partial output and keeps an earlier one,
    and the temporary name carries this process's id so that the next write removes it
    (`forecast.data.staging`). `metadata` lands in the file's schema metadata (e.g. which model
    made a forecast). Raises OutputError when `path` cannot be written.
    """
    from forecast.data.staging import fsync_tree, output_error, staging_path, sweep_stale

    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    tmp = staging_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        pq.write_table(table, tmp)
        fsync_tree(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise output_error(path, err) from err
    finally:
        with suppress(OSError):  # gone after the rename; never there if the folder is not
            tmp.unlink(missing_ok=True)
    return path
