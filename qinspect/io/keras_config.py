"""A Keras model config (JSON) -> :class:`ModelGraph`, without TensorFlow and without running anything.

Reads the three config dialects Vitis AI users meet:

* Keras 2 (tf_keras, ``.h5``; also Keras 2.0-era files): ``inbound_nodes`` are lists of
  ``[layer, node_index, tensor_index, kwargs]``; TFOpLambda layers (``x + 3`` in a functional model)
  keep their input structure, so a node may be a bare ``[layer, 0, 0, {"y": 3.0}]``.
* Keras 3 (``.keras`` and Keras-3-written ``.h5``): ``inbound_nodes`` are ``{"args", "kwargs"}`` where
  tensors are ``{"class_name": "__keras_tensor__", "config": {"shape", "keras_history"}}``. Keras-3
  operations called on tensors (``x + 3``) are stored like layers; they become class ``KerasOp``
  with ``config["function"]`` such as ``"numpy.add"``.
* Sequential configs (a dict with ``layers``, or the Keras 2.0 bare list).

Nested models (Functional or Sequential inside either) are flattened: their leaves are named
``outer/inner``, the nested model stays as a container entry, and its inner InputLayers are aliased
to the outer tensors that feed them. Every call of a layer or nested model is its own entry
(``conv``, ``conv@2``, ``tower@2/conv``) and every output of a multi-output layer too (``split``,
``split:1``); see :mod:`qinspect.io.graph` for the naming. Lambda layers and classes that are not
Keras's own (:mod:`qinspect.io.keras_classes`) are kept in the graph with ``runnable=False`` and a
``note``; their code is never looked at, let alone run.

Shapes: a Keras-3 tensor record carries its shape, and ``build_config`` carries a layer's input
shapes; these are what Keras itself computed, so they win. Other shapes come from
:mod:`qinspect.io.shapes`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from qinspect.io.graph import NEST_SEP, Layer, ModelGraph, call_name, output_name
from qinspect.io.keras_classes import is_keras_own
from qinspect.io.shapes import SHAPE_PRESERVING, Shape, infer_output_shape

CONTAINER_CLASSES = {"Functional", "Model", "Sequential"}

# Keras built-in layers qinspect accepts as runnable (TensorFlow can rebuild them from the config).
BUILTIN_LAYERS = {
    "InputLayer",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Convolution2D",
    "DepthwiseConv2D",
    "DepthwiseConv1D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "Dense",
    "GroupNormalization",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "MaxPool2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "AvgPool2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "Flatten",
    "Reshape",
    "Permute",
    "RepeatVector",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "Concatenate",
    "Add",
    "Multiply",
    "Subtract",
    "Average",
    "Maximum",
    "Minimum",
    "Dot",
    "Resizing",
    "CenterCrop",
    "Embedding",
    "TFOpLambda",
    "SlicingOpLambda",
    "KerasOp",
    "CustomScaleLayer",
    *SHAPE_PRESERVING,
}

_CONSTANT_VALUE = "_CONSTANT_VALUE"


class ConfigError(ValueError):
    """The config is not a Keras model config qinspect understands (turned into a QInspectError)."""


def graph_from_config(
    model_config: dict[str, Any] | str,
    *,
    source: str = "",
    source_format: str = "",
    use_hints: bool = True,
) -> ModelGraph:
    """Build the flattened graph of a Keras model from its stored config.

    ``model_config`` is the ``{"class_name": ..., "config": ...}`` object (or its JSON text) found in
    an ``.h5`` file's ``model_config`` attribute or a ``.keras`` archive's ``config.json``.
    ``use_hints=False`` ignores the shapes Keras stored and infers every shape (for testing the
    inference). Raises :class:`ConfigError` if the config is not a model config.
    """
    if isinstance(model_config, (str, bytes)):
        try:
            model_config = json.loads(model_config)
        except ValueError as exc:
            raise ConfigError(f"model config is not valid JSON ({exc})") from exc
    if not isinstance(model_config, dict) or "class_name" not in model_config:
        raise ConfigError("model config has no class_name")
    builder = _Builder(use_hints=use_hints)
    top = model_config
    if not _is_container(top):
        raise ConfigError(f"model config is a single {top.get('class_name')!r} layer, not a model")
    try:
        inputs, outputs = builder.model(top, _Scope())
        builder.finish()
    except ConfigError:
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # A config that is JSON but not shaped like a Keras one: say so, never a traceback.
        raise ConfigError(f"unexpected config structure ({type(exc).__name__}: {exc})") from exc
    cfg = top.get("config")
    name = cfg.get("name", "model") if isinstance(cfg, dict) else "model"
    return ModelGraph(
        name=name,
        layers=builder.layers,
        inputs=inputs,
        outputs=outputs,
        source=source,
        source_format=source_format,
        warnings=builder.warnings,
    )


# --------------------------------------------------------------------------------------------- helpers


def python_class_name(layer_cfg: dict[str, Any]) -> str:
    """The layer's class name without a registration package (``"Custom>MyLayer"`` -> ``"MyLayer"``)."""
    return str(layer_cfg.get("class_name", "")).rsplit(">", 1)[-1]


