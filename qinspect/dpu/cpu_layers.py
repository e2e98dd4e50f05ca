"""Keras layers the DPU cannot run, computed in float32 numpy as the CPU would run them.

The Vitis pof2s quantizer quantizes only the layer types in its registry
(``vitis_pof2s_quantize_strategy.json``: Conv2D, DepthwiseConv2D, Conv2DTranspose, Dense, Activation,
ReLU, LeakyReLU, PReLU, Add, Multiply, Concatenate, BatchNormalization, the 2D poolings, UpSampling2D,
ZeroPadding2D, Reshape, Flatten and its own Vitis layers). Every other layer stays float, and the
compiler places it on the CPU: this module is what the emulator runs for them, so no model is
refused. Each function follows the Keras definition (tf_keras and Keras 3 agree on all of them) and
is tested against TensorFlow's own output (tests/test_dpu_cpu_layers.py).

A node of op ``cpu_layer`` carries ``params["layer"]`` (the Keras class, or ``"elementwise"`` for a
TensorFlow function / Keras operation), ``params["config"]``, ``params["call_kwargs"]`` and
``params["reason"]`` (shown beside the layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qinspect.dpu import float_ops, tf_functions
from qinspect.dpu._conv_core import _pair
from qinspect.errors import QInspectError, first_line

F32 = np.float32
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), used by Normalization


def _act(name: Any, cfg: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """A Keras activation by config value; ``hard_sigmoid`` is Keras-generation specific."""
    from qinspect.dpu.layer_map import act_name, keras_activation

    a = keras_activation(act_name(name), cfg)
    return lambda x: float_ops.activation(a, x)


def is_keras3_config(cfg: dict[str, Any]) -> bool:
    """Keras 3 stores a layer's dtype as a DTypePolicy object; tf_keras as a plain string."""
    return isinstance(cfg.get("dtype"), dict)


def _axes(axis: Any, rank: int) -> list[int]:
    items = axis if isinstance(axis, list | tuple) else [axis]
    return sorted(int(a) % rank for a in items)


def _broadcast(v: np.ndarray, shape: tuple[int, ...], axes: list[int]) -> np.ndarray:
    """A per-axes statistic reshaped to broadcast against a tensor of ``shape``."""
    target = [shape[i] if i in axes else 1 for i in range(len(shape))]
    return np.asarray(v, np.float64).reshape(target)


# -------------------------------------------------------------------------------- normalization


