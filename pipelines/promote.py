"""Promotion gate: move `champion` to the `candidate` only if it backtests better (conf/promote.yaml).

Exit codes: 0 promoted, 3 kept the champion (the reason on one stderr line), others errors
(docs/errors.md): 2 also refuses a candidate that would drop output columns the champion writes,
unless force=true.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from forecast.cli import run_app
from forecast.errors import KEPT_CHAMPION_EXIT
from forecast.promotion import promote


@hydra.main(version_base="1.3", config_path="../conf", config_name="promote")
def main(cfg: DictConfig) -> None:
    decision = promote(
        name=cfg.name,
        input_path=cfg.input,
        root_dir=cfg.paths.root_dir,
        metric=cfg.metric,
        margin=cfg.margin,
        force=cfg.force,
        n_windows=cfg.n_windows,
        step=cfg.step,
        season_length=cfg.season_length,
        batch_size=cfg.batch_size,
        runtime=cfg.runtime,
        experiment_name=cfg.experiment_name,
        candidate_alias=cfg.candidate_alias,
        champion_alias=cfg.champion_alias,
    )
    if decision.promoted:
        print(f"promoted: {decision.reason}", file=sys.stderr)
        return
    print(f"kept champion: {decision.reason}", file=sys.stderr)
    sys.exit(KEPT_CHAMPION_EXIT)


if __name__ == "__main__":
    run_app(main)
