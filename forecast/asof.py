"""`as_of`: the day a scheduled batch forecast is made for, and the cut of the history at it.

A forecast as of a day sees the history up to the end of that day and nothing later, so that a
rerun for a past day (a backfill, a retry the next morning) forecasts from the same rows even
when the input has grown since:

- a date `YYYY-MM-DD` (or `today`: the current date in UTC) keeps the rows with
  `ds < as_of + 1 day`, i.e. every time stamp of that day (the 24 hours of hourly data; for
  daily data this is `ds <= as_of`);
- an integer keeps the rows with `ds <= as_of`, for models of integer time steps;
- `None` (`as_of=null`) keeps everything.

`strict` (`as_of_strict=true`): a row after `as_of` with an observed target is not cut but
refused, a LateRowsError naming the rows and their series, and nothing is written: for inputs
that should end on the `as_of` day, where such a row means the wrong day or the wrong file.
Rows after `as_of` with an empty target (placeholders, a covariate model's future rows) pass.

Rows whose time stamp cannot be compared here (null, unparseable, time-zone-aware) are kept, so
that the data contract's validation refuses them with its own message. This module imports no
torch, MLflow or Lightning: Ray workers run the cut.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from forecast.errors import ConfigError, LateRowsError, NoHistoryError

log = logging.getLogger(__name__)

TODAY = "today"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INTEGER = re.compile(r"[+-]?\d+")
_EPOCH = date(1970, 1, 1)
_TICKS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_INT64 = (-(2**63), 2**63 - 1)
_FORMS = "give a date YYYY-MM-DD, today (the current date in UTC), an integer time step or null"


@dataclass(frozen=True)
class AsOf:
    """A parsed `as_of`: a date, an integer time step, or None for no cut; `strict`: observed
    targets after it are refused rather than cut (see the module docstring)."""

    value: date | int | None
    strict: bool = False

    @classmethod
    def parse(cls, value: object, now: datetime | None = None, strict: object = False) -> AsOf:
        """`today`, `YYYY-MM-DD`, an integer or None (`null`/`none`); anything else is a ConfigError."""
        if not isinstance(strict, bool):
            raise ConfigError(f"as_of_strict must be true or false, got {strict!r}")
        return cls(cls._value(value, now), strict)

    @staticmethod
    def _value(value: object, now: datetime | None) -> date | int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"as_of={value!r} is not a date: {_FORMS}")
        if isinstance(value, int):
            return value
        text = value.strip()
        if text.lower() in ("null", "none"):
            return None
        if text.lower() == TODAY:
            return (now or datetime.now(UTC)).date()
        if _INTEGER.fullmatch(text):
            return int(text)
        if _DATE.fullmatch(text):
            try:
                return date.fromisoformat(text)
            except ValueError as err:
                raise ConfigError(f"as_of={value!r} is not a calendar date ({err}): {_FORMS}") from None
        raise ConfigError(f"as_of={value!r} is not a date: {_FORMS}")

    @property
    def label(self) -> str:
        """How the date is written in paths, metadata and MLflow tags: `2026-11-22`, `42`, `none`."""
        if self.value is None:
            return "none"
        return self.value.isoformat() if isinstance(self.value, date) else str(self.value)

    def metadata(self) -> dict[str, str]:
        """The output file's metadata entry (none when nothing is cut)."""
        return {} if self.value is None else {"forecast.as_of": self.label}

    def describe(self, time_col: str = "ds") -> str:
        """The rows kept, for logs and messages: `ds < 2026-11-23 00:00:00`."""
        if self.value is None:
            return "every row"
        if isinstance(self.value, int):
            return f"{time_col} <= {self.value}"
        try:
            return f"{time_col} < {datetime.combine(self.value + timedelta(days=1), datetime.min.time())}"
        except OverflowError:  # 9999-12-31: nothing is later
            return "every row"

    def check(self, freq: str | int, time_col: str = "ds") -> None:
        """A date for a model of integer steps (or the reverse) is a ConfigError, before any row is read."""
        if self.value is None:
            return
        if isinstance(freq, int) and not isinstance(self.value, int):
            raise ConfigError(
                f"as_of={self.label} is a date, but the model's time column {time_col!r} holds integer "
                "steps: give as_of=<the last step to keep> or as_of=null"
            )
        if not isinstance(freq, int) and isinstance(self.value, int):
            raise ConfigError(
                f"as_of={self.value} is an integer time step, but the model's time column {time_col!r} "
                f"holds time stamps (frequency {freq!r}): give as_of=YYYY-MM-DD"
            )

    def keep(self, table: pa.Table, time_col: str) -> pa.Table:
        """The rows of `table` at or before `as_of` (all of them when nothing is cut)."""
        if self.value is None or table.num_rows == 0:
            return table
        mask = self._mask(table.column(time_col), time_col)
        if mask is None:
            return table
        mask = pc.fill_null(mask, True)  # a row that cannot be compared is validation's to refuse
        if pc.all(mask).as_py():
            return table
        return table.filter(mask)

    def after(self, table: pa.Table, time_col: str) -> np.ndarray:
        """(rows,) bool: True where a row is later than `as_of` (what `keep` drops)."""
        n = table.num_rows
        mask = None if self.value is None or n == 0 else self._mask(table.column(time_col), time_col)
        if mask is None:
            return np.zeros(n, dtype=bool)
        return ~np.asarray(pc.fill_null(mask, True), dtype=bool)

    def late(self, table: pa.Table, time_col: str, target_col: str) -> np.ndarray:
        """(rows,) bool: True where a row is later than `as_of` and its target is observed (not
        null, not NaN): what `strict` refuses."""
        after = self.after(table, time_col)
        if not after.any():
            return after
        target = table.column(target_col)
        if pa.types.is_floating(target.type):
            observed = ~np.isnan(target.to_numpy(zero_copy_only=False))  # nulls come as NaN
        else:
            observed = np.asarray(pc.is_valid(target), dtype=bool)
        return after & observed

    def _mask(self, column: pa.ChunkedArray, time_col: str) -> pa.ChunkedArray | pa.Array | None:
        """True where a row is kept; None where this column cannot be compared here."""
        kind = column.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if isinstance(self.value, int):
            if numeric:
                return pc.less_equal(column, pa.scalar(self.value))
            if pa.types.is_null(kind):
                return None
            raise ConfigError(
                f"as_of={self.value} is an integer time step, but the time column {time_col!r} holds "
                f"{kind} values: give as_of=YYYY-MM-DD"
            )
        if numeric:
            raise ConfigError(
                f"as_of={self.label} is a date, but the time column {time_col!r} holds integer steps: "
                "give as_of=<the last step to keep> or as_of=null"
            )
        if pa.types.is_timestamp(kind):
            if kind.tz is not None:  # refused by validation, which names the zone
                return None
            ticks = (self.value - _EPOCH).days * _TICKS_PER_DAY[kind.unit] + _TICKS_PER_DAY[kind.unit]
            if ticks > _INT64[1]:
                return None  # later than any time stamp of this unit: nothing is cut
            if ticks < _INT64[0]:
                return pc.is_null(column)  # earlier than any time stamp: only nulls stay (for validation)
            return pc.less(column.cast(pa.int64()), pa.scalar(ticks, pa.int64()))
        if pa.types.is_date(kind):
            return pc.less_equal(column, pa.scalar(self.value, kind))
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return self._text_mask(column)
        return None

    def _text_mask(self, column: pa.ChunkedArray) -> pa.Array | None:
        """Time stamps as text (a CSV read by pandas): parsed as validation parses them."""
        text = column.to_pandas()
        try:
            parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
            if parsed.isna().sum() > text.isna().sum():
                parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        except (ValueError, TypeError, OverflowError):  # mixed UTC offsets: validation refuses them
            return None
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            return None
        try:
            cutoff = pd.Timestamp(self.value + timedelta(days=1))
        except (OverflowError, ValueError):  # beyond pandas' range: nothing is later
            return None
        keep = (parsed < cutoff) | parsed.isna()
        return pa.array(keep.to_numpy(dtype=bool))


