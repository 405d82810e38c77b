"""Training windows and forecasts see the same covariates: the forecast of the test origin from
`history("test", future=True)` through the saved Forecaster equals the net applied to the data
module's test window (misaligned covariates between training and forecasting are the classic
covariate bug)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from forecast.data import SeriesDataModule
from forecast.models import ForecastModule
from forecast.training import build_forecaster

L, H = 12, 4


def frame_with_covariates(n_series: int = 4, length: int = 48) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for i in range(n_series):
        ds = pd.date_range("2024-01-01", periods=length, freq="h")
        parts.append(
            pd.DataFrame(
                {
                    "unique_id": f"s{i}",
                    "ds": ds,
                    "y": 10 + i + rng.normal(size=length),
                    "price": rng.normal(size=length),
                    "promo": rng.choice(["a", "b", "c"], size=length),
                    "load": rng.normal(size=length),
                    "weather": rng.choice(["sun", "rain"], size=length),
                    "size": float(10 * (i + 1)),
                    "store": ["big", "small"][i % 2],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


KINDS = {
    "none": {},
    "all": {
        "futr_exog": ["price", "promo"],
        "hist_exog": ["load", "weather"],
        "static": ["size", "store"],
        "categorical": ["promo", "weather", "store"],
        "calendar": ["hour", "dayofweek"],
    },
    "calendar": {"calendar": ["hour"]},
    "hist": {"hist_exog": ["load"]},
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_forecast_at_the_test_origin_equals_the_test_window(kind):
    dm = SeriesDataModule(frame=frame_with_covariates(), freq="h", input_size=L, horizon=H, **KINDS[kind])
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
    forecaster = build_forecaster(module, dm)
    forecast = forecaster.predict(dm.history("test", future=True))
    y_hat = forecast.sort_values(["unique_id", "ds"])["y_hat"].to_numpy().reshape(len(dm.ids), H)
    np.testing.assert_allclose(y_hat, pred.numpy(), rtol=1e-4, atol=1e-4)
