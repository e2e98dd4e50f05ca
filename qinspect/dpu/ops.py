"""Integer DPU operators: int8 codes in, int8 codes out, exactly as the DPU computes them.

Specification: ``DPU_NUMERICS.md`` section 4. Positions: ``pi`` input, ``pw`` weights, ``pb`` bias,
``po`` output (Python ints, may be negative). Layouts are Keras: NHWC activations, HWIO conv kernels,
depthwise ``(kh, kw, cin, mult)``, dense ``(in, out)``, transposed conv ``(kh, kw, cout, cin)``.

Every right shift inside an operator rounds HALF_UP (``floor(v + 0.5)``, so -2.5 -> -2) and every
result is clipped to [-128, 127]. Accumulators are int64; the comment at each kernel bounds them.
Activations ``act``: None, "relu", "relu6", "leaky" (alpha 26/256 applied to a negative accumulator
before the single rounding).
"""

from __future__ import annotations

import math

import numpy as np

from qinspect.dpu._conv_core import (
    Epilogue,
    _pair,
    conv_acc,
    depthwise_acc,
    gemm_exact,
    l1_bound,
    transpose_1d,
    windows_reduce,
)
from qinspect.dpu.fixed_point import QMAX, QMIN, shift_round_half_up

__all__ = [
    "conv2d",
    "conv2d_acc",
    "depthwise_conv2d",
    "depthwise_conv2d_acc",
    "weight_bound",
    "float_value_stage",
    "conv2d_transpose",
    "conv2d_transpose_acc",
    "dense",
    "dense_acc",
    "output_stage",
    "float_output_stage",
    "add",
    "multiply",
    "concat",
    "requantize",
    "leaky_relu",
    "prelu",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "upsample_nearest",
    "hard_sigmoid",
    "avgpool_factor",
    "avgpool_rescale",
    "round_half_up_div",
    "LEAKY_NUM",
    "LEAKY_SHIFT",
]

ACTS = (None, "relu", "relu6", "leaky")
# DPU LeakyReLU: alpha 0.1 becomes 26 / 2^8.
LEAKY_NUM = 26
LEAKY_SHIFT = 8
# DPU hard sigmoid: relu6(x + 3) * 2731 / 2^14.
HSIG_NUM = 2731
HSIG_SHIFT = 14


def _i64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.int64, copy=False)


def _clip8(a: np.ndarray) -> np.ndarray:
    return np.clip(a, QMIN, QMAX).astype(np.int8)


def _check_act(act: str | None) -> None:
    if act not in ACTS:
        raise ValueError(f"activation must be one of {ACTS}, got {act!r}")


def _relu6_cap(po: int) -> int:
    """6 in output codes: HALF_UP(6 * 2^po). Rounding is monotonic, so min(round(x), round(6)) equals
    round(min(x, 6)): capping after the rounding is the same as relu6 before it."""
    if po >= 0:
        return 6 << po
    return int(math.floor(6 * 2.0**po + 0.5))


def _apply_act_codes(y: np.ndarray, act: str | None, po: int) -> np.ndarray:
    """ReLU / ReLU6 on rounded integer codes (exact: see _relu6_cap), before the int8 clip every caller
    makes: the cap is taken at most 127, which that clip gives anyway, so ``6 << po`` never has to fit
    the codes' type (an int32 accumulator at po >= 29 overflowed)."""
    if act in ("relu", "relu6"):
        y = np.maximum(y, 0)
    if act == "relu6":
        y = np.minimum(y, min(_relu6_cap(po), QMAX))
    return y


def round_half_up_div(num: np.ndarray, den: np.ndarray | int) -> np.ndarray:
    """floor(num / den + 1/2) for int64 ``num`` and positive integer ``den``, exactly:
    ``floor((2 num + den) / (2 den))`` with numpy's floor division."""
    num = _i64(num)
    den = np.asarray(den, dtype=np.int64)
    return (2 * num + den) // (2 * den)


