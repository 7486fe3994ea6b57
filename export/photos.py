"""Real photos for calibration and validation, and deterministic degraded versions of them.

Everything goes through the preprocessing contract (pinet_runtime.preprocess), so calibration,
the parity check and the runtime see the same pixels. Never random tensors.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from pinet_runtime.preprocess import ImageDecodeError, Preprocessing, load_image, make_crops

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Degradations used to spread the scores for the INT8 ranking gate; fixed parameters and seed.
DEGRADATIONS = ("gaussian_blur_r3", "jpeg_q10", "gaussian_noise_s25")
# Calibration sees degraded photos too (an IQA model must score bad photos, and their activations
# reach ranges clean photos never do), with other strengths than the gate's so that validation
# stays a check on unseen conditions (docs/export.md: run B's model failed the gate without them).
CALIBRATION_DEGRADATIONS = ("gaussian_blur_r2", "jpeg_q20", "gaussian_noise_s15")
_KIND = re.compile(r"(gaussian_blur_r|jpeg_q|gaussian_noise_s)(\d+)")
_NOISE_SEED = 20240521


@dataclass
class PhotoCrops:
    name: str             # file name, plus "#flip", "#resized" or "#<degradation>" for variants
    crops: np.ndarray     # float32 [N, 3, S, S] from the contract


@dataclass
class PhotoSet:
    photos: list[PhotoCrops]
    skipped: list[str]    # "path: problem" for files that could not be read


def bundled_samples_dir() -> Path:
    """runtime/assets/samples: 8 redistributable real photos shipped with the package."""
    return Path(str(resources.files("pinet_runtime") / "assets" / "samples"))


def list_photos(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_photos(paths: list[Path], prep: Preprocessing) -> tuple[list[tuple[str, Image.Image]], list[str]]:
    """Decode + resize each photo by the contract; unreadable files are skipped and reported."""
    loaded, skipped = [], []
    for path in paths:
        try:
            loaded.append((path.name, load_image(path, prep)))
        except (ImageDecodeError, ValueError) as err:
            skipped.append(str(err) if str(path) in str(err) else f"{path}: {err}")
    return loaded, skipped


def _crops(name: str, image: Image.Image, prep: Preprocessing, skipped: list[str]) -> PhotoCrops | None:
    try:
        return PhotoCrops(name, make_crops(image, prep))
    except ValueError as err:  # smaller than a crop
        skipped.append(f"{name}: {err}")
        return None


def parity_photos(paths: list[Path], prep: Preprocessing, minimum: int) -> PhotoSet:
    """Crops of every photo; when fewer than ``minimum`` are readable, add each one's horizontal
    flip and then a 0.6x-downscaled copy (re-enlarged by the contract) until ``minimum`` is met."""
    loaded, skipped = load_photos(paths, prep)
    images = list(loaded)
    for suffix, transform in (("#flip", ImageOps.mirror),
                              ("#resized", lambda im: im.resize((max(1, int(im.width * 0.6)),
                                                                 max(1, int(im.height * 0.6))),
                                                                Image.Resampling.BICUBIC))):
        if len(images) >= minimum:
            break
        images += [(name + suffix, transform(image)) for name, image in loaded]
    photos = []
    for name, image in images:
        if "#resized" in name:
            image = load_image(image, prep)  # back through the contract's resize
        crops = _crops(name, image, prep, skipped)
        if crops is not None:
            photos.append(crops)
    return PhotoSet(photos, skipped)


def degrade(image: Image.Image, kind: str) -> Image.Image:
    """One deterministic degradation of an RGB image (same input -> same output). ``kind``:
    ``gaussian_blur_r<radius>``, ``jpeg_q<quality 1-95>`` or ``gaussian_noise_s<sigma>``."""
    match = _KIND.fullmatch(kind)
    if match is None:
        raise ValueError(f"unknown degradation {kind!r} (gaussian_blur_r<N>, jpeg_q<N> or gaussian_noise_s<N>)")
    family, strength = match.group(1), int(match.group(2))
    if family == "gaussian_blur_r":
        return image.filter(ImageFilter.GaussianBlur(radius=strength))
    if family == "jpeg_q":
        if not 1 <= strength <= 95:
            raise ValueError(f"unknown degradation {kind!r}: JPEG quality must be 1-95")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=strength)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    rng = np.random.default_rng(_NOISE_SEED)
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, float(strength), pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


def ranking_photos(paths: list[Path], prep: Preprocessing,
                   degradations: tuple[str, ...] = DEGRADATIONS) -> PhotoSet:
    """Each photo plus its ``degradations``, applied after the contract's resize so the crops see
    them at model resolution: a range of qualities for the INT8 rank-fidelity (SRCC) gate."""
    loaded, skipped = load_photos(paths, prep)
    photos = []
    for name, image in loaded:
        for variant_name, variant in [(name, image), *((f"{name}#{k}", degrade(image, k)) for k in degradations)]:
            crops = _crops(variant_name, variant, prep, skipped)
            if crops is not None:
                photos.append(crops)
    return PhotoSet(photos, skipped)


def calibration_crops(paths: list[Path], prep: Preprocessing, count: int,
                      degradations: tuple[str, ...] = ()) -> tuple[np.ndarray, list[str], int]:
    """Up to ``count`` contract crops of the given real photos and of their ``degradations``
    (each photo's variants next to it), spread evenly over all of them.

    Returns (crops [M,3,S,S], skipped files, number of photos used)."""
    photos = ranking_photos(paths, prep, degradations)
    if not photos.photos:
        return np.zeros((0, 3, prep.crop_size, prep.crop_size), np.float32), photos.skipped, 0
    every = np.concatenate([p.crops for p in photos.photos])
    if len(every) > count:
        every = every[np.linspace(0, len(every) - 1, count).round().astype(int)]
    return every, photos.skipped, len({p.name.split("#")[0] for p in photos.photos})
