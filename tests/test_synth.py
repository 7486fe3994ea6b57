"""`pinet data synth` end to end on tiny references: manifest, splits, resume, bad input, kill."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pinet.cli.app import app
from pinet.config import DISTORTION_CLASSES
from pinet_training.distortions import apply_distortion, get_distortion
from pinet_training.synth import read_manifest

COLUMNS = ["file", "reference", "reference_file", "distortion", "distortion_class", "class_index", "level",
           "seed", "pseudo_score", "split"]
TYPES = "gaussian_blur,jpeg,white_noise,pixelate"


def _write_refs(photos: list[Path], folder: Path, count: int, size=(120, 90)) -> list[str]:
    """The first ``count`` photos, small, as PNG references; returns their stems."""
    folder.mkdir(parents=True, exist_ok=True)
    stems = []
    for path in photos[:count]:
        with Image.open(path) as image:
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(folder / f"{path.stem}.png")
        stems.append(path.stem)
    return stems


def _split_by_documented_rule(stem: str, val_fraction: float) -> str:
    bucket = int(hashlib.sha256(stem.encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32
    return "val" if bucket < val_fraction else "train"


def _synth_args(refs: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "synth", "--refs", str(refs), "--out", str(out), "--short-side", "64", *extra]


def _temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_synth_end_to_end_bad_reference_and_resume(tmp_path, sample_photos):
    refs, out = tmp_path / "refs", tmp_path / "out"
    stems = _write_refs(sample_photos, refs, 3)
    (refs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (refs / "notes.txt").write_text("not an image, ignored")
    args = _synth_args(refs, out, "--types", TYPES, "--types-per-ref", "3", "--val-fraction", "0.5",
                       "--workers", "1", "--seed", "5")
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    assert "broken.png" in first.output
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [Path(e["reference"]).name for e in errors] == ["broken.png"]

    with open(out / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert len(rows) == 3 * 3 * 5  # 3 good refs x 3 types x 5 levels
    assert {row["reference"] for row in rows} == set(stems)
    for row in rows:
        assert row["distortion"] in TYPES.split(",")
        assert row["distortion_class"] == get_distortion(row["distortion"]).coarse_class
        assert DISTORTION_CLASSES[int(row["class_index"])] == row["distortion_class"]
        assert 1 <= int(row["level"]) <= 5 and 0.0 <= float(row["pseudo_score"]) <= 1.0
        assert row["file"] == f"images/{row['reference']}/{row['distortion']}_{row['level']}.png"
        assert row["reference_file"] == f"references/{row['reference']}.png"
        assert row["split"] == _split_by_documented_rule(row["reference"], 0.5)
        with Image.open(out / row["file"]) as image:
            assert image.mode == "RGB" and min(image.size) == 64 and image.size == (85, 64)
    splits_per_ref = {}
    for row in rows:
        splits_per_ref.setdefault(row["reference"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in splits_per_ref.values())

    # A row's (reference, distortion, level, seed) regenerates the stored pixels exactly.
    items = read_manifest(out)
    assert all(item.file.is_absolute() and item.file.is_file() and item.reference_file.is_file() for item in items)
    for item in items:
        with Image.open(item.reference_file) as reference, Image.open(item.file) as stored:
            regenerated = apply_distortion(reference.convert("RGB"), item.distortion, item.level, item.seed)
            assert np.array_equal(np.asarray(regenerated), np.asarray(stored.convert("RGB"))), item.file
    # Scores fall with the level within each (reference, type) for most ladders.
    ladders = {}
    for item in items:
        ladders.setdefault((item.reference, item.distortion), {})[item.level] = item.pseudo_score
    assert sum(ladder[1] > ladder[5] for ladder in ladders.values()) >= 0.9 * len(ladders)

    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    second = runner.invoke(app, args)
    assert second.exit_code == 1 and "broken.png" in second.output
    assert "0 made now, 3 already done" in second.output
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == mtimes
    assert read_manifest(out) == items
    assert not _temp_files(out)

    # Without the broken file the same folder finishes cleanly with exit code 0.
    (refs / "broken.png").unlink()
    third = runner.invoke(app, args)
    assert third.exit_code == 0, third.output
    assert (out / "errors.jsonl").read_text() == ""
    info = json.loads((out / "synth.json").read_text())
    assert info["counts"]["images"] == 45 and info["pseudo_score"]["formula"]


def test_unknown_type_is_a_usage_error(tmp_path, sample_photos):
    refs = tmp_path / "refs"
    _write_refs(sample_photos, refs, 1)
    result = CliRunner().invoke(app, _synth_args(refs, tmp_path / "out", "--types", "jpeg,sepia"))
    assert result.exit_code == 2 and "sepia" in result.output


@pytest.mark.slow
def test_killed_run_resumes_to_a_complete_manifest_without_temp_files(tmp_path, sample_photos):
    refs, out = tmp_path / "refs", tmp_path / "out"
    stems = _write_refs(sample_photos, refs, 6, size=(144, 96))
    command = [sys.executable, "-c", "from pinet.cli.app import main; main()",
               *_synth_args(refs, out, "--types", "all", "--types-per-ref", "25", "--workers", "1")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if len(list((out / "shards").glob("*.json"))) >= 2:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the synth finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    done_before = len(list((out / "shards").glob("*.json")))
    assert 2 <= done_before < len(stems)
    assert not (out / "manifest.csv").exists()

    result = CliRunner().invoke(app, _synth_args(refs, out, "--types", "all", "--types-per-ref", "25",
                                                 "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert f"{len(stems) - done_before} made now, {done_before} already done" in result.output
    items = read_manifest(out)
    assert len(items) == len(stems) * 25 * 5
    assert {(i.reference, i.distortion, i.level) for i in items} == {
        (s, d, lv) for s in stems for d in {i.distortion for i in items} for lv in range(1, 6)}
    for item in items:
        with Image.open(item.file) as image:
            image.load()
            assert image.size == (96, 64)
    assert not _temp_files(out)
