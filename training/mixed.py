"""Stage 2 on two datasets at once: a primary human-rated set plus a "mix" set (e.g. the synthetic
pseudo-MOS set) that keeps what earlier training taught.

Every step's batch is ``batch_size - mix_per_batch`` crops of the primary set followed by
``mix_per_batch`` crops of the mix set (each drawn by its own :class:`FinetuneBatches`, so both
are pure functions of (seed, step) and a resumed run sees the same batches). The two sets'
scores live on different scales (CLIVE MOS/100 vs a full-reference pseudo-MOS), so only the
primary set is regressed on (its scale is the model's output scale, stated in the checkpoint's
contract); the mix set contributes a pairwise fidelity ranking loss over pairs drawn ONLY within
the mix set, as in multi-dataset IQA training (Zhang et al., "Uncertainty-aware blind image
quality assessment in the laboratory and wild", 2021). A ranking loss within the primary set
can be added (``rank_weight``).

Fidelity loss of a pair (i, j): p = 1 if target_i > target_j else 0 (pairs with equal targets,
or closer than ``margin``, are skipped); p_hat = sigmoid((pred_i - pred_j) / RANK_TEMPERATURE);
loss = 1 - sqrt(p * p_hat) - sqrt((1 - p) * (1 - p_hat)).

``rank_targets="thurstone"`` (the primary set's ranking only; it needs the raters' standard deviation
s of every image): Thurstone's case V, as in the paper above. p = Phi((t_i - t_j) / sqrt(s_i^2 + s_j^2)),
the share of raters expected to prefer i, and p_hat = Phi((pred_i - pred_j) / sqrt(s_i^2 + s_j^2)):
every pair is kept (a tie is p = 0.5), the loss is smallest where the predicted gap equals the MOS
gap (as the L1 term wants) and a pair people disagree on pulls less than a clear one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinet_runtime.preprocess import ImageDecodeError, Preprocessing
from pinet_training.datasets import IQADataset
from pinet_training.finetune_data import FinetuneBatches, croppable_pixels, crop_batch, cut_window
from pinet_training.seeding import shard_range, step_rng

RANK_TARGETS = ("hard", "thurstone")     # --rank-targets: what the primary set's ranking loss aims at
RANK_TEMPERATURE = 0.1          # score units (0-1): a 0.2 gap in predictions gives p_hat 0.88
MIX_RANK_MARGIN = 0.05          # synthetic pseudo-MOS near-ties are not trustworthy (stage 1's margin)
MIX_SEED_OFFSET = 1_000_003     # the mix set's batches use their own random streams
MIX_GROUP = 3                   # --mix-pairs within-reference: mix images drawn together from one reference
STREAM_GROUP_DRAW = 41          # step_rng stream of ReferenceGroupBatches' draws
DISPLAY_NAMES = {"clive": "CLIVE", "koniq10k": "KonIQ-10k", "spaq": "SPAQ", "kadid10k": "KADID-10k",
                 "live": "LIVE", "csiq": "CSIQ", "tid2013": "TID2013", "synthetic": "synthetic"}


def score_meaning_name(dataset: IQADataset) -> str:
    """What the model's 0-1 output means, e.g. ``MOS/100 (CLIVE)`` or ``(100 - DMOS)/100 (LIVE)``."""
    scale = dataset.scale
    word = scale.label.split(" (")[0].strip() or "score"
    title = DISPLAY_NAMES.get(dataset.name, dataset.name)
    span = scale.high - scale.low
    if scale.low == 0 and scale.high == 1 and scale.higher_is_better:
        expression = word
    elif scale.higher_is_better:
        expression = f"{word}/{span:g}" if scale.low == 0 else f"({word} - {scale.low:g})/{span:g}"
    else:
        expression = f"({scale.high:g} - {word})/{span:g}"
    return f"{expression} ({title})"


def dataset_record(dataset: IQADataset, role: str, loss: str, **extra) -> dict:
    """What a checkpoint says about one training dataset: name, root, native scale and its map to 0-1."""
    scale = dataset.scale
    return {"role": role, "name": dataset.name, "root": str(dataset.root.resolve()), "images": len(dataset),
            "scale": {"label": scale.label, "low": scale.low, "high": scale.high,
                      "higher_is_better": scale.higher_is_better},
            "normalised_as": score_meaning_name(dataset), "loss": loss, **extra}


