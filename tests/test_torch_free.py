"""Torch-free proof: pinet_runtime and `pinet score` work in a process where torch and every other
training/export dependency is blocked by a meta-path finder that raises ImportError.

The tiny ONNX model is built here in the parent process (with the `onnx` package, via
test_runtime_model_file.py); the child only reads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKED = ("torch", "torchvision", "onnx", "onnxsim", "onnxscript", "scipy", "safetensors", "piq",
           "pinet_training", "pinet_export")

BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class BlockHeavyImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: this process must stay torch-free")
        return None
sys.meta_path.insert(0, BlockHeavyImports())
"""

# Runs the pinet CLI with the given argv, then reports (on stderr, as the last line) which
# blocked packages ended up imported: must be none.
CLI = BLOCKER + """
import atexit, json
atexit.register(lambda: print("LOADED=" + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(BLOCKED))),
                              file=sys.stderr))
from pinet.cli.app import main
sys.argv = ["pinet", *sys.argv[1:]]
main()
"""

API = BLOCKER + """
import json
from pinet_runtime import Scorer
scorer = Scorer(sys.argv[1], providers="cpu")
one = scorer.score(sys.argv[2])
many = [r.score for r in scorer.score_many(sys.argv[2:], batch_size=2)]
loaded = sorted({m.split('.')[0] for m in sys.modules} & set(BLOCKED))
print(json.dumps({"one": one, "many": many, "loaded": loaded, "onnxruntime": "onnxruntime" in sys.modules}))
"""


@pytest.fixture(scope="module")
def model(tiny_onnx, tmp_path_factory) -> Path:
    return tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)


def _loaded(stderr: str) -> list:
    line = [row for row in stderr.splitlines() if row.startswith("LOADED=")][-1]
    return json.loads(line.removeprefix("LOADED="))


def test_the_blocker_really_blocks():
    done = _run(BLOCKER + "import torch")
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def test_runtime_api_scores_without_torch(model, sample_photos):
    photos = [str(p) for p in sample_photos[:3]]
    done = _run(API, str(model), *photos)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["loaded"] == [] and report["onnxruntime"]
    assert len(report["many"]) == 3 and report["many"][0] == pytest.approx(report["one"])


def test_cli_help_and_score_without_torch(model, sample_photos):
    shown = _run(CLI, "--help")
    assert shown.returncode == 0 and "score" in shown.stdout and _loaded(shown.stderr) == []

    scored = _run(CLI, "score", str(sample_photos[0]), str(sample_photos[1]), "--model", str(model), "-f", "json")
    assert scored.returncode == 0, scored.stderr
    rows = json.loads(scored.stdout)
    assert [row["path"] for row in rows] == [str(sample_photos[0]), str(sample_photos[1])]
    assert all(isinstance(row["score"], float) for row in rows)
    assert _loaded(scored.stderr) == []

    card = _run(CLI, "info", str(model), "--json")
    assert card.returncode == 0, card.stderr
    assert json.loads(card.stdout)["kind"] == "onnx" and _loaded(card.stderr) == []


def test_training_commands_exit_2_with_the_install_hint(tmp_path):
    created = _run(CLI, "model", "create", "--variant", "pinet_lite0", "--out", str(tmp_path / "m.safetensors"))
    assert created.returncode == 2, created.stderr
    assert "pip install 'pinet-iqa[train]'" in " ".join(created.stderr.split())
    assert "Traceback" not in created.stderr and _loaded(created.stderr) == []
