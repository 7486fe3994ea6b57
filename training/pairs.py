"""Stage-1 training pairs: which two distorted images form a pair, and how they become tensors.

A pair is two distorted versions of the SAME reference whose pseudo scores differ by more than
``margin``; its label is 0 when the first image is the better one (higher pseudo score), 1 when
the second is (PINetStage1's convention). Labels are exactly balanced: the sampler puts the
better image first in one half of the pairs and second in the other half.

Pairs never cross the train/val split, which is by reference (the manifest's ``split`` column).

Both images of a pair are decoded with the checkpoint's preprocessing (``load_image``: the
synthetic data is already at the training resolution, so the resize is a no-op for it), then
cut at the SAME random position and flipped together (they show the same content), and
normalised with ``normalize``. Every random choice comes from ``step_rng(seed, step)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pinet_runtime.preprocess import ImageDecodeError, Preprocessing, load_image, make_crops, normalize
from pinet_training.seeding import EpochSlices, shard_range, step_rng
from pinet_training.synth_manifest import ManifestError, manifest_path, read_manifest

# Pseudo scores closer than this are treated as a tie and never paired (see docs/experiments.md).
DEFAULT_MARGIN = 0.05
# Separate random streams (seeding.step_rng's ``stream``) so batch choice and augmentation never correlate.
STREAM_EPOCH_ORDER, STREAM_AUGMENT, STREAM_VAL_PAIRS = 1, 2, 3


@dataclass(frozen=True)
class PairItem:
    """What pair sampling needs from one manifest row."""

    file: Path
    reference: str
    class_index: int
    pseudo_score: float
    split: str


def read_pair_items(data_dir: str | Path) -> list[PairItem]:
    """Read ``<data_dir>/manifest.csv`` (the format `pinet data synth` writes) for pair sampling."""
    rows = read_manifest(data_dir)
    if not rows:
        raise ManifestError(manifest_path(data_dir), "the manifest lists no images")
    return [PairItem(file=row.file, reference=row.reference, class_index=row.class_index,
                     pseudo_score=row.pseudo_score, split=row.split) for row in rows]


def check_files_exist(items: list[PairItem]) -> None:
    """Fail early, naming the first few missing images, instead of hours into a run."""
    missing = [str(item.file) for item in items if not item.file.is_file()]
    if missing:
        raise ManifestError(f"{len(missing)} images listed in the manifest are missing, e.g. {missing[:3]}")


class PairSampler:
    """Pairs within one split. ``pairs`` arrays are int64 [N, 3]: (first index, second index, label)."""

    def __init__(self, items: list[PairItem], split: str, margin: float):
        self.items = items
        self.margin = margin
        self.split = split
        chosen = [i for i, item in enumerate(items) if item.split == split]
        by_reference: dict[str, list[int]] = {}
        for index in chosen:
            by_reference.setdefault(items[index].reference, []).append(index)
        scores = np.array([item.pseudo_score for item in items])
        # Every image's eligible partners: same reference, score gap above the margin.
        self.partners: dict[int, np.ndarray] = {}
        for members in by_reference.values():
            group = np.array(sorted(members))
            for index in group:
                eligible = group[np.abs(scores[group] - scores[index]) > margin]
                if eligible.size:
                    self.partners[int(index)] = eligible
        self.anchors = np.array(sorted(self.partners), dtype=np.int64)
        self.references = sorted(by_reference)

    def __len__(self) -> int:
        """Pairs per epoch: one per image that has at least one eligible partner."""
        return int(self.anchors.size)

    def _pairs_for(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        partners = np.array([self.partners[int(a)][rng.integers(self.partners[int(a)].size)] for a in anchors],
                            dtype=np.int64)
        scores = np.array([item.pseudo_score for item in self.items])
        better = np.where(scores[anchors] > scores[partners], anchors, partners)
        worse = np.where(scores[anchors] > scores[partners], partners, anchors)
        labels = rng.permutation(np.arange(anchors.size) % 2)      # exactly balanced (+-1)
        first = np.where(labels == 0, better, worse)
        second = np.where(labels == 0, worse, better)
        return np.stack([first, second, labels]).T.astype(np.int64)

    def epoch_pairs(self, rng: np.random.Generator) -> np.ndarray:
        """Every eligible image once as an anchor, in random order, each with a random partner."""
        if not self.anchors.size:
            return np.zeros((0, 3), dtype=np.int64)
        return self._pairs_for(rng.permutation(self.anchors), rng)

    def sample_pairs(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` pairs (anchors without replacement while they last): the fixed validation set."""
        if not self.anchors.size or count <= 0:
            return np.zeros((0, 3), dtype=np.int64)
        anchors = rng.choice(self.anchors, size=count, replace=count > self.anchors.size)
        return self._pairs_for(anchors, rng)


