"""The end-to-end graph: uint8 RGB pixels [H, W, 3] in, the image's score (float32 scalar) out.

Built around an exported crops model (model.onnx / model.int8.onnx), whose nodes are kept as they
are. In front of them, steps 4-6 of the preprocessing contract (runtime/preprocess.py), from the
``Preprocessing`` stored in the file:

- resize so the short side is ``resize_short_side`` (the long side rounded as
  ``pinet_runtime.geometry.target_size`` rounds it), with opset 18 ``Resize`` on the uint8 pixels,
  ``antialias=1``, cubic a = -0.5 (Pillow's bicubic), ``exclude_outside=1``, half-pixel centres.
  Measured against Pillow's resize on photos: mean |difference| 0.02 grey levels (uint8 input:
  onnxruntime rounds like Pillow), versus 0.16 for the same resize on float input, 0.59 with
  a = -0.75 and 1.4 for linear;
- the crop layout: each crop's (top, left) is looked up in tables made by the runtime's own
  ``crop_origins`` for every extent up to ``MAX_ASPECT_RATIO`` (so the layout is never restated
  here; a wider image than the runtime accepts fails in the graph, as it is refused there);
- normalisation ``(x / 255 - mean) / std`` in float32, as ``normalize`` computes it;

and behind them the mean over the crops (``ReduceMean``). Decoding, EXIF orientation and colour
conversion stay with the app: the graph takes upright 8-bit RGB pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pinet_runtime import metadata as keys
from pinet_runtime.geometry import MAX_ASPECT_RATIO
from pinet_runtime.preprocess import Preprocessing, crop_origins

from pinet_export.convert import ExportError

E2E_OPSET = 18                     # Resize's antialias attribute
PREFIX = "pinet_e2e/"              # every tensor and node this module adds
_RESIZE_MODES = {"bicubic": "cubic", "bilinear": "linear"}
PILLOW_CUBIC_A = -0.5              # Pillow's bicubic kernel (ONNX's default is -0.75)


def e2e_file_name(crops_file: str | Path) -> str:
    """model.onnx -> model.e2e.onnx; model.int8.onnx -> model.e2e.int8.onnx."""
    name = Path(crops_file).name
    stem, _, rest = name.partition(".")
    return f"{stem}.e2e.{rest}"


def origin_tables(prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(tops, lefts): row e holds each crop's top (left) for an image e pixels taller (wider) than
    a crop, for every extent the runtime accepts; made by the runtime's ``crop_origins``."""
    size = prep.crop_size
    longest = MAX_ASPECT_RATIO * prep.resize_short_side + 1     # + 1: the long side is rounded
    extents = range(longest - size + 1)
    tops = np.array([[top for top, _ in crop_origins(size + e, size, prep)] for e in extents], dtype=np.int64)
    lefts = np.array([[left for _, left in crop_origins(size, size + e, prep)] for e in extents], dtype=np.int64)
    return tops, lefts


