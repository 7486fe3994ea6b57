"""The lab-distorted databases: KADID-10k, LIVE Release 2, CSIQ and TID2013.

Each is a published set of pristine reference photos distorted in the lab (blur, noise, JPEG...)
and rated by people; the content group of an image is its reference, and the content kind is
``"synthetic"`` (the literature's word for such distortions; see :mod:`pinet_training.datasets`).
"""

from __future__ import annotations

import re
from pathlib import Path

from pinet_training.datasets.common import (
    CaseInsensitiveFolder, DatasetError, IQADataset, ScoreScale, make_dataset, parse_float, require_dir,
    require_file, require_root,
)
from pinet_training.datasets.tables import (
    load_mat_variable, mat_numbers, mat_strings, read_csv_table, read_text_lines, read_xlsx_table,
)

KADID_SCALE = ScoreScale(low=1.0, high=5.0, higher_is_better=True, label="DMOS (1-5, named dmos, higher is better)")
LIVE_SCALE = ScoreScale(low=0.0, high=100.0, higher_is_better=False, label="DMOS (0-100, lower is better)")
CSIQ_SCALE = ScoreScale(low=0.0, high=1.0, higher_is_better=False, label="DMOS (0-1, lower is better)")
TID2013_SCALE = ScoreScale(low=0.0, high=9.0, higher_is_better=True, label="MOS (0-9)")

# LIVE Release 2 orders its 982 labels folder by folder in this order (227+233+174+174+174).
LIVE_FOLDERS = ("jp2k", "jpeg", "wn", "gblur", "fastfading")
_LIVE_IMAGE = re.compile(r"^img(\d+)\.bmp$", re.IGNORECASE)

# CSIQ's dst_idx numbering and the type token its file names carry (1600.AWGN.1.png, 1600.jpeg2000.1.png...).
CSIQ_TYPES = {1: ("awgn", "AWGN"), 2: ("jpeg", "JPEG"), 3: ("jpeg2000", "jpeg2000"),
              4: ("fnoise", "fnoise"), 5: ("blur", "BLUR"), 6: ("contrast", "contrast")}
CSIQ_COLUMNS = ("image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos")

_TID_NAME = re.compile(r"^(i\d+)_\d+_\d+\.bmp$", re.IGNORECASE)


def load_kadid10k(root: Path | str) -> IQADataset:
    """KADID-10k: ``dmos.csv`` (dist_img, ref_img, dmos, var) and ``images/`` holding both the
    distorted (I01_01_01.png) and reference (I01.png) images. ``dmos`` is 1-5, higher is better."""
    root = require_root(root, "KADID-10k")
    labels = require_file(root, ["dmos.csv"], "KADID-10k label file")
    images = require_dir(root, "images", "KADID-10k image")
    rows = [(images / row["dist_img"], parse_float(row["dmos"], labels, line), row["ref_img"])
            for line, row in enumerate(read_csv_table(labels, ["dist_img", "ref_img", "dmos"]), start=2)]
    return make_dataset("kadid10k", root, rows, KADID_SCALE, "synthetic", labels)


def load_live(root: Path | str) -> IQADataset:
    """LIVE Release 2: ``dmos_realigned.mat`` (``dmos_new``, ``orgs``; preferred) or ``dmos.mat``
    (``dmos``, ``orgs``), ``refnames_all.mat`` (``refnames_all``) and the folders jp2k, jpeg, wn,
    gblur, fastfading of img<N>.bmp files. Labels run folder by folder in that order; entries with
    orgs == 1 are the reference copies and are left out (779 distorted images remain)."""
    root = require_root(root, "LIVE Release 2")
    labels = require_file(root, ["dmos_realigned.mat", "dmos.mat"], "LIVE DMOS file")
    score_variable = "dmos_new" if labels.name == "dmos_realigned.mat" else "dmos"
    dmos = mat_numbers(load_mat_variable(labels, score_variable))
    originals = mat_numbers(load_mat_variable(labels, "orgs"))
    refnames_file = require_file(root, ["refnames_all.mat"], "LIVE reference-name file")
    refnames = mat_strings(load_mat_variable(refnames_file, "refnames_all"))
    if not len(dmos) == len(originals) == len(refnames):
        raise DatasetError(labels, f"{score_variable} has {len(dmos)} entries, orgs {len(originals)}, "
                                   f"refnames_all {len(refnames)}: they must match")
    entries = []  # (path, folder) in label order
    for folder_name in LIVE_FOLDERS:
        folder = require_dir(root, folder_name, "LIVE distortion")
        count = _live_folder_size(folder)
        entries += [(folder / f"img{n}.bmp", folder) for n in range(1, count + 1)]
    if len(entries) != len(dmos):
        raise DatasetError(labels, f"has {len(dmos)} labels but the folders {LIVE_FOLDERS} hold {len(entries)} "
                                   "img<N>.bmp images (published: 227+233+174+174+174 = 982)")
    _check_live_info(entries, refnames)
    rows = [(path, score, refname) for (path, _), score, is_original, refname
            in zip(entries, dmos, originals, refnames) if not is_original]
    return make_dataset("live", root, rows, LIVE_SCALE, "synthetic", labels)


def _live_folder_size(folder: Path) -> int:
    """Images in a LIVE folder are img1..imgN.bmp; N is the folder's share of the label list."""
    numbers = [int(m.group(1)) for m in (_LIVE_IMAGE.match(p.name) for p in folder.iterdir()) if m]
    return max(numbers, default=0)


