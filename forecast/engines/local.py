"""In-process batch forecast, streamed: read chunks of whole series, forecast, append, rename.

Memory stays flat as the input grows: one chunk of input rows (`chunk_rows`) and one batch of
series windows (`batch_size`) are in memory at a time, and the output is appended to a
temporary Parquet file that replaces the target only when everything succeeded
(`forecast.data.parquet_writer`); progress is a bar or log lines (`forecast.engines.progress`).

Streaming needs each series' rows to be contiguous in the input (grouped by id, as a table
sorted by id is; the time order inside a series does not matter). A series that continues
into the next read batch is carried over, so chunk edges never split one. Input that is not
grouped is detected (an id seen again after other series) and then read whole and sorted
instead, with a warning: correct, but memory then grows with the input.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from forecast.asof import AsOf, FutureCut, HistoryCut
from forecast.blocks import ScaledWindows
from forecast.data.io import (
    check_input,
    csv_delimiter,
    is_parquet,
    no_rows,
    reading,
    require_columns,
    table_columns,
)
from forecast.data.parquet_writer import AtomicParquetWriter
from forecast.data.validation import ColumnSpec, DataValidationError, validate_long_frame
from forecast.engines.chunks import FutureRows, chunk_block
from forecast.engines.progress import Progress, ProgressMode
from forecast.errors import ConfigError, LateRowsError, MissingFutureError, NoHistoryError, NonFiniteError
from forecast.forecaster import Forecaster, log_padded

log = logging.getLogger(__name__)

_PARQUET = (".parquet", ".pq")


class NotGrouped(Exception):
    """An id came back after other series: the input is not grouped by series."""


@dataclass(frozen=True)
class StreamSummary:
    """What a streamed forecast did."""

    output: Path
    series: int
    rows: int
    chunks: int
    unseen: int
    seconds: float
    padded: int = 0  # series shorter than the input window, padded in front (masked)
    dropped: int = 0  # input rows after `as_of`, not used


# -- reading -----------------------------------------------------------------------------------
def _names(columns: ColumnSpec) -> list[str]:
    return [columns.id_col, columns.time_col, columns.target_col]


def model_columns(forecaster: Forecaster) -> list[str]:
    """The input columns the model reads: id, time, target, then its covariate columns."""
    enc = forecaster.encoder
    return _names(forecaster.columns) + ([] if enc is None else enc.table_columns)


def input_columns(forecaster: Forecaster, available: list[str]) -> list[str]:
    """The columns to read: the model's, and static ones the input happens to carry (a model
    trained with a static table takes them from the input, `Forecaster.covariate_block`)."""
    wanted = model_columns(forecaster)
    static = forecaster.covariate_columns["static"]
    return wanted + [col for col in static if col in available and col not in wanted]


def require_model_columns(
    available: list[str], columns: ColumnSpec, path: Path, covariates: list[str] | None = None
) -> None:
    """The model's columns must be in the input: checked from its header, before any row is read."""
    hint = (
        f"The model was trained on id {columns.id_col!r}, time {columns.time_col!r} and target "
        f"{columns.target_col!r}: rename the file's columns to these."
    )
    if covariates:
        hint += f" It also reads the covariate columns {covariates}."
    require_columns(available, _names(columns) + list(covariates or []), path, hint)


def input_rows(path: str | os.PathLike) -> int | None:
    """Row count from Parquet metadata (None for CSV): the progress bar's denominator."""
    path = check_input(path)
    with reading(path):
        if path.is_dir():
            return pds.dataset(path, format="parquet", partitioning="hive").count_rows()
        if path.suffix.lower() in _PARQUET:
            return pq.ParquetFile(path).metadata.num_rows
    return None


