"""One chunk of whole series (an Arrow table) -> a validated `SeriesBlock`, fast when it can be.

The data contract is checked on every chunk, and series keep the input's order. A vectorised
check proves the common case valid (ids grouped, times sorted on a fixed-step grid, numeric
targets; series of any length, `Forecaster.scaled_windows` pads the short ones) without pandas;
anything it cannot prove (unsorted rows, calendar frequencies such as month ends, text
timestamps, a problem in the data) goes through `validate_long_frame`, which sorts what can be
sorted and raises the usual error naming the problem, with the chunk's rows added. A model with
covariates always takes the second way (`Forecaster.covariate_block`), with its future rows from
the chunk itself or from a future table (`FutureRows`, joined by id per chunk).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forecast.blocks import SeriesBlock, run_starts
from forecast.data.calendar import fixed_step
from forecast.data.io import read_table
from forecast.data.validation import DataValidationError
from forecast.errors import MissingFutureError
from forecast.forecaster import Forecaster


def time_step(time_type: pa.DataType, freq: str | int) -> int | None:
    """The fixed step between consecutive time stamps in the column's own unit, if there is one."""
    if isinstance(freq, int):
        return freq if pa.types.is_integer(time_type) else None
    if not pa.types.is_timestamp(time_type) or time_type.tz is not None:
        return None
    return fixed_step(freq, time_type.unit)  # None for calendar offsets: validate_long_frame handles those


def fast_block(table: pa.Table, forecaster: Forecaster) -> SeriesBlock | None:
    """The chunk as a SeriesBlock when a vectorised check proves it valid, else None."""
    c, s = forecaster.columns, forecaster.settings
    ids, times, target = (table.column(n) for n in (c.id_col, c.time_col, c.target_col))
    n = table.num_rows
    if n == 0 or ids.null_count or times.null_count:
        return None
    if not (
        pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)
    ):
        return None
    if pa.types.is_boolean(target.type) or not (
        pa.types.is_floating(target.type) or pa.types.is_integer(target.type)
    ):
        return None
    step = time_step(times.type, s.freq)
    if step is None:
        return None
    ids = ids.combine_chunks()
    change = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)
    ends = np.append(starts[1:], n).astype(np.int64)
    run_ids = ids.take(pa.array(starts)).to_numpy(zero_copy_only=False)
    if len(set(run_ids.tolist())) != len(run_ids):
        return None  # a series in several runs: validate_long_frame sorts it
    stamps = times.to_numpy()
    ticks = stamps.view(np.int64) if stamps.dtype.kind == "M" else stamps.astype(np.int64, copy=False)
    regular = np.diff(ticks) == step
    regular[starts[1:] - 1] = True  # the step between two series is not a step
    if not regular.all():
        return None
    values = target.to_numpy().astype(np.float32, copy=False)
    if s.missing != "mask" and np.isnan(values).any():
        return None
    if np.isinf(values).any():  # inf, or beyond float32's range: validate_long_frame names the rows
        return None
    return SeriesBlock(ids=run_ids, starts=starts, ends=ends, values=values, last_time=stamps[ends - 1])


def chunk_block(
    table: pa.Table, forecaster: Forecaster, first_row: int = 0, future: FutureRows | None = None
) -> SeriesBlock:
    """Validate a chunk of whole series and lay it out for the forecast, series in input order.

    A model with covariates takes its series through `Forecaster.covariate_block` (the chunk's
    own future rows, or those of `future`, the future table, for the chunk's series).
    """
    if forecaster.encoder is not None:
        return _covariate_block(table, forecaster, first_row, future)
    block = fast_block(table, forecaster)
    if block is not None:
        return block
    frame = table.to_pandas()
    try:
        validated = forecaster.validate(frame)
    except DataValidationError as err:
        raise _where(err, first_row, table.num_rows) from err
    block = SeriesBlock.from_frame(validated.frame, forecaster.columns)
    return block.take(_input_order(block, frame, forecaster))


def _where(err: DataValidationError, first_row: int, rows: int) -> DataValidationError:
    return DataValidationError(f"{err} [in input rows {first_row:,} to {first_row + rows - 1:,}]")


def _input_order(block: SeriesBlock, frame: pd.DataFrame, forecaster: Forecaster) -> np.ndarray:
    """Validation sorts by id; streamed output keeps the input's order of series instead."""
    return pd.Index(block.ids).get_indexer(pd.unique(frame[forecaster.columns.id_col]))


def _covariate_block(
    table: pa.Table, forecaster: Forecaster, first_row: int, future: FutureRows | None
) -> SeriesBlock:
    frame = table.to_pandas()
    ahead = None
    if future is not None and forecaster.encoder.needs_future:
        ahead = future.for_ids(pd.unique(frame[forecaster.columns.id_col]))
    try:
        block = forecaster.covariate_block(frame, ahead)
    except MissingFutureError:
        raise  # the streamed forecast adds up the chunks' counts: no row range
    except DataValidationError as err:
        raise _where(err, first_row, table.num_rows) from err
    return block.take(_input_order(block, frame, forecaster))


@dataclass
class FutureRows:
    """A future table (`future=PATH`: id, time, future-known columns), grouped by id, so that a
    chunk or partition of series takes its own rows in time proportional to them."""

    frame: pd.DataFrame  # sorted by id (stable)
    ids: pd.Index  # (n,) distinct ids, in frame order
    starts: np.ndarray  # (n,) int64 first row of each id
    ends: np.ndarray  # (n,) int64

    @classmethod
    def read(cls, path: str | os.PathLike, forecaster: Forecaster) -> FutureRows:
        """Read the future table's id, time and future-known columns (errors name the file)."""
        c = forecaster.columns
        futr = forecaster.covariate_columns["futr"]
        hint = (
            f"The future table holds {c.id_col!r}, {c.time_col!r} and the model's future-known "
            f"columns {futr} for the next {forecaster.settings.horizon} steps of every series."
        )
        frame = read_table(path, columns=[c.id_col, c.time_col, *futr], hint=hint, only=True)
        return cls.from_frame(frame, c.id_col)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, id_col: str) -> FutureRows:
        frame = frame.sort_values(id_col, kind="stable", ignore_index=True)
        row_ids = frame[id_col].to_numpy()
        starts = run_starts(row_ids)
        ends = np.append(starts[1:], len(row_ids)).astype(np.int64)
        return cls(frame, pd.Index(row_ids[starts]), starts, ends)

    def for_ids(self, ids: np.ndarray) -> pd.DataFrame:
        """The rows of these series (none for an id the table lacks: the forecast names it)."""
        at = self.ids.get_indexer(ids)
        at = at[at >= 0]
        lengths = self.ends[at] - self.starts[at]
        rows = np.repeat(self.starts[at], lengths) + (
            np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        return self.frame.iloc[rows]
