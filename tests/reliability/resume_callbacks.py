"""Test-only Lightning callback: hold training in the middle of an epoch so a test can `kill -9` it there."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseMidEpoch(Callback):
    """Write `<epoch> <batch>` to `progress` at each training batch; sleep `seconds` at batch `batch`."""

    def __init__(self, progress: str, batch: int = 1, seconds: float = 0.5):
        self.progress = Path(progress)
        self.batch = batch
        self.seconds = seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Report where training is (atomically), then give the test time to kill it here."""
        tmp = self.progress.with_suffix(".tmp")
        tmp.write_text(f"{trainer.current_epoch} {batch_idx}")
        tmp.replace(self.progress)
        if batch_idx == self.batch:
            time.sleep(self.seconds)
