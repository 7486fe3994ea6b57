"""Stage-2 data: which images train/validate/test in a round, and the training batches of each step.

Splits (``pinet_training.protocol``): round r of a human-rated dataset uses
``make_split(dataset, split_seed + r, test 20%, val_fraction)``, by reference content for
synthetic sets and by image for authentic ones. The stage-1 synthetic pseudo-MOS set
(``--dataset synthetic``) is the exception: it already carries a train/val split by reference
in its manifest (the one stage 1 used), so train = the manifest's train references and the
manifest's val references are held out; they choose the epoch AND are the reported test set
(there is no third set of references), which :func:`synthetic_split` marks in ``Split.note``.

Batches: an epoch lists every training image ``crops_per_image`` times in a random order drawn
from ``step_rng(seed, epoch, STREAM_EPOCH_ORDER)``; step k takes the k-th slice of
``batch_size`` entries (the last batch of an epoch may be smaller). Each entry is decoded with
the contract's ``load_image`` (decode, orient, RGB, resize), then cropped at a random position
and flipped with probability 1/2 (``step_rng(seed, step, STREAM_AUGMENT)``), then ``normalize``d.
Everything is a pure function of (seed, step), so a resumed run sees the same batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinet_runtime.preprocess import ImageDecodeError, Preprocessing, load_image, normalize
from pinet_training.datasets import DatasetError, IQADataset
from pinet_training.protocol import Split, make_split
from pinet_training.seeding import EpochSlices, shard_range, step_rng
from pinet_training.synth_manifest import ManifestError, manifest_path, read_manifest_rows

STREAM_EPOCH_ORDER, STREAM_AUGMENT = 11, 12
STREAM_MIX_VALIDATION = 31      # step_rng stream of the --mix-val-refs draw
SYNTHETIC_NOTE = ("synthetic pseudo-MOS set: split by the manifest's own split column; the val references "
                  "choose the epoch and are also the reported test set (no third held-out set exists)")


@dataclass(frozen=True)
class RoundSplit:
    """A protocol split plus how it was made (stored in the checkpoint so `pinet eval` can redo it)."""

    split: Split
    rule: str
    note: str = ""


def synthetic_split(dataset: IQADataset) -> RoundSplit:
    """Train/val by the synthetic manifest's ``split`` column (references never cross)."""
    manifest = manifest_path(dataset.root)
    try:
        rows = read_manifest_rows(dataset.root, ("file", "split"))
    except ManifestError as err:
        raise DatasetError(manifest, f"{err.problem}; fine-tuning on the synthetic set needs its 'split' column "
                                     "(train/val by reference): regenerate it with `pinet data synth`") from None
    split_of_file = {(Path(dataset.root) / row["file"]).as_posix(): row["split"] for row in rows}
    train, val = [], []
    for index, sample in enumerate(dataset.samples):
        which = split_of_file.get(Path(sample.path).as_posix())
        if which not in ("train", "val"):
            raise DatasetError(manifest, f"split of {sample.path} is {which!r}, expected train or val")
        (train if which == "train" else val).append(index)
    if not train or not val:
        raise DatasetError(manifest, f"needs images in both splits (train: {len(train)}, val: {len(val)})")
    split = Split(dataset.name, dataset.name, -1, tuple(train), tuple(val), tuple(val))
    return RoundSplit(split, "manifest split column (train refs / val refs)", SYNTHETIC_NOTE)


def round_split(dataset: IQADataset, round_index: int, split_seed: int, val_fraction: float) -> RoundSplit:
    if dataset.name == "synthetic":
        return synthetic_split(dataset)
    seed = split_seed + round_index
    unit = "reference" if dataset.content == "synthetic" else "image"
    try:
        split = make_split(dataset, seed, val_fraction=val_fraction)
    except ValueError as err:
        raise DatasetError(dataset.root, str(err)) from None
    return RoundSplit(split, f"protocol.make_split(seed={seed}, test 20% of {unit} groups, "
                             f"val {val_fraction:.0%} of the remaining groups)")


def carve_mix_validation(mix: IQADataset, mix_split: RoundSplit, references: int) -> RoundSplit:
    """Move ``references`` of the mix set's training references (a fixed seeded draw, the same in
    every round) out of training into ``split.val``: they help choose the epoch, so they must be
    neither trained on nor the held-out references that ``split.test`` reports."""
    if references == 0:
        return mix_split
    names = sorted(groups_of(mix, mix_split.split.train))
    if references >= len(names):
        raise DatasetError(mix.root, f"--mix-val-refs {references} would leave no training references "
                                     f"(the {mix.name} set has {len(names)})")
    chosen = {names[i] for i in step_rng(0, 0, STREAM_MIX_VALIDATION).choice(len(names), references, replace=False)}
    train = tuple(i for i in mix_split.split.train if mix.samples[i].group not in chosen)
    val = tuple(i for i in mix_split.split.train if mix.samples[i].group in chosen)
    split = Split(mix_split.split.train_dataset, mix_split.split.test_dataset, mix_split.split.seed, train, val,
                  mix_split.split.test)
    return RoundSplit(split, f"{mix_split.rule}; {references} training references (seeded draw) moved to "
                             "validation: they help choose the epoch", mix_split.note)


