"""examples/score_e2e.py runs with only onnxruntime, numpy and Pillow: in a child process where every
pinet package (and torch, onnx ...) is blocked, it scores real photos, an EXIF-rotated JPEG among
them, as the runtime scores them with the crops model the end-to-end file was built from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from PIL import Image, ImageOps  # noqa: E402

from pinet_runtime.scorer import Scorer  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "score_e2e.py"
RUN_SCRIPT = "import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
BLOCKED_OURS = ("pinet", "pinet_runtime", "pinet_export", "pinet_training")


@pytest.fixture(scope="module")
def models(tiny_onnx, tmp_path_factory):
    return tiny_onnx.build_tiny_e2e_pair(tmp_path_factory.mktemp("example"))


def _rotated_copy(photo: Path, out: Path) -> Path:
    """The photo stored sideways with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    with Image.open(photo) as image:
        sideways = image.convert("RGB").transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        sideways.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out


def test_example_scores_like_the_runtime_with_pinet_blocked(models, sample_photos, blocked_imports, tmp_path):
    crops, e2e = models
    rotated = _rotated_copy(sample_photos[1], tmp_path / "sideways.jpg")
    photos = [str(p) for p in sample_photos[:3]] + [str(rotated)]
    done = blocked_imports.run_python(RUN_SCRIPT, str(EXAMPLE), str(e2e), *photos,
                                      blocked=blocked_imports.HEAVY_PACKAGES + BLOCKED_OURS)
    assert done.returncode == 0, done.stderr
    assert blocked_imports.leaked_modules(done) == []
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "# tiny-weighted-mean, range [-3.0, 3.0], higher is better"
    scores = dict(line.split("\t") for line in lines[1:])
    assert list(scores) == photos
    # Reference: the runtime on the same upright pixels (no DCT scaling: the example decodes fully).
    scorer = Scorer(crops)
    for path in photos:
        with Image.open(path) as image:
            upright = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        assert float(scores[path]) == pytest.approx(scorer.score(upright), abs=2e-3)
    # The sideways file scores as its upright original (orientation applied), not as its stored pixels.
    assert float(scores[str(rotated)]) == pytest.approx(float(scores[photos[1]]), abs=2e-3)
    with Image.open(rotated) as image:
        stored = np.asarray(image.convert("RGB"))
    assert stored.shape[:2] == (768, 512)
    assert abs(scorer.score(stored) - float(scores[str(rotated)])) > 5e-3


def test_example_refuses_a_crops_model_and_explains_usage(models, sample_photos, blocked_imports):
    crops, _ = models
    done = blocked_imports.run_python(RUN_SCRIPT, str(EXAMPLE), str(crops), str(sample_photos[0]),
                                      blocked=blocked_imports.HEAVY_PACKAGES + BLOCKED_OURS)
    assert done.returncode == 2 and "not a PINet end-to-end file" in done.stderr
    usage = blocked_imports.run_python(RUN_SCRIPT, str(EXAMPLE), blocked=blocked_imports.HEAVY_PACKAGES + BLOCKED_OURS)
    assert usage.returncode == 2 and "python examples/score_e2e.py model.e2e.onnx photo.jpg" in usage.stderr
