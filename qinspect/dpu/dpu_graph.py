"""The emulator's graph: the model as the Vitis quantizer leaves it, ready to run in integers.

A :class:`DpuGraph` holds :class:`Node` objects in topological order, named like the layers of the
quantizer's ``quantized.h5`` (``quant_c1``, ``quant_img``; model inputs keep their own name), so
results line up with dump files one to one. Each node carries:

- ``op``: what it computes (see :data:`OPS`);
- ``weights``: float32 arrays after the quantizer's rewrites (BN folded, equalized), Keras layout;
- position *slots*: ``weight_slots`` for kernel / bias / alpha, ``out_slot`` for the quantizer of the
  node's output, ``pre_slot`` for a quantizer that acts on the input of a pre-quantized activation
  (softmax, tanh, ...). A slot is ``(layer key, tensor key)`` exactly as in ``positions.json``;
- ``device``: ``"DPU"`` or ``"CPU"`` (with ``cpu_reason``), the partition a compiler would make.

Positions live in one dict, ``positions[layer key][tensor key]``, shared by calibration, the
constraint pass and the executor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.dpu import fixed_point
from qinspect.dpu.options import QuantizerOptions

Slot = tuple[str, str]

# Operators the executor knows. Conv-like ops may carry a fused activation in params["act"].
CONV_OPS = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "dense")
OPS = frozenset(
    {
        "input", "quantize", *CONV_OPS, "relu", "leaky_relu", "prelu", "activation", "hard_sigmoid",
        "add", "multiply", "concat", "max_pool", "avg_pool", "global_avg_pool", "upsample",
        "zero_pad", "flatten", "reshape", "permute", "softmax", "identity", "scalar", "elementwise",
        "global_max_pool", "crop", "batchnorm", "split", "cpu_layer", "unsupported",
    }
)
# Node param: the per-channel factor by which the node's output differs from the float model's tensor of
# the same layer (cross-layer equalization scaled those channels); see DpuGraph.channel_scale.
CLE_OUT_SCALE = "cle_out_scale"
# Ops that pass their input's position through without a quantizer of their own.
TRANSPARENT_OPS = frozenset({"zero_pad", "flatten", "reshape", "permute", "identity"})
# Layers the quantizer's refine stage (QuantPosManager.get_ipos) looks through.
REFINE_TRANSPARENT_OPS = frozenset({"zero_pad", "flatten", "reshape"})
# Activations the DPU fuses into a conv / add (integer clamp or leaky scaling before the rounding).
FUSABLE_ACTS = frozenset({"linear", "relu", "relu6", "leaky_relu"})


@dataclass
class SlotSpec:
    """How one quantizer chooses its position (section 2 of DPU_NUMERICS.md)."""

    layer: str
    key: str
    kind: str  # input, weight, post_activation, pre_activation, output
    method: int = 1  # 0 non-overflow, 1 min-MSE
    round_mode: int = 1  # 0 half-to-even, 1 half-up, 2 half-away-from-zero, 3 floor
    narrow_range: bool = False

    @property
    def slot(self) -> Slot:
        """The ``(layer, key)`` pair."""
        return (self.layer, self.key)


@dataclass
class Node:
    """One operator of the emulated model."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    weight_slots: dict[str, Slot] = field(default_factory=dict)
    out_slot: Slot | None = None
    pre_slot: Slot | None = None
    device: str = "DPU"
    cpu_reason: str = ""
    origin: list[str] = field(default_factory=list)  # float-model layers this node comes from
    key: str = ""  # the positions.json layer key (wrapped layer name)
    output_shape: list[int | None] | None = None

    @property
    def quantized_output(self) -> bool:
        """True when the node's output has a quantizer of its own."""
        return self.out_slot is not None


