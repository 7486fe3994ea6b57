"""``--train-head-only``: fine-tune only the score head on cached representations.

The backbone and the staircase stay exactly as in the init checkpoint; what trains is the
quality and distortion branches, their cross-gating and the regressor (``PINetStage2.forward_head``).
Because the frozen part is a fixed function of the crop, the fused 7x7 representation ``R`` of
every crop the run will ever see is computed ONCE (onnxruntime FP32 of ``forward_features``) and
kept in ``<cache dir>/<key>.npy``; training steps and validation/test scoring then cost only the
head (milliseconds), so a 2-core CPU can afford many epochs and many split rounds.

Crops: each image's contract crops (``preprocess``: resize, then the fixed centre + corner
windows). Training draws (image, crop) pairs from them; the score of an image is the mean of the
head over its crops, i.e. exactly what the full model computes with the contract. The cache key
is a hash of the init checkpoint, the contract and the image list, so a cache is never reused
for other weights, another contract or other images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from pinet_runtime.errors import PinetError
from pinet_runtime.files import atomic_path, write_text_atomic
from pinet_runtime.preprocess import ImageDecodeError, Preprocessing, preprocess
from pinet_training.seeding import step_rng


SCORE_FIELDS = ("score_name", "score_range", "higher_is_better")     # do not change a crop's pixels


def fixed_subset(indices: Sequence[int], count: int | None, stream: int) -> tuple[int, ...]:
    """A fixed seeded subset (sorted) of ``count`` of ``indices``; all of them when count is None or larger."""
    if count is None or len(indices) <= count:
        return tuple(indices)
    chosen = step_rng(0, 0, stream).choice(len(indices), count, replace=False)
    return tuple(indices[i] for i in sorted(chosen))


class CacheError(PinetError):
    """An image of the cache could not be read (the message names it)."""


def cache_key(init_sha256: str, prep: Preprocessing, paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(init_sha256.encode())
    pixels = {k: v for k, v in json.loads(prep.to_json()).items() if k not in SCORE_FIELDS}
    digest.update(json.dumps(pixels, sort_keys=True).encode())
    for path in paths:
        digest.update(f"\n{Path(path).resolve().as_posix()}".encode())
    return digest.hexdigest()[:24]


class FeaturePart:
    """The frozen part (backbone + staircase) as a module for export."""

    def __new__(cls, model):
        import torch

        class _Features(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner.forward_features(x)

        return _Features(model)


def compute_features(model, paths: Sequence[Path], prep: Preprocessing, threads: int | None,
                     batch_images: int = 8, say=None) -> np.ndarray:
    """R of every contract crop of every image: float32 [N, crops, C, 7, 7]."""
    import torch

    from pinet_training.onnx_eval import OnnxScorer

    scorer = OnnxScorer(FeaturePart(model).eval(), threads)
    out = None
    for start in range(0, len(paths), batch_images):
        chunk = paths[start:start + batch_images]
        crops = []
        for path in chunk:
            try:
                crops.append(preprocess(path, prep))
            except (ImageDecodeError, ValueError) as err:
                raise CacheError(f"{path}: {err}") from None
        per_image = crops[0].shape[0]
        features = scorer(torch.from_numpy(np.concatenate(crops))).numpy()
        if out is None:
            out = np.empty((len(paths), per_image, *features.shape[1:]), dtype=np.float32)
        out[start:start + len(chunk)] = features.reshape(len(chunk), per_image, *features.shape[1:])
        if say is not None and (start // batch_images) % 25 == 0:
            say(f"feature cache: {start + len(chunk)}/{len(paths)} images")
    return out


def cached_features(cache_dir: Path, init_sha256: str, model, paths: Sequence[Path], prep: Preprocessing,
                    threads: int | None, say=None) -> tuple[np.ndarray, Path]:
    """Load ``<cache_dir>/<key>.npy`` or compute and store it (atomically); returns (features, file)."""
    cache_dir = Path(cache_dir)
    key = cache_key(init_sha256, prep, paths)
    target = cache_dir / f"{key}.npy"
    if target.is_file():
        return np.load(target, mmap_mode="r"), target
    features = compute_features(model, list(paths), prep, threads, say=say)
    with atomic_path(target) as temporary, open(temporary, "wb") as stream:
        np.save(stream, features)  # a file object: np.save would append .npy to a path
    write_text_atomic(cache_dir / f"{key}.json", json.dumps({"init_sha256": init_sha256, "images": len(paths),
                                                             "shape": list(features.shape),
                                                             "first": str(paths[0]) if paths else None}))
    return features, target


class CachedBatches:
    """``make_batch(step)``: R of (image, crop) draws for one step; a pure function of (seed, step).

    ``primary``: features of the primary training images [n, crops, ...] and their targets;
    ``mix`` (optional): the same for the mix set, ``mix_per_batch`` draws per step."""

    STREAM_ORDER, STREAM_CROP = 21, 22

    def __init__(self, features: np.ndarray, targets: np.ndarray, batch_size: int, seed: int,
                 images_per_epoch: int | None, mix_features: np.ndarray | None = None,
                 mix_targets: np.ndarray | None = None, mix_per_batch: int = 0):
        if len(features) == 0:
            raise ValueError("the training split is empty")
        self.features, self.targets = features, np.asarray(targets, dtype=np.float32)
        self.mix_features = mix_features
        self.mix_targets = None if mix_targets is None else np.asarray(mix_targets, dtype=np.float32)
        self.mix_per_batch = mix_per_batch if mix_features is not None else 0
        self.batch_size = batch_size - self.mix_per_batch
        self.seed = seed
        self.entries_per_epoch = min(len(features), images_per_epoch or len(features))
        self.steps_per_epoch = -(-self.entries_per_epoch // self.batch_size)

    def _draw(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = step_rng(self.seed, epoch, self.STREAM_ORDER).permutation(len(self.features))[:self.entries_per_epoch]
        images = order[within * self.batch_size:(within + 1) * self.batch_size]
        crops = step_rng(self.seed, step, self.STREAM_CROP).integers(0, self.features.shape[1], len(images))
        return images, crops

    def __call__(self, step: int) -> dict:
        import torch

        images, crops = self._draw(step)
        parts = [np.asarray(self.features[images, crops])]
        targets = [self.targets[images]]
        source = [np.zeros(len(images), np.int64)]
        if self.mix_per_batch:
            rng = step_rng(self.seed, step, self.STREAM_CROP + 100)
            mix_images = rng.integers(0, len(self.mix_features), self.mix_per_batch)
            mix_crops = rng.integers(0, self.mix_features.shape[1], self.mix_per_batch)
            parts.append(np.asarray(self.mix_features[mix_images, mix_crops]))
            targets.append(self.mix_targets[mix_images])
            source.append(np.ones(self.mix_per_batch, np.int64))
        return {"features": torch.from_numpy(np.concatenate(parts).astype(np.float32)),
                "targets": torch.from_numpy(np.concatenate(targets)), "source": torch.from_numpy(np.concatenate(source)),
                "skipped": []}


def head_scores(model, features: np.ndarray, batch_images: int = 64) -> np.ndarray:
    """Mean head output over each image's cached crops (the contract's image score), float64 [N]."""
    import torch

    scores = np.empty(len(features), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(features), batch_images):
            chunk = np.array(features[start:start + batch_images], dtype=np.float32)
            flat = torch.from_numpy(chunk.reshape(-1, *chunk.shape[2:]))
            out = model.forward_head(flat).double().numpy().reshape(len(chunk), chunk.shape[1])
            scores[start:start + len(chunk)] = out.mean(axis=1)
    return scores