def read_batches(
    path: str | os.PathLike, columns: ColumnSpec, chunk_rows: int, forecaster: Forecaster | None = None
) -> Iterator[pa.Table]:
    """The id, time and target columns (and the covariate columns of `forecaster`'s model) in
    batches of at most `chunk_rows` rows, in file order.

    Every problem with the file (missing, empty, no rows, truncated, other columns) is an
    InputFileError or DataValidationError naming it.
    """
    path = check_input(path)
    names = _names(columns)
    sep = "," if is_parquet(path) else csv_delimiter(path)
    available = table_columns(path, sep)
    covariates = [] if forecaster is None else model_columns(forecaster)[3:]
    require_model_columns(available, columns, path, covariates)
    if forecaster is not None:
        names = input_columns(forecaster, available)
    rows = 0
    with reading(path):
        if path.is_dir():
            dataset = pds.dataset(path, format="parquet", partitioning="hive")
            tables = (
                pa.Table.from_batches([b]) for b in dataset.to_batches(columns=names, batch_size=chunk_rows)
            )
        elif path.suffix.lower() in _PARQUET:
            # pre_buffer off: with it the reader keeps every row group's raw data until closed
            # (4.7 MB a row group, gigabytes over a large file: forecast.data.store)
            parquet = pq.ParquetFile(path, pre_buffer=False)
            tables = (
                pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=chunk_rows, columns=names)
            )
        else:
            frames = pd.read_csv(path, sep=sep, chunksize=chunk_rows)
            tables = (pa.Table.from_pandas(f[names], preserve_index=False) for f in frames)
        for table in tables:
            rows += table.num_rows
            at = table.schema.get_field_index(columns.id_col)
            if pa.types.is_null(table.schema.field(at).type):  # ids all empty: Arrow has no kernels
                table = table.set_column(at, columns.id_col, table.column(at).cast(pa.string()))
            yield table
    if rows == 0:
        raise no_rows(path, available)


def read_sorted(
    path: str | os.PathLike, columns: ColumnSpec, chunk_rows: int, forecaster: Forecaster | None = None
) -> Iterator[pa.Table]:
    """The whole input sorted by id (stable), in slices: for input that is not grouped."""
    table = pa.concat_tables(read_batches(path, columns, chunk_rows, forecaster))
    order = pc.sort_indices(table, sort_keys=[(columns.id_col, "ascending")])  # empty ids last
    # Empty ids first instead: their chunk is validated first and refused as such, not as a gap
    # in the series they were cut from.
    empty = table.column(columns.id_col).null_count
    table = table.take(pa.concat_arrays([order[len(order) - empty :], order[: len(order) - empty]]))
    for start in range(0, table.num_rows, chunk_rows):
        yield table.slice(start, chunk_rows)


def whole_series(tables: Iterator[pa.Table], id_col: str) -> Iterator[tuple[pa.Table, int]]:
    """Re-cut batches at series boundaries: (chunk, its first input row), each series whole.

    The last series of a batch may go on in the next one, so it is held back and joined to it.
    """
    carry: pa.Table | None = None
    first_row = 0
    for table in tables:
        if carry is not None and carry.num_rows:
            table = pa.concat_tables([carry, table])
        if table.num_rows == 0:
            continue
        cut = _last_run_start(table.column(id_col))
        if cut == 0:  # one series so far: keep reading
            carry = table
            continue
        yield table.slice(0, cut), first_row
        first_row += cut
        carry = table.slice(cut)
    if carry is not None and carry.num_rows:
        yield carry, first_row


def _last_run_start(ids: pa.ChunkedArray) -> int:
    """Row where the last run of equal ids starts, looking back from the end only as far as needed."""
    n, last, span = len(ids), ids[-1], 4096
    while True:
        start = max(0, n - span)
        differs = pc.fill_null(pc.not_equal(ids.slice(start), last), True).to_numpy(zero_copy_only=False)
        if differs.any():
            return start + int(differs.nonzero()[0][-1]) + 1
        if start == 0:
            return 0
        span *= 4


# -- the engine --------------------------------------------------------------------------------
def forecast_file(
    forecaster: Forecaster,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    *,
    chunk_rows: int = 1_000_000,
    batch_size: int = 4096,
    progress: ProgressMode = "auto",
    as_of: AsOf | None = None,
    future: str | os.PathLike | None = None,
) -> StreamSummary:
    """Forecast every series of `input_path` into the Parquet file `output_path`, streamed.

    `as_of` drops the rows after that date (or step) as they are read (`forecast.asof`); for a
    model with future-known covariates and no `future` table it keeps them as future rows
    instead, target emptied (`FutureCut`). A strict `as_of` refuses observed targets after it
    (LateRowsError, nothing written). `future`: a table of the future-known covariates over the
    horizon (id, time, columns), read whole and joined to each chunk's series by id.
    """
    if chunk_rows < 1 or batch_size < 1:
        raise ConfigError(f"chunk_rows and batch_size must be >= 1, got {chunk_rows} and {batch_size}")
    c = forecaster.columns
    enc = forecaster.encoder
    ahead = None
    if future is not None:
        if enc is not None and enc.needs_future:
            ahead = FutureRows.read(future, forecaster)
        else:
            log.info("the model reads no future-known covariates: future=%s is not used", future)
    args = (forecaster, output_path, metadata, input_rows(input_path), batch_size, progress, ahead)

    def history_cut() -> HistoryCut | FutureCut:
        if enc is not None and enc.needs_future and ahead is None:
            return FutureCut(as_of, c.time_col, c.target_col, input_path, id_col=c.id_col)
        return HistoryCut(as_of, c.time_col, input_path, id_col=c.id_col, target_col=c.target_col)

    cut = history_cut()
    try:
        summary = _stream(cut.tables(read_batches(input_path, c, chunk_rows, forecaster)), *args)
        return replace(summary, dropped=cut.dropped)
    except NotGrouped as err:
        reason = str(err)
    except (NoHistoryError, LateRowsError):  # about as_of, not about how the input is grouped
        raise
    except MissingFutureError as err:
        if as_of is not None and as_of.value is not None:
            raise err.cut_at(as_of.label) from None
        raise
    except DataValidationError:
        # A series split across chunks looks short or gappy: only an error if it is not that.
        if is_grouped(input_path, c, chunk_rows):
            raise
        reason = "a chunk failed validation and some series are split across the input"
    log.warning(
        "%s: the input is not grouped by series, so it is read whole and sorted (memory grows "
        "with the input). Sort it by %r to stream it in constant memory.",
        reason,
        c.id_col,
    )
    cut = history_cut()
    tables = cut.tables(read_sorted(input_path, c, chunk_rows, forecaster))
    return replace(_stream(tables, *args), dropped=cut.dropped)


