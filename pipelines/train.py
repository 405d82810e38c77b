"""Train a forecasting model: `python pipelines/train.py [overrides]` (see conf/train.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from forecast.cli import run_app
from forecast.training import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the optimized metric, so sweepers can use this app unchanged."""
    return train(cfg)


if __name__ == "__main__":
    run_app(main)
