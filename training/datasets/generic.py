"""Sets without a published layout: a generic CSV with a declared scale, and the synth set (pseudo-MOS)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pinet_training.datasets.common import (
    DatasetError, IQADataset, ScoreScale, make_dataset, parse_float, parse_spread, require_file, require_root,
)
from pinet_training.datasets.tables import read_csv_table
from pinet_training.synth_manifest import MANIFEST_NAME, ManifestError, read_manifest_rows

GENERIC_CSV_NAME = "scores.csv"
CSV_ROLES = ("train", "anchor")
PSEUDO_SCORE_SCALE = ScoreScale(low=0.0, high=1.0, higher_is_better=True, label="pseudo-MOS (0-1)")


@dataclass(frozen=True)
class CsvScale:
    """What a generic CSV's ``score`` column means; the file itself cannot say."""

    low: float
    high: float
    higher_is_better: bool
    label: str = "score"                   # what the number is called (MOS, DMOS...): --csv-label

    def to_scale(self) -> ScoreScale:
        return ScoreScale(low=self.low, high=self.high, higher_is_better=self.higher_is_better,
                          label=f"{self.label} ({self.low:g}-{self.high:g}, "
                                f"{'higher' if self.higher_is_better else 'lower'} is better)")


def csv_name(labels: Path) -> str:
    """The dataset's name: the CSV's stem, or its folder's name for the default ``scores.csv``."""
    return labels.parent.resolve().name if labels.name == GENERIC_CSV_NAME else labels.stem


def load_generic_csv(root: Path | str, scale: CsvScale | ScoreScale, include_anchors: bool = False,
                     name: str | None = None) -> IQADataset:
    """A CSV with header ``path,score[,reference][,role]``. ``root`` is the CSV file itself or a folder
    holding ``scores.csv``; relative paths are resolved against the CSV's folder. With a non-empty
    ``reference`` column the set is of content kind ``synthetic`` and grouped by reference; without,
    every image is its own group (``authentic``).

    ``role`` (optional): ``train`` rows are the data; ``anchor`` rows (e.g. the images raters
    practised on before a study) are left out unless ``include_anchors``; any other role is an error.
    ``score_std`` (optional): the raters' standard deviation on the score's scale; when the column is
    there every kept row needs a value (it feeds ``--rank-targets thurstone``). Other columns are ignored."""
    root = Path(root).expanduser()
    if root.is_file():
        labels = root
    else:
        labels = require_file(require_root(root, "generic CSV"), [GENERIC_CSV_NAME], "generic score file")
    table = read_csv_table(labels, ["path", "score"])
    has_reference = bool(table) and all(row.get("reference") for row in table)
    has_spread = bool(table) and "score_std" in table[0]
    rows, spreads = [], []
    for line, row in enumerate(table, start=2):
        role = row.get("role", "train") or "train"
        if role not in CSV_ROLES:
            raise DatasetError(labels, f"line {line}: role {role!r} is not one of {', '.join(CSV_ROLES)}")
        if role == "anchor" and not include_anchors:
            continue
        if not row["path"]:
            raise DatasetError(labels, f"line {line}: empty path")
        path = Path(row["path"]).expanduser()
        path = path if path.is_absolute() else labels.parent / path
        group = row["reference"] if has_reference else row["path"]
        rows.append((path, parse_float(row["score"], labels, line), group))
        if has_spread:
            spreads.append(parse_spread(row["score_std"], labels, line))
    content = "synthetic" if has_reference else "authentic"
    native = scale.to_scale() if isinstance(scale, CsvScale) else scale
    return make_dataset(name or csv_name(labels), labels.parent, rows, native, content, labels,
                        raw_spreads=spreads if has_spread else None)


def load_synth_set(root: Path | str) -> IQADataset:
    """The synth set (``--dataset synthetic``): ``<root>/manifest.csv`` with header file, reference,
    reference_file, distortion, distortion_class, class_index, level, seed, pseudo_score, split.
    Only file, reference and pseudo_score (0-1, higher is better) are needed here; the split
    column is optional and ignored (the protocol makes its own splits by reference)."""
    root = require_root(root, "synth set")
    labels = require_file(root, [MANIFEST_NAME], "synth-set manifest")
    try:
        table = read_manifest_rows(root, ("file", "reference", "pseudo_score"))
    except ManifestError as err:
        raise DatasetError(err.subject, err.problem) from None
    rows = [(root / row["file"], parse_float(row["pseudo_score"], labels, line), row["reference"])
            for line, row in enumerate(table, start=2)]
    return make_dataset("synthetic", root, rows, PSEUDO_SCORE_SCALE, "synthetic", labels)
