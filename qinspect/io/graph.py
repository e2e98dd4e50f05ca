"""The model graph every part of qinspect shares: layers, classes, configs, edges, shapes, nesting.

A :class:`ModelGraph` is built from a Keras file's stored config (``keras_config``), from a capture
(``capture_file``) or, for SavedModel folders only, by TensorFlow (``qinspect.capture``).

Naming: a layer's ``name`` is unique in the graph. Layers of a nested model are named
``outer/inner`` (the nesting path joined by ``/``) and carry ``parent = "outer"``; the nested model
itself is a *container* layer whose children are those layers. Keras layer names may contain ``/``
themselves (tf_keras' MobileNetV3 has ``expanded_conv/squeeze_excite/Conv_1`` at top level), so the
nesting is told by ``parent`` alone, never by splitting a name. Edges (``inbound``) always join leaf
layers: a leaf that reads a nested model's output reads the leaf inside it that produced that output.

A node is a *call*, not a layer: a layer (or nested model) called several times is one entry per
call. The first call keeps the plain name; call ``k`` (counted from 1) is ``name@k`` (``conv@2``, and
for a nested model ``tower@2`` with its leaves ``tower@2/conv``). A later call's ``shares`` names the
first call's entry, whose weights (and, for the quantizer, whose quantizers) every call uses. A layer
with several output tensors has one entry per output: output 0 is the layer's own entry, output
``t`` is ``name:t`` with ``output_index = t`` (and ``shares`` = the layer's entry).

``layers`` is in topological order of the leaves; a container is listed just before its first child,
so the list reads as the tree the GUI shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

Shape = list[int | None]

NEST_SEP = "/"
CALL_SEP = "@"  # conv@2: the second call of layer conv
OUTPUT_SEP = ":"  # split:1: output 1 of layer split


def call_name(name: str, call: int) -> str:
    """The node name of a layer's ``call``-th call (0-based): the plain name for the first one."""
    return name if call == 0 else f"{name}{CALL_SEP}{call + 1}"


def output_name(name: str, index: int) -> str:
    """The node name of output ``index`` of a multi-output layer call (the plain name for output 0)."""
    return name if index == 0 else f"{name}{OUTPUT_SEP}{index}"

# Layer classes whose code lives in the file (Lambda) or outside Keras (custom): shown, never run.
_CODE_LAYERS = {"Lambda"}


@dataclass
class Layer:
    """One layer of the model as stored in its config."""

    name: str
    class_name: str
    config: dict[str, Any] = field(default_factory=dict)
    inbound: list[str] = field(default_factory=list)
    # Keyword arguments of the call beyond the tensors (TFOpLambda constants such as ``y=3.0``).
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    output_shape: Shape | None = None
    params: int = 0
    parent: str | None = None
    # Short weight names in the file's order ("kernel", "bias", "depthwise_kernel", "gamma", ...).
    weight_shapes: dict[str, list[int]] = field(default_factory=dict)
    is_container: bool = False
    runnable: bool = True
    note: str = ""  # why a layer is not runnable, or what else a user should know about it
    # Calls and outputs (see the module docstring): the entry whose layer this one is ("" when it is
    # the layer's first call, output 0), which call of it (0-based) and which of its outputs.
    shares: str = ""
    call: int = 0
    output_index: int = 0

    @property
    def owner(self) -> str:
        """The entry holding this call's weights and quantizers (itself for a first call)."""
        return self.shares or self.name

    @property
    def short_name(self) -> str:
        """The layer's own (Keras) name, without the path of the models it is nested in."""
        if self.parent is None:
            return self.name
        prefix = self.parent + NEST_SEP
        return self.name[len(prefix) :] if self.name.startswith(prefix) else self.name

    @property
    def depth(self) -> int:
        """How deeply the layer is nested (0 for a layer of the top model), from its parents."""
        known = self.__dict__.get("_depth")
        if known is not None:
            return int(known)
        return 0 if self.parent is None else 1 + self.parent.count(NEST_SEP)  # outside a graph: a guess


