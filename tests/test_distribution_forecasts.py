"""Distribution models end to end: trained by likelihood, forecast as their median (`y_hat`) and
quantile columns through every runtime (PyTorch, ONNX), with intervals, the pyfunc and the backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from model_helpers import quiet_trainer

from forecast.backtest import backtest_frame
from forecast.data import SeriesDataModule
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule
from forecast.models.distributions import DISTRIBUTIONS
from forecast.onnx import onnx_export_available
from forecast.tracking.pyfunc import ForecastPyfunc
from forecast.training import build_forecaster

COLUMNS = ["y_hat_q10", "y_hat_q50", "y_hat_q90"]
needs_onnx = pytest.mark.skipif(not onnx_export_available(), reason="needs onnx and onnxruntime")


def _data(frame: pd.DataFrame) -> SeriesDataModule:
    dm = SeriesDataModule(frame=frame, freq="h", input_size=24, horizon=6, batch_size=32)
    dm.setup()
    return dm


def _module(loss: str) -> ForecastModule:
    return ForecastModule(input_size=24, horizon=6, hidden_size=8, head_hidden=16, segment_len=6, loss=loss)


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """The same series as counts: Poisson draws around a positive level that follows y."""
    rng = np.random.default_rng(0)
    level = np.exp(0.3 * (frame["y"] - frame["y"].mean()) / frame["y"].std()) * 5.0
    return frame.assign(y=rng.poisson(level).astype(np.float64))


@pytest.fixture(scope="module")
def student_t() -> tuple[pd.DataFrame, SeriesDataModule, ForecastModule]:
    """A Student-t model trained 40 steps on 6 tiny series."""
    from forecast.data.synthetic import synthetic_long

    frame = synthetic_long(n_series=6, length=200, seed=1)
    torch.manual_seed(0)
    dm = _data(frame)
    module = _module("student_t")
    trainer = quiet_trainer(40, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert all(np.isfinite(float(v)) for v in trainer.callback_metrics.values())
    assert {"val/crps", "val/coverage_80"} <= set(trainer.callback_metrics)
    return frame, dm, module


def test_a_trained_student_t_model_writes_ordered_quantile_columns(student_t):
    frame, dm, module = student_t
    forecaster = build_forecaster(module, dm, intervals=[80])
    assert forecaster.settings.quantiles == [0.1, 0.5, 0.9]
    assert forecaster.settings.net_params["output"] == "student_t"
    out = forecaster.predict(frame)
    assert list(out.columns[:6]) == ["unique_id", "ds", "y_hat", *COLUMNS]
    q = out[COLUMNS].to_numpy()
    assert np.isfinite(q).all() and (np.diff(q, axis=1) > 0).all()  # a continuous law: strictly
    np.testing.assert_array_equal(out["y_hat"], out["y_hat_q50"])  # the point forecast: the median
    # Conformal intervals sit around the point column, the median.
    assert (out["y_hat_lo_80"] <= out["y_hat"]).all() and (out["y_hat"] <= out["y_hat_hi_80"]).all()
    # What the MLflow pyfunc serves: the same table.
    pd.testing.assert_frame_equal(ForecastPyfunc(forecaster).predict(frame), out)


@needs_onnx
def test_the_onnx_copy_forecasts_what_pytorch_does(student_t, tmp_path):
    frame, dm, module = student_t
    forecaster = build_forecaster(module, dm)
    path = forecaster.save(tmp_path / "model", export=["onnx"])
    onnx = Forecaster.load(path, runtime="onnx")
    assert onnx.runtime == "onnx"
    torch_out, onnx_out = forecaster.predict(frame), onnx.predict(frame)
    assert list(onnx_out.columns) == ["unique_id", "ds", "y_hat", *COLUMNS]
    pd.testing.assert_frame_equal(onnx_out, torch_out, check_exact=False, rtol=1e-5, atol=1e-5)


@needs_onnx
@pytest.mark.parametrize("loss", DISTRIBUTIONS)
def test_every_distribution_agrees_across_runtimes_on_the_scaled_quantiles(loss, tmp_path):
    from forecast.blocks import SeriesBlock
    from forecast.data.synthetic import synthetic_long

    frame = synthetic_long(n_series=6, length=120, seed=2)
    if DISTRIBUTIONS[loss].discrete:
        frame = _counts(frame)
    torch.manual_seed(1)
    forecaster = build_forecaster(_module(loss), _data(frame))
    onnx = Forecaster.load(forecaster.save(tmp_path / loss, export=["onnx"]), runtime="onnx")
    block = SeriesBlock.from_frame(forecaster.validate(frame).frame, forecaster.columns)
    w = forecaster.scaled_windows(block)
    args = (w.windows, 4096, w.step, w.series, w.covariates)
    got = onnx.predict_scaled(*args, loc=w.loc, scale=w.scale)
    expected = forecaster.predict_scaled(*args, loc=w.loc, scale=w.scale)
    assert got.shape == expected.shape == (6, 6, 4)  # the median (y_hat), then the 3 quantiles
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert (np.diff(expected[..., 1:], axis=-1) >= 0).all()
    np.testing.assert_array_equal(expected[..., 0], expected[..., 2])  # 0.5 is among the levels
    if loss == "negbin":
        raw = forecaster.predict(frame)[COLUMNS].to_numpy()
        np.testing.assert_array_equal(raw, np.round(raw))  # counts
        assert (raw >= 0).all()
        with pytest.raises(ValueError, match="needs `loc` and `scale`"):
            forecaster.predict_scaled(w.windows)


def test_a_negbin_model_backtests_on_integer_quantiles():
    from forecast.data.synthetic import synthetic_long

    frame = _counts(synthetic_long(n_series=4, length=120, seed=3))
    torch.manual_seed(2)
    forecaster = build_forecaster(_module("negbin"), _data(frame), intervals=[80])
    result = backtest_frame(forecaster, frame, n_windows=3, season_length=24)
    assert np.isfinite(result.metrics["pinball"]) and 0 <= result.metrics["coverage"] <= 1


def test_a_distribution_model_without_quantile_levels_is_refused(student_t):
    from dataclasses import replace

    from forecast.errors import ConfigError

    frame, dm, module = student_t
    forecaster = build_forecaster(module, dm)
    with pytest.raises(ConfigError, match="student_t model forecasts quantiles"):
        Forecaster(forecaster.net, forecaster.scaler, replace(forecaster.settings, quantiles=[]))
