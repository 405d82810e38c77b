"""A forecast as the long output table: its time stamps, its columns in contract order, and the
refusal of NaN or infinite values before anything is written."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.blocks import ScaledWindows
from forecast.data.validation import ColumnSpec
from forecast.finite import require_finite
from forecast.intervals import ConformalIntervals
from forecast.settings import ForecasterSettings


def future_timestamps(last: pd.Series, horizon: int, freq: str | int) -> np.ndarray:
    """(n_series * horizon,) timestamps following each series' last one, series-major."""
    if isinstance(freq, int):
        steps = np.arange(1, horizon + 1, dtype=np.int64) * freq
        return (last.to_numpy(dtype=np.int64)[:, None] + steps).reshape(-1)
    index = pd.DatetimeIndex(last)
    offset = pd.tseries.frequencies.to_offset(freq)
    # One vectorised shift per step keeps calendar offsets (month ends) correct.
    columns = [(index + k * offset).to_numpy() for k in range(1, horizon + 1)]
    return np.stack(columns, axis=1).reshape(-1)


def check_finite(preds: np.ndarray, ids: np.ndarray, show: int = 5) -> None:
    """Refuse a forecast with NaN or inf: a broken model must not replace a good output."""

    def message(bad: np.ndarray) -> str:
        named = ", ".join(str(i) for i in ids[bad][:show])
        more = ", ..." if bad.sum() > show else ""
        return (
            f"the forecast is NaN or infinite for {int(bad.sum())} of {len(preds)} series ({named}{more}); "
            "nothing was written: check the model's weights and metrics, and the scale of these series' "
            "inputs"
        )

    require_finite(preds, message)


def forecast_table(
    preds: np.ndarray,
    windows: ScaledWindows,
    settings: ForecasterSettings,
    columns: ColumnSpec,
    intervals: ConformalIntervals | None,
) -> pd.DataFrame:
    """(n, H, 1 + Q) forecasts in data units -> the long table of `forecast_columns`: id, time,
    y_hat, the quantiles, then the interval bounds around y_hat."""
    s, c = settings, columns
    out = pd.DataFrame(
        {
            c.id_col: np.repeat(windows.ids, s.horizon),
            c.time_col: future_timestamps(pd.Series(windows.last_time), s.horizon, s.freq),
        }
    )
    for q, name in enumerate(s.output_columns):  # y_hat first, then the quantiles
        out[name] = preds[:, :, q].reshape(-1)
    if intervals is not None:  # around y_hat, as they were calibrated
        bounds = intervals.bounds(preds[:, :, 0], windows.scale, windows.windows)
        for name, values in bounds.items():
            out[name] = values.reshape(-1)
    return out
