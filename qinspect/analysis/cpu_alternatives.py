"""What to put in place of a layer that runs on the CPU: a DPU-supported equivalent, named by its kind.

"Replace it with a DPU-supported equivalent" left users to find one. Each rule here names a layer or a
rewrite that the quantizer's own rules (those :mod:`qinspect.dpu.rewrites` emulates) quantize and place
on the DPU, and says whether it computes the same function (a fold or a rewrite: nothing to retrain) or a
different one (fine-tune after). A kind with no known equivalent gets ``None``: the advice then stays
general rather than guess. The phrases name no single layer, so a group of layers shares one.
"""

from __future__ import annotations

from qinspect.dpu.dpu_graph import DpuGraph, Node, quantizes_model_input

# smooth activations with no DPU unit; swish is the one the quantizer converts (to x * hard_sigmoid(x))
_SMOOTH = frozenset({"gelu", "elu", "selu", "softplus", "softsign", "mish", "tanh", "exponential",
                     "log_sigmoid", "celu"})
_SWISH_OR_RELU = ("Activation('swish') (the quantizer turns swish into the DPU's hard swish, x * hard_sigmoid(x)) "
                  "or ReLU; a different function: fine-tune after")
# Keras layers the pof2s registry quantizes, for the same operations written inline on tensors
_OP_LAYERS = {"add": "keras.layers.Add()", "multiply": "keras.layers.Multiply()",
              "concat": "keras.layers.Concatenate()"}
# the layers whose kernel and bias a per-channel scale right after them folds into
_FOLDS_INTO = {"conv2d": "Conv2D", "dense": "Dense", "depthwise_conv2d": "DepthwiseConv2D"}


def dpu_alternative(graph: DpuGraph, node: Node) -> str | None:
    """What the DPU runs in place of ``node`` (a CPU layer), as a phrase to follow "Instead: ", or None
    when no equivalent is known for its kind."""
    p = node.params
    cls = p.get("keras_class") or p.get("class_name") or ""
    if node.op == "activation" and cls in ("TFOpLambda", "KerasOp"):
        return ("the same activation as a Keras layer (keras.layers.ReLU() or Activation(...)), which the "
                "quantizer converts; the same function")
    if node.op == "activation":
        name = str(p.get("name", ""))
        if name in ("hard_silu", "hard_swish"):
            return ("Activation('swish'), which the quantizer turns into the DPU's hard swish x * relu6(x + 3) * "
                    "2731/16384, close to hard_silu, though the float model then computes swish (fine-tune after); "
                    "or, in a tf_keras model, hard swish written as x * ReLU6(x + 3) / 6 in TensorFlow operations, as "
                    "tf_keras's MobileNetV3 does, which the quantizer converts as it is")
        return _SWISH_OR_RELU if name in _SMOOTH else None
    if node.op in ("conv2d", "depthwise_conv2d", "conv2d_transpose", "dense") and p.get("act") in _SMOOTH:
        return "the same layer with " + _SWISH_OR_RELU.replace(" (the", " as its activation (the", 1)
    if node.op == "relu":
        # only the ReLU forms the DPU lacks; a plain ReLU on the CPU is there for its place in the graph
        mv = p.get("max_value")
        if p.get("negative_slope"):
            return "LeakyReLU(alpha=0.1) (the DPU's 26/256) or ReLU; a different function: fine-tune after"
        if p.get("threshold"):
            return "a plain ReLU; a different function: fine-tune after"
        if mv is not None and float(mv) != 6.0:
            return "ReLU6 (max_value=6) or a plain ReLU; a different function: fine-tune after"
        return None
    if node.op in _OP_LAYERS and cls in ("TFOpLambda", "KerasOp"):
        return (f"{_OP_LAYERS[node.op]} in place of the operation on tensors, which the quantizer quantizes; the same "
                "function")
    if cls == "LayerNormalization":
        return ("BatchNormalization, which the quantizer folds into the convolution or Dense before it; a different "
                "function: retrain")
    if cls == "LayerScale":
        src = graph[node.inputs[0]] if len(node.inputs) == 1 else None
        kind = _FOLDS_INTO.get(src.op) if src is not None else None
        if kind is None or len(graph.consumers(src.name)) != 1:
            return None
        return (f"fold the per-channel scale into the kernel and bias of the {kind} feeding the layer "
                "and remove the layer; the same float function")
    if cls == "CustomScaleLayer" and len(node.inputs) == 2:
        # InceptionResNetV2's x[0] + x[1] * scale, whose x[1] is a linear 1x1 conv's output
        src = graph[node.inputs[1]]
        kind = _FOLDS_INTO.get(src.op)
        if kind is None or len(graph.consumers(src.name)) != 1:
            return None
        return (f"keras.layers.Add(), with the constant scale folded into the kernel and bias of the {kind} "
                "feeding its second input; the same float function")
    if cls in ("Normalization", "Rescaling") and _reads_model_input(graph, node):
        return "apply it to the inputs before the model (in preprocessing); the same function"
    return None


def _reads_model_input(graph: DpuGraph, node: Node) -> bool:
    """Whether ``node`` computes on the model's inputs alone: through CPU layers and the input's quantizer."""
    pending, seen = list(node.inputs), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        src = graph[name]
        if src.op == "input" or quantizes_model_input(graph, src):
            continue
        if src.device != "CPU":
            return False
        pending.extend(src.inputs)
    return True
