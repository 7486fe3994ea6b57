"""``--cache-random-views K``: K more cached views of every primary training image, each as many crops
as the contract at seeded random windows of the same resized image (mirrored at random). The crops
are windows of the contract's image, the same on a rebuild, distinct per view; the contract views
stay exactly what they were; the mix sets get none; training draws them."""

from dataclasses import replace

import numpy as np
import pytest

from pinet_runtime.preprocess import Preprocessing, normalize
from pinet_training.head_cache import CacheLayout, cache_key, random_view_crops


def _positions(crop: np.ndarray, image: np.ndarray, size: int) -> list[tuple[int, int, bool]]:
    """Every (top, left, mirrored) window of the normalised ``image`` [3, H, W] equal to ``crop``."""
    found = []
    for top in range(image.shape[1] - size + 1):
        for left in range(image.shape[2] - size + 1):
            window = image[:, top:top + size, left:left + size]
            found += [(top, left, mirrored) for mirrored, view in ((False, window), (True, window[..., ::-1]))
                      if np.array_equal(view, crop)]
    return found


def test_random_view_crops_are_windows_of_the_resized_image():
    prep = Preprocessing(crop_size=16)
    pixels = np.random.default_rng(3).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    image = normalize(pixels, prep)
    crops = random_view_crops(pixels, prep, image_index=7, view=0, count=5)
    assert crops.shape == (5, 3, 16, 16) and crops.dtype == np.float32
    windows = [_positions(crop, image, 16) for crop in crops]
    assert all(len(found) == 1 for found in windows)              # random pixels: one window matches
    assert len({found[0][:2] for found in windows}) == 5           # five different windows
    mirrored = [found[0][2] for found in [_positions(c, image, 16) for v in range(4)
                                          for c in random_view_crops(pixels, prep, 7, v, 5)]]
    assert 0 < sum(mirrored) < len(mirrored)                       # some mirrored, some not
    assert np.array_equal(crops, random_view_crops(pixels, prep, 7, 0, 5))          # a rebuild: the same
    assert not np.array_equal(crops, random_view_crops(pixels, prep, 7, 1, 5))      # another view
    assert not np.array_equal(crops, random_view_crops(pixels, prep, 8, 0, 5))      # another image


def test_random_views_change_the_cache_key_and_are_checked(tmp_path):
    prep, paths = Preprocessing(), [tmp_path / "a.png"]
    keys = {cache_key("f" * 64, CacheLayout("taps", mirrored=m, random_views=r), prep, paths)
            for m, r in ((False, 1), (True, 0), (True, 1), (True, 2))}
    assert len(keys) == 4                   # 2 views mirrored or 2 views with one random are different caches
    assert CacheLayout("taps", mirrored=True, random_views=3).views == 5
    with pytest.raises(ValueError, match="random views must be >= 0"):
        CacheLayout("taps", random_views=-1)


def test_settings_need_the_head_only_path(clive_like, synthetic, mixed_sets, tmp_path):
    from pinet_training.finetune import FinetuneError
    from pinet_training.finetune_settings import check_settings, compared_settings, load_data

    with pytest.raises(FinetuneError, match="--cache-random-views adds cached views: it needs --train-head-only"):
        check_settings(mixed_sets.settings(clive_like, synthetic, tmp_path, cache_random_views=2))
    settings = mixed_sets.settings(clive_like, synthetic, tmp_path, train_head_only=True, cache_random_views=2)
    check_settings(settings)
    dataset = load_data(settings)
    assert compared_settings(settings, "pinet_lite0", dataset, None, {}, 0, 0)["cache_random_views"] == 2
    assert "cache_random_views" not in compared_settings(replace(settings, cache_random_views=0), "pinet_lite0",
                                                         dataset, None, {}, 0, 0)


@pytest.mark.slow
def test_head_only_run_caches_and_draws_the_random_views(clive_like, synthetic, mixed_sets, tmp_path):
    from pinet_training.finetune import load_data, load_mix, prepare_round, run_finetune
    from pinet_training.head_cache import open_cache

    init_settings = mixed_sets.settings(clive_like, synthetic, tmp_path / "init", epochs=1, train_on_all=True)
    run_finetune(init_settings, lambda _: None)
    common = dict(init=str(tmp_path / "init" / "best.safetensors"), variant=None, backbone_init="auto",
                  resize_short_side="72", train_head_only=True, mix_train_images=4, cache_level="taps",
                  train_last_stages=1, epochs=1, epoch_choice="last")   # a 1-epoch tiny model may tie on validation
    plain = mixed_sets.settings(clive_like, synthetic, tmp_path / "plain", feature_cache=tmp_path / "c0", **common)
    extra = mixed_sets.settings(clive_like, synthetic, tmp_path / "extra", feature_cache=tmp_path / "c2",
                                cache_random_views=2, **common)
    prepared = {name: prepare_round(s, load_data(s), 0, load_mix(s)) for name, s in (("plain", plain), ("extra", extra))}
    cache, base = prepared["extra"].cache, prepared["plain"].cache
    assert [p.shape[1] for p in (cache.primary[0], cache.mix_train_parts[0], cache.mix_heldout_parts[0])] == [4, 2, 1]
    for random, contract in zip(cache.primary, base.primary):
        assert np.array_equal(random[:, :2], contract)                   # contract + mirrored views unchanged
        assert not np.array_equal(random[:, 2], random[:, 0]) and not np.array_equal(random[:, 2], random[:, 3])
    assert np.array_equal(cache.mix_train_parts[0], base.mix_train_parts[0])   # the mix keeps its two views
    batches = prepared["extra"].batches
    views = np.concatenate([batches._draw(step)[1] for step in range(4 * batches.steps_per_epoch)])
    assert set(views.tolist()) == {0, 1, 2, 3}                           # training draws every view
    results, _ = run_finetune(extra, lambda _: None)
    assert np.isfinite(results[0]["test"]["rmse"])
    assert len([open_cache(d) for d in sorted((tmp_path / "c2").glob("*.json"))]) == 3
