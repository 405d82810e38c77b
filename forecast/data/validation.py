"""Validate a long series table once, at the edge, with errors that name the problem."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from forecast.data.calendar import fixed_step
from forecast.errors import ConfigError, DataValidationError

__all__ = ["ColumnSpec", "DataValidationError", "ValidatedFrame", "validate_long_frame"]

log = logging.getLogger(__name__)

MissingPolicy = Literal["error", "mask"]
EmptyPolicy = Literal["error", "drop"]  # series with no observed target (data.empty_series)

_EXAMPLES = 5  # how many offending ids / rows an error message shows
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ColumnSpec:
    """Names of the id, time and target columns in the user's table."""

    id_col: str = "unique_id"
    time_col: str = "ds"
    target_col: str = "y"


@dataclass(frozen=True)
class ValidatedFrame:
    """A table that passed validation: sorted by (id, time), target float32, known frequency."""

    frame: pd.DataFrame
    freq: str | int
    columns: ColumnSpec
    has_missing: bool
    dropped_ids: tuple


def _plain(value):
    """A numpy scalar as the Python value it holds: messages name id 5 or row 3, not np.int64(5)."""
    return value.item() if isinstance(value, np.number | np.str_ | np.bool_) else value


def _examples(values) -> str:
    values = list(values)
    shown = ", ".join(repr(_plain(v)) for v in values[:_EXAMPLES])
    more = f" (and {len(values) - _EXAMPLES} more)" if len(values) > _EXAMPLES else ""
    return shown + more


def _check_columns(df: pd.DataFrame, cols: ColumnSpec) -> None:
    wanted = [cols.id_col, cols.time_col, cols.target_col]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing}; the table has {list(df.columns)}. "
            "Rename them or set data.id_col / data.time_col / data.target_col."
        )
    if len(df) == 0:
        raise DataValidationError("the table has no rows")


def _coerce_target(df: pd.DataFrame, cols: ColumnSpec) -> pd.Series:
    y = df[cols.target_col]
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        parsed = pd.to_numeric(y, errors="coerce")
        bad = df.loc[parsed.isna() & y.notna(), [cols.id_col, cols.time_col, cols.target_col]]
        if pd.api.types.is_bool_dtype(y) or len(bad):
            rows = bad.head(_EXAMPLES).to_dict("records") if len(bad) else []
            raise DataValidationError(
                f"target column {cols.target_col!r} must be numeric, found dtype {y.dtype}; "
                f"{len(bad)} value(s) are not numbers, e.g. {rows}"
            )
        y = parsed
    y64 = y.astype("float64")
    # inf, and values beyond float32's range (1e39 -> inf once stored), would train a model
    # whose metrics are inf or NaN and publish it: refuse them here, naming the rows.
    bad = ~np.isfinite(y64) & y64.notna()
    big = y64.abs() > _FLOAT32_MAX
    if bad.any() or big.any():
        rows = df.loc[(bad | big).to_numpy(), [cols.id_col, cols.time_col, cols.target_col]]
        series = pd.unique(rows[cols.id_col])
        raise DataValidationError(
            f"target column {cols.target_col!r} has {len(rows)} infinite or out-of-range value(s) "
            f"(beyond +-{_FLOAT32_MAX:.1e}) in {len(series)} series ({_examples(series)}), e.g. "
            f"{rows.head(_EXAMPLES).to_dict('records')}; replace them with NaN (and "
            "data.missing=mask) or fix the source"
        )
    return y.astype("float32")


