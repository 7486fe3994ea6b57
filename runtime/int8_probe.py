"""Does onnxruntime's U8S8 integer kernel saturate on this machine? Asked of the kernel itself.

x86 CPUs without VNNI multiply uint8 activations by int8 weights with an instruction that adds
pairs of products into int16 and saturates there; full-range (8-bit) INT8 weights can hit that
limit and change scores (docs/export.md). Reading CPU flags answers the question only indirectly
and can be wrong (an emulated or virtualised CPU whose /proc/cpuinfo describes the host), so the
runtime runs a tiny bundled model (`assets/u8s8_probe.onnx`, under 1 kB) whose exact integer
results overflow int16 in every pair, and compares. Built by `pinet_export.int8_probe_model`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

PROBE_FILE = "u8s8_probe.onnx"
PROBE_DEPTH = 64          # K of the probe's matrix product and the probe conv's input channels
PROBE_ACTIVATION = 255    # uint8 maximum: with weight 127 every pair sums to 64,770 > 32,767
PROBE_WEIGHT = 127
PROBE_CONV_SCALE = 10000.0  # the probe conv's output scale: its exact result is 207.264 x 10,000


def probe_path() -> Path:
    return Path(str(resources.files("pinet_runtime").joinpath("assets", PROBE_FILE)))


def exact_probe_result() -> int:
    return PROBE_ACTIVATION * PROBE_WEIGHT * PROBE_DEPTH


@lru_cache(maxsize=1)
def u8s8_saturates() -> bool:
    """True when this onnxruntime's CPU kernels for uint8 x int8 MatMul or Conv lose the exact
    result of the probe (the x86-without-VNNI path); the answer is fixed for the process."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(probe_path()), options, providers=["CPUExecutionProvider"])
    activations = np.full((1, PROBE_DEPTH), PROBE_ACTIVATION, np.uint8)
    matmul, conv = session.run(["matmul", "conv"], {"a": activations})
    exact = exact_probe_result()
    conv_exact = round(exact / PROBE_CONV_SCALE)  # QLinearConv rounds to its uint8 output grid
    return int(matmul.ravel()[0]) != exact or round(float(conv.ravel()[0]) / PROBE_CONV_SCALE) != conv_exact