def fidelity_ranking_loss(predictions, targets, margin: float = 0.0, groups=None, spreads=None):
    """Mean fidelity loss over all ordered pairs i < j of one dataset's items with |dt| > margin
    (and, given ``groups``, the same group); None when no pair qualifies. ``spreads`` (the raters'
    standard deviations, all > 0): Thurstone targets over every pair instead (module docstring)."""
    import torch

    if len(targets) < 2:
        return None
    first, second = torch.triu_indices(len(targets), len(targets), offset=1, device=targets.device)
    gap = targets[first] - targets[second]
    keep = torch.ones_like(gap, dtype=torch.bool) if spreads is not None else gap.abs() > max(margin, 0.0)
    if groups is not None:
        keep &= groups[first] == groups[second]
    if not bool(keep.any()):
        return None
    predicted_gap = predictions[first][keep] - predictions[second][keep]
    if spreads is None:
        p = (gap[keep] > 0).to(predictions.dtype)
        p_hat = torch.sigmoid(predicted_gap / RANK_TEMPERATURE)
    else:
        pair_spread = torch.sqrt(spreads[first][keep] ** 2 + spreads[second][keep] ** 2)
        p, p_hat = torch.special.ndtr(gap[keep] / pair_spread), torch.special.ndtr(predicted_gap / pair_spread)
    eps = 1e-8
    loss = 1 - torch.sqrt(p * p_hat + eps) - torch.sqrt((1 - p) * (1 - p_hat) + eps)
    return loss.mean()


@dataclass(frozen=True)
class LossWeights:
    regression: str = "l1"        # l1 or mse on the primary set's normalised score
    rank_weight: float = 0.0      # fidelity ranking within the primary set
    mix_weight: float = 1.0       # fidelity ranking within the mix set
    rank_targets: str = "hard"    # the primary ranking's targets: one of RANK_TARGETS


def mixed_loss(predictions, targets, source, weights: LossWeights, groups=None,
               spreads=None) -> tuple[object, dict[str, float]]:
    """(total loss, parts for the log). ``source`` is 0 for primary items and 1 for mix items; ``groups``
    (optional, per item) limits the mix ranking to pairs of one group (e.g. one synth reference);
    ``spreads`` (per item; needed by ``rank_targets="thurstone"``): the raters' standard deviations."""
    import torch.nn.functional as F

    primary, mix = source == 0, source == 1
    parts, total = {}, None
    if bool(primary.any()):
        regress = F.l1_loss if weights.regression == "l1" else F.mse_loss
        total = regress(predictions[primary], targets[primary])
        parts["loss_primary"] = float(total.detach())
        if weights.rank_weight > 0:
            thurstone = weights.rank_targets == "thurstone"
            if thurstone and spreads is None:
                raise ValueError("Thurstone ranking targets need the raters' standard deviations (spreads)")
            rank = fidelity_ranking_loss(predictions[primary], targets[primary],
                                         spreads=spreads[primary] if thurstone else None)
            if rank is not None:
                total = total + weights.rank_weight * rank
                parts["loss_rank_primary"] = float(rank.detach())
    if bool(mix.any()) and weights.mix_weight > 0:
        rank = fidelity_ranking_loss(predictions[mix], targets[mix], MIX_RANK_MARGIN,
                                     None if groups is None else groups[mix])
        if rank is not None:
            total = rank * weights.mix_weight if total is None else total + weights.mix_weight * rank
            parts["loss_rank_mix"] = float(rank.detach())
    return total, parts


