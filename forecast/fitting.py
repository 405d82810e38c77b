"""One Lightning fit, then the test of its best checkpoint: what a training job runs in this
process (`forecast.training`) and in every Ray Train worker (`forecast.ray_training`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from forecast.checkpoints import load_checkpoint


@dataclass
class FitOutcome:
    """What the fit leaves besides the weights: scores (validation, and test when tested), the
    best checkpoint, the steps taken, whether pruning stopped it."""

    metrics: dict[str, float]
    best_model_path: str
    best_model_score: float | None
    monitor: str | None
    global_step: int
    pruned: bool


def checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The trainer's ModelCheckpoint, if it has one."""
    return trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None


def fit_and_test(
    trainer: L.Trainer,
    module: L.LightningModule,
    dm: L.LightningDataModule,
    ckpt_path: str | None = None,
    test: bool = True,
    pruning: Any = None,
) -> FitOutcome:
    """Fit (from `ckpt_path` when resuming), then test with the best checkpoint (`test`, unless
    `pruning.pruned`); untested, the best checkpoint's weights are loaded into `module` instead.
    Either way `module` ends with the best weights when there is a best checkpoint."""
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = checkpoint_callback(trainer)
    best = checkpoint.best_model_path if checkpoint is not None else ""
    pruned = bool(pruning is not None and pruning.pruned)
    if test and not pruned:
        trainer.test(
            module, datamodule=dm, ckpt_path="best" if best else None, weights_only=True, verbose=False
        )
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    elif best:
        module.load_state_dict(load_checkpoint(best)["state_dict"])
    score = checkpoint.best_model_score if checkpoint is not None and best else None
    return FitOutcome(
        metrics=metrics,
        best_model_path=best,
        best_model_score=None if score is None else float(score),
        monitor=checkpoint.monitor if checkpoint is not None else None,
        global_step=int(trainer.global_step),
        pruned=pruned,
    )
