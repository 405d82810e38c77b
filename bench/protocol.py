"""Benchmark protocols B1 (M4 Hourly), B2 (ETTh1) and B4 (EPF) of `BENCHMARKS.md`.

Loading, splits and scoring. Bench scripts put `bench/` on `sys.path` and
`import protocol`. Nothing here knows where the data lives: every loader takes the data
folder (the one holding `m4-hourly/`, `ett/` and `epf/`). Definitions follow the published
ones exactly so that figures compare with the literature; `tests/bench/test_protocol.py`
and `tests/bench/test_protocol_epf.py` check the reference figures of `BENCHMARKS.md`.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "EPF_COVARIATES",
    "EPF_DAY",
    "EPF_MARKETS",
    "EPF_TEST_DAYS",
    "EPF_VAL_DAYS",
    "ETT_COLUMNS",
    "ETT_TARGET",
    "ETT_TEST_END",
    "ETT_TRAIN_END",
    "ETT_VAL_END",
    "M4_HORIZON",
    "M4_SEASON",
    "NAIVE2_MASE",
    "NAIVE2_SMAPE",
    "epf_bounds",
    "epf_day_windows",
    "epf_naive",
    "epf_origins",
    "etth1_bounds",
    "etth1_standardized",
    "etth1_test_windows",
    "etth1_windows",
    "fit_standardizer",
    "last_value_windows",
    "load_epf",
    "load_etth1",
    "load_m4_hourly",
    "long_to_array",
    "m4_to_long",
    "m4_validation",
    "make_windows",
    "mase",
    "mase_per_series",
    "owa",
    "score_epf",
    "score_m4",
    "score_windows",
    "seasonal_naive_windows",
    "smape",
    "smape_per_series",
]

# --------------------------------------------------------------------------------------
# B1. M4 Hourly
# --------------------------------------------------------------------------------------

M4_HORIZON = 48
M4_SEASON = 24
# Published M4 Hourly figures of Naive2, the OWA denominators.
NAIVE2_SMAPE = 18.383
NAIVE2_MASE = 2.395


def _read_m4_wide(path: Path) -> tuple[list[str], list[NDArray[np.float64]]]:
    frame = pd.read_csv(path)
    ids = frame.iloc[:, 0].astype(str).tolist()
    values = frame.iloc[:, 1:].to_numpy(dtype=np.float64)
    rows = []
    for row in values:
        # Shorter series leave trailing cells empty; an interior gap is a data error.
        present = np.flatnonzero(~np.isnan(row))
        series = row[: present[-1] + 1 if present.size else 0]
        if np.isnan(series).any():
            raise ValueError(f"{path}: missing value inside a series")
        rows.append(series.copy())
    return ids, rows


def load_m4_hourly(
    data_dir: str | PathLike[str],
) -> tuple[list[NDArray[np.float64]], NDArray[np.float64], list[str]]:
    """Load M4 Hourly: training histories (700 to 960 values each), test (414, 48), ids.

    Reads `m4-hourly/Hourly-train.csv` and `Hourly-test.csv` from `data_dir` and checks
    that both list the same series in the same order.
    """
    root = Path(data_dir) / "m4-hourly"
    ids, train = _read_m4_wide(root / "Hourly-train.csv")
    test_ids, test_rows = _read_m4_wide(root / "Hourly-test.csv")
    if test_ids != ids:
        raise ValueError("M4 Hourly train and test list different series")
    if any(r.size != M4_HORIZON for r in test_rows):
        raise ValueError(f"every M4 Hourly test row must hold {M4_HORIZON} values")
    return train, np.stack(test_rows), ids


def m4_validation(
    train: Sequence[ArrayLike], horizon: int = M4_HORIZON
) -> tuple[list[NDArray[np.float64]], NDArray[np.float64]]:
    """The validation windows of B1: histories (each series' training part less its last
    `horizon` values) and targets (n_series, horizon), those last values.

    They are the windows the model early-stops on (`data.val_size=48` of the training part):
    the test part plays no role. Score them with `score_m4(f, histories, targets,
    reference=...)`: MASE then scales by the history's own seasonal error.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in train]
    if any(a.size <= horizon + M4_SEASON for a in arrays):
        raise ValueError(f"every series needs more than {horizon + M4_SEASON} training values")
    return [a[:-horizon].copy() for a in arrays], np.stack([a[-horizon:] for a in arrays])


