"""The one contract every model config keeps, with every covariate kind and every head.

Each fit: the real `conf/model/<name>.yaml` (shrunk) trains on generated hourly series whose
target follows a daily cycle and its covariates (`covariate_helpers.covariate_frame`), then
forecasts the validation origin through the Forecaster (PyTorch) and its ONNX copy, which agree
to 1e-5 on the scaled outputs, and beats seasonal naive there. Every config x every head fits
with every covariate kind at once (future-known, past-only and static, numeric and
categorical); every kind alone fits with every config's point head, and with no covariates
too. The pyfunc (MLflow's loader, a fresh model object) gives the Forecaster's numbers for
every config and every head. The full product (config x kind x head, 120 fits) is
`FORECAST_CONTRACT=full`; the suite runs the three projections above (the time budget).
"""

from __future__ import annotations

import os
import warnings
from functools import cache

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from covariate_helpers import MODEL_CONF, covariate_frame, model_config

from forecast.data import SeriesDataModule
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule
from forecast.models.distributions import DISTRIBUTIONS
from forecast.models.encoders import ENCODERS
from forecast.onnx import onnx_export_available
from forecast.tracking import pyfunc
from forecast.training import build_forecaster

MODELS = sorted(p.stem for p in MODEL_CONF.glob("*.yaml"))
L, H, SEASON = 24, 6, 24
# Covariate kinds as data-config keywords (futr and static with a categorical column each).
ALL = {
    "futr_exog": ["price", "promo"],
    "hist_exog": ["load", "weather"],
    "static": ["size", "store"],
    "categorical": ["promo", "weather", "store"],
}
KINDS = {
    "none": {},
    "all": ALL,
    "futr": {"futr_exog": ["price", "promo"], "categorical": ["promo"]},
    "hist": {"hist_exog": ["load", "weather"], "categorical": ["weather"]},
    "static": {"static": ["size", "store"], "categorical": ["store"]},
}
HEADS = {
    "point": {"loss": "mae"},
    "quantile": {"loss": "quantile", "quantiles": [0.1, 0.5, 0.9]},
    **{name: {"loss": name, "quantiles": [0.1, 0.5, 0.9]} for name in DISTRIBUTIONS},
}
COUNTS = {name for name, distribution in DISTRIBUTIONS.items() if distribution.discrete}


@cache
def _frame(counts: bool) -> pd.DataFrame:
    frame = covariate_frame(n_series=4, length=24 * 14, seed=1)
    if counts:  # a discrete head (negbin) models counts: non-negative integers
        frame["y"] = np.round(np.clip(frame["y"] - 5.0, 0.0, None))
    return frame


def _fit(model: str, kind: str, head: str, steps: int = 100) -> tuple[Forecaster, SeriesDataModule]:
    dm = SeriesDataModule(
        frame=_frame(head in COUNTS), freq="h", input_size=L, horizon=H, val_size=H, test_size=0,
        batch_size=64, season_length=SEASON, **KINDS[kind],
    )  # fmt: skip
    dm.setup()
    params = model_config(model)
    params.pop("_target_")
    params.update(input_size=L, horizon=H, hidden_size=12, head_hidden=24, segment_len=4, attention_dim=8)
    params.update(HEADS[head], lr=1e-2)
    torch.manual_seed(0)
    module = ForecastModule(**params, covariates=None if dm.covariates is None else dm.covariates.dims)
    optimizer = module.configure_optimizers()
    module.train()
    done = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        while done < steps:
            for batch in dm.train_dataloader():
                optimizer.zero_grad()
                module.training_step(batch, done).backward()
                optimizer.step()
                done += 1
                if done == steps:
                    break
    return build_forecaster(module.eval(), dm), dm


