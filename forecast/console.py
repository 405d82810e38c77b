"""What training prints: a progress bar on a terminal, one plain line per epoch elsewhere (a
scheduler's log), no banners or known-harmless warnings, and a one-screen summary at the end."""

from __future__ import annotations

import logging
import sys
import time
import warnings

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("forecast.training")

# Messages that say nothing a user can act on: Lightning's hardware and tips banners, MLflow's
# store set-up chatter, and two warnings our configs trigger on purpose (short epochs log less
# often than log_every_n_steps; torch's pytree deprecation inside Lightning).
_QUIET_LOGGERS = {
    "lightning.pytorch.utilities.rank_zero": logging.WARNING,
    "lightning.fabric.utilities.seed": logging.WARNING,
    "lightning.pytorch.accelerators.cuda": logging.WARNING,
    "mlflow.store.db.utils": logging.WARNING,
    "mlflow.tracking.fluent": logging.WARNING,
    "mlflow.pyfunc": logging.WARNING,
    "mlflow.models.model": logging.WARNING,
    "mlflow.tracking._model_registry.fluent": logging.WARNING,
    "alembic.runtime.migration": logging.WARNING,
    "lightning.pytorch.loggers.mlflow": logging.ERROR,  # "Experiment ... not found. Creating it."
}
_HARMLESS_WARNINGS = [
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*is smaller than the logging interval Trainer\(log_every_n_steps.*",
    r".*does not have many workers which may be a bottleneck.*",
    r".*The 'train_dataloader' does not have many workers.*",
]


def quiet() -> None:
    """Silence banners and known-harmless warnings (errors and our own lines still show)."""
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for pattern in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def on_terminal() -> bool:
    """Whether a person watches (a bar redraws in place there; in a log file it is noise)."""
    return sys.stderr.isatty()


class EpochLine(Callback):
    """One plain line per epoch (epoch, train and val loss, elapsed) when there is no progress bar."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        train = "train/loss_epoch" if "train/loss_epoch" in m else "train/loss"
        for key in (train, "val/loss"):
            if key in m:
                parts.append(f"{key.removesuffix('_epoch')} {float(m[key]):.4f}")
        parts.append(f"{time.perf_counter() - self.started:.0f}s")
        log.info(", ".join(parts))


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run in the MLflow UI: the server's page, or how to open the local store's."""
    path = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{path}"
    return f"http://127.0.0.1:5000/{path}  (after `make ui`)"


def summary(
    metrics: dict[str, float],
    baseline: dict[str, float],
    link: str | None,
    version: str | None,
    split: str = "test",
) -> str:
    """The end-of-training screen: scores beside the seasonal naive on the same windows, where."""
    rows = [f"{split} metrics        model    seasonal naive"]
    for name in ("mae", "rmse", "smape", "mase"):
        ours, naive = metrics.get(f"{split}/{name}"), baseline.get(f"{split}/snaive_{name}")
        if ours is None:
            continue
        naive_text = f"{naive:14.4g}" if naive is not None else f"{'-':>14}"
        rows.append(f"  {name:6s} {ours:18.4g} {naive_text}")
    if link:
        rows.append(f"MLflow run     {link}")
    if version:
        rows.append(f"registered     {version}")
    line = "=" * 72
    return "\n".join([line, *rows, line])