def m4_to_long(
    train: Sequence[ArrayLike],
    ids: Sequence[str],
    start: str = "2000-01-01",
    freq: str = "h",
) -> pd.DataFrame:
    """Long format (unique_id, ds, y) for libraries that want a data frame.

    M4 ships no timestamps here, so every series gets nominal timestamps `start`,
    `start + 1 freq`, ... . They only order the values; calendar features derived from
    them carry no information (all series start at the same nominal hour).
    """
    if len(train) != len(ids):
        raise ValueError("train and ids differ in length")
    arrays = [np.asarray(s, dtype=np.float64) for s in train]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    stamps = pd.date_range(start, periods=int(lengths.max(initial=0)), freq=freq)
    steps = np.concatenate([np.arange(n) for n in lengths]) if arrays else np.array([], int)
    return pd.DataFrame(
        {
            "unique_id": np.repeat(np.asarray(ids, dtype=object), lengths),
            "ds": stamps[steps],
            "y": np.concatenate(arrays) if arrays else np.array([], float),
        }
    )


def long_to_array(
    frame: pd.DataFrame, ids: Sequence[str], value_col: str, horizon: int = M4_HORIZON
) -> NDArray[np.float64]:
    """Long-format forecasts (unique_id, ds, value_col) to an (n_series, horizon) array.

    Rows are put in the order of `ids` and, within a series, of `ds`; every series must
    have exactly `horizon` rows.
    """
    frame = frame.sort_values(["unique_id", "ds"], kind="stable")
    step = frame.groupby("unique_id", sort=False).cumcount().to_numpy()
    wide = frame.assign(_step=step).pivot(index="unique_id", columns="_step", values=value_col)
    wide = wide.reindex(index=list(ids))
    if wide.shape != (len(ids), horizon) or wide.isna().to_numpy().any():
        raise ValueError(f"need exactly {horizon} rows for each of the {len(ids)} ids")
    return wide.to_numpy(dtype=np.float64)


def smape_per_series(actual: ArrayLike, forecast: ArrayLike) -> NDArray[np.float64]:
    """sMAPE of each series in percent: 200/h * sum |y - f| / (|y| + |f|).

    A step where y = f = 0 counts as error 0 (the formula is 0/0 there).
    """
    y = np.atleast_2d(np.asarray(actual, dtype=np.float64))
    f = np.atleast_2d(np.asarray(forecast, dtype=np.float64))
    if y.shape != f.shape:
        raise ValueError(f"shapes differ: actual {y.shape}, forecast {f.shape}")
    num = np.abs(y - f)
    den = np.abs(y) + np.abs(f)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return 200.0 * ratio.mean(axis=1)


def smape(actual: ArrayLike, forecast: ArrayLike) -> float:
    """sMAPE per series, then averaged over series (B1)."""
    return float(smape_per_series(actual, forecast).mean())


def mase_per_series(
    actual: ArrayLike,
    forecast: ArrayLike,
    train: Sequence[ArrayLike],
    season_length: int = M4_SEASON,
) -> NDArray[np.float64]:
    """MASE of each series: mean |y - f| over the mean in-sample |y_t - y_(t-m)|."""
    y = np.atleast_2d(np.asarray(actual, dtype=np.float64))
    f = np.atleast_2d(np.asarray(forecast, dtype=np.float64))
    if y.shape != f.shape or y.shape[0] != len(train):
        raise ValueError("actual, forecast and train must describe the same series")
    scale = np.array(
        [
            np.mean(np.abs(a[season_length:] - a[:-season_length]))
            for a in (np.asarray(s, dtype=np.float64) for s in train)
        ]
    )
    return np.abs(y - f).mean(axis=1) / scale


def mase(
    actual: ArrayLike,
    forecast: ArrayLike,
    train: Sequence[ArrayLike],
    season_length: int = M4_SEASON,
) -> float:
    """MASE per series, then averaged over series (B1)."""
    return float(mase_per_series(actual, forecast, train, season_length).mean())