def _truth_and_naive(dm: SeriesDataModule, forecast: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The validation targets of the forecast's rows and the seasonal-naive forecast of them."""
    full = dm.history(None)
    truth = forecast[["unique_id", "ds"]].merge(full, how="left")["y"].to_numpy()
    lagged = full.assign(ds=full["ds"] + pd.Timedelta(hours=SEASON))
    naive = forecast[["unique_id", "ds"]].merge(lagged, how="left")["y"].to_numpy()
    return truth, naive


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets gain nothing from a second thread, and lose 10-80x when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _combinations() -> list[tuple[str, str, str]]:
    if os.environ.get("FORECAST_CONTRACT") == "full":
        return [(m, k, h) for m in MODELS for k in KINDS if k != "all" for h in HEADS]
    every_head = [(m, "all", h) for m in MODELS for h in HEADS]
    every_kind = [(m, k, "point") for m in MODELS for k in KINDS if k != "all"]
    return every_head + every_kind


@pytest.mark.slow  # 54 fits of 100 steps: make test, not the inner loop
@pytest.mark.parametrize(("model", "kind", "head"), _combinations())
def test_every_model_kind_and_head_fits_serves_and_beats_seasonal_naive(model, kind, head, tmp_path):
    forecaster, dm = _fit(model, kind, head)
    history = dm.history("val", future=True)
    forecast = forecaster.predict(history)
    columns = forecaster.settings.output_columns
    assert list(forecast.columns[2 : 2 + len(columns)]) == columns and columns[0] == "y_hat"
    quantiles = forecaster.settings.quantile_columns
    if len(quantiles) > 1:  # quantiles never cross, whatever the head
        values = forecast[quantiles].to_numpy()
        assert (np.diff(values, axis=1) >= -1e-6).all()
    point = forecast["y_hat"].to_numpy()
    truth, naive = _truth_and_naive(dm, forecast)
    mae, naive_mae = np.abs(point - truth).mean(), np.abs(naive - truth).mean()
    assert mae < naive_mae, (
        f"{model}/{kind}/{head}: MAE {mae:.3f} does not beat seasonal naive {naive_mae:.3f}"
    )
    if not onnx_export_available():
        return
    saved = forecaster.save(tmp_path / "model", export=["onnx"])
    onnx = Forecaster.load(saved, runtime="onnx")
    scale = np.repeat(dm.scaler.stats.loc[forecast["unique_id"].unique(), "scale"].to_numpy(), H)
    for col in columns:
        diff = np.abs(onnx.predict(history)[col].to_numpy() - forecast[col].to_numpy()) / scale
        assert diff.max() <= 1e-5, f"{model}/{kind}/{head}: ONNX differs by {diff.max():.2e} in {col}"


@pytest.mark.slow  # an MLflow model saved and loaded per config and head
@pytest.mark.parametrize(
    ("model", "head"), [(m, "point") for m in MODELS] + [("lstm", h) for h in HEADS if h != "point"]
)
def test_pyfunc_gives_the_forecasters_numbers(model, head, tmp_path):
    forecaster, dm = _fit(model, "all", head, steps=5)
    history = dm.history("val", future=True)
    data = forecaster.save(tmp_path / "forecaster")
    # the requirements the product logs (forecast.tracking.pyfunc): MLflow would otherwise infer
    # them by loading the model in a subprocess, 4 s a model
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        loader_module=pyfunc.__name__,
        data_path=str(data),
        pip_requirements=pyfunc._requirements(),
    )
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    pd.testing.assert_frame_equal(loaded.predict(history), forecaster.predict(history), check_dtype=False)


@pytest.mark.parametrize("cell", ENCODERS)
def test_onnx_export_with_dropout_agrees_and_leaves_the_net_in_eval(cell, tmp_path):
    """The exporter restores the mode of what it traced: the net must stay in eval (no dropout in
    the forecasts after a save), and the 1e-5 check must compare eval with eval."""
    pytest.importorskip("onnxruntime")
    from forecast.models import build_net
    from forecast.onnx import export_onnx, probe_batch

    params = {"input_size": L, "horizon": H, "cell": cell, "hidden_size": 16, "num_layers": 2}
    params.update(segment_len=6, head_hidden=16, window_norm=True, dropout=0.3)
    net = build_net("recurrent", params)
    export_onnx(net, params, tmp_path / "net.onnx")  # raises when the copy differs by > 1e-5
    assert not net.training
    batch = {k: torch.from_numpy(v) for k, v in probe_batch(params).items()}
    with torch.no_grad():
        assert torch.equal(net(batch), net(batch))
