"""Keep chosen nodes of a QDQ INT8 model truly in FP32.

``quantize_static(nodes_to_exclude=...)`` is not enough for that: such a node still reads a
DequantizeLinear output, and onnxruntime's ``WeightBiasQuantization`` graph transformer (basic
optimisation level, on by default) then quantizes its float weights again, per tensor, when the
session loads. Measured on a Conv with outlier weights: FP32 scores with optimisations off, all
zeros with them on, exactly as if the node had never been excluded. So a kept node here gets its
FP32 weights AND float inputs: the tensor before the QuantizeLinear/DequantizeLinear pair, or,
where the quantizer folded a Relu/Clip into that pair, a copy of that activation on the tensor
before it (the quantizer gives the pre-activation tensor the activation's output name). Its
output still feeds the quantized neighbours through their QuantizeLinear.
"""

from __future__ import annotations

FOLDABLE_ACTIVATIONS = ("Relu", "Clip")


def keep_in_fp32(int8_model, fp32_graph, names: list[str]):
    """A copy of ``int8_model`` (an onnx ModelProto from onnxruntime's QDQ quantizer) in which the
    nodes named in ``names`` compute in FP32; ``fp32_graph`` is the graph it was quantized from.
    A node whose float inputs cannot be rebuilt stays as it is."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(int8_model)
    islands = _Islands(model.graph, fp32_graph)
    for node in list(model.graph.node):
        if node.name in names:
            islands.revert(node)
    _drop_unused(model.graph)
    return model


class _Islands:
    def __init__(self, graph, fp32_graph):
        self.graph = graph
        self.fp32_nodes = {node.name: node for node in fp32_graph.node}
        self.fp32_producers = {out: node for node in fp32_graph.node for out in node.output}
        self.fp32_types = _op_types_by_output(fp32_graph)
        self.int8_types = _op_types_by_output(graph)
        self.float_weights = {init.name: init for init in fp32_graph.initializer}
        self.made: dict[str, str] = {}      # original tensor name -> its float tensor here
        # Float copies an earlier keep_in_fp32 already made (a file with islands, given more):
        # reused, never made twice under one name.
        self.existing = {init.name for init in graph.initializer} | {out for node in graph.node for out in node.output}

    def revert(self, node) -> bool:
        inputs = [self.float_tensor(name, node) for name in self.fp32_nodes[node.name].input]
        if any(name is None for name in inputs):
            return False
        del node.input[:]
        node.input.extend(inputs)
        return True

    def float_tensor(self, name: str, consumer) -> str | None:
        """The name of a float tensor equal to ``name`` of the FP32 graph, made if needed."""
        if not name or name in self.made:
            return self.made.get(name, name)
        if f"{name}.fp32" in self.existing:
            self.made[name] = f"{name}.fp32"
        elif name in self.float_weights:   # the quantizer may reuse the name for a DequantizeLinear output
            weight = type(self.float_weights[name])()
            weight.CopyFrom(self.float_weights[name])
            weight.name = f"{name}.fp32"
            self.graph.initializer.append(weight)
            self.made[name] = weight.name
        elif self.fp32_types.get(name, "missing") == self.int8_types.get(name, "absent"):
            self.made[name] = name
        else:
            activation = self.fp32_producers.get(name)
            if activation is None or activation.op_type not in FOLDABLE_ACTIVATIONS:
                return None
            sources = [self.float_tensor(source, consumer) for source in activation.input]
            if sources[0] is None and self.int8_types.get(name) == self.fp32_types.get(activation.input[0]):
                sources[0] = name   # folded: the tensor of this name holds the activation's input
            if any(source is None for source in sources):
                return None
            copy = type(activation)()
            copy.CopyFrom(activation)
            copy.name = f"{activation.name}.fp32"
            del copy.input[:], copy.output[:]
            copy.input.extend(sources)
            copy.output.append(f"{name}.fp32")
            position = list(self.graph.node).index(consumer)
            self.graph.node.insert(position, copy)
            self.made[name] = copy.output[0]
        return self.made[name]


def float_compute_nodes(model, op_types: tuple[str, ...]) -> list[str]:
    """Nodes of ``op_types`` that compute in float in a QDQ model: onnxruntime runs a node with an
    integer kernel only when its data and weight inputs come from DequantizeLinear and every
    reader of its output is a QuantizeLinear. Kept nodes fail the first test; a producer whose
    QuantizeLinear went away because a kept node reads its float output fails the last."""
    graph = model.graph
    producers = _op_types_by_output(graph)
    readers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    graph_outputs = {output.name for output in graph.output}

    def integer(node) -> bool:
        inputs_quantized = all(producers.get(name) == "DequantizeLinear" for name in node.input[:2])
        outputs_quantized = all(out not in graph_outputs and readers.get(out)
                                and set(readers[out]) == {"QuantizeLinear"} for out in node.output)
        return inputs_quantized and outputs_quantized

    return [node.name for node in graph.node if node.op_type in op_types and not integer(node)]


def _op_types_by_output(graph) -> dict[str, str | None]:
    """tensor name -> the op type producing it (None for graph inputs)."""
    produced = {out: node.op_type for node in graph.node for out in node.output}
    produced.update({graph_input.name: None for graph_input in graph.input})
    return produced


def _drop_unused(graph) -> None:
    """Remove nodes (then initializers) nothing reads any more, e.g. a kept node's weight DequantizeLinear."""
    outputs = {output.name for output in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in read for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | outputs
    for init in [init for init in graph.initializer if init.name not in read]:
        graph.initializer.remove(init)
