"""The distortion bank's registry: 25 types x 5 levels in the style of KADID-10k / KADIS-700k.

Each :class:`Distortion` record names a type, its coarse class (one of
``pinet.config.DISTORTION_CLASSES``, the stage-1 distortion head's target) and the pixel
operation that applies it (:mod:`pinet_training.distortions.ops`). Levels run 1 (mildest) to 5
(most severe). Output is a pure function of ``(image, name, level, seed)``, so a manifest row can
always be regenerated exactly.

Grouping into the 6 coarse classes follows KADID-10k's seven categories, with its "sharpness and
contrast" category folded into ``brightness_contrast`` (over-sharpening and contrast change both
alter local contrast, not content or colour).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from pinet.config import DISTORTION_CLASSES
from pinet_training.distortions import ops

LEVELS = (1, 2, 3, 4, 5)

DistortionFunction = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Distortion:
    """One distortion type. ``random`` is True when the output depends on the seed."""

    name: str
    coarse_class: str
    function: DistortionFunction
    random: bool

    @property
    def class_index(self) -> int:
        return DISTORTION_CLASSES.index(self.coarse_class)


def _entries() -> tuple[Distortion, ...]:
    table = (
        ("gaussian_blur", "blur", ops.gaussian_blur, False),
        ("lens_blur", "blur", ops.lens_blur, False),
        ("motion_blur", "blur", ops.motion_blur, True),
        ("colour_diffusion", "colour", ops.colour_diffusion, False),
        ("colour_shift", "colour", ops.colour_shift, True),
        ("colour_quantisation", "colour", ops.colour_quantisation, False),
        ("desaturation", "colour", ops.desaturation, False),
        ("oversaturation", "colour", ops.oversaturation, False),
        ("jpeg", "compression", ops.jpeg, False),
        ("jpeg2000", "compression", ops.jpeg2000, False),
        ("white_noise", "noise", ops.white_noise, True),
        ("colour_noise", "noise", ops.colour_noise, True),
        ("impulse_noise", "noise", ops.impulse_noise, True),
        ("multiplicative_noise", "noise", ops.multiplicative_noise, True),
        ("denoise", "noise", ops.denoise, True),
        ("brighten", "brightness_contrast", ops.brighten, False),
        ("darken", "brightness_contrast", ops.darken, False),
        ("mean_shift", "brightness_contrast", ops.mean_shift, False),
        ("contrast_change", "brightness_contrast", ops.contrast_change, False),
        ("over_sharpen", "brightness_contrast", ops.over_sharpen, False),
        ("jitter", "spatial", ops.jitter, True),
        ("non_eccentricity_patch", "spatial", ops.non_eccentricity_patch, True),
        ("pixelate", "spatial", ops.pixelate, False),
        ("quantisation", "spatial", ops.quantisation, False),
        ("colour_block", "spatial", ops.colour_block, True),
    )
    return tuple(Distortion(name, coarse, function, random) for name, coarse, function, random in table)


DISTORTIONS: tuple[Distortion, ...] = _entries()
_BY_NAME = {d.name: d for d in DISTORTIONS}
DISTORTION_NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get_distortion(name: str) -> Distortion:
    """The registry record for ``name``; ValueError naming the known types otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown distortion {name!r}; known: {', '.join(DISTORTION_NAMES)}") from None


def distort_array(pixels: np.ndarray, name: str, level: int, seed: int) -> np.ndarray:
    """Apply one distortion to a uint8 HxWx3 array; returns a new array of the same shape."""
    if level not in LEVELS:
        raise ValueError(f"distortion level must be 1..5, got {level}")
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 array, got {pixels.dtype} {pixels.shape}")
    distortion = get_distortion(name)
    out = distortion.function(np.ascontiguousarray(pixels), level, np.random.default_rng(seed))
    if out.shape != pixels.shape or out.dtype != np.uint8:
        raise AssertionError(f"distortion {name} returned {out.dtype} {out.shape} for {pixels.shape}")
    return out


def apply_distortion(image: Image.Image, name: str, level: int, seed: int) -> Image.Image:
    """Apply one distortion to an RGB Pillow image (deterministic given ``seed``)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    return Image.fromarray(distort_array(np.asarray(image), name, level, seed), "RGB")
