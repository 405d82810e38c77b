"""Each DDP rank its own share of a mapped store: whole series, balanced by training windows.

Under DDP with an in-memory table every rank reads the whole table and Lightning's sampler
deals out every rank's windows from it. With a mapped store (`forecast.data.store`) each rank
instead maps only a contiguous run of series (ids are sorted, so a run is one byte range of the
values file) holding about 1/N of the training windows, and samples, validates and tests on its
own run: every validation and test window is scored by exactly one rank, and the metrics'
sums are added across ranks (torchmetrics), so they equal one process's.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from forecast.errors import ConfigError


def shard_bounds(windows_per_series: np.ndarray, world: int) -> np.ndarray:
    """(world + 1,) series bounds: rank r trains on series [bounds[r], bounds[r + 1]).

    Cut where the running count of training windows crosses r/world of the total, so every rank
    gets about the same number of windows (series are whole: a rank is off by at most one series).
    """
    n = len(windows_per_series)
    if n < world:
        raise ConfigError(
            f"trainer.devices={world} ranks each train on their own series, and the data has {n} "
            f"series with training windows: use at most {n} ranks or data.store=memory"
        )
    cum = np.cumsum(windows_per_series)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, world) / world, side="left") + 1
    # At least one series per rank, in order.
    cuts = np.clip(cuts, np.arange(1, world), n - world + np.arange(1, world))
    cuts = np.maximum.accumulate(cuts)
    return np.concatenate([[0], cuts, [n]]).astype(np.int64)


class ShardSampler(DistributedSampler):
    """The indices of this rank's own windows: `length` per epoch, drawn at random with
    replacement (training) or each once in order (evaluation).

    A DistributedSampler subclass so that Lightning uses it as it is rather than splitting the
    rank's windows again. Training draws with replacement, in blocks, because a permutation of
    every window (what a shuffling sampler makes each epoch) of a million series is 700M indices,
    5.6 GB, for the few thousand batches an epoch takes (`trainer.limit_train_batches`).
    """

    def __init__(
        self, dataset: Dataset, length: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.num_samples = length
        self.total_size = length * world
        self._n = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            yield from range(min(self._n, self.num_samples))
            return
        generator = torch.Generator()
        generator.manual_seed(self.seed + 7919 * self.epoch + 104729 * self.rank)
        left, block = self.num_samples, 1 << 16
        while left > 0:
            take = min(left, block)
            yield from torch.randint(self._n, (take,), generator=generator).tolist()
            left -= take

    def __len__(self) -> int:
        return self.num_samples
