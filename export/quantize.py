"""INT8: onnxruntime static quantization, QDQ format, per-channel weights, calibrated on real photos.

Type choice by CPU (onnxruntime's quantization guide, confirmed by measurements in docs/export.md): on x86
without VNNI the U8S8 integer kernels can saturate, so weights use reduce_range (7 bits); with
AVX512-VNNI or AVX-VNNI the full 8-bit range is safe. Activations U8, weights S8 (U8S8) either way:
S8S8 QDQ measured slower than FP32 on this CPU family.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pinet_export.config import INT8_TARGETS
from pinet_export.mixed_precision import CANDIDATE_OP_TYPES, AccuracyTarget, search_fp32_nodes
from pinet_export.onnx_metadata import set_metadata
from pinet_runtime import metadata as keys

@dataclass(frozen=True)
class Int8Types:
    activation: str       # "uint8"
    weight: str           # "int8"
    reduce_range: bool
    reason: str


def choose_int8_types(flags: dict[str, bool], target: str = "portable") -> Int8Types:
    """``portable`` (the default: files ship to unknown CPUs) always uses reduce_range: 7-bit
    weights cannot saturate the U8S8 multiply-add of x86 CPUs without VNNI, so every CPU computes
    the same integers; ``this-cpu`` uses the full 8-bit range where the exporting CPU has VNNI."""
    if target not in INT8_TARGETS:
        raise ValueError(f"INT8 target {target!r} is not one of {INT8_TARGETS}")
    if target == "portable":
        return Int8Types("uint8", "int8", True, "portable: U8S8 with reduce_range, safe on CPUs without VNNI")
    if flags.get("avx512_vnni") or flags.get("avx_vnni"):
        return Int8Types("uint8", "int8", False, "VNNI present: U8S8 with the full 8-bit weight range")
    return Int8Types("uint8", "int8", True, "no VNNI (AVX2 path): U8S8 with reduce_range to avoid "
                                            "saturation in the U8S8 multiply-add")


class _CropReader:
    """Feeds calibration crops to onnxruntime, ``batch`` at a time (the model's batch axis)."""

    def __init__(self, crops: np.ndarray, batch: int):
        usable = len(crops) - len(crops) % batch if len(crops) >= batch else 0
        self._batches = [crops[i:i + batch] for i in range(0, usable, batch)]
        self._index = 0

    def get_next(self):
        if self._index >= len(self._batches):
            return None
        self._index += 1
        return {keys.INPUT_NAME: self._batches[self._index - 1]}

    def rewind(self) -> None:
        self._index = 0


@dataclass(frozen=True)
class AccuracySearch:
    """The photos (whole images, every contract crop) and the target of the accuracy search."""

    photos: list            # PhotoCrops with the same number of crops each
    batch: int | None       # the model's fixed batch, None when dynamic
    target: AccuracyTarget = AccuracyTarget()

    @property
    def image_count(self) -> int:
        return len(self.photos)

    def score(self, model: Path | bytes) -> np.ndarray:
        """Per-crop scores [photos, crops] of the model (a file or serialized bytes) on the search
        photos, from the runtime's Scorer; bytes go through a temporary file, opened as users open one."""
        import tempfile

        from pinet_runtime.scorer import Scorer

        if isinstance(model, bytes):
            with tempfile.TemporaryDirectory(prefix="pinet-search-") as workdir:
                candidate = Path(workdir) / "candidate.onnx"
                candidate.write_bytes(model)
                return self.score(candidate)
        scorer = Scorer(model, providers="cpu")
        crops = np.concatenate([photo.crops for photo in self.photos])
        chunk = self.batch or 40   # bounded memory: ~40 crops per run
        scores = np.concatenate([scorer.score_crops(crops[i:i + chunk]) for i in range(0, len(crops), chunk)])
        return scores.reshape(len(self.photos), -1)


class CalibratedQuantizer:
    """Quantizes one FP32 file once (all INT8), then derives models with chosen nodes in FP32 by a
    graph rewrite (pinet_export.fp32_islands): milliseconds each, no new calibration pass."""

    def __init__(self, fp32_path: Path, workdir: Path, crops: np.ndarray, method: str, types: Int8Types,
                 batch: int | None):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if len(crops) == 0:
            raise ValueError("no calibration crops")
        self._batch = batch or 1
        if len(crops) < self._batch:
            raise ValueError(f"{len(crops)} calibration crops are fewer than the fixed batch {self._batch}")
        self._crops, self._method, self.types = crops, method, types
        self.prepared = workdir / "prepared.onnx"
        self._fp32_graph = self._int8_model = None    # set by write_all_int8
        quant_pre_process(str(fp32_path), str(self.prepared), skip_symbolic_shape=True)

    def candidates(self) -> list[tuple[str, str]]:
        """(name, op type) of the nodes the accuracy search may keep in FP32, in graph order."""
        import onnx

        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        return [(node.name, node.op_type) for node in graph.node if node.op_type in CANDIDATE_OP_TYPES]

    def write_all_int8(self, out_path: Path) -> None:
        """Calibrate and quantize every quantizable node (quantize_static, QDQ, per channel)."""
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        quantize_static(
            str(self.prepared), str(out_path), _CropReader(self._crops, self._batch),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=self.types.reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[self._method],
        )
        self._int8_model = onnx.load(str(out_path))
        self._fp32_graph = onnx.load(str(self.prepared)).graph

    def with_fp32_nodes(self, fp32_nodes: list[str]) -> bytes:
        """The all-INT8 model with ``fp32_nodes`` computing in FP32, serialized. Not
        ``nodes_to_exclude``: onnxruntime would quantize those nodes again (see fp32_islands)."""
        return self._model_with_fp32_nodes(fp32_nodes).SerializeToString()

    def float_node_count(self, fp32_nodes: list[str]) -> int:
        """How many candidate nodes that model computes in float (kept ones and demoted producers)."""
        from pinet_export.fp32_islands import float_compute_nodes

        return len(float_compute_nodes(self._model_with_fp32_nodes(fp32_nodes), CANDIDATE_OP_TYPES))

    def _model_with_fp32_nodes(self, fp32_nodes: list[str]):
        from pinet_export.fp32_islands import keep_in_fp32

        if self._int8_model is None:
            raise RuntimeError("write_all_int8 first")
        return keep_in_fp32(self._int8_model, self._fp32_graph, fp32_nodes)


def quantize_int8(fp32_path: Path, out_path: Path, crops: np.ndarray, method: str, types: Int8Types,
                  batch: int | None, source: dict, search: AccuracySearch | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> dict:
    """Write the INT8 QDQ model to ``out_path``; returns the calibration summary stored in the file.

    ``source`` describes where the crops came from (photos, directory); it joins the summary.
    With ``search``, the fewest score-sensitive nodes stay in FP32 until INT8 follows FP32 on the
    search photos (pinet_export.mixed_precision). Metadata of the FP32 file survives
    quant_pre_process/quantize_static (validation re-checks every key); only precision and
    calibration are rewritten."""
    import tempfile

    import onnx

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as workdir:
        quantizer = CalibratedQuantizer(fp32_path, Path(workdir), crops, method, types, batch)
        quantizer.write_all_int8(out_path)
        accuracy = None
        if search is not None:
            outcome = search_fp32_nodes(
                quantizer.candidates(), search.score(fp32_path),
                lambda names: search.score(quantizer.with_fp32_nodes(names) if names else out_path),
                search.target, progress, float_nodes=quantizer.float_node_count)
            if outcome.kept_fp32:   # the very graph the search scored
                out_path.write_bytes(quantizer.with_fp32_nodes([node.name for node in outcome.kept_fp32]))
            accuracy = {"images": search.image_count, **outcome.to_dict()}
    summary = {
        **source, "method": method, "crops": int(len(crops)), "format": "QDQ", "per_channel": True,
        "activation_type": types.activation, "weight_type": types.weight,
        "reduce_range": types.reduce_range, "portable": types.reduce_range, "type_reason": types.reason,
        "fp32_nodes": [node["name"] for node in accuracy["fp32_nodes"]] if accuracy else [],
        "accuracy_search": accuracy,
        "seconds": round(time.perf_counter() - started, 2),
    }
    model = onnx.load(str(out_path))
    set_metadata(model, {keys.PRECISION: "int8", keys.CALIBRATION: json.dumps(summary, sort_keys=True)})
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    return summary