def _coerce_time(df: pd.DataFrame, cols: ColumnSpec, first_row: int = 0) -> pd.Series:
    ds = df[cols.time_col]
    if pd.api.types.is_datetime64_any_dtype(ds):
        if getattr(ds.dt, "tz", None) is not None:
            raise DataValidationError(
                f"time column {cols.time_col!r} is timezone-aware ({ds.dt.tz}); "
                "convert it to naive UTC or local time first"
            )
        return ds
    if pd.api.types.is_integer_dtype(ds):
        return ds.astype("int64")
    if pd.api.types.is_float_dtype(ds) and np.all(np.mod(ds.dropna(), 1) == 0) and ds.notna().all():
        return ds.astype("int64")
    if ds.dtype == object and len(ds) and isinstance(ds.iloc[0], pd.Timestamp):  # cheap: no scan of strings
        zones = {str(getattr(v, "tz", None)) for v in ds if isinstance(v, pd.Timestamp)}
        if len(zones) > 1:
            raise DataValidationError(
                f"time column {cols.time_col!r} mixes time zones ({', '.join(sorted(zones))}); "
                "convert every time stamp to one zone (or to naive UTC) first"
            )
    try:
        parsed = _parse_one_format(ds, cols.time_col, first_row)
    except DataValidationError:
        raise
    except (ValueError, TypeError) as err:  # pandas refuses mixed UTC offsets outright
        raise DataValidationError(
            f"time column {cols.time_col!r} mixes time zones or UTC offsets ({str(err).splitlines()[0]}); "
            "convert every time stamp to one zone (or to naive UTC) first"
        ) from err
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        raise DataValidationError(
            f"time column {cols.time_col!r} holds time stamps with a time zone or UTC offset "
            f"({parsed.dt.tz}); convert them to naive UTC or local time first"
        )
    bad = df.loc[parsed.isna(), [cols.id_col, cols.time_col]]
    if len(bad):
        raise DataValidationError(
            f"time column {cols.time_col!r} must hold timestamps or integer steps; "
            f"{len(bad)} value(s) do not parse, e.g. {bad.head(_EXAMPLES).to_dict('records')}"
        )
    return parsed


def _parse_one_format(ds: pd.Series, name: str, first_row: int = 0) -> pd.Series:
    """Time stamps parsed in one format for the whole column (ISO 8601, else the format of the
    first value); NaT where a value does not parse. Two formats in one column is an error naming
    them: parsed value by value, "01/02/2024" beside "2024-02-01" silently swaps day and month
    for some rows, which then surface as duplicate (id, time) pairs far from the cause."""
    for fmt in ("ISO8601", None):
        try:
            return pd.to_datetime(ds, format=fmt)
        except (ValueError, TypeError):
            continue
    parsed = pd.to_datetime(ds, errors="coerce", format="mixed")
    text = ds[parsed.notna()].astype(str)
    shapes = text.str.replace(r"\d", "9", regex=True)
    if shapes.nunique() > 1:
        firsts = shapes.drop_duplicates().head(_EXAMPLES)
        seen = ", ".join(f"{shape!r} (row {row + first_row}: {text[row]!r})" for row, shape in firsts.items())
        raise DataValidationError(
            f"time column {name!r} mixes {shapes.nunique()} formats: {seen}; write every time stamp "
            "in one format (ISO 8601: 2024-01-31 13:00:00)"
        )
    return parsed


def _resolve_freq(frame: pd.DataFrame, cols: ColumnSpec, freq: str | int | None) -> str | int:
    ds = frame[cols.time_col]
    if pd.api.types.is_integer_dtype(ds):
        step = 1 if freq is None else freq
        if not isinstance(step, int) or step <= 0:
            raise DataValidationError(
                f"time column {cols.time_col!r} holds integer steps, so data.freq must be a "
                f"positive integer step (or null for 1), got {freq!r}"
            )
        return step
    if freq is not None:
        try:
            pd.tseries.frequencies.to_offset(freq)
        except ValueError as err:
            raise DataValidationError(
                f"data.freq={freq!r} is not a pandas frequency alias (e.g. 'h', 'D', 'W-SUN', 'MS')"
            ) from err
        return str(freq)
    for _, group in frame.groupby(cols.id_col, sort=False):
        if len(group) >= 3:
            with warnings.catch_warnings():
                # pandas 3 warns that infer_freq will return an offset; both forms work below.
                warnings.simplefilter("ignore")
                inferred = pd.infer_freq(pd.DatetimeIndex(group[cols.time_col]))
            if inferred is not None:
                return str(getattr(inferred, "freqstr", inferred))
            break
    raise DataValidationError(
        "could not infer the frequency of the time column; set data.freq (e.g. 'h' or 'D')"
    )


