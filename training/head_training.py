"""The ``--train-head-only`` side of a fine-tuning round: cached representations for the primary
set and the mix set, the batches drawn from them, and validation/test/mix scores computed from them
(see ``head_cache`` for why and how)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pinet_training.datasets import IQADataset
from pinet_training.checkpoint_evaluation import finite_quality_metrics
from pinet_training.finetune_data import spreads_of
from pinet_training.head_cache import CacheLayout, CachedBatches, cached_parts, fixed_subset, head_scores

STREAM_MIX_TRAIN = 23            # step_rng stream of the --mix-train-images subset
STREAM_MIX_HELDOUT = 7           # the same draw as finetune_report.mix_heldout_metrics


def cache_layout(settings) -> CacheLayout:
    """The cache layout a run's settings ask for (mirrored view with --flip)."""
    return CacheLayout(settings.cache_level, mirrored=settings.flip, train_last_stages=settings.train_last_stages,
                       random_views=settings.cache_random_views)


def freeze_untrained(model, layout: CacheLayout) -> list:
    """requires_grad only for the modules the layout trains; returns the frozen modules (eval mode).

    With ``layout.train_last_stages`` the backbone's last stages train their weights, but stay in
    eval mode (their BatchNorm statistics are the init's), like the rest of the backbone."""
    frozen = []
    for name, module in model.named_children():
        if name not in layout.trained_modules:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            module.eval()
            frozen.append(module)
    if layout.train_last_stages:
        for module in layout.trained_backbone_modules(model.backbone):
            for parameter in module.parameters():
                parameter.requires_grad_(True)
    return frozen


@dataclass
class HeadCache:
    layout: CacheLayout
    primary: tuple[np.ndarray, ...]     # each [len(dataset), views, crops, C, H, W]
    mix_train: tuple[int, ...] = ()     # indices into the mix dataset
    mix_train_parts: tuple[np.ndarray, ...] | None = None
    mix_heldout: tuple[int, ...] = ()
    mix_heldout_parts: tuple[np.ndarray, ...] | None = None
    mix_validation: tuple[int, ...] = ()  # --mix-val-refs: the mix images that help choose the epoch
    mix_validation_parts: tuple[np.ndarray, ...] | None = None
    files: tuple[str, ...] = ()         # the cache descriptors (<key>.json): primary, mix held-out, mix train[, mix val]

    def forward(self, model, parts):
        return self.layout.forward(model, parts)

    def batches(self, dataset: IQADataset, train, mix: IQADataset | None, batch_size: int, seed: int,
                images_per_epoch: int | None, mix_per_batch: int, mix_pairs: str = "any") -> CachedBatches:
        targets, spreads = np.array([dataset.samples[i].score for i in train]), spreads_of(dataset, train)
        if mix is None:
            return CachedBatches(self.primary, list(train), targets, batch_size, seed, images_per_epoch,
                                 spreads=spreads)
        mix_targets = np.array([mix.samples[i].score for i in self.mix_train])
        groups = [mix.samples[i].group for i in self.mix_train] if mix_pairs == "within-reference" else None
        return CachedBatches(self.primary, list(train), targets, batch_size, seed, images_per_epoch,
                             self.mix_train_parts, range(len(self.mix_train)), mix_targets, mix_per_batch, groups,
                             spreads)

    def metrics(self, model, dataset: IQADataset, indices) -> dict:
        """SRCC/KRCC/PLCC/RMSE of the images ``indices`` (contract crops, from the cache)."""
        indices = list(indices)
        scores = head_scores(model, self.primary, self.layout, indices)
        return finite_quality_metrics(scores, np.array([dataset.samples[i].score for i in indices]))

    def mix_metrics(self, model, mix: IQADataset) -> dict:
        """The held-out mix references (reported, never used to choose)."""
        return self._all_rows_metrics(model, self.mix_heldout_parts, mix, self.mix_heldout)

    def mix_validation_metrics(self, model, mix: IQADataset) -> dict:
        """The --mix-val-refs references (they help choose the epoch)."""
        return self._all_rows_metrics(model, self.mix_validation_parts, mix, self.mix_validation)

    def _all_rows_metrics(self, model, parts, mix: IQADataset, indices: tuple[int, ...]) -> dict:
        scores = head_scores(model, parts, self.layout)
        return finite_quality_metrics(scores, np.array([mix.samples[i].score for i in indices]))


def build_head_cache(settings, model, prep, dataset: IQADataset, mix: IQADataset | None, mix_split,
                     threads: int | None, say=None) -> HeadCache:
    """Load or compute every representation the round needs (the first round pays, later ones reuse)."""
    layout = cache_layout(settings)
    cache_dir = Path(settings.feature_cache) if settings.feature_cache else Path(settings.out_dir) / "feature_cache"
    primary, first = cached_parts(cache_dir, model, [s.path for s in dataset.samples], prep, layout, threads, say)
    cache = HeadCache(layout=layout, primary=primary, files=(str(first),))
    if mix is not None:
        cache.mix_train = fixed_subset(mix_split.split.train, settings.mix_train_images, STREAM_MIX_TRAIN)
        cache.mix_heldout = fixed_subset(mix_split.split.test, settings.mix_eval_max_images, STREAM_MIX_HELDOUT)

        def parts_of(indices, view_layout):
            return cached_parts(cache_dir, model, [mix.samples[i].path for i in indices], prep, view_layout,
                                threads, say)

        # Held-out and validation images are only scored (contract crops): no mirrored view. The mix
        # training images have no random views: a within-reference group shares its view's windows.
        scored_only = replace(layout, mirrored=False, random_views=0)
        cache.mix_heldout_parts, held = parts_of(cache.mix_heldout, scored_only)
        cache.mix_train_parts, trained = parts_of(cache.mix_train, replace(layout, random_views=0))
        cache.files += (str(held), str(trained))
        if settings.mix_val_refs:
            # All of the validation references' images (a few hundred).
            cache.mix_validation = tuple(mix_split.split.val)
            cache.mix_validation_parts, validation = parts_of(cache.mix_validation, scored_only)
            cache.files += (str(validation),)
    return cache
