"""The logged pyfunc model: signature, plain files, same forecasts in a fresh process."""

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from model_helpers import tiny_forecaster

from forecast.tracking import ensure_experiment, log_forecaster, register


@pytest.fixture
def logged_model(tiny_frame, isolated_mlflow, tmp_path):
    forecaster = tiny_forecaster(tiny_frame)
    experiment = ensure_experiment("pyfunc-test", tmp_path)
    example = tiny_frame.groupby("unique_id").tail(24).head(48).astype({"y": "float64"})
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_forecaster(forecaster, example.reset_index(drop=True))
    register(info.model_uri, "pyfunc-test", "champion")
    return forecaster, info, run.info.run_id


def test_model_files_are_plain_and_signature_is_long_table(logged_model):
    _, info, _ = logged_model
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    files = {p.split("/")[-1] for p in _walk(local)}
    assert {"weights.safetensors", "scaler.parquet", "model.json", "MLmodel"} <= files
    assert not any(f.endswith((".pkl", ".pickle")) for f in files)
    outputs = [c.name for c in info.signature.outputs.inputs]
    assert outputs == ["unique_id", "ds", "y_hat"]
    # No input schema (MLflow's check would pre-empt the data contract's messages and break
    # text/csv serving); the columns the model reads are in the MLmodel metadata.
    assert info.signature.inputs is None
    assert info.metadata["input_columns"] == {"id": "unique_id", "time": "ds", "target": "y"}
    from forecast import __version__

    requirements = open(os.path.join(local, "requirements.txt")).read().split()
    assert f"forecast=={__version__}" in requirements


@pytest.mark.slow  # a real process: nothing of this one's state may help
def test_fresh_process_gives_the_same_forecasts(logged_model, tiny_frame, tmp_path, isolated_mlflow):
    forecaster, _, _ = logged_model
    history = tmp_path / "history.parquet"
    tiny_frame.to_parquet(history)
    out = tmp_path / "out.parquet"
    code = (
        "import mlflow, pandas as pd, sys;"
        "m = mlflow.pyfunc.load_model('models:/pyfunc-test@champion');"
        f"m.predict(pd.read_parquet({str(history)!r})).to_parquet({str(out)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    expected = forecaster.predict(tiny_frame)
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def _walk(root):
    for base, _, names in os.walk(root):
        for name in names:
            yield os.path.join(base, name)
