"""The Python API (`forecast.Model`) and the typed options (`forecast.config`): the same job as the
command line, the same forecast for a seed, strict options, saved options."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import forecast
from forecast.api import job_config
from forecast.config import JOB_KEYS, DataConfig, ModelConfig, TrainConfig, reference, train_options
from forecast.data import SeriesDataModule
from forecast.datasets import load_dataset
from forecast.errors import ConfigError
from forecast.models import ForecastModule
from tests.app_runner import run_isolated

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def composed(overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides or [])


def test_the_api_builds_the_job_the_command_line_composes(tmp_path):
    """Defaults declared once: TrainConfig's and the composed conf/ agree, and the API's job config
    equals the command line's on everything that shapes the model."""
    cli = composed()
    assert train_options(cli) == TrainConfig().to_dict()
    data = DataConfig(dataset="m4_hourly_sample", freq="h", input_size=168, horizon=48, season_length=24)
    api = job_config(data, ModelConfig(), TrainConfig(), tmp_path)
    cli_data, cli_model = OmegaConf.to_container(cli.data, resolve=True), OmegaConf.to_container(cli.model)
    cli_model.update(input_size=168, horizon=48)  # ${data.*} in the YAML
    assert OmegaConf.to_container(api.data) == cli_data
    assert OmegaConf.to_container(api.model) == cli_model
    for path in JOB_KEYS.values():
        assert OmegaConf.select(api, path) == OmegaConf.select(cli, path), path
    for key in ("monitor", "mode", "filename"):
        assert api.callbacks.model_checkpoint[key] == cli.callbacks.model_checkpoint[key]


