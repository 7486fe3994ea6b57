"""INT8: onnxruntime static quantization, QDQ format, per-channel weights, calibrated on real photos.

Type choice by CPU (onnxruntime's quantization guide, confirmed in ../shared/NOTES.md): on x86
without VNNI the U8S8 integer kernels can saturate, so weights use reduce_range (7 bits); with
AVX512-VNNI or AVX-VNNI the full 8-bit range is safe. Activations U8, weights S8 (U8S8) either way:
S8S8 QDQ measured slower than FP32 on this CPU family.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinet_export.onnx_metadata import set_metadata
from pinet_runtime import metadata as keys

CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                         "amx_int8")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, bool]:
    """The x86 flags that decide the INT8 settings; all False when /proc/cpuinfo is unreadable."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: name in flags for name in CPU_FLAGS_OF_INTEREST}


@dataclass(frozen=True)
class Int8Types:
    activation: str       # "uint8"
    weight: str           # "int8"
    reduce_range: bool
    reason: str


INT8_TARGETS = ("this-cpu", "portable")


def choose_int8_types(flags: dict[str, bool], target: str = "this-cpu") -> Int8Types:
    """``this-cpu`` tunes to the exporting machine; ``portable`` (for files that ship to unknown
    CPUs) always uses reduce_range, which is exact on VNNI machines too, just 1 bit coarser."""
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


def nodes_of_types(model_path: Path, op_types: tuple[str, ...]) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in op_types]


# Kept in FP32 by default: nothing, by measurement (docs/export.md). On a briefly trained
# pinet_lite0 (64 px crops, 8 sample photos + 3 degradations each, minmax, VNNI) INT8-vs-FP32 SRCC
# was 0.9920 with everything quantized, 0.9923 keeping the gating MatMul+Sigmoid in FP32, 0.9923
# keeping the regressor Gemms, 0.9901 keeping all 37 staircase/branch convs: no gain worth the
# FP32 islands; the error comes from the backbone.
DEFAULT_FP32_OP_TYPES: tuple[str, ...] = ()


def quantize_int8(fp32_path: Path, out_path: Path, crops: np.ndarray, method: str, types: Int8Types,
                  batch: int | None, source: dict,
                  keep_fp32_op_types: tuple[str, ...] = DEFAULT_FP32_OP_TYPES) -> dict:
    """Write the INT8 QDQ model to ``out_path``; returns the calibration summary stored in the file.

    ``source`` describes where the crops came from (photos, directory); it joins the summary.
    Metadata of the FP32 file survives quant_pre_process/quantize_static (validation re-checks
    every key); only precision and calibration are rewritten."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(crops) == 0:
        raise ValueError("no calibration crops")
    feed_batch = batch or 1
    if len(crops) < feed_batch:
        raise ValueError(f"{len(crops)} calibration crops are fewer than the fixed batch {feed_batch}")
    started = time.perf_counter()
    prepared = out_path.with_name(out_path.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        excluded = nodes_of_types(prepared, keep_fp32_op_types) if keep_fp32_op_types else []
        quantize_static(
            str(prepared), str(out_path), _CropReader(crops, feed_batch),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=types.reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            nodes_to_exclude=excluded,
        )
    finally:
        prepared.unlink(missing_ok=True)
    summary = {
        **source, "method": method, "crops": int(len(crops)), "format": "QDQ", "per_channel": True,
        "activation_type": types.activation, "weight_type": types.weight,
        "reduce_range": types.reduce_range, "type_reason": types.reason,
        "fp32_op_types": list(keep_fp32_op_types), "fp32_nodes": len(excluded),
        "seconds": round(time.perf_counter() - started, 2),
    }
    model = onnx.load(str(out_path))
    set_metadata(model, {keys.PRECISION: "int8", keys.CALIBRATION: json.dumps(summary, sort_keys=True)})
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    return summary
