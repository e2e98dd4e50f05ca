"""Which emulator node stands for which float-model layer, for the report's rows.

The report lists the layers of the user's float model (the names in the capture). The emulator's
graph is the quantized model: BatchNorm folded into convs, activations split out of convs, separable
convs split, the hard-sigmoid pattern replaced by one node. Each node lists the float layers it was
built from (``origin``); names the quantizer made up (``c7_relu`` split from ``c7``,
``sep4_depthwise_conv`` from ``sep4``, ``quant_input``) are attributed to the float layer whose
name they extend, or to the float layer feeding them.

A float layer's *standing node* is the last node whose last attributed origin is that layer: its
output is the int8 tensor that replaces the layer's float output. A layer that appears earlier in a
later node's origin (a conv whose BatchNorm was folded into it; a separable conv whose pointwise half
took the BatchNorm, its depthwise half notwithstanding) has no int8 output of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qinspect.errors import QInspectError


@dataclass
class LayerMap:
    """Float layer -> standing node, and the nodes each layer was merged into."""

    standing: dict[str, Any] = field(default_factory=dict)  # float layer -> node
    merged_into: dict[str, list[Any]] = field(default_factory=dict)  # float layer -> nodes it is part of
    unowned: list[Any] = field(default_factory=list)  # nodes attributed to no float layer
    # quantized tensors inside a layer (a separable conv's depthwise half): neither a layer's output nor
    # made by the quantizer out of nothing, yet the int8 model holds and rounds them
    intermediate: list[Any] = field(default_factory=list)
    owner_of: dict[str, str | None] = field(default_factory=dict)  # node name -> float layer


def _owner(name: str, float_names: set[str], by_length: list[str]) -> str | None:
    if name in float_names:
        return name
    for cand in by_length:  # longest first: "c9a_relu" belongs to "c9a", not to "c9"
        if name.startswith(cand + "_"):
            return cand
    return None


def foreign_layers(float_names: list[str], graph: Any) -> list[str]:
    """Float layers a graph's weighted nodes come from that are not among ``float_names`` (a quantized
    model of another model has some; names the quantizer extends, ``sep4_depthwise_conv``, count as
    ``sep4``)."""
    names = set(float_names)
    by_length = sorted(names, key=len, reverse=True)
    out: list[str] = []
    for node in graph.nodes:
        if not getattr(node, "weight_slots", None):
            continue
        for name in getattr(node, "origin", None) or [node.name]:
            if _owner(name, names, by_length) is None and name not in out:
                out.append(name)
    return out


def refuse_foreign(float_names: list[str], graph: Any, model: str, quantized: str) -> None:
    """Refuse a quantized.h5 (``graph``, read from ``quantized``) made from another model than the one of
    ``float_names`` (read from ``model``): one line naming the quantized file."""
    foreign = foreign_layers(float_names, graph)
    if foreign:
        raise QInspectError(f"is the quantized model of another model: its layer {foreign[0]!r} is not in {model}",
                            quantized)


def map_layers(float_names: list[str], graph: Any) -> LayerMap:
    """Build the map for the float model's leaf layer names and an emulator graph (``DpuGraph``)."""
    names = set(float_names)
    by_length = sorted(names, key=len, reverse=True)
    out = LayerMap()
    for node in graph.nodes:
        origin = list(getattr(node, "origin", None) or [node.name])
        owners = [o for o in (_owner(x, names, by_length) for x in origin) if o is not None]
        if not owners and node.inputs:
            # A node the quantizer inserted (quant_input, vitis_sigmoid) that extends no float name:
            # it quantizes or replaces what its input stands for when that input is a model input.
            feeding = out.owner_of.get(node.inputs[0])
            if node.op == "quantize" and feeding is not None:
                owners = [feeding]
        out.owner_of[node.name] = owners[-1] if owners else None
        if not owners:
            out.unowned.append(node)
            continue
        for o in owners:
            out.merged_into.setdefault(o, []).append(node)
        # A layer merged into a later node (not its last origin) has its output inside that node: an
        # earlier node built from it (a separable conv's depthwise half) holds an intermediate tensor.
        for o in owners[:-1]:
            out.standing.pop(o, None)
        out.standing[owners[-1]] = node
    standing = {id(n) for n in out.standing.values()}
    out.intermediate = [n for n in graph.nodes if getattr(n, "out_slot", None) is not None and id(n) not in standing
                        and out.owner_of.get(n.name) is not None]
    return out
