"""An exponential moving average of the trained weights (``--ema-decay``).

Training updates the raw weights; validation, ``best.safetensors`` and the epoch snapshots use the
average instead (``applied``), which smooths the step-to-step noise of a small dataset's updates.
The average is part of the resumable state: ``last.safetensors`` stores it next to the optimizer
state, so a run killed at any step resumes to the same weights.

The decay ramps up at the start (TensorFlow's ``num_updates`` rule): after ``t`` updates it is
``min(decay, (1 + t) / (10 + t))``, so the first steps are not averaged with the initial weights.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

TENSOR_PREFIX = "ema/"


def averaged_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What is averaged: every parameter that trains (``requires_grad``) and the floating-point
    buffers (BatchNorm statistics, as timm's ModelEma does); frozen parameters never move."""
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    tensors.update({name: b for name, b in model.named_buffers() if b.is_floating_point()})
    return tensors


class WeightAverage:
    """The moving average of :func:`averaged_tensors` of one model."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: t.detach().clone() for name, t in averaged_tensors(model).items()}

    def decay_after(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates: int) -> None:
        """Fold in the weights after the ``updates``-th optimizer step (1 for the first)."""
        keep = self.decay_after(updates)
        current = averaged_tensors(model)
        for name, average in self.shadow.items():
            average.mul_(keep).add_(current[name].detach(), alpha=1.0 - keep)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The model holds the average inside the block and its raw weights again after it."""
        parameters = averaged_tensors(model)
        raw = {name: parameters[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, average in self.shadow.items():
                parameters[name].copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in raw.items():
                    parameters[name].copy_(value)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {TENSOR_PREFIX + name: average for name, average in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from a checkpoint's extra tensors; ValueError names what is missing."""
        missing = [name for name in self.shadow if TENSOR_PREFIX + name not in tensors]
        if missing:
            raise ValueError(f"no weight average for {len(missing)} trained parameter(s), e.g. {missing[0]}")
        with torch.no_grad():
            for name, average in self.shadow.items():
                average.copy_(tensors[TENSOR_PREFIX + name])
