"""The training job's config from the typed options (`forecast.config`), and a saved model's own.

The Python API (`forecast.api.Model.fit`) and the backtest's refits (`forecast.refit`) build their
training jobs here: the one config `forecast.training` reads, as `pipelines/train.py` composes it
from conf/ (`tests/test_api.py` checks that the two agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forecast.config import JOB_KEYS, DataConfig, ModelConfig, SavedConfig, TrainConfig


def saved_options(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved model's options as `Model` keywords (the data's path is not carried over)."""
    config = SavedConfig(**saved)
    data = {k: v for k, v in config.data.items() if k not in ("path", "dataset")}
    model = {k: v for k, v in config.model.items() if k not in ("input_size", "horizon")}
    return {
        "data": DataConfig.parse(data),
        "model": ModelConfig.parse(model),
        "train": TrainConfig.parse(config.train),
    }


def job_config(
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    out: Path,
    root_dir: str | Path = ".",
    experiment: str | None = None,
    register: str | None = None,
    alias: str = "candidate",
) -> Any:
    """The training job's config, as `pipelines/train.py` composes it from conf/ with these
    options (`tests/test_api.py` checks the two agree): the one config `forecast.training` reads."""
    from omegaconf import OmegaConf

    checkpoint = {
        "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
        "dirpath": str(out / "checkpoints"),
        "filename": "epoch_{epoch:03d}",
        "auto_insert_metric_name": False,
        "monitor": train.optimized_metric,
        "mode": "min",
        "save_last": False,
    }
    stopping = {
        "_target_": "lightning.pytorch.callbacks.EarlyStopping",
        "monitor": train.optimized_metric,
        "mode": "min",
    }
    logger = None
    if experiment:
        logger = {
            "_target_": "forecast.tracking.store.mlflow_logger",
            "experiment_name": experiment,
            "root_dir": str(root_dir),
            "run_name": None,
            "run_id": None,
            "offline": False,
            "request_timeout": 30,
            "request_retries": 1,
        }
    cfg = OmegaConf.create(
        {
            "task_name": "api",
            "resume": None,
            "init_from": None,
            "tune_lr": False,
            "register": bool(register),
            "registry": {"name": register or "", "alias": alias},
            "data": {"_target_": DataConfig._target_, **data.to_dict()},
            "model": {
                "_target_": ModelConfig._target_,
                **model.to_dict(),
                "input_size": data.input_size,
                "horizon": data.horizon,
            },
            "trainer": {
                "_target_": "lightning.pytorch.Trainer",
                "default_root_dir": str(out),
                "log_every_n_steps": 20,
                "enable_model_summary": False,
            },
            "callbacks": {"model_checkpoint": checkpoint, "early_stopping": stopping},
            "logger": logger,
            "paths": {"root_dir": str(root_dir), "log_dir": str(out / "logs"), "output_dir": str(out)},
        }
    )
    for key, path in JOB_KEYS.items():  # the training options, where the command line has them
        OmegaConf.update(cfg, path, getattr(train, key), force_add=True)
    return cfg
