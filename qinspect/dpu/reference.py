"""The float model's own values as the reference for another graph (a ``quantized.h5``'s).

With ``--positions quantized.h5`` the emulated graph is the quantized model's: its layers, its folded
and equalized weights. Its float function is not always the float model's: ``convert_relu6_to_relu``
removed caps, ``cle_to_relu6`` equalized across them, the DPU hard sigmoid replaced a sigmoid. The
reference therefore comes from the float model rewritten under the same quantizer options, where every
rewritten layer keeps the float model's function (in the quantized model's per-channel scale, so the
intermediate tensors compare one to one). Nodes are paired by name (both graphs name nodes like the
quantized model's layers); a node the float model has no counterpart for is computed with its own float
function on the reference inputs.

The pairing is only sound when the float model rewritten under those options gives the quantized
model's own weights; :func:`compare_weights` says whether it does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qinspect.dpu.dpu_graph import CLE_OUT_SCALE, DpuGraph
from qinspect.dpu.executor import Evaluator, Value


def compare_weights(emulated: DpuGraph, reference: DpuGraph) -> tuple[int, list[str]]:
    """(weighted nodes compared, names of those whose weights differ or have no counterpart)."""
    compared, differ = 0, []
    for node in emulated.nodes:
        if not node.weights:
            continue
        compared += 1
        other = reference[node.name] if node.name in reference else None
        if other is None or set(other.weights) != set(node.weights) or not all(
                np.array_equal(np.asarray(node.weights[k]), np.asarray(other.weights[k])) for k in node.weights):
            differ.append(node.name)
    return compared, differ


# Node parameters that hold the float model's function where the quantized model computes another.
FLOAT_FUNCTION_PARAMS = ("float_max_value", "float_fn", "float_alpha", "float_in_scale", "float_out_scale",
                         "float_act_scale", "float_post_act", "float_affine")


def adopt_float_functions(emulated: DpuGraph, reference: DpuGraph) -> int:
    """Copy the float model's functions (caps, true sigmoid, LeakyReLU alpha) onto the same-named nodes
    of ``emulated`` with the same operator, so every evaluation of its float path (the diagnosis, the
    what-ifs) measures against the float model too. Only sound when the weights match
    (:func:`compare_weights`), which also makes the reference's equalization scales this graph's
    (``DpuGraph.channel_scale``). Returns how many nodes changed function."""
    changed = 0
    float_layers = {o for n in reference.nodes for o in n.origin}
    for node in emulated.nodes:
        other = reference[node.name] if node.name in reference else None
        if other is None or other.op != node.op:
            continue
        # A node the quantizer named from no float layer (a separable conv's halves, sep4_depthwise_conv;
        # the vitis_sigmoid standing for a hard-sigmoid's TF operations) stands for the layers the float
        # model's rewrite built it from: the views find it by those names.
        if other.origin and not any(o in float_layers for o in node.origin):
            node.origin = list(other.origin)
        if CLE_OUT_SCALE in other.params:
            node.params[CLE_OUT_SCALE] = other.params[CLE_OUT_SCALE]
        # The quantized.h5 keeps no folded BatchNorm: its conv's output is the BatchNorm's tensor, which
        # the float model's rewrite records (origin [conv, bn]); views reading the capture need that.
        if other.origin and node.origin and other.origin[0] == node.origin[0] and len(other.origin) > len(node.origin):
            node.origin = list(other.origin)
        params = {k: other.params[k] for k in FLOAT_FUNCTION_PARAMS if k in other.params}
        if params:
            node.params.update(params)
            changed += 1
    return changed


class ReferenceWalk:
    """The reference graph evaluated in float lazily, one batch, as the emulated graph asks for values.

    A value is kept until the reference graph's own consumers have read it and the emulated graph has
    asked for it, so memory stays near one graph's worth of live tensors.
    """

    def __init__(self, reference: DpuGraph, inputs: dict[str, np.ndarray], asked: set[str]) -> None:
        self.graph = reference
        self._ev = Evaluator(reference, "float")
        self._inputs = inputs
        self._order = iter(reference.nodes)
        self._values: dict[str, Value] = {}
        self._readers = {n.name: len(reference.consumers(n.name)) for n in reference.nodes}
        self._asked = {name for name in asked if name in reference}

    def has(self, name: str) -> bool:
        """Whether the reference graph has a node of that name."""
        return name in self.graph

    def get(self, name: str) -> Value:
        """The float model's value of node ``name`` for this batch."""
        while name not in self._values:
            node = next(self._order)
            if node.op == "input":
                value = Value(f=np.asarray(self._inputs[node.name], np.float32))
            else:
                value = self._ev.node(node, [self._values[i] for i in node.inputs])
                for i in node.inputs:
                    self._readers[i] -= 1
                    self._release(i)
            self._values[node.name] = value
        value = self._values[name]
        self._asked.discard(name)
        self._release(name)
        return value

    def _release(self, name: str) -> None:
        if self._readers.get(name, 0) <= 0 and name not in self._asked:
            self._values.pop(name, None)


def describe(options: Any, source: str, compared: int, differ: list[str]) -> str:
    """One line saying what the reference is and whether the pairing rests on matching weights."""
    text = f"the float model ({source}) rewritten under {options.describe()}"
    if not differ:
        return text + f"; its folded/equalized weights equal the quantized model's ({compared} weighted layers)"
    return (text + f"; WARNING: {len(differ)} of {compared} weighted layers differ from the quantized model's "
            f"(first {differ[0]}): it was quantized with other options (--cle-to-relu6, --convert-relu6-to-relu, "
            "--cle-steps, --no-cle)? Intermediate layers then differ by per-channel scales that are not error; "
            "the model outputs still compare")
