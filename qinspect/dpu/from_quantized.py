"""Build the emulator graph from a Vitis ``quantized.h5`` (positions and weights taken from the file)."""

from __future__ import annotations

import os

from qinspect.dpu.dpu_graph import DpuGraph, Node, Rewrite, SlotSpec, quantizes_model_input
from qinspect.dpu.layer_map import UNQUANTIZED, dpu_placement, layer_node
from qinspect.errors import QInspectError
from qinspect.io.vitis import QuantizedLayer, VitisQuantizedModel, load_quantized_model


def _node_for(layer: QuantizedLayer, graph: DpuGraph) -> Node:
    if layer.wrapper == "VitisQuantize":
        node = Node(name=layer.name, op="quantize", inputs=list(layer.inbound), key=layer.first_call)
    else:
        act = layer.activation
        if act == "NoQuantizeActivation":
            act = "linear"
        node = layer_node(layer.name, layer.class_name, layer.config, layer.inbound, layer.weights,
                          act=act if layer.class_name in ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose",
                                                          "Dense", "Activation") else None)
        node.key = layer.inner_name
    node.origin = [layer.float_name]  # a shared layer's later call: its own float node (c1@2)
    for q in layer.quantizers:
        spec = SlotSpec(node.key, q.key, q.kind, q.method, q.round_mode, q.narrow_range)
        slot = graph.add_slot(spec)
        graph.set_pos(slot, int(q.position)) if q.position is not None else None
        if q.kind == "weight":
            node.weight_slots[q.weight or ""] = slot
        elif q.kind == "pre_activation":
            node.pre_slot = slot
        else:
            node.out_slot = slot
    return node


def graph_from_quantized(model: VitisQuantizedModel) -> DpuGraph:
    """The emulator graph of a quantized model: one node per layer, named as in the file."""
    graph = DpuGraph(nodes=[], inputs=list(model.inputs), outputs=list(model.outputs),
                     source="quantized.h5",
                     weights_from=f"folded, equalized weights stored in {os.path.basename(model.path)}")
    for layer in model.layers:
        node = _node_for(layer, graph)
        if node.op == "unsupported" and layer.wrapper == "QuantizeWrapper":
            raise QInspectError(f"layer {layer.name} wraps {layer.class_name}, which the emulator does not "
                                "know", model.path)
        device, why = dpu_placement(node)
        if device == "DPU" and layer.wrapper not in ("QuantizeWrapper", "VitisQuantize") and node.op != "input":
            device, why = "CPU", UNQUANTIZED
        if node.op == "input":
            device, why = "CPU", "model input (float)"
        node.device, node.cpu_reason = device, why
        graph.nodes.append(node)
    graph.reindex()
    for node in graph.nodes:
        for i in node.inputs:
            if i not in graph:
                raise QInspectError(f"layer {node.name} reads {i}, which is not in the model", model.path)
    for node in graph.nodes:
        # quant_input stands for the model input's tensor, as the float model's rewrite makes it do: the
        # window showed the input as a float CPU layer once a quantized.h5 was imported
        if quantizes_model_input(graph, node) and len(node.inputs) == 1:
            node.origin = list(graph[node.inputs[0]].origin or [node.inputs[0]])
    graph.rewrites.append(Rewrite(
        "source", "positions and folded/equalized weights read from the quantized model; no rewrite "
        "was re-run", [n.name for n in graph.nodes]))
    return graph


def load_graph(path: str | os.PathLike[str]) -> DpuGraph:
    """Read ``quantized.h5`` and build its emulator graph."""
    return graph_from_quantized(load_quantized_model(path))
