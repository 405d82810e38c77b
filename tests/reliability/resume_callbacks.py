"""Test-only Lightning callback: hold training in the middle of an epoch so a test can `kill -9` it there."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseMidEpoch(Callback):
    """Write `<epoch> <batch>` to `progress` at each training batch. At batch `batch` of epoch N
    or later, while the file `hold` holds N, wait there (at most `seconds`): the test kills the
    process while it waits. Without that file (the runs that are not killed, the resumed fit)
    training never waits."""

    def __init__(self, progress: str, hold: str = "hold", batch: int = 1, seconds: float = 120.0):
        self.progress = Path(progress)
        self.hold = Path(hold)
        self.batch = batch
        self.seconds = seconds

    def _held(self, epoch: int) -> bool:
        try:
            return epoch >= int(self.hold.read_text())
        except (OSError, ValueError):
            return False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Report where training is (atomically), then wait here while the test asks to."""
        tmp = self.progress.with_suffix(".tmp")
        tmp.write_text(f"{trainer.current_epoch} {batch_idx}")
        tmp.replace(self.progress)
        if batch_idx != self.batch:
            return
        deadline = time.monotonic() + self.seconds
        while self._held(trainer.current_epoch) and time.monotonic() < deadline:
            time.sleep(0.01)
