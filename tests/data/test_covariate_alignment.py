"""Training windows and forecasts see the same covariates: the forecast of the test origin from
`history("test", future=True)` through the saved Forecaster equals the net applied to the data
module's test window (covariates misaligned between training and forecasting are the classic
covariate bug)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from covariate_helpers import ALL, KINDS, covariate_frame

from forecast.data import SeriesDataModule
from forecast.models import ForecastModule
from forecast.training import build_forecaster

L, H = 12, 4


@pytest.mark.parametrize("kind", ["none", *KINDS, "all"])
def test_forecast_at_the_test_origin_equals_the_test_window(kind):
    covariates = {"none": {}, "all": ALL, **KINDS}[kind]
    dm = SeriesDataModule(
        frame=covariate_frame(n_series=4, length=48), freq="h", input_size=L, horizon=H, **covariates
    )
    dm.setup()
    dims = None if dm.covariates is None else dm.covariates.dims
    torch.manual_seed(0)
    module = ForecastModule(input_size=L, horizon=H, hidden_size=8, head_hidden=8, covariates=dims)
    with torch.no_grad():  # larger weights than the init's, so every input visibly moves the output
        for p in module.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    module.eval()
    dataset = dm.datasets["test"]
    batch = dataset.__getitems__(list(range(len(dataset))))  # one test window per series
    with torch.no_grad():
        pred = module(batch)[..., 0] * batch["scale"][:, None] + batch["loc"][:, None]  # (B, H)
    forecast = build_forecaster(module, dm).predict(dm.history("test", future=True))
    y_hat = forecast.sort_values(["unique_id", "ds"])["y_hat"].to_numpy().reshape(len(dm.ids), H)
    np.testing.assert_allclose(y_hat, pred.numpy(), rtol=1e-4, atol=1e-4)