def preprocessing_nodes(prep: Preprocessing, crops_name: str, crops_type: int):
    """Nodes and initializers from ``image`` (uint8 [H, W, 3]) to ``crops_name`` ([N, 3, S, S])."""
    from onnx import TensorProto, helper, numpy_helper

    if prep.resize_short_side is None:
        raise ExportError("the end-to-end graph needs a fixed resize_short_side in the preprocessing "
                          "(this model keeps the native size)")
    if prep.resize_filter not in _RESIZE_MODES:
        raise ExportError(f"resize filter {prep.resize_filter!r} has no antialiased ONNX Resize mode "
                          f"(supported: {', '.join(_RESIZE_MODES)})")
    p = PREFIX
    size, short = prep.crop_size, prep.resize_short_side
    tops, lefts = origin_tables(prep)
    consts = {
        "two": np.array([2], np.int64), "zero": np.array([0], np.int64), "batch_channels": np.array([1, 3], np.int64),
        "short_side": np.array([short], np.int64), "short_side_f64": np.array([short], np.float64),
        "crop_box": np.array([size, size], np.int64),
        "crop_axes": np.array([2, 3], np.int64), "flat": np.array([-1], np.int64),
        "tops": tops, "lefts": lefts, "scale": np.array(255.0, np.float32),
        "mean": np.asarray(prep.mean, np.float32).reshape(1, 3, 1, 1),
        "std": np.asarray(prep.std, np.float32).reshape(1, 3, 1, 1),
    }
    inits = [numpy_helper.from_array(value, p + name) for name, value in consts.items()]
    node = helper.make_node
    nodes = [
        # [H, W, 3] -> [1, 3, H, W], still uint8 (onnxruntime's uint8 Resize rounds as Pillow does)
        node("Unsqueeze", [keys.E2E_INPUT_NAME, p + "zero"], [p + "nhwc"]),
        node("Transpose", [p + "nhwc"], [p + "nchw"], perm=[0, 3, 1, 2]),
        # the size of step 4: the short side -> S exactly, the other rounded (half to even, as Python)
        node("Shape", [keys.E2E_INPUT_NAME], [p + "shape"]),
        node("Slice", [p + "shape", p + "zero", p + "two"], [p + "hw"]),
        node("ReduceMin", [p + "hw"], [p + "short"], keepdims=1),
        node("Cast", [p + "hw"], [p + "hw_f64"], to=TensorProto.DOUBLE),
        node("Cast", [p + "short"], [p + "short_f64"], to=TensorProto.DOUBLE),
        node("Div", [p + "short_side_f64", p + "short_f64"], [p + "ratio"]),
        node("Mul", [p + "hw_f64", p + "ratio"], [p + "hw_scaled"]),
        node("Round", [p + "hw_scaled"], [p + "hw_rounded"]),
        node("Cast", [p + "hw_rounded"], [p + "hw_long"], to=TensorProto.INT64),
        node("Max", [p + "hw_long", p + "short_side"], [p + "hw_long_min"]),
        node("Equal", [p + "hw", p + "short"], [p + "is_short"]),
        node("Where", [p + "is_short", p + "short_side", p + "hw_long_min"], [p + "new_hw"]),
        node("Concat", [p + "batch_channels", p + "new_hw"], [p + "sizes"], axis=0),
        node("Resize", [p + "nchw", "", "", p + "sizes"], [p + "resized"], mode=_RESIZE_MODES[prep.resize_filter],
             antialias=1, cubic_coeff_a=PILLOW_CUBIC_A, exclude_outside=1,
             coordinate_transformation_mode="half_pixel"),
        # step 5: crop origins from the tables, by the extent past one crop
        node("Sub", [p + "new_hw", p + "crop_box"], [p + "extent"]),
        node("Split", [p + "extent"], [p + "extent_h", p + "extent_w"], axis=0, num_outputs=2),
        # Named so that onnxruntime's out-of-bounds message says why (the runtime's limit).
        node("Gather", [p + "tops", p + "extent_h"], [p + "tops_row"], axis=0,
             name=f"{p}crop_tops_lookup_aspect_ratio_past_{MAX_ASPECT_RATIO}_to_1_is_refused"),
        node("Gather", [p + "lefts", p + "extent_w"], [p + "lefts_row"], axis=0,
             name=f"{p}crop_lefts_lookup_aspect_ratio_past_{MAX_ASPECT_RATIO}_to_1_is_refused"),
        node("Reshape", [p + "tops_row", p + "flat"], [p + "crop_tops"]),
        node("Reshape", [p + "lefts_row", p + "flat"], [p + "crop_lefts"]),
    ]
    crops = []
    for k in range(prep.num_crops):
        index = numpy_helper.from_array(np.array([k], np.int64), f"{p}index_{k}")
        inits.append(index)
        nodes += [
            node("Gather", [p + "crop_tops", index.name], [f"{p}top_{k}"], axis=0),
            node("Gather", [p + "crop_lefts", index.name], [f"{p}left_{k}"], axis=0),
            node("Concat", [f"{p}top_{k}", f"{p}left_{k}"], [f"{p}start_{k}"], axis=0),
            node("Add", [f"{p}start_{k}", p + "crop_box"], [f"{p}end_{k}"]),
            node("Slice", [p + "resized", f"{p}start_{k}", f"{p}end_{k}", p + "crop_axes"], [f"{p}crop_{k}"]),
        ]
        crops.append(f"{p}crop_{k}")
    normalised = p + "normalised"
    nodes += [
        node("Concat", crops, [p + "crops_u8"], axis=0),
        # step 6, in the order normalize() computes it (float32 throughout)
        node("Cast", [p + "crops_u8"], [p + "crops_f32"], to=TensorProto.FLOAT),
        node("Div", [p + "crops_f32", p + "scale"], [p + "unit"]),
        node("Sub", [p + "unit", p + "mean"], [p + "centred"]),
        node("Div", [p + "centred", p + "std"], [normalised if crops_type != TensorProto.FLOAT else crops_name]),
    ]
    if crops_type != TensorProto.FLOAT:   # an FP16 model takes float16 crops
        nodes.append(node("Cast", [normalised], [crops_name], to=crops_type))
    return nodes, inits


