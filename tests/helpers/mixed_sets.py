"""Tiny stage-2 data made from the bundled photos: a CLIVE-like MOS set and a `pinet data synth`-style
synthetic set, plus the tiny-model finetune options the mixed-dataset tests share."""

import csv
import sys
from pathlib import Path

from PIL import Image, ImageFilter

TINY = ["--variant", "pinet_lite0", "--backbone-init", "random", "--crop-size", "64", "--resize-short-side", "72",
        "--batch-size", "6", "--crops-per-image", "1", "--lr-backbone", "1e-3", "--lr-head", "1e-3",
        "--workers", "0", "--threads", "1", "--val-fraction", "0.25", "--no-progress"]


def small(photo: Path, radius: float) -> Image.Image:
    image = Image.open(photo).convert("RGB")
    image = image.resize((round(image.width * 72 / image.height), 72), Image.Resampling.BICUBIC)
    return image.filter(ImageFilter.GaussianBlur(radius)) if radius else image


def write_clive_like(root: Path, photos: list[Path]) -> Path:
    """scores.csv with path,score,score_std,role (MOS 0-100) + one anchor row, as in the shared folder."""
    (root / "images").mkdir(parents=True)
    rows = []
    for index, photo in enumerate(photos[:6]):
        for level in range(3):
            name = f"images/{index}_{level}.jpg"
            small(photo, 1.5 * level).save(root / name, quality=90)
            rows.append([name, f"{85 - 25 * level + index:.1f}", f"{10 + 2 * index + level:.1f}", "train"])
    small(photos[6], 0).save(root / "images" / "training_t1.jpg")
    rows.append(["images/training_t1.jpg", "99.0", "10.0", "anchor"])
    with open(root / "scores.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "score", "score_std", "role"], *rows])
    return root


def write_synthetic(root: Path, photos: list[Path]) -> Path:
    """A manifest of 4 references x 3 blur levels (photos 4-7), split column by reference."""
    header = ["file", "reference", "reference_file", "distortion", "distortion_class", "class_index", "level",
              "seed", "pseudo_score", "split"]
    rows = []
    for index, photo in enumerate(photos[4:8]):
        for level in range(3):
            file = f"images/ref{index}/blur_{level}.png"
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            small(photo, 2.0 * level).save(root / file)
            rows.append([file, f"ref{index}", f"references/ref{index}.png", "gaussian_blur", "blur", 0, level, 0,
                         f"{0.95 - 0.3 * level:.2f}", "val" if index >= 2 else "train"])
    with open(root / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return root


def finetune_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pinet.cli", "train", "finetune", *args]


def settings(clive: Path, synth: Path, out: Path, **changes):
    """FinetuneSettings of a 2-epoch tiny mixed run; `changes` override single fields."""
    from pinet_training.finetune import FinetuneSettings

    base = dict(dataset="clive", root=clive, out_dir=out, variant="pinet_lite0", backbone_init="random", epochs=2,
                batch_size=6, crops_per_image=1, lr_backbone=1e-3, lr_head=1e-3, crop_size=64,
                resize_short_side="72", val_fraction=0.25, workers=0, threads=1, show_progress=False,
                mix_dataset="synthetic", mix_root=synth, mix_per_batch=2, mix_eval_max_images=4)
    base.update(changes)
    return FinetuneSettings(**base)
