"""Power-of-two fixed point as the Vitis AI quantizer (pof2s) computes it: rounding, (de)quantization,
position selection (non-overflow, min-MSE, per-batch vote) and what-if methods.

Specification: ``DPU_NUMERICS.md`` sections 1 and 2. A tensor with position ``p`` stores
``q = clip(R(x * 2^p), -128, 127)`` and means ``q * 2^-p``.

The quantizer computes in float32 (TensorFlow graph ops); every function here reproduces the float32
arithmetic where it can change a result (the product ``x * 2^p``, ``floor(x + 0.5)``, the log in the
position formula).
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Sequence

import numpy as np

__all__ = [
    "Round",
    "round_values",
    "quantize",
    "dequantize",
    "fake_quant",
    "symmetric_range",
    "pos_non_overflow",
    "pos_min_mse",
    "choose_position",
    "vote",
    "pos_percentile",
    "pos_kl",
    "shift_round_half_up",
    "QMIN",
    "QMAX",
    "code_min",
]

QMIN = -128
QMAX = 127
# Symmetric widening ratio of the quantizer's get_min_max: -(2^8 - 2) / 2^8, exact in float32.
_MIN_MAX_RATIO = np.float32(-(2**8 - 2) / 2**8)
# sys.float_info.epsilon (2^-52) as the float32 the TensorFlow graph uses.
_EPS32 = np.float32(sys.float_info.epsilon)
# TensorFlow's graph optimizer rewrites ``-log(s) / log(2.0)`` into ``log(s) * (-1 / log(2.0))``
# (division by a constant becomes a multiplication by its float32 reciprocal). Measured on TF 2.21 with a
# tf.function over a variable, as the quantizer runs; see tests/test_dpu_fixed_point.py.
_NEG_INV_LN2_32 = np.float32(-1.0) / np.float32(math.log(2.0))


class Round(enum.Enum):
    """Rounding modes of the quantizer (values are the quantizer's ``round_mode`` integers)."""

    HALF_TO_EVEN = 0  # numpy / tf.round: weights and biases
    HALF_UP = 1  # floor(x + 0.5), "DPU round": inputs, activations, every integer right shift
    HALF_AWAY_FROM_ZERO = 2  # std::round
    FLOOR = 3  # DPU softmax only


def round_values(x: np.ndarray, mode: Round) -> np.ndarray:
    """Round ``x`` to integers (same float dtype) with ``mode``, in the dtype of ``x``.

    HALF_UP is ``floor(x + 0.5)`` computed in ``x``'s dtype, exactly as the quantizer does: in float32
    the largest float below 0.5 (0.49999997) rounds to 1, a faithful quirk of the real quantizer.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if mode is Round.HALF_TO_EVEN:
        return np.rint(x)
    if mode is Round.HALF_UP:
        return np.floor(x + x.dtype.type(0.5))
    if mode is Round.HALF_AWAY_FROM_ZERO:
        floored = np.floor(x)
        half = (x - floored) == 0.5  # exact: x - floor(x) is exact in binary floating point
        return np.where(half, np.where(x > 0, np.ceil(x), floored), np.rint(x))
    if mode is Round.FLOOR:
        return np.floor(x)
    raise ValueError(f"unknown rounding mode {mode!r}")


def _scale32(pos: int) -> np.float32:
    """2^pos as float32 (what ``tf.math.pow(2.0, pos)`` gives; exact for -149 <= pos <= 127)."""
    return np.float32(math.ldexp(1.0, int(pos))) if -150 < pos < 128 else np.float32(
        0.0 if pos < 0 else np.inf
    )


def code_min(narrow: bool = False) -> int:
    """The lowest int8 code: -128, or -127 for a narrow-range quantizer (``narrow_range``: the DPU softmax,
    a DPUCADF8H's activations)."""
    return QMIN + 1 if narrow else QMIN


def quantize(x: np.ndarray, pos: int, mode: Round, narrow: bool = False) -> np.ndarray:
    """Quantize float values to int8 codes: ``clip(R(float32(x) * 2^pos), -128 (-127 if narrow), 127)``.

    ``x`` is cast to float32 first and the product is a float32 product, like the quantizer's graph.
    """
    x32 = np.asarray(x, dtype=np.float32)
    # In place on one float32 temporary (this runs on every activation of every walk): the same
    # float32 operations as round_values, in the same order.
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.multiply(x32, _scale32(pos))
        if mode is Round.HALF_UP:
            np.add(r, np.float32(0.5), out=r)
            np.floor(r, out=r)
        elif mode is Round.HALF_TO_EVEN:
            np.rint(r, out=r)
        else:
            r = round_values(r, mode)
    np.clip(r, code_min(narrow), QMAX, out=r)
    if r.size and np.isnan(r.max()):  # NaN (nan input, or inf * 0) codes as 0; max() is NaN iff one is
        r[np.isnan(r)] = 0.0
    return r.astype(np.int8)


def dequantize(q: np.ndarray, pos: int) -> np.ndarray:
    """int codes at position ``pos`` to float32 values ``q * 2^-pos`` (exact for int8 codes)."""
    # one pass: the ufunc casts the codes to float32 and divides (same values as cast, then divide)
    return np.divide(np.asarray(q), _scale32(pos), dtype=np.float32)


def fake_quant(x: np.ndarray, pos: int, mode: Round, narrow: bool = False) -> np.ndarray:
    """Quantize then dequantize (float32), as the quantizer's fake-quant simulation does."""
    return dequantize(quantize(x, pos, mode, narrow), pos)


def symmetric_range(mn: float, mx: float) -> tuple[np.float32, np.float32]:
    """The quantizer's symmetric widening of a batch range, in float32.

    ``lo = min(mn, mx / r)``, ``hi = max(mx, mn * r)`` with ``r = -(2^8 - 2) / 2^8``.
    """
    mn32, mx32 = np.float32(mn), np.float32(mx)
    lo = np.minimum(mn32, mx32 / _MIN_MAX_RATIO)
    hi = np.maximum(mx32, mn32 * _MIN_MAX_RATIO)
    return np.float32(lo), np.float32(hi)


def _pos_from_scale_inv(scale_inv: np.float32) -> int:
    """floor(-log2(max(scale_inv, eps))) the way the quantizer's TF graph evaluates it (float32).

    The float32 log of a scalar is correctly rounded in TF (glibc logf); we get the same value from
    the float64 log rounded to float32. Then the product with the float32 constant -1/ln 2.
    Consequence: exact powers 2^-k do not always give k (k = 13, 15, 26, 27, 30, 31, 49 and 52 give
    k - 1), and an all-zero tensor (scale_inv = eps = 2^-52) gets 51, not 52.
    """
    s = np.maximum(np.float32(scale_inv), _EPS32)
    log32 = np.float32(math.log(float(s)))
    return int(math.floor(float(log32 * _NEG_INV_LN2_32)))


def pos_non_overflow(mn: float, mx: float, narrow: bool = False) -> int:
    """Method 0 (non-overflow) position for a batch with minimum ``mn`` and maximum ``mx``.

    Symmetric widening (see :func:`symmetric_range`), then
    ``floor(-log2(max(lo / qmin, hi / 127, eps)))`` in float32 as the quantizer's graph computes it.
    With ``narrow`` the quantizer widens to ``[-max|x|, max|x|]`` and divides by -127.
    """
    if narrow:
        mn32, mx32 = np.float32(mn), np.float32(mx)
        lo, hi = np.minimum(mn32, -mx32), np.maximum(mx32, -mn32)
    else:
        lo, hi = symmetric_range(mn, mx)
    scale_inv = np.maximum(np.float32(lo / np.float32(code_min(narrow))), np.float32(hi / np.float32(QMAX)))
    return _pos_from_scale_inv(np.float32(scale_inv))


def _sq_error(x32: np.ndarray, pos: int, mode: Round, narrow: bool) -> float:
    """sum((x - fake_quant(x))^2): float32 differences and squares, summed in float64."""
    d = x32 - fake_quant(x32, pos, mode, narrow)
    return float(np.sum(np.square(d, dtype=np.float32), dtype=np.float64))


def pos_min_mse(x: np.ndarray, mode: Round, narrow: bool = False) -> int:
    """Method 1 (min-MSE): the position in ``p0 .. p0 + 4`` (p0 = non-overflow) with the smallest squared
    error of fake quantization in ``mode``; the first minimum wins a tie."""
    x32 = np.asarray(x, dtype=np.float32)
    if x32.size == 0:
        return pos_non_overflow(0.0, 0.0, narrow)
    p0 = pos_non_overflow(float(x32.min()), float(x32.max()), narrow)
    errs = [_sq_error(x32, p0 + i, mode, narrow) for i in range(5)]
    return p0 + int(np.argmin(errs))  # argmin returns the first minimum


def choose_position(x: np.ndarray, method: int, mode: Round, narrow: bool = False) -> int:
    """Position of one batch with the quantizer's method (0 non-overflow, 1 min-MSE)."""
    x32 = np.asarray(x, dtype=np.float32)
    if method == 0:
        if x32.size == 0:
            return pos_non_overflow(0.0, 0.0, narrow)
        return pos_non_overflow(float(x32.min()), float(x32.max()), narrow)
    if method == 1:
        return pos_min_mse(x32, mode, narrow)
    raise ValueError(f"unknown position method {method} (0 non-overflow, 1 min-MSE)")


def vote(per_batch: Sequence[int]) -> int:
    """Final position from per-batch positions: the most common; a tie goes to the tied value seen
    first in batch order (the quantizer's calibration rule)."""
    if len(per_batch) == 0:
        raise ValueError("vote needs at least one batch position")
    counts: dict[int, int] = {}
    for p in per_batch:  # dicts keep insertion order: first-seen order breaks ties below
        counts[int(p)] = counts.get(int(p), 0) + 1
    best = max(counts.values())
    return next(p for p, c in counts.items() if c == best)


def pos_percentile(x: np.ndarray, pct: float) -> int:
    """What-if position: non-overflow position of the range ``[-t, t]`` with ``t`` the ``pct`` percentile
    of ``|x|``. Not what vai_q pof2s does (Vitis offers percentile only for float-scale strategies)."""
    a = np.abs(np.asarray(x, dtype=np.float32)).ravel()
    if not 0.0 < pct <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    t = float(np.percentile(a, pct)) if a.size else 0.0
    return pos_non_overflow(-t, t)


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    p = p / p.sum()
    q = q / q.sum()
    with np.errstate(divide="ignore"):
        return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-30))))


