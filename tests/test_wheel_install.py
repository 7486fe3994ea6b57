"""The base install is the torch-free scorer: build the wheel, install it WITHOUT extras in a fresh
venv, and score a bundled sample photo there with `pinet score` and a tiny model file.

Dependencies come from the pip cache / the configured package index. The venv size is printed
and attached to the test report (docs/runtime.md quotes the measured figure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "pinet", "training", "export", "runtime")


def _folder_megabytes(folder: Path) -> float:
    total = sum(entry.stat().st_size for entry in folder.rglob("*") if entry.is_file() and not entry.is_symlink())
    return total / 2**20


def _run(command: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=400, **options)


@pytest.mark.slow
def test_wheel_installs_without_extras_and_scores(tiny_onnx, tmp_path, sample_photos, record_property):
    # Build from a copy so the shared working tree gets no build/ or egg-info folders.
    source = tmp_path / "src"
    source.mkdir()
    for name in PACKAGE_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, source / name)
    built = _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                  "-w", str(tmp_path / "dist")])
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("pinet_iqa-*.whl")

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    binaries = venv / ("Scripts" if os.name == "nt" else "bin")
    installed = _run([str(binaries / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                      str(wheel)])
    if installed.returncode != 0 and "No matching distribution" in installed.stderr:
        pytest.skip(f"base dependencies not reachable from the pip cache or index: {installed.stderr[-400:]}")
    assert installed.returncode == 0, installed.stderr[-2000:]

    listed = _run([str(binaries / "python"), "-m", "pip", "list", "--format", "json"])
    names = {row["name"].lower() for row in json.loads(listed.stdout)}
    assert {"pinet-iqa", "onnxruntime", "numpy", "pillow", "typer", "rich"} <= names
    assert not names & {"torch", "torchvision", "onnx", "scipy", "safetensors"}  # extras stay out

    model = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")
    photo = sample_photos[0]
    scored = _run([str(binaries / "pinet"), "score", str(photo), "--model", str(model), "--format", "json"],
                  cwd=tmp_path)  # not the repo root: the installed package must be used
    assert scored.returncode == 0, scored.stderr
    (row,) = json.loads(scored.stdout)
    assert row["path"] == str(photo) and row["error"] is None and row["crops"] == 5

    # The installed copy, not the source tree, answered - and its score is the local one.
    origin = _run([str(binaries / "python"), "-c", "import pinet_runtime; print(pinet_runtime.__file__)"],
                  cwd=tmp_path)
    assert str(venv) in origin.stdout
    from pinet_runtime import Scorer

    assert row["score"] == pytest.approx(Scorer(model, providers="cpu").score(photo), abs=1e-6)

    size = _folder_megabytes(venv)
    record_property("venv_megabytes", round(size, 1))
    print(f"\nbase-install venv: {size:.0f} MiB ({len(names)} distributions)")
    assert size < 600  # the base install stays far below a torch install (~5.8 GB measured)
