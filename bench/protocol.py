"""Benchmark protocols B1 (M4 Hourly) and B2 (ETTh1) of `BENCHMARKS.md`.

Loading, splits and scoring. Bench scripts put `bench/` on `sys.path` and
`import protocol`. Nothing here knows where the data lives: every loader takes the data
folder (the one holding `m4-hourly/` and `ett/`). Definitions follow the published ones
exactly so that figures compare with the literature; `tests/bench/test_protocol.py`
checks the reference figures of `BENCHMARKS.md`.
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
    "ETT_COLUMNS",
    "ETT_TARGET",
    "ETT_TEST_END",
    "ETT_TRAIN_END",
    "ETT_VAL_END",
    "M4_HORIZON",
    "M4_SEASON",
    "NAIVE2_MASE",
    "NAIVE2_SMAPE",
    "etth1_bounds",
    "etth1_standardized",
    "etth1_test_windows",
    "etth1_windows",
    "fit_standardizer",
    "last_value_windows",
    "load_etth1",
    "load_m4_hourly",
    "long_to_array",
    "m4_to_long",
    "m4_validation",
    "make_windows",
    "mase",
    "mase_per_series",
    "owa",
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
