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


@pytest.fixture(scope="session")
def tiny_onnx():
    """tests/helpers/tiny_onnx.py as a module (test files cannot import each other under importlib mode)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pinet_tests_tiny_onnx", ROOT / "tests" / "helpers" / "tiny_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
