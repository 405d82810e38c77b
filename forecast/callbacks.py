"""Training callbacks of our own: per-parameter gradient norms, so that vanishing or exploding
gradients show in MLflow beside the loss."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import grad_norm
from torch.optim import Optimizer

from forecast.errors import ConfigError

PREFIX = "grad_norm/"


class GradNormLogger(Callback):
    """Logs the gradient norm of every parameter (`grad_norm/net.encoder.weight_hh_l0`, ...) and of
    all of them together (`grad_norm/total`) every `every_n_steps` optimizer steps, from step 0.

    Measured before gradient clipping (`trainer.gradient_clip_val`), so a clipped explosion still
    shows. Sent to the loggers directly at the step measured: through `pl_module.log_dict`,
    Lightning would hold them until its next flush (`trainer.log_every_n_steps`), label them with
    that later step and drop those logged in the last steps of an epoch.
    """

    def __init__(self, every_n_steps: int = 50, norm_type: float = 2.0) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ConfigError(
                f"callbacks.grad_norms.every_n_steps must be an integer >= 1, got {every_n_steps!r}"
            )
        self.every_n_steps = every_n_steps
        self.norm_type = float(norm_type)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        # Rank zero only: under DDP its gradients are already the all-reduced ones.
        if trainer.global_step % self.every_n_steps or not (trainer.loggers and trainer.is_global_zero):
            return
        norms = layer_norms(pl_module, self.norm_type)
        for logger in trainer.loggers:
            logger.log_metrics(norms, step=trainer.global_step)


def layer_norms(module: L.LightningModule, norm_type: float = 2.0) -> dict[str, float]:
    """Lightning's `grad_norm` renamed `grad_norm/<parameter>` and `grad_norm/total` (its own names
    carry the norm type: `grad_2.0_norm/<parameter>`); empty before any gradient exists."""
    norms: dict[str, float] = {}
    for key, value in grad_norm(module, norm_type=norm_type).items():
        name = key.split("/", 1)[1] if "/" in key else "total"
        norms[PREFIX + name] = float(value)
    return norms
