"""Backtest a registered model on a table, rolling origin: see conf/backtest.yaml."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from forecast.backtest import check_refit, levels_to_calibrate
from forecast.backtest_job import run_backtest
from forecast.cli import run_app


@hydra.main(version_base="1.3", config_path="../conf", config_name="backtest")
def main(cfg: DictConfig) -> float:
    """Returns the overall MASE, as the promotion gate compares it."""
    refitter = None
    if check_refit(cfg.refit) is not None:  # the training job is imported only to refit
        from forecast.refit import refit_backtest as refitter
    result = run_backtest(
        model_uri=cfg.model_uri,
        input_path=cfg.input,
        output_path=cfg.output,
        root_dir=cfg.paths.root_dir,
        n_windows=cfg.n_windows,
        step=cfg.step,
        season_length=cfg.season_length,
        refit=cfg.refit,
        refit_mode=cfg.refit_mode,
        refit_steps=cfg.refit_steps,
        refit_val_size=cfg.refit_val_size,
        refit_lr=cfg.refit_lr,
        refitter=refitter,
        batch_size=cfg.batch_size,
        runtime=cfg.runtime,
        experiment_name=cfg.experiment_name,
        calibrate_levels=levels_to_calibrate(cfg.calibrate, cfg.intervals),
    )
    return result.metrics["mase"]


if __name__ == "__main__":
    run_app(main)