def series_breaks(ids: pd.Series) -> np.ndarray:
    """(n - 1,) bool: True where row i + 1 starts another series than row i.

    Compared column-wise by pandas (Arrow strings stay Arrow): `to_numpy()` on a string id
    column would make one Python object per row, gigabytes for 100M rows.
    """
    return ids.ne(ids.shift()).to_numpy(dtype=bool)[1:]


def _ticks(ds: pd.Series) -> np.ndarray:
    """Time stamps (or integer steps) as int64, for vectorised order and step checks."""
    values = ds.to_numpy()
    return values.view(np.int64) if values.dtype.kind == "M" else values.astype(np.int64, copy=False)


def _check_regular(frame: pd.DataFrame, cols: ColumnSpec, freq: str | int, breaks: np.ndarray) -> None:
    ds = frame[cols.time_col]
    off_grid = np.zeros(0, dtype=np.int64)  # rows off a calendar frequency's grid
    if isinstance(freq, int):
        ok = np.diff(ds.to_numpy()) == freq
    else:
        step = fixed_step(freq, ds.dt.unit)  # fixed steps: compare integers in the column's unit
        if step:
            ok = np.diff(_ticks(ds)) == step
        else:
            offset = pd.tseries.frequencies.to_offset(freq)
            index = pd.DatetimeIndex(ds)
            # Shifting every timestamp by one period works for calendar offsets (month ends,
            # weeks), where a fixed timedelta would not.
            ok = (index[:-1] + offset).to_numpy() == index[1:].to_numpy()
            # A shift rolls a stamp onto the grid (a Monday + W-SUN is the next Sunday), so the
            # first stamp of a series, which no shift reaches, must be on the grid itself.
            firsts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
            off_grid = firsts[(index[firsts] + offset - offset).to_numpy() != index[firsts].to_numpy()]
    bad = np.flatnonzero(~breaks & ~ok)
    if len(bad):
        first = bad[0]
        raise _irregular(
            frame[cols.id_col],
            bad,
            freq,
            f" between {ds.iloc[first]} and {ds.iloc[first + 1]}. Fill missing steps with NaN targets "
            "(and data.missing=mask) or set data.freq to the right frequency.",
        )
    if len(off_grid):
        raise _irregular(
            frame[cols.id_col],
            off_grid,
            freq,
            f": {ds.iloc[off_grid[0]]} is not on the grid of {freq!r}. Fix the time stamps or set "
            "data.freq to the right frequency.",
        )


def _irregular(ids: pd.Series, rows: np.ndarray, freq: str | int, detail: str) -> DataValidationError:
    """The error for `rows` off the grid of `freq`: how many series and which, the first row's id,
    then `detail` (where it breaks, how to fix it)."""
    bad_ids = pd.unique(ids.iloc[rows])
    return DataValidationError(
        f"series are not regular at frequency {freq!r}: {len(bad_ids)} series have gaps or "
        f"off-grid steps ({_examples(bad_ids)}); first at id {_plain(ids[rows[0]])!r}{detail}"
    )


