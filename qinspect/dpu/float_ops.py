"""float32 reference kernels with TensorFlow / Keras semantics (numpy only).

Used for the quantizer's fake-quant simulation during calibration (dequantized values through float
layers) and for layers that run on the CPU. Layouts are Keras: NHWC, HWIO, depthwise
``(kh, kw, cin, mult)``, dense ``(in, out)``, transposed conv ``(kh, kw, cout, cin)``. Padding is
TensorFlow's ('same' pads ``total // 2`` before). Results agree with TensorFlow to float32 rounding
(summation order differs), not bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qinspect.dpu._conv_core import _pair, conv_acc, depthwise_acc, pad_nhwc, transpose_1d, windows_reduce

__all__ = [
    "conv2d",
    "depthwise_conv2d",
    "conv2d_transpose",
    "dense",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "upsample_nearest",
    "zero_pad",
    "batchnorm",
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "hard_sigmoid_keras",
    "hard_sigmoid_tf_keras",
    "hard_silu",
    "hard_sigmoid_dpu",
    "softmax",
    "tanh",
    "swish",
    "hard_swish_dpu",
    "elu",
    "selu",
    "gelu",
    "erf",
    "softplus",
    "ACTIVATIONS",
    "activation",
]

F32 = np.float32


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    # in place: every caller passes the float32 array its kernel just made (same values as y + b)
    if b is not None:
        y += _f32(b)
    return y


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    strides: tuple[int, int] | int = (1, 1),
    padding: str = "valid",
    dilation: tuple[int, int] | int = (1, 1),
) -> np.ndarray:
    """Conv2D (NHWC, HWIO) plus optional bias, float32."""
    y = conv_acc(_f32(x), _f32(w), _pair(strides), padding, _pair(dilation), exact=False)
    return _bias(y.astype(F32, copy=False), b)


def depthwise_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    strides: tuple[int, int] | int = (1, 1),
    padding: str = "valid",
    dilation: tuple[int, int] | int = (1, 1),
) -> np.ndarray:
    """DepthwiseConv2D, kernel (kh, kw, cin, mult), output channel c * mult + m."""
    y = depthwise_acc(_f32(x), _f32(w), _pair(strides), padding, _pair(dilation))
    return _bias(y.astype(F32, copy=False), b)


def conv2d_transpose(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    strides: tuple[int, int] | int = (1, 1),
    padding: str = "valid",
    dilation: tuple[int, int] | int = (1, 1),
    output_padding: tuple[int, int] | int | None = None,
) -> np.ndarray:
    """Conv2DTranspose, kernel (kh, kw, cout, cin); output size and placement as Keras / TensorFlow
    (:func:`qinspect.dpu._conv_core.transpose_1d`), with dilation and output_padding."""
    sh, sw = _pair(strides)
    dh, dw = _pair(dilation)
    oph, opw = (None, None) if output_padding is None else _pair(output_padding)
    x = _f32(x)
    w = _f32(w)
    n, h, wd, cin = x.shape
    kh, kw, cout, _ = w.shape
    oh, ct = transpose_1d(h, kh, sh, dh, padding, oph)
    ow, cl = transpose_1d(wd, kw, sw, dw, padding, opw)
    full = np.zeros((n, max((h - 1) * sh + (kh - 1) * dh + 1, ct + oh),
                     max((wd - 1) * sw + (kw - 1) * dw + 1, cl + ow), cout), F32)
    xf = x.reshape(-1, cin)
    for a in range(kh):
        for c in range(kw):
            contrib = (xf @ w[a, c].T).reshape(n, h, wd, cout)
            full[:, a * dh : a * dh + (h - 1) * sh + 1 : sh, c * dw : c * dw + (wd - 1) * sw + 1 : sw, :] += contrib
    return _bias(full[:, ct : ct + oh, cl : cl + ow, :], b)


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Dense: ``x @ w + b`` over the last axis."""
    return _bias(_f32(x) @ _f32(w), b)


def _pool(x: np.ndarray, pool, strides, padding: str, op: str) -> np.ndarray:
    kh, kw = _pair(pool)
    sh, sw = (kh, kw) if strides is None else _pair(strides)
    fill = -np.inf if op == "max" else 0.0
    res, cnt = windows_reduce(_f32(x), (kh, kw), (sh, sw), padding, fill, op)
    return res if op == "max" else res / cnt


