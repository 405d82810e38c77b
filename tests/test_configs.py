"""Every config composes and instantiates; a fast dev run trains from the real configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from forecast.ray_training import RayTrainOptions, lightning_options, ray_options
from forecast.training import fit

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.root_dir = str(tmp_path)
    return cfg


@pytest.mark.parametrize("model", ["lstm", "bilstm", "gru"])
def test_models_instantiate(model, tmp_path):
    cfg = compose_train([f"model={model}"], tmp_path)
    module = instantiate(cfg.model)
    assert module.net.encoder.bidirectional == (model == "bilstm")
    assert type(module.net.encoder).__name__ == ("GRU" if model == "gru" else "LSTM")


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "ddp_cpu", "multinode", "ray"])
def test_trainers_compose(trainer, tmp_path):
    cfg = compose_train([f"trainer={trainer}"], tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if trainer in ("cpu", "ddp_cpu", "ray"):
        instantiate(lightning_options(cfg.trainer), logger=False, enable_checkpointing=False)
    assert ray_options(cfg.trainer) == (RayTrainOptions() if trainer == "ray" else None)


def test_default_data_and_callbacks_instantiate(tmp_path):
    cfg = compose_train([], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup()
    assert len(dm.ids) == 69 and dm.horizon == 48
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert {type(c).__name__ for c in callbacks} == {"ModelCheckpoint", "EarlyStopping", "GradNormLogger"}


def test_file_data_requires_a_path(tmp_path):
    cfg = compose_train(["data=file"], tmp_path)
    with pytest.raises(Exception, match="path"):
        instantiate(cfg.data)


def test_sweep_config_composes(tmp_path):
    cfg = compose_train(["hparams_search=lstm_optuna"], tmp_path)
    assert cfg.hydra.sweeper._target_.endswith("ForecastOptunaSweeper")
    assert "model.lr" in cfg.hydra.sweeper.params


def test_batch_forecast_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("batch_forecast", overrides=["model_uri=models:/m@champion", "input=a", "output=b"])
    assert cfg.model_uri == "models:/m@champion"


def test_fast_dev_run_trains_from_the_real_config(tmp_path):
    cfg = compose_train(
        ["~logger", "+trainer.fast_dev_run=true", "trainer.enable_progress_bar=false"], tmp_path
    )
    result = fit(cfg)
    assert result.run_id is None
    assert "val/mae" in result.metrics and "test/mae" in result.metrics


def test_per_series_cycle_is_sized_by_the_data(tmp_path):
    cfg = compose_train(
        [
            "~logger",
            "+trainer.fast_dev_run=true",
            "trainer.enable_progress_bar=false",
            "model.cycle_len=24",
            "model.cycle_per_series=true",
        ],
        tmp_path,
    )
    result = fit(cfg)
    # One learned row per training series of the embedded dataset, plus the shared row 0.
    assert result.module.net.cycle.series.num_embeddings == result.datamodule.n_series + 1 == 70
    assert np.isfinite(result.metrics["test/mae"])