def is_grouped(path: str | os.PathLike, columns: ColumnSpec, chunk_rows: int) -> bool:
    """Whether every series' rows are contiguous in the input (one pass over the ids)."""
    seen: set = set()
    last = None
    for table in read_batches(path, columns, chunk_rows):
        ids = table.column(columns.id_col).combine_chunks()
        if len(ids) == 0:
            continue
        change = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
        runs = ids.take(pa.array(np.concatenate([[0], np.flatnonzero(change) + 1]))).to_pylist()
        for i in runs[1:] if runs[0] == last else runs:
            if i in seen:
                return False
            seen.add(i)
        last = runs[-1]
    return True


def _stream(
    tables: Iterator[pa.Table],
    forecaster: Forecaster,
    output_path: str | os.PathLike,
    metadata: dict[str, str] | None,
    total_rows: int | None,
    batch_size: int,
    progress: ProgressMode,
    future: FutureRows | None = None,
) -> StreamSummary:
    """Chunks of whole series -> validated windows; every `batch_size` series -> network -> file."""
    started = time.perf_counter()
    seen: set = set()  # ids of the series done: one that comes back means the input is not grouped
    pending: list[ScaledWindows] = []
    pending_rows = series = rows = chunks = unseen = padded = 0
    lacking: MissingFutureError | None = None  # series without future values, over all chunks
    bar = Progress(total_rows, progress)

    def flush() -> None:
        nonlocal pending, pending_rows, series, unseen, padded
        windows = ScaledWindows.concat(pending)
        try:
            frame = forecaster.forecast_windows(windows, batch_size)
        except NonFiniteError as err:  # say where: the run stops at the first such batch
            first = f"{series + 1:,} to {series + len(windows):,}"
            raise NonFiniteError(f"stopped at series {first} of the input: {err}") from None
        writer.write(frame)
        bar.update(len(windows), pending_rows)
        series, unseen = series + len(windows), unseen + windows.unseen
        padded += windows.padded
        pending, pending_rows = [], 0

    with AtomicParquetWriter(output_path, metadata) as writer:
        try:
            for table, first_row in whole_series(tables, forecaster.columns.id_col):
                try:
                    block = chunk_block(table, forecaster, first_row, future)
                except MissingFutureError as err:  # go on counting: the error names the total
                    lacking = err if lacking is None else lacking.plus(err)
                    continue
                ids = block.ids.tolist()
                if not seen.isdisjoint(ids):
                    again = next(i for i in ids if i in seen)
                    raise NotGrouped(f"series {again!r} appears again at input row {first_row:,} or later")
                seen.update(ids)
                pending.append(forecaster.scaled_windows(block))
                pending_rows += table.num_rows
                rows += table.num_rows
                chunks += 1
                if lacking is None and sum(len(p) for p in pending) >= batch_size:
                    flush()  # (once a chunk lacks future values, the rest is only checked)
            if lacking is not None:
                raise lacking
            if pending:
                flush()
        except BaseException:
            bar.close(done=False)
            raise
        if chunks == 0:  # the contract's "no rows" error
            validate_long_frame(pd.DataFrame(columns=_names(forecaster.columns)), columns=forecaster.columns)
        out = writer.commit()
    bar.close()
    if unseen:
        log.warning("%d series were not in training; scaled them by their own history", unseen)
    log_padded(padded, forecaster.settings.input_size)
    return StreamSummary(out, series, rows, chunks, unseen, time.perf_counter() - started, padded)
