"""The determinism scheme of training, torch-free so that data code can use it without the engine.

Every step's batch and augmentation are a pure function of ``(seed, step)`` instead of draws from
a running random stream, so a run that is killed and resumed from a checkpoint at step k sees
exactly the batches an uninterrupted run sees from step k on; nothing random needs saving besides
the seed. ``stream`` separates independent uses (batch order, augmentation, subsets), so they
never correlate; each user names its streams as constants next to its code.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one step of one stream."""
    return np.random.default_rng([int(seed), int(stream), int(step)])


class EpochSlices:
    """Step ``e * steps_per_epoch + i`` takes the i-th slice of ``batch_size`` entries of epoch e's
    order. ``draw(epoch)`` must be a pure function of the epoch (built on :func:`step_rng`), so the
    one epoch kept here is a per-process cache, never saved with a run."""

    def __init__(self, draw: Callable[[int], np.ndarray], steps_per_epoch: int, batch_size: int):
        self.draw = draw
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self._cached: tuple[int, np.ndarray] | None = None

    def of_step(self, step: int) -> np.ndarray:
        epoch, within = divmod(step, self.steps_per_epoch)
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.draw(epoch))
        return self._cached[1][within * self.batch_size:(within + 1) * self.batch_size]


def shard_range(count: int, rank: int, world_size: int) -> range:
    """Process ``rank``'s contiguous part of a batch of ``count`` entries (sizes differ by at most 1):
    the parts of all processes are disjoint and together are the batch, in order."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