def is_keras_op(layer_cfg: dict[str, Any]) -> bool:
    """True for a Keras-3 operation (``keras.ops.add`` ...) stored like a layer in a functional config."""
    module = layer_cfg.get("module") or ""
    if module.startswith("keras.src.ops") or module.startswith("keras.ops"):
        return True
    # Keras-3 legacy .h5 drops "module"; an op's config then holds no "trainable"/"dtype", which
    # every layer's config has.
    inner = layer_cfg.get("config")
    nodes = layer_cfg.get("inbound_nodes") or []
    return (
        isinstance(inner, dict)
        and bool(nodes)
        and isinstance(nodes[0], dict)
        and "trainable" not in inner
        and "dtype" not in inner
        and not _is_container(layer_cfg)
    )


def _is_container(layer_cfg: dict[str, Any]) -> bool:
    cfg = layer_cfg.get("config")
    if python_class_name(layer_cfg) in CONTAINER_CLASSES:
        return isinstance(cfg, (dict, list))
    # A subclassed Functional (registered_name differs) still stores its layers and input_layers.
    return isinstance(cfg, dict) and isinstance(cfg.get("layers"), list) and "input_layers" in cfg


def snake_case(name: str) -> str:
    """Keras' auto-name of a class (``"DepthwiseConv2D"`` -> ``"depthwise_conv2d"``, ``"ReLU"`` -> ``"re_lu"``).

    ``.keras`` weight files address layers by this name, so it must match Keras exactly: an
    underscore before each capitalised word, then between a lower-case letter and a capital.
    """
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def op_function_name(layer_cfg: dict[str, Any]) -> str:
    """``"numpy.add"`` for a Keras-3 op stored as ``keras.src.ops.numpy`` / ``Add``."""
    module = (layer_cfg.get("module") or "keras.src.ops.numpy").rsplit(".", 1)[-1]
    return f"{module}.{snake_case(python_class_name(layer_cfg))}"


def _as_shape(value: Any) -> Shape | None:
    if not isinstance(value, (list, tuple)) or not all(v is None or isinstance(v, int) for v in value):
        return None
    return [None if v is None else int(v) for v in value]


@dataclass
class _Ref:
    """A reference to a tensor: the ``tensor``-th output of call ``node`` of ``layer``."""

    layer: str
    node: int
    tensor: int
    shape: Shape | None = None  # what Keras stored for it (Keras 3 only)


@dataclass
class _Call:
    """One call of a layer in a config: its tensor inputs and its constant keyword arguments."""

    inputs: list[_Ref]
    kwargs: dict[str, Any] = field(default_factory=dict)
    # kwarg name -> ref, for tensors passed by keyword (TFOpLambda ``y=other``)
    tensor_kwargs: dict[str, _Ref] = field(default_factory=dict)


