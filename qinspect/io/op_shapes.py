"""Output shapes of the TensorFlow functions (``TFOpLambda`` / ``SlicingOpLambda``) and Keras 3
operations that move, cut or reduce a tensor: concat, reshape, transpose, pad, reductions, resize,
depth_to_space / space_to_depth, expand_dims, squeeze and slicing.

Each function takes the TensorFlow call's arguments (a Keras 3 operation's are translated first by
:func:`keras3_arguments`) and returns ``None`` for anything it does not understand: a missing shape is
better than a wrong one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Shape = list[int | None]


def _axes(axis: Any, rank: int) -> list[int] | None:
    if axis is None:
        return list(range(rank))
    items = axis if isinstance(axis, list | tuple) else [axis]
    return sorted(int(a) % rank for a in items)


def concat_shape(inputs: list[Shape], axis: int) -> Shape | None:
    """Shapes joined along ``axis`` (Keras ``Concatenate``, ``tf.concat``); an unknown size elsewhere is
    taken from another input that knows it."""
    rank = len(inputs[0])
    if any(len(s) != rank for s in inputs):
        return None
    axis = int(axis) % rank
    out = list(inputs[0])
    sizes = [s[axis] for s in inputs]
    out[axis] = None if any(v is None for v in sizes) else sum(v for v in sizes if v is not None)
    for i in range(rank):
        if i != axis and out[i] is None:
            out[i] = next((s[i] for s in inputs if s[i] is not None), None)
    return out


def reshape_shape(shape: Shape, target: list[int | None]) -> Shape:
    """``shape`` (samples first) reshaped to ``target`` (without the samples' axis; Keras ``Reshape``):
    one -1 (or None) in it is inferred when every size is known."""
    inner: list[int | None] = [-1 if d is None else int(d) for d in target]
    rest = shape[1:]
    if -1 in inner:
        known = math.prod(d for d in inner if d is not None and d != -1)
        if any(d is None for d in rest) or known == 0:
            return [shape[0], *[None if d == -1 else d for d in inner]]
        inner[inner.index(-1)] = math.prod(d for d in rest if d is not None) // known
    return [shape[0], *inner]


def _concat(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    return concat_shape(inputs, kw["axis"])


def _reshape(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    if kw["shape"][0] not in (-1, None):  # a fixed batch size: leave it unknown rather than guess
        return None
    return reshape_shape(inputs[0], kw["shape"][1:])


def _transpose(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    return [inputs[0][int(a)] for a in kw["perm"]]


def _pad(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    return [None if d is None else d + int(a) + int(b) for d, (a, b) in zip(inputs[0], kw["paddings"], strict=True)]


def _reduce(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    shape = inputs[0]
    axes = _axes(kw.get("axis"), len(shape))
    if axes is None or 0 in axes:
        return None
    if kw.get("keepdims"):
        return [1 if i in axes else d for i, d in enumerate(shape)]
    return [d for i, d in enumerate(shape) if i not in axes]


def _resize(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    shape = inputs[0]
    height, width = (int(s) for s in kw["size"])
    return [shape[0], height, width, shape[-1]] if len(shape) == 4 else None


def _depth_to_space(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    n, h, w, c = inputs[0]
    b = int(kw["block_size"])
    return [n, None if h is None else h * b, None if w is None else w * b, None if c is None else c // (b * b)]


def _space_to_depth(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    n, h, w, c = inputs[0]
    b = int(kw["block_size"])
    return [n, None if h is None else h // b, None if w is None else w // b, None if c is None else c * b * b]


def _expand_dims(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    shape = list(inputs[0])
    axis = int(kw["axis"])
    shape.insert(axis if axis >= 0 else len(shape) + 1 + axis, 1)
    return shape


def _squeeze(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    shape = inputs[0]
    axes = _axes(kw.get("axis"), len(shape)) if kw.get("axis") is not None else None
    if axes is None:
        return None
    return [d for i, d in enumerate(shape) if i not in axes]


def _getitem(inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    spec = kw["slice_spec"]
    spec = spec if isinstance(spec, list) else [spec]
    shape = inputs[0]
    out: Shape = []
    for i, d in enumerate(shape):
        if i >= len(spec):
            out.append(d)
            continue
        e = spec[i]
        if isinstance(e, int) and not isinstance(e, bool):
            continue  # an index drops the axis
        if not isinstance(e, dict):
            return None
        if d is None:
            out.append(None)
            continue
        out.append(len(range(d)[slice(e.get("start"), e.get("stop"), e.get("step"))]))
    return out


_FUNCTIONS: dict[str, Callable[[list[Shape], dict[str, Any]], Shape | None]] = {
    "concat": _concat,
    "reshape": _reshape,
    "transpose": _transpose,
    "pad": _pad,
    "reduce_mean": _reduce,
    "reduce_max": _reduce,
    "reduce_min": _reduce,
    "reduce_sum": _reduce,
    "resize": _resize,
    "depth_to_space": _depth_to_space,
    "space_to_depth": _space_to_depth,
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "getitem": _getitem,
    "clip_by_value": lambda inputs, kw: list(inputs[0]),
}

_KERAS3 = {
    "numpy.concatenate": ("concat", lambda c, k: {"axis": c.get("axis", 0)}),
    "numpy.reshape": ("reshape", lambda c, k: {"shape": c.get("newshape")}),
    "numpy.transpose": ("transpose", lambda c, k: {"perm": c.get("axes")}),
    "numpy.mean": ("reduce_mean", lambda c, k: {"axis": c.get("axis"), "keepdims": c.get("keepdims", False)}),
    "numpy.max": ("reduce_max", lambda c, k: {"axis": c.get("axis"), "keepdims": c.get("keepdims", False)}),
    "numpy.min": ("reduce_min", lambda c, k: {"axis": c.get("axis"), "keepdims": c.get("keepdims", False)}),
    "numpy.sum": ("reduce_sum", lambda c, k: {"axis": c.get("axis"), "keepdims": c.get("keepdims", False)}),
    "numpy.expand_dims": ("expand_dims", lambda c, k: {"axis": c.get("axis")}),
    "numpy.squeeze": ("squeeze", lambda c, k: {"axis": c.get("axis")}),
    "numpy.get_item": ("getitem", lambda c, k: {"slice_spec": _keras_slices(k.get("arg1"))}),
    "numpy.clip": ("clip_by_value", lambda c, k: {"clip_value_min": c.get("x_min"), "clip_value_max": c.get("x_max")}),
    "numpy.pad": ("pad", lambda c, k: {"paddings": c.get("pad_width"), "mode": str(c.get("mode", "constant")).upper(),
                                       "constant_values": c.get("constant_values", 0)}),
    "image.resize": ("resize", lambda c, k: {
        "size": c.get("size"), "method": c.get("interpolation", "bilinear"), "antialias": c.get("antialias"),
        "preserve_aspect_ratio": bool(c.get("crop_to_aspect_ratio") or c.get("pad_to_aspect_ratio")),
        "data_format": _nhwc(c)}),
    "nn.depth_to_space": ("depth_to_space", lambda c, k: {"block_size": c.get("block_size"),
                                                          "data_format": _nhwc(c)}),
    "nn.space_to_depth": ("space_to_depth", lambda c, k: {"block_size": c.get("block_size"),
                                                          "data_format": _nhwc(c)}),
}


def _nhwc(config: dict[str, Any]) -> str:
    """Keras 3's data_format (None: the default, channels last) in TensorFlow's words."""
    return "NCHW" if config.get("data_format") == "channels_first" else "NHWC"


def _keras_slices(spec: Any) -> Any:
    def one(e: Any) -> Any:
        return dict(e.get("config") or {}) if isinstance(e, dict) and e.get("class_name") == "__slice__" else e

    return [one(e) for e in spec] if isinstance(spec, list) else one(spec)


def keras3_arguments(function: str, config: dict[str, Any],
                     call_kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A Keras 3 operation (``numpy.concatenate``, its config and constant arguments) as the TensorFlow
    function name and keyword arguments the rules here (and the emulator's) take; None if unknown."""
    known = _KERAS3.get(str(function))
    if known is None:
        return None
    name, args = known
    return name, args(config, call_kwargs)


def function_shape(function: str, inputs: list[Shape], kwargs: dict[str, Any]) -> Shape | None:
    """The output shape of one TensorFlow function call (``"compat.v1.transpose"``, ...), or None."""
    rule = _FUNCTIONS.get(str(function).rsplit(".", 1)[-1])
    if rule is None or not inputs:
        return None
    try:
        return rule(inputs, kwargs)
    except (KeyError, ValueError, TypeError, IndexError, ZeroDivisionError):
        return None
