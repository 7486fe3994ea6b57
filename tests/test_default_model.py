"""The bundled default model: complete metadata, sensible ordering, torch-free scoring."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pinet_runtime import Scorer, read_model_info
from pinet_runtime import metadata as keys
from pinet_runtime.model_file import default_model_path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_LIMIT_BYTES = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def scorer():
    return Scorer(providers="cpu")                 # the bundled INT8 model


@pytest.fixture(scope="module")
def photo(samples_dir):
    return Image.open(samples_dir / "kodak_kodim15.jpg").convert("RGB")


def test_bundled_files_exist_are_complete_and_small(sample_photos):
    checkpoint = ROOT / "pinet" / "assets" / "default.safetensors"
    onnx_files = [default_model_path("fp32"), default_model_path("int8")]
    total = checkpoint.stat().st_size + sum(p.stat().st_size for p in onnx_files + sample_photos)
    assert total <= BUNDLE_LIMIT_BYTES, f"bundle is {total / 2**20:.1f} MiB"
    for path, precision in zip(onnx_files, ("fp32", "int8")):
        info = read_model_info(path)
        assert info.precision == precision and info.variant == "pinet_lite0" and info.stage == 2
        assert info.preprocessing.crop_size == 224 and info.preprocessing.num_crops == 5
        assert info.score_meaning["higher_is_better"] is True
    from pinet.checkpoint import file_sha256, read_header

    header = read_header(checkpoint)
    assert header.stage == 2 and header.model_config.variant == "pinet_lite0"
    assert read_model_info(onnx_files[0]).source_sha256 == file_sha256(checkpoint)
    assert header.preprocessing == read_model_info(onnx_files[0]).preprocessing


def test_every_metadata_key_is_present():
    import onnx

    for precision in ("fp32", "int8"):
        model = onnx.load(str(default_model_path(precision)), load_external_data=False)
        present = {entry.key for entry in model.metadata_props}
        assert set(keys.REQUIRED_KEYS) <= present, set(keys.REQUIRED_KEYS) - present
    calibration = read_model_info(default_model_path("int8")).calibration
    assert calibration and read_model_info(default_model_path("fp32")).calibration is None


def _jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_photo_beats_its_heavily_blurred_version(scorer, photo):
    assert scorer.score(photo) > scorer.score(photo.filter(ImageFilter.GaussianBlur(6)))


def test_photo_beats_its_jpeg_q5_version(scorer, photo):
    assert scorer.score(photo) > scorer.score(_jpeg(photo, 5))


def test_photo_beats_its_noisy_version(scorer, photo):
    pixels = np.asarray(photo, dtype=np.float64)
    noisy = np.clip(pixels + np.random.default_rng(0).normal(0, 40, pixels.shape), 0, 255).astype(np.uint8)
    assert scorer.score(photo) > scorer.score(Image.fromarray(noisy))


def test_pinet_score_on_the_bundled_samples_without_torch(samples_dir, blocked_imports):
    result = blocked_imports.run_cli("score", str(samples_dir), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == len(list(samples_dir.glob("*.jpg")))
    assert all(row["error"] is None and 0.0 <= row["score"] <= 1.2 for row in rows)
    assert blocked_imports.leaked_modules(result) == []


def test_default_int8_is_replaced_by_fp32_where_it_could_saturate(monkeypatch):
    import pinet_runtime.scorer as scorer_module
    from pinet_runtime.cpu import has_vnni
    from pinet_runtime.model_file import int8_is_safe_here

    int8 = read_model_info(default_model_path("int8"))
    assert int8_is_safe_here(int8, kernels_saturate=False)   # VNNI, ARM
    full_range = int8.calibration.get("reduce_range") is False
    assert int8_is_safe_here(int8, kernels_saturate=True) is not full_range
    monkeypatch.setattr(scorer_module, "u8s8_saturates", lambda: True)
    expected = "fp32" if full_range else "int8"
    assert Scorer(providers="cpu").info.precision == expected
    monkeypatch.setattr(scorer_module, "u8s8_saturates", lambda: False)
    assert Scorer(providers="cpu").info.precision == "int8"
    assert has_vnni(Path("/nonexistent/cpuinfo")) in (False, None)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_only_a_non_portable_default_int8_falls_back_and_it_says_so(tmp_path, monkeypatch, caplog, tiny_onnx,
                                                                    reduce_range):
    """On x86 without VNNI a full-range INT8 default is swapped for FP32 with one warning naming the
    file; a portable (7-bit weights) one is used as it is, silently."""
    import logging

    import pinet_runtime.scorer as scorer_module

    calibration = json.dumps({"reduce_range": reduce_range, "portable": reduce_range})
    files = {"int8": tiny_onnx.build_tiny_model(tmp_path / "default.int8.onnx",
                                                metadata={keys.PRECISION: "int8", keys.CALIBRATION: calibration}),
             "fp32": tiny_onnx.build_tiny_model(tmp_path / "default.onnx")}
    monkeypatch.setattr(scorer_module, "default_model_path", lambda precision="int8": files[precision])
    monkeypatch.setattr(scorer_module, "u8s8_saturates", lambda: True)
    with caplog.at_level(logging.WARNING, logger="pinet_runtime"):
        scorer = Scorer(providers="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if reduce_range:
        assert scorer.info.precision == "int8" and warnings == []
    else:
        assert scorer.info.precision == "fp32"
        assert len(warnings) == 1 and "default.int8.onnx" in warnings[0] and "saturate" in warnings[0]


def test_the_bundled_int8_is_portable_so_every_cpu_scores_with_it():
    calibration = read_model_info(default_model_path("int8")).calibration
    assert calibration["reduce_range"] is True and calibration["portable"] is True


def test_the_bundled_model_states_its_human_opinion_scale():
    """Every bundled file says what its score means: CLIVE's mean opinion score / 100, higher is better."""
    for precision in ("fp32", "int8"):
        info = read_model_info(default_model_path(precision))
        assert info.score_meaning == {"name": "MOS/100 (CLIVE)", "range": [0.0, 1.0], "higher_is_better": True}
        assert info.preprocessing.score_name == "MOS/100 (CLIVE)"
