"""`tune_lr=true`: Lightning's learning-rate range test before training, its suggestion as `model.lr`.

The finder trains up to `NUM_TRAINING` steps from the initial weights with a rising learning
rate, then Lightning restores the weights, the optimizer and the loops from a temporary
checkpoint (which it deletes), so the same trainer then fits from scratch with the suggestion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.tuner import Tuner

from forecast.errors import ConfigError

log = logging.getLogger(__name__)

NUM_TRAINING = 100  # learning rates tried, one training step each (Lightning's default)
PLOT = "lr_finder.png"
DISTRIBUTED = ("ddp", "fsdp", "deepspeed")
# Lightning's info lines around the finder: "Learning rate set to ..." (our own line says it),
# "stopped early ... diverging loss" (how the range test ends) and "`weights_only` was not set"
# (the restore of its own temporary checkpoint, written by this process a moment before).
_CHATTY = ("lightning.pytorch.tuner.lr_finder", "lightning.pytorch.trainer.connectors.checkpoint_connector")


def _several(devices: Any) -> bool:
    """Whether a `trainer.devices` value asks for more than one device (-1: all of them)."""
    if not isinstance(devices, int | str):  # a list of device indices
        return len(devices) > 1
    text = str(devices).strip()
    if "," in text:  # "0,1"
        return len([d for d in text.split(",") if d.strip()]) > 1
    return text == "-1" or (text.isdigit() and int(text) > 1)


def _refusal(what: str) -> ConfigError:
    return ConfigError(
        f"tune_lr=true runs Lightning's learning-rate finder in one process on one device, but {what}: "
        "find the rate with trainer=cpu or trainer=gpu (trainer.devices=1), then train with model.lr=<it>"
    )


def check_tune_lr(trainer_cfg: Any) -> None:
    """Refuse `tune_lr=true` before anything runs when the trainer config is distributed (DDP,
    several devices or nodes): Lightning's finder is single-process."""
    if trainer_cfg.get("ray") is not None:
        raise _refusal("trainer=ray trains on Ray workers")
    strategy = str(trainer_cfg.get("strategy") or "auto")
    if any(name in strategy for name in DISTRIBUTED):
        raise _refusal(f"trainer.strategy={strategy}")
    devices = trainer_cfg.get("devices", "auto")
    if _several(devices):
        raise _refusal(f"trainer.devices={devices}")
    if int(trainer_cfg.get("num_nodes") or 1) > 1:
        raise _refusal(f"trainer.num_nodes={trainer_cfg.get('num_nodes')}")


def find_lr(
    trainer: L.Trainer, module: L.LightningModule, dm: L.LightningDataModule, resumed: bool = False
) -> float | None:
    """Run the finder, set `module.hparams.lr` (what `configure_optimizers` reads) to its
    suggestion, log it to the trainer's MLflow run (param `lr_found`, figure `lr_finder.png`).

    Returns the suggestion, or None when there is none (too few training steps, fast_dev_run) or
    on a resume, which does not search again: the checkpoint's optimizer state holds the rate
    the run started with.
    """
    if resumed:
        log.info("tune_lr: a resume keeps the learning rate found when the run started")
        return None
    if trainer.world_size > 1:
        raise _refusal(f"the trainer runs {trainer.world_size} processes")
    configured = float(module.hparams.lr)
    loggers = trainer.loggers
    # The finder logs nothing, and the teardown of its own short fit would end the MLflow run.
    trainer.loggers = []
    try:
        with _quiet(_CHATTY):
            finder = Tuner(trainer).lr_find(
                module, datamodule=dm, num_training=NUM_TRAINING, update_attr=True, attr_name="lr"
            )
    finally:
        trainer.loggers = loggers
    lr = finder.suggestion() if finder is not None else None
    if finder is None or lr is None:
        steps = len(finder.results["lr"]) if finder is not None else 0  # fast_dev_run: not run
        print(
            f"learning-rate finder: no suggestion after {steps} steps (it takes up to {NUM_TRAINING}, "
            "within trainer.max_epochs x trainer.limit_train_batches, and none under fast_dev_run); "
            f"training with model.lr={configured:.3g}"
        )
        return None
    module.hparams.lr = lr  # update_attr set it already; configure_optimizers reads it
    fig = finder.plot(suggest=True)
    for logger in loggers:
        logger.log_hyperparams({"lr_found": lr})
        if isinstance(logger, MLFlowLogger) and fig is not None:
            logger.experiment.log_figure(logger.run_id, fig, PLOT)
    if fig is not None:
        plt.close(fig)
    tried = finder.results["lr"]  # rising; fewer than NUM_TRAINING when the loss diverged or steps ran out
    print(
        f"learning-rate finder: model.lr={lr:.3g} (configured {configured:.3g}; "
        f"{len(tried)} rates tried, {tried[0]:.0e} to {tried[-1]:.2g})"
    )
    return lr


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Warnings and errors only from these loggers while the block runs."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