class MixedBatches:
    """``make_batch(step)``: primary crops, then mix crops, with a ``source`` tensor (0 / 1)."""

    def __init__(self, primary: FinetuneBatches, mix: FinetuneBatches):
        if primary.prep != mix.prep:
            raise ValueError("both datasets of a mixed run must share the run's preprocessing contract")
        self.primary, self.mix = primary, mix
        self.steps_per_epoch = primary.steps_per_epoch     # epochs count the primary set

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world size): each process loads its part of both sets' shares of every batch."""
        return self.primary.shard

    @shard.setter
    def shard(self, value: tuple[int, int]) -> None:
        self.primary.shard = self.mix.shard = value

    def __call__(self, step: int) -> dict:
        import torch

        first, second = self.primary(step), self.mix(step)
        crops = [b["crops"] for b in (first, second) if len(b["targets"])]
        source = np.concatenate([np.zeros(len(first["targets"]), np.int64), np.ones(len(second["targets"]), np.int64)])
        batch = {"crops": torch.cat(crops) if crops else first["crops"],
                 "targets": torch.cat([first["targets"], second["targets"]]),
                 "spread": torch.cat([first["spread"], second["spread"]]),
                 "source": torch.from_numpy(source), "skipped": first["skipped"] + second["skipped"]}
        if "group" in second:          # within-reference pairs: the primary crops belong to no group
            batch["group"] = torch.cat([torch.full((len(first["targets"]),), -1, dtype=torch.int64), second["group"]])
        return batch


class ReferenceGroupBatches:
    """The mix share of every step for ``--mix-pairs within-reference`` (random crops): groups of
    MIX_GROUP distinct images of one reference, each group cut at one shared window and flip, so a
    group shows the same content at different distortions; ``group`` limits the ranking to its pairs.
    A pure function of (seed, step), like FinetuneBatches."""

    def __init__(self, dataset: IQADataset, train: tuple[int, ...], prep: Preprocessing, per_batch: int,
                 flip: bool, seed: int):
        by_reference: dict[str, list[int]] = {}
        for i in train:
            by_reference.setdefault(dataset.samples[i].group, []).append(i)
        self.members = [by_reference[name] for name in sorted(by_reference) if len(by_reference[name]) >= 2]
        if not self.members:
            raise ValueError(f"within-reference mix pairs need a reference of {dataset.name} with >= 2 training images")
        self.dataset, self.prep, self.per_batch, self.flip, self.seed = dataset, prep, per_batch, flip, seed
        self.shard = (0, 1)            # (rank, world size), as FinetuneBatches.shard

    def draws(self, step: int) -> list[tuple[int, int, float, float, bool]]:
        """(sample index, group, top and left window fractions, mirrored) of every mix crop of ``step``."""
        rng = step_rng(self.seed, step, STREAM_GROUP_DRAW)
        found, group = [], 0
        while len(found) < self.per_batch:
            # group: the draw's number, not the reference's, so a reference drawn twice in one step
            # (two windows) makes two groups and no pair crosses windows
            members = self.members[int(rng.integers(0, len(self.members)))]
            size = min(MIX_GROUP, len(members), self.per_batch - len(found))
            top, left, flip_draw = rng.random(3)
            found += [(int(i), group, top, left, self.flip and flip_draw < 0.5)
                      for i in rng.choice(members, size, replace=False)]
            group += 1
        return found

    def __call__(self, step: int) -> dict:
        import torch

        crops, targets, groups, skipped = [], [], [], []
        draws = self.draws(step)
        keep = shard_range(len(draws), *self.shard)
        for position, (index, group, top, left, mirrored) in enumerate(draws):
            if position not in keep:
                continue
            sample = self.dataset.samples[index]
            try:
                pixels = croppable_pixels(sample.path, self.prep)
            except (ImageDecodeError, ValueError) as err:
                skipped.append(f"{sample.path}: {err}")
                continue
            crops.append(cut_window(pixels, self.prep.crop_size, top, left, mirrored))
            targets.append(sample.score)
            groups.append(group)
        return {**crop_batch(crops, targets, skipped, self.prep), "group": torch.tensor(groups, dtype=torch.int64)}


def mix_batches(dataset: IQADataset, train: tuple[int, ...], prep, per_batch: int, flip: bool,
                seed: int, pairs: str = "any") -> FinetuneBatches | ReferenceGroupBatches:
    """The mix set's share of every batch: ``per_batch`` crops (1 per image, or groups of one
    reference with ``pairs="within-reference"``), its own random streams."""
    if pairs == "within-reference":
        return ReferenceGroupBatches(dataset, train, prep, per_batch, flip, seed + MIX_SEED_OFFSET)
    return FinetuneBatches(dataset, train, prep, per_batch, 1, flip, seed + MIX_SEED_OFFSET)