# the rewrite kind of a CLE pair whose tail is a grouped Conv2D (the quantizer stops there)
CLE_GROUPED_TAIL = "cle_grouped_tail"
# a layer vai_q_tensorflow2 cannot rewrite under any option (its quantize_model stops there)
QUANTIZER_REFUSES = "quantizer_refuses"
# a rewrite of the quantizer's that changes the float model's function (emulated: its loss is error; every
# output says so)
QUANTIZER_DIVERGES = "quantizer_diverges"


@dataclass
class Rewrite:
    """One graph rewrite the quantizer makes, in words, with the layers it touched."""

    kind: str
    text: str
    layers: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "text": self.text, "layers": list(self.layers)}


@dataclass
class Adjustment:
    """One position change made by a DPU constraint (section 5), before and after."""

    constraint: str
    layer: str  # the node whose constraint was checked
    slot: Slot  # the position that moved
    before: int
    after: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "constraint": self.constraint,
            "layer": self.layer,
            "tensor": {"layer": self.slot[0], "key": self.slot[1]},
            "before": self.before,
            "after": self.after,
            "text": self.text,
        }


def quantizes_model_input(graph: DpuGraph, node: Node) -> bool:
    """Whether ``node`` is the quantizer of a model input: a DPU always reads its input in int8, so
    keeping it float is no remedy (its rounding goes when the layers reading it run on the CPU)."""
    return node.op == "quantize" and bool(node.inputs) and all(graph[i].op == "input" for i in node.inputs)


def computing_node(standing: Node, built_from: Iterable[Node]) -> Node:
    """The node that computes a float layer, given the node standing for its tensor and the nodes built
    from the layer (graph order). They differ for a float layer that a DPU layer reads through an input
    quantizer: the quantizer (on the DPU) stands for the tensor, the layer runs as its own node (often on
    the CPU). A model input stands as its quantizer: what the DPU reads."""
    if standing.op != "quantize":
        return standing
    return next((n for n in built_from if n.op not in ("quantize", "input")), standing)


def cpu_part(built_from: Iterable[Node]) -> list[Node]:
    """The CPU operators of a float layer whose other operators run on the DPU (a Dense(softmax): its
    matmul on the DPU, its softmax on the CPU); empty for a layer that runs in one place."""
    ops = [n for n in built_from if n.op not in ("quantize", "input")]
    cpu = [n for n in ops if n.device == "CPU"]
    return cpu if cpu and len(cpu) < len(ops) else []


def float_layers(graph: DpuGraph, nodes: Sequence[str]) -> list[str]:
    """Float-model layer names behind emulator nodes (what ``ignore_layers`` names: a conv and the
    BatchNorm folded into it both)."""
    out: list[str] = []
    for name in nodes:
        for layer in graph[name].origin or [name]:
            if layer not in out:
                out.append(layer)
    return out


def split_note(cpu: list[Node]) -> str:
    """Said of a layer split between the DPU and the CPU (:func:`cpu_part`)."""
    return "; ".join(f"its {n.op} runs on the CPU: {n.cpu_reason or 'not a DPU operator'}" for n in cpu) \
        + "; the rest on the DPU"


def read_through_note(quantizer: Node) -> str:
    """Said beside a float layer whose tensor the DPU reads through ``quantizer``."""
    return f"the DPU layer after it reads it through the input quantizer {quantizer.name}"


