"""Hostile inputs through `pinet score` / `pinet info`: bad images, bad model files, odd file names
and unwritable outputs give a clear error and the documented exit code, never a traceback, and
every other row of the batch is still written."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pinet.cli.app import app
from pinet_runtime import metadata as keys
from pinet_runtime.preprocess import Preprocessing

RAW_NAME = b"caf\xe9 \xff.png"  # Latin-1 bytes: not UTF-8


@pytest.fixture(scope="module")
def model(tiny_onnx, tmp_path_factory) -> Path:
    return tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture()
def album(tmp_path) -> Path:
    folder = tmp_path / "album"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _run(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output and not isinstance(result.exception, (MemoryError, UnicodeError)), \
        result.output
    return result


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_strip_in_a_folder_fails_alone(model, album):
    Image.new("RGB", (1, 65535)).save(album / "strip.png")
    result = _run("score", album, "--model", model, "-f", "json")
    assert result.exit_code == 1
    rows = {Path(row["path"]).name: row for row in _strict_json(result.stdout)}
    assert rows["a.png"]["score"] is not None and rows["b.png"]["score"] is not None
    assert rows["strip.png"]["score"] is None and "MAX_ASPECT_RATIO" in rows["strip.png"]["error"]


def test_files_declaring_no_pixels_fail_alone(model, album):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    for name, (width, height) in {"zero_wide.png": (0, 5), "zero_high.png": (5, 0)}.items():
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        (album / name).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    (album / "zero.ppm").write_bytes(b"P6\n0 5\n255\n")
    result = _run("score", album, "--model", model, "-f", "json")
    assert result.exit_code == 1
    rows = {Path(row["path"]).name: row for row in _strict_json(result.stdout)}
    assert len(rows) == 5 and rows["a.png"]["score"] is not None and rows["b.png"]["score"] is not None
    for name in ("zero_wide.png", "zero_high.png", "zero.ppm"):
        assert rows[name]["score"] is None and name in rows[name]["error"]


def test_nan_std_model_is_refused_with_exit_1(tiny_onnx, album, tmp_path):
    prep = json.loads(Preprocessing(crop_size=32, resize_short_side=40).to_json())
    prep["std"] = [float("nan"), 0.2, 0.2]
    bad = tiny_onnx.build_tiny_model(tmp_path / "nan_std.onnx", metadata={keys.PREPROCESSING: json.dumps(prep)})
    result = _run("score", album, "--model", bad, "-f", "json")
    assert result.exit_code == 1 and result.stdout == ""
    assert "nan_std.onnx" in result.stderr and "std must be 3 finite numbers" in result.stderr


def test_nan_scores_are_errors_and_the_json_stays_json(tiny_onnx, album, tmp_path):
    import onnx
    from onnx import numpy_helper

    path = tiny_onnx.build_tiny_model(tmp_path / "nan_out.onnx")
    proto = onnx.load(str(path))
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        np.full((1, 3, 32, 32), np.nan, dtype=np.float32), name="weights"))
    onnx.save(proto, str(path))
    for output_format in ("json", "jsonl", "csv"):
        result = _run("score", album, "--model", path, "-f", output_format)
        assert result.exit_code == 1 and "NaN" not in result.stdout
        if output_format == "json":
            rows = _strict_json(result.stdout)
        elif output_format == "jsonl":
            rows = [_strict_json(line) for line in result.stdout.splitlines()]
        else:
            rows = [{**row, "score": row["score"] or None} for row in csv.DictReader(io.StringIO(result.stdout))]
        assert [row["score"] for row in rows] == [None, None] and all("non-finite" in r["error"] for r in rows)


@pytest.mark.parametrize("field, value, fragment", [
    ("grid_rows", 100000, "grid_rows must be an integer in [1, 16]"),                   # too large
    ("resize_short_side", 1000000, "resize_short_side must be null or an integer"),     # too large
    ("crop_size", 224.0, "crop_size must be an integer in [8, 1024], got 224.0"),       # wrong type
    ("higher_is_better", "false", "higher_is_better must be a boolean"),               # wrong type
])
def test_bad_model_fields_exit_1_for_score_and_info(tiny_onnx, album, tmp_path, field, value, fragment):
    prep = json.loads(Preprocessing(crop_size=32, resize_short_side=40, score_name="tiny-weighted-mean",
                                    score_range=(-3.0, 3.0)).to_json())
    prep[field] = value
    bad = tiny_onnx.build_tiny_model(tmp_path / "bad.onnx", metadata={keys.PREPROCESSING: json.dumps(prep)})
    for arguments in (("score", album, "--model", bad), ("info", bad)):
        result = _run(*arguments)
        assert result.exit_code == 1 and fragment in result.stderr and "bad.onnx" in result.stderr, result.output


def test_non_utf8_file_names_are_written_losslessly(model, album, tmp_path):
    raw = os.fsencode(album) + b"/" + RAW_NAME
    Image.open(album / "a.png").save(raw, format="PNG")
    name = os.fsdecode(raw)  # what os.listdir gives: surrogate escapes
    out = tmp_path / "out.csv"
    result = _run("score", album, "-f", "csv", "-o", out, "--model", model)
    assert result.exit_code == 0, result.output
    assert raw in out.read_bytes()  # the file's own bytes, not a lossy replacement
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 3 and os.fsencode([r for r in rows if "caf" in r["path"]][0]["path"]) == raw
    as_json = _run("score", album, "-f", "json", "--model", model)
    paths = [row["path"] for row in _strict_json(as_json.stdout)]
    assert name in paths and os.fsencode(name) == raw and as_json.stdout.isascii()
    table = _run("score", album, "--model", model)
    assert table.exit_code == 0 and raw in table.stdout_bytes
    csv_stdout = _run("score", album, "-f", "csv", "--model", model)
    assert csv_stdout.exit_code == 0 and raw in csv_stdout.stdout_bytes


def test_failures_of_oddly_named_files_are_reported(model, album):
    raw = os.fsencode(album) + b"/[red]" + RAW_NAME
    Path(os.fsdecode(raw)).write_bytes(b"")
    result = _run("score", album, "--model", model)
    assert result.exit_code == 1 and "empty file (0 bytes)" in result.stderr and "[red]" in result.stderr


def test_output_problems_exit_2_before_the_model_is_even_opened(album, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")  # would exit 1 if opened: exit 2 shows the output check came first
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    for target, fragment in [(tmp_path, "is a directory"), (a_file / "out.csv", "cannot be written")]:
        result = _run("score", album, "--model", junk, "-o", target)
        assert result.exit_code == 2 and fragment in result.stderr and str(target) in result.stderr, result.output


def test_missing_folders_are_created_and_help_says_so(model, album, tmp_path):
    target = tmp_path / "new" / "deeper" / "scores.json"
    assert _run("score", album, "--model", model, "-f", "json", "-o", target).exit_code == 0
    assert len(_strict_json(target.read_text())) == 2
    shown = " ".join(_run("score", "--help").stdout.replace("\u2502", " ").split())
    assert "missing parent folders are created" in shown and "keeps its permissions" in shown


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_a_replaced_output_keeps_its_mode(model, album, tmp_path, mode):
    target = tmp_path / "scores.csv"
    target.write_text("old\n")
    os.chmod(target, mode)
    assert _run("score", album, "--model", model, "-f", "csv", "-o", target).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == mode and target.read_text().startswith("path,score")


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_output_follows_the_umask(model, album, tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        result = _run("score", album, "--model", model, "-f", "csv", "-o", tmp_path / "new.csv")
    finally:
        os.umask(previous)
    assert result.exit_code == 0 and stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == expected


def test_output_written_through_a_symlink_replaces_the_target_not_the_link(model, album, tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert _run("score", album, "--model", model, "-f", "csv", "-o", link).exit_code == 0
    assert link.is_symlink() and real.read_text().startswith("path,score")


def test_a_failed_final_write_still_prints_every_row(model, album, tmp_path, monkeypatch):
    from pinet_runtime import files

    def disk_full(path, text, errors="strict"):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files, "write_text_atomic", disk_full)
    result = _run("score", album, "--model", model, "-f", "csv", "-o", tmp_path / "s.csv")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 2
