"""A trained model as plain files (weights, scaler, settings) that forecasts raw long tables."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from forecast import __version__
from forecast.data.calendar import step_index
from forecast.data.scaling import SeriesScaler, segment_stats
from forecast.data.validation import (
    ColumnSpec,
    DataValidationError,
    ValidatedFrame,
    _examples,
    validate_long_frame,
)
from forecast.errors import ConfigError, ModelNotFoundError, NonFiniteError
from forecast.intervals import INTERVALS, ConformalIntervals
from forecast.models.registry import build_net

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS, SETTINGS, SCALER = "weights.safetensors", "model.json", "scaler.parquet"
ONNX = "model.onnx"  # optional serving copy of the network (see `Forecaster.save(export=...)`)

Runtime = Literal["auto", "torch", "onnx"]
# (B, L) float32 scaled windows with zeros where missing, (B, L) bool observed, (B,) int64 step
# numbers and series codes (None unless the net learns a cycle) -> (B, H, Q) float32
NetRunner = Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]


@dataclass
class ForecasterSettings:
    """Everything besides weights and scaler that forecasting needs, saved as JSON."""

    net: str
    net_params: dict[str, Any]
    input_size: int
    horizon: int
    freq: str | int
    columns: dict[str, str]
    scaler: str
    quantiles: list[float] = field(default_factory=list)
    missing: str = "error"
    format_version: int = FORMAT_VERSION
    forecast_version: str = __version__

    @property
    def output_columns(self) -> list[str]:
        """`y_hat`, or one `y_hat_qNN` per quantile."""
        if not self.quantiles:
            return ["y_hat"]
        return [f"y_hat_q{round(q * 100):02d}" for q in self.quantiles]

    @property
    def point_index(self) -> int:
        """Which output is the point forecast: the only one, the median, or the middle quantile."""
        if not self.quantiles:
            return 0
        if 0.5 in self.quantiles:
            return self.quantiles.index(0.5)
        return len(self.quantiles) // 2


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


@dataclass
class SeriesBlock:
    """Whole, validated series laid end to end: series i is values[starts[i]:ends[i]].

    The unit of work of every forecast path (one-shot, streamed chunks, Ray partitions), so
    that they all compute the same numbers. Series are in output order (sorted by id).
    """

    ids: np.ndarray  # (n,) series ids
    starts: np.ndarray  # (n,) int64
    ends: np.ndarray  # (n,) int64
    values: np.ndarray  # (rows,) float32, NaN where missing
    last_time: np.ndarray  # (n,) datetime64 or int64: each series' last time stamp

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: ColumnSpec) -> SeriesBlock:
        """From a validated frame (sorted by id then time)."""
        ids = frame[columns.id_col].to_numpy()
        starts = run_starts(ids)
        ends = np.append(starts[1:], len(ids)).astype(np.int64)
        return cls(
            ids=ids[starts],
            starts=starts,
            ends=ends,
            values=frame[columns.target_col].to_numpy(dtype=np.float32),
            last_time=frame[columns.time_col].to_numpy()[ends - 1],
        )


def log_padded(padded: int, input_size: int) -> None:
    """Say how many series were forecast from a padded (shorter than usual) input window."""
    if padded:
        log.info(
            "%d series were shorter than the input window (%d steps): padded in front, the padding "
            "masked as missing",
            padded,
            input_size,
        )


def run_starts(ids: np.ndarray) -> np.ndarray:
    """(n_runs,) int64 first row of every run of equal consecutive ids."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return np.concatenate([[0], change]).astype(np.int64)