def _is_k2_ref(x: Any) -> bool:
    return (
        isinstance(x, list)
        and len(x) in (3, 4)
        and isinstance(x[0], str)
        and isinstance(x[1], int)
        and isinstance(x[2], int)
        and not isinstance(x[1], bool)
    )


def _is_k3_tensor(x: Any) -> bool:
    return isinstance(x, dict) and x.get("class_name") == "__keras_tensor__"


def _k3_ref(x: dict[str, Any]) -> _Ref:
    cfg = x.get("config", {})
    hist = cfg.get("keras_history")
    if not (isinstance(hist, list) and len(hist) == 3):
        raise ConfigError("a Keras-3 tensor record has no keras_history")
    return _Ref(str(hist[0]), int(hist[1]), int(hist[2]), _as_shape(cfg.get("shape")))


def _k2_kwargs(kwargs: Any) -> tuple[dict[str, Any], dict[str, _Ref]]:
    """Split Keras-2 call kwargs into constants and tensors (``[layer, node, tensor]`` triples)."""
    consts: dict[str, Any] = {}
    tensors: dict[str, _Ref] = {}
    if not isinstance(kwargs, dict):
        return consts, tensors
    for key, value in kwargs.items():
        if _is_k2_ref(value) and len(value) == 3:
            tensors[key] = _Ref(value[0], value[1], value[2])
        elif value is not None:
            consts[key] = value
    return consts, tensors


def _parse_k2_node(node: Any) -> _Call:
    refs: list[_Ref] = []
    kwargs: Any = None
    constants: list[Any] = []

    def walk(x: Any) -> None:
        nonlocal kwargs
        if isinstance(x, list) and len(x) in (3, 4) and x[0] == _CONSTANT_VALUE and x[1] == -1:
            constants.append(x[2])
            if len(x) == 4 and kwargs is None:
                kwargs = x[3]
        elif _is_k2_ref(x):
            refs.append(_Ref(x[0], x[1], x[2]))
            if len(x) == 4 and kwargs is None:
                kwargs = x[3]
        elif isinstance(x, list):
            for item in x:
                walk(item)
        elif isinstance(x, dict):
            for item in x.values():
                walk(item)
        else:
            raise ConfigError(f"unexpected inbound node entry {x!r}")

    walk(node)
    consts, tensors = _k2_kwargs(kwargs)
    for i, value in enumerate(constants):
        consts[f"arg{i}"] = value
    return _Call(refs, consts, tensors)


def _parse_k3_node(node: dict[str, Any]) -> _Call:
    refs: list[_Ref] = []

    def collect(x: Any) -> bool:
        """Collect tensors in x; True if x held any."""
        if _is_k3_tensor(x):
            refs.append(_k3_ref(x))
            return True
        items = x if isinstance(x, (list, tuple)) else x.values() if isinstance(x, dict) else []
        found = [collect(item) for item in items]  # every item is visited, so no any(generator)
        return any(found)

    consts: dict[str, Any] = {}
    for i, arg in enumerate(node.get("args", [])):
        if not collect(arg) and arg is not None:
            consts[f"arg{i}"] = arg
    tensors: dict[str, _Ref] = {}
    for key, value in (node.get("kwargs") or {}).items():
        if _is_k3_tensor(value):
            tensors[key] = _k3_ref(value)
        elif isinstance(value, (list, dict)) and collect(value):
            pass  # tensors nested in a kwarg: they are inputs, in order
        elif value is not None:
            consts[key] = value
    return _Call(refs, consts, tensors)