def _ai_onnx_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def build_e2e_model(crops_model):
    """The end-to-end ModelProto around a loaded crops model (which is left unchanged)."""
    import onnx
    from onnx import TensorProto, helper

    from pinet_export.onnx_metadata import read_typed_metadata, set_metadata

    meta = read_typed_metadata(crops_model)
    if meta.interface != keys.CROPS_INTERFACE:
        raise ExportError("the model is already an end-to-end graph")
    prep = meta.preprocessing
    model = onnx.ModelProto()
    model.CopyFrom(crops_model)
    if _ai_onnx_opset(model) < E2E_OPSET:
        model = onnx.version_converter.convert_version(model, E2E_OPSET)
    graph = model.graph
    used = {name for n in graph.node for name in [*n.input, *n.output, n.name]} | {i.name for i in graph.initializer}
    clashes = sorted(name for name in used if name.startswith(PREFIX))
    if clashes:
        raise ExportError(f"the crops model already has names starting with {PREFIX!r}: {clashes[:3]}")
    crops_input = next((i for i in graph.input if i.name == keys.INPUT_NAME), None)
    scores_output = next((o for o in graph.output if o.name == keys.OUTPUT_NAME), None)
    if crops_input is None or scores_output is None:
        raise ExportError(f"the crops model has no {keys.INPUT_NAME!r} input or {keys.OUTPUT_NAME!r} output")
    batch = crops_input.type.tensor_type.shape.dim[0]
    if batch.HasField("dim_value") and batch.dim_value != prep.num_crops:
        raise ExportError(f"the crops model has a fixed batch of {batch.dim_value}, but one image makes "
                          f"{prep.num_crops} crops: export it with --batch dynamic")
    nodes, inits = preprocessing_nodes(prep, keys.INPUT_NAME, crops_input.type.tensor_type.elem_type)
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body + [helper.make_node("ReduceMean", [keys.OUTPUT_NAME], [keys.E2E_OUTPUT_NAME],
                                                       keepdims=0, name=PREFIX + "crop_mean")])
    for index, item in enumerate(graph.node[:len(nodes)]):
        item.name = item.name or f"{PREFIX}{item.op_type}_{index}"
    graph.initializer.extend(inits)
    graph.input.remove(crops_input)
    graph.input.insert(0, helper.make_tensor_value_info(keys.E2E_INPUT_NAME, TensorProto.UINT8, ["height", "width", 3]))
    graph.output.remove(scores_output)
    graph.output.insert(0, helper.make_tensor_value_info(keys.E2E_OUTPUT_NAME, TensorProto.FLOAT, []))
    graph.value_info.append(scores_output)     # keeps its type for shape inference, now inside the graph
    set_metadata(model, dataclasses.replace(meta, interface=keys.IMAGE_INTERFACE,
                                            nominal_pixel_range=keys.E2E_PIXEL_RANGE_VALUE))
    model.doc_string = ("PINet end-to-end: uint8 RGB pixels [H, W, 3] (upright, decoded by the caller) -> the "
                        "image's score; resize, crops and normalisation of pinet.preprocessing run inside")
    onnx.checker.check_model(model, full_check=True)
    return model


def write_e2e(crops_path: str | Path, out_path: str | Path) -> dict:
    """Build the end-to-end file from an exported crops model; returns size figures."""
    import onnx

    model = build_e2e_model(onnx.load(str(crops_path)))
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    return {"source": Path(crops_path).name, "nodes": len(model.graph.node), "bytes": Path(out_path).stat().st_size}
