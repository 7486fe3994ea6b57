"""The synthetic data set's manifest (``<out>/manifest.csv``): format, split rule, reader, writer.

Other modules train from this file, so its format is a contract:

``file,reference,reference_file,distortion,distortion_class,class_index,level,seed,pseudo_score,split``

* file: distorted image path relative to the data folder (``images/<stem>/<type>_<level>.png``)
* reference: the reference's file stem; reference_file: ``references/<stem>.png``
* distortion / distortion_class / class_index: type name, coarse class, index in DISTORTION_CLASSES
* level: 1..5; seed: the int that regenerates the image with ``apply_distortion``
* pseudo_score: 0..1, higher = better (``pinet_training.pseudo_scores``); split: train or val
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from pinet.config import DISTORTION_CLASSES
from pinet_runtime.files import write_text_atomic

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("file", "reference", "reference_file", "distortion", "distortion_class", "class_index",
                    "level", "seed", "pseudo_score", "split")
SPLITS = ("train", "val")

SPLIT_RULE = (
    "A reference (and every image made from it) is in 'val' when "
    "int(sha256(reference_stem.encode('utf-8')).hexdigest()[:8], 16) / 2**32 < val_fraction, "
    "else in 'train'. The rule depends only on the file stem, not on --seed or on which other "
    "references exist, so adding references never moves an old one to the other split."
)


def split_of(reference_stem: str, val_fraction: float) -> str:
    """The split of a reference under SPLIT_RULE."""
    bucket = int(hashlib.sha256(reference_stem.encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32
    return "val" if bucket < val_fraction else "train"


@dataclass(frozen=True)
class SynthItem:
    """One row of the manifest; ``file`` and ``reference_file`` are absolute paths."""

    file: Path
    reference: str
    reference_file: Path
    distortion: str
    distortion_class: str
    class_index: int
    level: int
    seed: int
    pseudo_score: float
    split: str


def write_manifest(data_dir: Path, rows: list[dict]) -> Path:
    """Write rows (dicts keyed by MANIFEST_COLUMNS, relative paths) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: row[column] for column in MANIFEST_COLUMNS})
    path = data_dir / MANIFEST_NAME
    write_text_atomic(path, buffer.getvalue())
    return path


def read_manifest(data_dir: str | os.PathLike) -> list[SynthItem]:
    """Read ``<data_dir>/manifest.csv``; ValueError naming the file and line on any problem."""
    root = Path(data_dir).resolve()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{path}: no manifest (run `pinet data synth --out {data_dir}` first)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path}: header {reader.fieldnames} is not {list(MANIFEST_COLUMNS)}")
        return [_parse_row(row, root, f"{path}:{reader.line_num}") for row in reader]


def _parse_row(row: dict, root: Path, where: str) -> SynthItem:
    try:
        item = SynthItem(
            file=root / row["file"], reference=row["reference"], reference_file=root / row["reference_file"],
            distortion=row["distortion"], distortion_class=row["distortion_class"],
            class_index=int(row["class_index"]), level=int(row["level"]), seed=int(row["seed"]),
            pseudo_score=float(row["pseudo_score"]), split=row["split"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: malformed row ({err})") from None
    problems = []
    if item.distortion_class not in DISTORTION_CLASSES or DISTORTION_CLASSES.index(item.distortion_class) != item.class_index:
        problems.append(f"class {item.distortion_class!r}/{item.class_index} does not match DISTORTION_CLASSES")
    if not 1 <= item.level <= 5:
        problems.append(f"level {item.level} is not 1..5")
    if not 0.0 <= item.pseudo_score <= 1.0:
        problems.append(f"pseudo_score {item.pseudo_score} is outside [0, 1]")
    if item.split not in SPLITS:
        problems.append(f"split {item.split!r} is not one of {SPLITS}")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return item


__all__ = ["MANIFEST_NAME", "MANIFEST_COLUMNS", "SPLIT_RULE", "SPLITS", "SynthItem", "split_of",
           "read_manifest", "write_manifest"]
