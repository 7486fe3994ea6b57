"""Learning rates of stage-2 fine-tuning: which parameters share a rate, and the rate of each at a step.

Every rate is a pure function of the optimizer step whose horizons are set in epochs, not by
--epochs: a resumed run, a run trained on with a larger --epochs and the epoch snapshots of a
longer --train-on-all run all see the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HEAD_PREFIX = "regressor."            # trained at --lr-head; everything else at --lr-backbone
BACKBONE_PREFIX = "backbone."         # the pretrained feature extractor (--backbone-warmup-epochs)


@dataclass(frozen=True)
class LrSchedule:
    lr_backbone: float                # backbone, staircase and branches
    lr_head: float                    # the regressor MLP
    cosine_epochs: int = 0            # > 0: every rate falls on a half cosine to 0 over this many epochs
    backbone_warmup_epochs: int = 0   # > 0: the backbone's rate rises linearly from 0 over this many epochs


def cosine_factor(schedule: LrSchedule, step: int, steps_per_epoch: int) -> float:
    """The multiplier of every rate for optimizer step ``step`` (0-based); 1 without a cosine."""
    if not schedule.cosine_epochs:
        return 1.0
    horizon = schedule.cosine_epochs * steps_per_epoch
    return 0.5 * (1.0 + math.cos(math.pi * min(step, horizon) / horizon))


def warmup_factor(schedule: LrSchedule, step: int, steps_per_epoch: int) -> float:
    """The extra multiplier of the pretrained backbone's rate: step / horizon up to 1. While the
    freshly initialised upper part is still random its gradients are noise, and passing them into
    pretrained features at full rate damages what pre-training taught (linear probing before
    fine-tuning, Kumar et al., ICLR 2022)."""
    if not schedule.backbone_warmup_epochs:
        return 1.0
    return min(1.0, step / (schedule.backbone_warmup_epochs * steps_per_epoch))


def parameter_groups(model, schedule: LrSchedule) -> list[dict]:
    """The optimizer's parameter groups, in the order ``group_lrs`` gives their rates: the body
    (staircase, branches and, without a warm-up, the backbone), [the backbone,] the regressor.
    Frozen parameters outside the regressor are left out (the regressor always trains); without a
    warm-up there are two groups, as before it existed, so older runs resume."""
    head, backbone, body = [], [], []
    for name, parameter in model.named_parameters():
        if name.startswith(HEAD_PREFIX):
            head.append(parameter)
        elif parameter.requires_grad:
            warmed = schedule.backbone_warmup_epochs and name.startswith(BACKBONE_PREFIX)
            (backbone if warmed else body).append(parameter)
    groups = [{"params": body, "lr": schedule.lr_backbone}]
    if schedule.backbone_warmup_epochs:
        groups.append({"params": backbone, "lr": schedule.lr_backbone})
    return groups + [{"params": head, "lr": schedule.lr_head}]


def group_lrs(schedule: LrSchedule, step: int, steps_per_epoch: int) -> list[float]:
    """The rate of each of ``parameter_groups``' groups for optimizer step ``step`` (0-based)."""
    factor = cosine_factor(schedule, step, steps_per_epoch)
    rates = [schedule.lr_backbone * factor]
    if schedule.backbone_warmup_epochs:
        rates.append(schedule.lr_backbone * factor * warmup_factor(schedule, step, steps_per_epoch))
    return rates + [schedule.lr_head * factor]
