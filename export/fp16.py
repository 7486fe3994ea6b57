"""FP16: weights and activations in half precision, FP32 input/output kept for the runtime.

Meant for GPUs (onnxruntime CUDA/TensorRT); on CPU onnxruntime has few FP16 kernels, which is why
validation checks FP16 parity on CUDA only.
"""

from __future__ import annotations

from pathlib import Path

from pinet_export.onnx_metadata import set_metadata
from pinet_runtime import metadata as keys


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    # keep_io_types: the runtime feeds the same float32 crops to every precision.
    half = convert_float_to_float16(model, keep_io_types=True)
    # The converter appends the input/output Cast nodes at the end of the node list, which the
    # ONNX checker rejects (nodes must be topologically sorted): restore the order.
    sort_nodes_topologically(half.graph)
    set_metadata(half, {keys.PRECISION: "fp16"})
    onnx.save_model(half, str(out_path), save_as_external_data=False)


def sort_nodes_topologically(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or undefined inputs near node {pending[0].name!r}")
        for node in ready:
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        ordered.extend(ready)
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