@dataclass
class ScaledWindows:
    """The network's input for a set of series, and what turns its output into a forecast."""

    ids: np.ndarray  # (n,)
    last_time: np.ndarray  # (n,)
    windows: np.ndarray  # (n, L) float32, scaled, NaN where missing
    loc: np.ndarray  # (n,) float32
    scale: np.ndarray  # (n,) float32
    unseen: int = 0  # how many series were not in training (scaled by their own history)
    padded: int = 0  # how many series were shorter than the input (padded in front, masked)
    step: np.ndarray | None = None  # (n,) int64 step number of the first forecast step (cycles)
    series: np.ndarray | None = None  # (n,) int64 series code, 0 = unseen (per-series cycles)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: Sequence[ScaledWindows]) -> ScaledWindows:
        if len(parts) == 1:
            return parts[0]
        return cls(
            ids=np.concatenate([p.ids for p in parts]),
            last_time=np.concatenate([p.last_time for p in parts]),
            windows=np.concatenate([p.windows for p in parts]),
            loc=np.concatenate([p.loc for p in parts]),
            scale=np.concatenate([p.scale for p in parts]),
            unseen=sum(p.unseen for p in parts),
            padded=sum(p.padded for p in parts),
            step=None if parts[0].step is None else np.concatenate([p.step for p in parts]),
            series=None if parts[0].series is None else np.concatenate([p.series for p in parts]),
        )


def check_finite(preds: np.ndarray, ids: np.ndarray, show: int = 5) -> None:
    """Refuse a forecast with NaN or inf: a broken model must not replace a good output."""
    bad = ~np.isfinite(preds).reshape(len(preds), -1).all(axis=1)
    if not bad.any():
        return
    named = ", ".join(str(i) for i in ids[bad][:show])
    more = ", ..." if bad.sum() > show else ""
    raise NonFiniteError(
        f"the forecast is NaN or infinite for {int(bad.sum())} of {len(preds)} series ({named}{more}); "
        "nothing was written: check the model's weights and metrics, and the scale of these series' inputs"
    )


def torch_runner(net: nn.Module) -> NetRunner:
    """Run the PyTorch network without autograd bookkeeping."""

    def run(x: np.ndarray, mask: np.ndarray, step=None, series=None) -> np.ndarray:
        extra = [None if a is None else torch.from_numpy(a) for a in (step, series)]
        with torch.inference_mode():
            return net(torch.from_numpy(x), torch.from_numpy(mask), *extra).numpy()

    return run


