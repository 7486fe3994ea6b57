"""The determinism scheme of training, torch-free so that data code can use it without the engine.

Every step's batch and augmentation are a pure function of ``(seed, step)`` instead of draws from
a running random stream, so a run that is killed and resumed from a checkpoint at step k sees
exactly the batches an uninterrupted run sees from step k on; nothing random needs saving besides
the seed. ``stream`` separates independent uses (batch order, augmentation, subsets), so they
never correlate; each user names its streams as constants next to its code.
"""

from __future__ import annotations

import numpy as np


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one step of one stream."""
    return np.random.default_rng([int(seed), int(stream), int(step)])
