"""A block of series as the network's input: the last `input_size` values of each, scaled,
padded in front when short, with their cycle steps and covariate windows (`ScaledWindows`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from forecast.blocks import ScaledWindows, SeriesBlock
from forecast.covariate_inputs import covariate_columns
from forecast.data.calendar import step_index
from forecast.data.scaling import SeriesScaler, segment_stats
from forecast.data.validation import DataValidationError, _examples
from forecast.errors import ConfigError
from forecast.settings import ForecasterSettings

if TYPE_CHECKING:
    from forecast.data.covariate_encoder import CovariateEncoder


def scaled_windows(
    block: SeriesBlock, settings: ForecasterSettings, scaler: SeriesScaler, encoder: CovariateEncoder | None
) -> ScaledWindows:
    """The last `input_size` values of every series, scaled: known series by the training
    scaler, series the model never saw by their own history (the only data there is).

    A series shorter than `input_size` is padded in front with missing (masked) steps, as
    training pads short series; one with no observed value in its window has nothing to
    forecast from and is a DataValidationError naming it.
    """
    L = settings.input_size
    positions = (block.ends - L)[:, None] + np.arange(L)  # (n, L)
    short = block.ends - block.starts < L
    if short.any():
        window = block.values[np.maximum(positions, 0)]
        window[positions < block.starts[:, None]] = np.nan
    else:
        window = block.values[positions]
    if settings.missing == "mask":  # otherwise validation left no NaN and no empty series
        blind = np.isnan(window).all(axis=1)
        if blind.any():
            raise DataValidationError(
                f"{int(blind.sum())} series have no observed value in their last {L} steps, the "
                f"model's input window: {_examples(block.ids[blind])}; there is nothing to "
                "forecast them from: remove them from the input or give them recent values"
            )
    loc, scale, known = scaler.lookup(block.ids)
    unseen = np.flatnonzero(~known)
    if len(unseen):
        loc[unseen], scale[unseen] = segment_stats(
            block.values, block.starts[unseen], block.ends[unseen], scaler.kind
        )
    scaled = (window - loc[:, None]) / scale[:, None]
    step = series = None
    if settings.net_params.get("cycle_len"):
        step = step_index(block.last_time, settings.freq) + 1
        series = scaler.codes(block.ids)
    covariates = None
    if encoder is not None:
        if block.covariates is None:
            raise ConfigError(
                "this model reads covariates "
                f"({', '.join(f'{k}: {v}' for k, v in covariate_columns(encoder).items() if v)}) "
                "but its series come without them: only paths that build series with "
                "Forecaster.covariate_block pass them (predict, the batch forecast, the pyfunc, the "
                "backtest)"
            )
        covariates = block.covariates.windows(positions, positions < block.starts[:, None], settings.horizon)
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
