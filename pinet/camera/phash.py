"""A perceptual hash (DCT "pHash") of the pixels the runtime already decoded, for burst splitting.

The picture is reduced to 32x32 grey levels (box filter), transformed with a 2-D DCT-II, and the
8x8 lowest frequencies without the DC term give 63 bits: each is 1 when its coefficient is above
their median. Two photos of one scene (blurred, noisy or JPEG-damaged copies, small camera shake)
differ in few bits; different scenes differ in about half. It is ImageHash's ``phash`` algorithm,
written here on numpy so that no second decode and no scipy/PyWavelets dependency is needed:
docs/camera.md has the measurement that chose it and the default distance.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIDE = 32
LOW_FREQUENCIES = 8
BITS = LOW_FREQUENCIES * LOW_FREQUENCIES - 1


def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II basis: row k holds the k-th cosine sampled at the ``size`` pixel centres."""
    k = np.arange(size)[:, None]
    x = np.arange(size)[None, :]
    basis = np.cos(np.pi * (2 * x + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    basis[0] /= np.sqrt(2.0)
    return basis


_DCT = _dct_matrix(HASH_SIDE)
_WEIGHTS = 1 << np.arange(BITS, dtype=np.uint64)
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def perceptual_hash(image: Image.Image) -> int:
    """The 63-bit pHash of a Pillow image, as an int."""
    grey = np.asarray(image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)
    coefficients = (_DCT @ grey @ _DCT.T)[:LOW_FREQUENCIES, :LOW_FREQUENCIES].ravel()[1:]
    bits = coefficients > np.median(coefficients)
    return int(np.sum(_WEIGHTS[bits], dtype=np.uint64))


def distance(first: int, second: int) -> int:
    """Hamming distance: how many of the 63 bits differ."""
    return (first ^ second).bit_count()


def distances(hashes: np.ndarray, one: int) -> np.ndarray:
    """Hamming distances from ``one`` to each of ``hashes`` (a uint64 array): O(n) memory, so a
    card of thousands of shots taken within one window never needs an n x n table."""
    differing = np.ascontiguousarray(hashes ^ np.uint64(one))
    return _POPCOUNT[differing.view(np.uint8)].reshape(len(hashes), 8).sum(axis=1, dtype=np.int64)
