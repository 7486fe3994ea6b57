"""The synth set's manifest (``<out>/manifest.csv``): format, split rule, reader, writer.

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
from typing import Sequence

from pinet.config import DISTORTION_CLASSES
from pinet_runtime.errors import PinetError
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


class ManifestError(PinetError):
    """The data folder's manifest is missing or malformed; the message names the file and line."""


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
    return write_text_atomic(manifest_path(data_dir), buffer.getvalue())


def manifest_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / MANIFEST_NAME


def read_manifest_rows(data_dir: str | os.PathLike,
                       columns: Sequence[str] = MANIFEST_COLUMNS) -> list[dict[str, str]]:
    """The rows of ``<data_dir>/manifest.csv`` as dicts (names and values stripped), in file order, so
    row i is on line i + 2. Only ``columns`` must be present: a manifest made by another tool may
    carry just the ones its reader needs. ManifestError names the file and the problem."""
    path = manifest_path(data_dir)
    if not path.is_file():
        raise ManifestError(path, f"no manifest (run `pinet data synth --out {data_dir}` first)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or ()]
            missing = [name for name in columns if name not in header]
            if missing:
                raise ManifestError(path, f"header {header} is not a manifest's: it lacks {missing}")
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except UnicodeDecodeError as err:
        raise ManifestError(path, f"is not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise ManifestError(path, f"is not a valid CSV file ({err})") from None


def read_manifest(data_dir: str | os.PathLike) -> list[SynthItem]:
    """Every row of the manifest `pinet data synth` writes, checked; ManifestError naming the file and line."""
    root = Path(data_dir).resolve()
    rows = read_manifest_rows(root)
    path = manifest_path(root)
    return [_parse_row(row, root, f"{path}:{line}") for line, row in enumerate(rows, start=2)]


def _parse_row(row: dict, root: Path, where: str) -> SynthItem:
    try:
        item = SynthItem(
            file=root / row["file"], reference=row["reference"], reference_file=root / row["reference_file"],
            distortion=row["distortion"], distortion_class=row["distortion_class"],
            class_index=int(row["class_index"]), level=int(row["level"]), seed=int(row["seed"]),
            pseudo_score=float(row["pseudo_score"]), split=row["split"])
    except (TypeError, ValueError) as err:
        raise ManifestError(where, f"malformed row ({err})") from None
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
        raise ManifestError(where, "; ".join(problems))
    return item


__all__ = ["MANIFEST_NAME", "MANIFEST_COLUMNS", "SPLIT_RULE", "SPLITS", "SynthItem", "ManifestError", "split_of",
           "manifest_path", "read_manifest", "read_manifest_rows", "write_manifest"]
