"""Check a model file's weights against what its layers' configs say they take, from metadata only.

A ``.h5`` or ``.keras`` whose weights were removed or replaced would otherwise fail deep inside the
emulator (``cannot reshape array``, ``KeyError: 'moving_variance'``). The shapes come from the
graph (``Layer.weight_shapes``, read from the file's dataset shapes) and are compared with what the
layer's class and config require given the channels it reads; classes this table does not know are
not checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.graph import Layer, ModelGraph, WeightSource
from qinspect.io.keras_config import expected_weights


def check_weight_shapes(graph: ModelGraph, path: str) -> None:
    """Refuse a weight whose stored shape is not the one its layer's config and input give."""
    for layer in graph.leaves():
        expected = expected_shapes(layer, graph)
        for short, want in expected.items():
            got = layer.weight_shapes.get(short)
            if got is not None and tuple(got) != want:
                raise QInspectError(f"weight {short!r} of layer {layer.name!r} has shape {_fmt(got)}; a "
                                    f"{layer.class_name} with its config takes {_fmt(want)}", path)


def check_has_weights(source: WeightSource, path: str) -> None:
    """Refuse a model whose layers need weights the file does not hold (the emulator needs them all).

    The graph's ``weight_shapes`` answer without reading; a layer without them (a source that does not
    declare shapes) is asked for its arrays.
    """
    graph: ModelGraph = source.graph
    for layer in graph.leaves():
        spec = expected_weights(layer.class_name, layer.config)
        if not spec:
            continue
        shapes = layer.weight_shapes or {short: np.shape(a) for short, a in (source.weights(layer.name) or {}).items()}
        if not shapes:
            raise QInspectError(f"holds no weights for layer {layer.name!r} ({layer.class_name}): the file has the "
                                "model's structure only, and emulating it needs its weights", path)
        # A bias is only known to exist when the config says so (a hand-made graph may leave use_bias out).
        needed = [short for short, _ in spec if short != "bias" or layer.config.get("use_bias") is True]
        missing = [short for short in needed if short not in shapes
                   and not any(name.startswith("var") for name in shapes)]
        if missing:
            raise QInspectError(f"holds no weight {missing[0]!r} for layer {layer.name!r} ({layer.class_name})", path)


def expected_shapes(layer: Layer, graph: ModelGraph) -> dict[str, tuple[int, ...]]:
    """Short weight name -> the shape the layer's class and config require ({} when unknown)."""
    cfg = layer.config or {}
    cin = _channels(layer, graph)
    if cin is None:
        return {}
    cls = layer.class_name
    kernel = _ints(cfg.get("kernel_size"))
    rank = 1 if cls.endswith("1D") else 2
    if kernel and len(kernel) == 1 and rank == 2:  # kernel_size=3 means 3x3
        kernel = kernel * 2
    if kernel and len(kernel) != rank:
        return {}
    out: dict[str, tuple[int, ...]] = {}
    if cls in ("Conv2D", "Convolution2D", "Conv1D") and kernel and _int(cfg.get("filters")):
        groups = _int(cfg.get("groups")) or 1
        if cin % groups:
            return {}
        out = {"kernel": (*kernel, cin // groups, int(cfg["filters"])), "bias": (int(cfg["filters"]),)}
    elif cls in ("DepthwiseConv2D", "DepthwiseConv1D") and kernel:
        mult = _int(cfg.get("depth_multiplier")) or 1
        out = {"depthwise_kernel": (*kernel, cin, mult), "bias": (cin * mult,)}
    elif cls in ("SeparableConv2D", "SeparableConv1D") and kernel and _int(cfg.get("filters")):
        mult, filters = _int(cfg.get("depth_multiplier")) or 1, int(cfg["filters"])
        ones = (1,) * len(kernel)
        out = {"depthwise_kernel": (*kernel, cin, mult), "pointwise_kernel": (*ones, cin * mult, filters),
               "bias": (filters,)}
    elif cls == "Dense" and _int(cfg.get("units")):
        out = {"kernel": (cin, int(cfg["units"])), "bias": (int(cfg["units"]),)}
    elif cls == "BatchNormalization" and _last_axis(cfg, layer):
        out = {name: (cin,) for name in ("gamma", "beta", "moving_mean", "moving_variance")}
    return out


def _channels(layer: Layer, graph: ModelGraph) -> int | None:
    """The channels (last axis) of the tensor a single-input layer reads."""
    if len(layer.inbound) != 1 or layer.inbound[0] not in graph:
        return None
    shape = graph[layer.inbound[0]].output_shape
    if not shape or isinstance(shape[0], (list, tuple)):
        return None
    return _int(shape[-1])


def _last_axis(cfg: dict[str, Any], layer: Layer) -> bool:
    axis = cfg.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    rank = len(layer.output_shape or [])
    return isinstance(axis, int) and (axis == -1 or (rank and axis == rank - 1))


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _ints(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, int):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(_int(v) for v in value):
        return None
    return tuple(int(v) for v in value)


def _fmt(shape: Any) -> str:
    dims = tuple(shape)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"
