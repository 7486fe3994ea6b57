"""`pinet bench`'s camera rows: the stand-in camera JPEG, the interleaved child measurement on the
fast decode path, the ratios and the 12-MP target (arithmetic only: no timing is asserted)."""

from __future__ import annotations

import statistics

import pytest
from PIL import Image

from pinet_export.bench.camera import (CAMERA_SIZES, TARGET_CAMERA_RATIO, camera_row, camera_spec, camera_targets,
                                       make_camera_jpeg, render_camera)
from pinet_export.bench.run import run_child
from pinet_export.bench.settings import BenchSettings


def test_camera_jpeg_is_the_enlarged_photo(sample_photos, tmp_path):
    photo = make_camera_jpeg(sample_photos[0], (1200, 900), tmp_path / "camera.jpg")
    with Image.open(photo) as image:
        assert image.format == "JPEG" and image.size == (1200, 900)
    assert CAMERA_SIZES["12mp"] == (4000, 3000) and CAMERA_SIZES["24mp"] == (6000, 4000)


def test_camera_probe_measures_every_step_on_the_fast_path(tiny_onnx, sample_photos, tmp_path):
    pytest.importorskip("onnx")
    model = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")
    photo = make_camera_jpeg(sample_photos[0], (1200, 900), tmp_path / "camera.jpg")
    settings = BenchSettings(repeats=2, warmup=1, threads=(1,))
    result = run_child(camera_spec(model, photo, 1, settings), settings)
    assert result["decode_path"] == "jpeg-dct-1/8"     # tiny contract: 40 px short side
    assert set(result["times"]) == {"model_ms", "preprocess_ms", "single_ms", "stream_ms", "stream_no_prefetch_ms"}
    assert all(len(values) == 2 and min(values) > 0 for values in result["times"].values())
    row = camera_row("tiny", "int8", "12mp", photo, 1, result)
    assert row["photo_size"] == [1200, 900] and row["photo_bytes"] == photo.stat().st_size
    medians = {name: statistics.median(values) for name, values in result["times"].items()}
    assert row["single_ratio"] == pytest.approx(medians["single_ms"] / medians["model_ms"], rel=1e-9)
    assert row["stream_ratio"] == pytest.approx(medians["stream_ms"] / medians["model_ms"], rel=1e-9)
    targets = camera_targets([row, dict(row, photo="24mp")])
    assert [t["case"] for t in targets] == ["tiny threads 1"] * 2     # 12-MP INT8 rows only
    assert all(t["threshold"] == TARGET_CAMERA_RATIO and t["met"] == (t["value"] <= TARGET_CAMERA_RATIO)
               for t in targets)
    table = render_camera([row])
    assert any("| tiny int8 | 12mp 1200x900 | 1 | jpeg-dct-1/8 |" in line for line in table)
