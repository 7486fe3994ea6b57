"""Hostile inputs through the API: images (strips, oversized, without pixels, links, animated GIFs)
and abused model files (non-finite, too large or wrongly typed fields). Every image problem is a
per-item ImageDecodeError naming the input; every model problem is a ModelFileError when the
model is opened, naming the field and its range; no non-finite score is ever reported. The CLI side is in test_hostile_cli.py. These tests also run
under a 4 GiB address-space limit (test_fuzz_inputs.py).
"""

from __future__ import annotations

import gc
import json
import math
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pinet_runtime import ImageDecodeError, ModelFileError, Scorer
from pinet_runtime import metadata as keys
from pinet_runtime.errors import ImageLimitError, NonFiniteScoreError
from pinet_runtime.geometry import MAX_ASPECT_RATIO, MAX_DECODED_PIXELS, MAX_RESIZED_PIXELS
from pinet_runtime.preprocess import Preprocessing, preprocess


@pytest.fixture(scope="module")
def scorer(tiny_onnx, tmp_path_factory) -> Scorer:
    return Scorer(tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx"), providers="cpu")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixel data (the declared size is all that counts)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _good(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(path)
    return path


# --- strips and oversized images are per-item errors, refused before allocation -------------

@pytest.mark.parametrize("size", [(1, 65535), (65535, 1)])
def test_extreme_strip_is_a_per_item_error_and_the_batch_goes_on(scorer, tmp_path, size):
    strip = tmp_path / f"strip_{size[0]}x{size[1]}.png"
    Image.new("RGB", size, (90, 30, 200)).save(strip)
    good = _good(tmp_path)
    started = time.perf_counter()
    results = list(scorer.score_many([good, strip, good], batch_size=8))
    assert time.perf_counter() - started < 2.0
    assert results[0].ok and results[2].ok and results[0].score == results[2].score
    assert results[1].score is None and str(strip) in results[1].error
    assert f"limit of {MAX_ASPECT_RATIO}:1" in results[1].error and "MAX_ASPECT_RATIO" in results[1].error
    with pytest.raises(ImageLimitError, match="aspect ratio"):
        scorer.score(strip)


def test_a_strip_with_the_default_384_px_contract(sample_photos, tmp_path):
    """The worst case: the shipped contract would upscale 1x65535 to 384 x 25 million
    (~29 GB of RGB). Refused from the header; under test_fuzz_inputs.py's 4 GiB cap too."""
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 65535)).save(strip)
    with pytest.raises(ImageLimitError, match="MAX_ASPECT_RATIO"):
        preprocess(strip, Preprocessing())
    try:
        default = Scorer(providers="cpu")
    except ModelFileError:
        pytest.skip("no bundled default model in this install")
    bad, good = default.score_many([strip, sample_photos[0]], batch_size=2)
    assert bad.score is None and str(strip) in bad.error and "20:1" in bad.error
    assert good.ok and math.isfinite(good.score)


def test_ten_thousand_by_ten_strip_is_refused_quickly(scorer):
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="1000:1"):
        scorer.score(np.zeros((10, 10000, 3), np.uint8))
    assert time.perf_counter() - started < 0.5


def test_decoded_and_resized_size_limits_name_the_limit(tmp_path):
    declared = int(math.isqrt(MAX_DECODED_PIXELS)) + 1  # square: passes the aspect check
    big = tmp_path / "big.png"
    big.write_bytes(png_header_only(declared, declared))
    with pytest.raises(ImageLimitError) as caught:
        preprocess(big, Preprocessing())
    assert str(big) in str(caught.value) and str(MAX_DECODED_PIXELS) in str(caught.value)
    assert "MAX_DECODED_PIXELS" in str(caught.value)
    # 3000x200 with a 4096 px short side would become 61440x4096: past the resized-size limit.
    wide = tmp_path / "wide.png"
    Image.new("RGB", (3000, 200)).save(wide)
    with pytest.raises(ImageLimitError, match="MAX_RESIZED_PIXELS") as caught:
        preprocess(wide, Preprocessing(resize_short_side=4096, crop_size=32))
    assert str(MAX_RESIZED_PIXELS) in str(caught.value) and "61440x4096" in str(caught.value)


