"""Covariates: which columns a model reads besides the target, checked once and encoded.

Three kinds (docs/data.md, Covariates): future-known (`futr`, known for the horizon too: planned
prices, day-ahead forecasts, and the calendar features of the time stamps), past-only (`hist`,
known up to the forecast origin) and static (one value per series, from the long table or a
table keyed by the id). Numeric columns are standardised with the mean and standard deviation of
the training rows; categorical ones get codes 1..n from the training rows' values (0: unknown or
missing), which the nets embed. The fitted `CovariateEncoder` is plain JSON, saved with the
model, so a forecast encodes raw covariates exactly as training did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from forecast.data.validation import ColumnSpec, _examples, _plain
from forecast.errors import ConfigError, DataValidationError

__all__ = [
    "CALENDAR_PERIODS",
    "CovariateConfig",
    "CovariateEncoder",
    "read_static_table",
    "validate_covariates",
]

# Period of each calendar feature: its value v becomes sin and cos of 2 pi v / period.
CALENDAR_PERIODS = {
    "minute": 60,
    "hour": 24,
    "dayofweek": 7,
    "day": 31,
    "dayofyear": 366,
    "weekofyear": 53,
    "month": 12,
    "quarter": 4,
}

_STD_EPS = 1e-8  # a numeric column with no spread in training is centred, not divided by ~0


def _names(value: object, key: str) -> tuple[str, ...]:
    """A config list (list, tuple, Hydra ListConfig, one string or None) as a tuple of names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"data.{key} must be a list of column names, got {value!r}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"data.{key} must be a list of column names, got {list(names)!r}")
    return names