def pos_kl(x: np.ndarray, mode: Round = Round.HALF_UP, bins: int = 2048) -> int:
    """What-if position minimising the KL divergence (TensorRT-style histogram method) over the
    power-of-two candidates ``p0 .. p0 + 4`` (p0 = non-overflow). Not what vai_q pof2s does.

    For a candidate ``p`` the clipping threshold is ``128 * 2^-p``: the reference distribution P is the
    histogram of ``|x|`` with the mass above the threshold folded into the last bin below it; Q is P
    merged into the bins each int8 code covers (the code of a bin is found with ``mode``) and spread
    uniformly over that cell's non-empty bins. Ties go to the first (widest) candidate.
    """
    x32 = np.asarray(x, dtype=np.float32).ravel()
    a = np.abs(x32)
    amax = float(a.max()) if a.size else 0.0
    p0 = pos_non_overflow(float(x32.min()) if a.size else 0.0, float(x32.max()) if a.size else 0.0)
    if amax == 0.0:
        return p0
    hist, edges = np.histogram(a, bins=bins, range=(0.0, amax))
    centres = (edges[:-1] + edges[1:]) / 2.0
    best_p, best_kl = p0, math.inf
    for p in range(p0, p0 + 5):
        thr = 128.0 * 2.0**-p
        inside = centres < thr
        if inside.sum() < 2:
            continue
        ref = hist[inside].astype(np.float64)
        ref[-1] += hist[~inside].sum()
        codes = round_values(centres[inside] * 2.0**p, mode)
        cand = np.zeros_like(ref)
        for c in np.unique(codes):
            sel = codes == c
            nz = sel & (ref > 0)
            if nz.any():
                cand[nz] = ref[sel].sum() / nz.sum()
        kl = _kl_divergence(ref, cand)
        if kl < best_kl:
            best_p, best_kl = p, kl
    return best_p


def shift_round_half_up(acc: np.ndarray, shift: int) -> np.ndarray:
    """Integer right shift with DPU rounding: ``floor(acc / 2^shift + 0.5)`` (int64 in and out).

    A negative value exactly halfway rounds towards +inf (-2.5 -> -2). ``shift <= 0`` is a left shift.
    Range: the caller keeps ``|acc| * 2^max(0, -shift) < 2^62``.
    """
    a = np.asarray(acc, dtype=np.int64)
    shift = int(shift)
    if shift >= 63:
        # |a| < 2^62 (the caller's range): a / 2^shift + 1/2 lies in (0, 1), so the floor is 0 (numpy's
        # shifts by 64 or more are undefined: they gave -1)
        return np.zeros_like(a)
    if shift > 0:
        # floor((a + 2^(s-1)) / 2^s); >> on int64 is an arithmetic shift, i.e. floor division.
        return (a + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    if shift < 0:
        return a << np.int64(-shift)
    return a.copy()
