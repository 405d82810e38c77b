"""Forecast every series with a registered model: see conf/batch_forecast.yaml."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from forecast.batch import LoadRetry, RayOptions
from forecast.cli import run_app
from forecast.schedule import run_scheduled_forecast


@hydra.main(version_base="1.3", config_path="../conf", config_name="batch_forecast")
def main(cfg: DictConfig) -> None:
    run_scheduled_forecast(
        model_uri=cfg.model_uri,
        input_path=cfg.input,
        output=cfg.output,
        root_dir=cfg.paths.root_dir,
        as_of=cfg.as_of,
        as_of_strict=cfg.as_of_strict,
        overwrite=cfg.overwrite,
        experiment=cfg.experiment,
        batch_size=cfg.batch_size,
        engine=cfg.engine,
        runtime=cfg.runtime,
        chunk_rows=cfg.chunk_rows,
        progress=cfg.progress,
        ray=RayOptions(**OmegaConf.to_container(cfg.ray, resolve=True)),
        retry=LoadRetry(retries=cfg.load_retries, backoff_s=cfg.load_backoff_s, timeout_s=cfg.load_timeout_s),
        # future=PATH: the future-known covariates over the horizon, for models that read them
        future=cfg.get("future"),
    )


if __name__ == "__main__":
    run_app(main)