def groups_of(dataset: IQADataset, indices) -> set[str]:
    return {dataset.samples[i].group for i in indices}


class FinetuneBatches:
    """``make_batch(step)`` for the training images ``train`` (indices into ``dataset.samples``)."""

    def __init__(self, dataset: IQADataset, train: tuple[int, ...], prep: Preprocessing, batch_size: int,
                 crops_per_image: int, flip: bool, seed: int, images_per_epoch: int | None = None):
        if not train:
            raise ValueError("the training split is empty")
        self.paths = [dataset.samples[i].path for i in train]
        self.targets = np.array([dataset.samples[i].score for i in train], dtype=np.float32)
        self.spreads = spreads_of(dataset, train)
        self.prep = prep
        self.batch_size = batch_size
        self.crops_per_image = crops_per_image
        self.flip = flip
        self.seed = seed
        # images_per_epoch: each epoch draws a fresh seeded subset (large sets, short epochs).
        self.entries_per_epoch = min(len(train), images_per_epoch or len(train)) * crops_per_image
        self.steps_per_epoch = math.ceil(self.entries_per_epoch / batch_size)
        self._slices = EpochSlices(self._epoch_order, self.steps_per_epoch, batch_size)
        # (rank, world size): with several training processes each loads its part of every batch.
        self.shard = (0, 1)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        entries = np.repeat(np.arange(len(self.paths)), self.crops_per_image)
        return step_rng(self.seed, epoch, STREAM_EPOCH_ORDER).permutation(entries)[:self.entries_per_epoch]

    def images_of_step(self, step: int) -> np.ndarray:
        return self._slices.of_step(step)

    def __call__(self, step: int) -> dict:
        rng = step_rng(self.seed, step, STREAM_AUGMENT)
        size = self.prep.crop_size
        crops, targets, spreads, skipped = [], [], [], []
        decoded: dict[int, np.ndarray] = {}        # an image drawn twice in one batch is decoded once
        entries = self.images_of_step(step)
        keep = shard_range(len(entries), *self.shard)
        for position, index in enumerate(entries):
            index = int(index)
            # Draw first, so a skipped image (or one of another process's shard) does not shift the
            # later entries' augmentation.
            top_draw, left_draw, flip_draw = rng.random(3)
            if position not in keep:
                continue
            try:
                if index not in decoded:
                    decoded[index] = croppable_pixels(self.paths[index], self.prep)
            except (ImageDecodeError, ValueError) as err:
                skipped.append(f"{self.paths[index]}: {err}")
                continue
            crops.append(cut_window(decoded[index], size, top_draw, left_draw, self.flip and flip_draw < 0.5))
            targets.append(self.targets[index])
            spreads.append(self.spreads[index])
        return crop_batch(crops, targets, skipped, self.prep, spreads)


def croppable_pixels(path: Path, prep: Preprocessing) -> np.ndarray:
    """The image as the contract loads it (uint8 HxWx3); ValueError if it is smaller than a crop."""
    pixels = np.asarray(load_image(path, prep), dtype=np.uint8)
    height, width = pixels.shape[:2]
    if height < prep.crop_size or width < prep.crop_size:
        raise ValueError(f"image {width}x{height} is smaller than the {prep.crop_size}px crop")
    return pixels


def cut_window(pixels: np.ndarray, size: int, top_draw: float, left_draw: float, mirrored: bool) -> np.ndarray:
    """The ``size`` px window at fractions (top_draw, left_draw) in [0, 1) of the free range, maybe mirrored."""
    height, width = pixels.shape[:2]
    top = min(int(top_draw * (height - size + 1)), height - size)
    left = min(int(left_draw * (width - size + 1)), width - size)
    window = pixels[top:top + size, left:left + size]
    return window[:, ::-1] if mirrored else window


def spreads_of(dataset: IQADataset, indices) -> np.ndarray:
    """The raters' standard deviations (0-1 scale) of ``indices``; 0 where the set publishes none."""
    return np.array([dataset.samples[i].score_spread or 0.0 for i in indices], dtype=np.float32)


def crop_batch(crops: list[np.ndarray], targets: list[float], skipped: list[str], prep: Preprocessing,
               spreads: list[float] | None = None) -> dict:
    """Normalised crops (N x 3 x S x S float32 tensor), their targets, the raters' standard deviations
    (``spread``, 0 when unknown) and the skipped files' messages."""
    import torch

    size = prep.crop_size
    if not crops:
        return {"crops": torch.zeros((0, 3, size, size)), "targets": torch.zeros(0), "spread": torch.zeros(0),
                "skipped": skipped}
    spreads = [0.0] * len(targets) if spreads is None else spreads
    return {"crops": torch.from_numpy(normalize(np.stack(crops), prep)),
            "targets": torch.tensor(np.array(targets, dtype=np.float32)),
            "spread": torch.tensor(np.array(spreads, dtype=np.float32)), "skipped": skipped}
