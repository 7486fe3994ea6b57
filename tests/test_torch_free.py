"""Torch-free proof: pinet_runtime and `pinet score` work in a process where torch and every other
training/export dependency is blocked by a meta-path finder that raises ImportError.

The tiny ONNX model is built here in the parent process (with the `onnx` package, via
tests/helpers/tiny_onnx.py); the child only reads it. The blocking child process comes from
tests/helpers/blocked_imports.py, shared with every test that needs one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

API = """
import json, sys
from pinet_runtime import Scorer
scorer = Scorer(sys.argv[1], providers="cpu")
one = scorer.score(sys.argv[2])
many = [r.score for r in scorer.score_many(sys.argv[2:], batch_size=2)]
print(json.dumps({"one": one, "many": many, "onnxruntime": "onnxruntime" in sys.modules}))
"""


@pytest.fixture(scope="module")
def model(tiny_onnx, tmp_path_factory) -> Path:
    return tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def test_the_blocker_really_blocks(blocked_imports):
    done = blocked_imports.run_python("import torch")
    assert done.returncode != 0 and "torch is blocked" in done.stderr
    assert blocked_imports.leaked_modules(done) == []


def test_the_leak_report_names_packages_loaded_before_the_blocker(blocked_imports):
    """`encodings` is imported at interpreter start-up, before any code can install a finder: the
    report names it, and its submodules not yet loaded stay blocked."""
    done = blocked_imports.run_python("import json", blocked=("encodings", "torch"))
    assert done.returncode == 0, done.stderr
    assert blocked_imports.leaked_modules(done) == ["encodings"]
    submodule = blocked_imports.run_python("import encodings.idna", blocked=("encodings",))
    assert submodule.returncode != 0 and "encodings.idna is blocked" in submodule.stderr


def test_runtime_api_scores_without_torch(model, sample_photos, blocked_imports):
    photos = [str(p) for p in sample_photos[:3]]
    done = blocked_imports.run_python(API, str(model), *photos)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert blocked_imports.leaked_modules(done) == [] and report["onnxruntime"]
    assert len(report["many"]) == 3 and report["many"][0] == pytest.approx(report["one"])


def test_cli_help_and_score_without_torch(model, sample_photos, blocked_imports):
    run_cli, leaked = blocked_imports.run_cli, blocked_imports.leaked_modules
    shown = run_cli("--help")
    assert shown.returncode == 0 and "score" in shown.stdout and leaked(shown) == []

    scored = run_cli("score", str(sample_photos[0]), str(sample_photos[1]), "--model", str(model), "-f", "json")
    assert scored.returncode == 0, scored.stderr
    rows = json.loads(scored.stdout)
    assert [row["path"] for row in rows] == [str(sample_photos[0]), str(sample_photos[1])]
    assert all(isinstance(row["score"], float) for row in rows)
    assert leaked(scored) == []

    card = run_cli("info", str(model), "--json")
    assert card.returncode == 0, card.stderr
    assert json.loads(card.stdout)["kind"] == "onnx" and leaked(card) == []


def test_training_commands_exit_2_with_the_install_hint(tmp_path, blocked_imports):
    run_cli, leaked = blocked_imports.run_cli, blocked_imports.leaked_modules
    created = run_cli("model", "create", "--variant", "pinet_lite0", "--out", str(tmp_path / "m.safetensors"))
    assert created.returncode == 2, created.stderr
    assert "pip install 'pinet-iqa[train]'" in " ".join(created.stderr.split())
    assert "Traceback" not in created.stderr and leaked(created) == []