def _parse_nodes(layer_cfg: dict[str, Any]) -> list[_Call]:
    nodes = layer_cfg.get("inbound_nodes") or []
    if not isinstance(nodes, list):
        raise ConfigError(f"layer {layer_cfg.get('name')!r}: inbound_nodes is not a list")
    calls = []
    for node in nodes:
        if isinstance(node, dict) and ("args" in node or "kwargs" in node):
            calls.append(_parse_k3_node(node))
        else:
            calls.append(_parse_k2_node(node))
    return calls


def _layer_refs(value: Any) -> list[_Ref]:
    """input_layers / output_layers: ``[[name, 0, 0], ...]`` or a single ``[name, 0, 0]``."""
    if _is_k2_ref(value):
        return [_Ref(value[0], value[1], value[2])]
    refs: list[_Ref] = []
    if isinstance(value, list):
        for item in value:
            refs.extend(_layer_refs(item))
    elif isinstance(value, dict):
        for item in value.values():
            refs.extend(_layer_refs(item))
    return refs


# --------------------------------------------------------------------------------------------- builder


@dataclass
class _Scope:
    """Where one call of a (nested) model is being flattened.

    ``prefix`` names this call's entries (``tower@2/``); ``owner_prefix`` the first call's (``tower/``),
    whose layers a later call of a nested model shares. ``bindings``: the outer leaves feeding a nested
    model's inputs (None at the top); ``parent``: the container entry (None at the top).
    """

    prefix: str = ""
    owner_prefix: str = ""
    bindings: list[str] | None = None
    parent: str | None = None


