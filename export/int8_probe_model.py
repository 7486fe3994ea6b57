"""Builds the runtime's U8S8 saturation probe (`runtime/assets/u8s8_probe.onnx`).

The model computes one uint8 x int8 dot product of depth 64 twice, as MatMulInteger and as
QLinearConv (the two kernel families a QDQ model runs on the CPU), with every activation 255 and
every weight 127: each pair of products sums past the int16 limit, so a saturating kernel cannot
return the exact result. `pinet_runtime.int8_probe` runs it; tests keep the asset equal to this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pinet_runtime.files import write_bytes_atomic
from pinet_runtime.int8_probe import PROBE_CONV_SCALE, PROBE_DEPTH, PROBE_WEIGHT


def build_probe_model():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    depth = PROBE_DEPTH
    constants = {
        "w_mm": np.full((depth, 1), PROBE_WEIGHT, np.int8),
        "w_conv": np.full((1, depth, 1, 1), PROBE_WEIGHT, np.int8),
        "nchw": np.array([1, depth, 1, 1], np.int64),
        "flat": np.array([1, 1], np.int64),
        "one": np.array(1.0, np.float32),
        "zero_u8": np.array(0, np.uint8),
        "zero_s8": np.array(0, np.int8),
        "out_scale": np.array(PROBE_CONV_SCALE, np.float32),
    }
    nodes = [
        helper.make_node("MatMulInteger", ["a", "w_mm"], ["matmul"]),
        helper.make_node("Reshape", ["a", "nchw"], ["a_nchw"]),
        helper.make_node("QLinearConv", ["a_nchw", "one", "zero_u8", "w_conv", "one", "zero_s8", "out_scale",
                                         "zero_u8"], ["conv_q"]),
        helper.make_node("DequantizeLinear", ["conv_q", "out_scale", "zero_u8"], ["conv_nchw"]),
        helper.make_node("Reshape", ["conv_nchw", "flat"], ["conv"]),
    ]
    graph = helper.make_graph(
        nodes, "u8s8_probe", [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, depth])],
        [helper.make_tensor_value_info("matmul", TensorProto.INT32, [1, 1]),
         helper.make_tensor_value_info("conv", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              producer_name="pinet")
    onnx.checker.check_model(model)
    return model


def write_probe_model(path: Path) -> Path:
    write_bytes_atomic(Path(path), build_probe_model().SerializeToString())
    return Path(path)
