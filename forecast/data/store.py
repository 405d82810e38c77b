"""Training data past memory: a Parquet table read in chunks into a memory-mapped store.

`data.store=mapped` (`auto` past `AUTO_ROWS` rows) reads the table a chunk of whole series at a
time, validates each chunk as the in-memory path validates the whole table, and writes the target
values end to end into `values.f32`, a flat float32 file that training maps
(`numpy.memmap`): only the pages a batch touches are read, and the operating system may drop
them again, so the process holds the per-series arrays (ids, offsets, statistics: tens of bytes
a series), not the values. The same pass computes every series' split points, scaler statistics
and MASE scale, so nothing reads the values a second time.

The store lives in `cache_dir/<key>/`, the key a digest of the input files' names, sizes and
modification times and of every option that changes what is stored (columns, frequency, missing
and empty-series policies, horizon, validation and test sizes, scaler, season): a second run on
the same data reuses it in a second, a sweep over the model's options too; a sweep over the
horizon or the split reads the table again. It is built in a hidden folder beside the final one
and renamed into place when complete (`forecast.data.staging`), under a lock, so a killed run
leaves nothing a later one would trust and two identical runs build it once.

The table must come grouped by series with the series in ascending id order (as a sort by id
and time writes it; rows of one series may be in any time order inside it): each chunk is then
a set of whole series. A table out of order fails with a one-line error naming the first series
out of place. Errors inside a chunk are the in-memory path's; their counts are those of the
first chunk found with the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from forecast.data.calendar import season_length_for
from forecast.data.chunk_checks import Chunk, clean_chunk, decoded
from forecast.data.io import (
    TRAIN_COLUMNS_HINT,
    check_input,
    folder_files,
    no_rows,
    reading,
    require_columns,
    table_columns,
)
from forecast.data.scaling import segment_stats
from forecast.data.splits import seasonal_mae, split_points
from forecast.data.staging import output_lock, remove, staging_path, sweep_stale
from forecast.data.validation import ColumnSpec, _examples, _plain, series_breaks, validate_long_frame
from forecast.errors import DataValidationError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout of a store changes: older stores are then rebuilt
AUTO_ROWS = 10_000_000  # data.store=auto maps a Parquet table of more rows than this
CHUNK_ROWS = 2_000_000  # rows read and validated at a time (about 100 MB in flight)
_VALUES = "values.f32"
_SERIES = "series.parquet"
_LEFT_OUT = "left_out.parquet"
_META = "meta.json"


def default_cache_dir() -> Path:
    """`$FORECAST_CACHE`, else `~/.cache/forecast`: the stores' folder when `data.cache_dir` is null."""
    return Path(os.environ.get("FORECAST_CACHE") or Path.home() / ".cache" / "forecast") / "series"


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file or folder, from the footers (no data read)."""
    with reading(path):
        if path.is_dir():
            return int(pds.dataset(path, format="parquet", partitioning="hive").count_rows())
        return int(pq.ParquetFile(path).metadata.num_rows)


@dataclass(frozen=True)
class StoreOptions:
    """Everything that changes what a store holds (its key) beside the input files."""

    columns: ColumnSpec
    freq: str | int | None
    missing: str
    empty_series: str
    horizon: int
    val_size: int
    test_size: int
    scaler: str
    season_length: int | None


@dataclass
class MappedSeries:
    """A built store, opened: the values mapped, the per-series arrays in memory."""

    folder: Path
    values: np.ndarray  # (rows,) float32, a read-only view of the mapped file
    ids: np.ndarray  # (n_series,)
    offsets: np.ndarray  # (n_series + 1,) int64
    first_time: pd.Index  # (n_series,) each series' first time stamp (or integer step)
    loc: np.ndarray  # (n_series,) float32
    scale: np.ndarray
    mase_scale: np.ndarray
    freq: str | int
    season_length: int
    left_out: tuple  # series too short for one training window (fewer than horizon + 1 steps)

    def values_of(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) mapped on their own (a DDP rank's share: it maps nothing else)."""
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        return _map(self.folder / _VALUES, start, end - start)


def _files(path: Path) -> list[Path]:
    """The Parquet files of `path`: itself, or a folder's in name order."""
    return folder_files(path)[0] if path.is_dir() else [path]