class _Builder:
    def __init__(self, use_hints: bool) -> None:
        self.layers: list[Layer] = []
        self.warnings: list[str] = []
        self.use_hints = use_hints
        self.hints: dict[str, Shape] = {}  # leaf name -> output shape Keras stored

    # -- models

    def model(self, layer_cfg: dict[str, Any], scope: _Scope) -> tuple[list[str], list[str]]:
        """Flatten one call of a model. Returns (input leaf names, output leaf names)."""
        cfg = layer_cfg.get("config")
        if isinstance(cfg, list) or python_class_name(layer_cfg) == "Sequential":
            return self._sequential(layer_cfg, scope)
        return self._functional(layer_cfg, scope)

    def _leaf(
        self,
        layer_cfg: dict[str, Any],
        full: str,
        parent: str | None,
        call: _Call,
        inbound: list[str],
        kw_index: dict[str, int] | None = None,
        shares: str = "",
        call_index: int = 0,
    ) -> Layer:
        class_name = python_class_name(layer_cfg)
        config = dict(layer_cfg.get("config") or {})
        if is_keras_op(layer_cfg):
            config = {**config, "function": op_function_name(layer_cfg), "op_class": class_name}
            class_name = "KerasOp"
        call_kwargs = dict(call.kwargs)
        # Tensors passed by keyword are inputs too; the kwarg records which inbound entry it is.
        for key, index in (kw_index or {}).items():
            call_kwargs[key] = {"__inbound__": index}
        layer = Layer(
            name=full,
            class_name=class_name,
            config=config,
            inbound=inbound,
            call_kwargs=call_kwargs,
            parent=parent,
            shares=shares if shares != full else "",
            call=call_index,
        )
        if class_name == "Lambda":
            layer.runnable = False
            layer.note = "Lambda layer: its code is stored in the file and is never deserialized or run"
        elif not (class_name == "KerasOp" or is_keras_own(layer_cfg)):
            layer.runnable = False
            layer.note = (
                f"custom layer class {layer_cfg.get('class_name')!r} (not a Keras built-in): "
                "shown, never deserialized or run"
            )
        # config stays exactly what Keras' from_config accepts (build_config is used for shapes only)
        self.layers.append(layer)
        return layer

    def _container(
        self, layer_cfg: dict[str, Any], full: str, parent: str | None, shares: str = "", call_index: int = 0
    ) -> Layer:
        cfg = layer_cfg.get("config")
        sub_layers = cfg if isinstance(cfg, list) else cfg.get("layers", [])
        config = {} if isinstance(cfg, list) else {k: v for k, v in cfg.items() if k != "layers"}
        config["layer_names"] = [_layer_name(sub) for sub in sub_layers]
        layer = Layer(
            name=full,
            class_name=python_class_name(layer_cfg),
            config=config,
            parent=parent,
            is_container=True,
            shares=shares if shares != full else "",
            call=call_index,
        )
        self.layers.append(layer)
        return layer

    def _input(self, layer_cfg: dict[str, Any], full: str, parent: str | None) -> Layer:
        layer = Layer(name=full, class_name="InputLayer", config=dict(layer_cfg.get("config") or {}), parent=parent)
        layer.output_shape = infer_output_shape("InputLayer", layer.config, [])
        self.layers.append(layer)
        return layer

    def _call_nested(
        self,
        layer_cfg: dict[str, Any],
        full: str,
        parent: str | None,
        inputs: list[str],
        owner: str,
        call_index: int = 0,
    ) -> list[str]:
        self._container(layer_cfg, full, parent, owner, call_index)
        _, outputs = self.model(layer_cfg, _Scope(full + NEST_SEP, owner + NEST_SEP, inputs, full))
        return outputs

    def _sequential(self, layer_cfg: dict[str, Any], scope: _Scope) -> tuple[list[str], list[str]]:
        prefix, bindings, parent = scope.prefix, scope.bindings, scope.parent
        cfg = layer_cfg.get("config")
        sub_layers = cfg if isinstance(cfg, list) else (cfg or {}).get("layers")
        if not isinstance(sub_layers, list) or not sub_layers:
            raise ConfigError(f"Sequential model {prefix or 'at top'} has no layers")
        subs = list(sub_layers)
        if bindings is not None:
            current = bindings[0] if bindings else None
            inputs = list(bindings)
            if subs and python_class_name(subs[0]) == "InputLayer":
                subs = subs[1:]  # aliased to the outer tensor
        else:
            if python_class_name(subs[0]) == "InputLayer":
                first = subs.pop(0)
                inp = self._input(first, prefix + _layer_name(first), parent)
            else:
                # A Sequential built from a first layer with input_shape: Keras names its input so.
                first_cfg = dict(subs[0].get("config") or {})
                name = f"{_layer_name(subs[0])}_input"
                input_cfg = {"name": name, "batch_input_shape": first_cfg.get("batch_input_shape")}
                inp = self._input({"class_name": "InputLayer", "config": input_cfg}, prefix + name, parent)
                if inp.output_shape is None:
                    self.warnings.append("Sequential model has no input shape; shapes are unknown")
            current = inp.name
            inputs = [inp.name]
        for sub in subs:
            name = prefix + _layer_name(sub)
            owner = scope.owner_prefix + _layer_name(sub)
            feed = [] if current is None else [current]
            if _is_container(sub):
                outs = self._call_nested(sub, name, parent, feed, owner)
                current = outs[0] if outs else None
            else:
                call = _Call(inputs=[])
                layer = self._leaf(sub, name, parent, call, feed, shares=owner)
                self._hint_from_build(sub, feed)
                current = layer.name
        return inputs, [] if current is None else [current]

    def _functional(self, layer_cfg: dict[str, Any], scope: _Scope) -> tuple[list[str], list[str]]:
        prefix, bindings, parent = scope.prefix, scope.bindings, scope.parent
        cfg = layer_cfg.get("config")
        if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
            raise ConfigError(f"model {layer_cfg.get('class_name')!r} config has no layers list")
        by_name: dict[str, dict[str, Any]] = {}
        for sub in cfg["layers"]:
            if not isinstance(sub, dict):
                raise ConfigError("a layer entry of the model config is not an object")
            by_name[_layer_name(sub)] = sub
        input_refs = _layer_refs(cfg.get("input_layers"))
        output_refs = _layer_refs(cfg.get("output_layers"))
        if not input_refs or not output_refs:
            raise ConfigError(f"model {cfg.get('name')!r} has no input_layers or output_layers")

        # tensors: (layer, call position, tensor index) -> producing leaf name
        tensors: dict[tuple[str, int, int], str] = {}
        calls: dict[str, list[_Call]] = {name: _parse_nodes(sub) for name, sub in by_name.items()}
        input_names = []
        for i, ref in enumerate(input_refs):
            sub = by_name.get(ref.layer)
            if sub is None:
                raise ConfigError(f"model input {ref.layer!r} is not one of its layers")
            if bindings is not None:
                if i >= len(bindings):
                    raise ConfigError(f"nested model {cfg.get('name')!r} gets fewer inputs than it declares")
                tensors[(ref.layer, 0, 0)] = bindings[i]
                input_names.append(bindings[i])
            else:
                leaf = self._input(sub, prefix + ref.layer, parent)
                tensors[(ref.layer, 0, 0)] = leaf.name
                input_names.append(leaf.name)

        def resolve(ref: _Ref) -> str | None:
            n_calls = len(calls.get(ref.layer, [])) or 1
            pos = 0 if n_calls == 1 else ref.node - _node_offset(by_name.get(ref.layer, {}))
            return tensors.get((ref.layer, pos, ref.tensor))

        pending = [
            (name, pos)
            for name, sub in by_name.items()
            if python_class_name(sub) != "InputLayer"
            for pos in range(len(calls[name]))
        ]
        # How many output tensors each layer has (the highest index anything reads, plus one).
        n_outputs: dict[str, int] = {}
        every_ref = output_refs + [
            r for cs in calls.values() for c in cs for r in c.inputs + list(c.tensor_kwargs.values())
        ]
        for ref in every_ref:
            n_outputs[ref.layer] = max(n_outputs.get(ref.layer, 1), ref.tensor + 1)
        while pending:
            remaining = []
            for name, pos in pending:
                call = calls[name][pos]
                resolved = [resolve(r) for r in call.inputs + list(call.tensor_kwargs.values())]
                if any(r is None for r in resolved):
                    remaining.append((name, pos))
                    continue
                outs = self._do_call(by_name[name], scope, call, resolved, pos, n_outputs.get(name, 1))  # type: ignore[arg-type]
                for t, out in enumerate(outs):
                    tensors[(name, pos, t)] = out
            if len(remaining) == len(pending):
                stuck = ", ".join(sorted({n for n, _ in remaining}))
                raise ConfigError(f"cannot connect layers {stuck}: their inputs are not produced in the model")
            pending = remaining

        outputs = []
        for ref in output_refs:
            leaf = resolve(ref)
            if leaf is None:
                raise ConfigError(f"model output {ref.layer!r} is not produced by any layer")
            outputs.append(leaf)
        return input_names, outputs

    def _do_call(
        self,
        sub: dict[str, Any],
        scope: _Scope,
        call: _Call,
        resolved: list[str],
        call_index: int,
        n_outputs: int,
    ) -> list[str]:
        """Add the entries of one call (the ``call_index``-th of its layer); return the leaves producing
        its outputs. A later call gets its own entries, sharing the first call's layer."""
        name = _layer_name(sub)
        parent = scope.parent
        owner = scope.owner_prefix + name  # the layer's first call, in the first call of the enclosing models
        full = call_name(scope.prefix + name, call_index)
        if call_index:
            full = self._unique(full)
        n_in = len(call.inputs)
        inbound = resolved[:n_in]
        kw_index: dict[str, int] = {}
        for key, leaf in zip(call.tensor_kwargs, resolved[n_in:], strict=False):
            if leaf not in inbound:
                inbound.append(leaf)
            kw_index[key] = inbound.index(leaf)
        if self.use_hints:
            for ref, leaf in zip(call.inputs + list(call.tensor_kwargs.values()), resolved, strict=False):
                if ref.shape is not None:
                    self.hints.setdefault(leaf, ref.shape)
        if _is_container(sub):
            return self._call_nested(sub, full, parent, inbound, owner, call_index)
        first = self._leaf(sub, full, parent, call, inbound, kw_index, shares=owner, call_index=call_index)
        self._hint_from_build(sub, inbound)
        outs = [first.name]
        for t in range(1, n_outputs):
            extra = self._leaf(sub, self._unique(output_name(full, t)), parent, call, inbound, kw_index,
                               shares=first.owner, call_index=call_index)
            extra.output_index = t
            outs.append(extra.name)
        return outs

    def _unique(self, name: str) -> str:
        """``name``, or ``name_``... when a layer of the file is already called that (``conv@2`` is a
        legal Keras 2 layer name)."""
        taken = {layer.name for layer in self.layers}  # only for later calls and outputs: rare
        while name in taken:
            name += "_"
        return name

    def _hint_from_build(self, sub: dict[str, Any], inbound: list[str]) -> None:
        """A layer's build_config holds its input shapes: the output shapes of its producers."""
        if not self.use_hints:
            return
        build = sub.get("build_config")
        if not isinstance(build, dict):
            return
        shape = build.get("input_shape")
        if _as_shape(shape) is not None and len(inbound) == 1:
            self.hints.setdefault(inbound[0], _as_shape(shape))  # type: ignore[arg-type]
        elif isinstance(shape, list) and len(shape) == len(inbound):
            for leaf, s in zip(inbound, shape, strict=False):
                if _as_shape(s) is not None:
                    self.hints.setdefault(leaf, _as_shape(s))  # type: ignore[arg-type]

    # -- shapes and containers

    def finish(self) -> None:
        """Fill output shapes (hints, then inference) and container summaries."""
        index = {layer.name: layer for layer in self.layers}
        for layer in self.layers:
            if layer.is_container:
                continue
            if layer.output_shape is None and layer.name in self.hints:
                layer.output_shape = list(self.hints[layer.name])
            if layer.output_shape is None:
                shapes = [index[name].output_shape for name in layer.inbound if name in index]
                layer.output_shape = infer_output_shape(layer.class_name, layer.config, shapes, layer.call_kwargs)
            shape = layer.output_shape
            if shape and isinstance(shape[0], (list, tuple)):
                # A multi-output layer: each entry is one output (output 0 is the layer's own entry).
                picked = shape[layer.output_index] if layer.output_index < len(shape) else None
                layer.output_shape = list(picked) if picked is not None else None
        self.update_containers()

    def update_containers(self) -> None:
        """A container's shape is its last leaf's; its params the sum of its leaves'."""
        parents = {layer.name: layer.parent for layer in self.layers}
        for layer in self.layers:
            if not layer.is_container:
                continue
            leaves = [
                other
                for other in self.layers
                if not other.is_container and _nested_in(other.parent, layer.name, parents)
            ]
            layer.params = sum(leaf.params for leaf in leaves)
            if leaves:
                layer.output_shape = leaves[-1].output_shape