def max_pool(x: np.ndarray, pool, strides=None, padding: str = "valid") -> np.ndarray:
    """MaxPooling2D (padded taps never win)."""
    return _pool(x, pool, strides, padding, "max")


def avg_pool(x: np.ndarray, pool, strides=None, padding: str = "valid") -> np.ndarray:
    """AveragePooling2D; 'same' border windows divide by their valid taps (Keras)."""
    return _pool(x, pool, strides, padding, "avg")


def global_avg_pool(x: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """GlobalAveragePooling2D over H and W."""
    return np.mean(_f32(x), axis=(1, 2), keepdims=keepdims, dtype=F32)


def upsample_nearest(x: np.ndarray, size) -> np.ndarray:
    """UpSampling2D with nearest interpolation."""
    sh, sw = _pair(size)
    return np.repeat(np.repeat(_f32(x), sh, axis=1), sw, axis=2)


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorFlow's bilinear sampling along one axis (half-pixel centres, no corner alignment), in
    float32 as its kernel computes it: source position ``(i + 0.5) * in/out - 0.5``, the taps below and
    above it clamped to the edge, and the fraction between them."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=F32) + F32(0.5)) * scale - F32(0.5)
    below = np.floor(pos)
    lo = np.maximum(below.astype(np.int64), 0)
    hi = np.minimum(np.ceil(pos).astype(np.int64), in_size - 1)
    return lo, hi, (pos - below).astype(F32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """``tf.image.resize(x, (height, width), "bilinear")`` (what Keras' bilinear UpSampling2D and
    Resizing call), NHWC, with TensorFlow's float32 order of operations."""
    x = _f32(x)
    ylo, yhi, fy = _bilinear_taps(x.shape[1], int(height))
    xlo, xhi, fx = _bilinear_taps(x.shape[2], int(width))
    fx, fy = fx[None, None, :, None], fy[None, :, None, None]
    upper, lower = x[:, ylo], x[:, yhi]
    top = upper[:, :, xlo] + (upper[:, :, xhi] - upper[:, :, xlo]) * fx
    bottom = lower[:, :, xlo] + (lower[:, :, xhi] - lower[:, :, xlo]) * fx
    return top + (bottom - top) * fy


def _nearest_taps(in_size: int, out_size: int) -> np.ndarray:
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=F32) + F32(0.5)) * scale
    return np.clip(np.floor(pos).astype(np.int64), 0, in_size - 1)


def resize_nearest(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """``tf.image.resize(x, (height, width), "nearest")``: half-pixel centres, NHWC."""
    x = _f32(x)
    return x[:, _nearest_taps(x.shape[1], int(height))][:, :, _nearest_taps(x.shape[2], int(width))]


def zero_pad(x: np.ndarray, padding) -> np.ndarray:
    """ZeroPadding2D; ``padding`` is an int, (ph, pw) or ((top, bottom), (left, right))."""
    if isinstance(padding, int | np.integer):
        ph = pw = (int(padding), int(padding))
    else:
        a, b = padding
        ph = (int(a), int(a)) if isinstance(a, int | np.integer) else (int(a[0]), int(a[1]))
        pw = (int(b), int(b)) if isinstance(b, int | np.integer) else (int(b[0]), int(b[1]))
    return pad_nhwc(_f32(x), ph, pw)


def batchnorm(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = 1e-3,
) -> np.ndarray:
    """Inference BatchNormalization over the last axis: ``(x - mean) / sqrt(var + eps) * gamma + beta``."""
    inv = F32(1.0) / np.sqrt(_f32(var) + F32(eps))
    if gamma is not None:
        inv = inv * _f32(gamma)
    y = (_f32(x) - _f32(mean)) * inv
    return y if beta is None else y + _f32(beta)


# ----------------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------------


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(_f32(x), F32(0))


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6)."""
    return np.minimum(np.maximum(_f32(x), F32(0)), F32(6))


def leaky_relu(x: np.ndarray, alpha: float = 0.3) -> np.ndarray:
    """x for x >= 0, alpha * x otherwise (Keras LeakyReLU default alpha 0.3)."""
    x = _f32(x)
    return np.where(x >= 0, x, F32(alpha) * x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed without overflow."""
    x = _f32(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, F32(1) / (F32(1) + e), e / (F32(1) + e)).astype(F32)


