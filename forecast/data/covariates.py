"""Covariates declared in the data config, and the checks of a table against them.

Three kinds (docs/data.md, Covariates): future-known (`futr`, known for the horizon too: planned
prices, day-ahead forecasts, and the calendar features of the time stamps), past-only (`hist`,
known up to the forecast origin) and static (one value per series, from the long table or a
table keyed by the id). `CovariateConfig` is what the config declares, `validate_covariates`
checks a long table (and the static table, `read_static_table`) against it once, at the edge.
How the values are then encoded is `forecast.data.covariate_encoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# CovariateEncoder is re-exported: docs and code from before the split import it from here.
from forecast.data.covariate_encoder import CALENDAR_PERIODS, CovariateEncoder, is_datetime, static_rows
from forecast.data.validation import ColumnSpec, _examples, _plain
from forecast.errors import ConfigError, DataValidationError

__all__ = [
    "CALENDAR_PERIODS",
    "CovariateConfig",
    "CovariateEncoder",
    "read_static_table",
    "validate_covariates",
]


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
    if config.calendar and not is_datetime(frame[c.time_col]):
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
        per_series = static_rows(frame, static_table, c.id_col, config.static)
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