def _nested_in(parent: str | None, container: str, parents: dict[str, str | None]) -> bool:
    """True when a layer whose parent is ``parent`` lies inside ``container`` (by the parent chain:
    a top-level layer may be called ``block/conv`` without being inside a model ``block``)."""
    seen = 0
    while parent is not None and seen <= len(parents):
        if parent == container:
            return True
        parent, seen = parents.get(parent), seen + 1
    return False


def _layer_name(sub: dict[str, Any]) -> str:
    name = sub.get("name")
    if name is None and isinstance(sub.get("config"), dict):
        name = sub["config"].get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a {sub.get('class_name')!r} layer in the config has no name")
    return name


def _node_offset(sub: dict[str, Any]) -> int:
    """How many calls precede the first stored inbound node in a config's node indices.

    Keras 2 counts the node a nested model made when it was built on its own Input as node 0
    (a Sequential only when its config starts with an InputLayer); Keras 3 does not.
    """
    nodes = sub.get("inbound_nodes") or []
    if not _is_container(sub) or (nodes and isinstance(nodes[0], dict)):
        return 0
    cfg = sub.get("config")
    if python_class_name(sub) == "Sequential":
        layers = cfg if isinstance(cfg, list) else (cfg or {}).get("layers") or []
        return 1 if layers and python_class_name(layers[0]) == "InputLayer" else 0
    return 1


def update_container_summaries(graph: ModelGraph) -> None:
    """Recompute containers' params and shapes after weights were attached to the leaves."""
    builder = _Builder(use_hints=False)
    builder.layers = graph.layers
    builder.update_containers()


# ----------------------------------------------------------------------------- weights per class
# Keras files store weights by position (``vars/0`` in ``.keras``) or in a nested model's group; this
# table turns positions into WeightSource short names and says which weights are trainable, which
# decides their order inside a nested model (Keras saves a model's trainable weights first).

# (short name, trainable, present?) per class; `present` is a config predicate.
_Spec = list[tuple[str, bool]]


def _use_bias(config: dict[str, Any]) -> bool:
    return bool(config.get("use_bias", True))


def expected_weights(class_name: str, config: dict[str, Any]) -> _Spec | None:
    """The weights a layer of this class has, as ``[(short_name, trainable), ...]`` in creation order.

    ``None`` for a class this table does not know (custom layers): its weights can still be read
    where the file names them, but not placed by position.
    """
    bias = [("bias", True)] if _use_bias(config) else []
    if class_name in (
        "Conv1D", "Conv2D", "Conv3D", "Convolution2D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "Dense",
    ):  # fmt: skip
        return [("kernel", True), *bias]
    if class_name in ("DepthwiseConv2D", "DepthwiseConv1D"):
        return [("depthwise_kernel", True), *bias]
    if class_name in ("SeparableConv1D", "SeparableConv2D"):
        return [("depthwise_kernel", True), ("pointwise_kernel", True), *bias]
    if class_name == "BatchNormalization":
        spec = []
        if config.get("scale", True):
            spec.append(("gamma", True))
        if config.get("center", True):
            spec.append(("beta", True))
        return [*spec, ("moving_mean", False), ("moving_variance", False)]
    if class_name in ("LayerNormalization", "GroupNormalization"):
        spec = []
        if config.get("scale", True):
            spec.append(("gamma", True))
        if config.get("center", True):
            spec.append(("beta", True))
        return spec
    if class_name == "PReLU":
        return [("alpha", True)]
    if class_name in ("LSTM", "GRU", "SimpleRNN"):  # the cell's weights
        return [("kernel", True), ("recurrent_kernel", True), *bias]
    if class_name == "LayerScale":
        return [("gamma", True)]
    if class_name == "Embedding":
        return [("embeddings", True)]
    if class_name == "Normalization":
        # Given in the config (mean=..., variance=..., as ConvNeXt's and EfficientNet's stem do), the
        # statistics are constants and Keras creates no weights; adapted ones are stored.
        if config.get("mean") is not None and config.get("variance") is not None:
            return []
        return [("mean", False), ("variance", False), ("count", False)]
    if class_name in BUILTIN_LAYERS:  # the other built-ins hold no weights
        return []
    return None


def short_weight_name(stored: str, class_name: str) -> str:
    """``"block/conv1/kernel:0"`` -> ``"kernel"``; Keras 3 DepthwiseConv2D's ``kernel`` -> ``depthwise_kernel``.

    Keras 3 renamed the depthwise kernel; the array layout is the same, so one name serves every
    reader downstream.
    """
    name = stored.rsplit("/", 1)[-1]
    if ":" in name:
        name = name.split(":", 1)[0]
    if class_name in ("DepthwiseConv2D", "DepthwiseConv1D") and name == "kernel":
        return "depthwise_kernel"
    return name