def hard_sigmoid_keras(x: np.ndarray) -> np.ndarray:
    """Keras 3 hard_sigmoid: relu6(x + 3) / 6."""
    return relu6(_f32(x) + F32(3)) / F32(6)


def hard_sigmoid_tf_keras(x: np.ndarray) -> np.ndarray:
    """tf_keras (Keras 2) hard_sigmoid: clip(0.2 * x + 0.5, 0, 1), a different function from Keras 3's."""
    return np.clip(F32(0.2) * _f32(x) + F32(0.5), F32(0), F32(1))


def hard_silu(x: np.ndarray) -> np.ndarray:
    """Keras 3 hard_silu (alias hard_swish): x * relu6(x + 3) / 6."""
    x = _f32(x)
    return x * hard_sigmoid_keras(x)


def hard_sigmoid_dpu(x: np.ndarray) -> np.ndarray:
    """The quantizer's DPU hard sigmoid: relu6(x + 3) * 2731 / 16384."""
    return relu6(_f32(x) + F32(3)) * F32(2731.0 / 16384.0)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` (max-subtracted)."""
    x = _f32(x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(_f32(x))


def swish(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) (Keras swish / silu)."""
    x = _f32(x)
    return x * sigmoid(x)


def hard_swish_dpu(x: np.ndarray) -> np.ndarray:
    """x * DPU hard sigmoid: what the quantizer turns swish into."""
    x = _f32(x)
    return x * hard_sigmoid_dpu(x)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    x = _f32(x)
    return np.where(x > 0, x, F32(alpha) * np.expm1(np.minimum(x, 0)))


def selu(x: np.ndarray) -> np.ndarray:
    """Scaled ELU with Keras constants."""
    return F32(1.0507009873554805) * elu(x, 1.6732632423543772)


def gelu(x: np.ndarray, approximate: bool = False) -> np.ndarray:
    """Gaussian error linear unit (exact erf form, or the tanh approximation)."""
    x = _f32(x)
    if approximate:
        c = F32(np.sqrt(2.0 / np.pi))
        return F32(0.5) * x * (F32(1) + np.tanh(c * (x + F32(0.044715) * x**3)))
    return (F32(0.5) * x * (F32(1) + erf(x / F32(np.sqrt(2.0))))).astype(F32)


# Numerical Recipes' Chebyshev fit of erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2): fractional error
# below 1.2e-7 for every z >= 0, i.e. within a float32 ulp.
_ERFC_COEFFS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
                1.48851587, -0.82215223, 0.17087277)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, to float32 precision (numpy has none): its Maclaurin series
    below |x| = 0.5 (where 1 - erfc would lose the relative precision), the erfc fit above."""
    x64 = np.asarray(x, np.float64)
    z = np.abs(x64)
    out = np.empty_like(z)
    near = z < 0.5
    zs = z[near]
    z2, term = zs * zs, zs.copy()
    acc = zs.copy()
    for n in range(1, 9):  # sum (-1)^n z^(2n+1) / (n! (2n+1)); at z = 0.5 the 9th term is < 1e-11
        term *= -z2 / n
        acc += term / (2 * n + 1)
    out[near] = acc * (2.0 / np.sqrt(np.pi))
    zb = z[~near]
    t = 1.0 / (1.0 + 0.5 * zb)
    poly = np.full_like(zb, _ERFC_COEFFS[-1])
    for c in reversed(_ERFC_COEFFS[:-1]):
        poly = poly * t + c
    out[~near] = 1.0 - t * np.exp(poly - zb * zb)
    return (np.sign(x64) * out).astype(F32)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), stable."""
    x = _f32(x)
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(F32)


def softsign(x: np.ndarray) -> np.ndarray:
    """x / (|x| + 1)."""
    x = _f32(x)
    return x / (np.abs(x) + F32(1))


def mish(x: np.ndarray) -> np.ndarray:
    """x tanh(softplus(x)) (Keras 3)."""
    x = _f32(x)
    return x * np.tanh(softplus(x))


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x - logsumexp(x) over the last axis, stable (Keras 3)."""
    x = _f32(x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return (shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))).astype(F32)


def _where(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(cond, a, b).astype(F32)


ACTIVATIONS = {
    "linear": lambda x: _f32(x),
    "softsign": softsign,
    "exponential": lambda x: np.exp(_f32(x)),
    # Keras 3 activations, at their default parameters
    "mish": mish,
    "log_softmax": log_softmax,
    "hard_tanh": lambda x: np.clip(_f32(x), F32(-1), F32(1)),
    "tanh_shrink": lambda x: _f32(x) - np.tanh(_f32(x)),
    "log_sigmoid": lambda x: -softplus(-_f32(x)),
    "leaky_relu": lambda x: leaky_relu(x, 0.2),
    "celu": lambda x: _where(_f32(x) > 0, _f32(x), np.expm1(_f32(x))),
    "soft_shrink": lambda x: _where(_f32(x) > 0.5, _f32(x) - F32(0.5),
                                    _where(_f32(x) < -0.5, _f32(x) + F32(0.5), np.zeros_like(_f32(x)))),
    "hard_shrink": lambda x: _where(np.abs(_f32(x)) > 0.5, _f32(x), np.zeros_like(_f32(x))),
    "squareplus": lambda x: (_f32(x) + np.sqrt(_f32(x) * _f32(x) + F32(4))) / F32(2),
    "sparse_plus": lambda x: _where(_f32(x) <= -1, np.zeros_like(_f32(x)),
                                    _where(_f32(x) >= 1, _f32(x), (_f32(x) + F32(1)) ** 2 / F32(4))),
    "relu": relu,
    "relu6": relu6,
    "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid_keras,
    "hard_sigmoid_dpu": hard_sigmoid_dpu,
    "hard_sigmoid_tf_keras": hard_sigmoid_tf_keras,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "softmax": softmax,
    "tanh": tanh,
    "swish": swish,
    "silu": swish,
    "hard_swish_dpu": hard_swish_dpu,
    "elu": elu,
    "selu": selu,
    "gelu": gelu,
    "softplus": softplus,
}


# The arguments a Keras 3 operation records in its config (``ops.elu(x, alpha=0.5)``), per activation,
# with Keras 3's defaults; an operation with any other argument is not emulated (never computed at a
# default it was not called with).
ACTIVATION_ARGS: dict[str, dict[str, Any]] = {
    "elu": {"alpha": 1.0}, "celu": {"alpha": 1.0}, "leaky_relu": {"negative_slope": 0.2},
    "gelu": {"approximate": True}, "softmax": {"axis": -1}, "log_softmax": {"axis": -1},
}


# What :func:`activation` computes by name alone (the Keras activation's defaults: gelu is exact there,
# while the operation ``ops.gelu`` defaults to the tanh approximation).
PLAIN_ACTIVATION_ARGS = {**ACTIVATION_ARGS, "gelu": {"approximate": False}}


def needs_arguments(name: str, args: dict[str, Any]) -> bool:
    """Whether an activation called with ``args`` computes other than :func:`activation` by name."""
    plain = PLAIN_ACTIVATION_ARGS.get(name, {})
    return any(k not in plain or plain[k] != v for k, v in args.items())


def activation_with(name: str, x: np.ndarray, args: dict[str, Any]) -> np.ndarray:
    """A Keras 3 activation operation called with ``args`` (its config's arguments, see
    :data:`ACTIVATION_ARGS`); ValueError for an argument it does not take."""
    known = ACTIVATION_ARGS.get(name, {})
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"activation {name!r} with argument(s) {', '.join(unknown)} is not emulated")
    a = {**known, **args}
    if name == "elu":
        return elu(x, float(a["alpha"]))
    if name == "celu":  # max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
        x, alpha = _f32(x), F32(a["alpha"])
        return _where(x > 0, x, alpha * np.expm1(np.minimum(x, 0) / alpha))
    if name == "leaky_relu":
        return leaky_relu(x, float(a["negative_slope"]))
    if name == "gelu":
        return gelu(x, bool(a["approximate"]))
    if name in ("softmax", "log_softmax"):
        return (softmax if name == "softmax" else log_softmax)(x, int(a["axis"]))
    return activation(name, x)


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """Apply a Keras activation by name (KeyError-free: unknown names raise ValueError)."""
    try:
        fn = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}") from None
    return fn(x)