def test_python_defaults_are_the_yaml_defaults():
    """The Python model is the command line's: ForecastModule's defaults are conf/model/lstm.yaml's."""
    module = ForecastModule(input_size=48, horizon=12)
    cli = composed().model
    for key in ModelConfig.keys():
        if key not in ("input_size", "horizon"):
            assert module.hparams[key] == cli[key], key
    assert module.hparams.segment_len == 24 and module.hparams.window_norm is True


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: forecast.Model(hiden_size=3), r"unknown option 'hiden_size'; valid: .*hidden_size"),
        (lambda: forecast.Model(hidden_size="abc"), r"model\.hidden_size: .*'abc'.*Integer"),
        (
            lambda: ForecastModule(12, 4, segment=4),
            r"unknown model option\(s\) segment; valid: .*segment_len",
        ),
        (
            lambda: SeriesDataModule(dataset="x", horizn=3),
            r"unknown data option\(s\) horizn; valid: .*horizon",
        ),
        (lambda: forecast.Model(bidirectional="maybe"), r"model\.bidirectional: .*not a valid bool"),
        (lambda: forecast.Model().predict(), r"not fitted"),
    ],
)
def test_bad_options_are_one_line_errors(build, message):
    with pytest.raises(ConfigError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_the_command_line_names_the_valid_keys_of_a_typed_group(tmp_path, monkeypatch, capsys):
    result = run_isolated("train.py", ["model.hiden_size=3"], tmp_path, monkeypatch, capsys)
    assert result.code == 2
    assert result.last_line.startswith("error: unknown config key 'model.hiden_size'; valid: input_size")
    result = run_isolated("train.py", ["data.horizon=abc"], tmp_path, monkeypatch, capsys)
    assert result.code == 2
    assert (
        result.last_line == "error: data.horizon: Value 'abc' of type 'str' could not be converted to Integer"
    )


def test_the_reference_page_is_generated_from_the_options():
    """docs/configuration.md holds `python -m forecast.config`'s tables verbatim."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert reference() in page, "regenerate: python -m forecast.config, into docs/configuration.md"


TINY = {
    "freq": "h",
    "input_size": 48,
    "horizon": 12,
    "hidden_size": 16,
    "head_hidden": 16,
    "segment_len": 12,
    "max_epochs": 2,
    "limit_train_batches": 4,
    "intervals": [80],
    "enable_progress_bar": False,
    "seed": 7,
}


@pytest.fixture(scope="module")
def eight_series() -> pd.DataFrame:
    df = load_dataset("m4_hourly_sample")
    return df[df["unique_id"].isin(df["unique_id"].unique()[:8])].reset_index(drop=True)


@pytest.mark.slow
def test_the_api_the_command_line_and_the_pyfunc_agree_for_a_seed(
    eight_series, tmp_path, monkeypatch, capsys, isolated_mlflow
):
    data = tmp_path / "eight.parquet"
    eight_series.to_parquet(data)
    model = forecast.Model(**TINY).fit(eight_series)
    api = model.predict()
    assert api.columns[:3].tolist() == ["unique_id", "ds", "y_hat"]

    args = [
        "data=file", f"data.path={data}", "data.freq=h", "data.input_size=48", "data.horizon=12",
        "model.hidden_size=16", "model.head_hidden=16", "model.segment_len=12", "trainer.max_epochs=2",
        "trainer.limit_train_batches=4", "intervals=[80]", "seed=7", "trainer.enable_progress_bar=false",
        "register=true", "registry.name=cli-model",
    ]  # fmt: skip
    result = run_isolated("train.py", args, tmp_path, monkeypatch, capsys)
    assert result.code == 0, result.stderr[-2000:]
    mlflow.set_tracking_uri(isolated_mlflow)
    pyfunc = mlflow.pyfunc.load_model("models:/cli-model@champion").predict(eight_series)
    for column in ("y_hat", "y_hat_lo_80", "y_hat_hi_80"):
        np.testing.assert_allclose(pyfunc[column].to_numpy(), api[column].to_numpy(), rtol=1e-5, atol=1e-3)
    cli = forecast.Model.load("models:/cli-model@champion").predict(eight_series)
    pd.testing.assert_frame_equal(cli, api)


@pytest.mark.slow
def test_save_load_and_register_keep_the_options(eight_series, tmp_path, isolated_mlflow):
    model = forecast.Model(**TINY, loss="quantile", quantiles=[0.1, 0.5, 0.9]).fit(
        eight_series, experiment="api", register="api-model", root_dir=tmp_path
    )
    assert model.model_uri_ == "models:/api-model@candidate"
    assert set(model.metrics_) >= {"val/loss", "test/mae"}
    folder = model.save(tmp_path / "saved")
    saved = json.loads((folder / "model.json").read_text())
    assert saved["format_version"] == 2
    assert saved["config"]["version"] == 1
    assert saved["config"]["model"]["quantiles"] == [0.1, 0.5, 0.9]
    assert saved["config"]["train"]["seed"] == 7 and saved["config"]["data"]["horizon"] == 12
    for source in (folder, "models:/api-model@candidate"):
        again = forecast.Model.load(source, root_dir=tmp_path)
        assert again.model.loss == "quantile" and again.data.input_size == 48 and again.train.max_epochs == 2
        pd.testing.assert_frame_equal(again.predict(eight_series), model.predict())
    cv = model.cross_validation(n_windows=2)
    assert {"cutoff", "y", "y_hat", "y_hat_q50"} <= set(cv.columns)
    assert cv["cutoff"].nunique() == 2 and np.isfinite(model.cv_metrics_["mae"])


def test_a_model_saved_before_the_options_were_recorded_loads(tmp_path):
    """Format 1 (no `config` in model.json) still loads and forecasts; its options fall back."""
    from tests.model_helpers import tiny_forecaster

    df = load_dataset("m4_hourly_sample")
    df = df[df["unique_id"].isin(df["unique_id"].unique()[:3])]
    folder = tiny_forecaster(df, input_size=24, horizon=6, seed=0).save(tmp_path / "old")
    raw = json.loads((folder / "model.json").read_text())
    raw.pop("config", None)
    raw["format_version"] = 1
    (folder / "model.json").write_text(json.dumps(raw))
    old = forecast.Model.load(folder)
    assert old.data.input_size == 24 and old.data.horizon == 6
    assert len(old.predict(df)) == 3 * 6
