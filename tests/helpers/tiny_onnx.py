"""A PINet-shaped ONNX file built with the `onnx` package: a position- and colour-weighted mean
of each crop, with every PINet metadata key. Runtime tests use it so decoding, threading and CLI
checks run fast and independently of the PINet network; tests get it via the `tiny_onnx` fixture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pinet_runtime import metadata as keys
from pinet_runtime.metadata import ModelMetadata
from pinet_runtime.preprocess import Preprocessing

TINY_PREPROCESSING = Preprocessing(crop_size=32, resize_short_side=40, crop_layout="center_corners",
                                   score_name="tiny-weighted-mean", score_range=(-3.0, 3.0))


def tiny_weights(crop_size: int) -> np.ndarray:
    """[1, 3, S, S] weights: differ per channel, row and column, so any flip, rotation or colour
    change moves the score."""
    ramp = np.linspace(0.0, 1.0, crop_size, dtype=np.float32)
    rows = 1.0 + ramp[:, None]
    cols = 1.0 + 2.0 * ramp[None, :]
    channels = np.array([1.0, -0.5, 0.25], dtype=np.float32)[:, None, None]
    return (channels * rows * cols)[None].astype(np.float32)


def tiny_expected_score(crops: np.ndarray) -> float:
    """The score the tiny model must give, computed with numpy: mean over crops of the weighted mean."""
    weights = tiny_weights(crops.shape[-1]).astype(np.float64)
    return float((crops.astype(np.float64) * weights).mean(axis=(1, 2, 3)).mean())


def tiny_metadata(prep: Preprocessing, precision: str = "fp32") -> dict[str, str]:
    """Every PINet key, written through the runtime's typed contract like an export writes them."""
    return ModelMetadata(
        preprocessing=prep, model_config={"variant": "tiny_test", "backbone": "none"}, variant="tiny_test",
        precision=precision, source_sha256="0" * 64, pinet_version="0.1.0",
        export_date="2026-11-01T00:00:00+00:00").to_props()


def build_tiny_model(path: Path, prep: Preprocessing = TINY_PREPROCESSING, metadata: dict | None = None,
                     input_name: str = keys.INPUT_NAME, output_name: str = keys.OUTPUT_NAME,
                     batch: int | str = "batch") -> Path:
    """Write the tiny model; ``metadata`` entries override the defaults (value None drops a key)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    size = prep.crop_size
    weights = numpy_helper.from_array(tiny_weights(size), name="weights")
    graph = helper.make_graph(
        [helper.make_node("Mul", [input_name, "weights"], ["weighted"]),
         helper.make_node("ReduceMean", ["weighted"], [output_name], axes=[1, 2, 3], keepdims=0)],
        "tiny_pinet",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    values = tiny_metadata(prep)
    values.update(metadata or {})
    for key, value in values.items():
        if value is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_tiny_e2e_pair(folder: Path) -> tuple[Path, Path]:
    """The tiny crops model and its end-to-end file (pixels in, score out) in ``folder``."""
    from pinet_export.e2e.graph import write_e2e

    crops = build_tiny_model(folder / "model.onnx")
    e2e = folder / "model.e2e.onnx"
    write_e2e(crops, e2e)
    return crops, e2e
