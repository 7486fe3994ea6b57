"""Averages of the trained weights: an exponential moving average (``--ema-decay``) and, from a
chosen epoch on, the uniform mean of the weights after every step (``--swa-start-epoch``, stochastic
weight averaging: with a constant learning rate the mean sits nearer the centre of the flat region
the steps wander in than any one of them).

Training updates the raw weights; validation, ``best.safetensors`` and the epoch snapshots use the
average instead (``applied``), which smooths the step-to-step noise of a small dataset's updates.
The average is part of the resumable state: ``last.safetensors`` stores it next to the optimizer
state, so a run killed at any step resumes to the same weights.

The decay ramps up at the start (TensorFlow's ``num_updates`` rule): after ``t`` updates it is
``min(decay, (1 + t) / (10 + t))``, so the first steps are not averaged with the initial weights.
From the uniform phase's first update on, the ``n``-th update keeps ``(n - 1) / n``: the average is then
the plain mean of the weights after those updates (what came before is dropped). Before it, without
an EMA, the average simply follows the weights. Both rules depend on the update count only, so a
resume continues them exactly.
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

    def __init__(self, model: torch.nn.Module, decay: float, uniform_from_update: int | None = None):
        if not 0.0 <= decay < 1.0 or (decay == 0.0 and uniform_from_update is None):
            raise ValueError(f"the weight average's decay must be in (0, 1) (0 only with a uniform phase), got {decay}")
        if uniform_from_update is not None and uniform_from_update < 1:
            raise ValueError(f"the uniform average starts at an update >= 1, got {uniform_from_update}")
        self.decay = decay
        self.uniform_from_update = uniform_from_update
        self.shadow = {name: t.detach().clone() for name, t in averaged_tensors(model).items()}

    def decay_after(self, updates: int) -> float:
        if self.uniform_from_update is not None and updates >= self.uniform_from_update:
            averaged = updates - self.uniform_from_update + 1
            return (averaged - 1) / averaged
        if self.decay == 0.0:
            return 0.0
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


def weight_average_for(model: torch.nn.Module, ema_decay: float, swa_start_epoch: int,
                       steps_per_epoch: int) -> WeightAverage | None:
    """The average a run's options ask for (None: validate and ship the raw weights)."""
    if not ema_decay and not swa_start_epoch:
        return None
    uniform_from = (swa_start_epoch - 1) * steps_per_epoch + 1 if swa_start_epoch else None
    return WeightAverage(model, ema_decay, uniform_from)