def validate_long_frame(
    df: pd.DataFrame,
    *,
    columns: ColumnSpec = ColumnSpec(),
    freq: str | int | None = None,
    missing: MissingPolicy = "error",
    empty_series: EmptyPolicy | None = "error",
    first_row: int = 0,
) -> ValidatedFrame:
    """Check a long table against the data contract and return it sorted and typed.

    Series may be of any length (training pads short inputs, see `SeriesDataModule`); a series
    with no observed target at all is an error, or dropped with `empty_series="drop"`. None
    leaves that to the caller (the forecast checks every series' input window instead).
    `first_row`: the table's first row is that row of a larger one read in chunks (errors name
    rows of the whole table).
    """
    if missing not in ("error", "mask"):
        raise DataValidationError(f"data.missing must be 'error' or 'mask', got {missing!r}")
    if empty_series not in ("error", "drop", None):
        raise ConfigError(f"data.empty_series must be 'error' or 'drop', got {empty_series!r}")
    _check_columns(df, columns)
    c = columns
    ids = df[c.id_col]
    if ids.isna().any():
        rows = np.flatnonzero(ids.isna().to_numpy()) + first_row
        raise DataValidationError(f"id column {c.id_col!r} has empty values at rows {_examples(rows)}")
    frame = pd.DataFrame(
        {c.id_col: ids, c.time_col: _coerce_time(df, c, first_row), c.target_col: _coerce_target(df, c)}
    )
    extra = [col for col in df.columns if col not in frame.columns]
    for col in extra:
        frame[col] = df[col]

    # A table already sorted by id, with times strictly increasing inside each series, has no
    # duplicate pairs and needs no sort: checked in O(n) without hashing or copying rows, which
    # for 100M rows saves most of the time and memory of validation.
    breaks = series_breaks(frame[c.id_col])
    # Sorted by id iff each run's id is greater than the previous run's: n_series comparisons,
    # not n_rows (pandas' is_monotonic_increasing on 100M Arrow strings took 21 s and 7 GB).
    run_ids = pd.Index(frame[c.id_col].iloc[np.concatenate([[0], np.flatnonzero(breaks) + 1])])
    presorted = bool(
        run_ids.is_monotonic_increasing
        and run_ids.is_unique
        and np.all(breaks | (np.diff(_ticks(frame[c.time_col])) > 0))
    )
    if not presorted:
        dup = frame.duplicated([c.id_col, c.time_col], keep=False)
        if dup.any():
            pairs = frame.loc[dup, [c.id_col, c.time_col]].drop_duplicates().head(_EXAMPLES)
            raise DataValidationError(
                f"{int(dup.sum())} rows share a ({c.id_col}, {c.time_col}) pair with another row, "
                f"e.g. {list(pairs.itertuples(index=False, name=None))}; each series may have one "
                "value per time step"
            )
        frame = frame.sort_values([c.id_col, c.time_col], kind="stable")
        breaks = series_breaks(frame[c.id_col])
    frame = frame.reset_index(drop=True)
    resolved = _resolve_freq(frame, c, freq)
    _check_regular(frame, c, resolved, breaks)

    nan = frame[c.target_col].isna()
    if nan.any() and missing == "error":
        nan_ids = pd.unique(frame.loc[nan, c.id_col])
        raise DataValidationError(
            f"target column {c.target_col!r} has {int(nan.sum())} missing value(s) in "
            f"{len(nan_ids)} series ({_examples(nan_ids)}); drop or fill them, or set "
            "data.missing=mask to leave them out of the loss"
        )

    dropped: tuple = ()
    if nan.any() and empty_series is not None:
        # Only masked targets can leave a series with nothing observed: one per-series count.
        starts = np.concatenate([[0], np.flatnonzero(breaks) + 1])
        observed = np.add.reduceat((~nan).to_numpy(dtype=np.int64), starts)
        empty = frame[c.id_col].iloc[starts[observed == 0]].to_numpy()
        if len(empty) and (empty_series == "error" or len(empty) == len(starts)):
            fix = (
                "remove them, or set data.empty_series=drop to leave them out"
                if len(empty) < len(starts)
                else "the table holds no data"
            )
            raise DataValidationError(
                f"{len(empty)} of {len(starts)} series have no observed value in "
                f"{c.target_col!r} (every one is missing): {_examples(empty)}; {fix}"
            )
        if len(empty):
            dropped = tuple(empty)
            log.warning("dropped %d series with no observed target: %s", len(empty), _examples(empty))
            frame = frame[~frame[c.id_col].isin(empty)].reset_index(drop=True)
    return ValidatedFrame(
        frame=frame,
        freq=resolved,
        columns=c,
        has_missing=bool(frame[c.target_col].isna().any()),
        dropped_ids=dropped,
    )
