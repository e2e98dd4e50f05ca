"""TensorFlow functions a Keras model calls inline (``TFOpLambda`` / ``SlicingOpLambda`` layers) that
move, cut or reduce a tensor rather than apply a function to each value: ``tf.concat``,
``tf.reshape``, ``tf.transpose``, ``tf.pad``, ``tf.math.reduce_*``, ``tf.clip_by_value``,
``tf.image.resize``, ``tf.nn.depth_to_space`` / ``space_to_depth``, ``tf.expand_dims``, ``tf.squeeze``
and slicing (``x[:, 2:10]``).

The Vitis quantizer leaves these layers float (they are not in its layer registry, and its
``convert_tf_op_to_keras`` pass only rewrites TF1 ``ConcatV2`` ops), so the emulator runs them in float32
on the CPU, each as TensorFlow computes it (tests/test_dpu_tf_functions.py checks every one against
TensorFlow). Calls this module cannot reproduce (the batch axis moved or reduced, an unknown mode) are
not claimed: the capture's recorded output stands in for them, as for any layer with no implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qinspect.dpu import float_ops
from qinspect.errors import QInspectError, first_line

F32 = np.float32


def _name(function: str) -> str:
    """``"compat.v1.transpose"`` -> ``"transpose"``; ``"math.reduce_mean"`` -> ``"reduce_mean"``."""
    return str(function).rsplit(".", 1)[-1]


def _axes(axis: Any) -> list[int] | None:
    if axis is None or isinstance(axis, bool):
        return None
    items = axis if isinstance(axis, list | tuple) else [axis]
    return [int(a) for a in items] if all(isinstance(a, int) for a in items) else None


def _keeps_batch(axes: list[int] | None) -> bool:
    """True when no axis given is 0 (a negative one is checked against the data's rank when run)."""
    return axes is not None and all(a != 0 for a in axes)


# --------------------------------------------------------------------------------------- the functions

_Function = Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]
_FUNCTIONS: dict[str, _Function] = {}  # function name (the last part of TensorFlow's) -> computation


def _runs(*names: str) -> Callable[[_Function], _Function]:
    """Register the decorated computation for these TensorFlow function names."""
    def register(fn: _Function) -> _Function:
        for name in names:
            _FUNCTIONS[name] = fn
        return fn

    return register


def _batch_axis_untouched(axes: Any, rank: int, what: str) -> tuple[int, ...]:
    """``axes`` as non-negative ints; one clear error when one of them is the samples' axis (a negative
    axis such as -4 on a 4D tensor is only known to be it once the data's rank is)."""
    resolved = tuple(int(a) % rank for a in (axes if isinstance(axes, list | tuple) else [axes]))
    if 0 in resolved:
        raise QInspectError(f"{what} along axis {axes} works across samples (the batch axis): not emulated")
    return resolved


