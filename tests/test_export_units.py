"""Small pieces of the exporter: CPU-flag driven INT8 types, photo sets, degradations, node sorting."""

from __future__ import annotations

import numpy as np
import pytest

from pinet_export.photos import (CALIBRATION_DEGRADATIONS, DEGRADATIONS, calibration_crops, degrade, parity_photos,
                                 ranking_photos)
from pinet_export.quantize import choose_int8_types
from pinet_runtime.cpu import cpu_flags
from pinet_runtime.preprocess import Preprocessing, load_image

PREP = Preprocessing(crop_size=32, resize_short_side=40)


def test_int8_types_follow_vnni(tmp_path):
    avx2_only = tmp_path / "avx2"
    avx2_only.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    vnni = tmp_path / "vnni"
    vnni.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n")
    flags = cpu_flags(avx2_only)
    assert flags["avx2"] and flags["fma"] and not flags["avx512_vnni"]
    # this-cpu: full 8-bit weights only where this CPU has VNNI
    assert choose_int8_types(flags, "this-cpu").reduce_range is True
    assert choose_int8_types(cpu_flags(vnni), "this-cpu").reduce_range is False
    assert choose_int8_types(cpu_flags(tmp_path / "missing"), "this-cpu").reduce_range is True  # unknown: safe
    types = choose_int8_types(flags)
    assert (types.activation, types.weight) == ("uint8", "int8")
    # The default, portable: 7-bit weights even when the exporting CPU has VNNI.
    assert choose_int8_types(cpu_flags(vnni)).reduce_range is True
    with pytest.raises(ValueError, match="INT8 target"):
        choose_int8_types(flags, "fastest")


def test_parity_photos_add_flips_then_resized_copies_to_reach_the_minimum(tmp_path, sample_photos):
    photos = sample_photos[:3]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = parity_photos([*photos, tmp_path / "broken.jpg"], PREP, minimum=8)
    names = [p.name for p in result.photos]
    assert len(names) == 9 and sum("#flip" in n for n in names) == 3 and sum("#resized" in n for n in names) == 3
    assert len(result.skipped) == 1 and "broken.jpg" in result.skipped[0]
    original = next(p for p in result.photos if p.name == photos[0].name)
    flipped = next(p for p in result.photos if p.name == photos[0].name + "#flip")
    # centre crop of the mirrored image = mirrored centre crop, up to the one-pixel centring offset
    assert original.crops.shape == flipped.crops.shape == (5, 3, 32, 32)
    assert not np.array_equal(original.crops, flipped.crops)


def test_degradations_are_deterministic_and_lower_detail(sample_photos):
    image = load_image(sample_photos[0], PREP)
    base = np.asarray(image, dtype=np.float32)
    for kind in DEGRADATIONS:
        first, second = np.asarray(degrade(image, kind)), np.asarray(degrade(image, kind))
        assert np.array_equal(first, second) and first.shape == base.shape
        assert np.abs(first.astype(np.float32) - base).mean() > 1.0
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(image, "sepia")
    with pytest.raises(ValueError, match="JPEG quality must be 1-95"):
        degrade(image, "jpeg_q0")
    ranking = ranking_photos(sample_photos, PREP)
    assert len(ranking.photos) == 8 * (1 + len(DEGRADATIONS))


def test_degradation_strength_is_read_from_the_name(sample_photos):
    image = load_image(sample_photos[0], PREP)
    base = np.asarray(image, dtype=np.float32)

    def change(kind):
        return float(np.abs(np.asarray(degrade(image, kind), dtype=np.float32) - base).mean())

    # stronger settings change the pixels more, and the calibration set's differ from the gate's
    assert change("gaussian_noise_s15") < change("gaussian_noise_s25")
    assert change("gaussian_blur_r2") < change("gaussian_blur_r3")
    assert change("jpeg_q20") < change("jpeg_q10")
    assert not set(CALIBRATION_DEGRADATIONS) & set(DEGRADATIONS)


def test_calibration_crops_include_degraded_versions_of_each_photo(sample_photos):
    clean, skipped, used = calibration_crops(sample_photos[:2], PREP, 1000)
    assert clean.shape == (10, 3, 32, 32) and used == 2 and skipped == []
    varied, _, used = calibration_crops(sample_photos[:2], PREP, 1000, CALIBRATION_DEGRADATIONS)
    assert varied.shape == (40, 3, 32, 32) and used == 2
    # each photo's clean crops come first, then its degraded versions (noise: the last)
    assert np.array_equal(varied[:5], clean[:5]) and np.array_equal(varied[20:25], clean[5:])
    def detail(crops):   # mean difference of neighbouring pixels: blur lowers it, noise raises it
        return float(np.abs(np.diff(crops, axis=-1)).mean())

    assert detail(varied[5:10]) < detail(varied[:5]) < detail(varied[15:20])
    capped, _, _ = calibration_crops(sample_photos[:2], PREP, 8, CALIBRATION_DEGRADATIONS)
    assert len(capped) == 8 and np.array_equal(capped[0], varied[0]) and np.array_equal(capped[-1], varied[-1])


def test_sort_nodes_topologically_restores_producer_order():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from pinet_export.fp16 import sort_nodes_topologically

    relu = helper.make_node("Relu", ["mid"], ["y"], name="relu")
    cast = helper.make_node("Cast", ["x"], ["mid"], name="cast", to=TensorProto.FLOAT)
    graph = helper.make_graph([relu, cast], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    sort_nodes_topologically(graph)
    assert [n.name for n in graph.node] == ["cast", "relu"]
    onnx.checker.check_model(helper.make_model(graph))
