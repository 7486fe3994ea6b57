"""Loaders read tiny replicas of each dataset's PUBLISHED layout and label format (built here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pinet_training.datasets import (
    DATASET_NAMES, CsvScale, DatasetError, UnknownDatasetError, load_dataset,
)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 60, 30)).save(path)


def _by_name(dataset) -> dict[str, object]:
    return {sample.path.name: sample for sample in dataset.samples}


def test_koniq10k_csv_and_normalisation(tmp_path):
    # Header exactly as the published file (quoted), MOS on the 1-5 scale.
    lines = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"',
             '"10004473376.jpg",0,0,25,73,7,105,3.828571429,0.527,77.38',
             '"10007357496.jpg",0,3,45,47,1,96,3.479166667,0.585,68.99',
             '"10007903636.jpg",1,0,20,75,7,103,1.0,0.586,79.28']
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text("\n".join(lines) + "\n")
    for name in ("10004473376.jpg", "10007357496.jpg", "10007903636.jpg"):
        _image(tmp_path / "1024x768" / name)
    dataset = load_dataset("koniq10k", tmp_path)
    samples = _by_name(dataset)
    assert len(dataset) == 3 and dataset.content == "authentic"
    assert dataset.direction == "higher_is_better" and dataset.native_range == (1.0, 5.0)
    assert samples["10004473376.jpg"].raw_score == pytest.approx(3.828571429)
    assert samples["10004473376.jpg"].score == pytest.approx((3.828571429 - 1) / 4)
    assert samples["10007903636.jpg"].score == pytest.approx(0.0)
    assert len(dataset.groups) == 3  # authentic: each image its own group
    assert dataset.resize_short_side == 384  # 512x384


def test_clive_mat_files_drop_practice_images(tmp_path):
    import scipy.io

    names = np.empty((5, 1), dtype=object)
    for i, name in enumerate(["t1.bmp", "t2.bmp", "3.bmp", "4.bmp", "5.bmp"]):
        names[i, 0] = np.array([name])
    (tmp_path / "Data").mkdir()
    scipy.io.savemat(tmp_path / "Data" / "AllImages_release.mat", {"AllImages_release": names})
    scipy.io.savemat(tmp_path / "Data" / "AllMOS_release.mat",
                     {"AllMOS_release": np.array([[50.0, 60.0, 100.0, 25.0, 0.0]])})
    for name in ("3.bmp", "4.bmp", "5.bmp"):
        _image(tmp_path / "Images" / name)
    for name in ("t1.bmp", "t2.bmp"):
        _image(tmp_path / "Images" / "trainingImages" / name)
    dataset = load_dataset("clive", tmp_path)
    samples = _by_name(dataset)
    assert sorted(samples) == ["3.bmp", "4.bmp", "5.bmp"]
    assert [samples[n].score for n in ("3.bmp", "4.bmp", "5.bmp")] == pytest.approx([1.0, 0.25, 0.0])
    assert dataset.native_range == (0.0, 100.0)


def test_spaq_xlsx_with_title_free_header(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    sheet.append(["00001.jpg", 42.0, 40, 38, 44, 50, 41])
    sheet.append(["00002.jpg", 90.0, 80, 85, 88, 90, 91])
    (tmp_path / "Annotations").mkdir()
    book.save(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx")
    for name in ("00001.jpg", "00002.jpg"):
        _image(tmp_path / "TestImage" / name)
    dataset = load_dataset("spaq", tmp_path)
    samples = _by_name(dataset)
    assert samples["00001.jpg"].score == pytest.approx(0.42)
    assert samples["00002.jpg"].score == pytest.approx(0.90)
    assert dataset.content == "authentic" and len(dataset.groups) == 2


def test_kadid10k_groups_by_reference(tmp_path):
    rows = ["dist_img,ref_img,dmos,var", "I01_01_01.png,I01.png,4.57,0.496", "I01_01_05.png,I01.png,1.0,0.2",
            "I02_03_02.png,I02.png,3.0,0.3"]
    (tmp_path / "dmos.csv").write_text("\n".join(rows) + "\n")
    for name in ("I01_01_01.png", "I01_01_05.png", "I02_03_02.png", "I01.png", "I02.png"):
        _image(tmp_path / "images" / name)
    dataset = load_dataset("kadid10k", tmp_path)
    samples = _by_name(dataset)
    assert len(dataset) == 3 and dataset.content == "synthetic"
    assert dataset.groups == ("I01.png", "I02.png")
    assert samples["I01_01_01.png"].score == pytest.approx((4.57 - 1) / 4)  # dmos here: higher is better
    assert samples["I01_01_05.png"].score == pytest.approx(0.0)


def _live_replica(root: Path, realigned: bool = True) -> None:
    import scipy.io

    # Folder sizes 2,1,1,1,2 (the real set: 227,233,174,174,174), labels in folder order.
    folders = {"jp2k": ["parrots.bmp", "bikes.bmp"], "jpeg": ["bikes.bmp"], "wn": ["parrots.bmp"],
               "gblur": ["parrots.bmp"], "fastfading": ["bikes.bmp", "parrots.bmp"]}
    dmos = [10.0, 80.0, 45.0, 0.0, 95.0, 30.0, 60.0]
    orgs = [0, 0, 0, 1, 0, 0, 0]  # the 'wn' entry is the reference copy
    refnames = np.empty((1, 7), dtype=object)
    index = 0
    for folder, refs in folders.items():
        info = []
        for n, ref in enumerate(refs, start=1):
            _image(root / folder / f"img{n}.bmp")
            info.append(f"{ref} img{n}.bmp 0.5")
            refnames[0, index] = np.array([ref])
            index += 1
        (root / folder / "info.txt").write_text("\n".join(info) + "\n")
    key = "dmos_new" if realigned else "dmos"
    scipy.io.savemat(root / ("dmos_realigned.mat" if realigned else "dmos.mat"),
                     {key: np.array([dmos]), "orgs": np.array([orgs], dtype=float)})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": refnames})


@pytest.mark.parametrize("realigned", [True, False])
def test_live_dmos_lower_is_better_maps_best_to_highest(tmp_path, realigned):
    _live_replica(tmp_path, realigned)
    dataset = load_dataset("live", tmp_path)
    assert len(dataset) == 6  # 7 labels minus one reference copy (orgs == 1)
    assert dataset.direction == "lower_is_better" and dataset.content == "synthetic"
    best = max(dataset.samples, key=lambda s: s.score)
    assert best.raw_score == 10.0 and best.path.parent.name == "jp2k" and best.path.name == "img1.bmp"
    worst = min(dataset.samples, key=lambda s: s.score)
    assert worst.raw_score == 95.0 and worst.path.parent.name == "gblur"
    assert best.score == pytest.approx(0.9) and worst.score == pytest.approx(0.05)
    assert set(dataset.groups) == {"parrots.bmp", "bikes.bmp"}
    assert not any(s.path.parent.name == "wn" for s in dataset.samples)


def test_live_info_txt_disagreeing_with_refnames_is_an_error(tmp_path):
    _live_replica(tmp_path)
    (tmp_path / "jpeg" / "info.txt").write_text("parrots.bmp img1.bmp 0.5\n")
    with pytest.raises(DatasetError, match="info.txt.*bikes.bmp"):
        load_dataset("live", tmp_path)


def _csiq_files(root: Path) -> None:
    for rel in ("awgn/1600.AWGN.1.png", "jpeg2000/1600.jpeg2000.5.png", "blur/cactus.BLUR.2.png"):
        _image(root / "dst_imgs" / rel)


def test_csiq_xlsx(tmp_path):
    from openpyxl import Workbook

    _csiq_files(tmp_path)
    book = Workbook()
    other = book.active
    other.title = "all_by_distortion"
    other.append(["not", "this", "sheet"])
    sheet = book.create_sheet("all_by_image")
    sheet.append(["CSIQ DMOS by image"])  # a title row above the header, as in the workbook
    sheet.append(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    sheet.append([1600, 1, "noise", 1, 0.061, 0.062])
    sheet.append([1600, 3, "jpeg 2000", 5, 0.1, 0.8])
    sheet.append(["cactus", 5, "blur", 2, 0.05, 0.3])
    book.save(tmp_path / "csiq.DMOS.xlsx")
    dataset = load_dataset("csiq", tmp_path)
    samples = _by_name(dataset)
    assert len(dataset) == 3 and dataset.groups == ("1600", "cactus")
    assert samples["1600.AWGN.1.png"].score == pytest.approx(1 - 0.062)  # DMOS 0-1, lower is better
    assert samples["1600.jpeg2000.5.png"].score == pytest.approx(0.2)
    assert max(dataset.samples, key=lambda s: s.score).raw_score == pytest.approx(0.062)


def test_csiq_text_labels(tmp_path):
    _csiq_files(tmp_path)
    (tmp_path / "csiq_dmos.txt").write_text(
        "1600\t1\tnoise\t1\t0.061\t0.062\n1600\t3\tjpeg 2000\t5\t0.1\t0.8\ncactus 5 blur 2 0.05 0.3\n")
    dataset = load_dataset("csiq", tmp_path)
    assert sorted(s.raw_score for s in dataset.samples) == pytest.approx([0.062, 0.3, 0.8])


def test_tid2013_case_insensitive_names_and_groups(tmp_path):
    (tmp_path / "mos_with_names.txt").write_text("5.51429 I01_01_1.bmp\n0.24 I01_17_5.bmp\n7.2 I25_08_1.bmp\n")
    for name in ("i01_01_1.bmp", "i01_17_5.bmp", "I25_08_1.bmp"):  # files in lower case, as shipped
        _image(tmp_path / "distorted_images" / name)
    _image(tmp_path / "reference_images" / "I01.BMP")
    dataset = load_dataset("tid2013", tmp_path)
    assert len(dataset) == 3 and dataset.groups == ("I01", "I25")
    assert all(s.path.is_file() for s in dataset.samples)
    assert [s.score for s in dataset.samples] == pytest.approx([5.51429 / 9, 0.24 / 9, 7.2 / 9])


def test_generic_csv_with_declared_lower_is_better_scale(tmp_path):
    _image(tmp_path / "imgs" / "a.png")
    _image(tmp_path / "imgs" / "b.png")
    (tmp_path / "scores.csv").write_text("path,score,reference\nimgs/a.png,2,ref1\nimgs/b.png,10,ref1\n")
    dataset = load_dataset("csv", tmp_path, CsvScale(low=0, high=10, higher_is_better=False))
    assert [s.score for s in dataset.samples] == pytest.approx([0.8, 0.0])
    assert dataset.content == "synthetic" and dataset.groups == ("ref1",)
    with pytest.raises(ValueError, match="declared"):
        load_dataset("csv", tmp_path)


def test_synth_set_manifest_with_and_without_split_column(tmp_path):
    header = "file,reference,reference_file,distortion,distortion_class,class_index,level,seed,pseudo_score"
    rows = ["d/a_blur_1.png,a,ref/a.png,gaussian_blur,blur,0,1,7,0.9",
            "d/a_noise_5.png,a,ref/a.png,white_noise,noise,1,5,8,0.1",
            "d/b_jpeg_3.png,b,ref/b.png,jpeg,compression,2,3,9,0.5"]
    for row in rows:
        _image(tmp_path / row.split(",")[0])
    (tmp_path / "manifest.csv").write_text(header + ",split\n" + "\n".join(r + ",train" for r in rows) + "\n")
    with_split = load_dataset("synthetic", tmp_path)
    (tmp_path / "manifest.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    without_split = load_dataset("synthetic", tmp_path)
    for dataset in (with_split, without_split):
        assert [s.score for s in dataset.samples] == pytest.approx([0.9, 0.1, 0.5])
        assert dataset.groups == ("a", "b") and dataset.content == "synthetic"


def test_unknown_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(UnknownDatasetError) as info:
        load_dataset("imagenet", tmp_path)
    assert all(name in str(info.value) for name in DATASET_NAMES)


@pytest.mark.parametrize("name, expected", [
    ("koniq10k", "koniq10k_scores_and_distributions.csv"), ("clive", "Data/AllImages_release.mat"),
    ("spaq", "MOS and Image attribute scores.xlsx"), ("kadid10k", "dmos.csv"), ("live", "dmos_realigned.mat"),
    ("csiq", "csiq.DMOS.xlsx"), ("tid2013", "mos_with_names.txt"), ("synthetic", "manifest.csv")])
def test_empty_root_names_the_expected_file(tmp_path, name, expected):
    with pytest.raises(DatasetError) as info:
        load_dataset(name, tmp_path)
    assert expected in str(info.value) and str(tmp_path) in str(info.value)


def test_missing_root_folder_and_missing_image_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset("kadid10k", tmp_path / "nowhere")
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.5,0.4\n")
    with pytest.raises(DatasetError, match="'images'"):
        load_dataset("kadid10k", tmp_path)


def test_malformed_labels_are_reported_with_file_and_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,abc,0.4\n")
    with pytest.raises(DatasetError, match=r"dmos.csv: line 2: score 'abc'"):
        load_dataset("kadid10k", tmp_path)
    (tmp_path / "dmos.csv").write_text("image,score\nx.png,3\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_dataset("kadid10k", tmp_path)
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,3.0,0.4\n")
    with pytest.raises(DatasetError, match="1 of 1 images it lists are missing"):
        load_dataset("kadid10k", tmp_path)


def test_corrupt_mat_and_xlsx_are_reported(tmp_path):
    (tmp_path / "Data").mkdir()
    (tmp_path / "Data" / "AllImages_release.mat").write_bytes(b"not a mat file")
    (tmp_path / "Data" / "AllMOS_release.mat").write_bytes(b"nor this")
    (tmp_path / "Images").mkdir()
    with pytest.raises(DatasetError, match="AllImages_release.mat.*MATLAB"):
        load_dataset("clive", tmp_path)
    spaq = tmp_path / "spaq"
    (spaq / "Annotations").mkdir(parents=True)
    (spaq / "TestImage").mkdir()
    (spaq / "Annotations" / "MOS and Image attribute scores.xlsx").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="xlsx"):
        load_dataset("spaq", spaq)


SHARED_CLIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "clive"


def _clive_csv_replica(root: Path) -> Path:
    """The shared CLIVE folder's layout: scores.csv (path,score,score_std,role) + images/."""
    rows = [("images/10.webp", "82.9", "15.1", "train"), ("images/100.JPG", "32.5", "19.1", "train"),
            ("images/7.png", "50.0", "10.0", "train"), ("images/training_t1.webp", "64.0", "18.4", "anchor")]
    for path, *_ in rows:
        _image(root / path)
    (root / "scores.csv").write_text("path,score,score_std,role\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return root


def test_clive_csv_layout_leaves_anchors_out_unless_asked(tmp_path):
    root = _clive_csv_replica(tmp_path / "clive")
    dataset = load_dataset("clive", root)
    assert dataset.name == "clive" and dataset.content == "authentic"
    assert [s.path.name for s in dataset.samples] == ["10.webp", "100.JPG", "7.png"]
    assert [s.score for s in dataset.samples] == pytest.approx([0.829, 0.325, 0.5])
    assert dataset.scale.label == "MOS (0-100)" and dataset.scale.higher_is_better
    assert len({s.group for s in dataset.samples}) == 3                      # each photo its own content
    with_anchors = load_dataset("clive", root, include_anchors=True)
    assert _by_name(with_anchors)["training_t1.webp"].raw_score == 64.0
    with pytest.raises(ValueError, match="include_anchors only applies"):
        load_dataset("koniq10k", root, include_anchors=True)


def test_csv_layout_takes_scale_and_direction_from_the_options(tmp_path):
    root = _clive_csv_replica(tmp_path / "clive")
    higher = load_dataset("csv", root, CsvScale(low=0, high=100, higher_is_better=True, label="MOS"))
    lower = load_dataset("csv", root / "scores.csv", CsvScale(low=0, high=200, higher_is_better=False))
    assert higher.name == "clive" and len(higher) == 3            # scores.csv is named after its folder
    assert higher.scale.label == "MOS (0-100, higher is better)"
    assert [s.score for s in higher.samples] == pytest.approx([0.829, 0.325, 0.5])
    assert [s.score for s in lower.samples] == pytest.approx([1 - 82.9 / 200, 1 - 32.5 / 200, 0.75])
    assert lower.scale.label == "score (0-200, lower is better)"


def test_csv_wrong_columns_or_role_name_the_file(tmp_path):
    root = _clive_csv_replica(tmp_path / "clive")
    labels = root / "scores.csv"
    labels.write_text("file,mos,role\nimages/10.webp,82.9,train\n")
    for name, scale in (("clive", None), ("csv", CsvScale(0, 100, True))):
        with pytest.raises(DatasetError) as info:
            load_dataset(name, root, scale)
        assert str(labels) in str(info.value) and "missing column(s) ['path', 'score']" in str(info.value)
    labels.write_text("path,score,role\nimages/10.webp,82.9,train\nimages/7.png,50,test\n")
    with pytest.raises(DatasetError, match=r"scores\.csv: line 3: role 'test' is not one of train, anchor"):
        load_dataset("clive", root)


def test_shared_clive_folder_reads_930_photos_on_the_mos_scale():
    if not (SHARED_CLIVE / "scores.csv").is_file():
        pytest.skip(f"the shared CLIVE data is not on this machine ({SHARED_CLIVE})")
    dataset = load_dataset("clive", SHARED_CLIVE)
    assert len(dataset) == 930 and len(dataset.groups) == 930
    assert not any(s.path.name.startswith("training_t") for s in dataset.samples)
    assert all(0 <= s.raw_score <= 100 and s.score == pytest.approx(s.raw_score / 100) for s in dataset.samples)
    assert len(load_dataset("clive", SHARED_CLIVE, include_anchors=True)) == 937
    as_csv = load_dataset("csv", SHARED_CLIVE, CsvScale(0, 100, True, "MOS"))
    assert [s.score for s in as_csv.samples] == [s.score for s in dataset.samples]
