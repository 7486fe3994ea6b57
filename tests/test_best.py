"""`pinet best`: bursts built from real photos (one sharp original + blurred, noisy and JPEG-damaged
copies, EXIF times 0.2 s apart), a second burst 60 s later and a different scene within the same
second are grouped correctly, the original is picked in each, and nothing is deleted or moved.

Runs the bundled default model on the bundled sample photos, downsized to the model's 384 px
short side so nothing is resized again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from pinet.camera.bursts import group_bursts, place, similar_groups, time_windows
from pinet.camera.phash import distance, perceptual_hash
from pinet.camera.photos import Photo, capture_time
from pinet.cli.app import app
from pinet_runtime import Scorer

START = datetime(2024, 5, 1, 10, 0, 0)
EXIF_IFD, DATETIME_ORIGINAL, SUBSEC_TIME_ORIGINAL = 0x8769, 0x9003, 0x9291


def _exif(seconds: float) -> Image.Exif:
    moment = START.timestamp() + seconds
    whole = datetime.fromtimestamp(int(moment))
    exif = Image.Exif()
    ifd = exif.get_ifd(EXIF_IFD)
    ifd[DATETIME_ORIGINAL] = whole.strftime("%Y:%m:%d %H:%M:%S")
    ifd[SUBSEC_TIME_ORIGINAL] = f"{round((moment - int(moment)) * 1000):03d}"
    return exif


def _downsized(path: Path) -> Image.Image:
    image = Image.open(path).convert("RGB")
    return image.resize((image.width * 384 // image.height, 384), Image.Resampling.LANCZOS)


def _degraded(image: Image.Image, kind: str) -> tuple[Image.Image, int]:
    """(picture, JPEG quality to save it with): strong degradations the default model ranks far lower."""
    if kind == "blurred":
        return image.filter(ImageFilter.GaussianBlur(3)), 95
    if kind == "noisy":
        pixels = np.asarray(image, dtype=np.float64)
        noise = np.random.default_rng(5).normal(0, 40, pixels.shape)
        return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)), 95
    return image, 5  # JPEG-damaged: the file itself is saved at quality 5


def _write_burst(folder: Path, source: Path, prefix: str, start: float, original_slot: int) -> list[str]:
    """Four shots 0.2 s apart; the original is the ``original_slot``-th, so capture order is no hint."""
    image = _downsized(source)
    kinds = ["blurred", "noisy", "jpeg-q5"]
    kinds.insert(original_slot, "original")
    names = []
    for slot, kind in enumerate(kinds):
        picture, quality = (image, 95) if kind == "original" else _degraded(image, kind)
        name = f"{prefix}_{slot}_{kind}.jpg"
        picture.save(folder / name, quality=quality, exif=_exif(start + 0.2 * slot))
        names.append(name)
    return names


@pytest.fixture()
def card(tmp_path, samples_dir) -> Path:
    """A card: burst A (kodim05) at 0-0.6 s, another scene (coffee) at 0.5 s, burst B (kodim24) at 60 s.
    Every file gets the same modification time, so only EXIF can tell the shots apart."""
    folder = tmp_path / "DCIM"
    folder.mkdir()
    _write_burst(folder, samples_dir / "kodak_kodim05.jpg", "a", 0.0, original_slot=2)
    _downsized(samples_dir / "skimage_coffee.jpg").save(folder / "b_other_scene.jpg", quality=95, exif=_exif(0.5))
    _write_burst(folder, samples_dir / "kodak_kodim24.jpg", "c", 60.0, original_slot=1)
    for path in folder.iterdir():
        os.utime(path, (1_700_000_000, 1_700_000_000))
    return folder


def _snapshot(folder: Path) -> dict:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir())}


def _run(*args: str):
    return CliRunner().invoke(app, ["best", *args])


def _groups(rows: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    return groups


def test_bursts_are_grouped_the_original_picked_and_nothing_moved(card, tmp_path):
    before = _snapshot(card)
    keep, reject = tmp_path / "keep", tmp_path / "reject"
    result = _run(str(card), "--format", "json", "--keep-dir", str(keep), "--reject-dir", str(reject))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    groups = _groups(rows)

    members = {group: sorted(Path(r["path"]).name for r in rows_) for group, rows_ in groups.items()}
    assert members == {
        1: ["a_0_blurred.jpg", "a_1_noisy.jpg", "a_2_original.jpg", "a_3_jpeg-q5.jpg"],
        2: ["b_other_scene.jpg"],  # shot within the same second as burst A: split by look
        3: ["c_0_blurred.jpg", "c_1_original.jpg", "c_2_noisy.jpg", "c_3_jpeg-q5.jpg"],
    }
    for group in (1, 3):
        ranked = groups[group]
        assert ranked[0]["pick"] and Path(ranked[0]["path"]).name.endswith("_original.jpg")
        assert [r["rank"] for r in ranked] == [1, 2, 3, 4] and not any(r["pick"] for r in ranked[1:])
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)
        assert ranked[0]["margin"] == pytest.approx(scores[0] - scores[1]) and ranked[0]["margin"] > 0.1
        assert all(r["time_source"] == "exif" for r in ranked)
    assert groups[2][0]["pick"] and groups[2][0]["margin"] is None

    assert _snapshot(card) == before  # same names, bytes, inodes and times: nothing moved or changed
    assert sorted(p.name for p in keep.iterdir()) == ["a_2_original.jpg", "b_other_scene.jpg", "c_1_original.jpg"]
    assert len(list(reject.iterdir())) == 6
    for row in rows:
        copied = Path(row["copied_to"])
        assert copied.parent == (keep if row["pick"] else reject)
        assert copied.read_bytes() == Path(row["path"]).read_bytes() and not copied.samefile(row["path"])


def test_scores_equal_the_scorer_and_exif_sub_seconds_are_read(card):
    scorer = Scorer()
    path = card / "a_1_noisy.jpg"
    taken, source = capture_time(str(path))
    assert source == "exif" and taken == pytest.approx(START.timestamp() + 0.2, abs=1e-6)
    rows = json.loads(_run(str(path), "-f", "json").stdout)
    assert rows[0]["score"] == pytest.approx(scorer.score(path), abs=1e-6)
    assert rows[0]["taken"] == "2024-05-01T10:00:00.200"


@pytest.mark.slow
def test_hard_links_and_a_rerun_reuses_what_is_there(card, tmp_path):
    keep = tmp_path / "keep"
    first = _run(str(card), "-f", "jsonl", "--keep-dir", str(keep), "--link")
    assert first.exit_code == 0, first.output
    picks = [json.loads(line) for line in first.stdout.splitlines() if json.loads(line)["pick"]]
    for row in picks:
        assert Path(row["copied_to"]).samefile(row["path"])  # one file, two names
    again = _run(str(card), "-f", "jsonl", "--keep-dir", str(keep), "--link")
    assert sorted(p.name for p in keep.iterdir()) == sorted(Path(r["path"]).name for r in picks)
    assert again.exit_code == 0


def test_a_different_file_of_the_same_name_is_never_overwritten(tmp_path, sample_photos):
    folder = tmp_path / "keep"
    folder.mkdir()
    (folder / sample_photos[0].name).write_bytes(b"someone else's file")
    placed = place(str(sample_photos[0]), folder, link=False)
    assert placed.name == f"{sample_photos[0].stem}-2.jpg" and placed.read_bytes() == sample_photos[0].read_bytes()
    assert (folder / sample_photos[0].name).read_bytes() == b"someone else's file"


def test_file_times_are_the_fallback_and_gap_splits(tmp_path, samples_dir):
    """PNGs carry no EXIF date: modification times group them; --gap decides what a burst is."""
    image = _downsized(samples_dir / "kodak_kodim07.jpg")
    for index, offset in enumerate([0.0, 1.5, 3.0]):
        path = tmp_path / f"shot{index}.png"
        (image if index != 1 else image.filter(ImageFilter.GaussianBlur(3))).save(path)
        os.utime(path, (1_700_000_000 + offset, 1_700_000_000 + offset))
    together = json.loads(_run(str(tmp_path), "-f", "json").stdout)
    assert [r["group"] for r in together] == [1, 1, 1] and {r["time_source"] for r in together} == {"mtime"}
    apart = json.loads(_run(str(tmp_path), "-f", "json", "--gap", "1").stdout)
    assert sorted(r["group"] for r in apart) == [1, 2, 3]


@pytest.mark.slow
def test_formats_and_unreadable_photos(card):
    (card / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    as_csv = _run(str(card), "-f", "csv")
    assert as_csv.exit_code == 1  # one photo could not be read; the rest are grouped
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 10 and rows[-1]["path"].endswith("broken.jpg") and rows[-1]["group"] == ""
    assert "broken.jpg" in rows[-1]["error"] and {r["group"] for r in rows[:-1]} == {"1", "2", "3"}
    table = _run(str(card))
    assert "burst" in table.stdout and "a_2_original.jpg" in table.stdout and "3 bursts" in table.stdout
    assert "9 of 10 photos scored, 1 failed" in table.stderr


def test_usage_errors_exit_2(card, tmp_path):
    assert _run().exit_code == 2
    assert _run(str(card), "--link").exit_code == 2
    assert _run(str(tmp_path / "nothing" / "*.jpg")).exit_code == 2
    assert _run(str(card), "--gap", "-1").exit_code == 2


def test_grouping_units():
    def photo(name, taken, phash, score=0.5):
        return Photo(name, score=score, taken=taken, phash=phash)

    scene_a, scene_b = 0, (1 << 63) - 1  # 63 bits apart
    shots = [photo("a1", 0.0, scene_a), photo("b1", 0.1, scene_b), photo("a2", 0.3, scene_a | 0b111),
             photo("a3", 5.0, scene_a)]
    windows = time_windows(shots, gap=2.0)
    assert [[p.path for p in w] for w in windows] == [["a1", "b1", "a2"], ["a3"]]
    assert [[p.path for p in g] for g in similar_groups(windows[0], 14)] == [["a1", "a2"], ["b1"]]
    assert [[p.path for p in g] for g in similar_groups(windows[0], 63)] == [["a1", "b1", "a2"]]
    lower_better = group_bursts([photo("x", 0, 0, 0.9), photo("y", 0.2, 0, 0.1)], higher_is_better=False)
    assert lower_better[0].pick.path == "y" and lower_better[0].margin == pytest.approx(0.8)


def test_perceptual_hash_separates_scenes_not_degradations(samples_dir):
    kodim05 = _downsized(samples_dir / "kodak_kodim05.jpg")
    coffee = _downsized(samples_dir / "skimage_coffee.jpg")
    same = distance(perceptual_hash(kodim05), perceptual_hash(kodim05.filter(ImageFilter.GaussianBlur(3))))
    other = distance(perceptual_hash(kodim05), perceptual_hash(coffee))
    assert same <= 4 and other > 20


def test_any_model_file_works(card, tiny_onnx, tmp_path):
    """Grouping does not depend on the model; the pick is that model's best (here a weighted mean of
    the pixels, so not necessarily the sharp original)."""
    tiny = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")
    rows = json.loads(_run(str(card), "-f", "json", "-m", str(tiny)).stdout)
    groups = _groups(rows)
    assert sorted(len(members) for members in groups.values()) == [1, 4, 4]
    expected = {row["path"]: Scorer(tiny).score(row["path"]) for row in rows}
    for members in groups.values():
        assert members[0]["score"] == pytest.approx(max(expected[m["path"]] for m in members), abs=1e-6)