def _check_live_info(entries: list[tuple[Path, Path]], refnames: list[str]) -> None:
    """Where a folder's info.txt ('<reference> <image> <parameter>' lines) exists, it must agree
    with refnames_all: a mismatch means the label order and the folders do not belong together."""
    info_by_folder: dict[Path, dict[str, str]] = {}
    for (path, folder), refname in zip(entries, refnames):
        if folder not in info_by_folder:
            info_file = folder / "info.txt"
            info_by_folder[folder] = ({parts[1].lower(): parts[0] for _, line in read_text_lines(info_file)
                                       if len(parts := line.split()) >= 2} if info_file.is_file() else {})
        listed = info_by_folder[folder].get(path.name.lower())
        if listed is not None and listed.lower() != refname.lower():
            raise DatasetError(folder / "info.txt", f"names reference {listed} for {path.name} but "
                                                    f"refnames_all.mat says {refname}")


def load_csiq(root: Path | str) -> IQADataset:
    """CSIQ: ``csiq.DMOS.xlsx`` (header image, dst_idx, dst_type, dst_lev, dmos_std, dmos; sheet
    all_by_image preferred) or ``csiq_dmos.txt`` (the same six columns per line, whitespace or tab
    separated), and ``dst_imgs/<type>/<image>.<TYPE>.<level>.png``. DMOS 0-1, lower is better."""
    root = require_root(root, "CSIQ")
    labels = require_file(root, ["csiq.DMOS.xlsx", "csiq_dmos.txt"], "CSIQ label file")
    images = require_dir(root, "dst_imgs", "CSIQ distorted-image")
    table = (_csiq_xlsx_rows(labels) if labels.suffix == ".xlsx" else _csiq_text_rows(labels))
    index = {}  # (image, dst_idx, level) -> path, from the file names, ignoring case and folder spelling
    token_to_idx = {token.lower(): idx for idx, (_, token) in CSIQ_TYPES.items()}
    for path in images.rglob("*"):
        parts = path.name.split(".")
        if path.is_file() and len(parts) == 4 and parts[1].lower() in token_to_idx:
            index[(parts[0].lower(), token_to_idx[parts[1].lower()], parts[2])] = path
    rows = []
    for where, image, dst_idx, level, dmos in table:
        if dst_idx not in CSIQ_TYPES:
            raise DatasetError(labels, f"{where}: dst_idx {dst_idx} is not one of {sorted(CSIQ_TYPES)}")
        folder, token = CSIQ_TYPES[dst_idx]
        expected = images / folder / f"{image}.{token}.{level}.png"
        rows.append((index.get((image.lower(), dst_idx, level), expected), dmos, image))
    return make_dataset("csiq", root, rows, CSIQ_SCALE, "synthetic", labels)


def _cell_text(value: object) -> str:
    """Excel stores '1600' and level 1 as numbers: 1600.0 must read back as '1600'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _csiq_row(labels: Path, where: str, image: object, dst_idx: object, level: object, dmos: object):
    index_text = _cell_text(dst_idx)
    if not re.fullmatch(r"\d+", index_text):
        raise DatasetError(labels, f"{where}: dst_idx {dst_idx!r} is not an integer")
    return where, _cell_text(image), int(index_text), _cell_text(level), parse_float(dmos, labels, where)


def _csiq_xlsx_rows(labels: Path) -> list[tuple]:
    table = read_xlsx_table(labels, CSIQ_COLUMNS, preferred_sheet="all_by_image")
    return [_csiq_row(labels, f"row {n}", r["image"], r["dst_idx"], r["dst_lev"], r["dmos"])
            for n, r in enumerate(table, start=1)]


def _csiq_text_rows(labels: Path) -> list[tuple]:
    rows = []
    for line, text in read_text_lines(labels):
        fields = text.split("\t") if "\t" in text else text.split()
        fields = [f.strip() for f in fields if f.strip()]
        if fields and fields[0].lower() == "image":
            continue  # header line
        if len(fields) < 6:
            raise DatasetError(labels, f"line {line}: expected 6 fields ({' '.join(CSIQ_COLUMNS)}), got {len(fields)}")
        # dst_type may contain a space ('jpeg 2000'); the other columns are fixed from either end.
        rows.append(_csiq_row(labels, f"line {line}", fields[0], fields[1], fields[-3], fields[-1]))
    return rows


def load_tid2013(root: Path | str) -> IQADataset:
    """TID2013: ``mos_with_names.txt`` ('<MOS> <name>' per line, MOS 0-9, higher is better) and
    ``distorted_images/`` (names matched ignoring case: the list says I01_01_1.bmp, the files are
    i01_01_1.bmp). The group is the reference number I01..I25."""
    root = require_root(root, "TID2013")
    labels = require_file(root, ["mos_with_names.txt"], "TID2013 label file")
    folder = CaseInsensitiveFolder(require_dir(root, "distorted_images", "TID2013 distorted-image"))
    rows = []
    for line, text in read_text_lines(labels):
        fields = text.split()
        if len(fields) != 2:
            raise DatasetError(labels, f"line {line}: expected '<MOS> <image name>', got {text!r}")
        match = _TID_NAME.match(fields[1])
        if match is None:
            raise DatasetError(labels, f"line {line}: {fields[1]!r} is not a TID2013 name like I01_01_1.bmp")
        rows.append((folder.find(fields[1]), parse_float(fields[0], labels, line), match.group(1).upper()))
    return make_dataset("tid2013", root, rows, TID2013_SCALE, "synthetic", labels)
