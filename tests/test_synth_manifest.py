"""The one manifest reader: `pinet data synth`'s strict format and the lenient column subset."""

import pytest

from pinet_training.datasets import DatasetError, load_dataset
from pinet_training.finetune_data import synthetic_split
from pinet_training.synth_manifest import MANIFEST_COLUMNS, ManifestError, read_manifest, read_manifest_rows

FULL_ROW = "images/a/blur_1.png,a,references/a.png,gaussian_blur,blur,0,1,7,0.9,train"


def _manifest(folder, text, encoding="utf-8"):
    folder.mkdir(exist_ok=True)
    (folder / "manifest.csv").write_text(text, encoding=encoding)
    return folder


def test_the_full_format_parses_to_items_with_absolute_paths(tmp_path):
    folder = _manifest(tmp_path / "d", ",".join(MANIFEST_COLUMNS) + "\n" + FULL_ROW + "\n")
    (item,) = read_manifest(folder)
    assert item.file == folder.resolve() / "images/a/blur_1.png"
    assert (item.class_index, item.level, item.seed, item.pseudo_score, item.split) == (0, 1, 7, 0.9, "train")


def test_a_bad_row_is_named_by_file_and_line(tmp_path):
    bad_level = FULL_ROW.replace(",1,7,", ",9,7,")
    folder = _manifest(tmp_path / "d", ",".join(MANIFEST_COLUMNS) + "\n" + FULL_ROW + "\n" + bad_level + "\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(folder)
    assert caught.value.subject.endswith("manifest.csv:3") and "level 9 is not 1..5" in caught.value.problem


def test_only_the_asked_columns_must_be_present(tmp_path):
    folder = _manifest(tmp_path / "d", "\ufefffile , reference,pseudo_score\n x.png ,r,0.5\n", encoding="utf-8")
    assert read_manifest_rows(folder, ("file", "pseudo_score")) == [{"file": "x.png", "reference": "r",
                                                                     "pseudo_score": "0.5"}]
    with pytest.raises(ManifestError, match=r"lacks \['split'\]"):
        read_manifest_rows(folder, ("file", "split"))
    with pytest.raises(ManifestError, match="lacks"):
        read_manifest(folder)                      # the full format needs every column
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest_rows(tmp_path / "absent")
    _manifest(tmp_path / "latin", "file,split\ncaf\xe9.png,train\n", encoding="latin-1")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest_rows(tmp_path / "latin", ("file",))


def test_finetuning_on_a_manifest_without_split_says_what_is_missing(tmp_path):
    from PIL import Image

    folder = _manifest(tmp_path / "d", "file,reference,pseudo_score\nx.png,r,0.5\n")
    Image.new("RGB", (40, 40)).save(folder / "x.png")
    dataset = load_dataset("synthetic", folder)       # the loader needs no split column
    with pytest.raises(DatasetError) as caught:
        synthetic_split(dataset)
    assert "'split'" in str(caught.value) and "manifest.csv" in str(caught.value)
