"""A chunk of a table checked in Arrow, without pandas: clean data at about the speed of the read.

`clean_chunk` proves that a chunk is what `validate_long_frame` would accept unchanged (grouped
by id in ascending order, each series in time order on its frequency's grid, a finite numeric
target, NaN only where `data.missing=mask` allows it) and returns its arrays. Whatever it cannot
prove it leaves to `validate_long_frame` (it returns None): that path sorts what needs sorting
and raises the data contract's errors word for word. So this module only decides how fast a
chunk goes, never what is accepted nor what an error says.

Why not pandas for everything: converting a chunk's string ids to pandas and comparing them
row against row took most of the mapped store's set-up time (bench/README.md, training data at
scale); Arrow compares them in place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forecast.data.calendar import fixed_step
from forecast.data.validation import ColumnSpec, _resolve_freq
from forecast.errors import DataValidationError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Chunk:
    """Whole series, validated: the arrays the store writes and keeps."""

    ids: np.ndarray  # (n_series,) each series' id
    lengths: np.ndarray  # (n_series,) int64 rows of each
    first: np.ndarray  # (n_series,) each series' first time stamp (or integer step)
    values: np.ndarray  # (rows,) float32 target, series after series
    freq: str | int


def decoded(table: pa.Table, names: list[str]) -> pa.Table:
    """`table` with its columns `names` as plain arrays where they were read dictionary-encoded."""
    for name in names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.cast(column, column.type.value_type)
            )
    return table


def _plain_types(ids: pa.DataType, times: pa.DataType, target: pa.DataType) -> bool:
    """Types whose pandas conversion `validate_long_frame` takes as they are (no parsing); ids
    may come dictionary-encoded (the store reads text ids so: no string per row to decode)."""
    if pa.types.is_dictionary(ids):
        ids = ids.value_type
    plain_ids = pa.types.is_string(ids) or pa.types.is_large_string(ids) or pa.types.is_integer(ids)
    plain_times = (pa.types.is_timestamp(times) and times.tz is None) or pa.types.is_integer(times)
    numeric = pa.types.is_integer(target) or pa.types.is_float32(target) or pa.types.is_float64(target)
    return plain_ids and plain_times and numeric


def clean_chunk(
    table: pa.Table,
    columns: ColumnSpec,
    freq: str | int | None,
    missing: str,
    empty_series: str | None,
) -> Chunk | None:
    """`table`'s arrays if it passes the data contract as it is, else None (validate it in pandas)."""
    c = columns
    names = (c.id_col, c.time_col, c.target_col)
    if len(set(names)) < 3 or len(table) == 0 or missing not in ("error", "mask"):
        return None
    if empty_series not in ("error", "drop", None):
        return None
    ids, times, target = (_whole(table.column(name)) for name in names)
    if not _plain_types(ids.type, times.type, target.type) or ids.null_count or times.null_count:
        return None
    rows = len(table)
    if pa.types.is_dictionary(ids.type):  # one dictionary (combined): equal ids, equal codes
        codes = ids.indices.to_numpy()
        breaks = codes[1:] != codes[:-1]
        starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
        run_ids = ids.dictionary.take(pa.array(codes[starts]))
    else:
        breaks = pc.not_equal(ids.slice(1), ids.slice(0, rows - 1)).to_numpy(zero_copy_only=False)
        starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
        run_ids = ids.take(pa.array(starts))
    if len(starts) > 1 and not pc.all(pc.less(run_ids.slice(0, len(starts) - 1), run_ids.slice(1))).as_py():
        return None  # not in ascending id order (or one id in two places): pandas sorts or says
    ticks = times.to_numpy()
    ticks = ticks.view(np.int64) if ticks.dtype.kind == "M" else ticks.astype(np.int64, copy=False)
    steps = np.diff(ticks)
    lengths = np.diff(np.append(starts, rows)).astype(np.int64)
    if freq is None:
        if not (breaks | (steps > 0)).all():
            return None  # rows out of time order or twice: pandas sorts or says (before inferring)
        resolved = _inferred(table, c, starts, lengths)
    else:
        resolved = _given(freq, pa.types.is_integer(times.type))
    if resolved is None or isinstance(resolved, int) != pa.types.is_integer(times.type):
        return None
    step = resolved if isinstance(resolved, int) else fixed_step(resolved, times.type.unit)
    if not step or step < 0:
        return None  # calendar steps (weeks, month ends): pandas checks them
    if not (breaks | (steps == step)).all():
        return None  # gaps, off-grid steps, rows out of order or twice: pandas sorts or says
    values, has_nan = _target(target)
    if values is None:
        return None
    if has_nan and (missing == "error" or empty_series is not None):
        return None  # the missing-value and empty-series verdicts are pandas'
    first = times.take(pa.array(starts)).to_numpy()
    if pa.types.is_integer(times.type):
        first = first.astype(np.int64)  # validate_long_frame makes integer steps int64
    return Chunk(run_ids.to_numpy(zero_copy_only=False), lengths, first, values, resolved)


def _whole(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array (a copy only if it is in pieces)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _inferred(table: pa.Table, c: ColumnSpec, starts: np.ndarray, lengths: np.ndarray) -> str | int | None:
    """The frequency `validate_long_frame` infers (from the first series of 3 rows or more), or
    None where it would raise."""
    long = np.flatnonzero(lengths >= 3)
    probe = table.slice(int(starts[long[0]]), int(lengths[long[0]])) if len(long) else table.slice(0, 1)
    try:
        return _resolve_freq(decoded(probe, [c.id_col]).to_pandas(), c, None)
    except DataValidationError:
        return None


@functools.lru_cache(maxsize=8)
def _given(freq: str | int, integer_time: bool) -> str | int | None:
    """`data.freq` as `validate_long_frame` takes it for this kind of time column, or None where
    it would raise (once per run, not per chunk)."""
    c = ColumnSpec()
    frame = pd.DataFrame({c.time_col: pd.Series([], dtype="int64" if integer_time else "datetime64[ns]")})
    try:
        return _resolve_freq(frame, c, freq)
    except DataValidationError:
        return None


def _target(target: pa.Array) -> tuple[np.ndarray | None, bool]:
    """(the target as float32, NaN where missing, as `validate_long_frame` converts it; whether
    any is missing); None if a value is infinite or beyond float32's range."""
    if target.null_count:  # pandas reads such a column as float64 with NaN
        wide = pc.cast(target, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        wide = target.to_numpy()
    has_nan = False
    if wide.dtype.kind == "f":
        finite = np.isfinite(wide)
        if not finite.all():
            nan = np.isnan(wide)
            if not (finite | nan).all():
                return None, True
            has_nan = True
        if wide.dtype == np.float64 and (np.abs(wide[finite] if has_nan else wide) > _FLOAT32_MAX).any():
            return None, has_nan
    return wide.astype(np.float32, copy=False), has_nan