@dataclass(frozen=True)
class CovariateConfig:
    """The covariates declared in the data config (`data.futr_exog`, `data.hist_exog`, ...).

    `reserved` (the id, time and target column names) may not be declared as covariates.
    """

    futr: tuple[str, ...] = ()
    hist: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    calendar: tuple[str, ...] = ()
    static_path: str | None = None
    reserved: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        keys = {"futr": "futr_exog", "hist": "hist_exog", "static": "static", "categorical": "categorical"}
        for attr, key in {**keys, "calendar": "calendar", "reserved": "reserved"}.items():
            object.__setattr__(self, attr, _names(getattr(self, attr), key))
        if self.static_path is not None:
            object.__setattr__(self, "static_path", str(self.static_path))
        unknown = [name for name in self.calendar if name not in CALENDAR_PERIODS]
        if unknown:
            raise ConfigError(
                f"data.calendar: unknown feature(s) {unknown}; choose from {list(CALENDAR_PERIODS)}"
            )
        if len(set(self.calendar)) != len(self.calendar):
            raise ConfigError(f"data.calendar names a feature twice: {list(self.calendar)}")
        declared = self.futr + self.hist + self.static
        twice = sorted({name for name in declared if declared.count(name) > 1})
        if twice:
            raise ConfigError(
                f"column(s) {twice} declared more than once in data.futr_exog, data.hist_exog and "
                "data.static; a column is of one kind"
            )
        stray = [name for name in self.categorical if name not in declared]
        if stray:
            raise ConfigError(
                f"data.categorical names column(s) {stray} that are not declared in data.futr_exog, "
                "data.hist_exog or data.static"
            )
        clash = [name for name in declared if name in self.reserved]
        if clash:
            raise ConfigError(
                f"column(s) {clash} are the id, time or target column and cannot be covariates; "
                "remove them from data.futr_exog / data.hist_exog / data.static"
            )
        if self.static_path is not None and not self.static:
            raise ConfigError("data.static_path is set but data.static names no column to read from it")

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns read from the long table (static ones only when there is no static table)."""
        return self.futr + self.hist + (() if self.static_path else self.static)

    @property
    def empty(self) -> bool:
        """Nothing declared: the model sees the target alone, as before covariates existed."""
        return not (self.futr or self.hist or self.static or self.calendar)


def _numeric(values: pd.Series) -> np.ndarray:
    """(rows,) float64: a numeric covariate's values, NaN where missing (booleans as 0/1)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _label(value: object) -> str:
    """A category's label: its string, with whole floats as integers (1.0 -> "1", as in an
    integer column: a CSV column with a gap reads as float, the same values without as int)."""
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _labels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """((rows,) int64 code into the labels, -1 where missing; the distinct labels).

    Factorised first, so `_label` runs once per distinct value, not once per row.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64), [_label(u) for u in uniques]


def _category_codes(values: pd.Series, vocab: Sequence[str]) -> np.ndarray:
    """(rows,) int64 code of each value: its position in `vocab` + 1; 0 if unseen or missing."""
    codes, labels = _labels(values)
    lookup = pd.Index(list(vocab), dtype=object).get_indexer(labels) + 1  # unseen -> 0
    return np.append(lookup, 0).astype(np.int64)[codes]  # code -1 (missing) takes the appended 0


# pandas' attribute for each calendar feature (the config keeps the familiar short names)
_ATTRIBUTES = {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}


def _calendar_values(times: pd.Series | np.ndarray | pd.Index, name: str) -> np.ndarray:
    stamps = pd.DatetimeIndex(times)
    if name == "weekofyear":  # ISO week, 1..53
        return stamps.isocalendar().week.to_numpy(dtype=np.float64)
    return np.asarray(getattr(stamps, _ATTRIBUTES.get(name, name)), dtype=np.float64)


def calendar_features(times: pd.Series | np.ndarray | pd.Index, names: Sequence[str]) -> np.ndarray:
    """(rows, 2 * len(names)) float32: sin and cos of 2 pi value / period of each feature."""
    out = np.empty((len(times), 2 * len(names)), dtype=np.float32)
    for i, name in enumerate(names):
        angle = 2 * math.pi * _calendar_values(times, name) / CALENDAR_PERIODS[name]
        out[:, 2 * i] = np.sin(angle)
        out[:, 2 * i + 1] = np.cos(angle)
    return out


def _is_datetime(times: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(times)


@dataclass
class CovariateEncoder:
    """How raw covariates become model inputs; fitted on training rows only, saved as JSON.

    `static_table`: the static columns come from a table keyed by the id (`data.static_path`),
    not from the long table, so a forecast input need not carry them.
    """

    futr_num: list[str] = field(default_factory=list)
    futr_cat: list[str] = field(default_factory=list)
    hist_num: list[str] = field(default_factory=list)
    hist_cat: list[str] = field(default_factory=list)
    static_num: list[str] = field(default_factory=list)
    static_cat: list[str] = field(default_factory=list)
    calendar: list[str] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    static_table: bool = False

    # ---- fitting and (de)serialising -------------------------------------------------------

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        config: CovariateConfig,
        train_rows: np.ndarray,
        static_table: pd.DataFrame | None = None,
        id_col: str = "unique_id",
    ) -> CovariateEncoder:
        """Statistics and vocabularies from the training rows (`train_rows`: bool per row).

        Static columns are fitted over one value per series (of the series in `frame`), so a long
        series does not weigh more than a short one.
        """
        cat = set(config.categorical)
        enc = cls(
            futr_num=[c for c in config.futr if c not in cat],
            futr_cat=[c for c in config.futr if c in cat],
            hist_num=[c for c in config.hist if c not in cat],
            hist_cat=[c for c in config.hist if c in cat],
            static_num=[c for c in config.static if c not in cat],
            static_cat=[c for c in config.static if c in cat],
            calendar=list(config.calendar),
            static_table=config.static_path is not None,
        )
        train_rows = np.asarray(train_rows, dtype=bool)
        for col in enc.futr_num + enc.hist_num:
            enc._fit_numeric(col, _numeric(frame[col])[train_rows])
        for col in enc.futr_cat + enc.hist_cat:
            enc._fit_vocab(frame[col][train_rows])
        if enc.static_num or enc.static_cat:
            per_series = _static_rows(frame, static_table, id_col, config.static)
            ids = pd.unique(frame[id_col])
            per_series = per_series.reindex(pd.Index(ids))
            for col in enc.static_num:
                enc._fit_numeric(col, _numeric(per_series[col]))
            for col in enc.static_cat:
                enc._fit_vocab(per_series[col])
        return enc

    def _fit_numeric(self, col: str, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        mean = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) else 1.0
        self.mean[col] = mean
        self.std[col] = std if std > _STD_EPS else 1.0

    def _fit_vocab(self, values: pd.Series) -> None:
        _, labels = _labels(values)
        self.vocab[str(values.name)] = sorted(set(labels))

    def to_dict(self) -> dict:
        """Plain JSON values (lists, dicts, floats, strings) for the saved model."""
        return {
            k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict) -> CovariateEncoder:
        """Inverse of `to_dict`; keys missing from an older record take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown covariate encoder field(s) {unknown}; known: {sorted(known)}")
        enc = cls(**{k: v for k, v in data.items()})
        enc.mean = {k: float(v) for k, v in enc.mean.items()}
        enc.std = {k: float(v) for k, v in enc.std.items()}
        enc.vocab = {k: [str(x) for x in v] for k, v in enc.vocab.items()}
        return enc

    # ---- what the model and a forecast input need ----------------------------------------

    @property
    def dims(self) -> dict:
        """Input sizes for the net's params: numeric widths and each categorical's vocabulary
        size (codes 0..n: n + 1 embedding rows)."""
        return {
            "futr": len(self.futr_num) + 2 * len(self.calendar),
            "futr_cat": [len(self.vocab[c]) + 1 for c in self.futr_cat],
            "hist": len(self.hist_num),
            "hist_cat": [len(self.vocab[c]) + 1 for c in self.hist_cat],
            "static": len(self.static_num),
            "static_cat": [len(self.vocab[c]) + 1 for c in self.static_cat],
        }

    @property
    def needs_future(self) -> bool:
        """Whether a forecast needs the next H rows of future-known columns (the calendar alone
        does not: it comes from the time stamps)."""
        return bool(self.futr_num or self.futr_cat)

    @property
    def table_columns(self) -> list[str]:
        """Columns a forecast input must carry: future-known, past-only, and static unless they
        come from a static table."""
        static = [] if self.static_table else self.static_num + self.static_cat
        return self.futr_num + self.futr_cat + self.hist_num + self.hist_cat + static

    @property
    def static_columns(self) -> list[str]:
        return self.static_num + self.static_cat

    # ---- encoding -------------------------------------------------------------------------

    def _scaled(self, frame: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
        """(rows, len(cols)) float32 standardised values; missing -> 0 (the training mean)."""
        out = np.zeros((len(frame), len(cols)), dtype=np.float32)
        for j, col in enumerate(cols):
            scaled = (_numeric(frame[col]) - self.mean[col]) / self.std[col]
            out[:, j] = np.where(np.isfinite(scaled), scaled, 0.0)
        return out

    def _coded(self, frame: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
        """(rows, len(cols)) int64 category codes; unseen or missing -> 0."""
        out = np.zeros((len(frame), len(cols)), dtype=np.int64)
        for j, col in enumerate(cols):
            out[:, j] = _category_codes(frame[col], self.vocab[col])
        return out

    def encode_rows(self, frame: pd.DataFrame, time_col: str, freq: str | int | None = None) -> dict:
        """Per row of `frame`: "futr" (rows, F) float32 (scaled numeric futr columns, then the
        sin/cos pair of each calendar feature), "futr_cat" (rows, Fc) int64, "hist" (rows, P)
        float32, "hist_cat" (rows, Pc) int64; only the non-empty ones.

        `freq` is not needed (calendar features come from each row's time stamp); it is taken so
        that a caller holding only integer steps hears why the calendar cannot be computed.
        """
        out: dict[str, np.ndarray] = {}
        if self.futr_num or self.calendar:
            parts = [self._scaled(frame, self.futr_num)]
            if self.calendar:
                times = frame[time_col]
                if not _is_datetime(times):
                    raise DataValidationError(
                        f"data.calendar {self.calendar} needs time stamps, but column {time_col!r} "
                        f"holds {times.dtype} (freq {freq!r}); give datetimes or drop data.calendar"
                    )
                parts.append(calendar_features(times, self.calendar))
            out["futr"] = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if self.futr_cat:
            out["futr_cat"] = self._coded(frame, self.futr_cat)
        if self.hist_num:
            out["hist"] = self._scaled(frame, self.hist_num)
        if self.hist_cat:
            out["hist_cat"] = self._coded(frame, self.hist_cat)
        return out

    def encode_static(self, frame: pd.DataFrame, ids: np.ndarray, id_col: str) -> dict:
        """One row per id in `ids` order: "static" (n, S) float32, "static_cat" (n, Sc) int64;
        only the non-empty ones. `frame` is the long table (each series' first non-missing value)
        or the static table; an id without a row gets 0 / code 0."""
        if not (self.static_num or self.static_cat):
            return {}
        per_series = _static_rows(frame, None, id_col, self.static_columns)
        per_series = per_series.reindex(pd.Index(ids))
        out: dict[str, np.ndarray] = {}
        if self.static_num:
            out["static"] = self._scaled(per_series, self.static_num)
        if self.static_cat:
            out["static_cat"] = self._coded(per_series, self.static_cat)
        return out

    # ---- back to raw values (the data module's `history()`) ---------------------------------

    def decode_numeric(self, col: str, encoded: np.ndarray) -> np.ndarray:
        """Raw values back from scaled ones (float64); exact up to float32 rounding."""
        return encoded.astype(np.float64) * self.std[col] + self.mean[col]

    def decode_codes(self, col: str, codes: np.ndarray) -> np.ndarray:
        """Labels back from codes (object array); code 0 (unseen or missing) -> None, which
        encodes to 0 again."""
        labels = np.array([None, *self.vocab[col]], dtype=object)
        return labels[codes]


def _static_rows(
    frame: pd.DataFrame, static_table: pd.DataFrame | None, id_col: str, columns: Sequence[str]
) -> pd.DataFrame:
    """One row per series (index: id) with the static columns: from the static table, or each
    series' first non-missing value in the long table (a forecast's future rows may leave them
    empty)."""
    source = static_table if static_table is not None else frame
    table = source[[id_col, *columns]]
    if static_table is not None:
        return table.drop_duplicates(id_col).set_index(id_col)
    return table.groupby(id_col, sort=False).first()


def read_static_table(path: str, id_col: str, columns: Sequence[str]) -> pd.DataFrame:
    """The static table (`data.static_path`): the id column and the static columns."""
    from forecast.data.io import read_table

    hint = f"The static table must hold the id column {id_col!r} and every column of data.static."
    return read_table(path, columns=[id_col, *columns], hint=hint)[[id_col, *columns]]


# ---- validation ------------------------------------------------------------------------------


def validate_covariates(
    frame: pd.DataFrame,
    config: CovariateConfig,
    columns: ColumnSpec,
    missing: str,
    static_table: pd.DataFrame | None = None,
    rows: np.ndarray | None = None,
    futr_rows: np.ndarray | None = None,
) -> None:
    """Check the declared covariates of a long table once, at the edge (DataValidationError).

    `rows` (bool per row): where past-only values are needed (default every row; a forecast's
    future rows need none); `futr_rows` likewise for future-known values. Static values are
    needed once per series. Missing values are an error unless `missing == "mask"` (they then
    encode as 0: the training mean, or the unknown category).
    """
    c = columns
    absent = [col for col in config.columns if col not in frame.columns]
    if absent:
        raise DataValidationError(
            f"covariate column(s) {absent} declared in the data config are not in the table; it has "
            f"{list(map(str, frame.columns))}. Fix the names in data.futr_exog / data.hist_exog / "
            "data.static or add the columns"
        )
    if config.calendar and not _is_datetime(frame[c.time_col]):
        raise DataValidationError(
            f"data.calendar {list(config.calendar)} needs time stamps, but the time column "
            f"{c.time_col!r} holds {frame[c.time_col].dtype}; give datetimes or drop data.calendar"
        )
    if static_table is not None:
        _check_static_table(frame, static_table, config, c)
    static_source = static_table if static_table is not None else frame
    cat = set(config.categorical)
    for col in config.futr + config.hist:
        if col not in cat:
            _check_numeric(frame, col, c)
    for col in config.static:
        if col not in cat:
            _check_numeric(static_source, col, c)
    if config.static and static_table is None:
        _check_constant(frame, config.static, c)
    if missing == "mask":
        return
    everywhere = np.ones(len(frame), dtype=bool)
    needed = [(col, everywhere if futr_rows is None else futr_rows) for col in config.futr]
    needed += [(col, everywhere if rows is None else rows) for col in config.hist]
    for col, where in needed:
        gap = frame[col].isna().to_numpy() & np.asarray(where, dtype=bool)
        if gap.any():
            bad = frame.loc[gap, [c.id_col, c.time_col]]
            series = pd.unique(bad[c.id_col])
            raise DataValidationError(
                f"covariate column {col!r} has {int(gap.sum())} missing value(s) in {len(series)} "
                f"series ({_examples(series)}), e.g. {list(bad.head(5).itertuples(index=False, name=None))}; "
                "fill them, or set data.missing=mask to encode them as the training mean / unknown category"
            )
    if config.static:
        per_series = _static_rows(frame, static_table, c.id_col, config.static)
        per_series = per_series.reindex(pd.Index(pd.unique(frame[c.id_col])))
        for col in config.static:
            empty = per_series.index[per_series[col].isna().to_numpy()]
            if len(empty):
                raise DataValidationError(
                    f"static column {col!r} has no value for {len(empty)} series ({_examples(empty)}); "
                    "fill it, or set data.missing=mask to encode it as the training mean / unknown category"
                )


def _check_numeric(frame: pd.DataFrame, col: str, c: ColumnSpec) -> None:
    """A numeric covariate must hold numbers (or be declared in data.categorical)."""
    values = frame[col]
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        parsed = values.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.zeros(len(values), dtype=bool)
    else:
        parsed = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(parsed) & values.notna().to_numpy()
    if bad.any():
        examples = pd.unique(values[bad])
        raise DataValidationError(
            f"covariate column {col!r} must be numeric, found dtype {values.dtype} with "
            f"{int(bad.sum())} value(s) that are not numbers, e.g. {_examples(examples)}; fix them or "
            "declare the column in data.categorical"
        )
    infinite = np.isinf(parsed)
    if infinite.any():
        where = frame.loc[infinite, [c.id_col]] if c.id_col in frame.columns else frame.loc[infinite]
        series = pd.unique(where.iloc[:, 0])
        raise DataValidationError(
            f"covariate column {col!r} has {int(infinite.sum())} infinite value(s) in "
            f"{len(series)} series ({_examples(series)}); replace them with numbers or NaN"
        )


def _check_constant(frame: pd.DataFrame, static: Sequence[str], c: ColumnSpec) -> None:
    """A static column from the long table holds one value per series (missing rows aside)."""
    counts = frame.groupby(c.id_col, sort=False)[list(static)].nunique(dropna=True)
    for col in static:
        varying = counts.index[(counts[col] > 1).to_numpy()]
        if len(varying):
            first = varying[0]
            values = pd.unique(frame.loc[frame[c.id_col] == first, col].dropna())
            raise DataValidationError(
                f"static column {col!r} varies within {len(varying)} series ({_examples(varying)}); "
                f"series {_plain(first)!r} has {_examples(values)}. A static column holds one value "
                "per series: declare it in data.futr_exog or data.hist_exog if it changes over time"
            )


def _check_static_table(
    frame: pd.DataFrame, table: pd.DataFrame, config: CovariateConfig, c: ColumnSpec
) -> None:
    """The static table has the id and static columns, one row per id, and every series' id."""
    absent = [col for col in (c.id_col, *config.static) if col not in table.columns]
    if absent:
        raise DataValidationError(
            f"the static table ({config.static_path}) lacks column(s) {absent}; it has "
            f"{list(map(str, table.columns))}. It needs the id column {c.id_col!r} and every column "
            "of data.static"
        )
    ids = table[c.id_col]
    repeated = pd.unique(ids[ids.duplicated()])
    if len(repeated):
        raise DataValidationError(
            f"the static table ({config.static_path}) has more than one row for {len(repeated)} id(s) "
            f"({_examples(repeated)}); it holds one row per series"
        )
    wanted = pd.unique(frame[c.id_col])
    lacking = wanted[~pd.Index(wanted).isin(pd.Index(ids))]
    if len(lacking):
        raise DataValidationError(
            f"the static table ({config.static_path}) has no row for {len(lacking)} series "
            f"({_examples(lacking)}); add them (the ids must match the {c.id_col!r} column, type "
            "included)"
        )
