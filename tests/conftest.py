"""Shared fixtures: locations of real photos. Tests needing the shared pristine set skip when absent."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "runtime" / "assets" / "samples"
PRISTINE = ROOT.parent / "shared" / "data" / "pristine"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The real photos bundled with the package (always present)."""
    return SAMPLES


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    return sorted(SAMPLES.glob("*.jpg"))


@pytest.fixture(scope="session")
def pristine_dir() -> Path:
    if not PRISTINE.is_dir():
        pytest.skip(f"shared pristine photos not found at {PRISTINE}")
    return PRISTINE


def _helper_module(name: str):
    """tests/helpers/<name>.py as a module (test files cannot import each other under importlib mode)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"pinet_tests_{name}", ROOT / "tests" / "helpers" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_onnx():
    """A tiny PINet-shaped ONNX model builder (tests/helpers/tiny_onnx.py)."""
    return _helper_module("tiny_onnx")


@pytest.fixture(scope="session")
def replicas():
    """Generated IQA datasets (tests/helpers/replicas.py)."""
    return _helper_module("replicas")


@pytest.fixture(scope="session")
def interrupted_runs():
    """Straight and SIGKILLed runs of a training command (tests/helpers/interrupted_runs.py)."""
    return _helper_module("interrupted_runs")


@pytest.fixture(scope="session")
def tiny_synth_set():
    """A hand-built tiny synth set (manifest + distorted PNGs) for training tests (tests/helpers/tiny_synth_set.py)."""
    return _helper_module("tiny_synth_set")


@pytest.fixture(scope="session")
def blocked_imports():
    """Run code or the pinet CLI with torch and other packages unimportable (tests/helpers/blocked_imports.py)."""
    return _helper_module("blocked_imports")


@pytest.fixture(scope="session")
def mixed_sets():
    """Tiny stage-2 data builders and shared finetune options (tests/helpers/mixed_sets.py)."""
    return _helper_module("mixed_sets")


@pytest.fixture(scope="session")
def batch_shards():
    """Per-process views of one training batch (tests/helpers/batch_shards.py)."""
    return _helper_module("batch_shards")


@pytest.fixture(scope="module")
def clive_like(tmp_path_factory, sample_photos, mixed_sets) -> Path:
    """A CLIVE-layout MOS set (18 photos + 1 anchor) made from the bundled photos."""
    return mixed_sets.write_clive_like(tmp_path_factory.mktemp("clive"), sample_photos)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, sample_photos, mixed_sets) -> Path:
    """A synthetic pseudo-MOS set (4 references x 3 blur levels) made from the bundled photos."""
    return mixed_sets.write_synthetic(tmp_path_factory.mktemp("synth"), sample_photos)


@pytest.fixture(scope="module")
def one_torch_thread():
    """On the shared 2-core machines torch's 2-thread spin-waiting made a tiny forward pass ~50x
    slower (3.2 s vs 0.06 s measured); one thread keeps those tests quick. Restored after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
