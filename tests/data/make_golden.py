"""Regenerates the golden preprocessing arrays. Run only when the contract changes on purpose:
    python tests/data/make_golden.py
The input image is synthetic (gradients + seeded noise) so it can be committed freely."""

from pathlib import Path

import numpy as np
from PIL import Image

from pinet_runtime.preprocess import Preprocessing, preprocess

HERE = Path(__file__).parent
GOLDEN_PREPROCESSING = Preprocessing(resize_short_side=40, crop_size=32, crop_layout="center_corners")


def make_input() -> Image.Image:
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:45, 0:60]
    base = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.float64)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


if __name__ == "__main__":
    make_input().save(HERE / "golden_input.png")
    np.save(HERE / "golden_crops.npy", preprocess(HERE / "golden_input.png", GOLDEN_PREPROCESSING))
    print("wrote", HERE / "golden_input.png", HERE / "golden_crops.npy")
