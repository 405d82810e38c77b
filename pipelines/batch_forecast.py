"""Forecast every series with a registered model: see conf/batch_forecast.yaml."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from forecast.cli import run_app
from forecast.engines.request import BatchRequest
from forecast.schedule import run_scheduled


@hydra.main(version_base="1.3", config_path="../conf", config_name="batch_forecast")
def main(cfg: DictConfig) -> None:
    run_scheduled(BatchRequest.from_config(cfg), overwrite=cfg.overwrite, experiment=cfg.experiment)


if __name__ == "__main__":
    run_app(main)
