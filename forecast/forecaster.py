"""A trained model as plain files (weights, scaler, settings) that forecasts raw long tables."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
    _coerce_time,
    _examples,
    _plain,
    validate_long_frame,
)
from forecast.errors import ConfigError, MissingFutureError, ModelNotFoundError, NonFiniteError
from forecast.intervals import INTERVALS, ConformalIntervals
from forecast.models import distributions
from forecast.models.inputs import input_keys
from forecast.models.outputs import median_of_quantiles
from forecast.models.registry import build_net

if TYPE_CHECKING:
    from forecast.data.covariates import CovariateEncoder

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: settings carry `config` (the typed options); 1 still loads
WEIGHTS, SETTINGS, SCALER = "weights.safetensors", "model.json", "scaler.parquet"
ONNX = "model.onnx"  # optional serving copy of the network (see `Forecaster.save(export=...)`)
POINT = "y_hat"  # the point forecast: the first forecast column of every model (docs/batch.md)

Runtime = Literal["auto", "torch", "onnx"]
# The batch (forecast.models.inputs: x (B, L) float32 scaled windows with zeros where missing,
# x_mask (B, L) bool, step/series (B,) int64 for learned cycles, covariates) -> (B, H, Q) float32.
# A runner reads the keys its net needs and ignores the others.
NetRunner = Callable[[Mapping[str, np.ndarray]], np.ndarray]


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
    # The fitted covariate encoder (`forecast.data.covariates.CovariateEncoder.to_dict()`);
    # None: the model reads the target alone (every model saved before covariates existed).
    covariates: dict[str, Any] | None = None
    # The options it was trained with (`forecast.config.SavedConfig`: data, model, train and
    # their schema version); None for models saved before format 2.
    config: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    forecast_version: str = __version__

    @property
    def quantile_columns(self) -> list[str]:
        """One `y_hat_qNN` per quantile level, in the order of `quantiles` (ascending)."""
        return [f"y_hat_q{round(q * 100):02d}" for q in self.quantiles]

    @property
    def output_columns(self) -> list[str]:
        """The forecast columns the network's output becomes, in order: `y_hat`, then the
        quantiles (`predict_scaled`'s last axis). Computed from the settings at forecast time, so
        a model saved before `y_hat` was always written writes it too."""
        return [POINT, *self.quantile_columns]

    @property
    def distribution(self) -> str | None:
        """The distribution whose parameters the net outputs (`forecast.models.distributions`),
        or None: the net outputs the forecast columns themselves."""
        kind = self.net_params.get("output", "point")
        return kind if kind in distributions.KINDS else None

    @property
    def point_index(self) -> int:
        """Where the point forecast is among `output_columns`: first, always (`y_hat`)."""
        return 0


def forecast_columns(settings: ForecasterSettings, intervals: ConformalIntervals | None) -> list[str]:
    """The output contract (docs/batch.md, Output columns): id, time, `y_hat`, the quantiles
    ascending, then `y_hat_lo_NN`, `y_hat_hi_NN` per interval level ascending."""
    c = settings.columns
    bands = intervals.columns if intervals is not None else []
    return [c["id_col"], c["time_col"], *settings.output_columns, *bands]


def saved_columns(folder: str | Path) -> list[str]:
    """The columns the model saved in `folder` forecasts, read from its settings and intervals
    files alone (no weights, no forecast): what the promotion gate compares."""
    folder = Path(folder)
    raw = json.loads((folder / SETTINGS).read_text())
    if raw.get("format_version", 0) > FORMAT_VERSION:  # as `Forecaster.load` refuses it
        raise ValueError(
            f"model at {folder} has format {raw['format_version']}, newer than this forecast "
            f"{__version__} reads ({FORMAT_VERSION}); upgrade the package"
        )
    return forecast_columns(ForecasterSettings(**raw), ConformalIntervals.load(folder))


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
class CovariateRows:
    """A block's encoded covariates: per row, per series, and where each series' horizon is.

    `rows` holds the `CovariateEncoder.encode_rows` arrays ("futr", "futr_cat", "hist",
    "hist_cat"), one row per row of the block's values and possibly more after them (horizon
    rows from a separate future table); `ahead[i]` is the first of series i's `horizon`
    consecutive rows there. The input window of series i ending at row e is rows[e - L:e], as
    for the target, so a backtest that cuts series earlier sets `ahead` to the cut.
    """

    rows: dict[str, np.ndarray]  # key -> (rows, width)
    static: dict[str, np.ndarray]  # "static" (n, S) float32, "static_cat" (n, Sc) int64
    ahead: np.ndarray  # (n,) int64

    def take(self, order: np.ndarray) -> CovariateRows:
        """The same rows for the series in `order`."""
        return CovariateRows(self.rows, {k: v[order] for k, v in self.static.items()}, self.ahead[order])

    def ahead_at(self, ends: np.ndarray) -> CovariateRows:
        """The same rows with each series' horizon starting at `ends` (origins inside the history)."""
        return CovariateRows(self.rows, self.static, np.asarray(ends, dtype=np.int64))

    def windows(self, positions: np.ndarray, padded: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
        """Batch arrays for windows at `positions` ((n, L) rows, `padded` True before a series'
        start): futr over the input window and the horizon, hist over the window, static."""
        safe = np.maximum(positions, 0)  # (n, L); padded steps are zeroed below
        ahead = self.ahead[:, None] + np.arange(horizon)  # (n, H)
        out: dict[str, np.ndarray] = {}
        for key, values in self.rows.items():
            window = values[safe]  # (n, L, width)
            window[padded] = 0
            if key in ("futr", "futr_cat"):
                window = np.concatenate([window, values[ahead]], axis=1)  # (n, L + H, width)
            out[key] = window
        out.update(self.static)
        return out


@dataclass
class SeriesBlock:
    """Whole, validated series laid end to end: series i is values[starts[i]:ends[i]].

    The unit of work of every forecast path (one-shot, streamed chunks, Ray partitions), so
    that they all compute the same numbers. Series are in output order (sorted by id).
    `covariates`: the encoded covariates of a model that reads them (`Forecaster.covariate_block`).
    """

    ids: np.ndarray  # (n,) series ids
    starts: np.ndarray  # (n,) int64
    ends: np.ndarray  # (n,) int64
    values: np.ndarray  # (rows,) float32, NaN where missing
    last_time: np.ndarray  # (n,) datetime64 or int64: each series' last time stamp
    covariates: CovariateRows | None = None

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

    def take(self, order: np.ndarray) -> SeriesBlock:
        """The same rows, series in `order`."""
        return SeriesBlock(
            self.ids[order],
            self.starts[order],
            self.ends[order],
            self.values,
            self.last_time[order],
            None if self.covariates is None else self.covariates.take(order),
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
    covariates: dict[str, np.ndarray] | None = None  # batch key -> (n, ...) encoded covariates

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def concat(cls, parts: Sequence[ScaledWindows]) -> ScaledWindows:
        if len(parts) == 1:
            return parts[0]

        def joined(name: str) -> np.ndarray | None:
            first = getattr(parts[0], name)
            return None if first is None else np.concatenate([getattr(p, name) for p in parts])

        covariates = None
        if parts[0].covariates is not None:
            covariates = {k: np.concatenate([p.covariates[k] for p in parts]) for k in parts[0].covariates}
        return cls(
            ids=joined("ids"),
            last_time=joined("last_time"),
            windows=joined("windows"),
            loc=joined("loc"),
            scale=joined("scale"),
            unseen=sum(p.unseen for p in parts),
            padded=sum(p.padded for p in parts),
            step=joined("step"),
            series=joined("series"),
            covariates=covariates,
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


def torch_runner(net: nn.Module, keys: Sequence[str] = ("x", "x_mask")) -> NetRunner:
    """Run the PyTorch network on the batch keys it reads (`input_keys`), without autograd."""
    keys = tuple(keys)

    def run(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return net({k: torch.from_numpy(batch[k]) for k in keys}).numpy()

    return run


def covariate_encoder(settings: ForecasterSettings) -> CovariateEncoder | None:
    """The saved covariate encoder, or None for a model that reads the target alone."""
    if not settings.covariates:
        return None
    from forecast.data.covariates import CovariateEncoder

    return CovariateEncoder.from_dict(settings.covariates)


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
        if settings.distribution is not None and not settings.quantiles:
            raise ConfigError(
                f"a {settings.distribution} model forecasts quantiles: its settings need `quantiles` "
                "(e.g. [0.1, 0.5, 0.9])"
            )
        self.encoder = covariate_encoder(settings)
        self.keys = input_keys(settings.net_params)  # the batch keys the net reads
        self.runtime = "torch"
        self._run: NetRunner = torch_runner(self.net, self.keys)

    @property
    def output_columns(self) -> list[str]:
        """The columns of every forecast of this model, in order (`forecast_columns`)."""
        return forecast_columns(self.settings, self.intervals)

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

            export_onnx(self.net, self.settings.net_params, path / ONNX)
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
            self.runtime, self._run = "torch", torch_runner(self.net, self.keys)
            return self.runtime
        from forecast.engines.onnx import onnx_runner, onnxruntime_available

        if not onnxruntime_available():
            if runtime == "onnx":
                raise ImportError("runtime=onnx needs the onnxruntime package: pip install onnxruntime")
            self.runtime, self._run = "torch", torch_runner(self.net, self.keys)
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

    def predict(
        self, history: pd.DataFrame, future: pd.DataFrame | None = None, batch_size: int = 4096
    ) -> pd.DataFrame:
        """Forecast the next `horizon` steps of every series in a long history table.

        A model with future-known covariates also needs their values over the horizon: either
        as the next `horizon` rows of each series in `history`, target empty, or in `future`
        (id, time and the future-known columns); see `covariate_block`. A model without
        covariates ignores `future`.
        """
        if self.encoder is None:
            if future is not None:
                log.info("the model reads no covariates: the future table is not used")
            block = SeriesBlock.from_frame(self.validate(history).frame, self.columns)
        else:
            block = self.covariate_block(history, future)
        windows = self.scaled_windows(block)
        if windows.unseen:
            log.warning("%d series were not in training; scaled them by their own history", windows.unseen)
        log_padded(windows.padded, self.settings.input_size)
        return self.forecast_windows(windows, batch_size)

    @property
    def covariate_columns(self) -> dict[str, list[str]]:
        """The covariate columns a forecast input carries, by kind (empty lists: none)."""
        enc = self.encoder
        if enc is None:
            return {"futr": [], "hist": [], "static": [], "calendar": []}
        return {
            "futr": enc.futr_num + enc.futr_cat,
            "hist": enc.hist_num + enc.hist_cat,
            "static": enc.static_num + enc.static_cat,
            "calendar": list(enc.calendar),
        }

    def covariate_block(
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

        kinds, enc = self.covariate_columns, self.encoder
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
        futr = self.covariate_columns["futr"]
        return MissingFutureError(int(short.sum()), named, where, futr, H, c.target_col)

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
        covariates = None
        if self.encoder is not None:
            if block.covariates is None:
                raise ConfigError(
                    "this model reads covariates "
                    f"({', '.join(f'{k}: {v}' for k, v in self.covariate_columns.items() if v)}) "
                    "but its series come without them: only paths that build series with "
                    "Forecaster.covariate_block pass them (predict, the batch forecast, the pyfunc, the "
                    "backtest)"
                )
            covariates = block.covariates.windows(
                positions, positions < block.starts[:, None], self.settings.horizon
            )
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
            covariates=covariates,
        )

    def forecast_windows(self, windows: ScaledWindows, batch_size: int = 4096) -> pd.DataFrame:
        """Run the network and lay the forecast out as a long table in the columns of
        `output_columns` (id, time, y_hat, quantiles, intervals)."""
        s, c = self.settings, self.columns
        preds = self.predict_scaled(
            windows.windows,
            batch_size,
            windows.step,
            windows.series,
            windows.covariates,
            loc=windows.loc,
            scale=windows.scale,
        )  # (n, H, Q) fmt: skip
        preds = preds * windows.scale[:, None, None] + windows.loc[:, None, None]
        if s.distribution == "negbin":  # integer counts, exactly (not 4.9999995 after the scaling)
            preds = np.round(preds)
        check_finite(preds, windows.ids)
        out = pd.DataFrame(
            {
                c.id_col: np.repeat(windows.ids, s.horizon),
                c.time_col: future_timestamps(pd.Series(windows.last_time), s.horizon, s.freq),
            }
        )
        for q, name in enumerate(s.output_columns):  # y_hat first, then the quantiles
            out[name] = preds[:, :, q].reshape(-1)
        if self.intervals is not None:  # around y_hat, as they were calibrated
            bounds = self.intervals.bounds(preds[:, :, 0], windows.scale, windows.windows)
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
        hidden = getattr(self.net, "hidden_size", 128)
        return max(256, 2**24 // max(steps * hidden, 1))

    def predict_scaled(
        self,
        scaled: np.ndarray,
        batch_size: int = 4096,
        step: np.ndarray | None = None,
        series: np.ndarray | None = None,
        covariates: Mapping[str, np.ndarray] | None = None,
        loc: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> np.ndarray:
        """(N, L) scaled windows, NaN where missing -> (N, H, 1 + Q) scaled forecasts.

        Every model returns its forecast columns (`ForecasterSettings.output_columns`): the point
        forecast first (`y_hat`), then its Q quantiles, whatever runs the net (PyTorch or ONNX).
        A distribution model's net outputs parameters, turned here into its exact median and
        quantiles (`distributions.quantiles`); a quantile head's point forecast is its median
        (`median_of_quantiles`). A negbin model also needs `loc` and `scale` (N,), the windows'
        scaling (`ScaledWindows`), since its counts live on the raw scale.

        A model with a learned cycle also needs `step`, each window's absolute step number of
        its first forecast step (`forecast.data.calendar.step_index`), and may take `series`,
        the series codes (`SeriesScaler.codes`; 0 or None: the shared cycle only). A model with
        covariates needs `covariates`: the encoded batch arrays of the windows ("futr"
        (N, L + H, F), "hist" (N, L, P), "static" (N, S), ...; `CovariateRows.windows`).
        """
        observed = ~np.isnan(scaled)
        x = np.where(observed, scaled, np.float32(0.0)).astype(np.float32, copy=False)
        batch: dict[str, np.ndarray] = {"x": x, "x_mask": observed}
        if self.settings.net_params.get("cycle_len"):
            if step is None:
                raise ValueError("this model learns a cycle: predict_scaled needs `step` for every window")
            batch["step"] = np.asarray(step, dtype=np.int64)
            batch["series"] = (
                np.zeros(len(x), np.int64) if series is None else np.asarray(series, dtype=np.int64)
            )
        if self.encoder is not None:
            absent = [k for k in self.keys if k not in batch and k not in (covariates or {})]
            if absent:
                raise ValueError(
                    f"this model reads covariates: predict_scaled needs {absent} for every window"
                )
            batch.update(covariates)
        kind, levels = self.settings.distribution, self.settings.quantiles
        if kind == "negbin" and (loc is None or scale is None):
            raise ValueError("this model forecasts counts (negbin): predict_scaled needs `loc` and `scale`")
        batch_size = min(batch_size, self._max_batch())
        outputs = []
        for i in range(0, len(x), batch_size):
            out = self._run({k: v[i : i + batch_size] for k, v in batch.items()})  # (b, H, Q | P)
            if kind is not None:
                part = slice(i, i + batch_size)
                out = distributions.quantiles(
                    kind,
                    out,
                    [0.5, *levels],  # the exact median, whether or not 0.5 is among the levels
                    None if loc is None else np.asarray(loc)[part],
                    None if scale is None else np.asarray(scale)[part],
                )  # (b, H, 1 + Q)
            elif levels:
                out = np.concatenate([median_of_quantiles(out, levels)[..., None], out], axis=-1)
            outputs.append(out)  # (b, H, 1 + Q): y_hat, then the quantiles
        if not outputs:
            return np.zeros((0, self.settings.horizon, len(self.settings.output_columns)), np.float32)
        return np.concatenate(outputs)
