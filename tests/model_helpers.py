"""Tiny untrained models for the tests that compare code paths, not accuracy: built in a few
milliseconds, seeded, packaged with the data module's scaler (and intervals when asked)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch

from forecast.data import SeriesDataModule
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule
from forecast.training import build_forecaster

L, H = 24, 6  # the default input window and horizon of the tiny models


def tiny_forecaster(
    frame: pd.DataFrame,
    *,
    input_size: int = L,
    horizon: int = H,
    seed: int = 0,
    data: dict | None = None,
    intervals: Sequence[int] = (),
    interval_scale: str = "window",
    tweak: Callable[[ForecastModule, SeriesDataModule], None] | None = None,
    **model,
) -> Forecaster:
    """An untrained (seeded) net of 8 units on `frame` (hourly unless `data` says otherwise).

    `data`: more SeriesDataModule arguments (freq, val_size, missing, covariates); `model`: more
    ForecastModule arguments (segment_len 4 unless given); `tweak(module, dm)` changes the
    weights before packaging, under no_grad (a visible cycle, larger weights).
    """
    data = {"freq": "h", **(data or {})}
    torch.manual_seed(seed)
    dm = SeriesDataModule(frame=frame, input_size=input_size, horizon=horizon, **data)
    dm.setup()
    params = {"hidden_size": 8, "head_hidden": 8, "segment_len": 4, **model}
    module = ForecastModule(input_size=input_size, horizon=horizon, **params)
    if tweak is not None:
        with torch.no_grad():
            tweak(module, dm)
    return build_forecaster(module, dm, intervals, interval_scale)


def quiet_trainer(max_steps: int, **options):
    """A Lightning Trainer on the CPU for `max_steps` without logger, checkpoints, progress bar or
    model summary; `options`: more Trainer arguments (validation batches)."""
    import lightning

    return lightning.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )
