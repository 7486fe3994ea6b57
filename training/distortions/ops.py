"""The pixel operations behind the distortion registry (:mod:`pinet_training.distortions.registry`).

Every function takes ``(pixels, level, rng)``: ``pixels`` a uint8 HxWx3 array, ``level`` 1..5
(1 = mildest), ``rng`` a ``numpy.random.Generator`` (ignored by deterministic types) and
returns a new uint8 HxWx3 array of the same shape. Work is vectorised with numpy/scipy/Pillow;
the only Python loops run over a handful of patches or blocks, never over pixels.

The per-level parameters follow KADID-10k's generator in spirit (same families, five levels
from "just visible" to "severe"), tuned so that a full-reference metric ensemble falls
monotonically from level 1 to level 5 on natural photos (see tests/test_distortions.py).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage, signal


def _level(values: tuple, level: int):
    return values[level - 1]


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _luma(pixels: np.ndarray) -> np.ndarray:
    rgb = pixels.astype(np.float32)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _to_ycbcr(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels, "RGB").convert("YCbCr"), dtype=np.float32)


def _from_ycbcr(ycbcr: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(_to_uint8(ycbcr), "YCbCr").convert("RGB"))


def _convolve_reflect(pixels: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D convolution of each channel with reflected borders (no dark frame at the edges)."""
    pad_y, pad_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(pixels.astype(np.float32), ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="reflect")
    out = signal.fftconvolve(padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))
    return out[: pixels.shape[0], : pixels.shape[1]]


# --- blur ---------------------------------------------------------------------------------------

def gaussian_blur(pixels, level, rng):
    sigma = _level((0.7, 1.3, 2.1, 3.2, 5.0), level)
    return _to_uint8(ndimage.gaussian_filter(pixels.astype(np.float32), sigma=(sigma, sigma, 0), mode="reflect"))


def lens_blur(pixels, level, rng):
    radius = _level((1.5, 2.5, 4.0, 6.0, 8.5), level)
    size = int(np.ceil(radius)) * 2 + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    disk = (np.hypot(yy, xx) <= radius).astype(np.float32)
    return _to_uint8(_convolve_reflect(pixels, disk / disk.sum()))


def motion_blur(pixels, level, rng):
    length = _level((4, 7, 12, 18, 26), level)
    angle = rng.uniform(0.0, np.pi)
    size = length + 2 | 1
    # Rasterise a line segment by dense sampling: a few hundred points, not pixels of the image.
    t = np.linspace(-length / 2, length / 2, 8 * length)
    ys = np.rint(size // 2 + t * np.sin(angle)).astype(int)
    xs = np.rint(size // 2 + t * np.cos(angle)).astype(int)
    kernel = np.zeros((size, size), np.float32)
    np.add.at(kernel, (ys, xs), 1.0)
    return _to_uint8(_convolve_reflect(pixels, kernel / kernel.sum()))


# --- colour -------------------------------------------------------------------------------------

def colour_diffusion(pixels, level, rng):
    sigma = _level((2.0, 4.0, 7.0, 11.0, 16.0), level)
    ycbcr = _to_ycbcr(pixels)
    for channel in (1, 2):
        ycbcr[..., channel] = ndimage.gaussian_filter(ycbcr[..., channel], sigma, mode="reflect")
    return _from_ycbcr(ycbcr)


def colour_shift(pixels, level, rng):
    shift = _level((2, 4, 7, 11, 16), level)
    angle = rng.uniform(0.0, 2 * np.pi)
    dy, dx = int(round(shift * np.sin(angle))), int(round(shift * np.cos(angle)))
    out = pixels.copy()
    # Red and blue planes move in opposite directions: misregistered colour edges.
    out[..., 0] = _translate(pixels[..., 0], dy, dx)
    out[..., 2] = _translate(pixels[..., 2], -dy, -dx)
    return out


def _translate(plane: np.ndarray, dy: int, dx: int) -> np.ndarray:
    pad = max(abs(dy), abs(dx))
    padded = np.pad(plane, pad, mode="edge")
    height, width = plane.shape
    return padded[pad - dy: pad - dy + height, pad - dx: pad - dx + width]


def colour_quantisation(pixels, level, rng):
    colours = _level((64, 32, 16, 8, 4), level)
    palette_image = Image.fromarray(pixels, "RGB").quantize(
        colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return np.asarray(palette_image.convert("RGB"))


def desaturation(pixels, level, rng):
    keep = _level((0.6, 0.4, 0.25, 0.12, 0.0), level)
    gray = _luma(pixels)[..., None]
    return _to_uint8(gray + keep * (pixels.astype(np.float32) - gray))


def oversaturation(pixels, level, rng):
    gain = _level((1.6, 2.2, 3.0, 4.0, 5.5), level)
    ycbcr = _to_ycbcr(pixels)
    ycbcr[..., 1:] = 128.0 + gain * (ycbcr[..., 1:] - 128.0)
    return _from_ycbcr(ycbcr)


# --- compression --------------------------------------------------------------------------------

def jpeg(pixels, level, rng):
    quality = _level((35, 20, 12, 7, 3), level)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def jpeg2000(pixels, level, rng):
    ratio = _level((24, 48, 90, 150, 240), level)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG2000", quality_mode="rates",
                                        quality_layers=[ratio], irreversible=True)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


# --- noise --------------------------------------------------------------------------------------

def white_noise(pixels, level, rng):
    sigma = _level((5.0, 9.0, 15.0, 23.0, 35.0), level)
    return _to_uint8(pixels + rng.normal(0.0, sigma, pixels.shape))


def colour_noise(pixels, level, rng):
    """White noise in the chroma components only (KADID's "white noise in colour component")."""
    sigma = _level((8.0, 14.0, 22.0, 32.0, 46.0), level)
    ycbcr = _to_ycbcr(pixels)
    ycbcr[..., 1:] += rng.normal(0.0, sigma, ycbcr[..., 1:].shape).astype(np.float32)
    return _from_ycbcr(ycbcr)


def impulse_noise(pixels, level, rng):
    fraction = _level((0.005, 0.015, 0.035, 0.07, 0.12), level)
    out = pixels.copy()
    hit = rng.random(pixels.shape) < fraction
    out[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255).astype(np.uint8)
    return out


def multiplicative_noise(pixels, level, rng):
    sigma = _level((0.06, 0.11, 0.18, 0.27, 0.4), level)
    values = pixels.astype(np.float32)
    return _to_uint8(values * (1.0 + rng.normal(0.0, sigma, pixels.shape).astype(np.float32)))


def denoise(pixels, level, rng):
    """Noise followed by an edge-unaware smoothing denoiser: waxy, detail-free textures."""
    sigma_noise, sigma_smooth = _level(((10, 0.9), (15, 1.2), (22, 1.6), (30, 2.1), (40, 2.8)), level)
    noisy = pixels.astype(np.float32) + rng.normal(0.0, sigma_noise, pixels.shape).astype(np.float32)
    median = ndimage.median_filter(noisy, size=(3, 3, 1), mode="reflect")
    return _to_uint8(ndimage.gaussian_filter(median, sigma=(sigma_smooth, sigma_smooth, 0), mode="reflect"))


# --- brightness and contrast --------------------------------------------------------------------

def brighten(pixels, level, rng):
    gamma = _level((1.3, 1.6, 2.0, 2.6, 3.4), level)
    return _to_uint8(255.0 * (pixels / 255.0) ** (1.0 / gamma))


def darken(pixels, level, rng):
    gamma = _level((1.3, 1.6, 2.0, 2.6, 3.4), level)
    return _to_uint8(255.0 * (pixels / 255.0) ** gamma)


def mean_shift(pixels, level, rng):
    shift = _level((20.0, 35.0, 50.0, 70.0, 95.0), level)
    # Deterministic direction: away from the nearer extreme, so the shift is visible, not clipped away.
    direction = 1.0 if pixels.mean() < 127.5 else -1.0
    return _to_uint8(pixels.astype(np.float32) + direction * shift)


def contrast_change(pixels, level, rng):
    keep = _level((0.7, 0.5, 0.35, 0.22, 0.12), level)
    values = pixels.astype(np.float32)
    mean = values.mean()
    return _to_uint8(mean + keep * (values - mean))


def over_sharpen(pixels, level, rng):
    amount = _level((1.5, 3.0, 5.0, 8.0, 12.0), level)
    values = pixels.astype(np.float32)
    blurred = ndimage.gaussian_filter(values, sigma=(1.5, 1.5, 0), mode="reflect")
    return _to_uint8(values + amount * (values - blurred))


# --- spatial ------------------------------------------------------------------------------------

def jitter(pixels, level, rng):
    reach = _level((1, 2, 3, 5, 7), level)
    height, width = pixels.shape[:2]
    rows = np.arange(height)[:, None] + rng.integers(-reach, reach + 1, (height, width))
    cols = np.arange(width)[None, :] + rng.integers(-reach, reach + 1, (height, width))
    return pixels[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)]


def non_eccentricity_patch(pixels, level, rng):
    """Small patches replaced by copies of nearby content (KADID's "non-eccentricity patch")."""
    coverage = _level((0.03, 0.07, 0.14, 0.25, 0.4), level)
    height, width = pixels.shape[:2]
    patch = max(4, min(height, width) // 24)
    count = max(1, int(coverage * height * width / patch ** 2))
    out = pixels.copy()
    tops = rng.integers(0, height - patch + 1, count)
    lefts = rng.integers(0, width - patch + 1, count)
    offsets = rng.integers(-3 * patch, 3 * patch + 1, (count, 2))
    source_tops = np.clip(tops + offsets[:, 0], 0, height - patch)
    source_lefts = np.clip(lefts + offsets[:, 1], 0, width - patch)
    for top, left, src_top, src_left in zip(tops, lefts, source_tops, source_lefts):
        out[top:top + patch, left:left + patch] = pixels[src_top:src_top + patch, src_left:src_left + patch]
    return out


def pixelate(pixels, level, rng):
    factor = _level((2, 3, 5, 8, 12), level)
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels, "RGB")
    small = image.resize((max(1, width // factor), max(1, height // factor)), Image.Resampling.BOX)
    return np.asarray(small.resize((width, height), Image.Resampling.NEAREST))


def quantisation(pixels, level, rng):
    steps = _level((20, 12, 8, 5, 3), level)
    width = 255.0 / steps
    # Uniform per-channel quantiser, reconstructing at each bin's centre.
    bins = np.minimum(np.floor(pixels / width), steps - 1)
    return _to_uint8((bins + 0.5) * width)


def colour_block(pixels, level, rng):
    coverage = _level((0.01, 0.025, 0.05, 0.09, 0.15), level)
    height, width = pixels.shape[:2]
    block = max(4, min(height, width) // 16)
    count = max(1, int(round(coverage * height * width / block ** 2)))
    out = pixels.copy()
    tops = rng.integers(0, height - block + 1, count)
    lefts = rng.integers(0, width - block + 1, count)
    colours = rng.integers(0, 256, (count, 3)).astype(np.uint8)
    for top, left, colour in zip(tops, lefts, colours):
        out[top:top + block, left:left + block] = colour
    return out