def normalization(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``Normalization``: ``(x - mean) / max(sqrt(var), eps)`` (``invert``: the inverse)."""
    axes = _axes(cfg.get("axis", -1) if cfg.get("axis", -1) is not None else [], x.ndim)
    mean = cfg.get("mean") if cfg.get("mean") is not None else w["mean"]
    var = cfg.get("variance") if cfg.get("variance") is not None else w["variance"]
    m, v = _broadcast(mean, x.shape, axes), _broadcast(var, x.shape, axes)
    std = np.maximum(np.sqrt(v), KERAS_EPSILON)
    y = m + x * std if cfg.get("invert") else (x - m) / std
    return y.astype(F32)


def layer_normalization(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``LayerNormalization``: moments over ``axis``, then ``gamma * (x - mean) / sqrt(var + eps) + beta``
    (Keras 3's ``rms_scaling``: ``x / sqrt(mean(x^2) + eps) * gamma``)."""
    axes = _axes(cfg.get("axis", -1), x.ndim)
    eps = float(cfg.get("epsilon", 1e-3))
    x64 = x.astype(np.float64)
    gamma = _broadcast(w["gamma"], x.shape, axes) if "gamma" in w else 1.0
    if cfg.get("rms_scaling"):
        ms = np.mean(np.square(x64), axis=tuple(axes), keepdims=True)
        return (x64 / np.sqrt(ms + eps) * gamma).astype(F32)
    mean = np.mean(x64, axis=tuple(axes), keepdims=True)
    var = np.mean(np.square(x64 - mean), axis=tuple(axes), keepdims=True)
    beta = _broadcast(w["beta"], x.shape, axes) if "beta" in w else 0.0
    return ((x64 - mean) / np.sqrt(var + eps) * gamma + beta).astype(F32)


def group_normalization(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``GroupNormalization`` (channels last): moments over each sample's group of channels and
    every other axis, then ``gamma`` and ``beta`` per channel."""
    groups = int(cfg.get("groups", 32))
    eps = float(cfg.get("epsilon", 1e-3))
    x64 = x.astype(np.float64)
    grouped = x64.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = (*range(1, x.ndim - 1), x.ndim)  # everything but the samples and the group
    mean = np.mean(grouped, axis=axes, keepdims=True)
    var = np.mean(np.square(grouped - mean), axis=axes, keepdims=True)
    y = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    if "gamma" in w:
        y = y * np.asarray(w["gamma"], np.float64)
    if "beta" in w:
        y = y + np.asarray(w["beta"], np.float64)
    return y.astype(F32)


def unit_normalization(x: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``UnitNormalization``: ``x / sqrt(max(sum(x^2), 1e-12))`` over ``axis``."""
    axes = tuple(_axes(cfg.get("axis", -1), x.ndim))
    x64 = x.astype(np.float64)
    return (x64 / np.sqrt(np.maximum(np.sum(np.square(x64), axis=axes, keepdims=True), 1e-12))).astype(F32)


def layer_scale(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """ConvNeXt's ``LayerScale``: ``x * gamma`` per channel."""
    return (x * np.asarray(w["gamma"], F32)).astype(F32)


def custom_scale(xs: list[np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """InceptionResNetV2's ``CustomScaleLayer``: ``x[0] + x[1] * scale``, in float32 as TensorFlow does
    it (the Python float ``scale`` becomes a float32 constant; one product, then one sum)."""
    if len(xs) != 2:
        raise ValueError(f"CustomScaleLayer takes two tensors, got {len(xs)}")
    a, b = np.asarray(xs[0], F32), np.asarray(xs[1], F32)
    return (a + b * F32(cfg["scale"])).astype(F32)


# -------------------------------------------------------------------------------- convolution


def conv1d(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``Conv1D`` (channels last; valid, same or causal padding; strides, dilation), then its
    activation. Computed as a 2D convolution over a height of 1."""
    k = np.asarray(w["kernel"], F32)
    stride = int(_first(cfg.get("strides", 1)))
    dil = int(_first(cfg.get("dilation_rate", 1)))
    padding = str(cfg.get("padding", "valid")).lower()
    if padding == "causal":  # left padding only, so output t sees inputs <= t
        x = np.pad(x, ((0, 0), ((k.shape[0] - 1) * dil, 0), (0, 0)))
        padding = "valid"
    y = float_ops.conv2d(x[:, None], k[None], w.get("bias"), (1, stride), padding, (1, dil))[:, 0]
    return _act(cfg.get("activation"), cfg)(y).astype(F32)


def pooling1d(x: np.ndarray, cfg: dict[str, Any], op: str) -> np.ndarray:
    """Keras ``MaxPooling1D`` / ``AveragePooling1D`` (channels last): the 2D pooling over a height of 1;
    ``same`` border windows average their valid taps, as Keras does."""
    pool = int(_first(cfg.get("pool_size", 2)))
    strides = cfg.get("strides")
    stride = pool if strides is None else int(_first(strides))
    padding = str(cfg.get("padding", "valid")).lower()
    pooled = float_ops.max_pool if op == "max" else float_ops.avg_pool
    return pooled(x[:, None], (1, pool), (1, stride), padding)[:, 0].astype(F32)


def global_pooling1d(x: np.ndarray, cfg: dict[str, Any], op: str) -> np.ndarray:
    """Keras ``GlobalMaxPooling1D`` / ``GlobalAveragePooling1D`` over the steps axis (channels last)."""
    keep = bool(cfg.get("keepdims", False))
    x = np.asarray(x, F32)
    return (np.max(x, axis=1, keepdims=keep) if op == "max" else np.mean(x, axis=1, keepdims=keep, dtype=F32))


def zero_padding1d(x: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``ZeroPadding1D``: zeros before and after the steps."""
    return np.pad(np.asarray(x, F32), ((0, 0), _pair(cfg.get("padding", 1)), (0, 0)))


def cropping1d(x: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``Cropping1D``: steps cut from the start and the end."""
    a, b = _pair(cfg.get("cropping", (1, 1)))
    return np.asarray(x, F32)[:, a:x.shape[1] - b]


def resizing(x: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``Resizing`` to ``(height, width)`` by bilinear or nearest interpolation (TensorFlow's
    ``tf.image.resize``, to the bit)."""
    bilinear = cfg.get("interpolation", "bilinear") == "bilinear"
    resize = float_ops.resize_bilinear if bilinear else float_ops.resize_nearest
    return resize(x, int(cfg["height"]), int(cfg["width"]))


def conv_groups(cfg: dict[str, Any]) -> int:
    """A convolution config's ``groups`` (1 when absent or null, as Keras reads it)."""
    return int(cfg.get("groups", 1) or 1)


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, list | tuple) else v


# -------------------------------------------------------------------------------- recurrent


def _time_loop(x: np.ndarray, cfg: dict[str, Any], step: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Run ``step`` over time (axis 1, or 0 for tf_keras ``time_major``); Keras' output order."""
    if cfg.get("time_major"):
        x = np.swapaxes(x, 0, 1)
    order = range(x.shape[1] - 1, -1, -1) if cfg.get("go_backwards") else range(x.shape[1])
    outs = [step(x[:, t].astype(np.float64)) for t in order]
    y = np.stack(outs, axis=1) if cfg.get("return_sequences") else outs[-1]
    if cfg.get("return_sequences") and cfg.get("time_major"):
        y = np.swapaxes(y, 0, 1)
    return y.astype(F32)


def lstm(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``LSTM`` from a zero state: gates i, f, c, o in the kernel's column order."""
    units = int(cfg["units"])
    act, ract = _act(cfg.get("activation", "tanh"), cfg), _act(cfg.get("recurrent_activation", "sigmoid"), cfg)
    k, r = np.asarray(w["kernel"], np.float64), np.asarray(w["recurrent_kernel"], np.float64)
    b = np.asarray(w["bias"], np.float64) if "bias" in w else np.zeros(4 * units)
    h = np.zeros((x.shape[0] if not cfg.get("time_major") else x.shape[1], units))
    c = np.zeros_like(h)

    def step(xt: np.ndarray) -> np.ndarray:
        nonlocal h, c
        z = xt @ k + h @ r + b
        i, f, g, o = (z[:, j * units:(j + 1) * units] for j in range(4))
        c = ract(f) * c + ract(i) * act(g)
        h = ract(o) * act(c)
        return h

    return _time_loop(x, cfg, step)


def gru(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``GRU`` from a zero state: gates z, r, h; ``reset_after`` (the TF2 default) applies the
    reset gate after the recurrent matmul, with separate input and recurrent biases."""
    units = int(cfg["units"])
    act, ract = _act(cfg.get("activation", "tanh"), cfg), _act(cfg.get("recurrent_activation", "sigmoid"), cfg)
    k, r = np.asarray(w["kernel"], np.float64), np.asarray(w["recurrent_kernel"], np.float64)
    reset_after = bool(cfg.get("reset_after", True))
    b = np.asarray(w["bias"], np.float64) if "bias" in w else np.zeros((2, 3 * units) if reset_after else 3 * units)
    b_in, b_rec = (b[0], b[1]) if reset_after else (b, np.zeros(3 * units))
    h = np.zeros((x.shape[0] if not cfg.get("time_major") else x.shape[1], units))

    def split(m: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(m[:, j * units:(j + 1) * units] for j in range(3))

    def step(xt: np.ndarray) -> np.ndarray:
        nonlocal h
        xz, xr, xh = split(xt @ k + b_in)
        if reset_after:
            hz, hr, hh = split(h @ r + b_rec)
            z, rr = ract(xz + hz), ract(xr + hr)
            cand = act(xh + rr * hh)
        else:
            hz, hr, _ = split(h @ r)
            z, rr = ract(xz + hz), ract(xr + hr)
            cand = act(xh + (rr * h) @ r[:, 2 * units:])
        h = z * h + (1 - z) * cand
        return h

    return _time_loop(x, cfg, step)


def simple_rnn(x: np.ndarray, w: dict[str, np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``SimpleRNN`` from a zero state: ``h = act(x W + h U + b)``."""
    units = int(cfg["units"])
    act = _act(cfg.get("activation", "tanh"), cfg)
    k, r = np.asarray(w["kernel"], np.float64), np.asarray(w["recurrent_kernel"], np.float64)
    b = np.asarray(w["bias"], np.float64) if "bias" in w else np.zeros(units)
    h = np.zeros((x.shape[0] if not cfg.get("time_major") else x.shape[1], units))

    def step(xt: np.ndarray) -> np.ndarray:
        nonlocal h
        h = act(xt @ k + h @ r + b).astype(np.float64)
        return h

    return _time_loop(x, cfg, step)


# -------------------------------------------------------------------------------- elementwise

_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs, "absolute": np.abs, "negative": np.negative, "neg": np.negative, "square": np.square,
    "sqrt": np.sqrt, "rsqrt": lambda x: 1 / np.sqrt(x), "exp": np.exp, "log": np.log, "sign": np.sign,
    "floor": np.floor, "ceil": np.ceil, "round": np.rint, "reciprocal": lambda x: 1 / x, "sin": np.sin,
    "cos": np.cos, "erf": float_ops.erf,
    "identity": lambda x: x, "log1p": np.log1p, "expm1": np.expm1,
}  # fmt: skip
_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "subtract": np.subtract, "sub": np.subtract, "multiply": np.multiply, "mul": np.multiply,
    "truediv": np.divide, "divide": np.divide, "true_divide": np.divide, "maximum": np.maximum,
    "minimum": np.minimum, "pow": np.power, "power": np.power, "squared_difference": lambda a, b: np.square(a - b),
}  # fmt: skip


def elementwise_name(function: str) -> str | None:
    """``"math.abs"`` / ``"numpy.absolute"`` / ``"__operators__.sub"`` -> the key of a known function."""
    fn = str(function).rsplit(".", 1)[-1]
    if fn in _UNARY or fn in _BINARY or fn in float_ops.ACTIVATIONS:
        return fn
    return None


def _operands(xs: list[np.ndarray], call_kwargs: dict[str, Any]) -> list[Any]:
    """Tensors and constants in call order: Keras 3 numbers constants by argument position
    (``arg1``), tf_keras's TFOpLambda passes the second operand as ``y``."""
    consts = {int(k[3:]): v for k, v in call_kwargs.items() if k.startswith("arg") and k[3:].isdigit()
              and isinstance(v, int | float)}
    if "y" in call_kwargs and isinstance(call_kwargs["y"], int | float):
        consts.setdefault(len(xs), call_kwargs["y"])
    out: list[Any] = []
    tensors = iter(xs)
    for i in range(len(xs) + len(consts)):
        out.append(F32(consts[i]) if i in consts else next(tensors))
    return out


def activation_arguments(fn: str, call_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments an activation operation was called with (``alpha``, ``axis``, ...: not its
    operands ``argN`` / ``y``)."""
    return {k: v for k, v in call_kwargs.items() if not (k == "y" or (k.startswith("arg") and k[3:].isdigit()))}


def elementwise(xs: list[np.ndarray], cfg: dict[str, Any], call_kwargs: dict[str, Any]) -> np.ndarray:
    """A TensorFlow function (TFOpLambda) or Keras 3 operation applied elementwise."""
    fn = elementwise_name(cfg.get("function", ""))
    ops = _operands(xs, call_kwargs)
    if fn in _BINARY and len(ops) == 2:
        return np.asarray(_BINARY[fn](ops[0], ops[1]), F32)
    if fn in _UNARY and len(ops) == 1:
        return np.asarray(_UNARY[fn](ops[0]), F32)
    if fn in float_ops.ACTIVATIONS and len(xs) == 1:
        return np.asarray(float_ops.activation_with(fn, xs[0], activation_arguments(fn, call_kwargs)), F32)
    raise ValueError(f"function {cfg.get('function')!r} with {len(xs)} tensor(s) is not emulated")


# -------------------------------------------------------------------------------- dispatch

_LAYERS: dict[str, Callable[[np.ndarray, dict[str, np.ndarray], dict[str, Any]], np.ndarray]] = {
    "Normalization": normalization,
    "LayerNormalization": layer_normalization,
    "LayerScale": layer_scale,
    "StochasticDepth": lambda x, w, cfg: x,  # identity at inference
    "Conv1D": conv1d,
    "Convolution1D": conv1d,
    "MaxPooling1D": lambda x, w, cfg: pooling1d(x, cfg, "max"),
    "AveragePooling1D": lambda x, w, cfg: pooling1d(x, cfg, "avg"),
    "GlobalMaxPooling1D": lambda x, w, cfg: global_pooling1d(x, cfg, "max"),
    "GlobalAveragePooling1D": lambda x, w, cfg: global_pooling1d(x, cfg, "avg"),
    "UpSampling1D": lambda x, w, cfg: np.repeat(np.asarray(x, F32), int(cfg.get("size", 2)), axis=1),
    "ZeroPadding1D": lambda x, w, cfg: zero_padding1d(x, cfg),
    "Cropping1D": lambda x, w, cfg: cropping1d(x, cfg),
    "Resizing": lambda x, w, cfg: resizing(x, cfg),
    "GroupNormalization": group_normalization,
    "UnitNormalization": lambda x, w, cfg: unit_normalization(x, cfg),
    "ELU": lambda x, w, cfg: np.where(x > 0, x, F32(cfg.get("alpha", 1.0)) * np.expm1(x)).astype(F32),
    "ThresholdedReLU": lambda x, w, cfg: np.where(x > F32(cfg.get("theta", 1.0)), x, F32(0)).astype(F32),
    "RepeatVector": lambda x, w, cfg: np.repeat(x[:, None], int(cfg["n"]), axis=1).astype(F32),
    "LSTM": lstm,
    "GRU": gru,
    "SimpleRNN": simple_rnn,
}


_POOLING_1D = ("MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D", "GlobalAveragePooling1D")

def _dot_axes(cfg: dict[str, Any]) -> tuple[int, int] | None:
    axes = cfg.get("axes")
    pair = [axes, axes] if isinstance(axes, int) else axes
    if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(a, int) for a in pair)):
        return None
    return int(pair[0]), int(pair[1])


def dot(xs: list[np.ndarray], cfg: dict[str, Any]) -> np.ndarray:
    """Keras ``Dot``: per sample, the first input's axis ``axes[0]`` contracted with the second's
    ``axes[1]`` (after L2-normalising both along them with ``normalize``, a cosine similarity); a
    contraction that leaves nothing per sample gives shape (samples, 1), as Keras' ``batch_dot``."""
    if len(xs) != 2:
        raise ValueError(f"Dot takes two tensors, got {len(xs)}")
    a, b = (np.asarray(x, np.float64) for x in xs)
    axes = _dot_axes(cfg)
    if axes is None:
        raise ValueError(f"axes {cfg.get('axes')!r}")
    ia, ib = axes[0] % a.ndim, axes[1] % b.ndim
    if 0 in (ia, ib):
        raise ValueError("axes 0 is the samples' axis")
    if cfg.get("normalize"):
        a = a / np.sqrt(np.maximum(np.sum(a * a, axis=ia, keepdims=True), 1e-12))
        b = b / np.sqrt(np.maximum(np.sum(b * b, axis=ib, keepdims=True), 1e-12))
    out = np.stack([np.tensordot(s, t, axes=(ia - 1, ib - 1)) for s, t in zip(a, b, strict=True)])
    return (out.reshape(len(out), 1) if out.ndim == 1 else out).astype(F32)


# Layers that take every input tensor (a list), not one.
_MULTI_INPUT_LAYERS: dict[str, Callable[[list[np.ndarray], dict[str, Any]], np.ndarray]] = {
    "CustomScaleLayer": custom_scale,
    "Dot": dot,
}


def supports(class_name: str, cfg: dict[str, Any]) -> bool:
    """True when this module computes the layer (in the form the config asks for)."""
    if class_name == "CustomScaleLayer":
        scale = cfg.get("scale")
        return isinstance(scale, int | float) and not isinstance(scale, bool)
    if class_name == "Dot":
        axes = _dot_axes(cfg)
        return axes is not None and 0 not in axes
    if class_name not in _LAYERS:
        return False
    if class_name in ("Conv1D", "Convolution1D"):
        return conv_groups(cfg) == 1 and cfg.get("data_format", "channels_last") == "channels_last"
    if class_name in _POOLING_1D:  # channels_first would pool over the channels' axis
        return cfg.get("data_format", "channels_last") in ("channels_last", None)
    if class_name == "GroupNormalization":  # channels last, whole groups
        return cfg.get("axis", -1) in (-1, None) and isinstance(cfg.get("groups", 32), int)
    if class_name == "Resizing":  # the plain resize; cropping or padding to the aspect ratio is not emulated
        return (all(isinstance(cfg.get(k), int) and cfg[k] > 0 for k in ("height", "width"))
                and cfg.get("interpolation", "bilinear") in ("bilinear", "nearest") and not cfg.get("antialias")
                and not cfg.get("crop_to_aspect_ratio") and not cfg.get("pad_to_aspect_ratio")
                and cfg.get("data_format", "channels_last") in ("channels_last", None))
    if class_name in ("LSTM", "GRU", "SimpleRNN"):
        # one output tensor, from a zero state; stateful layers carry state between batches
        return not cfg.get("return_state") and not cfg.get("stateful")
    return True


def cpu_reason(class_name: str) -> str:
    """Why the layer runs in float on the CPU (shown beside its numbers)."""
    if class_name == "elementwise":
        return "TensorFlow function / Keras operation with no DPU operator: float on the CPU"
    if class_name == "CustomScaleLayer":
        # The file holds only the class name and its config; the computation is keras.applications'.
        return ("CustomScaleLayer is not in the Vitis pof2s quantizer's layer registry: it stays float, on "
                "the CPU; computed as keras.applications' InceptionResNetV2 layer, x[0] + x[1] * scale "
                "(assumed from its name and config)")
    return f"{class_name} is not in the Vitis pof2s quantizer's layer registry: it stays float, on the CPU"


def run(params: dict[str, Any], xs: list[np.ndarray], weights: dict[str, np.ndarray]) -> np.ndarray:
    """Compute a ``cpu_layer`` node in float32 from its inputs' float values and float weights."""
    layer, cfg = params["layer"], params.get("config") or {}
    if layer == "tf_function":  # its own one-line errors
        return tf_functions.run(str(cfg.get("function", "")), [np.asarray(x, F32) for x in xs],
                                params.get("call_kwargs") or {})
    try:
        if layer == "elementwise":
            return elementwise(xs, cfg, params.get("call_kwargs") or {})
        if layer in _MULTI_INPUT_LAYERS:
            return _MULTI_INPUT_LAYERS[layer](xs, cfg)
        return _LAYERS[layer](np.asarray(xs[0], F32), weights, cfg)
    except KeyError as exc:
        if exc.args and exc.args[0] not in weights and isinstance(exc.args[0], str) and exc.args[0] not in cfg:
            # a weight the layer needs is not among those stored for it: say so, not "does not apply"
            raise QInspectError(f"{layer} needs a weight {exc.args[0]!r}, but the file stores "
                                f"{', '.join(map(repr, weights)) or 'none'} for it") from None
        raise QInspectError(f"{layer} with config {cfg} does not apply to inputs of shape "
                            f"{', '.join(str(tuple(np.shape(x))) for x in xs)} ({first_line(exc)})") from None
    except (ValueError, IndexError, TypeError, ZeroDivisionError) as exc:
        # a config that does not fit the data or the weights (a damaged or hand-edited file)
        raise QInspectError(f"{layer} with config {cfg} does not apply to inputs of shape "
                            f"{', '.join(str(tuple(np.shape(x))) for x in xs)} ({first_line(exc)})") from None