def output_stage(
    acc: np.ndarray,
    bq: np.ndarray | None,
    pi: int,
    pw: int,
    pb: int,
    po: int,
    act: str | None = None,
) -> np.ndarray:
    """From an exact accumulator (scale 2^-(pi+pw), channels on the last axis) to int8 codes at ``po``.

    ``acc + (bq << (pi + pw - pb))``, then ``floor(acc / 2^(pi + pw - po) + 0.5)`` and clip.
    A negative bias shift (pb > pi + pw) keeps the bias exact by scaling the accumulator up instead,
    so the sum is still rounded once. Fused leaky: negative sums times 26 / 2^8 before that rounding.
    Range: |acc| <= K * 2^14 and |bq << 16| <= 2^23; the extra left shifts (< 32 bits together for
    positions inside the DPU constraints) keep everything far below 2^62.
    Runs on cache-sized row blocks (same result, several times faster on big tensors).
    """
    _check_act(act)
    a = np.asarray(acc)
    if a.ndim == 0 or a.size <= _STAGE_BLOCK:
        return _output_stage_block(a, bq, pi, pw, pb, po, act)
    flat = a.reshape(-1, a.shape[-1])
    out = np.empty(flat.shape, dtype=np.int8)
    step = max(1, _STAGE_BLOCK // max(1, flat.shape[1]))
    for r0 in range(0, flat.shape[0], step):
        out[r0 : r0 + step] = _output_stage_block(flat[r0 : r0 + step], bq, pi, pw, pb, po, act)
    return out.reshape(a.shape)


_STAGE_BLOCK = 1 << 16  # elements per block: a few int64 temporaries stay in L2


def _output_stage_block(
    acc: np.ndarray, bq: np.ndarray | None, pi: int, pw: int, pb: int, po: int, act: str | None
) -> np.ndarray:
    """:func:`output_stage` on one block, in int64 (the reference arithmetic)."""
    a = _i64(acc)
    shift = pi + pw - po
    if bq is not None:
        sb = pi + pw - pb
        b = _i64(bq)
        if sb >= 0:
            a = a + (b << sb)
        else:  # bias finer than the accumulator: bring the accumulator to the bias scale
            a = (a << -sb) + b
            shift += -sb
    if act == "leaky":
        # y = round(acc * 26 / 2^(shift + 8)) for acc < 0, round(acc / 2^shift) otherwise.
        neg = shift_round_half_up(a * LEAKY_NUM, shift + LEAKY_SHIFT)
        pos = shift_round_half_up(a, shift)
        y = np.where(a < 0, neg, pos)
    else:
        y = _apply_act_codes(shift_round_half_up(a, shift), act, po)
    return _clip8(y)


def float_output_stage(
    bq: np.ndarray | None,
    pi: int,
    pw: int,
    pb: int,
    po: int,
    act: str | None,
    acc_bound: int,
) -> Epilogue:
    """The :func:`output_stage` as a function of float accumulator chunks (exact integers held in
    float32 / float64), for the fused convolution path: an :class:`Epilogue` whose scale 2^-s is folded
    into the weights and whose per-channel offset is added while partial sums are combined.

    ``y = floor(acc * 2^-s + c)`` with ``s = pi + pw - po`` and the per-channel constant
    ``c = bq * 2^(sb - s) + 1/2`` (``sb = pi + pw - pb``): the same single HALF_UP rounding of the same
    dyadic rational as the integer form. Exactness: scaling by a power of two is exact; the sum is
    exact when the integer ``A = acc + bq * 2^sb + 2^(s-1)`` (everything at the accumulator scale) fits
    the mantissa. float32 is used when ``acc_bound + 128 * 2^sb + 2^(s-1) < 2^24`` (sb >= 0, s >= 1,
    no leaky), float64 otherwise (53 bits: acc < 2^40 and bias/leaky factors add < 12 bits).
    """
    _check_act(act)
    s = pi + pw - po
    sb = pi + pw - pb
    bias = np.zeros(1, np.int64) if bq is None else _i64(bq)
    bmax = int(np.abs(bias).max()) if bias.size else 0
    # float32 when every intermediate integer (at the accumulator scale) is below 2^24, including the
    # +128 bias that makes truncation equal floor (see finish)
    use32 = (
        act != "leaky"
        and sb >= 0
        and s >= 1
        and acc_bound + (bmax << sb) + (1 << (s - 1)) + (128 << s) < 2**24
    )
    ft = np.float32 if use32 else np.float64
    bias_term = bias.astype(np.float64) * 2.0 ** (sb - s)
    lo = 0 if act in ("relu", "relu6") else QMIN
    hi = min(QMAX, _relu6_cap(po)) if act == "relu6" else QMAX
    if act == "leaky":
        offset = bias_term.astype(ft)

        def finish(t: np.ndarray, dst: np.ndarray) -> None:
            # t = acc * 2^-s + bias (float64, exact); alpha 26/2^8 on negatives adds 5 bits: exact
            t = np.where(t < 0, t * (LEAKY_NUM / 2**LEAKY_SHIFT), t)
            t += 0.5
            np.floor(t, out=t)
            np.clip(t, lo, hi, out=t)
            dst[...] = t

    else:
        # t = acc * 2^-s + bias + 1/2 + 128 >= 0 after clipping to [lo + 128, hi + 128], so the float ->
        # uint8 conversion (truncation) is the floor; XOR 0x80 then subtracts 128 in two's complement.
        # Clipping before the floor is the same as after it: the bounds are integers.
        offset = (bias_term + 0.5 + 128.0).astype(ft)

        def finish(t: np.ndarray, dst: np.ndarray) -> None:
            np.clip(t, lo + 128, hi + 128, out=t)
            du = dst.view(np.uint8)
            du[...] = t
            np.bitwise_xor(du, np.uint8(0x80), out=du)

    # |offset| in accumulator units (bias shifted, the 1/2 and the +128 of the uint8 trick)
    off_bound = float(bmax) * 2.0**sb + 2.0 ** (s - 1) + 128.0 * 2.0**s
    return Epilogue(finish=finish, scale=2.0**-s, offset=offset, dtype=ft, out_dtype=np.int8,
                    offset_bound=off_bound)


# ----------------------------------------------------------------------------------------------------
# Convolutions and dense
# ----------------------------------------------------------------------------------------------------


def _acc_to_int64(acc: np.ndarray) -> np.ndarray:
    # acc holds exact integers (float32 <= 2^24 or float64 <= 2^53): the conversion is exact.
    return acc.astype(np.int64)


def _store_int64(t: np.ndarray, dst: np.ndarray) -> None:
    dst[...] = t  # exact integers in float to int64: exact; float64 to float32: the one rounding


# Chunked kernels convert their exact float accumulators to int64 chunk by chunk (in cache).
_INT64_ACC = Epilogue(finish=_store_int64, dtype=np.float32, out_dtype=np.int64)
# (the same store serves float_value_stage: float64 values to a float32 output, one rounding)


def weight_bound(op: str, wq: np.ndarray) -> int:
    """:func:`qinspect.dpu._conv_core.l1_bound` of a kernel for ``op`` ("conv2d", "depthwise_conv2d",
    "dense"): ``128 * max over output channels of sum |w|`` over the taps summed into one output.

    Any partial sum of an accumulator is at most this in magnitude. It depends on the weights only, so
    callers that run the same weights many times (the executor) compute it once and pass it on.
    """
    w = np.asarray(wq)
    if op == "depthwise_conv2d":
        kh, kw, cin, mult = w.shape
        return l1_bound(w.reshape(kh * kw, cin * mult))
    return l1_bound(w.reshape(-1, w.shape[-1]))


def _conv_kernel(op: str, xq: np.ndarray, wq: np.ndarray, strides: tuple[int, int] | int, padding: str,
                 dilation: tuple[int, int] | int, epilogue: Epilogue, acc_bound: int | None) -> np.ndarray:
    """The chunked kernel of ``op`` ("conv2d" or "depthwise_conv2d") with an output stage fused in."""
    if op == "conv2d":  # the weights as given: conv_acc caches its prepared forms of read-only ones
        return conv_acc(np.asarray(xq), np.asarray(wq), _pair(strides), padding,
                        _pair(dilation), exact=True, epilogue=epilogue, acc_bound=acc_bound)
    return depthwise_acc(np.asarray(xq), np.asarray(wq), _pair(strides), padding, _pair(dilation),
                         epilogue=epilogue)


def _make_acc_op(op: str, doc: str):  # noqa: ANN202  (returns the public function)
    def acc_op(
        xq: np.ndarray,
        wq: np.ndarray,
        strides: tuple[int, int] | int = (1, 1),
        padding: str = "valid",
        dilation: tuple[int, int] | int = (1, 1),
        acc_bound: int | None = None,
    ) -> np.ndarray:
        return _conv_kernel(op, xq, wq, strides, padding, dilation, _INT64_ACC, acc_bound)

    acc_op.__name__ = acc_op.__qualname__ = f"{op}_acc"
    acc_op.__doc__ = doc
    return acc_op


def _make_fused_op(op: str, doc: str):  # noqa: ANN202  (returns the public function)
    def fused_op(
        xq: np.ndarray,
        wq: np.ndarray,
        bq: np.ndarray | None,
        pi: int,
        pw: int,
        pb: int,
        po: int | None,
        strides: tuple[int, int] | int = (1, 1),
        padding: str = "valid",
        dilation: tuple[int, int] | int = (1, 1),
        act: str | None = None,
        acc_bound: int | None = None,
    ) -> np.ndarray:
        wq = np.asarray(wq)
        bound = weight_bound(op, wq) if acc_bound is None else acc_bound
        if po is None:  # the unquantized float32 value (no activation)
            stage = float_value_stage(bq, pi, pw, pb)
        else:
            stage = float_output_stage(bq, pi, pw, pb, po, act, acc_bound=bound)
        return _conv_kernel(op, xq, wq, strides, padding, dilation, stage, bound)

    fused_op.__name__ = fused_op.__qualname__ = op
    fused_op.__doc__ = doc
    return fused_op


def float_value_stage(bq: np.ndarray | None, pi: int, pw: int, pb: int) -> Epilogue:
    """An :class:`Epilogue` giving the float32 value of an exact accumulator plus its bias:
    ``float32((acc + bq * 2^(pi + pw - pb)) * 2^-(pi + pw))``, rounded once.

    The scale 2^-(pi+pw) is a power of two folded into the weights (exact), the bias ``bq * 2^-pb`` is
    added in float64 (the accumulator is below 2^40 and the bias adds a few bits: exact), and the store
    to float32 is the single rounding.
    """
    s = pi + pw
    bias = np.zeros(1) if bq is None else _i64(bq).astype(np.float64) * 2.0**-pb
    bmax = float(np.abs(bias).max()) if bias.size else 0.0
    return Epilogue(finish=_store_int64, scale=2.0**-s, offset=bias, dtype=np.float64, out_dtype=np.float32,
                    offset_bound=bmax * 2.0**s)


conv2d_acc = _make_acc_op("conv2d", """Exact int64 accumulator ``sum(xq * wq)`` of a Conv2D (NHWC, HWIO),
    padding with code 0.

    Range: each product <= 2^14 in magnitude; float32 GEMM over K <= 1024 terms is exact (<= 2^24), and
    so is any K whose weight L1 bound ``128 * max_j sum_k |w_kj|`` (``acc_bound``, see
    :func:`weight_bound`; computed when not given) is <= 2^24; otherwise K is summed in float64 chunks.
    Stride-1 kernels 3 wide may use Winograd F(2, 3) along the rows, only where its own bounds prove
    every float32 sum exact (see qinspect.dpu._conv_core).
    """)

conv2d = _make_fused_op("conv2d", """DPU Conv2D: exact accumulator, bias aligned, one HALF_UP rounding to
    ``po``, fused activation.

    Same result as ``output_stage(conv2d_acc(...))``; the output stage runs fused on cache-sized
    chunks of the exact float accumulator (:func:`float_output_stage`). ``acc_bound``: the kernel's
    :func:`weight_bound` when the caller has it cached. With ``po=None`` the result is instead the
    conv's unquantized float32 value, ``float32((acc + bq * 2^(pi + pw - pb)) * 2^-(pi + pw))`` rounded
    once, computed in the same fused pass (:func:`float_value_stage`; ``act`` is not applied).
    """)

depthwise_conv2d_acc = _make_acc_op("depthwise_conv2d", """Exact int64 accumulator of a
    DepthwiseConv2D; kernel ``(kh, kw, cin, mult)``, output channel ``c * mult + m`` (Keras order).

    Range: kh*kw products of <= 2^14 each: float32 sums are exact up to kh*kw = 1024 (<= 2^24),
    float64 beyond (see qinspect.dpu._conv_core.depthwise_acc).
    """)

depthwise_conv2d = _make_fused_op("depthwise_conv2d", """DPU DepthwiseConv2D (same output stage as
    conv2d, fused on chunks as there; ``po=None``: the unquantized float32 value, as there).""")


def conv2d_transpose_acc(
    xq: np.ndarray,
    wq: np.ndarray,
    strides: tuple[int, int] | int = (1, 1),
    padding: str = "valid",
    dilation: tuple[int, int] | int = (1, 1),
    output_padding: tuple[int, int] | int | None = None,
) -> np.ndarray:
    """Exact int64 accumulator of a Conv2DTranspose; kernel ``(kh, kw, cout, cin)`` (Keras).

    Output size as Keras: without output_padding 'valid' ``in * s + max(k_eff - s, 0)``, 'same'
    ``in * s`` (``k_eff = (k - 1) * d + 1``). Input pixel (i, j) tap (a, b) lands on full-output
    (i*s + a*d, j*s + b*d); 'same' then crops from the top/left as TensorFlow's conv2d_transpose does
    (:func:`qinspect.dpu._conv_core.transpose_1d`).
    Range: each output sums at most ceil(kh/s)*ceil(kw/s)*cin products of <= 2^14; every GEMM sums cin
    terms (chunked above 1024), the scatter adds are int64.
    """
    sh, sw = _pair(strides)
    x = np.asarray(xq, dtype=np.float32)
    w = np.asarray(wq, dtype=np.float32)
    n, h, wd, cin = x.shape
    kh, kw, cout, cin_w = w.shape
    if cin_w != cin:
        raise ValueError(f"transposed kernel expects {cin_w} input channels, input has {cin}")
    dh, dw = _pair(dilation)
    oph, opw = (None, None) if output_padding is None else _pair(output_padding)
    oh, ct = transpose_1d(h, kh, sh, dh, padding, oph)
    ow, cl = transpose_1d(wd, kw, sw, dw, padding, opw)
    full_h = (h - 1) * sh + (kh - 1) * dh + 1
    full_w = (wd - 1) * sw + (kw - 1) * dw + 1
    full = np.zeros((n, max(full_h, ct + oh), max(full_w, cl + ow), cout), dtype=np.int64)
    xf = x.reshape(n * h * wd, cin)
    for a in range(kh):
        for b in range(kw):
            wt = np.ascontiguousarray(w[a, b].T)  # (cin, cout)
            contrib = gemm_exact(xf, wt, cin <= 1024 or l1_bound(wt) <= 2**24)
            contrib = contrib.astype(np.int64).reshape(n, h, wd, cout)
            full[:, a * dh : a * dh + (h - 1) * sh + 1 : sh, b * dw : b * dw + (wd - 1) * sw + 1 : sw, :] += contrib
    return full[:, ct : ct + oh, cl : cl + ow, :]


def conv2d_transpose(
    xq: np.ndarray,
    wq: np.ndarray,
    bq: np.ndarray | None,
    pi: int,
    pw: int,
    pb: int,
    po: int,
    strides: tuple[int, int] | int = (1, 1),
    padding: str = "valid",
    act: str | None = None,
    dilation: tuple[int, int] | int = (1, 1),
    output_padding: tuple[int, int] | int | None = None,
) -> np.ndarray:
    """DPU Conv2DTranspose (same output stage as conv2d)."""
    acc = conv2d_transpose_acc(xq, wq, strides, padding, dilation, output_padding)
    return output_stage(acc, bq, pi, pw, pb, po, act)


def dense_acc(xq: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """Exact int64 accumulator of a Dense layer, ``xq (..., in) @ wq (in, out)``.

    Range: K = in products of <= 2^14: one float32 GEMM when K <= 1024 or the weights' L1 bound is
    <= 2^24, else float32 chunks of <= 1024 summed in float64.
    """
    x = np.asarray(xq, dtype=np.float32)
    w = np.asarray(wq, dtype=np.float32)
    lead = x.shape[:-1]
    res = gemm_exact(x.reshape(-1, x.shape[-1]), w, w.shape[0] <= 1024 or l1_bound(w) <= 2**24)
    return _acc_to_int64(res).reshape(lead + (w.shape[-1],))


def dense(
    xq: np.ndarray,
    wq: np.ndarray,
    bq: np.ndarray | None,
    pi: int,
    pw: int,
    pb: int,
    po: int | None,
    act: str | None = None,
    acc_bound: int | None = None,
) -> np.ndarray:
    """DPU Dense (same output stage as conv2d, fused the same way: the GEMM runs as a 1x1 convolution
    of ``(rows, 1, 1, in)``, its exactness rules included). ``po=None``: the unquantized float32 value,
    as :func:`conv2d` gives it."""
    x = np.asarray(xq)
    w = np.asarray(wq)
    lead = x.shape[:-1]
    y = conv2d(x.reshape(-1, 1, 1, x.shape[-1]), w.reshape(1, 1, *w.shape), bq, pi, pw, pb, po, act=act,
               acc_bound=acc_bound)
    return y.reshape(lead + (w.shape[-1],))


# ----------------------------------------------------------------------------------------------------
# Element-wise operators
# ----------------------------------------------------------------------------------------------------


def requantize(q: np.ndarray, pi: int, po: int, act: str | None = None) -> np.ndarray:
    """Re-express codes at ``pi`` at ``po``: shift by ``pi - po`` with HALF_UP, clip; optional ReLU /
    ReLU6 / leaky (then the same as :func:`leaky_relu`). Range: |q| <= 128, left shifts < 2^40."""
    _check_act(act)
    if act == "leaky":
        return leaky_relu(q, pi, po)
    if pi == po and act is None:
        return np.clip(q, QMIN, QMAX).astype(np.int8)  # identity on int8 codes (a copy)
    y = shift_round_half_up(_i64(q), pi - po)
    return _clip8(_apply_act_codes(y, act, po))


def leaky_relu(q: np.ndarray, pi: int, po: int) -> np.ndarray:
    """DPU LeakyReLU, alpha 26/256: negative codes ``round(q * 26 / 2^(pi + 8 - po))``, others
    ``round(q / 2^(pi - po))``; one HALF_UP rounding each."""
    a = _i64(q)
    neg = shift_round_half_up(a * LEAKY_NUM, pi + LEAKY_SHIFT - po)
    pos = shift_round_half_up(a, pi - po)
    return _clip8(np.where(a < 0, neg, pos))


def prelu(q: np.ndarray, pi: int, alpha_q: np.ndarray, palpha: int, po: int) -> np.ndarray:
    """DPU PReLU: negative codes times the int8 alpha (broadcast, Keras shape), shifted by
    ``pi + palpha - po``; positive codes shifted by ``pi - po``. Range: |q * alpha| <= 2^14."""
    a = _i64(q)
    al = _i64(alpha_q)
    neg = shift_round_half_up(a * al, pi + palpha - po)
    pos = shift_round_half_up(a, pi - po)
    return _clip8(np.where(a < 0, neg, pos))


def add(inputs: list[tuple[np.ndarray, int]], po: int, act: str | None = None) -> np.ndarray:
    """n-ary DPU Add: each input scaled by ``2^(po - p_i)``, summed exactly, rounded once (HALF_UP).

    Exact form: bring every input to the finest position ``m = max(p_i)`` (left shifts), sum in int64,
    shift by ``m - po``. Range: n * 128 * 2^(max p - min p) (shift_read <= 15 keeps it < 2^30).
    """
    _check_act(act)
    if not inputs:
        raise ValueError("add needs at least one input")
    if act == "leaky":
        raise ValueError("add has no fused leaky activation on the DPU (it stays a separate layer)")
    m = max(int(p) for _, p in inputs)
    s = m - po
    if s >= 62:  # every input is below 2^-53 of an output step: each rounds to 0 (and >> 64 is undefined)
        shape = np.broadcast_shapes(*(np.shape(q) for q, _ in inputs))
        return _clip8(_apply_act_codes(np.zeros(shape, np.int64), act, po))
    # int32 when nothing can overflow it (the usual case: half the bytes of int64), else int64:
    # |sum| <= sum_i 128 * 2^(m - p_i), then the rounding bias 2^(s-1) or the left shift by -s.
    bound = sum(128 << (m - int(p)) for _, p in inputs)
    dt = np.int32 if (bound << max(0, -s)) + (1 << max(0, s - 1)) < 2**31 else np.int64
    total = None
    for q, p in inputs:
        term = np.asarray(q).astype(dt) << dt(m - int(p))
        total = term if total is None else np.add(total, term, out=total)
    if s > 0:  # floor((total + 2^(s-1)) / 2^s): >> is an arithmetic shift (floor) on signed ints
        total += dt(1 << (s - 1))
        total >>= dt(s)
    elif s < 0:
        total <<= dt(-s)
    return _clip8(_apply_act_codes(total, act, po))


def multiply(a: tuple[np.ndarray, int], b: tuple[np.ndarray, int], po: int) -> np.ndarray:
    """DPU Multiply: integer product (<= 2^14), shifted by ``p_a + p_b - po`` with HALF_UP."""
    (qa, pa), (qb, pb) = a, b
    prod = _i64(qa) * _i64(qb)
    return _clip8(shift_round_half_up(prod, pa + pb - po))


def concat(inputs: list[tuple[np.ndarray, int]], po: int, axis: int = -1) -> np.ndarray:
    """Concatenate: every input re-expressed at ``po`` (identity when aligned), then joined."""
    return np.concatenate([requantize(q, p, po) for q, p in inputs], axis=axis)


def hard_sigmoid(q: np.ndarray, pi: int, po: int) -> np.ndarray:
    """DPU hard sigmoid ``relu6(x + 3) * 2731 / 2^14`` in integers.

    ``t = clip(xq + 3 * 2^pi, 0, 6 * 2^pi)`` (relu6(x + 3) at the input scale), then
    ``round(t * 2731 / 2^(pi + 14 - po))`` HALF_UP, i.e. ``(xq * 2731 + 3 * 2731 * 2^pi) / 2^shift``.
    A negative ``pi`` (outside the DPU constraint [0, 15]) is handled by scaling codes up first.
    Range: t <= 6 * 2^15 and t * 2731 < 2^30.
    """
    a = _i64(q)
    extra = max(0, -pi)
    pi_e = pi + extra
    a = a << np.int64(extra)
    three = 3 << pi_e
    t = np.clip(a + three, 0, 2 * three)
    return _clip8(shift_round_half_up(t * HSIG_NUM, pi_e + HSIG_SHIFT - po))


# ----------------------------------------------------------------------------------------------------
# Pooling and resampling
# ----------------------------------------------------------------------------------------------------

_AVGPOOL_TABLE = {3: (7, 6), 5: (10, 8), 6: (7, 8), 7: (21, 10), 14: (21, 12)}
# No rescale when a window SIDE exceeds this (vai_q_tensorflow2 ``_get_avgpool_scale``).
_AVGPOOL_MAX_SIDE = 255


def avgpool_rescale(kh: int, kw: int) -> tuple[float, tuple[int, int] | None]:
    """The quantizer's average-pool rescale for a ``kh x kw`` window: its float32 factor (what the
    simulation multiplies the average by) and the DPU pair ``(K, N)`` (average = sum * K / 2^N), or
    ``(1.0, None)`` when there is no rescale. The one place of this rule.

    Rule (vai_q_tensorflow2 ``vitis_pooling.py``, ``_get_avgpool_scale``): ``kh > 255 or kw > 255``
    (a SIDE, not the area) -> no rescale; the table 3x3 (7, 6), 5x5 (10, 8), 6x6 (7, 8), 7x7 (21, 10),
    14x14 (21, 12); otherwise, in float32, ``K = round(2^n / (kh kw))`` (half to even) for n in
    ``[0, 7 + ceil(log2(kh kw)))`` minimising ``|K / 2^n - 1 / (kh kw)|``, first n on a tie; the factor
    is ``K / 2^n * kh kw``. Which layers get it: every square AveragePooling2D and
    GlobalAveragePooling2D window; a non-square AveragePooling2D gets none (``VitisAveragePooling2D.build``
    assigns that factor to a local variable), a non-square global pool the factor of its lcm square
    when that is at most 8 (see qinspect.dpu.layer_map.gap_kernel).
    """
    if kh > _AVGPOOL_MAX_SIDE or kw > _AVGPOOL_MAX_SIDE:
        return 1.0, None
    if kh == kw and kh in _AVGPOOL_TABLE:
        k, n = _AVGPOOL_TABLE[kh]
    else:
        f32 = np.float32
        rec = f32(kh * kw)
        n_max = int(f32(7) + np.ceil(f32(np.log(rec)) / f32(np.log(f32(2.0)))))
        powers = np.power(f32(2.0), np.arange(0, n_max, dtype=np.float32))
        ks = np.round(powers / rec)
        n = int(np.argmin(np.abs(ks / powers - f32(1) / rec)))  # argmin: the first n on a tie
        k = int(ks[n])
    scale = np.float32(np.float32(k) / np.float32(2.0**n)) * np.float32(kh * kw)
    return float(np.float32(scale)), (int(k), int(n))


def avgpool_factor(kh: int, kw: int) -> tuple[int, int] | None:
    """The DPU factor ``(K, N)`` of a square window of area <= 255, else None (the first version's
    scope, kept for its callers).

    The quantizer's own rule also rescales larger square windows (a side up to 255, e.g. 17x17 ->
    (113, 15)): use :func:`avgpool_rescale`, which the operators and the graph mapping use.
    """
    if kh != kw or kh * kw > 255:
        return None
    return avgpool_rescale(kh, kw)[1]




def max_pool(
    q: np.ndarray,
    pi: int,
    po: int,
    pool: tuple[int, int] | int,
    strides: tuple[int, int] | int | None,
    padding: str = "valid",
) -> np.ndarray:
    """MaxPool2D on codes (padded taps never win), then re-expressed at ``po`` (identity when aligned)."""
    pool = _pair(pool)
    strides = pool if strides is None else _pair(strides)
    # int8 all the way: padding with -128 never changes a window's maximum (every code is >= -128)
    m, _ = windows_reduce(np.asarray(q, dtype=np.int8), pool, strides, padding, fill=QMIN, op="max")
    return requantize(m, pi, po)


def _avg_codes(s: np.ndarray, count: np.ndarray, area: int, factor: tuple[int, int] | None, pi: int,
               po: int) -> np.ndarray:
    """round(avg * factor_scaling * 2^(po - pi)) exactly, from window sums ``s`` and valid-tap counts.

    With a DPU factor (K, N): ``s * area * K / (count * 2^N)``; for a full window (count == area) that
    is the DPU's ``s * K / 2^N``; border windows of 'same' padding divide by their valid taps first, as
    the quantizer's simulation does (Keras average, then the rescale ``area * K / 2^N``). Without a
    factor: the plain average ``s / count``. One HALF_UP rounding of the exact rational value.
    Range: s <= 128 * area <= 2^15, times area * K < 2^16: far below 2^62.
    """
    if factor is None:
        num = _i64(s)
        den = count.astype(np.int64)
    else:
        kk, nn = factor
        num = _i64(s) * (area * kk)
        den = count.astype(np.int64) << np.int64(nn)
    e = po - pi
    if e >= 0:
        num = num << np.int64(e)
    else:
        den = den << np.int64(-e)
    return _clip8(round_half_up_div(num, den))


_SQUARE_RULE = object()  # avg_pool's default factor: avgpool_rescale for a square window, none otherwise


def avg_pool(
    q: np.ndarray,
    pi: int,
    po: int,
    pool: tuple[int, int] | int,
    strides: tuple[int, int] | int | None,
    padding: str = "valid",
    factor: tuple[int, int] | None | object = _SQUARE_RULE,
) -> np.ndarray:
    """DPU AveragePooling2D: window sum times K / 2^N, to ``po`` HALF_UP.

    ``factor``: the ``(K, N)`` pair, or None for a plain average; by default the quantizer's rule
    (:func:`avgpool_rescale` for a square window; a non-square one is not rescaled).

    Choice for 'same' padding: border windows follow the quantizer's simulation (divide by the valid
    taps, then apply the factor ``area * K / 2^N``), not a DPU that would count the padded zeros; the
    two differ only on the border. Computed in exact rationals, rounded once (the float32 simulation
    can land on the other side of an exact .5 tie: 1 LSB, rare).
    """
    pool = _pair(pool)
    strides = pool if strides is None else _pair(strides)
    if factor is _SQUARE_RULE:
        factor = avgpool_rescale(*pool)[1] if pool[0] == pool[1] else None
    s, cnt = windows_reduce(_i64(q), pool, strides, padding, fill=0, op="sum")
    area = pool[0] * pool[1]
    return _avg_codes(s, cnt, area, factor, pi, po)  # type: ignore[arg-type]


def global_avg_pool(q: np.ndarray, pi: int, po: int, keepdims: bool = False) -> np.ndarray:
    """DPU GlobalAveragePooling2D: sum over H x W times the factor of an H x W window, to ``po``.

    Square maps use :func:`avgpool_rescale`; a rectangle gets a plain average here (the quantizer's lcm
    rule for rectangles is simulated in float by the executor).
    """
    a = _i64(q)
    n, h, w, c = a.shape
    s = a.sum(axis=(1, 2), keepdims=True)
    area = h * w
    cnt = np.full((1, 1, 1, 1), area, dtype=np.int64)
    y = _avg_codes(s, cnt, area, avgpool_rescale(h, w)[1] if h == w else None, pi, po)
    return y if keepdims else y.reshape(n, c)


def upsample_nearest(q: np.ndarray, pi: int, po: int, size: tuple[int, int] | int) -> np.ndarray:
    """UpSampling2D (nearest): each code repeated size_h x size_w times, re-expressed at ``po``."""
    sh, sw = _pair(size)
    y = np.repeat(np.repeat(np.asarray(q), sh, axis=1), sw, axis=2)
    return requantize(y, pi, po)