@dataclass
class ModelGraph:
    """A model as a list of layers in topological order, with its inputs and outputs."""

    name: str
    layers: list[Layer]
    inputs: list[str]
    outputs: list[str]
    source: str = ""  # the file it was read from
    source_format: str = ""  # "keras-h5", "keras-v3", "savedmodel", "capture"
    warnings: list[str] = field(default_factory=list)
    _index: dict[str, Layer] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {layer.name: layer for layer in self.layers}
        for layer in self.layers:  # the nesting depth by the parent chain (a name may hold "/")
            layer.__dict__["_depth"] = len(self.ancestors(layer.name))

    def ancestors(self, name: str) -> list[str]:
        """The containers ``name`` is nested in, innermost first (by ``parent``, never by the name)."""
        out: list[str] = []
        parent = self[name].parent
        while parent is not None and parent in self._index and parent not in out:
            out.append(parent)
            parent = self._index[parent].parent
        return out

    def __getitem__(self, name: str) -> Layer:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def leaves(self) -> list[Layer]:
        """The layers that compute something (not containers), in topological order."""
        return [layer for layer in self.layers if not layer.is_container]

    def children(self, name: str | None) -> list[Layer]:
        """Direct children of a container (``None``: the top model's own layers)."""
        return [layer for layer in self.layers if layer.parent == name]

    def consumers(self, name: str) -> list[Layer]:
        """Leaf layers that read the output of ``name``."""
        return [layer for layer in self.layers if name in layer.inbound]

    @property
    def total_params(self) -> int:
        """Parameter count of all leaf layers, each layer once however often it is called."""
        return sum(layer.params for layer in self.leaves() if not layer.shares)

    def owner(self, name: str) -> str:
        """The entry whose weights and quantizers a node uses (``conv`` for ``conv@2``)."""
        layer = self._index.get(name)
        return layer.owner if layer is not None else name

    def calls(self, owner: str) -> list[str]:
        """Every node of one layer (its calls and extra outputs), the owner first, in graph order."""
        return [layer.name for layer in self.layers if layer.name == owner or layer.shares == owner]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``qinspect info --json`` structure and the capture's graph)."""
        return {
            "name": self.name,
            "source": self.source,
            "format": self.source_format,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "total_params": self.total_params,
            "warnings": list(self.warnings),
            "layers": [asdict(layer) for layer in self.layers],
        }

    def to_json(self) -> str:
        """Serialise with :meth:`to_dict`."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelGraph:
        """Inverse of :meth:`to_dict`."""
        fields = set(Layer.__dataclass_fields__)
        layers = [Layer(**{k: v for k, v in d.items() if k in fields}) for d in data["layers"]]
        return cls(
            name=data["name"],
            layers=layers,
            inputs=list(data["inputs"]),
            outputs=list(data["outputs"]),
            source=data.get("source", ""),
            source_format=data.get("format", ""),
            warnings=list(data.get("warnings", [])),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelGraph:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def alias_shared_weights(graph: ModelGraph, mapping: dict[str, Any]) -> None:
    """Point every later call's (and extra output's) entry of ``mapping`` at its owner's entry.

    Weight readers map the file's arrays to first calls only; a shared layer has one set of weights.
    The later calls' ``weight_shapes`` and ``params`` repeat the owner's (``total_params`` counts them once).
    """
    for layer in graph.leaves():
        if layer.shares and layer.shares in mapping:
            mapping[layer.name] = mapping[layer.shares]
            owner = graph[layer.shares]
            layer.weight_shapes, layer.params = dict(owner.weight_shapes), owner.params


def is_code_layer(class_name: str) -> bool:
    """True for layers whose behaviour is code stored in the file (never deserialized or run)."""
    return class_name in _CODE_LAYERS


class WeightSource:
    """Where a graph's weights come from (a Keras file, a capture, a Vitis quantized.h5).

    ``weights(layer)`` returns the layer's arrays keyed by short weight name ("kernel", "bias",
    "depthwise_kernel", "gamma", "beta", "moving_mean", "moving_variance", ...) in the file's order,
    as float32 numpy arrays in Keras layout. A layer without weights gives an empty dict.
    """

    def weights(self, layer: str) -> dict[str, Any]:  # pragma: no cover - interface
        """The arrays of one layer."""
        raise NotImplementedError