def owa(
    smape_value: float, mase_value: float, reference: tuple[float, float] = (NAIVE2_SMAPE, NAIVE2_MASE)
) -> float:
    """Overall weighted average relative to Naive2's (sMAPE, MASE) on the same windows: by
    default the published M4 Hourly test figures; on other windows (validation), Naive2's own."""
    return (smape_value / reference[0] + mase_value / reference[1]) / 2.0


def score_m4(
    forecasts: ArrayLike,
    train: Sequence[ArrayLike],
    test: ArrayLike,
    reference: tuple[float, float] = (NAIVE2_SMAPE, NAIVE2_MASE),
) -> dict[str, float]:
    """B1 scores of an (n_series, 48) forecast: {'smape', 'mase', 'owa'}.

    `train` is what precedes the scored values (the MASE scale); `reference` Naive2's sMAPE
    and MASE on the same windows (the published test figures by default).
    """
    f = np.asarray(forecasts, dtype=np.float64)
    y = np.asarray(test, dtype=np.float64)
    if f.shape != y.shape:
        raise ValueError(f"forecasts {f.shape} do not match test {y.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("forecasts contain NaN or inf")
    s = smape(y, f)
    m = mase(y, f, train)
    return {"smape": s, "mase": m, "owa": owa(s, m, reference)}


# --------------------------------------------------------------------------------------
# B2. ETTh1
# --------------------------------------------------------------------------------------

ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
ETT_TARGET = "OT"
# Row borders of the standard split (12 / 4 / 4 months of 30 days, hourly).
ETT_TRAIN_END = 12 * 30 * 24  # 8640
ETT_VAL_END = ETT_TRAIN_END + 4 * 30 * 24  # 11520
ETT_TEST_END = ETT_VAL_END + 4 * 30 * 24  # 14400


def load_etth1(data_dir: str | PathLike[str]) -> pd.DataFrame:
    """Load `ett/ETTh1.csv`: a `date` column (datetime) and the seven float columns."""
    frame = pd.read_csv(Path(data_dir) / "ett" / "ETTh1.csv", parse_dates=["date"])
    missing = [c for c in ETT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"ETTh1.csv lacks columns {missing}")
    return frame


def etth1_bounds(input_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of each split for input length L.

    Validation and test start L rows early so their first window's look-back reaches
    into the previous split; the targets never do.
    """
    if input_len < 1 or input_len > ETT_TRAIN_END:
        raise ValueError(f"input_len out of range: {input_len}")
    return {
        "train": (0, ETT_TRAIN_END),
        "val": (ETT_TRAIN_END - input_len, ETT_VAL_END),
        "test": (ETT_VAL_END - input_len, ETT_TEST_END),
    }


def fit_standardizer(
    values: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-column mean and population std (ddof=0) of the train rows [0, 8640).

    ddof=0 is what reproduces the reference (OT: mean 17.128, std 9.176; ddof=1 gives
    9.177) and matches the scikit-learn StandardScaler of the original ETT code.
    """
    v = np.asarray(values, dtype=np.float64)
    train = v[:ETT_TRAIN_END]
    return train.mean(axis=0), train.std(axis=0, ddof=0)


def etth1_standardized(
    frame: pd.DataFrame, columns: Sequence[str] = (ETT_TARGET,)
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """All rows of `columns` standardised with train statistics: (values, mean, std).

    values is (T, C).

    Univariate is `columns=("OT",)`, multivariate `columns=ETT_COLUMNS`.
    """
    raw = frame.loc[:, list(columns)].to_numpy(dtype=np.float64)
    mean, std = fit_standardizer(raw)
    return (raw - mean) / std, mean, std


def make_windows(
    values: NDArray[np.float64], start: int, end: int, input_len: int, horizon: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Every window of rows [start, end), stride 1: X (n, L, C) and Y (n, H, C).

    n = (end - start) - L - H + 1. Both are read-only strided views of `values` (no
    copy: at L = 336, H = 720 a copy of the multivariate test windows would take about
    130 MB); call `np.ascontiguousarray` on a batch slice where a model needs contiguous
    memory.
    """
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
    seg = v[start:end]
    width = input_len + horizon
    if seg.shape[0] < width:
        raise ValueError(f"range [{start}, {end}) is shorter than L + H = {width}")
    win = sliding_window_view(seg, width, axis=0).transpose(0, 2, 1)  # (n, L + H, C)
    return win[:, :input_len], win[:, input_len:]


def etth1_windows(
    values: NDArray[np.float64], split: str, input_len: int, horizon: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """X, Y of every window of one split ('train', 'val' or 'test') of `values`."""
    start, end = etth1_bounds(input_len)[split]
    return make_windows(values, start, end, input_len, horizon)


def etth1_test_windows(
    frame: pd.DataFrame,
    input_len: int,
    horizon: int,
    columns: Sequence[str] = (ETT_TARGET,),
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Every B2 test window on the standardised scale: X (n, L, C), Y (n, H, C).

    n = 2880 - H + 1 (2,857 at H = 24, 2,785 at H = 96), whatever L.
    """
    values, _, _ = etth1_standardized(frame, columns)
    return etth1_windows(values, "test", input_len, horizon)


def score_windows(pred: ArrayLike, y: ArrayLike) -> dict[str, float]:
    """MSE and MAE averaged over all windows, steps and columns (B2)."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} does not match targets {t.shape}")
    err = p - t
    return {"mse": float(np.mean(err * err)), "mae": float(np.mean(np.abs(err)))}


def last_value_windows(x: ArrayLike, horizon: int) -> NDArray[np.float64]:
    """Naive forecast of every window: its last input row repeated `horizon` times."""
    xs = np.asarray(x)
    return np.repeat(xs[:, -1:, :], horizon, axis=1)


def seasonal_naive_windows(x: ArrayLike, horizon: int, season_length: int = 24) -> NDArray[np.float64]:
    """Seasonal naive of every window: step h repeats input step L - m + (h mod m)."""
    xs = np.asarray(x)
    input_len = xs.shape[1]
    if input_len < season_length:
        raise ValueError(f"input length {input_len} is shorter than the season {season_length}")
    return xs[:, input_len - season_length + np.arange(horizon) % season_length, :]


# --------------------------------------------------------------------------------------
# B4. EPF (day-ahead electricity prices)
# --------------------------------------------------------------------------------------

EPF_MARKETS = ("NP", "PJM", "BE")
EPF_DAY = 24  # hours per day: the horizon, and the stride between forecast origins
EPF_TEST_DAYS = 728  # the last 728 days of each file (Lago et al. 2021)
EPF_VAL_DAYS = 364  # validation: the last 364 days before the test period (a choice, not the paper's)
# The two day-ahead forecasts of each file, in file order, under short snake_case names (the
# files' own headers differ per market, carry a space after each comma, and PJM's a typo).
EPF_COVARIATES = {
    "NP": ("load_forecast", "wind_forecast"),  # grid load, wind power
    "PJM": ("load_forecast", "zonal_load_forecast"),  # system load, COMED zonal load
    "BE": ("generation_forecast", "load_forecast"),  # French generation, French system load
}


def load_epf(data_dir: str | PathLike[str], market: str) -> pd.DataFrame:
    """Load `epf/<market>.csv` as a long table: unique_id (the market), ds, y and the two
    covariates (`EPF_COVARIATES[market]`), one row per hour.

    Checks what the protocol relies on: four columns, hourly time stamps without gaps, no
    missing value.
    """
    if market not in EPF_COVARIATES:
        raise ValueError(f"unknown EPF market {market!r}; one of {EPF_MARKETS}")
    path = Path(data_dir) / "epf" / f"{market}.csv"
    raw = pd.read_csv(path, skipinitialspace=True)  # the header has a space after each comma
    if raw.shape[1] != 4:
        raise ValueError(f"{path}: expected 4 columns (date, price, two forecasts), got {list(raw.columns)}")
    covariates = EPF_COVARIATES[market]
    frame = pd.DataFrame(
        {
            "unique_id": market,
            "ds": pd.to_datetime(raw.iloc[:, 0]),
            "y": raw.iloc[:, 1].astype(np.float64),
            covariates[0]: raw.iloc[:, 2].astype(np.float64),
            covariates[1]: raw.iloc[:, 3].astype(np.float64),
        }
    )
    if frame.isna().any().any():
        raise ValueError(f"{path}: missing values")
    steps = frame["ds"].diff().iloc[1:]
    if not (steps == pd.Timedelta(hours=1)).all():
        raise ValueError(f"{path}: time stamps are not hourly without gaps")
    if len(frame) % EPF_DAY or frame["ds"].iloc[0].hour != 0:
        raise ValueError(f"{path}: expected whole days starting at midnight")
    return frame


def epf_bounds(n_rows: int, val_days: int = EPF_VAL_DAYS) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of the forecast targets of each part of B4.

    test: the last 728 days; train: every row before them (what the model may see, once);
    val: the last `val_days` days of train (early stopping and every choice of settings),
    fit: train less val. All borders fall on midnight (rows are whole days from midnight).
    """
    test_start = n_rows - EPF_TEST_DAYS * EPF_DAY
    val_start = test_start - val_days * EPF_DAY
    if val_days < 1 or val_start <= 0:
        raise ValueError(f"{n_rows} rows leave no training part before {val_days} validation days")
    return {
        "fit": (0, val_start),
        "val": (val_start, test_start),
        "train": (0, test_start),
        "test": (test_start, n_rows),
    }


def epf_origins(start: int, end: int) -> NDArray[np.int64]:
    """The first target row of every forecast day in [start, end): one per midnight."""
    if start % EPF_DAY or end % EPF_DAY or end <= start:
        raise ValueError(f"[{start}, {end}) is not a range of whole days")
    return np.arange(start, end, EPF_DAY, dtype=np.int64)


def epf_day_windows(
    values: ArrayLike, start: int, end: int, input_len: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Every forecast day of target rows [start, end): X (days, L) the L prices before its
    midnight (up to the end of d - 1), Y (days, 24) its prices.

    The covariates of day d (known up to its end) are rows [o - L, o + 24) of the covariate
    columns for origin o = `epf_origins(start, end)`; `bench/epf.py` cuts them itself.
    """
    v = np.asarray(values, dtype=np.float64)
    origins = epf_origins(start, end)
    if origins[0] < input_len:
        raise ValueError(f"the first day at row {origins[0]} has fewer than {input_len} prices before it")
    x = v[origins[:, None] - input_len + np.arange(input_len)]
    y = v[origins[:, None] + np.arange(EPF_DAY)]
    return x, y


def epf_naive(values: ArrayLike, start: int, end: int, lag: int) -> NDArray[np.float64]:
    """Naive forecast of every day of [start, end): the prices `lag` hours earlier (days, 24).

    lag 24: daily naive (day d - 1); lag 168: weekly naive (day d - 7), the rMAE reference.
    """
    v = np.asarray(values, dtype=np.float64)
    origins = epf_origins(start, end)
    if origins[0] < lag:
        raise ValueError(f"the first day at row {origins[0]} has no price {lag} hours earlier")
    return v[origins[:, None] - lag + np.arange(EPF_DAY)]


def score_epf(actual: ArrayLike, forecast: ArrayLike, weekly_naive: ArrayLike) -> dict[str, float]:
    """B4 scores over all hours: MAE, RMSE, sMAPE (percent, 200 |y - f| / (|y| + |f|), 0 where
    both are 0) and rMAE = MAE / MAE of `weekly_naive` on the same hours."""
    y = np.asarray(actual, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    w = np.asarray(weekly_naive, dtype=np.float64)
    if y.shape != f.shape or y.shape != w.shape:
        raise ValueError(f"shapes differ: actual {y.shape}, forecast {f.shape}, weekly naive {w.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("forecasts contain NaN or inf")
    err = np.abs(y - f)
    den = np.abs(y) + np.abs(f)
    mae = float(err.mean())
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(err * err))),
        "smape": float(200.0 * np.divide(err, den, out=np.zeros_like(err), where=den > 0).mean()),
        "rmae": mae / float(np.abs(y - w).mean()),
    }
