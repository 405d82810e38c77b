"""The fitted covariate encoder: how raw covariate values become model inputs, and back.

Fitted on the training rows only: numeric columns are standardised with the mean and standard
deviation of those rows; categorical ones get codes 1..n from their values (0: unknown or
missing), which the nets embed; calendar features become the sine and cosine of their place in
the cycle. The fitted `CovariateEncoder` is plain JSON, saved with the model, so a forecast
encodes raw covariates exactly as training did. What may be declared, and the checks of a table
against it, are `forecast.data.covariates`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.data.validation import _plain
from forecast.errors import DataValidationError

if TYPE_CHECKING:
    from forecast.data.covariates import CovariateConfig

__all__ = ["CALENDAR_PERIODS", "CovariateEncoder", "calendar_features", "is_datetime", "static_rows"]

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


def is_datetime(times: pd.Series) -> bool:
    """Whether `times` holds time stamps (calendar features need them)."""
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
            per_series = static_rows(frame, static_table, id_col, config.static)
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
                if not is_datetime(times):
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
        per_series = static_rows(frame, None, id_col, self.static_columns)
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


def static_rows(
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