def cut_table(table: pa.Table, as_of: AsOf, time_col: str) -> pa.Table:
    """`AsOf.keep` as a plain function, for Ray Data's `map_batches`."""
    return as_of.keep(table, time_col)


def later_ids(table: pa.Table, as_of: AsOf, time_col: str, id_col: str) -> pa.Table:
    """The id column of the rows after `as_of` (a plain function, for Ray Data's `map_batches`:
    the series a cut shortens)."""
    return table.select([id_col]).filter(pa.array(as_of.after(table, time_col)))


def late_ids(table: pa.Table, as_of: AsOf, time_col: str, id_col: str, target_col: str) -> pa.Table:
    """The id column of the rows after `as_of` with an observed target (a plain function, for Ray
    Data's `map_batches`: what `as_of_strict` refuses)."""
    return table.select([id_col]).filter(pa.array(as_of.late(table, time_col, target_col)))


def late_rows(as_of: AsOf, rows: int, series: Iterable[object], time_col: str = "ds") -> LateRowsError:
    """The error of `as_of_strict=true` for `rows` observed rows after `as_of` in `series`."""
    ids = sorted(set(series), key=str)
    shown = ", ".join(repr(_plain(i)) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
    return LateRowsError(
        f"as_of={as_of.label} with as_of_strict=true: the input has {rows} row(s) with an observed "
        f"target after as_of (kept rows: {as_of.describe(time_col)}) in {len(ids)} series ({shown}); "
        "nothing was written: give the as_of of the input's last day or an input that ends on "
        "as_of, or as_of_strict=false to forecast from the history up to as_of"
    )


def warn_cut(as_of: AsOf, rows: int, series: int) -> None:
    """No silent cut: the rows dropped after `as_of` and how many series they shorten."""
    log.warning(
        "as_of=%s cut %d later row(s) of %d series: they are forecast from their history up to "
        "as_of, not from the end of the input; give as_of=null to forecast from the end",
        as_of.label,
        rows,
        series,
    )


def empty_after(table: pa.Table, as_of: AsOf, time_col: str, target_col: str) -> pa.Table:
    """`as_of` for a model with future-known covariates and no future table: the rows after the
    cut stay as future rows, their covariates read, their target emptied (a plain function, for
    Ray Data's `map_batches`; `FutureCut` streams it)."""
    return _emptied(table, as_of.after(table, time_col), target_col)


def _emptied(table: pa.Table, rows: np.ndarray, target_col: str) -> pa.Table:
    """`table` with the target of `rows` (bool) set to null."""
    if not rows.any():
        return table
    at = table.schema.get_field_index(target_col)
    target = table.column(at)
    emptied = pc.if_else(pa.array(rows), pa.nulls(len(rows), target.type), target)
    return table.set_column(at, target_col, emptied)


def no_history(as_of: AsOf, source: object, first: object, time_col: str = "ds") -> NoHistoryError:
    """The error for an input with no row left at or before `as_of`, naming the date."""
    since = f"its first time stamp is {_plain(first)}" if first is not None else "every row is later"
    return NoHistoryError(
        f"no history at or before as_of={as_of.label} in {source}: {since} (kept rows: "
        f"{as_of.describe(time_col)}); give a later as_of or check the input"
    )


def _plain(value: object) -> str:
    """A time stamp as `2024-01-01 00:00:00` rather than `datetime.datetime(...)`."""
    if isinstance(value, datetime | date):
        return str(pd.Timestamp(value))
    return str(value)


class HistoryCut:
    """Cuts a stream of input tables at `as_of` and counts what it kept and dropped."""

    # the log line's words for the rows after as_of
    later = "dropped %d later row(s)"

    def __init__(
        self,
        as_of: AsOf | None,
        time_col: str,
        source: object,
        id_col: str | None = None,
        target_col: str | None = None,
    ):
        self.as_of = as_of or AsOf(None)
        self.time_col, self.source, self.id_col, self.target_col = time_col, source, id_col, target_col
        if self.as_of.strict and (id_col is None or target_col is None):
            raise ValueError("a strict as_of needs the id and target columns: it names the rows it refuses")
        self.kept = self.dropped = self.late = 0
        self.cut_series: set = set()  # ids with rows after as_of (when id_col is given)
        self.late_series: set = set()  # ids with observed targets after as_of (strict)
        self._first: object = None

    def _count_late(self, table: pa.Table) -> None:
        """`as_of.strict`: count the rows after `as_of` with an observed target, and their series."""
        late = self.as_of.late(table, self.time_col, self.target_col)
        if late.any():
            self.late += int(late.sum())
            self.late_series.update(pc.unique(table.column(self.id_col).filter(pa.array(late))).to_pylist())

    def _cut(self, table: pa.Table) -> tuple[pa.Table, int]:
        """(what goes on, how many rows of history it keeps): the rows at or before `as_of`."""
        after = self.as_of.after(table, self.time_col)  # one mask: what goes, and whose it is
        if not after.any():
            return table, table.num_rows
        if self.id_col is not None:
            self.cut_series.update(pc.unique(table.column(self.id_col).filter(pa.array(after))).to_pylist())
        kept = table.filter(pa.array(~after))
        return kept, kept.num_rows

    def tables(self, tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """The tables cut at `as_of` (`_cut`); NoHistoryError when no row of history is left.

        `as_of.strict`: once a table holds an observed target after `as_of`, nothing more is
        passed on, the rest is only counted, and the end is a LateRowsError with the totals.
        """
        for table in tables:
            if self.as_of.strict:
                self._count_late(table)
            out, kept = self._cut(table)
            self.kept += kept
            self.dropped += table.num_rows - kept
            if not self.kept and table.num_rows:  # the first time stamp, for the error below
                first = pc.min(table.column(self.time_col)).as_py()
                if first is not None and (self._first is None or _earlier(first, self._first)):
                    self._first = first
            if out.num_rows and not self.late:
                yield out
        if self.dropped and not self.kept:
            raise no_history(self.as_of, self.source, self._first, self.time_col)
        if self.late:
            raise late_rows(self.as_of, self.late, self.late_series, self.time_col)
        if self.as_of.value is not None:
            log.info(
                "as_of=%s: kept %d rows (%s), " + self.later,
                self.as_of.label,
                self.kept,
                self.as_of.describe(self.time_col),
                self.dropped,
            )
        if self.cut_series:  # these series are forecast from a shortened history
            warn_cut(self.as_of, self.dropped, len(self.cut_series))


class FutureCut(HistoryCut):
    """`as_of` for a model with future-known covariates, given no future table: the rows after
    the cut are not dropped but become future rows (target emptied, `empty_after`), so that the
    input's covariate values over the horizon reach the forecast (a backfill's, too)."""

    later = "%d later row(s) used as future rows only"

    def __init__(
        self, as_of: AsOf | None, time_col: str, target_col: str, source: object, id_col: str | None = None
    ):
        super().__init__(as_of, time_col, source, id_col, target_col)

    def _cut(self, table: pa.Table) -> tuple[pa.Table, int]:
        after = self.as_of.after(table, self.time_col)
        return _emptied(table, after, self.target_col), table.num_rows - int(after.sum())


def _earlier(a: object, b: object) -> bool:
    """a < b, for values of one column (False when they cannot be compared)."""
    try:
        return a < b  # type: ignore[operator]
    except TypeError:
        return False