def store_key(path: Path, options: StoreOptions) -> str:
    """Digest of the input files (relative name, size, mtime) and of the options."""
    files = _files(path)
    stats = []
    for file in files:
        st = file.stat()
        stats.append(
            [str(file.relative_to(path)) if path.is_dir() else file.name, st.st_size, st.st_mtime_ns]
        )
    record = {"format": FORMAT, "path": str(path.resolve()), "files": stats, **_plain_options(options)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _plain_options(options: StoreOptions) -> dict:
    out = dict(vars(options))
    out["columns"] = list(vars(options.columns).values())
    return out


def open_store(
    path: str | os.PathLike, options: StoreOptions, cache_dir: str | os.PathLike | None
) -> MappedSeries:
    """The store of `path` under `options`: reused when built before, else built now."""
    path = check_input(path)
    c = options.columns
    wanted = [c.id_col, c.time_col, c.target_col]
    require_columns(table_columns(path), wanted, path, TRAIN_COLUMNS_HINT)
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    target = folder / store_key(path, options)
    if (target / _META).exists():
        log.info("data: the mapped store of %s is reused (%s)", path, target)
        return _load(target)
    folder.mkdir(parents=True, exist_ok=True)
    with output_lock(target):
        if not (target / _META).exists():  # an identical run may have built it while we waited
            sweep_stale(target)
            staging = staging_path(target)
            try:
                _build(path, options, staging)
                os.rename(staging, target)
            finally:
                if staging.exists():
                    remove(staging)
    return _load(target)


def _chunks(path: Path, names: list[str], rows: int, dictionary: list[str]) -> Iterator[pa.Table]:
    """The table in pieces of about `rows` rows, in file and row order."""
    pending: list[pa.RecordBatch] = []
    count = 0
    with reading(path):
        for batch in _batches(path, names, min(rows, 1 << 20), dictionary):
            pending.append(batch)
            count += batch.num_rows
            if count >= rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
        if pending:
            yield pa.Table.from_batches(pending)


def _batches(path: Path, names: list[str], size: int, dictionary: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches of the columns `names`, file after file (a folder's in name order), read
    when asked for. Not pyarrow's dataset scanner: it decodes ahead in the background, up to a
    gigabyte in flight while validation works on a chunk. Pre-buffering off: with it, a reader
    keeps every row group's raw column data until it is closed (4.7 MB a row group here)."""
    files = _files(path)
    if not set(names) <= set(pq.read_schema(files[0]).names):  # hive partition keys as columns
        yield from pds.dataset(path, format="parquet", partitioning="hive").to_batches(columns=names)
        return
    for file in files:
        parquet = pq.ParquetFile(file, pre_buffer=False, read_dictionary=dictionary)
        yield from parquet.iter_batches(batch_size=size, columns=names)


def _read_ahead(pieces: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """`pieces`, the next one read and decoded on a second thread while this one is checked:
    pyarrow decodes without the GIL, so the two cores share the work (one piece in flight)."""
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast-read") as pool:
        pending = pool.submit(next, pieces, done)
        while True:
            piece = pending.result()  # a reader's error surfaces here, as it would unthreaded
            if piece is done:
                return
            pending = pool.submit(next, pieces, done)
            yield piece


def _whole_series(
    path: Path, names: list[str], id_col: str, rows: int, dictionary: list[str], total: int
) -> Iterator[tuple[pa.Table, int]]:
    """(chunk, its first row in the table): each chunk ends where a series ends; the last
    series of a piece waits for the next one, which may hold more of its rows. `total`, the
    table's rows (from the footers), says which piece is the last without waiting for another."""
    carry: pa.Table | None = None
    first_row = 0
    for piece in _read_ahead(_chunks(path, names, rows, dictionary)):
        if first_row >= total:
            raise DataValidationError(f"{path} changed while it was read (more than its {total} rows)")
        table = piece if carry is None else pa.concat_tables([carry, piece], promote_options="permissive")
        carry = None
        if first_row + len(table) >= total:  # the last piece ends the last series
            yield table, first_row
            first_row += len(table)
            continue
        cut = _last_start(table.column(id_col))
        if cut == 0:  # one series so far: keep reading
            carry = table
            continue
        yield table.slice(0, cut), first_row
        first_row += cut
        # a copy: a slice would keep the whole table it came from alive
        carry = table.slice(cut).combine_chunks()
    if carry is not None:  # fewer rows than the footers said: the file changed while read
        yield carry, first_row


def _last_start(ids: pa.ChunkedArray) -> int:
    """The row where the last run of equal ids begins (0: the table is one run so far), found
    from the end: a series is short beside a chunk, so this compares a few thousand ids, not
    the chunk's two million. A missing id is a run of its own, as pandas compares them."""
    rows = len(ids)
    last = ids[rows - 1]
    if not last.is_valid:
        return rows - 1
    width = 4096
    while True:
        low = max(0, rows - width)
        other = pc.fill_null(pc.not_equal(ids.slice(low), last), True)
        found = np.flatnonzero(other.to_numpy())
        if len(found):
            return low + int(found[-1]) + 1
        if low == 0:
            return 0
        width *= 8


def _validated(
    table: pa.Table, options: StoreOptions, freq, empty_series, first_row: int, dictionary: list[str]
) -> Chunk:
    """`table` checked by the in-memory path's own validation (sorted where it may be, the data
    contract's errors raised word for word): for what `clean_chunk` cannot prove clean. The
    columns read dictionary-encoded (`dictionary`) go to pandas as the file holds them."""
    c = options.columns
    validated = validate_long_frame(
        decoded(table, dictionary).to_pandas(),
        columns=c,
        freq=freq,
        missing=options.missing,
        empty_series=empty_series,
        first_row=first_row,
    )
    frame = validated.frame
    starts = np.concatenate([[0], np.flatnonzero(series_breaks(frame[c.id_col])) + 1])
    return Chunk(
        ids=frame[c.id_col].iloc[starts].to_numpy(),
        lengths=np.diff(np.append(starts, len(frame))),
        first=frame[c.time_col].to_numpy()[starts],
        values=frame[c.target_col].to_numpy(dtype=np.float32),
        freq=validated.freq,
    )


def _build(path: Path, options: StoreOptions, folder: Path) -> None:
    """Read, validate and write the store into `folder` (one streaming pass over the table)."""
    c, H = options.columns, options.horizon
    total = parquet_rows(path)
    if total == 0:
        raise no_rows(path, table_columns(path))
    one_chunk = total <= CHUNK_ROWS  # then validation sees the whole table, as the in-memory path
    folder.mkdir(parents=True)
    freq, season = options.freq, options.season_length
    ids, firsts, lengths, left_out, dropped = [], [], [], [], []
    previous, written, seen, longest = None, 0, 0, 0
    done: list[Future] = []
    with (
        open(folder / _VALUES, "wb") as out,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast-stats") as pool,
    ):
        names = [c.id_col, c.time_col, c.target_col]
        dictionary = _text_ids(path, c.id_col)
        for table, first_row in _whole_series(path, names, c.id_col, CHUNK_ROWS, dictionary, total):
            empty_series = options.empty_series if one_chunk else None
            chunk = clean_chunk(table, c, freq, options.missing, empty_series)
            if chunk is None:
                chunk = _validated(table, options, freq, empty_series, first_row, dictionary)
            del table
            freq = chunk.freq
            if season is None:
                season = season_length_for(freq)
            chunk_ids = chunk.ids
            if previous is not None and not _ascending(previous, chunk_ids[0]):
                raise DataValidationError(
                    f"{path}: data.store=mapped reads the table a chunk of whole series at a time and "
                    f"needs its rows grouped by {c.id_col!r} in ascending order, but series "
                    f"{_plain(chunk_ids[0])!r} comes after {_plain(previous)!r} near row {first_row}; write "
                    f"the table sorted by ({c.id_col}, {c.time_col}), or set data.store=memory"
                )
            previous = chunk_ids[-1]
            n = chunk.lengths
            seen += len(n)
            longest = max(longest, int(n.max()))
            raw, first = chunk.values, chunk.first
            # the empty-series verdict is the whole table's, at the end; only NaN can empty a series
            if not one_chunk and np.isnan(raw).any():
                starts = np.concatenate([[0], np.cumsum(n)[:-1]])
                keep = np.add.reduceat((~np.isnan(raw)).astype(np.int64), starts) > 0
                dropped.extend(chunk_ids[~keep])
                raw, n, chunk_ids, first = _subset(raw, n, keep, chunk_ids, first)
            short = n < H + 1
            if short.any():
                left_out.extend(chunk_ids[short])
                raw, n, chunk_ids, first = _subset(raw, n, ~short, chunk_ids, first)
            if len(n) == 0:
                continue
            ids.append(chunk_ids)
            firsts.append(first)
            lengths.append(n)
            # statistics and the write on the second thread, while this one checks the next chunk
            done.append(pool.submit(_summarise, raw, n, options, season, out))
            written += len(raw)
            del chunk, raw
            if len(done) > 1:  # one chunk waiting at most: memory stays a chunk or two
                done[-2].result()
        stats = [future.result() for future in done]
    # Freed once, at the end: per chunk, every chunk's buffers faulted in afresh (a fifth of the time)
    pa.default_memory_pool().release_unused()
    if dropped:
        if options.empty_series == "error":
            raise DataValidationError(
                f"{len(dropped)} of {seen} series have no observed value in {c.target_col!r} (every one is "
                f"missing): {_examples(dropped)}; remove them, or set data.empty_series=drop to leave "
                "them out"
            )
        log.warning("dropped %d series with no observed target: %s", len(dropped), _examples(dropped))
    if not lengths:
        if dropped and len(dropped) == seen:
            raise DataValidationError(
                f"{seen} of {seen} series have no observed value in {c.target_col!r} (every one is missing): "
                f"{_examples(dropped)}; the table holds no data"
            )
        raise DataValidationError(
            f"no series has the horizon + 1 = {H + 1} steps one training window needs (the longest has "
            f"{longest}): lower data.horizon or bring longer series"
        )
    n = np.concatenate(lengths)
    table = pa.table(
        {
            "id": pa.array(np.concatenate(ids)),
            "first": pa.array(np.concatenate(firsts)),
            "length": n,
            "loc": np.concatenate([loc for loc, _, _ in stats]),
            "scale": np.concatenate([scale for _, scale, _ in stats]),
            "mase_scale": np.concatenate([mase for _, _, mase in stats]),
        }
    )
    pq.write_table(table, folder / _SERIES)
    pq.write_table(pa.table({"id": pa.array(np.asarray(left_out))}), folder / _LEFT_OUT)
    meta = {"format": FORMAT, "rows": written, "series": len(n), "freq": freq, "season_length": season}
    (folder / _META).write_text(json.dumps(meta))  # last: a store with its meta is complete
    log.info(
        "data: mapped store of %d series, %d steps written (%.0f MB)", len(n), written, written * 4 / 2**20
    )


def _text_ids(path: Path, id_col: str) -> list[str]:
    """[id_col] where the ids are text stored plainly, to be read dictionary-encoded: decoding a
    string per row was most of the read (100M rows: 2.8 s of CPU, 1.2 s as a dictionary)."""
    files = _files(path)
    schema = pq.read_schema(files[0])
    if id_col not in schema.names:  # a hive partition key: read by the dataset, as it is
        return []
    kind = schema.field(id_col).type
    return [id_col] if pa.types.is_string(kind) or pa.types.is_large_string(kind) else []


def _summarise(
    raw: np.ndarray, n: np.ndarray, options: StoreOptions, season: int, out
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loc, scale, MASE scale) of a chunk's series, its values appended to `out` (chunks come
    in order: one thread does this)."""
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    val_start, _ = split_points(n, options.horizon, options.val_size, options.test_size)
    loc, scale = segment_stats(raw, offsets[:-1], offsets[:-1] + val_start, options.scaler)
    mase = seasonal_mae(raw, offsets, val_start, season)
    raw.tofile(out)
    return loc, scale, mase


def _ascending(previous, first) -> bool:
    """Whether series `first` may follow series `previous` (ids strictly increasing)."""
    try:
        return bool(first > previous)
    except TypeError:  # ids of mixed types: pandas sorts them by their text
        return str(first) > str(previous)


def _subset(raw: np.ndarray, n: np.ndarray, keep: np.ndarray, *per_series: np.ndarray) -> tuple:
    """The values and lengths of the kept series, then each per-series array's kept entries."""
    if keep.all():
        return raw, n, *per_series
    return raw[np.repeat(keep, n)], n[keep], *(a[keep] for a in per_series)


def _map(file: Path, start: int, count: int) -> np.ndarray:
    """Values [start, start + count) of a store's file, mapped read-only, as a plain ndarray view.

    Pages a batch touches join the process's resident set as file pages (the kernel maps up to
    16 cached neighbours per fault), so RSS grows towards the file's size as training samples
    all over it; they are page cache the kernel drops under pressure, not memory the process
    needs (bench/README.md, training data at scale: RssAnon against RssFile).
    """
    return np.memmap(file, dtype=np.float32, mode="r", offset=4 * start, shape=(count,)).view(np.ndarray)


def reopen(store: MappedSeries) -> MappedSeries:
    """`store` with its values mapped again (in another process: see SeriesDataModule.__getstate__)."""
    if not (store.folder / _META).exists():
        raise DataValidationError(
            f"the mapped store {store.folder} is not reachable from this process (host "
            f"{os.uname().nodename}): put data.cache_dir on a file system every worker shares"
        )
    rows = int(store.offsets[-1])
    values = _map(store.folder / _VALUES, 0, rows)
    return dataclasses.replace(store, values=values)


def _load(folder: Path) -> MappedSeries:
    """Open a built store: map the values, read the per-series table."""
    meta = json.loads((folder / _META).read_text())
    series = pq.read_table(folder / _SERIES)
    n = series.column("length").to_numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    rows = int(meta["rows"])
    # A view as a plain ndarray: batches gather from it like from an array in memory.
    values = _map(folder / _VALUES, 0, rows)
    return MappedSeries(
        folder=folder,
        values=values,
        ids=series.column("id").to_numpy(zero_copy_only=False),
        offsets=offsets,
        first_time=pd.Index(series.column("first").to_pandas()),
        loc=series.column("loc").to_numpy(),
        scale=series.column("scale").to_numpy(),
        mase_scale=series.column("mase_scale").to_numpy(),
        freq=meta["freq"],
        season_length=int(meta["season_length"]),
        left_out=tuple(pq.read_table(folder / _LEFT_OUT).column("id").to_pylist()),
    )
