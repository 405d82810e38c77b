"""Training and forecasting on one CUDA GPU: the Python API and the training pipeline train there
(float32 and bf16-mixed), and a net moved to the GPU forecasts what it forecasts on the CPU.

Every test here is marked `gpu`: skipped without CUDA (tests/conftest.py), run on a GPU machine
by `bench/gpu.sh` (bench/README.md, GPU).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from model_helpers import tiny_forecaster
from pipeline_helpers import TINY_TRAIN

import forecast
from forecast.data.synthetic import synthetic_long
from forecast.engines.local import forecast_file
from tests.app_runner import run_isolated

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
# As small as tests/test_api.py's: 2 epochs of 4 batches.
TINY = {
    "freq": "h",
    "input_size": 48,
    "horizon": 12,
    "hidden_size": 16,
    "head_hidden": 16,
    "max_epochs": 2,
    "limit_train_batches": 4,
    "intervals": [80],
    "enable_progress_bar": False,
    "seed": 7,
}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """8 hourly series of 400 steps."""
    return synthetic_long(n_series=8, length=400, seed=3)


@pytest.fixture
def exact_float32():
    """float32 arithmetic on the GPU as on the CPU: no TF32 in cuDNN (the LSTM) or in matmuls
    (the heads), both of which would otherwise round to 10-bit mantissas; restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def finite(metrics: dict[str, float]) -> bool:
    return bool(metrics) and all(math.isfinite(v) for v in metrics.values())


@pytest.mark.slow
@pytest.mark.parametrize("segment_len", [1, 24], ids=["seg1", "seg24"])
def test_the_api_trains_on_one_gpu(frame, segment_len):
    torch.cuda.reset_peak_memory_stats()
    model = forecast.Model(**TINY, segment_len=segment_len, accelerator="gpu", devices=1).fit(frame)
    assert torch.cuda.max_memory_allocated() > 0, "nothing was put on the GPU"
    assert finite(model.metrics_) and {"val/loss", "test/mae"} <= model.metrics_.keys()
    # The packaged model serves anywhere: its weights come back to the CPU, in float32.
    weights = list(model.forecaster_.net.parameters())
    assert {w.device.type for w in weights} == {"cpu"} and {w.dtype for w in weights} == {torch.float32}
    out = model.predict()
    assert len(out) == 8 * 12 and np.isfinite(out[["y_hat", "y_hat_lo_80", "y_hat_hi_80"]].to_numpy()).all()


@pytest.mark.slow
def test_bf16_mixed_training_gives_finite_metrics_and_float32_weights(frame):
    model = forecast.Model(**TINY, segment_len=24, accelerator="gpu", precision="bf16-mixed").fit(frame)
    assert finite(model.metrics_), model.metrics_
    # Mixed precision keeps float32 master weights: the model saved and served is float32.
    assert {w.dtype for w in model.forecaster_.net.parameters()} == {torch.float32}
    assert np.isfinite(model.predict()["y_hat"].to_numpy()).all()


@pytest.mark.parametrize(
    "options",
    [{"segment_len": 1}, {"segment_len": 4}, {"loss": "quantile", "quantiles": [0.1, 0.5, 0.9]}],
    ids=["seg1", "seg4", "quantiles"],
)
def test_a_net_on_the_gpu_forecasts_what_it_forecasts_on_the_cpu(frame, exact_float32, options):
    forecaster = tiny_forecaster(frame, input_size=48, horizon=12, intervals=[80], **options)
    on_cpu = forecaster.predict(frame)
    forecaster.net.to(CUDA)
    on_gpu = forecaster.predict(frame)
    assert next(forecaster.net.parameters()).device.type == "cuda"
    assert on_gpu.columns.tolist() == on_cpu.columns.tolist()
    pd.testing.assert_frame_equal(on_gpu, on_cpu, check_exact=False, rtol=1e-4, atol=1e-4)


def test_the_streamed_batch_forecast_runs_the_net_on_the_gpu(frame, tmp_path, exact_float32):
    """forecast.engines.local (what pipelines/batch_forecast.py runs) with the net on the GPU:
    the same file as on the CPU, chunk edges and batches included."""
    source = tmp_path / "history.parquet"
    frame.to_parquet(source)
    forecaster = tiny_forecaster(frame, input_size=48, horizon=12, segment_len=1)
    options = {"chunk_rows": 1000, "batch_size": 3, "progress": "none"}
    forecast_file(forecaster, source, tmp_path / "cpu.parquet", **options)
    forecaster.net.to(CUDA)
    torch.cuda.reset_peak_memory_stats()
    summary = forecast_file(forecaster, source, tmp_path / "gpu.parquet", **options)
    assert summary.series == 8 and torch.cuda.max_memory_allocated() > 0
    on_cpu, on_gpu = (pd.read_parquet(tmp_path / f"{d}.parquet") for d in ("cpu", "gpu"))
    pd.testing.assert_frame_equal(on_gpu, on_cpu, check_exact=False, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_pipeline_trains_with_trainer_gpu_in_bf16_and_the_model_serves_on_the_cpu(
    tmp_path, history, monkeypatch, capsys, isolated_mlflow
):
    args = [
        *TINY_TRAIN,
        f"data.path={history}",
        "trainer=gpu",
        "trainer.precision=bf16-mixed",
        "register=true",
        "registry.name=gpu-bf16",
    ]
    result = run_isolated("train.py", args, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-3000:]
    client = MlflowClient()
    run = client.get_run(client.get_model_version_by_alias("gpu-bf16", "champion").run_id)
    params, metrics = run.data.params, run.data.metrics
    assert (params["trainer/accelerator"], params["trainer/precision"]) == ("gpu", "bf16-mixed")
    assert finite(metrics) and "val/loss" in metrics
    model = forecast.Model.load("models:/gpu-bf16@champion", root_dir=tmp_path)
    out = model.predict(pd.read_parquet(history))
    assert len(out) == 6 * 6 and np.isfinite(out["y_hat"].to_numpy()).all()
