"""A trained model as plain files (weights, scaler, settings) that forecasts raw long tables.

`Forecaster` is the public object: it loads and saves the files and forecasts, delegating each
step to its own module: the settings and output columns (`forecast.settings`), the covariate
input (`forecast.covariate_inputs`), scaling (`forecast.scaled_inputs`), running the network
(`forecast.runtimes`, `forecast.inference`) and the output table (`forecast.layout`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file
from torch import nn

from forecast.blocks import ScaledWindows, SeriesBlock
from forecast.covariate_inputs import CovariateInputs, covariate_columns, covariate_encoder
from forecast.data.scaling import SeriesScaler
from forecast.data.validation import ColumnSpec, ValidatedFrame, validate_long_frame
from forecast.errors import ConfigError, ModelNotFoundError
from forecast.inference import max_batch, predict_scaled
from forecast.intervals import INTERVALS, ConformalIntervals
from forecast.layout import check_finite, forecast_table
from forecast.models import distributions
from forecast.models.inputs import input_keys
from forecast.models.registry import build_net
from forecast.runtimes import NetRunner, Runtime, choose_runner, torch_runner
from forecast.scaled_inputs import scaled_windows
from forecast.settings import (
    ONNX,
    SCALER,
    SETTINGS,
    WEIGHTS,
    ForecasterSettings,
    forecast_columns,
    read_settings,
)
from forecast.short_history import SHORT_HISTORY, ShortHistoryBlend

__all__ = ["Forecaster", "ForecasterSettings", "Runtime"]

log = logging.getLogger(__name__)


def log_padded(padded: int, input_size: int) -> None:
    """Say how many series were forecast from a padded (shorter than usual) input window."""
    if padded:
        log.info(
            "%d series were shorter than the input window (%d steps): padded in front, the padding "
            "masked as missing",
            padded,
            input_size,
        )


class Forecaster:
    """Network + scaler + settings: forecasts the next `horizon` steps of any series.

    `runtime` picks what runs the network: `torch`, `onnx` (ONNX Runtime on the `model.onnx`
    copy saved with `export=["onnx"]`), or `auto`: ONNX Runtime when the copy and the
    `onnxruntime` package are both there (it measured faster, see bench/README.md), else PyTorch.
    `export` lists the serving copies `save` writes by default (only "onnx" exists).
    `intervals`: conformal intervals around the point forecast (`forecast.intervals`), written
    as `y_hat_lo_80`, `y_hat_hi_80`, ... beside it; applied after the network, in any runtime.
    `short_history`: the blend of a short (padded) input's forecast with seasonal naive
    (`forecast.short_history`), applied in `predict_scaled`; None: the network's forecast alone.
    """

    def __init__(
        self,
        net: nn.Module,
        scaler: SeriesScaler,
        settings: ForecasterSettings,
        export: Sequence[str] = (),
        intervals: ConformalIntervals | None = None,
        short_history: ShortHistoryBlend | None = None,
    ):
        self.net = net.eval()
        self.scaler = scaler
        self.settings = settings
        self.intervals = intervals
        self.short_history = short_history
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
        """Write weights (safetensors), scaler (Parquet), settings, intervals and the short-history
        blend (JSON): no pickles.

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
        if self.short_history is not None:
            self.short_history.save(path)
        formats = self.export if export is None else tuple(export)
        unknown = set(formats) - {"onnx"}
        if unknown:
            raise ConfigError(f"unknown export format(s) {sorted(unknown)}; the only one is 'onnx'")
        if "onnx" in formats:
            from forecast.onnx import export_onnx

            export_onnx(self.net, self.settings.net_params, path / ONNX)
        return path

    @classmethod
    def load(cls, path: str | Path, runtime: Runtime = "torch") -> Forecaster:
        """Rebuild from the files written by `save`; `runtime` as in the class docstring."""
        path = Path(path)
        settings = read_settings(path)
        net = build_net(settings.net, settings.net_params)
        net.load_state_dict(load_file(str(path / WEIGHTS)))
        scaler = SeriesScaler.from_frame(pd.read_parquet(path / SCALER), settings.scaler)
        intervals = ConformalIntervals.load(path)  # None for models saved without (older ones too)
        if intervals is not None and intervals.quantiles.shape[1] != settings.horizon:
            raise ModelNotFoundError(
                f"model at {path} is broken: its {INTERVALS} has {intervals.quantiles.shape[1]} horizon "
                f"steps, the model {settings.horizon}; recalibrate it or remove the file"
            )
        short_history = ShortHistoryBlend.load(path)  # None for models saved without (older ones too)
        if short_history is not None and short_history.input_size != settings.input_size:
            raise ModelNotFoundError(
                f"model at {path} is broken: its {SHORT_HISTORY} is for input windows of "
                f"{short_history.input_size} steps, the model's are {settings.input_size}; remove the file"
            )
        forecaster = cls(net, scaler, settings, intervals=intervals, short_history=short_history)
        forecaster.use_runtime(runtime, path)
        return forecaster

    def use_runtime(self, runtime: Runtime, path: str | Path | None = None) -> str:
        """Switch what runs the network (see the class docstring); returns the one chosen."""
        self.runtime, self._run = choose_runner(runtime, path, self.net, self.keys)
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
        return covariate_columns(self.encoder)

    def covariate_block(
        self, table: pd.DataFrame, future: pd.DataFrame | None = None, need_future: bool = True
    ) -> SeriesBlock:
        """Validate a long table with covariates and encode them: the series ready to forecast
        (future rows, the `future` table and `need_future`: `CovariateInputs.block`)."""
        return CovariateInputs(self.settings, self.columns, self.encoder).block(table, future, need_future)

    def scaled_windows(self, block: SeriesBlock) -> ScaledWindows:
        """The last `input_size` values of every series, scaled, padded in front when short
        (`forecast.scaled_inputs.scaled_windows`)."""
        return scaled_windows(block, self.settings, self.scaler, self.encoder)

    def forecast_windows(self, windows: ScaledWindows, batch_size: int = 4096) -> pd.DataFrame:
        """Run the network and lay the forecast out as a long table in the columns of
        `output_columns` (id, time, y_hat, quantiles, intervals)."""
        s = self.settings
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
        if s.distribution is not None and distributions.get(s.distribution).discrete:
            # integer counts, exactly (not 4.9999995 after the scaling)
            preds = np.round(preds)
        check_finite(preds, windows.ids)
        return forecast_table(preds, windows, s, self.columns, self.intervals)

    def predict_scaled(
        self,
        scaled: np.ndarray,
        batch_size: int = 4096,
        step: np.ndarray | None = None,
        series: np.ndarray | None = None,
        covariates: Mapping[str, np.ndarray] | None = None,
        loc: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        *,
        blend: bool = True,
    ) -> np.ndarray:
        """(N, L) scaled windows, NaN where missing -> (N, H, 1 + Q) scaled forecasts: `y_hat`,
        then the quantiles, whatever runs the net. What a model with a learned cycle, covariates
        or a negbin head also needs: `forecast.inference.predict_scaled`.

        A window padded in front (a series shorter than `input_size`) gets the short-history
        blend with seasonal naive when the model has one (`forecast.short_history`; `blend=False`:
        the network's forecast alone); full windows are the network's forecast, always.
        """
        preds = predict_scaled(
            scaled,
            batch_size,
            step,
            series,
            covariates,
            loc,
            scale,
            run=self._run,
            settings=self.settings,
            keys=self.keys,
            reads_covariates=self.encoder is not None,
            batch_cap=max_batch(self.net, self.settings.input_size),
        )
        if not blend or self.short_history is None:
            return preds
        floor = None
        s = self.settings
        if s.distribution is not None and distributions.get(s.distribution).discrete and loc is not None:
            floor = -np.asarray(loc, np.float64) / np.asarray(scale, np.float64)  # a count of 0, scaled
        return self.short_history.apply(preds, np.asarray(scaled), floor)
