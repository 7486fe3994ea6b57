"""Small generated IQA datasets in the generic CSV layout, shared by the stage-2 tests."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageFilter


def make_blur_replica(folder: Path, photos: list[Path], name: str, with_reference: bool) -> Path:
    """Each photo (short side 80) at 4 Gaussian blur levels; score 10 - 3*level (+0.1*photo), 0-11 scale."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for r, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        image = image.resize((round(image.width * 80 / image.height), 80), Image.Resampling.BICUBIC)
        for level in range(4):
            file = f"img_{r}_{level}.png"
            image.filter(ImageFilter.GaussianBlur(radius=1.5 * level)).save(folder / file)
            rows.append([file, f"{10 - 3 * level + 0.1 * r:.2f}"] + ([f"ref{r}"] if with_reference else []))
    labels = folder / f"{name}.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score"] + (["reference"] if with_reference else []))
        writer.writerows(rows)
    return labels
