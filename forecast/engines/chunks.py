"""One chunk of whole series (an Arrow table) -> a validated `SeriesBlock`, fast when it can be.

The data contract is checked on every chunk, and series keep the input's order. A vectorised
check proves the common case valid (ids grouped, times sorted on a fixed-step grid, numeric
targets; series of any length, `Forecaster.scaled_windows` pads the short ones) without pandas;
anything it cannot prove (unsorted rows, calendar frequencies such as month ends, text
timestamps, a problem in the data) goes through `validate_long_frame`, which sorts what can be
sorted and raises the usual error naming the problem, with the chunk's rows added.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forecast.data.calendar import fixed_step
from forecast.data.validation import DataValidationError
from forecast.forecaster import Forecaster, SeriesBlock


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


def chunk_block(table: pa.Table, forecaster: Forecaster, first_row: int = 0) -> SeriesBlock:
    """Validate a chunk of whole series and lay it out for the forecast, series in input order."""
    block = fast_block(table, forecaster)
    if block is not None:
        return block
    frame = table.to_pandas()
    try:
        validated = forecaster.validate(frame)
    except DataValidationError as err:
        last = first_row + table.num_rows - 1
        raise DataValidationError(f"{err} [in input rows {first_row:,} to {last:,}]") from err
    block = SeriesBlock.from_frame(validated.frame, forecaster.columns)
    # validate_long_frame sorts by id; streamed output keeps the input's order of series instead.
    order = pd.Index(block.ids).get_indexer(pd.unique(frame[forecaster.columns.id_col]))
    return SeriesBlock(
        block.ids[order], block.starts[order], block.ends[order], block.values, block.last_time[order]
    )