class PairBatches:
    """``make_batch(step)``: the training batch of a step, a pure function of (seed, step).

    Steps are grouped in epochs of ``len(sampler) // batch_size`` steps; epoch ``e`` uses the pair
    order drawn from ``step_rng(seed, e, STREAM_EPOCH_ORDER)``.
    """

    def __init__(self, sampler: PairSampler, prep: Preprocessing, batch_size: int, seed: int):
        if len(sampler) < batch_size:
            raise ValueError(f"only {len(sampler)} training pairs exist (margin {sampler.margin}), fewer than "
                             f"one batch of {batch_size}: lower --batch-size or --margin, or add data")
        self.sampler = sampler
        self.prep = prep
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(sampler) // batch_size
        self._slices = EpochSlices(self._epoch_pairs, self.steps_per_epoch, batch_size)
        # (rank, world size): with several training processes each loads its part of every batch.
        self.shard = (0, 1)

    def _epoch_pairs(self, epoch: int) -> np.ndarray:
        return self.sampler.epoch_pairs(step_rng(self.seed, epoch, STREAM_EPOCH_ORDER))

    def pairs_of_step(self, step: int) -> np.ndarray:
        return self._slices.of_step(step)

    def __call__(self, step: int) -> dict:
        rng = step_rng(self.seed, step, STREAM_AUGMENT)
        pairs = self.pairs_of_step(step)
        return load_pair_batch(self.sampler.items, pairs, self.prep, rng, shard_range(len(pairs), *self.shard))


def random_pair_crops(pixels1: np.ndarray, pixels2: np.ndarray, crop: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same random crop position and the same horizontal flip for both images of a pair."""
    height = min(pixels1.shape[0], pixels2.shape[0])
    width = min(pixels1.shape[1], pixels2.shape[1])
    if height < crop or width < crop:
        raise ValueError(f"image {width}x{height} is smaller than the {crop}px crop")
    top = int(rng.integers(height - crop + 1))
    left = int(rng.integers(width - crop + 1))
    flip = bool(rng.random() < 0.5)
    out = []
    for pixels in (pixels1, pixels2):
        window = pixels[top:top + crop, left:left + crop]
        out.append(window[:, ::-1] if flip else window)
    return out[0], out[1]


def load_pair_batch(items: list[PairItem], pairs: np.ndarray, prep: Preprocessing,
                    rng: np.random.Generator, keep: range | None = None) -> dict:
    """Decode, crop, flip and normalise a batch of pairs. A pair with an unreadable image is
    dropped from the batch (the same one on every run) and reported under ``skipped``. ``keep``:
    the positions to load (one process's shard); every pair's draw is made all the same."""
    import torch

    first, second, labels, classes1, classes2, skipped = [], [], [], [], [], []
    for position, (index1, index2, label) in enumerate(pairs):
        # Draw the augmentation before decoding so a skipped pair does not shift later pairs' draws.
        draw = np.random.default_rng(rng.integers(2 ** 63))
        if keep is not None and position not in keep:
            continue
        item1, item2 = items[int(index1)], items[int(index2)]
        try:
            pixels1 = np.asarray(load_image(item1.file, prep), dtype=np.uint8)
            pixels2 = np.asarray(load_image(item2.file, prep), dtype=np.uint8)
            crop1, crop2 = random_pair_crops(pixels1, pixels2, prep.crop_size, draw)
        except (ImageDecodeError, ValueError) as err:
            skipped.append(f"{item1.file} / {item2.file}: {err}")
            continue
        first.append(crop1)
        second.append(crop2)
        labels.append(int(label))
        classes1.append(item1.class_index)
        classes2.append(item2.class_index)
    if not first:
        size = prep.crop_size
        empty = torch.zeros((0, 3, size, size))
        return {"image1": empty, "image2": empty, "rank": torch.zeros(0, dtype=torch.long),
                "class1": torch.zeros(0, dtype=torch.long), "class2": torch.zeros(0, dtype=torch.long),
                "skipped": skipped}
    return {"image1": torch.from_numpy(normalize(np.stack(first), prep)),
            "image2": torch.from_numpy(normalize(np.stack(second), prep)),
            "rank": torch.tensor(labels, dtype=torch.long),
            "class1": torch.tensor(classes1, dtype=torch.long),
            "class2": torch.tensor(classes2, dtype=torch.long),
            "skipped": skipped}


def load_val_pair_batch(items: list[PairItem], pairs: np.ndarray, prep: Preprocessing) -> dict:
    """Validation pairs: the contract's fixed centre crop, no flip (same pixels on every run)."""
    import torch

    centre = replace(prep, crop_layout="center")
    first, second, kept, skipped = [], [], [], []
    for row in pairs:
        item1, item2 = items[int(row[0])], items[int(row[1])]
        try:
            crop1 = make_crops(load_image(item1.file, centre), centre)[0]
            crop2 = make_crops(load_image(item2.file, centre), centre)[0]
        except (ImageDecodeError, ValueError) as err:
            skipped.append(f"{item1.file} / {item2.file}: {err}")
            continue
        first.append(crop1)
        second.append(crop2)
        kept.append(row)
    kept_rows = np.array(kept, dtype=np.int64).reshape(-1, 3)
    size = prep.crop_size
    return {"image1": torch.from_numpy(np.stack(first)) if first else torch.zeros((0, 3, size, size)),
            "image2": torch.from_numpy(np.stack(second)) if second else torch.zeros((0, 3, size, size)),
            "rank": torch.from_numpy(kept_rows[:, 2].copy()),
            "class1": torch.tensor([items[int(i)].class_index for i in kept_rows[:, 0]], dtype=torch.long),
            "class2": torch.tensor([items[int(i)].class_index for i in kept_rows[:, 1]], dtype=torch.long),
            "skipped": skipped}
