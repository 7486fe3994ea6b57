"""`pinet score`: path expansion, output formats, sorting, failures and exit codes.

Runs the typer app in-process with the tiny weighted-mean ONNX model from
test_runtime_model_file.py; expected scores come from the Scorer API.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pinet.cli.app import app
from pinet_runtime import Scorer


@pytest.fixture(scope="module")
def model(tiny_onnx, tmp_path_factory) -> Path:
    return tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture()
def photos(tmp_path) -> Path:
    """album/{a.png, b.jpg, notes.txt, docs/readme.txt, sub/c.png, sub/deeper/d.PNG}; images differ."""
    rng = np.random.default_rng(7)
    album = tmp_path / "album"
    (album / "sub" / "deeper").mkdir(parents=True)
    for index, name in enumerate(["a.png", "b.jpg", "sub/c.png", "sub/deeper/d.PNG"]):
        pixels = np.clip(rng.normal(60 + 40 * index, 30, (40, 52, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(album / name)
    (album / "notes.txt").write_text("not an image")
    (album / "docs").mkdir()
    (album / "docs" / "readme.txt").write_text("no images in this folder")
    return album


def _run(*args: str):
    return CliRunner().invoke(app, ["score", *args])


def _paths_scored(result) -> list[str]:
    return [Path(row["path"]).name for row in json.loads(result.stdout)]


def test_files_folders_recursion_and_quoted_globs(model, photos):
    flat = _run(str(photos), "--model", str(model), "--format", "json")
    assert flat.exit_code == 0, flat.output
    assert _paths_scored(flat) == ["a.png", "b.jpg"]  # images only, no subfolders, no .txt
    deep = _run(str(photos), "-r", "--model", str(model), "-f", "json")
    assert _paths_scored(deep) == ["a.png", "b.jpg", "c.png", "d.PNG"]
    globbed = _run(str(photos / "*.png"), str(photos / "a.png"), "--model", str(model), "-f", "json")
    assert _paths_scored(globbed) == ["a.png"]  # expanded by pinet, duplicates dropped
    deep_glob = _run(str(photos / "**" / "*.png"), "--recursive", "--model", str(model), "-f", "json")
    assert _paths_scored(deep_glob) == ["a.png", "c.png"]  # the glob itself is case-sensitive
    some_unmatched = _run(str(photos / "b.jpg"), str(photos / "*.gif"), "--model", str(model), "-f", "json")
    assert some_unmatched.exit_code == 0 and "matched no image files" in some_unmatched.stderr


def test_formats_parse_and_carry_path_score_error(model, photos):
    broken = photos / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 40)
    arguments = [str(photos / "a.png"), str(broken), str(photos / "b.jpg"), "--model", str(model)]
    expected = {str(photos / "a.png"): Scorer(model).score(photos / "a.png"),
                str(photos / "b.jpg"): Scorer(model).score(photos / "b.jpg")}

    as_json = _run(*arguments, "--format", "json")
    as_jsonl = _run(*arguments, "--format", "jsonl")
    as_csv = _run(*arguments, "--format", "csv")
    rows_by_format = {
        "json": json.loads(as_json.stdout),
        "jsonl": [json.loads(line) for line in as_jsonl.stdout.splitlines()],
        "csv": list(csv.DictReader(io.StringIO(as_csv.stdout))),
    }
    for result in (as_json, as_jsonl, as_csv):
        assert result.exit_code == 1  # one failed
    for name, rows in rows_by_format.items():
        assert [row["path"] for row in rows] == arguments[:3], name  # input order
        for row in rows:
            assert {"path", "score", "error", "crops"} <= set(row)
            if row["path"] == str(broken):
                assert not row["score"] and str(broken) in row["error"], name
            else:
                assert float(row["score"]) == pytest.approx(expected[row["path"]], abs=1e-6), name
                assert not row["error"] and int(row["crops"]) == 5


def test_sort_puts_best_first_and_failures_last(model, photos):
    missing = str(photos / "missing.png")
    result = _run(str(photos), missing, "-r", "--sort", "--model", str(model), "-f", "json")
    rows = json.loads(result.stdout)
    scores = [row["score"] for row in rows[:-1]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 4  # higher_is_better in the model
    assert rows[-1]["path"] == missing and rows[-1]["score"] is None and result.exit_code == 1


def test_table_lists_failures_on_stderr(model, photos):
    (photos / "empty.png").write_bytes(b"")
    result = _run(str(photos), "--model", str(model))
    assert result.exit_code == 1
    assert "a.png" in result.stdout and "tiny-weighted-mean" in result.stdout
    assert "empty.png" in result.stderr and "empty file (0 bytes)" in result.stderr
    assert "2 of 3 images scored, 1 failed" in result.stderr


def test_output_file_is_written_and_stdout_stays_empty(model, photos, tmp_path):
    target = tmp_path / "out" / "scores.jsonl"
    result = _run(str(photos), "--model", str(model), "-f", "jsonl", "-o", str(target), "--batch-size", "1",
                  "--threads", "1")
    assert result.exit_code == 0 and result.stdout == ""
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [Path(row["path"]).name for row in rows] == ["a.png", "b.jpg"]
    assert [p.name for p in target.parent.iterdir()] == ["scores.jsonl"]  # no temp file left


@pytest.mark.parametrize("arguments, fragment", [
    ([], "no paths given"),
    (["{album}/*.gif"], "nothing matched"),
    (["{album}/docs"], "nothing matched"),  # a folder without images
    (["{album}", "--format", "xml"], "xml"),
    (["{album}", "--provider", "tpu"], "tpu"),
    (["{album}", "--batch-size", "0"], "batch-size"),
    (["{album}", "--model", "{album}/absent.onnx"], "not found"),
])
def test_usage_errors_exit_2(model, photos, arguments, fragment):
    filled = [a.format(album=photos) for a in arguments]
    if "--model" not in filled:
        filled += ["--model", str(model)]
    result = _run(*filled)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output


def test_invalid_model_exits_1_and_cuda_falls_back_with_a_warning(model, photos, tmp_path):
    (tmp_path / "junk.onnx").write_text("junk")
    refused = _run(str(photos), "--model", str(tmp_path / "junk.onnx"))
    assert refused.exit_code == 1 and "junk.onnx" in refused.stderr
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        fell_back = _run(str(photos), "--model", str(model), "--provider", "cuda", "-f", "json")
        assert fell_back.exit_code == 0 and "CUDAExecutionProvider not in use" in fell_back.stderr
        assert len(json.loads(fell_back.stdout)) == 2


def test_module_imports_nothing_heavy():
    probe = ("import sys, pinet.cli.app; heavy = [m for m in ('numpy', 'onnxruntime', 'PIL', 'torch') "
             "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
