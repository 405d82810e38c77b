"""Training windows as index arrays into one contiguous array of all series."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class SeriesArrays:
    """All series stored once, end to end: series i is values[offsets[i]:offsets[i + 1]].

    `values` are the raw targets (NaN where missing), stored once; windows are scaled by the
    series' `loc`/`scale` when a batch is gathered, so the raw data can be read back exactly
    (`SeriesDataModule.history`) without a second copy. `mase_scale` is each series' in-sample
    seasonal-naive MAE on the raw scale.
    `first_step` and `codes`, when given, add each window's `step` (the absolute step number
    of its first target, for learned cycles) and `series` code to its batch.
    Covariates (`forecast.data.covariate_encoder`), encoded once per row like the values (`futr`,
    `futr_cat`, `hist`, `hist_cat`, row i is values[i]'s step) and once per series (`static`,
    `static_cat`); categorical codes are stored as int32 and served as int64.
    """

    values: np.ndarray  # (total_steps,) float32
    offsets: np.ndarray  # (n_series + 1,) int64
    loc: np.ndarray  # (n_series,) float32
    scale: np.ndarray  # (n_series,) float32
    mase_scale: np.ndarray  # (n_series,) float32
    first_step: np.ndarray | None = None  # (n_series,) int64 absolute step number of each first row
    codes: np.ndarray | None = None  # (n_series,) int64 series code for per-series parameters (1..n)
    futr: np.ndarray | None = None  # (total_steps, F) float32 future-known numeric, calendar included
    futr_cat: np.ndarray | None = None  # (total_steps, Fc) int32 future-known category codes
    hist: np.ndarray | None = None  # (total_steps, P) float32 past-only numeric
    hist_cat: np.ndarray | None = None  # (total_steps, Pc) int32 past-only category codes
    static: np.ndarray | None = None  # (n_series, S) float32
    static_cat: np.ndarray | None = None  # (n_series, Sc) int32

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _window_counts(
    first_target: np.ndarray, last_target: np.ndarray, input_size: int, horizon: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """(first window's start, window count) per series: windows whose H targets lie in
    [first, last), a window's start being its first target minus `input_size`."""
    first_start = np.asarray(first_target, dtype=np.int64) - input_size
    last_start = np.asarray(last_target, dtype=np.int64) - horizon - input_size  # inclusive
    return first_start, np.maximum((last_start - first_start) // stride + 1, 0)


def window_starts(
    offsets: np.ndarray,
    first_target: np.ndarray,
    last_target: np.ndarray,
    input_size: int,
    horizon: int,
    stride: int = 1,
) -> np.ndarray:
    """Global start positions of every window whose H targets lie in [first, last) per series.

    Positions are relative to each series; inputs reach back `input_size` steps and may cross
    into an earlier split, targets never leave their own. A first target below `input_size`
    gives windows that start before their series (padded, see `WindowDataset`). Returns int32
    where it fits, so the index costs no more memory than the values it points into.
    """
    first_start, counts = _window_counts(first_target, last_target, input_size, horizon, stride)
    total = int(counts.sum())
    dtype = np.int32 if offsets[-1] < np.iinfo(np.int32).max else np.int64
    series = np.repeat(np.arange(len(counts)), counts)
    # Position of each window within its own series' run: 0, 1, 2, ... restarting per series.
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(total) - run_start
    starts = offsets[:-1][series] + first_start[series] + within * stride
    return starts.astype(dtype)


class WindowIndex:
    """The starts `window_starts` lists, computed per lookup from per-series counts.

    A flat array of starts costs 4 bytes a window: 2.8 GB at a million series of 700 training
    windows each, more than the values they point into. This holds three numbers a series and
    finds a window's series by binary search over the running counts; `index[i]` equals
    `window_starts(...)[i]` for every i, so sampling and order are the same.
    """

    def __init__(
        self,
        offsets: np.ndarray,
        first_target: np.ndarray,
        last_target: np.ndarray,
        input_size: int,
        horizon: int,
        stride: int = 1,
    ):
        first_start, counts = _window_counts(first_target, last_target, input_size, horizon, stride)
        self.base = offsets[:-1].astype(np.int64) + first_start  # (n_series,) first window's start
        self.cum = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (n_series + 1,)
        self.stride = stride
        self.dtype = np.dtype(np.int64)

    def __len__(self) -> int:
        return int(self.cum[-1])

    def __getitem__(self, index) -> np.ndarray:
        i = np.asarray(index, dtype=np.int64)
        i = np.where(i < 0, i + len(self), i)
        series = np.searchsorted(self.cum, i, side="right") - 1
        return self.base[series] + (i - self.cum[series]) * self.stride

    def astype(self, dtype) -> np.ndarray:
        """Every start as one array (for checks on small data; this is the memory it saves)."""
        return self[np.arange(len(self))].astype(dtype)


class WindowDataset(Dataset):
    """Serves (input, target) windows by fancy indexing a whole batch at once.

    `__getitems__` lets the DataLoader fetch a batch with one vectorised gather instead of
    one Python call per window, which keeps the data pipeline far ahead of the model.
    A window may start before its series (a series shorter than its input): the steps before
    the series are served as missing (x 0, x_mask False), like a masked value, and their
    covariates as 0 / code 0. `padded=False` promises no window does so and skips that check
    (the common case of long series).

    Covariates, when the arrays hold them: future-known ones (`futr`, `futr_cat`) over the input
    window and the horizon, past-only ones (`hist`, `hist_cat`) over the input window only (the
    rows after the forecast origin are never read), static ones per series.
    """

    def __init__(
        self, arrays: SeriesArrays, starts: np.ndarray, input_size: int, horizon: int, padded: bool = True
    ):
        self.arrays = arrays
        self.starts = starts
        self.input_size = input_size
        self.horizon = horizon
        self.padded = padded
        self._steps = np.arange(input_size + horizon)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        a = self.arrays
        starts = self.starts[np.asarray(indices)].astype(np.int64)
        L = self.input_size
        # A window's targets always lie inside its series, its input may start before it.
        series = np.searchsorted(a.offsets, starts + L, side="right") - 1
        loc, scale = a.loc[series], a.scale[series]
        positions = starts[:, None] + self._steps  # (B, L + H)
        if self.padded:
            before = positions < a.offsets[series][:, None]
            raw = a.values[np.maximum(positions, 0)]
            raw[before] = np.nan
        else:
            before = None
            raw = a.values[positions]
        window = (raw - loc[:, None]) / scale[:, None]  # (B, L + H)
        missing = np.isnan(window)
        window = np.where(missing, np.float32(0.0), window)
        extra = {}
        if a.first_step is not None:
            extra["step"] = torch.from_numpy(a.first_step[series] + (starts - a.offsets[series]) + L)
        if a.codes is not None:
            extra["series"] = torch.from_numpy(a.codes[series])
        extra.update(self._covariates(positions, before, series))
        return {
            "x": torch.from_numpy(window[:, :L]),  # (B, L)
            "x_mask": torch.from_numpy(~missing[:, :L]),  # (B, L) True where observed
            "y": torch.from_numpy(window[:, L:]),  # (B, H)
            "y_mask": torch.from_numpy(~missing[:, L:]),  # (B, H)
            "loc": torch.from_numpy(loc),  # (B,)
            "scale": torch.from_numpy(scale),  # (B,)
            "mase_scale": torch.from_numpy(a.mase_scale[series]),  # (B,)
            **extra,  # step, series: (B,) int64; covariates (see _covariates)
        }

    def _covariates(
        self, positions: np.ndarray, before: np.ndarray | None, series: np.ndarray
    ) -> dict[str, torch.Tensor]:
        """The batch's covariate windows, one fancy-indexing gather per kind.

        positions (B, L + H) global rows of the window; before (B, L + H) True for steps before
        the series (None: no window is padded); series (B,) each window's series.
        """
        a, L, out = self.arrays, self.input_size, {}
        rows = positions if before is None else np.maximum(positions, 0)
        for key, width in (("futr", None), ("futr_cat", None), ("hist", L), ("hist_cat", L)):
            stored = getattr(a, key)
            if stored is None:
                continue
            window = stored[rows[:, :width]]  # (B, L + H or L, F)
            if before is not None:
                window[before[:, :width]] = 0
            if key.endswith("_cat"):
                window = window.astype(np.int64, copy=False)
            out[key] = torch.from_numpy(window)
        if a.static is not None:
            out["static"] = torch.from_numpy(a.static[series])  # (B, S)
        if a.static_cat is not None:
            out["static_cat"] = torch.from_numpy(a.static_cat[series].astype(np.int64, copy=False))
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dataset already returns whole batches; a module-level function pickles for workers."""
    return batch
