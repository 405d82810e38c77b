"""Conformity scores of a forecaster on held-out windows: what `forecast.intervals.calibrate`
turns into conformal intervals at training time (the validation windows)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from forecast.forecaster import Forecaster
from forecast.intervals import check_scale, score_units
from forecast.models.inputs import COVARIATE_KEYS

if TYPE_CHECKING:
    from forecast.data.windows import WindowDataset


def window_residuals(
    forecaster: Forecaster, dataset: WindowDataset, batch_size: int = 4096, scale: str = "series"
) -> np.ndarray:
    """(n_windows, H) scores |y - y_hat| / unit of the forecaster on a split's windows, NaN where
    the target is missing: the windows come scaled by the same training scaler the model keeps."""
    scale = check_scale(scale)
    point = forecaster.settings.point_index
    parts = []
    for start in range(0, len(dataset), batch_size):
        batch = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
        x = np.where(batch["x_mask"].numpy(), batch["x"].numpy(), np.float32(np.nan))
        step, series = (batch[k].numpy() if k in batch else None for k in ("step", "series"))
        covariates = {k: batch[k].numpy() for k in COVARIATE_KEYS if k in batch}
        loc, spread = batch["loc"].numpy(), batch["scale"].numpy()  # (B,): a negbin model's counts need them
        pred = forecaster.predict_scaled(x, batch_size, step, series, covariates, loc=loc, scale=spread)
        pred = pred[:, :, point]  # (B, H) y_hat: the median of a quantile or distribution model
        err = np.abs(batch["y"].numpy().astype(np.float64) - pred) / np.reshape(
            score_units(scale, x), (-1, 1)
        )
        parts.append(np.where(batch["y_mask"].numpy(), err, np.nan))
    if not parts:
        return np.zeros((0, forecaster.settings.horizon))
    return np.concatenate(parts)
