"""A tiny synth set (manifest + distorted PNGs, the layout `pinet data synth` writes), built by hand
from a few photos: references x (blur, noise, darken) x levels 1-2 at an 80 px short side, with
pseudo scores that fall with the level. Small enough for multi-process training tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

COLUMNS = ["file", "reference", "reference_file", "distortion", "distortion_class", "class_index", "level",
           "seed", "pseudo_score", "split"]
CLASSES = {"blur": (0, "blur"), "noise": (1, "noise"), "darken": (4, "brightness_contrast")}


def _distort(image: Image.Image, kind: str, level: int, rng: np.random.Generator) -> Image.Image:
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=0.8 * level))
    if kind == "noise":
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 9 * level, (image.height, image.width, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return Image.fromarray((np.asarray(image, dtype=np.float32) * (1 - 0.15 * level)).astype(np.uint8))


def make(photos: list[Path], folder: Path, val_references: int = 1) -> Path:
    rows = []
    rng = np.random.default_rng(0)
    (folder / "references").mkdir(parents=True, exist_ok=True)
    (folder / "distorted").mkdir(parents=True, exist_ok=True)
    for r, photo in enumerate(photos):
        reference = Image.open(photo).convert("RGB")
        reference = reference.resize((round(reference.width * 80 / reference.height), 80), Image.Resampling.BICUBIC)
        reference.save(folder / "references" / f"ref{r}.png")
        split = "val" if r >= len(photos) - val_references else "train"
        for kind, (class_index, class_name) in CLASSES.items():
            for level in (1, 2):
                name = f"distorted/ref{r}_{kind}_{level}.png"
                _distort(reference, kind, level, rng).save(folder / name)
                score = 0.9 - 0.3 * level - 0.05 * class_index / 4
                rows.append([name, f"ref{r}", f"references/ref{r}.png", kind, class_name, class_index, level, 7,
                             f"{score:.4f}", split])
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return folder