@dataclass
class DpuGraph:
    """The quantized model as the emulator runs it."""

    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    slots: dict[Slot, SlotSpec] = field(default_factory=dict)
    positions: dict[str, dict[str, int]] = field(default_factory=dict)
    rewrites: list[Rewrite] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)
    source: str = ""  # "float-model" or "quantized.h5"
    weights_from: str = ""  # where the folded / equalized weights came from, in words
    # node name -> its rank in Keras' execution order (qinspect.io.call_order); calibration uses it to
    # tell which call of a shared layer ran last in a batch. Empty: the nodes' own order.
    call_rank: dict[str, int] = field(default_factory=dict)
    # The quantizer options a float model was rewritten under (None: a quantized.h5's own graph).
    options: QuantizerOptions | None = None
    # Float-model layer name -> the name Keras gives it, where they differ: a layer nested in a submodel
    # is "backbone/conv1" here and "conv1" to Keras (and to the quantizer's ignore_layers).
    keras_names: dict[str, str] = field(default_factory=dict)
    # Set by calibration: how many samples it ran on, and the tensors whose batches chose different
    # positions (a vote over batches decided them: a larger calibration batch may steady them).
    calib_samples: int = 0
    split_votes: list[Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild name and consumer indexes after nodes changed."""
        self._index = {n.name: n for n in self.nodes}
        self._shared: dict[str, list[str]] | None = None  # shared_groups(), once per structure
        self._consumers: dict[str, list[Node]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                self._consumers.setdefault(i, []).append(n)

    def __getitem__(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.nodes)

    def consumers(self, name: str) -> list[Node]:
        """Nodes that read ``name``."""
        return self._consumers.get(name, [])

    # -- positions -------------------------------------------------------------------------
    def add_slot(self, spec: SlotSpec) -> Slot:
        """Register a quantizer (its position starts unknown)."""
        self.slots[spec.slot] = spec
        self.positions.setdefault(spec.layer, {})
        return spec.slot

    def narrow_activations(self) -> None:
        """Every input and activation quantizer codes in [-127, 127] (a DPUCADF8H target; weights keep
        [-128, 127]): the quantizer's ``narrow_range`` on those quantizers."""
        for spec in self.slots.values():
            if spec.kind != "weight":
                spec.narrow_range = True

    def code_min(self, slot: Slot | None) -> int:
        """The lowest code of a quantizer: -127 under ``narrow_range``, else -128."""
        spec = self.slots.get(slot) if slot is not None else None
        return fixed_point.code_min(spec is not None and spec.narrow_range)

    def output_code_min(self, name: str) -> int:
        """The lowest code of node ``name``'s output: that of the quantizer its consumers see
        (:meth:`output_slot`), -128 when it has none."""
        return self.code_min(self.output_slot(name))

    def pos(self, slot: Slot | None) -> int | None:
        """The current position of a slot (None if the slot or its position is unknown)."""
        if slot is None:
            return None
        return self.positions.get(slot[0], {}).get(slot[1])

    def set_pos(self, slot: Slot, value: int) -> None:
        """Set one position."""
        self.positions.setdefault(slot[0], {})[slot[1]] = int(value)

    def positions_json(self) -> dict[str, dict[str, int]]:
        """Positions keyed like positions.json, every known layer key present (``{}`` if none)."""
        out: dict[str, dict[str, int]] = {}
        for n in self.nodes:
            if n.key and n.op != "input":
                out.setdefault(n.key, {})
        for layer, keys in self.positions.items():
            out.setdefault(layer, {})
            for k, v in keys.items():
                if v is not None:
                    out[layer][k] = int(v)
        return out

    # -- structure helpers used by calibration, constraints and the executor ---------------
    def fused_activation(self, node: Node) -> Node | None:
        """The activation node a conv / add without an output quantizer is fused into, if any."""
        if node.out_slot is not None:
            return None
        cons = self.consumers(node.name)
        if len(cons) == 1 and cons[0].op in ("relu", "leaky_relu", "activation", "softmax"):
            return cons[0]
        return None

    def rounding_activation(self, node: Node) -> Node | None:
        """The fused activation whose quantizer rounds ``node``'s unquantized output, if any.

        None when the activation that follows has no quantizer either (a float CPU layer read by a
        float ReLU): then nothing rounds the tensor at the activation, whatever the graph's shape.
        """
        act = self.fused_activation(node)
        if act is None or (act.out_slot is None and act.pre_slot is None):
            return None
        return act

    def channel_scale(self, name: str) -> np.ndarray | None:
        """The per-channel factor (last axis) by which node ``name``'s output differs from the float
        model's tensor of its layer, or None when they are the same: cross-layer equalization divides a
        head's output channels and multiplies the next layer's inputs, so the quantized model holds
        (and its positions are chosen on) the float model's values times this. An input quantizer
        holds its input's values."""
        node = self[name]
        while node.op == "quantize" and len(node.inputs) == 1 and node.inputs[0] in self:
            node = self[node.inputs[0]]
        scale = node.params.get(CLE_OUT_SCALE)
        return None if scale is None else np.asarray(scale, dtype=np.float32)

    def output_slot(self, name: str, transparent: frozenset[str] = TRANSPARENT_OPS) -> Slot | None:
        """The slot whose position a consumer of ``name`` sees (through ``transparent`` layers).

        A conv whose output is unquantized because an activation is fused into it reports the
        activation's slot: that is where the DPU rounds the accumulator.
        """
        node = self[name]
        seen = 0
        while node.out_slot is None and seen < len(self.nodes):
            seen += 1
            if node.op in transparent and node.inputs:
                node = self[node.inputs[0]]
                continue
            act = self.fused_activation(node)
            if act is not None:
                return act.out_slot or act.pre_slot
            return None
        return node.out_slot

    def input_slot(self, node: Node, index: int = 0) -> Slot | None:
        """The slot of a node's ``index``-th input as the constraint pass sees it: the quantizer's
        refine stage looks through Reshape, Flatten and ZeroPadding2D only."""
        if index >= len(node.inputs):
            return None
        return self.output_slot(node.inputs[index], REFINE_TRANSPARENT_OPS)

    def shared_slots(self) -> dict[Slot, list[str]]:
        """Quantizers used by more than one node (the calls of a shared layer), with those nodes."""
        users: dict[Slot, list[str]] = {}
        for n in self.nodes:
            for slot in {*n.weight_slots.values(), n.out_slot, n.pre_slot} - {None}:
                users.setdefault(slot, []).append(n.name)  # type: ignore[arg-type]
        return {slot: names for slot, names in users.items() if len(names) > 1}

    def shared_groups(self) -> dict[str, list[str]]:
        """Node name -> every node sharing a quantizer with it (itself included), for shared layers' calls.

        Computed once after :meth:`reindex` (slots are set when the graph is built, never later)."""
        if self._shared is not None:
            return self._shared
        groups: dict[str, list[str]] = {}
        for names in self.shared_slots().values():
            for name in names:
                merged = groups.get(name, [])
                groups[name] = merged + [x for x in names if x not in merged]
        order = {n.name: i for i, n in enumerate(self.nodes)}
        self._shared = {name: sorted(names, key=order.__getitem__) for name, names in groups.items()}
        return self._shared

    def layer_closure(self, names: Iterable[str]) -> list[str]:
        """``names`` and every other computing node made from the same float-model layers, transitively
        (a SeparableConv2D's depthwise and pointwise halves, a conv and its split activation): what
        ``ignore_layers`` of those layers keeps float. Input quantizers are left out (a float layer's
        consumers on the DPU still quantize what it gives them). In graph order."""
        chosen = set(names)
        layers: set[str] = set()
        grown = True
        while grown:
            layers |= {layer for n in chosen for layer in (self[n].origin or [n])}
            more = {n.name for n in self.nodes if n.op != "quantize" and n.name not in chosen
                    and any(layer in layers for layer in n.origin)}
            grown = bool(more)
            chosen |= more
        return [n.name for n in self.nodes if n.name in chosen]

    def float_closure(self, names: Iterable[str]) -> list[str]:
        """The nodes keeping ``names``' float-model layers float changes (:meth:`layer_closure`): those on
        the DPU, and CPU nodes that quantize something of the layer themselves (a Dense(softmax)'s float
        softmax rounds its input at the layer's pre-activation position; ignoring the layer drops that
        quantizer too). In graph order."""
        return [n for n in self.layer_closure(names)
                if self[n].device == "DPU" or self[n].pre_slot is not None or self[n].out_slot is not None]

    def quantizer_stop_note(self) -> str | None:
        """Why vai_q_tensorflow2 cannot quantize the model under these options (None: nothing known stops
        it). Every figure under such options is of a run the quantizer cannot make, and says so."""
        pairs = [rw.layers for rw in self.rewrites if rw.kind == CLE_GROUPED_TAIL]
        if not pairs:
            return None
        head, tail = pairs[0][:2]
        more = f" and {len(pairs) - 1} more" if len(pairs) > 1 else ""
        return (f"vai_q_tensorflow2 cannot quantize this model with include_cle=True: its cross-layer equalization "
                f"stops with a shape error at {head} -> {tail}{more} (a pair whose channels its formula does not "
                "line up: a grouped Conv2D tail, or a depthwise head with depth_multiplier > 1). Quantize with "
                "include_cle=False; these figures leave such pairs "
                "unequalized and equalize the rest, a run the quantizer cannot make")

    def caveats(self) -> list[str]:
        """Every note whole-model figures need: a quantizer that stops under these options or on this
        model, a quantizer rewrite that changes the model's function, and stand-in layers."""
        diverges = [rw.text for rw in self.rewrites if rw.kind == QUANTIZER_DIVERGES]
        return [note for note in (self.quantizer_stop_note(), self.model_stop_note(), *diverges,
                                  self.stand_in_note()) if note]

    def model_stop_note(self) -> str | None:
        """Why vai_q_tensorflow2 cannot quantize this model under any option (None: nothing known stops
        it): a layer its rewrites turn into one that cannot be built. The figures are of the emulation's
        way around it, a run the quantizer cannot make until the model is changed."""
        found = [rw for rw in self.rewrites if rw.kind == QUANTIZER_REFUSES]
        if not found:
            return None
        more = f" (and {len(found) - 1} more such layers)" if len(found) > 1 else ""
        return (f"vai_q_tensorflow2 cannot quantize this model as it is: {found[0].text}{more}. These figures "
                "keep such layers in float, a run the quantizer cannot make")

    def stand_in_note(self, outputs: list[str] | None = None) -> str | None:
        """The caveat every output figure needs when layers without an implementation feed the outputs
        (``outputs``, default all): from a capture their recorded float output stands in, so int8 error
        made before them never reaches the outputs after them, and the figures are an upper bound."""
        fed = set(outputs if outputs is not None else self.outputs)
        for node in reversed(self.nodes):  # every node an output depends on
            if node.name in fed:
                fed.update(node.inputs)
        stand_ins = [n.origin[-1] if n.origin else n.name for n in self.nodes
                     if n.op == "unsupported" and n.name in fed]
        if not stand_ins:
            return None
        shown = ", ".join(stand_ins[:3]) + (f" and {len(stand_ins) - 3} more" if len(stand_ins) > 3 else "")
        return (f"upper bound: {shown} ha{'s' if len(stand_ins) == 1 else 've'} no numpy implementation, so the "
                "capture's float output stands in and int8 error made before it does not reach the outputs: "
                "the int8 model's output error is likely larger than shown")

    def shared_note(self, name: str) -> str:
        """A sentence for a node whose quantizers other calls of its layer share ("" for any other node)."""
        group = self.shared_groups().get(name)
        if not group:
            return ""
        others = ", ".join(n for n in group if n != name)
        return (f"shared layer: weights and positions shared with {others} (each call on its own inputs; "
                "calibration keeps the last-run call's position per batch, as the quantizer)")

    def summary(self) -> list[dict[str, Any]]:
        """One JSON-ready row per node (name, op, inputs, device, slots)."""
        rows = []
        for n in self.nodes:
            rows.append(
                {
                    "name": n.name,
                    "op": n.op,
                    "inputs": list(n.inputs),
                    "device": n.device,
                    "cpu_reason": n.cpu_reason,
                    "origin": list(n.origin),
                    "out_position": self.pos(n.out_slot),
                    "weight_positions": {k: self.pos(s) for k, s in n.weight_slots.items()},
                }
            )
        return rows
