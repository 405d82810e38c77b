"""The ONNX serving copy: written only when it agrees with PyTorch, used by runtime=auto/onnx."""

import numpy as np
import pandas as pd
import pytest
import torch

from forecast.data import SeriesDataModule, synthetic_long
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule
from forecast.settings import ONNX
from forecast.training import build_forecaster

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

L, H = 48, 12


def forecaster_for(frame, **model) -> Forecaster:
    torch.manual_seed(0)
    dm = SeriesDataModule(frame=frame, freq="h", input_size=L, horizon=H)
    dm.setup()
    return build_forecaster(
        ForecastModule(input_size=L, horizon=H, hidden_size=16, head_hidden=16, **model), dm
    )


@pytest.mark.parametrize(
    "model",
    [
        {"segment_len": 1},
        {"segment_len": 24},
        {"segment_len": 5, "window_norm": True, "loss": "quantile", "quantiles": [0.1, 0.5, 0.9]},
        {"segment_len": 12, "cell": "gru", "bidirectional": True},
        {"segment_len": 24, "window_norm": "last", "linear_skip": True},
        {"segment_len": 5, "decoder": "segments", "loss": "quantile", "quantiles": [0.1, 0.5, 0.9]},
    ],
    ids=["classic", "segments", "revin-quantiles-ragged", "bigru", "last-value-norm", "segment-decoder"],
)
def test_onnx_copy_agrees_with_pytorch_to_1e5(model, tmp_path):
    frame = synthetic_long(n_series=5, length=120, seed=4)
    f = forecaster_for(frame, **model)
    path = f.save(tmp_path / "m", export=["onnx"])
    assert (path / ONNX).is_file()
    torch_path = Forecaster.load(path, runtime="torch")
    onnx_path = Forecaster.load(path, runtime="auto")
    assert (torch_path.runtime, onnx_path.runtime) == ("torch", "onnx")
    history = frame.copy()
    history.loc[[30, 250], "y"] = np.nan  # masked inputs go through the graph too
    for forecaster in (torch_path, onnx_path):
        forecaster.settings.missing = "mask"
    expected, got = torch_path.predict(history), onnx_path.predict(history)
    pd.testing.assert_frame_equal(got.iloc[:, :2], expected.iloc[:, :2])
    scale = np.abs(expected.iloc[:, 2:].to_numpy()).max()
    np.testing.assert_allclose(got.iloc[:, 2:], expected.iloc[:, 2:], rtol=1e-5, atol=1e-5 * scale)


def test_exporting_is_opt_in_and_runtime_falls_back(tmp_path):
    f = forecaster_for(synthetic_long(n_series=3, length=100, seed=1), segment_len=24)
    plain = f.save(tmp_path / "plain")
    assert not (plain / ONNX).exists()
    assert Forecaster.load(plain, runtime="auto").runtime == "torch"
    with pytest.raises(FileNotFoundError, match="export=\\['onnx'\\]"):
        Forecaster.load(plain, runtime="onnx")
    f.export = ("onnx",)  # what log_forecaster's save() then writes
    assert (f.save(tmp_path / "with") / ONNX).is_file()
    with pytest.raises(ValueError, match="unknown export"):
        f.save(tmp_path / "x", export=["torchscript"])


def test_training_export_setting(monkeypatch, caplog):
    """`export: auto` logs the ONNX copy only when it can be made; explicit lists pass through."""
    import forecast.onnx as onnx
    import forecast.tracking.pyfunc as training  # where the setting is read

    monkeypatch.setattr(onnx, "onnx_export_available", lambda: True)
    assert training.serving_exports("auto") == ("onnx",)
    monkeypatch.setattr(onnx, "onnx_export_available", lambda: False)
    with caplog.at_level("INFO", logger="forecast.tracking.pyfunc"):
        assert training.serving_exports("auto") == ()
    assert "pip install forecast[onnx]" in caplog.text
    assert training.serving_exports(["onnx"]) == ("onnx",)
    assert training.serving_exports([]) == () and training.serving_exports(None) == ()