@_runs("concat")
def _concat(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    (axis,) = _batch_axis_untouched(kw["axis"], np.ndim(xs[0]), "tf.concat")
    return np.concatenate([np.asarray(x, F32) for x in xs], axis=axis)


@_runs("reshape")
def _reshape(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    x = np.asarray(xs[0], F32)
    y = np.reshape(x, [-1 if d is None else int(d) for d in kw["shape"]])
    if len(y) != len(x):  # tf.reshape(x, [-1, C]) folds the samples together: no per-sample figure holds
        raise QInspectError(f"tf.reshape to {kw['shape']} moves values across samples (the batch axis): not "
                            "emulated")
    return y


@_runs("transpose")
def _transpose(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    return np.transpose(np.asarray(xs[0], F32), [int(a) for a in kw["perm"]])


_PAD_MODES = {"CONSTANT": "constant", "REFLECT": "reflect", "SYMMETRIC": "symmetric"}


@_runs("pad")
def _pad(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    mode = _PAD_MODES[str(kw.get("mode", "CONSTANT")).upper()]
    widths = [(int(a), int(b)) for a, b in kw["paddings"]]
    if mode == "constant":
        return np.pad(np.asarray(xs[0], F32), widths, constant_values=F32(kw.get("constant_values", 0) or 0))
    return np.pad(np.asarray(xs[0], F32), widths, mode=mode)


def _reduce(op: str) -> Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]:
    fn = {"reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min, "reduce_sum": np.sum}[op]

    def run(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
        x = np.asarray(xs[0], F32)
        axes = _batch_axis_untouched(kw.get("axis"), x.ndim, f"tf.math.{op}")
        return np.asarray(fn(x, axis=axes, keepdims=bool(kw.get("keepdims", False))), F32)

    return run


for _op in ("reduce_mean", "reduce_max", "reduce_min", "reduce_sum"):
    _FUNCTIONS[_op] = _reduce(_op)


@_runs("clip_by_value")
def _clip(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    return np.clip(np.asarray(xs[0], F32), F32(kw["clip_value_min"]), F32(kw["clip_value_max"]))


@_runs("resize")
def _resize(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    height, width = (int(s) for s in kw["size"])
    method = str(kw.get("method", "bilinear")).lower()
    resize = float_ops.resize_bilinear if method == "bilinear" else float_ops.resize_nearest
    return resize(xs[0], height, width)


@_runs("depth_to_space")
def _depth_to_space(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    x = np.asarray(xs[0], F32)
    n, h, w, c = x.shape
    b = int(kw["block_size"])
    return x.reshape(n, h, w, b, b, c // (b * b)).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * b, w * b, c // (b * b))


@_runs("space_to_depth")
def _space_to_depth(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    x = np.asarray(xs[0], F32)
    n, h, w, c = x.shape
    b = int(kw["block_size"])
    return x.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // b, w // b, b * b * c)


@_runs("expand_dims")
def _expand_dims(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    return np.expand_dims(np.asarray(xs[0], F32), int(kw["axis"]))


@_runs("squeeze")
def _squeeze(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    x = np.asarray(xs[0], F32)
    return np.squeeze(x, axis=_batch_axis_untouched(kw.get("axis"), x.ndim, "tf.squeeze"))


def _slice_of(entry: Any) -> slice | int:
    if isinstance(entry, dict):
        return slice(entry.get("start"), entry.get("stop"), entry.get("step"))
    return int(entry)


@_runs("getitem")
def _getitem(xs: list[np.ndarray], kw: dict[str, Any]) -> np.ndarray:
    spec = kw["slice_spec"]
    spec = spec if isinstance(spec, list) else [spec]
    return np.asarray(xs[0], F32)[tuple(_slice_of(e) for e in spec)]




# ---------------------------------------------------------------------------------- what is claimed


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _slice_entry_ok(e: Any) -> bool:
    if isinstance(e, dict):
        return all(e.get(k) is None or (isinstance(e.get(k), int) and not isinstance(e.get(k), bool))
                   for k in ("start", "stop", "step")) and e.get("step") != 0
    return isinstance(e, int) and not isinstance(e, bool)


def _claimable(fn: str, kw: dict[str, Any], n_inputs: int) -> bool:
    """Whether the call is one this module reproduces (every argument it needs present, the batch axis
    left where it is)."""
    if fn == "concat":
        return n_inputs >= 1 and isinstance(kw.get("axis"), int) and _keeps_batch([kw["axis"]])
    if n_inputs != 1:
        return False
    if fn == "reshape":
        shape = kw.get("shape")
        return (isinstance(shape, list) and len(shape) >= 1 and shape[0] in (-1, None)
                and all(d is None or isinstance(d, int) for d in shape) and sum(d in (-1, None) for d in shape) == 1
                and all(d is None or d >= -1 for d in shape))
    if fn == "transpose":
        perm = kw.get("perm")
        return (isinstance(perm, list) and perm[:1] == [0] and not kw.get("conjugate")
                and sorted(p for p in perm if isinstance(p, int)) == list(range(len(perm))))
    if fn == "pad":
        pads = kw.get("paddings")
        return (isinstance(pads, list) and len(pads) >= 1
                and all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) and v >= 0 for v in p)
                        for p in pads) and list(pads[0]) == [0, 0]
                and str(kw.get("mode", "CONSTANT")).upper() in _PAD_MODES
                and (kw.get("constant_values") is None or _is_number(kw.get("constant_values"))))
    if fn.startswith("reduce_"):
        return _keeps_batch(_axes(kw.get("axis")))
    if fn == "clip_by_value":
        return _is_number(kw.get("clip_value_min")) and _is_number(kw.get("clip_value_max"))
    if fn == "resize":
        size = kw.get("size")
        return (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)
                and str(kw.get("method", "bilinear")).lower() in ("bilinear", "nearest")
                and not kw.get("antialias") and not kw.get("preserve_aspect_ratio")
                and kw.get("data_format", "NHWC") == "NHWC")
    if fn in ("depth_to_space", "space_to_depth"):
        return (isinstance(kw.get("block_size"), int) and kw["block_size"] >= 1
                and kw.get("data_format", "NHWC") == "NHWC")
    if fn == "expand_dims":
        return isinstance(kw.get("axis"), int) and kw["axis"] != 0
    if fn == "squeeze":
        return _keeps_batch(_axes(kw.get("axis")))
    if fn == "getitem":
        spec = kw.get("slice_spec")
        spec = spec if isinstance(spec, list) else [spec]
        first = spec[0] if spec else None
        return (bool(spec) and isinstance(first, dict) and all(first.get(k) is None for k in ("start", "stop", "step"))
                and all(_slice_entry_ok(e) for e in spec))
    return False


def supports(function: str, call_kwargs: dict[str, Any], n_inputs: int) -> bool:
    """True when :func:`run` reproduces this TensorFlow function call."""
    fn = _name(function)
    return fn in _FUNCTIONS and _claimable(fn, call_kwargs, n_inputs)


def run(function: str, xs: list[np.ndarray], call_kwargs: dict[str, Any]) -> np.ndarray:
    """The call's float32 output, as TensorFlow computes it. Arguments that do not fit the data (a
    file's paddings for another rank, a block size that does not divide the image) are one clear error."""
    try:
        return np.asarray(_FUNCTIONS[_name(function)](xs, call_kwargs), F32)
    except (ValueError, IndexError, TypeError, KeyError) as exc:
        shapes = ", ".join(str(tuple(np.shape(x))) for x in xs)
        raise QInspectError(f"tf.{function} with {call_kwargs} does not apply to inputs of shape {shapes} "
                            f"({first_line(exc)})") from None
