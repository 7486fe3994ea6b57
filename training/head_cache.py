"""``--train-head-only``: fine-tune the part above a frozen trunk on cached representations.

Two cache levels (``--cache-level``):

- ``features``: backbone and staircase stay exactly as in the init; the cache holds the fused 7x7
  representation ``R`` of every crop, and the quality/distortion branches, their cross-gating and
  the regressor train on it (``PINetStage2.forward_head``).
- ``taps``: only the backbone stays fixed; the cache holds its five taps f1..f5 (float16, ~4.4 MB
  per Lite0 image with mirrored crops) and the staircase trains too. The multi-scale fusion is
  where a frozen ImageNet backbone's low-level detail reaches the score, so this level learns
  human quality far better than ``features`` (docs/experiments.md).

Because the frozen part is a fixed function of the crop, it runs ONCE per image (onnxruntime FP32)
and training steps then cost only the trained part, so a 2-core CPU can afford many epochs and
split rounds. Crops: each image's contract crops (``preprocess``: resize, then the fixed centre +
corner windows) and, with ``--flip`` (the default), their mirror images as a second view, and with
``--cache-random-views K`` (the primary set only) K more views of as many crops at seeded random
windows of the same resized image, each crop mirrored at random: more distinct crops to train on
than the contract's fixed windows, for the price of K more cached views. Training
draws (image, view, crop); an image's score is the mean over its contract crops (view 0), i.e.
exactly what the full model computes with the contract. The cache key hashes the frozen tensors,
the level, the views, the pixel contract and the image list, so a cache is never reused for other
weights, another contract or other images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pinet_runtime.errors import PinetError
from pinet_runtime.files import atomic_path, write_text_atomic
from pinet_runtime.preprocess import ImageDecodeError, Preprocessing, load_image, make_crops, normalize
from pinet_training.finetune_data import cut_window
from pinet_training.mixed import MIX_GROUP
from pinet_training.seeding import shard_range, step_rng

SCORE_FIELDS = ("score_name", "score_range", "higher_is_better")     # do not change a crop's pixels
LEVELS = ("features", "taps")


class CacheError(PinetError):
    """An image of the cache could not be read, or a cache file is unusable (the message names it)."""

STREAM_RANDOM_VIEW = 24          # step_rng stream of the random views' windows (23: head_training's mix subset)
TRAINABLE_STAGES = (0, 1, 2, 3)   # backbone stages --train-head-only --cache-level taps can train

@dataclass(frozen=True)
class CacheLayout:
    """What is cached: ``level`` (features | taps) and whether mirrored crops are a second view."""

    level: str = "features"
    mirrored: bool = False
    # taps only: the backbone's last N stages train, recomputing taps f5 (N = 1), f4 and f5 (N = 2)
    # or f3 to f5 (N = 3) from the cached tap before them
    train_last_stages: int = 0
    # views after the contract's (and its mirror's): crops at seeded random windows (training only)
    random_views: int = 0

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"cache level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.train_last_stages not in TRAINABLE_STAGES:
            raise ValueError(f"the backbone stages to train must be one of {TRAINABLE_STAGES}, "
                             f"got {self.train_last_stages}")
        if self.train_last_stages and self.level != "taps":
            raise ValueError("training the backbone's last stages needs the taps cache level")
        if self.random_views < 0:
            raise ValueError(f"the random views must be >= 0, got {self.random_views}")

    def recomputed_taps(self, tap_count: int) -> range:
        """The 1-based taps the trained backbone stages recompute (the last ``train_last_stages``)."""
        return range(tap_count + 1 - self.train_last_stages, tap_count + 1)

    def trained_backbone_modules(self, backbone) -> list:
        """The backbone modules this layout trains (the last ``train_last_stages`` stages)."""
        return [module for tap in self.recomputed_taps(len(backbone.tap_channels))
                for module in backbone.stage_modules(tap)]

    @property
    def frozen_prefixes(self) -> tuple[str, ...]:
        return ("backbone.", "staircase.") if self.level == "features" else ("backbone.",)

    @property
    def trained_modules(self) -> tuple[str, ...]:
        head = ("quality_branch", "distortion_branch", "regressor")
        return head if self.level == "features" else ("staircase", *head)

    @property
    def dtype(self):
        # Taps are ~30x larger than R; float16 keeps a CLIVE-sized cache in memory (scores move < 1e-3).
        return np.float16 if self.level == "taps" else np.float32

    @property
    def views(self) -> int:
        return (2 if self.mirrored else 1) + self.random_views

    def forward(self, model, parts):
        """Scores of cached crops (a tuple of tensors, one per cached array)."""
        if self.level == "features":
            return model.forward_head(parts[0])
        parts = list(parts)
        for tap in self.recomputed_taps(len(parts)):
            x = parts[tap - 2]
            for module in model.backbone.stage_modules(tap):
                x = module(x)
            parts[tap - 1] = x
        return model.forward_head(model.staircase(tuple(parts)))


def fixed_subset(indices: Sequence[int], count: int | None, stream: int) -> tuple[int, ...]:
    """A fixed seeded subset (sorted) of ``count`` of ``indices``; all of them when count is None or larger."""
    if count is None or len(indices) <= count:
        return tuple(indices)
    chosen = step_rng(0, 0, stream).choice(len(indices), count, replace=False)
    return tuple(indices[i] for i in sorted(chosen))


def frozen_digest(model, layout: CacheLayout) -> str:
    """sha256 of the frozen tensors (names, shapes, values): the part whose outputs are cached."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(layout.frozen_prefixes):
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def cache_key(frozen_sha256: str, layout: CacheLayout, prep: Preprocessing, paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(frozen_sha256.encode())
    digest.update(f"{layout.level}/{layout.views}".encode())
    if layout.random_views:          # else 2 views could be mirrored or random ones (keys of older caches kept)
        digest.update(f"/random{layout.random_views}".encode())
    pixels = {k: v for k, v in json.loads(prep.to_json()).items() if k not in SCORE_FIELDS}
    digest.update(json.dumps(pixels, sort_keys=True).encode())
    for path in paths:
        digest.update(f"\n{Path(path).resolve().as_posix()}".encode())
    return digest.hexdigest()[:24]


def frozen_module(model, layout: CacheLayout):
    """The frozen part as a module with one output per cached array (R, or f1..f5)."""
    import torch

    class _Frozen(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if layout.level == "features":
                return (self.inner.forward_features(x),)
            return tuple(self.inner.forward_taps(x))

    return _Frozen(model)


def compute_parts(model, paths: Sequence[Path], prep: Preprocessing, layout: CacheLayout, threads: int | None,
                  say=None) -> list[np.ndarray]:
    """The cached arrays, each [N, views, crops, C, H, W] in ``layout.dtype``."""
    from pinet_training.onnx_eval import OnnxScorer

    count = 1 if layout.level == "features" else len(model.config.tap_channels)
    scorer = OnnxScorer(frozen_module(model, layout).eval(), threads, [f"part{i}" for i in range(count)])
    arrays = None
    for index, path in enumerate(paths):
        try:
            image = load_image(path, prep)
            crops = make_crops(image, prep)
            views = [crops] if not layout.mirrored else [crops, crops[..., ::-1]]
            if layout.random_views:
                pixels = np.asarray(image, dtype=np.uint8)
                views += [random_view_crops(pixels, prep, index, view, crops.shape[0])
                          for view in range(layout.random_views)]
        except (ImageDecodeError, ValueError) as err:
            raise CacheError(f"{path}: {err}") from None
        outputs = scorer.run(np.concatenate(views))
        if arrays is None:
            arrays = [np.empty((len(paths), layout.views, crops.shape[0], *o.shape[1:]), layout.dtype)
                      for o in outputs]
        for array, output in zip(arrays, outputs):
            array[index] = output.reshape(layout.views, crops.shape[0], *output.shape[1:])
        if say is not None and index % 200 == 0:
            say(f"feature cache: {index + 1}/{len(paths)} images")
    return arrays


def random_view_crops(pixels: np.ndarray, prep: Preprocessing, image_index: int, view: int,
                      count: int) -> np.ndarray:
    """``count`` normalised crops of the resized image ``pixels`` at random windows, each mirrored at
    random; a pure function of (image_index, view), so a rebuilt cache holds the same crops."""
    rng = step_rng(image_index, view, STREAM_RANDOM_VIEW)
    windows = [cut_window(pixels, prep.crop_size, top, left, mirror < 0.5) for top, left, mirror in rng.random((count, 3))]
    return normalize(np.stack(windows), prep)


def open_cache(descriptor: Path) -> tuple[np.ndarray, ...]:
    """The arrays a cache descriptor (``<key>.json``) lists, memory-mapped."""
    descriptor = Path(descriptor)
    try:
        record = json.loads(descriptor.read_text())
        return tuple(np.load(descriptor.parent / name, mmap_mode="r") for name in record["arrays"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CacheError(f"{descriptor}: not a readable feature cache ({err})") from None


def cached_parts(cache_dir: Path, model, paths: Sequence[Path], prep: Preprocessing, layout: CacheLayout,
                 threads: int | None, say=None) -> tuple[tuple[np.ndarray, ...], Path]:
    """Load ``<cache_dir>/<key>.json``'s arrays or compute and store them (atomically, descriptor last)."""
    cache_dir = Path(cache_dir)
    frozen = frozen_digest(model, layout)
    key = cache_key(frozen, layout, prep, paths)
    descriptor = cache_dir / f"{key}.json"
    if descriptor.is_file():
        return open_cache(descriptor), descriptor
    arrays = compute_parts(model, list(paths), prep, layout, threads, say=say)
    names = [f"{key}.npy"] if len(arrays) == 1 else [f"{key}.f{i + 1}.npy" for i in range(len(arrays))]
    for name, array in zip(names, arrays):
        with atomic_path(cache_dir / name) as temporary, open(temporary, "wb") as stream:
            np.save(stream, array)  # a file object: np.save would append .npy to a path
    write_text_atomic(descriptor, json.dumps({"frozen_sha256": frozen, "level": layout.level, "views": layout.views,
                                              "images": len(paths), "arrays": names,
                                              "shapes": [list(a.shape) for a in arrays],
                                              "first": str(paths[0]) if paths else None}))
    return open_cache(descriptor), descriptor


def read_rows(array: np.ndarray, rows: np.ndarray, *index: np.ndarray) -> np.ndarray:
    """float32 ``array[rows, *index]`` (index arrays as long as ``rows``), read in sorted row order:
    much faster on a memory map; the result keeps the order asked for."""
    order = np.argsort(rows, kind="stable")
    picked = np.asarray(array[(rows[order], *(i[order] for i in index))], dtype=np.float32)
    return picked[np.argsort(order, kind="stable")]


class CachedBatches:
    """``make_batch(step)``: cached crops of (image, view, crop) draws; a pure function of (seed, step).

    ``parts``/``rows``: the cached arrays and the rows of the primary training images, with their
    ``targets`` (and ``spreads``, the raters' standard deviations, 0 when unknown); ``mix_parts``/
    ``mix_rows`` (optional): the same for the mix set, ``mix_per_batch`` draws per step."""

    STREAM_ORDER, STREAM_CROP = 21, 22

    def __init__(self, parts: tuple[np.ndarray, ...], rows: Sequence[int], targets: np.ndarray, batch_size: int,
                 seed: int, images_per_epoch: int | None, mix_parts: tuple[np.ndarray, ...] | None = None,
                 mix_rows: Sequence[int] = (), mix_targets: np.ndarray | None = None, mix_per_batch: int = 0,
                 mix_groups: Sequence[str] | None = None, spreads: np.ndarray | None = None):
        if len(rows) == 0:
            raise ValueError("the training split is empty")
        self.parts, self.rows = parts, np.asarray(rows, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.spreads = np.zeros_like(self.targets) if spreads is None else np.asarray(spreads, dtype=np.float32)
        self.mix_parts, self.mix_rows = mix_parts, np.asarray(mix_rows, dtype=np.int64)
        self.mix_targets = None if mix_targets is None else np.asarray(mix_targets, dtype=np.float32)
        self.mix_per_batch = mix_per_batch if mix_parts is not None else 0
        # mix_groups (e.g. the synth set's references): the mix draws come in groups of MIX_GROUP
        # images of one group, same crop and view, and only pairs within a group are ranked.
        self.mix_members = None
        if mix_groups is not None:
            names = sorted(set(mix_groups))
            members = [np.flatnonzero(np.asarray(mix_groups) == name) for name in names]
            self.mix_members = [m for m in members if len(m) >= 2]
            if not self.mix_members:
                raise ValueError("within-group mix pairs need a group with >= 2 mix training images")
        self.batch_size = batch_size - self.mix_per_batch
        self.seed = seed
        self.entries_per_epoch = min(len(rows), images_per_epoch or len(rows))
        self.steps_per_epoch = -(-self.entries_per_epoch // self.batch_size)
        # (rank, world size): with several training processes each takes its contiguous part of
        # every batch (primary then mix draws, in that order); the draws are the whole batch's.
        self.shard = (0, 1)

    @staticmethod
    def _take(parts, rows, views, crops) -> list[np.ndarray]:
        return [read_rows(part, rows, views, crops) for part in parts]

    def _draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = step_rng(self.seed, epoch, self.STREAM_ORDER).permutation(len(self.rows))[:self.entries_per_epoch]
        images = order[within * self.batch_size:(within + 1) * self.batch_size]
        rng = step_rng(self.seed, step, self.STREAM_CROP)
        crops = rng.integers(0, self.parts[0].shape[2], len(images))
        views = rng.integers(0, self.parts[0].shape[1], len(images)) if self.parts[0].shape[1] > 1 \
            else np.zeros(len(images), np.int64)
        return images, views, crops

    def __call__(self, step: int) -> dict:
        import torch

        images, views, crops = self._draw(step)
        parts = self._take(self.parts, self.rows[images], views, crops)
        targets, spreads = [self.targets[images]], [self.spreads[images]]
        source = [np.zeros(len(images), np.int64)]
        groups = [np.full(len(images), -1, np.int64)]
        if self.mix_per_batch:
            picks, mix_groups, mix_views, mix_crops = self._draw_mix(step)
            mixed = self._take(self.mix_parts, self.mix_rows[picks], mix_views, mix_crops)
            parts = [np.concatenate([a, b]) for a, b in zip(parts, mixed)]
            targets.append(self.mix_targets[picks])
            spreads.append(np.zeros(self.mix_per_batch, np.float32))
            source.append(np.ones(self.mix_per_batch, np.int64))
            groups.append(mix_groups)
        keep = shard_range(len(parts[0]), *self.shard)
        part = slice(keep.start, keep.stop)
        batch = {"features": tuple(torch.from_numpy(np.ascontiguousarray(p[part])) for p in parts),
                 "targets": torch.from_numpy(np.concatenate(targets)[part]),
                 "spread": torch.from_numpy(np.concatenate(spreads)[part]),
                 "source": torch.from_numpy(np.concatenate(source)[part]), "skipped": []}
        if self.mix_members is not None:
            batch["group"] = torch.from_numpy(np.concatenate(groups)[part])
        return batch

    def _draw_mix(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(picks, group of each pick, views, crops) of the mix share of one step."""
        rng = step_rng(self.seed, step, self.STREAM_CROP + 100)
        count, shape = self.mix_per_batch, self.mix_parts[0].shape
        if self.mix_members is None:
            return (rng.integers(0, len(self.mix_rows), count), np.zeros(count, np.int64),
                    rng.integers(0, shape[1], count), rng.integers(0, shape[2], count))
        picks, groups, views, crops = [], [], [], []
        while len(picks) < count:
            group = int(rng.integers(0, len(self.mix_members)))
            members = self.mix_members[group]
            size = min(MIX_GROUP, len(members), count - len(picks))
            picks += list(rng.choice(members, size, replace=False))
            groups += [group] * size
            views += [int(rng.integers(0, shape[1]))] * size
            crops += [int(rng.integers(0, shape[2]))] * size
        return np.array(picks), np.array(groups), np.array(views), np.array(crops)


def head_scores(model, parts: tuple[np.ndarray, ...], layout: CacheLayout, rows: Sequence[int] | None = None,
                batch_images: int = 16) -> np.ndarray:
    """Mean output over each image's contract crops (view 0) from the cache: the contract's image score."""
    import torch

    rows = np.arange(len(parts[0])) if rows is None else np.asarray(rows, dtype=np.int64)
    scores = np.empty(len(rows), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(rows), batch_images):
            chunk = rows[start:start + batch_images]
            tensors = []
            for part in parts:
                block = read_rows(part, chunk, np.zeros(len(chunk), np.int64))          # view 0: contract crops
                tensors.append(torch.from_numpy(block.reshape(-1, *block.shape[2:])))
            crops = parts[0].shape[2]
            out = layout.forward(model, tensors).double().numpy().reshape(len(chunk), crops)
            scores[start:start + len(chunk)] = out.mean(axis=1)
    return scores
