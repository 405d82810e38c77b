"""A covariate model's input: the long table (and future table) validated, the covariates
encoded, and the series laid out as a `SeriesBlock` ready to forecast; what a missing future is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from forecast.blocks import CovariateRows, SeriesBlock, run_starts
from forecast.data.validation import (
    ColumnSpec,
    DataValidationError,
    _coerce_time,
    _examples,
    _plain,
    validate_long_frame,
)
from forecast.errors import MissingFutureError
from forecast.layout import future_timestamps
from forecast.settings import ForecasterSettings

if TYPE_CHECKING:
    from forecast.data.covariate_encoder import CovariateEncoder


def covariate_encoder(settings: ForecasterSettings) -> CovariateEncoder | None:
    """The saved covariate encoder, or None for a model that reads the target alone."""
    if not settings.covariates:
        return None
    from forecast.data.covariate_encoder import CovariateEncoder

    return CovariateEncoder.from_dict(settings.covariates)


def covariate_columns(encoder: CovariateEncoder | None) -> dict[str, list[str]]:
    """The covariate columns a forecast input carries, by kind (empty lists: none)."""
    if encoder is None:
        return {"futr": [], "hist": [], "static": [], "calendar": []}
    return {
        "futr": encoder.futr_num + encoder.futr_cat,
        "hist": encoder.hist_num + encoder.hist_cat,
        "static": encoder.static_num + encoder.static_cat,
        "calendar": list(encoder.calendar),
    }


@dataclass(frozen=True)
class CovariateInputs:
    """The input contract of a model that reads covariates: its settings, columns and encoder."""

    settings: ForecasterSettings
    columns: ColumnSpec
    encoder: CovariateEncoder

    def block(
        self, table: pd.DataFrame, future: pd.DataFrame | None = None, need_future: bool = True
    ) -> SeriesBlock:
        """Validate a long table with covariates and encode them: the series ready to forecast.

        Each series' trailing rows with an empty target are its future rows (a series' history
        ends at its last observed value). A model with future-known columns takes the next
        `horizon` of them; or, with `future` given, the rows of that table at the next `horizon`
        time stamps of each series (the input's own future rows are then not used). A series
        without them all is a DataValidationError naming it and the missing time stamps.
        Calendar features come from the time stamps and need no future rows.

        `need_future=False`: no future rows are required, and `ahead` points right after each
        series' history, for a caller that forecasts from earlier origins inside the history and
        sets `CovariateRows.ahead` to its own cutoffs (a backtest; `CovariateRows.take`).
        """
        s, c, enc = self.settings, self.columns, self.encoder
        assert enc is not None, "covariate_block is for models with covariates"
        L, H = s.input_size, s.horizon
        frame = validate_long_frame(table, columns=c, freq=s.freq, missing="mask", empty_series=None).frame
        n_rows = len(frame)
        row_ids = frame[c.id_col].to_numpy()
        starts = run_starts(row_ids)
        ends = np.append(starts[1:], n_rows).astype(np.int64)
        y = frame[c.target_col].to_numpy(dtype=np.float32)
        rows = np.arange(n_rows, dtype=np.int64)
        observed = ~np.isnan(y)
        # History ends at each series' last observed value; the rows after it are future rows.
        hist_end = np.maximum.reduceat(np.where(observed, rows, -1), starts) + 1  # (n,)
        ids = row_ids[starts]
        blind = hist_end <= starts
        if blind.any():
            raise DataValidationError(
                f"{int(blind.sum())} series have no observed value in {c.target_col!r}: "
                f"{_examples(ids[blind])}; there is nothing to forecast them from: give them history "
                "(rows with the target) before their future rows"
            )
        lengths = ends - starts
        in_history = rows < np.repeat(hist_end, lengths)
        if s.missing != "mask" and np.isnan(y[in_history]).any():
            nan_ids = pd.unique(row_ids[in_history & ~observed])
            raise DataValidationError(
                f"target column {c.target_col!r} has {int((in_history & ~observed).sum())} missing "
                f"value(s) in {len(nan_ids)} series ({_examples(nan_ids)}) before their last observed "
                "value; fill them (only a series' trailing rows, its future rows, may leave it empty)"
            )
        times = frame[c.time_col].to_numpy()
        last_time = times[hist_end - 1]
        expected = future_timestamps(pd.Series(last_time), H, s.freq)  # (n * H,)
        # Rows whose covariates the forecast reads: the input window, and the horizon rows.
        in_window = in_history & (rows >= np.repeat(hist_end - L, lengths))
        ahead_rows = (rows >= np.repeat(hist_end, lengths)) & (rows < np.repeat(hist_end + H, lengths))
        own_future = enc.needs_future and future is None and need_future
        static_source = self._static_source(frame)
        if not need_future:  # origins anywhere in the history: every row may be read
            in_window, ahead_rows, own_future_rows = in_history, ~in_history, True
        else:
            own_future_rows = own_future
        self._check_covariates(
            frame, in_window, in_window | (ahead_rows if own_future_rows else False), static_source
        )

        encoded = enc.encode_rows(frame, c.time_col, s.freq)  # key -> (rows, width)
        if not need_future:
            ahead = hist_end
        elif own_future:
            available = ends - hist_end
            short = available < H
            if short.any():
                raise self._missing_future(ids, expected, available, short, "input")
            ahead = hist_end
        else:
            if enc.needs_future:
                horizon = self._future_rows(future, ids, expected)
            else:  # calendar features only: the time stamps say everything
                horizon = pd.DataFrame({c.id_col: np.repeat(ids, H), c.time_col: expected})
            for col in enc.table_columns:
                if col not in horizon.columns:
                    horizon[col] = np.nan  # not read over the horizon (past-only, static)
            extra = enc.encode_rows(horizon, c.time_col, s.freq)
            encoded = {k: np.concatenate([v, extra[k]]) for k, v in encoded.items()}
            ahead = n_rows + np.arange(len(ids), dtype=np.int64) * H
        static = enc.encode_static(static_source, ids, c.id_col) if static_source is not None else {}
        return SeriesBlock(
            ids=ids,
            starts=starts,
            ends=hist_end.astype(np.int64),
            values=y,
            last_time=last_time,
            covariates=CovariateRows(encoded, static, ahead.astype(np.int64)),
        )

    def _static_source(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """Where the static values come from: the input's static columns (None: no static ones)."""
        enc, c = self.encoder, self.columns
        static = enc.static_num + enc.static_cat
        if not static:
            return None
        absent = [col for col in static if col not in frame.columns]
        if absent and enc.static_table:
            raise DataValidationError(
                f"static column(s) {absent} are not in the input; the model was trained with them from "
                f"a static table (data.static_path): add them to the input, one value per series "
                f"(any row of the series), keyed by {c.id_col!r}"
            )
        return frame

    def _check_covariates(
        self, frame: pd.DataFrame, hist_rows: np.ndarray, futr_rows: np.ndarray, static_source
    ) -> None:
        """The data contract for the covariate columns (`validate_covariates`): present, numeric
        where they should be, static ones constant, and no missing value where one is read
        (unless the model masks missing values)."""
        from forecast.data.covariates import CovariateConfig, validate_covariates

        kinds, enc = covariate_columns(self.encoder), self.encoder
        config = CovariateConfig(
            futr=tuple(kinds["futr"]),
            hist=tuple(kinds["hist"]),
            static=tuple(kinds["static"]) if static_source is not None else (),
            categorical=tuple(
                enc.futr_cat + enc.hist_cat + (enc.static_cat if static_source is not None else [])
            ),
            calendar=tuple(kinds["calendar"]),
        )
        missing = "mask" if self.settings.missing == "mask" else "error"
        validate_covariates(frame, config, self.columns, missing, rows=hist_rows, futr_rows=futr_rows)

    def _future_rows(
        self, future: pd.DataFrame | None, ids: np.ndarray, expected: np.ndarray
    ) -> pd.DataFrame:
        """(n * H) rows of `future` at each series' next H time stamps, in series then step order."""
        s, c, enc = self.settings, self.columns, self.encoder
        H = s.horizon
        futr = enc.futr_num + enc.futr_cat
        if future is None:
            raise AssertionError("caller passes the future table")
        need = [c.id_col, c.time_col, *futr]
        absent = [col for col in need if col not in future.columns]
        if absent:
            raise DataValidationError(
                f"the future table lacks column(s) {absent}; it has {list(map(str, future.columns))}. It "
                f"holds {c.id_col!r}, {c.time_col!r} and the future-known columns {futr} for the next "
                f"{H} time steps of every series"
            )
        table = future[need].copy()
        table[c.time_col] = _coerce_time(table, c)
        wanted = pd.DataFrame({c.id_col: np.repeat(ids, H), c.time_col: expected})
        try:
            table[c.time_col] = table[c.time_col].astype(wanted[c.time_col].dtype)
            if table[c.id_col].dtype != wanted[c.id_col].dtype:
                table[c.id_col] = table[c.id_col].astype(wanted[c.id_col].dtype)
        except (TypeError, ValueError) as err:
            raise DataValidationError(
                f"the future table's {c.id_col!r} or {c.time_col!r} values do not match the input's types "
                f"({wanted[c.id_col].dtype}, {wanted[c.time_col].dtype}): {err}"
            ) from None
        dup = table.duplicated([c.id_col, c.time_col], keep=False)
        if dup.any():
            pairs = table.loc[dup, [c.id_col, c.time_col]].drop_duplicates().head(5)
            raise DataValidationError(
                f"the future table has {int(dup.sum())} rows that share a ({c.id_col}, {c.time_col}) "
                f"pair, e.g. {list(pairs.itertuples(index=False, name=None))}; give one row per series "
                "and step"
            )
        merged = wanted.merge(table, on=[c.id_col, c.time_col], how="left", indicator="_found", sort=False)
        found = (merged.pop("_found") == "both").to_numpy().reshape(len(ids), H)
        if not found.all():
            # Found steps are a prefix per series only by chance: name every missing stamp.
            raise self._missing_future(ids, expected, None, ~found.all(axis=1), "future table", found)
        from forecast.data.covariates import CovariateConfig, validate_covariates

        config = CovariateConfig(futr=tuple(futr), categorical=tuple(enc.futr_cat))
        missing = "mask" if s.missing == "mask" else "error"
        validate_covariates(merged, config, c, missing)
        return merged

    def _missing_future(
        self,
        ids: np.ndarray,
        expected: np.ndarray,
        available: np.ndarray | None,
        short: np.ndarray,
        where: str,
        found: np.ndarray | None = None,
        show: int = 5,
    ) -> MissingFutureError:
        """The error for series without future values over the whole horizon: which, and when."""
        H, c = self.settings.horizon, self.columns
        stamps = expected.reshape(len(ids), H)
        if found is None:
            found = np.arange(H)[None, :] < available[:, None]  # (n, H): the first `available` steps
        named = []
        for i in np.flatnonzero(short)[:show]:  # the message names a few; the count is of all
            missing = stamps[i][~found[i]]
            listed = ", ".join(
                str(pd.Timestamp(t)) if np.issubdtype(stamps.dtype, np.datetime64) else str(t)
                for t in missing[:4]
            )
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            named.append(f"{repr(_plain(ids[i]))} at {listed}{more}")
        futr = covariate_columns(self.encoder)["futr"]
        return MissingFutureError(int(short.sum()), named, where, futr, H, c.target_col)
