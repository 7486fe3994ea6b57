"""The distortion bank and the pseudo-subjective scores, on real photos at small sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pinet.config import DISTORTION_CLASSES
from pinet_runtime.preprocess import Preprocessing, load_image
from pinet_training.distortions import (DISTORTION_NAMES, DISTORTIONS, LEVELS, apply_distortion, distort_array,
                                        get_distortion)
from pinet_training.pseudo_scores import pseudo_score, score_batch

PHOTOS = ("kodak_kodim05.jpg", "skimage_coffee.jpg", "kodak_kodim20.jpg")


def _photo(samples_dir: Path, name: str, short_side: int) -> np.ndarray:
    prep = Preprocessing(resize_short_side=short_side, crop_size=min(64, short_side))
    return np.asarray(load_image(samples_dir / name, prep))


def test_registry_covers_kadid_families_and_every_coarse_class():
    assert len(DISTORTIONS) >= 25
    assert len(set(DISTORTION_NAMES)) == len(DISTORTIONS)
    assert {d.coarse_class for d in DISTORTIONS} == set(DISTORTION_CLASSES)
    for distortion in DISTORTIONS:
        assert DISTORTION_CLASSES[distortion.class_index] == distortion.coarse_class
    expected = {"gaussian_blur": "blur", "lens_blur": "blur", "motion_blur": "blur", "jpeg": "compression",
                "jpeg2000": "compression", "white_noise": "noise", "impulse_noise": "noise",
                "brighten": "brightness_contrast", "darken": "brightness_contrast", "pixelate": "spatial",
                "colour_quantisation": "colour", "colour_block": "spatial"}
    for name, coarse in expected.items():
        assert get_distortion(name).coarse_class == coarse
    with pytest.raises(ValueError, match="unknown distortion"):
        get_distortion("not_a_distortion")


def test_every_type_and_level_gives_a_valid_image_of_the_same_size(samples_dir):
    photo = _photo(samples_dir, "kodak_kodim07.jpg", 128)
    crop = photo[10:106, 20:148]  # 96 x 128, odd offsets so nothing is aligned to blocks
    source = Image.fromarray(np.ascontiguousarray(crop), "RGB")
    for name in DISTORTION_NAMES:
        for level in LEVELS:
            out = apply_distortion(source, name, level, seed=3)
            assert out.mode == "RGB" and out.size == (128, 96), (name, level)
            pixels = np.asarray(out)
            assert pixels.dtype == np.uint8
            assert not np.array_equal(pixels, crop), f"{name} level {level} left the image unchanged"


def test_bad_arguments_are_refused_with_a_clear_message():
    image = Image.new("RGB", (32, 32), (90, 120, 150))
    with pytest.raises(ValueError, match="level"):
        apply_distortion(image, "jpeg", 6, seed=0)
    with pytest.raises(ValueError, match="RGB"):
        apply_distortion(image.convert("L"), "jpeg", 1, seed=0)


@pytest.mark.slow
def test_levels_get_monotonically_worse_in_pseudo_score(samples_dir):
    ladders = {}
    for photo_name in PHOTOS:
        photo = _photo(samples_dir, photo_name, 128)
        for name in DISTORTION_NAMES:
            distorted = [distort_array(photo, name, level, seed=11) for level in LEVELS]
            ladders[(name, photo_name)] = [s.score for s in score_batch(photo, distorted)]
    monotone = [all(a > b for a, b in zip(scores, scores[1:])) for scores in ladders.values()]
    assert sum(monotone) / len(monotone) >= 0.9, [key for key, ok in zip(ladders, monotone) if not ok]
    for name in DISTORTION_NAMES:
        first = np.mean([ladders[(name, p)][0] for p in PHOTOS])
        last = np.mean([ladders[(name, p)][-1] for p in PHOTOS])
        assert first > last, f"{name}: level 1 scores {first:.3f}, level 5 {last:.3f}"
    assert all(0.0 <= s <= 1.0 for scores in ladders.values() for s in scores)


def test_pseudo_score_is_one_for_the_reference_itself_and_lower_for_a_distortion(samples_dir):
    photo = _photo(samples_dir, "skimage_astronaut.jpg", 200)  # above the 192 px metric resolution: downscaled path
    assert pseudo_score(photo, photo.copy()) == pytest.approx(1.0, abs=1e-4)
    breakdown = score_batch(photo, [distort_array(photo, "white_noise", 4, seed=0)])[0]
    assert set(breakdown.mapped) == {"ms_ssim", "vif_p", "gmsd", "haarpsi"}
    assert breakdown.score == pytest.approx(np.mean(list(breakdown.mapped.values())), abs=1e-6)
    assert 0.2 < breakdown.score < 0.95


def test_same_seed_same_pixels_different_seed_differs_only_for_random_types(samples_dir):
    photo = _photo(samples_dir, "kodak_kodim15.jpg", 80)
    for distortion in DISTORTIONS:
        first = distort_array(photo, distortion.name, 3, seed=123)
        again = distort_array(photo, distortion.name, 3, seed=123)
        other = distort_array(photo, distortion.name, 3, seed=124)
        assert np.array_equal(first, again), distortion.name
        if distortion.random:
            assert not np.array_equal(first, other), f"{distortion.name} ignores its seed"
        else:
            assert np.array_equal(first, other), f"{distortion.name} is marked deterministic but uses the seed"
