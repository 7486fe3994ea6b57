"""Authentically distorted datasets (every image its own content group): KonIQ-10k, CLIVE, SPAQ."""

from __future__ import annotations

import re
from pathlib import Path

from pinet_training.datasets.common import (
    DatasetError, IQADataset, ScoreScale, make_dataset, parse_float, require_dir, require_file, require_root,
)
from pinet_training.datasets.generic import GENERIC_CSV_NAME, load_generic_csv
from pinet_training.datasets.tables import (
    load_mat_variable, mat_numbers, mat_strings, read_csv_table, read_xlsx_table,
)

KONIQ_SCALE = ScoreScale(low=1.0, high=5.0, higher_is_better=True, label="MOS (1-5)")
CLIVE_SCALE = ScoreScale(low=0.0, high=100.0, higher_is_better=True, label="MOS (0-100)")
SPAQ_SCALE = ScoreScale(low=0.0, high=100.0, higher_is_better=True, label="MOS (0-100)")

# CLIVE's label files also list the 7 practice images shown to raters before the study
# (Images/trainingImages/t1.bmp..t7.bmp); the literature's 1162-image set leaves them out.
_CLIVE_PRACTICE_IMAGE = re.compile(r"^t\d+\.bmp$", re.IGNORECASE)


def load_koniq10k(root: Path | str) -> IQADataset:
    """KonIQ-10k: ``koniq10k_scores_and_distributions.csv`` (image_name, c1..c5, c_total, MOS, SD,
    MOS_zscore) and the images in ``1024x768/`` (or the ``512x384/`` release). Uses ``MOS`` (1-5).
    The paper's recipe resizes to 512x384 first, so the suggested short side is 384."""
    root = require_root(root, "KonIQ-10k")
    labels = require_file(root, ["koniq10k_scores_and_distributions.csv"], "KonIQ-10k label file")
    images = root / "1024x768"
    if not images.is_dir() and (root / "512x384").is_dir():
        images = root / "512x384"
    images = require_dir(root, images.name, "KonIQ-10k image")
    rows = []
    for line, row in enumerate(read_csv_table(labels, ["image_name", "MOS"]), start=2):
        name = row["image_name"]
        rows.append((images / name, parse_float(row["MOS"], labels, line), name))
    return make_dataset("koniq10k", root, rows, KONIQ_SCALE, "authentic", labels, resize_short_side=384)


def load_clive(root: Path | str, include_anchors: bool = False) -> IQADataset:
    """LIVE In the Wild Challenge, in either layout:

    - the project's CSV layout: ``scores.csv`` with ``path,score[,score_std],role`` (MOS 0-100,
      higher is better; ``role`` train or anchor) - the 7 anchor (practice) rows are left out
      unless ``include_anchors``;
    - the release's layout: ``Data/AllImages_release.mat`` (cell array ``AllImages_release`` of
      file names), ``Data/AllMOS_release.mat`` (``AllMOS_release``, MOS 0-100, same order) and the
      images in ``Images/``. The 7 practice images (t1..t7.bmp) are excluded (always)."""
    root = require_root(root, "LIVE Challenge (CLIVE)")
    if (root / GENERIC_CSV_NAME).is_file() and not (root / "Data").is_dir():
        return load_generic_csv(root, CLIVE_SCALE, include_anchors=include_anchors, name="clive")
    names_file = require_file(root, ["Data/AllImages_release.mat"], "CLIVE image-name file")
    mos_file = require_file(root, ["Data/AllMOS_release.mat"], "CLIVE MOS file")
    images = require_dir(root, "Images", "CLIVE image")
    names = mat_strings(load_mat_variable(names_file, "AllImages_release"))
    scores = mat_numbers(load_mat_variable(mos_file, "AllMOS_release"))
    if len(names) != len(scores):
        raise DatasetError(mos_file, f"has {len(scores)} scores but {names_file.name} lists {len(names)} images")
    rows = [(images / name, score, name) for name, score in zip(names, scores)
            if not _CLIVE_PRACTICE_IMAGE.match(name)]
    return make_dataset("clive", root, rows, CLIVE_SCALE, "authentic", names_file)


def load_spaq(root: Path | str) -> IQADataset:
    """SPAQ: ``Annotations/MOS and Image attribute scores.xlsx`` (columns ``Image name``, ``MOS``,
    then the five attribute scores; a .csv export with the same columns is also accepted) and the
    photos in ``TestImage/``. Smartphone photos are large, so the usual short side 512 is suggested."""
    root = require_root(root, "SPAQ")
    labels = require_file(root, ["Annotations/MOS and Image attribute scores.xlsx",
                                 "Annotations/MOS and Image attribute scores.csv"], "SPAQ label file")
    images = require_dir(root, "TestImage", "SPAQ image")
    rows = []
    if labels.suffix == ".xlsx":
        table = read_xlsx_table(labels, ["Image name", "MOS"])
        for number, row in enumerate(table, start=1):
            name = str(row["image name"]).strip()
            rows.append((images / name, parse_float(row["mos"], labels, f"row {number}"), name))
    else:
        for line, row in enumerate(read_csv_table(labels, ["Image name", "MOS"]), start=2):
            rows.append((images / row["Image name"], parse_float(row["MOS"], labels, line), row["Image name"]))
    return make_dataset("spaq", root, rows, SPAQ_SCALE, "authentic", labels, resize_short_side=512)
