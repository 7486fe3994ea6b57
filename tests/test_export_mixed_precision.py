"""The accuracy-aware INT8 export on a tiny conv net with one deliberately fragile node.

The fragile node is a Conv whose every output channel has one huge weight on an input channel that
is always 0 (the previous conv's channel 7 has zero weights and a bias of -10 before its ReLU): no effect in FP32,
but the huge weights set its per-channel weight scales, so all its other weights round to 0 in INT8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("scipy")

from pinet_export.config import Gates  # noqa: E402
from pinet_export.mixed_precision import AccuracyTarget  # noqa: E402
from pinet_export.photos import bundled_samples_dir, calibration_crops, list_photos, ranking_photos  # noqa: E402
from pinet_export.quantize import AccuracySearch, choose_int8_types, quantize_int8  # noqa: E402
from pinet_export.report import accuracy_search_lines  # noqa: E402
from pinet_export.validate import validate_int8  # noqa: E402

FRAGILE = "fragile_conv"


def _build_net(path: Path, tiny_onnx) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    conv1_w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    conv1_b = rng.normal(0, 0.1, 8).astype(np.float32)
    conv1_w[7], conv1_b[7] = 0.0, -10.0     # channel 7 is 0 after ReLU, in INT8 too (far below 0)
    conv2_w = rng.normal(0, 0.1, (8, 8, 3, 3)).astype(np.float32)
    conv2_w[:, 7, 1, 1] = 1000.0                               # outliers reading that zero channel
    gemm_w = rng.normal(0, 0.5, (1, 8)).astype(np.float32)
    tensors = {"conv1_w": conv1_w, "conv1_b": conv1_b, "conv2_w": conv2_w,
               "conv2_b": np.full(8, 0.05, np.float32), "gemm_w": gemm_w, "gemm_b": np.zeros(1, np.float32),
               "flat_shape": np.array([-1], np.int64)}
    size = tiny_onnx.TINY_PREPROCESSING.crop_size
    nodes = [
        helper.make_node("Conv", ["crops", "conv1_w", "conv1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2_w", "conv2_b"], ["c2"], name=FRAGILE, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "gemm_w", "gemm_b"], ["g"], name="head", transB=1),
        helper.make_node("Reshape", ["g", "flat_shape"], ["scores"], name="to_scores"),
    ]
    graph = helper.make_graph(
        nodes, "fragile", [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in tensors.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in tiny_onnx.tiny_metadata(tiny_onnx.TINY_PREPROCESSING).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_search_finds_the_fragile_node_keeps_it_in_fp32_and_the_gate_passes(tmp_path, tiny_onnx):
    prep = tiny_onnx.TINY_PREPROCESSING
    fp32 = _build_net(tmp_path / "model.onnx", tiny_onnx)
    photos = list_photos(bundled_samples_dir())
    crops, _, _ = calibration_crops(photos, prep, 256)
    ranking = ranking_photos(photos, prep).photos
    types = choose_int8_types({}, "portable")
    gates = Gates()

    naive = tmp_path / "naive.int8.onnx"
    quantize_int8(fp32, naive, crops, "minmax", types, None, {})
    assert not validate_int8(naive, fp32, prep.crop_size, None, gates, ranking).passed   # all-INT8 fails

    out = tmp_path / "model.int8.onnx"
    search = AccuracySearch(ranking, None, AccuracyTarget(min_srcc=0.995, max_fp32_nodes=2))
    summary = quantize_int8(fp32, out, crops, "minmax", types, None, {}, search)
    result = summary["accuracy_search"]
    assert result["most_sensitive"][0]["name"] == FRAGILE and result["most_sensitive"][0]["error_share"] > 0.9
    # The node search keeps the fragile conv alone, but reading conv1's float output demotes conv1
    # (float conv on INT8 weights): 2 nodes in float either way, so the prefix conv1 + fragile wins.
    assert result["alternative"]["fp32_nodes"] == [FRAGILE] and result["alternative"]["float_nodes"] == 2
    assert result["strategy"] == "prefix" and summary["fp32_nodes"] == ["conv1", FRAGILE]
    assert result["float_nodes"] == 2 and result["target_met"]
    gate = validate_int8(out, fp32, prep.crop_size, None, gates, ranking)
    assert gate.passed, gate.failures
    lines = accuracy_search_lines(result)
    assert any(f"| {FRAGILE} | Conv |" in line for line in lines)
    assert any(line.startswith("Not chosen: nodes (fragile_conv): 2 node(s) in float") for line in lines)

    import onnx

    from pinet_export.fp32_islands import float_compute_nodes

    model = onnx.load(str(out))                          # the written file: FP32 weights for both convs
    producers = {out_name: node.op_type for node in model.graph.node for out_name in node.output}
    for name in ("conv1", FRAGILE):
        conv = next(node for node in model.graph.node if node.name == name)
        assert producers.get(conv.input[1]) != "DequantizeLinear"
    head = next(node for node in model.graph.node if node.name == "head")
    assert producers.get(head.input[1]) == "DequantizeLinear"
    assert float_compute_nodes(model, ("Conv", "Gemm")) == ["conv1", FRAGILE]
    assert float_compute_nodes(onnx.load(str(naive)), ("Conv", "Gemm")) == []


def test_fidelity_measure_compares_two_files_through_the_runtime(tmp_path, tiny_onnx):
    from pinet_export.fidelity import measure_fidelity

    fp32 = _build_net(tmp_path / "model.onnx", tiny_onnx)
    photos = list_photos(bundled_samples_dir())
    same = measure_fidelity(fp32, fp32, photos + [tmp_path / "missing.jpg"], timing_images=2)
    assert same["photos"] == len(photos) and len(same["skipped"]) == 1 and "missing.jpg" in same["skipped"][0]
    assert same["srcc"] == pytest.approx(1.0) and same["mean_abs_diff"] == 0.0 and same["speedup"] > 0


def test_islands_added_to_a_file_that_has_islands_reuse_its_float_copies(tmp_path, tiny_onnx):
    """keep_in_fp32 on a file that already has an FP32 island (more nodes kept later): the float
    weights and activation copies it made are reused, so no tensor name is defined twice."""
    import onnx
    import onnxruntime as ort

    from pinet_export.fp32_islands import keep_in_fp32

    prep = tiny_onnx.TINY_PREPROCESSING
    fp32 = _build_net(tmp_path / "model.onnx", tiny_onnx)
    photos = list_photos(bundled_samples_dir())
    crops, _, _ = calibration_crops(photos, prep, 64)
    all_int8 = tmp_path / "all.int8.onnx"
    quantize_int8(fp32, all_int8, crops, "minmax", choose_int8_types({}, "portable"), None, {})
    fp32_graph = onnx.load(str(fp32)).graph
    once = keep_in_fp32(onnx.load(str(all_int8)), fp32_graph, [FRAGILE])
    twice = keep_in_fp32(once, fp32_graph, [FRAGILE, "conv1"])

    for model in (once, twice):
        names = [init.name for init in model.graph.initializer] + [o for n in model.graph.node for o in n.output]
        assert len(names) == len(set(names))
        onnx.checker.check_model(model)
    assert {"conv1_w.fp32", "conv2_w.fp32"} <= {init.name for init in twice.graph.initializer}
    producers = {o: n.op_type for n in twice.graph.node for o in n.output}
    conv1 = next(node for node in twice.graph.node if node.name == "conv1")
    assert producers.get(conv1.input[1]) is None and conv1.input[1] == "conv1_w.fp32"

    def scores(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"crops": crops[:16]})[0]

    reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, {"crops": crops[:16]})[0]
    # all-INT8 loses the fragile conv; with it (and conv1) in FP32 the scores follow FP32 again
    naive_error = np.abs(scores(onnx.load(str(all_int8))) - reference).mean()
    assert np.abs(scores(twice) - reference).mean() < 0.2 * naive_error
