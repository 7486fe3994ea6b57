"""Validation figures of exported models on a synth set's held-out references, and `pinet data validate`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pinet.cli.app import app
from pinet_runtime.preprocess import preprocess
from pinet_training.synth_manifest import SynthItem, write_manifest
from pinet_training.synth_validation import agreement, figures, pairwise_accuracy


def _item(reference, score, cls="blur", distortion="gaussian_blur", level=1):
    return SynthItem(file=Path(f"{reference}_{score}.png"), reference=reference, reference_file=Path("r.png"),
                     distortion=distortion, distortion_class=cls, class_index=0, level=level, seed=0,
                     pseudo_score=score, split="val")


def test_per_type_figures_show_a_type_judged_harsher_than_the_pseudo_mos():
    # 4 references; blur and darken at 3 levels each; the model ranks the levels of both right but
    # scores every darkened image 0.5 lower than the pseudo-MOS says
    items, scores = [], []
    for ref in "abcd":
        for distortion, base in (("gaussian_blur", 0.5), ("darken", 0.8)):
            for level in (1, 2, 3):
                pseudo = base - 0.1 * level + 0.01 * "abcd".index(ref)
                items.append(_item(ref, pseudo, distortion=distortion, level=level))
                scores.append(pseudo - (0.5 if distortion == "darken" else 0.0))
    scores = np.array(scores)
    result = figures(items, scores)
    darken, blur = result["per_type"]["darken"], result["per_type"]["gaussian_blur"]
    assert darken["images"] == blur["images"] == 12
    assert darken["mean_score"] == pytest.approx(darken["mean_pseudo"] - 0.5)
    assert blur["mean_score"] == pytest.approx(blur["mean_pseudo"])
    # on the pseudo-MOS scale (the logistic fit of all items), darken lands far below its pseudo-MOS
    # and blur, sharing darken's score range, above its own
    assert darken["mean_mapped"] < darken["mean_pseudo"] - 0.05 and blur["mean_mapped"] > blur["mean_pseudo"]
    assert darken["level_srcc"] == pytest.approx(1.0) and blur["level_srcc"] == pytest.approx(1.0)
    # leaving either type out leaves a perfectly ranked set; with both, darken's bias breaks the order
    assert darken["srcc_without"] == pytest.approx(1.0) and blur["srcc_without"] == pytest.approx(1.0)
    assert result["overall"]["srcc"] < 0.9
    assert result["per_reference_median_srcc"] < 0.9


def test_pairwise_accuracy_counts_same_reference_pairs_beyond_the_margin():
    items = [_item("a", 0.9), _item("a", 0.5), _item("a", 0.52), _item("b", 0.3), _item("b", 0.8)]
    # a: pairs (0.9,0.5) (0.9,0.52) eligible, (0.5,0.52) is within the margin; b: (0.8,0.3); no cross pairs.
    scores = np.array([0.7, 0.1, 0.9, 0.2, 0.1])   # right, wrong, (ignored), wrong for b
    accuracy, pairs = pairwise_accuracy(items, scores)
    assert pairs == 3
    assert accuracy == pytest.approx(1 / 3)


def test_figures_and_agreement():
    rng = np.random.default_rng(0)
    items = [_item(f"r{i % 4}", float(s), "blur" if i % 2 else "noise") for i, s in enumerate(rng.random(40))]
    targets = np.array([item.pseudo_score for item in items])
    perfect = figures(items, targets * 2 + 1)            # any increasing map ranks perfectly
    assert perfect["overall"]["srcc"] == pytest.approx(1.0)
    assert perfect["pairwise_accuracy"] == 1.0
    assert set(perfect["per_class"]) == {"blur", "noise"}
    assert perfect["per_class"]["blur"]["images"] == 20
    inverted = figures(items, -targets)
    assert inverted["pairwise_accuracy"] == 0.0 and inverted["overall"]["srcc"] == pytest.approx(-1.0)
    same = agreement(targets, targets + 0.01)
    assert same["srcc"] == pytest.approx(1.0) and same["mean_abs_difference"] == pytest.approx(0.01)


def _synth_set(folder: Path, photos: list[Path], splits: tuple[str, ...]) -> Path:
    """A hand-made synth set: each photo is a reference with 3 copies darkened by level, pseudo
    scores falling with the level; one split per reference."""
    rows = []
    for photo, split in zip(photos, splits):
        stem = photo.stem
        (folder / "references").mkdir(parents=True, exist_ok=True)
        (folder / "images" / stem).mkdir(parents=True, exist_ok=True)
        image = Image.open(photo).convert("RGB").resize((64, 48))
        image.save(folder / "references" / f"{stem}.png")
        for level, score in ((1, 0.9), (3, 0.6), (5, 0.3)):
            name = f"images/{stem}/darken_{level}.png"
            Image.eval(image, lambda v, level=level: int(v * (1 - 0.15 * level))).save(folder / name)
            rows.append({"file": name, "reference": stem, "reference_file": f"references/{stem}.png",
                         "distortion": "darken", "distortion_class": "brightness_contrast", "class_index": 4,
                         "level": level, "seed": 0, "pseudo_score": score, "split": split})
    write_manifest(folder, rows)
    return folder


def test_cli_validates_a_model_on_the_held_out_references(tmp_path, sample_photos, tiny_onnx):
    from scipy.stats import spearmanr

    data = _synth_set(tmp_path / "synth", sample_photos[:3], ("val", "val", "train"))
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    model = tiny_onnx.build_tiny_model(tmp_path / "one" / "model.onnx")
    twin = tiny_onnx.build_tiny_model(tmp_path / "two" / "model.onnx")      # same file name: keyed by path
    result = CliRunner().invoke(app, ["data", "validate", str(model), str(twin), "--data", str(data),
                                      "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "validation.json").read_text())
    assert (tmp_path / "report" / "validation.md").read_text() in result.output
    assert report["split"] == "val" and set(report["models"]) == {str(model), str(twin)}
    figures_of_model = report["models"][str(model)]
    # 2 val references x 3 images; per reference 3 pairs, every pseudo-score gap (0.3, 0.6) > the margin.
    assert figures_of_model["images"] == 6 and figures_of_model["pairs"] == 6 and figures_of_model["unreadable"] == 0
    assert set(figures_of_model["per_class"]) == {"brightness_contrast"}
    val_files = [data / "images" / photo.stem / f"darken_{level}.png"
                 for photo in sample_photos[:2] for level in (1, 3, 5)]
    expected = [tiny_onnx.tiny_expected_score(preprocess(path, tiny_onnx.TINY_PREPROCESSING)) for path in val_files]
    targets = [0.9, 0.6, 0.3] * 2
    assert figures_of_model["overall"]["srcc"] == pytest.approx(spearmanr(expected, targets).statistic)
    assert report["agreement"]["srcc"] == pytest.approx(1.0) and report["agreement"]["max_abs_difference"] == 0.0


def test_cli_refuses_an_empty_split_and_a_missing_model(tmp_path, sample_photos, tiny_onnx):
    data = _synth_set(tmp_path / "synth", sample_photos[:2], ("train", "train"))
    model = tiny_onnx.build_tiny_model(tmp_path / "model.onnx")
    runner = CliRunner()
    empty = runner.invoke(app, ["data", "validate", str(model), "--data", str(data), "--out", str(tmp_path / "r")])
    assert empty.exit_code == 1 and "manifest.csv" in empty.output and "'val'" in empty.output
    assert not (tmp_path / "r").exists()
    missing = runner.invoke(app, ["data", "validate", str(tmp_path / "none.onnx"), "--data", str(data),
                                  "--out", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "none.onnx" in missing.output