# --- images without pixels --------------------------------------------------------------------

@pytest.mark.parametrize("source", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8),
                                    Image.new("RGB", (0, 0))], ids=["array0x5", "array5x0", "pil0x0"])
def test_images_without_pixels_raise_image_decode_error(scorer, source):
    with pytest.raises(ImageDecodeError, match="no pixels"):
        scorer.score(source)
    (result,) = scorer.score_many([source])
    assert result.score is None and "no pixels" in result.error


# --- files that are not what they seem ----------------------------------------------------------

def test_a_non_utf8_file_name_is_scored_and_named(scorer, tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"
    Image.open(_good(tmp_path)).save(raw, format="PNG")
    name = os.fsdecode(raw)
    (result,) = scorer.score_many([name])
    assert result.ok and result.source == name and os.fsencode(result.source) == raw
    Path(name).write_bytes(b"")
    (failed,) = scorer.score_many([name])
    assert failed.error == f"{name}: empty file (0 bytes)"


def test_symlink_loop_and_dangling_link_are_named_as_such(scorer, tmp_path):
    loop, dangling = tmp_path / "loop.jpg", tmp_path / "dangling.jpg"
    os.symlink(loop, loop)
    os.symlink(tmp_path / "gone.jpg", dangling)
    loop_result, dangling_result = scorer.score_many([loop, dangling])
    assert "symbolic links" in loop_result.error and "no such file" not in loop_result.error
    assert "broken symbolic link" in dangling_result.error
    with pytest.raises(ImageDecodeError, match="a directory"):
        scorer.score(tmp_path)


def test_animated_gif_scores_its_first_frame_and_leaves_no_file_open(scorer, tmp_path):
    frames = [Image.new("RGB", (40, 50), colour) for colour in ((200, 10, 10), (10, 200, 10), (10, 10, 200))]
    gif = tmp_path / "animated.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = scorer.score(gif)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    with Image.open(gif) as first:
        assert score == pytest.approx(scorer.score(np.asarray(first.convert("RGB"))), abs=1e-6)


# --- non-finite model outputs and metadata ------------------------------------------------------

def _constant_output_model(path: Path, value: float, tiny_onnx) -> Path:
    """A tiny model whose every crop scores ``value`` (NaN, inf) while its metadata is valid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.full((1, 3, 32, 32), value, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["crops", "weights"], ["weighted"]),
         helper.make_node("ReduceMean", ["weighted"], ["scores"], axes=[1, 2, 3], keepdims=0)],
        "constant", [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(weights, name="weights")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, text in tiny_onnx.tiny_metadata(tiny_onnx.TINY_PREPROCESSING).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_output_is_a_per_item_error_never_a_score(tiny_onnx, tmp_path, value):
    bad = Scorer(_constant_output_model(tmp_path / "nan.onnx", value, tiny_onnx), providers="cpu")
    good = _good(tmp_path)
    with pytest.raises(NonFiniteScoreError, match="non-finite score") as caught:
        bad.score(good)
    assert str(good) in str(caught.value)
    results = list(bad.score_many([good, good], batch_size=2))
    assert all(r.score is None and str(good) in r.error and "non-finite" in r.error for r in results)


def _prep_json(**changes) -> str:
    data = json.loads(Preprocessing(crop_size=32, resize_short_side=40, score_name="tiny-weighted-mean",
                                    score_range=(-3.0, 3.0)).to_json())
    data.update(changes)
    return json.dumps(data)  # json.dumps writes NaN, as Python's json accepts it


@pytest.mark.parametrize("changes, fragment", [
    ({"std": [float("nan"), 0.2, 0.2]}, "std must be 3 finite numbers in [0.0001, 1000]"),               # non-finite
    ({"std": [1e-300, 0.2, 0.2]}, "std must be 3 finite numbers in [0.0001, 1000]"),                     # non-finite
    ({"mean": [float("inf"), 0.0, 0.0]}, "mean must be 3 finite numbers"),
    ({"grid_rows": 100000, "crop_layout": "grid"}, "grid_rows must be an integer in [1, 16]"),           # too large
    ({"grid_cols": 100000}, "grid_cols must be an integer in [1, 16]"),                                  # too large
    ({"resize_short_side": 1000000}, "resize_short_side must be null or an integer in [crop_size=32, 4096]"),
    ({"crop_size": 224.0}, "crop_size must be an integer in [8, 1024], got 224.0"),                      # wrong type
    ({"mean": "abc"}, "mean must be 3 finite numbers"),                                                  # wrong type
    ({"alpha_background": [255, 255]}, "alpha_background must be 3 integers in [0, 255]"),               # wrong type
    ({"higher_is_better": "false"}, "higher_is_better must be a boolean (true or false), got 'false'"),  # wrong type
    ({"jpeg_draft": 1}, "jpeg_draft must be a boolean"),
    ({"crop_layout": "grid", "grid_rows": 16, "grid_cols": 16, "crop_size": 1024, "resize_short_side": 1024},
     "above the limit of 16777216"),
])
def test_bad_preprocessing_is_refused_when_the_model_is_opened(tiny_onnx, tmp_path, changes, fragment):
    path = tiny_onnx.build_tiny_model(tmp_path / "bad.onnx", metadata={keys.PREPROCESSING: _prep_json(**changes)})
    with pytest.raises(ModelFileError) as caught:
        Scorer(path, providers="cpu")
    message = str(caught.value)
    assert str(path) in message and keys.PREPROCESSING in message and fragment in message, message


@pytest.mark.parametrize("override, fragment", [
    ({keys.SCORE_MEANING: json.dumps({"name": "tiny-weighted-mean", "range": [-3.0, 3.0],
                                      "higher_is_better": "false"})}, "higher_is_better must be a boolean"),
    ({keys.SCORE_MEANING: json.dumps({"name": "tiny-weighted-mean", "range": [-3.0, 3.0],
                                      "higher_is_better": False})}, "disagree"),
    ({keys.STAGE: "1"}, "must be 2 (a scoring model)"),
    ({keys.PRECISION: "fp64"}, "precision must be one of"),
    ({keys.SOURCE_SHA256: "xyz"}, "64 lowercase hex digits"),
    ({keys.EXPORT_DATE: "yesterday"}, "ISO 8601"),
    ({keys.CALIBRATION: json.dumps({"reduce_range": "false"})}, "reduce_range must be a boolean"),
    ({keys.CALIBRATION: json.dumps({"portable": 1})}, "portable must be a boolean"),
    ({keys.PARAMETERS: "12.5"}, "should be an integer"),
    ({keys.PARAMETERS: "0"}, "parameters must be an integer in [1,"),
    ({keys.BITMAP_PIXEL_FORMAT: "Bgr8"}, "pixel format must be one of ['Rgb8']"),
    ({keys.PREPROCESSING: "[" * 100000}, "not valid JSON"),
])
def test_other_malformed_fields_name_the_key(tiny_onnx, tmp_path, override, fragment):
    path = tiny_onnx.build_tiny_model(tmp_path / "bad.onnx", metadata=override)
    with pytest.raises(ModelFileError) as caught:
        Scorer(path, providers="cpu")
    assert str(path) in str(caught.value) and fragment in str(caught.value), str(caught.value)
    assert next(iter(override)) in str(caught.value)


def test_a_model_that_fails_to_run_is_a_model_file_error_naming_the_file(tiny_onnx, tmp_path):
    """A graph that onnxruntime loads but cannot run (a Reshape to a fixed 7 elements)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["crops"], ["mean"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("Reshape", ["mean", "seven"], ["scores"])],
        "broken", [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(np.array([7], dtype=np.int64), name="seven")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in tiny_onnx.tiny_metadata(tiny_onnx.TINY_PREPROCESSING).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    scorer = Scorer(path, providers="cpu")
    with pytest.raises(ModelFileError, match="onnxruntime failed to run the model") as caught:
        list(scorer.score_many([_good(tmp_path)]))
    assert str(path) in str(caught.value)