class Forecaster:
    """Network + scaler + settings: forecasts the next `horizon` steps of any series.

    `runtime` picks what runs the network: `torch`, `onnx` (ONNX Runtime on the `model.onnx`
    copy saved with `export=["onnx"]`), or `auto`: ONNX Runtime when the copy and the
    `onnxruntime` package are both there (it measured faster, see bench/README.md), else PyTorch.
    `export` lists the serving copies `save` writes by default (only "onnx" exists).
    `intervals`: conformal intervals around the point forecast (`forecast.intervals`), written
    as `y_hat_lo_80`, `y_hat_hi_80`, ... beside it; applied after the network, in any runtime.
    """

    def __init__(
        self,
        net: nn.Module,
        scaler: SeriesScaler,
        settings: ForecasterSettings,
        export: Sequence[str] = (),
        intervals: ConformalIntervals | None = None,
    ):
        self.net = net.eval()
        self.scaler = scaler
        self.settings = settings
        self.intervals = intervals
        self.columns = ColumnSpec(**settings.columns)
        self.export = tuple(export)
        self.runtime = "torch"
        self._run: NetRunner = torch_runner(self.net)

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | Path, export: Sequence[str] | None = None) -> Path:
        """Write weights (safetensors), scaler (Parquet), settings and intervals (JSON): no pickles.

        `export=["onnx"]` (default: `self.export`) also writes `model.onnx`, checked to agree
        with the PyTorch network to 1e-5 before it is kept.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(path / WEIGHTS))
        self.scaler.to_frame().to_parquet(path / SCALER, index=False)
        (path / SETTINGS).write_text(json.dumps(asdict(self.settings), indent=2))
        if self.intervals is not None:
            self.intervals.save(path)
        formats = self.export if export is None else tuple(export)
        unknown = set(formats) - {"onnx"}
        if unknown:
            raise ConfigError(f"unknown export format(s) {sorted(unknown)}; the only one is 'onnx'")
        if "onnx" in formats:
            from forecast.engines.onnx import export_onnx

            export_onnx(self.net, self.settings.input_size, path / ONNX)
        return path

    @classmethod
    def load(cls, path: str | Path, runtime: Runtime = "torch") -> Forecaster:
        """Rebuild from the files written by `save`; `runtime` as in the class docstring."""
        path = Path(path)
        raw = json.loads((path / SETTINGS).read_text())
        if raw.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"model at {path} has format {raw['format_version']}, newer than this forecast "
                f"{__version__} reads ({FORMAT_VERSION}); upgrade the package"
            )
        settings = ForecasterSettings(**raw)
        net = build_net(settings.net, settings.net_params)
        net.load_state_dict(load_file(str(path / WEIGHTS)))
        scaler = SeriesScaler.from_frame(pd.read_parquet(path / SCALER), settings.scaler)
        intervals = ConformalIntervals.load(path)  # None for models saved without (older ones too)
        if intervals is not None and intervals.quantiles.shape[1] != settings.horizon:
            raise ModelNotFoundError(
                f"model at {path} is broken: its {INTERVALS} has {intervals.quantiles.shape[1]} horizon "
                f"steps, the model {settings.horizon}; recalibrate it or remove the file"
            )
        forecaster = cls(net, scaler, settings, intervals=intervals)
        forecaster.use_runtime(runtime, path)
        return forecaster

    def use_runtime(self, runtime: Runtime, path: str | Path | None = None) -> str:
        """Switch what runs the network (see the class docstring); returns the one chosen."""
        if runtime not in ("auto", "torch", "onnx"):
            raise ConfigError(f"unknown runtime {runtime!r}; use auto, torch or onnx")
        onnx_file = Path(path) / ONNX if path is not None else None
        has_copy = onnx_file is not None and onnx_file.is_file()
        if runtime == "onnx" and not has_copy:
            raise FileNotFoundError(
                f"runtime=onnx needs {ONNX} beside the model (at {path}); log the model with "
                "export=['onnx'] or use runtime=torch"
            )
        if runtime == "torch" or not has_copy:
            self.runtime, self._run = "torch", torch_runner(self.net)
            return self.runtime
        from forecast.engines.onnx import onnx_runner, onnxruntime_available

        if not onnxruntime_available():
            if runtime == "onnx":
                raise ImportError("runtime=onnx needs the onnxruntime package: pip install onnxruntime")
            self.runtime, self._run = "torch", torch_runner(self.net)
            return self.runtime
        self.runtime, self._run = "onnx", onnx_runner(onnx_file)
        return self.runtime

    # -- forecasting -------------------------------------------------------------------------
    def validate(self, history: pd.DataFrame) -> ValidatedFrame:
        """The data contract for forecasting: series of any length (shorter than `input_size`:
        padded); one with nothing observed in its input window is refused by `scaled_windows`."""
        s = self.settings
        return validate_long_frame(
            history,
            columns=self.columns,
            freq=s.freq,
            missing="mask" if s.missing == "mask" else "error",
            empty_series=None,
        )

    def predict(self, history: pd.DataFrame, batch_size: int = 4096) -> pd.DataFrame:
        """Forecast the next `horizon` steps of every series in a long history table."""
        block = SeriesBlock.from_frame(self.validate(history).frame, self.columns)
        windows = self.scaled_windows(block)
        if windows.unseen:
            log.warning("%d series were not in training; scaled them by their own history", windows.unseen)
        log_padded(windows.padded, self.settings.input_size)
        return self.forecast_windows(windows, batch_size)

    def scaled_windows(self, block: SeriesBlock) -> ScaledWindows:
        """The last `input_size` values of every series, scaled: known series by the training
        scaler, series the model never saw by their own history (the only data there is).

        A series shorter than `input_size` is padded in front with missing (masked) steps, as
        training pads short series; one with no observed value in its window has nothing to
        forecast from and is a DataValidationError naming it.
        """
        L = self.settings.input_size
        positions = (block.ends - L)[:, None] + np.arange(L)  # (n, L)
        short = block.ends - block.starts < L
        if short.any():
            window = block.values[np.maximum(positions, 0)]
            window[positions < block.starts[:, None]] = np.nan
        else:
            window = block.values[positions]
        if self.settings.missing == "mask":  # otherwise validation left no NaN and no empty series
            blind = np.isnan(window).all(axis=1)
            if blind.any():
                raise DataValidationError(
                    f"{int(blind.sum())} series have no observed value in their last {L} steps, the "
                    f"model's input window: {_examples(block.ids[blind])}; there is nothing to "
                    "forecast them from: remove them from the input or give them recent values"
                )
        loc, scale, known = self.scaler.lookup(block.ids)
        unseen = np.flatnonzero(~known)
        if len(unseen):
            loc[unseen], scale[unseen] = segment_stats(
                block.values, block.starts[unseen], block.ends[unseen], self.scaler.kind
            )
        scaled = (window - loc[:, None]) / scale[:, None]
        step = series = None
        if self.settings.net_params.get("cycle_len"):
            step = step_index(block.last_time, self.settings.freq) + 1
            series = self.scaler.codes(block.ids)
        return ScaledWindows(
            block.ids,
            block.last_time,
            scaled,
            loc,
            scale,
            unseen=len(unseen),
            padded=int(short.sum()),
            step=step,
            series=series,
        )

    def forecast_windows(self, windows: ScaledWindows, batch_size: int = 4096) -> pd.DataFrame:
        """Run the network and lay the forecast out as a long table (id, time, outputs)."""
        s, c = self.settings, self.columns
        preds = self.predict_scaled(windows.windows, batch_size, windows.step, windows.series)  # (n, H, Q)
        preds = preds * windows.scale[:, None, None] + windows.loc[:, None, None]
        check_finite(preds, windows.ids)
        out = pd.DataFrame(
            {
                c.id_col: np.repeat(windows.ids, s.horizon),
                c.time_col: future_timestamps(pd.Series(windows.last_time), s.horizon, s.freq),
            }
        )
        for q, name in enumerate(s.output_columns):
            out[name] = preds[:, :, q].reshape(-1)
        if self.intervals is not None:
            bounds = self.intervals.bounds(preds[:, :, s.point_index], windows.scale, windows.windows)
            for name, values in bounds.items():
                out[name] = values.reshape(-1)
        return out

    def _max_batch(self) -> int:
        """Series per forward pass that keep the recurrent gate buffers near 256 MB.

        Both runtimes hold (batch, recurrent steps, 4 x hidden) float32 gates per layer: at 168
        steps (segment_len=1) a batch of 4096 held about 1.4 GB each, pushing the 100k-series
        forecast to 3.9 GB peak; smaller batches measured no slower there.
        """
        steps = getattr(self.net, "n_segments", self.settings.input_size)
        hidden = getattr(getattr(self.net, "rnn", None), "hidden_size", 128)
        return max(256, 2**24 // max(steps * hidden, 1))

    def predict_scaled(
        self,
        scaled: np.ndarray,
        batch_size: int = 4096,
        step: np.ndarray | None = None,
        series: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, L) scaled windows, NaN where missing -> (N, H, Q) scaled forecasts.

        A model with a learned cycle also needs `step`, each window's absolute step number of
        its first forecast step (`forecast.data.calendar.step_index`), and may take `series`,
        the series codes (`SeriesScaler.codes`; 0 or None: the shared cycle only).
        """
        observed = ~np.isnan(scaled)
        x = np.where(observed, scaled, np.float32(0.0)).astype(np.float32, copy=False)
        if self.settings.net_params.get("cycle_len"):
            if step is None:
                raise ValueError("this model learns a cycle: predict_scaled needs `step` for every window")
            step = np.asarray(step, dtype=np.int64)
            series = np.zeros(len(x), np.int64) if series is None else np.asarray(series, dtype=np.int64)
        batch_size = min(batch_size, self._max_batch())

        def part(a: np.ndarray | None, start: int) -> np.ndarray | None:
            return None if a is None else a[start : start + batch_size]

        outputs = [
            self._run(part(x, i), part(observed, i), part(step, i), part(series, i))
            for i in range(0, len(x), batch_size)
        ]
        if not outputs:
            return np.zeros((0, self.settings.horizon, len(self.settings.output_columns)), np.float32)
        return np.concatenate(outputs)
