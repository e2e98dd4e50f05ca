"""Findings: one function per cause of int8 error, each returning a :class:`Finding` or ``None``.

Every function takes plain numbers and arrays (float activations from a capture, positions, error
statistics from the emulator), so each cause can be tested on its own. :mod:`qinspect.analysis.diagnose`
gathers the inputs and ranks the results.

Severity
--------
``severity_db`` estimates how much output SQNR (dB) the cause costs. Each function measures the
*share* ``f`` of its layer's quantization error that the cause explains (how, differs per kind, and is
written in the evidence). Sensitivity gives the layer's *noise fraction* ``s``: the output noise energy
when that layer alone is quantized over the output noise energy of the fully quantized model (capped
at 1). Treating noises as additive, removing the cause removes ``f * s`` of the output noise, so::

    severity_db = -10 * log10(1 - f * s)

(:func:`output_cost_db`). (The keep-float gain ``G`` would give ``s = 1 - 10^(-G/10)`` under the same
model, but as a difference of two nearly equal noise sums it is the noisier estimate.) Where a cause can
be undone in the emulator (a constraint, an alignment), the severity is instead the *measured* output
SQNR gain of undoing it. Without sensitivity figures the severity is the *local* cost (the SQNR the
layer's own tensor would regain) and the evidence says so (``severity_basis``).

Evidence entries are ``{"value": ..., "how": "..."}``. A statistic the data cannot support (too few
values for a 99.99th percentile, say) is given as ``None`` with the reason, never estimated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.analysis.histograms import _per_channel, channel_ranges, output_channel_axis
from qinspect.analysis.metrics import json_safe
from qinspect.dpu.fixed_point import (
    QMAX,
    Round,
    choose_position,
    code_min,
    fake_quant,
    pos_min_mse,
    pos_non_overflow,
    quantize,
    round_values,
)

KINDS = (
    "saturation",
    "outlier_range",
    "channel_spread",
    "coverage",
    "error_growth",
    "alignment",
    "constraint",
    "cpu_fallback",
    "hw_vs_sim",
    "function_change",
    "accumulated_rounding",
)

# Thresholds (tuned so a plainly calibrated model yields no finding; see tests/test_analysis_findings.py).
SAT_MIN_FRAC = 1e-3  # clipped fraction (both ends) before saturation is a finding
SAT_MIN_SHARE = 0.25  # share of the layer's error that clipping must explain
OUTLIER_MIN_BITS = 2.0  # log2(max|x| / bulk threshold)
OUTLIER_MIN_SHARE = 0.5
SPREAD_MIN_BITS = 3.0  # log2(largest / smallest channel max|w|)
SPREAD_MIN_GAIN_DB = 3.0  # channel-averaged weight SQNR an ideal equalization would gain
HANDFUL_CODES = 8  # a channel using this many distinct codes or fewer "quantizes to a handful"
COVERAGE_MIN_FRAC = 1e-3
COVERAGE_MIN_SHARE = 0.25
GROWTH_MIN_DROP_DB = 6.0
GROWTH_MAX_SQNR_DB = 30.0
ALIGN_MIN_LOSS_DB = 9.0  # more than one position step (~6 dB), which is routine
CONSTRAINT_MIN_LOSS_DB = 0.5
# Values needed before a tail statistic is reported: at least this many values beyond the percentile.
TAIL_MIN_COUNT = 10
PERCENTILES = (99.99, 99.9, 99.0)
MAX_SEVERITY_DB = 30.0


@dataclass
class Finding:
    """One diagnosed cause of error at one layer."""

    layer: str
    kind: str
    severity_db: float
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: str = ""
    origin: str | None = None  # the layer where the cause starts (qinspect.analysis.remedies)
    affects: list[str] = field(default_factory=list)  # downstream layers with the same cause
    noise_share: float | None = None  # share of the output's error power the measured fix removes
    remedy: dict[str, Any] | None = None  # the fix tried in the emulator and what it measured
    # The emulator change behind ``remedy`` (a qinspect.analysis.remedies.Fix), so the window can apply it
    # again as a what-if; not part of the JSON (its positions are keyed by emulator slots).
    fix: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (non-finite floats as strings, see :func:`json_safe`)."""
        return json_safe(
            {
                "layer": self.layer,
                "kind": self.kind,
                "severity": self.severity_db + 0.0,  # + 0.0: no "-0.0" in the JSON
                "origin": self.origin,
                "affects": self.affects,
                "noise_share": self.noise_share,
                "remedy": self.remedy,
                "evidence": self.evidence,
                "advice": self.advice,
            }
        )


def ev(value: Any, how: str) -> dict[str, Any]:
    """One evidence entry: a number (or None) and how it was computed."""
    if isinstance(value, np.generic):
        value = value.item()
    return {"value": value, "how": how}


# --------------------------------------------------------------------------------------------- helpers


def output_cost_db(share: float, noise_frac: float) -> float:
    """Output SQNR cost (dB) of a cause explaining ``share`` of the error of a layer that produces
    ``noise_frac`` of the output noise: ``-10 log10(1 - share * noise_frac)``, both clipped to [0, 1]."""
    share = min(max(float(share), 0.0), 1.0)
    frac = float(noise_frac)
    frac = 0.0 if math.isnan(frac) else min(max(frac, 0.0), 1.0)
    # Capped at 30 dB: when one cause would remove (nearly) all output noise the additive model has
    # broken down and a larger figure would mean nothing.
    removed = min(share * frac, 1.0 - 10.0 ** (-MAX_SEVERITY_DB / 10.0))
    return -10.0 * math.log10(1.0 - removed)


def _severity(evidence: dict[str, Any], share: float, local_cost_db: float, noise_frac: float | None) -> float:
    """Fill the severity evidence and return severity_db (output-based when ``noise_frac`` is known)."""
    evidence["share"] = ev(share, "fraction of the layer's quantization error this cause explains")
    evidence["local_cost_db"] = ev(local_cost_db, "dB of SQNR the layer's own tensor would regain without it")
    if noise_frac is None:
        evidence["severity_basis"] = ev("local", "no sensitivity figure: severity is the local cost")
        return local_cost_db
    evidence["layer_noise_frac"] = ev(noise_frac, "output noise with only this layer quantized / output "
                                                  "noise with all layers quantized")
    evidence["severity_basis"] = ev(
        "output", "-10*log10(1 - share * min(layer_noise_frac, 1)): additive output noise model"
    )
    return output_cost_db(share, noise_frac)


def _sq(d: np.ndarray) -> float:
    d = np.asarray(d, dtype=np.float64).ravel()
    return float(np.dot(d, d))


def _quant_error(x: np.ndarray, pos: int, mode: Round, narrow: bool = False) -> float:
    """Sum of squared fake-quantization error (with clipping)."""
    return _sq(np.asarray(x, np.float32) - fake_quant(x, pos, mode, narrow))


def _round_error(x: np.ndarray, pos: int, mode: Round) -> float:
    """Sum of squared rounding error at ``pos`` with no clipping (an unbounded integer range)."""
    x32 = np.asarray(x, np.float32)
    scale = np.float32(2.0**pos)
    return _sq(x32 - round_values(x32 * scale, mode) / scale)


def _db(ratio: float) -> float:
    if ratio <= 0:
        return -math.inf if ratio == 0 else math.nan
    return 10.0 * math.log10(ratio)


def _sqnr(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _qrange(pos: int, narrow: bool = False) -> tuple[float, float]:
    s = 2.0 ** (-pos)
    return code_min(narrow) * s, QMAX * s


def _few_values_note(n: int) -> dict[str, Any] | None:
    if n < 1000:
        return ev(f"only {n} values", f"fractions below 1/{n} cannot be observed with this many values")
    return None


# --------------------------------------------------------------------------------------------- kinds


def saturation(
    layer: str,
    x: np.ndarray,
    pos: int,
    mode: Round = Round.HALF_UP,
    narrow: bool = False,
    noise_frac: float | None = None,
    data: str = "calibration",
) -> Finding | None:
    """Values clipped at either end of the int8 range of ``pos`` (``x``: the float activation).

    Share: ``(E(clipped) - E(unclipped)) / E(clipped)``, ``E`` the squared fake-quantization error at
    ``pos`` with and without the clip (the unclipped one has only rounding error).
    """
    x = np.asarray(x, np.float32).ravel()
    n = int(x.size)
    if n == 0:
        return None
    lo, hi = _qrange(pos, narrow)
    n_lo = int(np.count_nonzero(x < lo))
    n_hi = int(np.count_nonzero(x > hi))
    frac = (n_lo + n_hi) / n
    if frac < SAT_MIN_FRAC:
        return None
    e_clip = _quant_error(x, pos, mode, narrow)
    e_round = _round_error(x, pos, mode)
    share = (e_clip - e_round) / e_clip if e_clip > 0 else 0.0
    if share < SAT_MIN_SHARE:
        return None
    signal = _sq(x)
    evidence: dict[str, Any] = {
        "data": ev(data, "which capture's activations these figures are measured on"),
        "clipped_lo_frac": ev(n_lo / n, f"values below {lo:g} (= {code_min(narrow)} * 2^-{pos}) / all {n} "
                              "values"),
        "clipped_hi_frac": ev(n_hi / n, f"values above {hi:g} (= 127 * 2^-{pos}) / all {n} values"),
        "position": ev(int(pos), "the activation's int8 position p (scale 2^-p)"),
        "representable_range": ev([lo, hi], f"[{code_min(narrow)}, 127] * 2^-p, float units"),
        "float_range": ev([float(x.min()), float(x.max())], "min and max of the float activation"),
        "sqnr_db": ev(_sqnr(signal, e_clip), "10*log10(sum x^2 / sum (x - fakequant(x))^2) at p"),
        "sqnr_unclipped_db": ev(_sqnr(signal, e_round), "same, with rounding only (no clip) at p"),
    }
    p0 = _non_overflow(x, narrow)
    if p0 < pos:
        evidence["non_overflow_position"] = ev(p0, "position that covers max|x| (method 0)")
        evidence["sqnr_non_overflow_db"] = ev(
            _sqnr(signal, _quant_error(x, p0, mode, narrow)), "SQNR of the activation at that position"
        )
    note = _few_values_note(n)
    if note:
        evidence["note"] = note
    local = _db(e_clip / e_round) if e_round > 0 else math.inf
    severity = _severity(evidence, share, local, noise_frac)
    advice = (
        f"{_clip_sides(n_lo / n, n_hi / n)}: lower the position "
        f"(non-overflow instead of min-MSE for this layer), or bound the activation in the float model "
        f"(ReLU6 / clipping) and retrain."
    )
    if data != "calibration":
        advice = "Calibrate with data that reaches this range; " + advice[0].lower() + advice[1:]
    return Finding(layer, "saturation", severity, evidence, advice)


def _clip_sides(lo: float, hi: float) -> str:
    """Where values clip, each end with its own share ("0.085% of values clip at the bottom of the range
    and 0.021% at the top")."""
    sides = sorted([(lo, "bottom"), (hi, "top")], reverse=True)
    text = f"{100 * sides[0][0]:.2g}% of values clip at the {sides[0][1]} of the range"
    return text + (f" and {100 * sides[1][0]:.2g}% at the {sides[1][1]}" if sides[1][0] > 0 else "")


def _non_overflow(x: np.ndarray, narrow: bool) -> int:
    return pos_non_overflow(float(x.min()), float(x.max()), narrow)


def tail_threshold(absx: np.ndarray) -> tuple[dict[str, Any], float | None, float | None]:
    """Bulk threshold of ``|x|``: the highest supported percentile (99.99, then 99.9, 99) whose
    max/percentile ratio reaches ``2^OUTLIER_MIN_BITS``, else the highest supported one.

    A percentile is supported when at least ``TAIL_MIN_COUNT`` values lie beyond it. Returns
    (evidence, threshold, percentile); threshold None when no percentile is supported.
    """
    n = int(absx.size)
    amax = float(absx.max()) if n else 0.0
    evidence: dict[str, Any] = {}
    chosen: tuple[float, float] | None = None  # (threshold, percentile)
    first: tuple[float, float] | None = None
    for pct in PERCENTILES:
        name = f"p{pct:g}_abs"
        need = math.ceil(TAIL_MIN_COUNT / (1.0 - pct / 100.0))
        if n < need:
            evidence[name] = ev(None, f"needs at least {need} values ({TAIL_MIN_COUNT} beyond it); have {n}")
            continue
        t = float(np.percentile(absx, pct))
        evidence[name] = ev(t, f"{pct:g}th percentile of |x| over all {n} values")
        if first is None:
            first = (t, pct)
        if chosen is None and t > 0 and amax / t >= 2.0**OUTLIER_MIN_BITS:
            chosen = (t, pct)
    pick = chosen or first
    if pick is None:
        return evidence, None, None
    return evidence, pick[0], pick[1]


def outlier_range(
    layer: str,
    x: np.ndarray,
    pos: int,
    mode: Round = Round.HALF_UP,
    narrow: bool = False,
    noise_frac: float | None = None,
) -> Finding | None:
    """A range stretched by rare outliers, leaving the bulk of the values few codes.

    Bulk: ``|x| <= t``, ``t`` a high percentile of ``|x|`` (:func:`tail_threshold`). Share:
    ``(E(p) - E_bulk(p_bulk)) / E(p)``: the error at the chosen position ``p`` minus the error the
    bulk alone would have at the min-MSE position of the bulk alone.
    """
    x = np.asarray(x, np.float32).ravel()
    if x.size == 0:
        return None
    absx = np.abs(x)
    amax = float(absx.max())
    evidence, t, pct = tail_threshold(absx)
    if t is None:
        return None  # not enough values to say what the bulk is; never guess
    if t == 0 or amax == 0:
        return None
    bits = math.log2(amax / t)
    if bits < OUTLIER_MIN_BITS:
        return None
    bulk = x[absx <= t]
    e_all = _quant_error(x, pos, mode, narrow)
    p_bulk = pos_min_mse(bulk, mode, narrow)
    e_bulk = _quant_error(bulk, p_bulk, mode, narrow)
    share = (e_all - e_bulk) / e_all if e_all > 0 else 0.0
    if share < OUTLIER_MIN_SHARE:
        return None
    codes_bulk = int(np.unique(quantize(bulk, pos, mode, narrow)).size)
    codes_bulk_best = int(np.unique(quantize(bulk, p_bulk, mode, narrow)).size)
    n_out = int(x.size - bulk.size)
    n_far = int(np.count_nonzero(absx > t * 2.0**OUTLIER_MIN_BITS))
    evidence.update(
        {
            "max_abs": ev(amax, "max |x| over all values"),
            "bulk_threshold": ev(t, f"the {pct:g}th percentile of |x| (see tail_threshold)"),
            "bits_wasted": ev(bits, "log2(max|x| / bulk threshold): bits of range spent on outliers"),
            "tail_frac": ev(n_out / x.size, "values with |x| above the bulk threshold / all values"),
            "far_outlier_frac": ev(n_far / x.size, f"values with |x| above {2**OUTLIER_MIN_BITS:g}x the bulk "
                                                   "threshold / all values"),
            "position": ev(int(pos), "the activation's int8 position"),
            "codes_used_by_bulk": ev(codes_bulk, "distinct int8 codes the bulk values take at the position"),
            "bulk_position": ev(int(p_bulk), "min-MSE position of the bulk alone"),
            "codes_used_by_bulk_at_bulk_position": ev(codes_bulk_best, "same, at the bulk's own position"),
            "sqnr_db": ev(_sqnr(_sq(x), e_all), "SQNR of the whole activation at the position"),
        }
    )
    local = _db(e_all / e_bulk) if e_bulk > 0 else math.inf
    severity = _severity(evidence, share, local, noise_frac)
    advice = (
        f"{100 * n_far / x.size:.2g}% of values lie beyond {2**OUTLIER_MIN_BITS:g}x the bulk, the largest at "
        f"{2**bits:.0f}x: clip the activation in the "
        "float model (ReLU6 or a learned clip) and retrain, or keep this layer in float."
    )
    return Finding(layer, "outlier_range", severity, evidence, advice)


def _channel_rel_errors(per: np.ndarray, pos: np.ndarray | int, mode: Round) -> np.ndarray:
    """Per-row relative squared fake-quant error ``||w - fq(w)||^2 / ||w||^2`` (rows = channels)."""
    out = np.zeros(per.shape[0])
    positions = np.broadcast_to(np.asarray(pos), (per.shape[0],))
    for c in range(per.shape[0]):
        row = per[c]
        energy = _sq(row)
        out[c] = _sq(row - fake_quant(row, int(positions[c]), mode)) / energy if energy > 0 else 0.0
    return out


def _per_channel_rows(w: np.ndarray, class_name: str, weight_name: str) -> np.ndarray:
    axis = output_channel_axis(class_name, weight_name)
    if axis is None:
        raise ValueError(f"{weight_name} of {class_name} has no output-channel axis")
    return _per_channel(np.asarray(w, np.float32), axis)


def channel_spread(
    layer: str,
    class_name: str,
    kernel: np.ndarray,
    weight_pos: int,
    weight_name: str = "kernel",
    other_rel_error: float = 0.0,
    cle: str = "unknown",
    noise_frac: float | None = None,
) -> Finding | None:
    """Per-tensor weight quantization over output channels whose ranges differ widely.

    Each output channel counts equally (downstream layers rescale channels, so a small channel's
    relative error matters as much as a large one's). Channel-averaged relative weight error
    ``r(p) = mean_c ||w_c - fq(w_c, p)||^2 / ||w_c||^2`` at the per-tensor position, against ``r`` with
    each channel at its own min-MSE position: what an ideal equalization (CLE at its best) reaches.
    Share: ``(r_tensor - r_ideal) / (r_tensor + other_rel_error)``, the other term being the relative
    error of the layer's other error sources (its input quantization) when known.
    ``cle``: "applied", "disabled", "not applicable: <why>" or "unknown".
    """
    per = _per_channel_rows(kernel, class_name, weight_name)
    if per.shape[0] < 2:
        return None
    cr = channel_ranges(kernel, class_name, weight_name)
    nz = cr.channel_absmax > 0
    if nz.sum() < 2:
        return None
    spread = cr.spread_bits
    if spread < SPREAD_MIN_BITS:
        return None
    mode = Round.HALF_TO_EVEN
    r_tensor_c = _channel_rel_errors(per[nz], weight_pos, mode)
    own = np.array([pos_min_mse(row, mode) for row in per[nz]])
    r_ideal_c = _channel_rel_errors(per[nz], own, mode)
    r_tensor, r_ideal = float(r_tensor_c.mean()), float(r_ideal_c.mean())
    gain = _db(r_tensor / r_ideal) if r_ideal > 0 else math.inf
    if gain < SPREAD_MIN_GAIN_DB:
        return None
    r_other = max(0.0, float(other_rel_error))
    share = (r_tensor - r_ideal) / (r_tensor + r_other) if r_tensor + r_other > 0 else 0.0
    codes = np.array([np.unique(quantize(row, weight_pos, mode)).size for row in per])
    # a 3x3 depthwise channel has 9 weights: 8 codes there only means two weights share one, so the
    # bound is also half the channel's weights
    handful = max(1, min(HANDFUL_CODES, per.shape[1] // 2))
    few = np.flatnonzero(codes <= handful)
    evidence = {
        "channels": ev(int(per.shape[0]), "output channels of the kernel"),
        "spread_bits": ev(spread, "log2(largest / smallest non-zero per-channel max|w|)"),
        "tensor_max_abs": ev(cr.tensor_absmax, "max|w| over the whole kernel (sets the one position)"),
        "channel_max_abs": ev(cr.channel_absmax.tolist(), "max|w| per output channel"),
        "bits_wasted": ev(cr.bits_wasted.tolist(), "log2(tensor max|w| / channel max|w|) per channel"),
        "weight_position": ev(int(weight_pos), "the kernel's per-tensor position"),
        "channel_codes": ev(codes.tolist(), "distinct int8 codes each channel's weights take"),
        "handful_channels": ev(few.tolist(), f"channels using {handful} codes or fewer (at most "
                                             f"{HANDFUL_CODES}, and half of a channel's {per.shape[1]} weights)"),
        "weight_sqnr_db": ev(-_db(r_tensor), "-10*log10(channel-averaged relative error) at the position"),
        "weight_sqnr_equalized_db": ev(-_db(r_ideal), "same with each channel at its own min-MSE position"),
        "equalization_gain_db": ev(gain, "what ideal per-channel equalization (CLE at best) would gain"),
        "cle": ev(cle, "cross-layer equalization for this layer in this run"),
    }
    evidence["other_rel_error"] = ev(r_other, "relative error (noise/signal energy) of the layer's input "
                                              "quantization, the other error source of its isolated output")
    # the layer's own output regains what this share of its error is (as every kind's local cost), not the
    # kernel-alone equalization gain above, which leaves out the layer's input quantization
    local = -10 * math.log10(1 - share) if share < 1 else math.inf
    severity = _severity(evidence, share, local, noise_frac)
    if cle == "disabled":
        advice = "Enable cross-layer equalization (CLE): this kernel's channel ranges differ by " \
                 f"{spread:.1f} bits."
    elif cle.startswith("not applicable"):
        advice = ("Cross-layer equalization could not pair this layer: put a conv right after it, joined "
                  "directly or by Activation('relu') (not ReLU6), or keep this layer in float.")
    elif cle == "applied":
        advice = "CLE was applied and a spread remains (its scale is clipped to [0.1, 10]): keep this " \
                 "layer in float, or retrain with weight regularisation."
    else:
        advice = "Equalize channel ranges (CLE), or keep this layer in float."
    return Finding(layer, "channel_spread", severity, evidence, advice)


def coverage(
    layer: str,
    x_eval: np.ndarray,
    pos: int,
    calib_range: tuple[float, float],
    mode: Round = Round.HALF_UP,
    narrow: bool = False,
    noise_frac: float | None = None,
    method: int = 1,
) -> Finding | None:
    """Evaluation values that the calibration data never reached.

    ``pos`` is the calibrated position and ``calib_range`` the calibration data's (min, max). Share:
    ``(E_eval(pos) - E_eval(p_eval)) / E_eval(pos)``, ``p_eval`` the position the tensor's quantizer
    method picks on the evaluation data itself (what calibrating on it would pick): min-MSE (``method``
    1, activations) or non-overflow (0: model inputs and inserted input quantizers).
    """
    x = np.asarray(x_eval, np.float32).ravel()
    n = int(x.size)
    if n == 0:
        return None
    lo, hi = _qrange(pos, narrow)
    outside_q = int(np.count_nonzero((x < lo) | (x > hi)))
    outside_c = int(np.count_nonzero((x < calib_range[0]) | (x > calib_range[1])))
    frac_q = outside_q / n
    # Values beyond the calibration data's range that the int8 range still holds cost nothing.
    if frac_q < COVERAGE_MIN_FRAC:
        return None
    e_cal = _quant_error(x, pos, mode, narrow)
    p_eval = choose_position(x, method, mode, narrow)
    if p_eval >= pos:  # the evaluation data wants no wider range: the clipping is the method's own choice
        return None
    e_eval = _quant_error(x, p_eval, mode, narrow)
    share = (e_cal - e_eval) / e_cal if e_cal > 0 else 0.0
    if share < COVERAGE_MIN_SHARE:
        return None
    signal = _sq(x)
    evidence = {
        "outside_int8_range_frac": ev(frac_q, f"evaluation values outside [{lo:g}, {hi:g}] (int8 range at "
                                              f"the calibrated position) / all {n} values"),
        "outside_calib_range_frac": ev(outside_c / n, "evaluation values outside the calibration data's "
                                                      "[min, max] / all values"),
        "calib_range": ev([float(calib_range[0]), float(calib_range[1])], "min and max over the calibration capture"),
        "eval_range": ev([float(x.min()), float(x.max())], "min and max over the evaluation capture"),
        "position": ev(int(pos), "calibrated position"),
        "eval_position": ev(int(p_eval), ("non-overflow" if method == 0 else "min-MSE") + " position of the "
                            "evaluation data (the method this tensor's quantizer uses)"),
        "sqnr_eval_db": ev(_sqnr(signal, e_cal), "SQNR of the evaluation activation at the calibrated position"),
        "sqnr_eval_own_position_db": ev(_sqnr(signal, e_eval), "same at the evaluation data's own position"),
    }
    note = _few_values_note(n)
    if note:
        evidence["note"] = note
    local = _db(e_cal / e_eval) if e_eval > 0 else math.inf
    severity = _severity(evidence, share, local, noise_frac)
    advice = (f"{100 * frac_q:.2g}% of evaluation values fall outside the calibrated range: calibrate "
              "with more representative data (include the inputs the model sees in use).")
    return Finding(layer, "coverage", severity, evidence, advice)


def error_growth(
    layer: str,
    acc_in_sqnr_db: float,
    acc_out_sqnr_db: float,
    own_sqnr_db: float,
    noise_frac: float | None = None,
    explained_share: float = 0.0,
) -> Finding | None:
    """A layer whose accumulated SQNR drops much more than it inherits.

    ``acc_in``: accumulated SQNR of the layer's input(s); ``acc_out``: of its output; ``own``: the SQNR
    of the layer's own quantization (weights and output, fed with float inputs, so rounding its inputs,
    which belongs to the layers producing them, is not counted). Own share of the error at the output:
    ``10^((acc_out - own) / 10)`` (own noise over total noise, noises additive), reduced by
    ``explained_share`` (the share other findings at this layer already explain) so the same error is
    not ranked twice.
    """
    if not (math.isfinite(acc_out_sqnr_db) and math.isfinite(own_sqnr_db)):
        return None
    drop = acc_in_sqnr_db - acc_out_sqnr_db
    if not (drop >= GROWTH_MIN_DROP_DB and acc_out_sqnr_db < GROWTH_MAX_SQNR_DB):
        return None
    own = min(1.0, 10.0 ** ((acc_out_sqnr_db - own_sqnr_db) / 10.0))
    share = own * (1.0 - min(max(explained_share, 0.0), 1.0))
    evidence = {
        "acc_in_sqnr_db": ev(acc_in_sqnr_db, "accumulated SQNR of the layer's input(s): int8 pipeline from "
                                             "the model input against float, sums over all samples"),
        "acc_out_sqnr_db": ev(acc_out_sqnr_db, "accumulated SQNR of the layer's output"),
        "drop_db": ev(drop, "acc_in - acc_out"),
        "own_sqnr_db": ev(own_sqnr_db, "SQNR of the layer's own quantization: weights and output quantized, "
                                       "inputs the float reference"),
        "own_share": ev(own, "10^((acc_out - own)/10): own noise / total noise at the output"),
        "explained_by_other_findings": ev(explained_share, "share of this layer's error that other "
                                                           "findings at this layer explain"),
        "mechanism": ev("own error" if own >= 0.5 else "amplifies inherited error",
                        "own error if own_share >= 0.5"),
    }
    local = _db(1.0 / (1.0 - share)) if share < 1 else math.inf
    severity = _severity(evidence, share, local, noise_frac)
    if own >= 0.5:
        advice = "This layer adds most of its error itself: inspect its weights' and output's "\
                 "quantization, or keep it in float."
    else:
        advice = "This layer amplifies the error it inherits (small output from large inputs): keep "\
                 "the layers feeding it more precise, or keep this layer in float."
    return Finding(layer, "error_growth", severity, evidence, advice)


@dataclass
class Branch:
    """One input of an aligned layer: its float tensor, its own position and the layer it comes from."""

    layer: str
    x: np.ndarray
    own_pos: int
    noise_frac: float | None = None
    node: str = ""  # the emulator node producing the branch (for cross-referencing findings)


def alignment(
    layer: str,
    branches: Sequence[Branch],
    shared_pos: int,
    rule: str = "concat",
    mode: Round = Round.HALF_UP,
    measured_gain_db: float | None = None,
    what_if: str = "",
) -> Finding | None:
    """Concat / pool alignment forcing a branch to a worse position than its own.

    Per branch: SQNR of its float tensor at its own position against at the shared position.
    Severity: ``measured_gain_db`` when given (the output SQNR gain of undoing the alignment in the
    emulator, described by ``what_if``); else the branches' output costs added in the noise domain,
    each ``share = (E(shared) - E(own)) / E(shared)`` times the branch layer's noise fraction; else the
    worst local loss.
    """
    rows = []
    removed = 0.0
    local_worst = 0.0
    have_frac = True
    for b in branches:
        x = np.asarray(b.x, np.float32).ravel()
        if x.size == 0 or b.own_pos == shared_pos:
            continue
        signal = _sq(x)
        e_own = _quant_error(x, b.own_pos, mode)
        e_shared = _quant_error(x, shared_pos, mode)
        loss = _sqnr(signal, e_own) - _sqnr(signal, e_shared)
        share = max(0.0, (e_shared - e_own) / e_shared) if e_shared > 0 else 0.0
        rows.append({"branch": b.layer, "node": b.node or b.layer, "own_position": int(b.own_pos),
                     "sqnr_own_db": _sqnr(signal, e_own),
                     "sqnr_shared_db": _sqnr(signal, e_shared), "sqnr_loss_db": loss, "share": share})
        if math.isfinite(loss):
            local_worst = max(local_worst, loss)
        elif loss > 0:
            local_worst = math.inf
        if b.noise_frac is None:
            have_frac = False
        else:
            removed += share * min(max(b.noise_frac, 0.0), 1.0)
    if not rows or local_worst < ALIGN_MIN_LOSS_DB:
        return None
    evidence: dict[str, Any] = {
        "rule": ev(rule, "which alignment: concat (inputs and output take the minimum position) or pool"),
        "shared_position": ev(int(shared_pos), "the position all branches were given"),
        "branches": ev(rows, "per branch: own position, SQNR of the branch's float tensor at its own and "
                             "at the shared position (dB), loss, share of its error due to the alignment"),
        "worst_loss_db": ev(local_worst, "largest branch SQNR loss"),
    }
    if measured_gain_db is not None:
        severity = max(0.0, measured_gain_db)
        evidence["what_if_gain_db"] = ev(measured_gain_db, f"output SQNR gain measured in the emulator: {what_if}")
        evidence["severity_basis"] = ev("what-if", "the measured output SQNR gain of undoing the alignment")
    elif have_frac:
        severity = -10.0 * math.log10(1.0 - removed) if removed < 1 else math.inf
        evidence["severity_basis"] = ev("output", "branch shares times each branch layer's output noise "
                                                  "fraction, added as noise")
    else:
        severity = local_worst
        evidence["severity_basis"] = ev("local", "no sensitivity figure: severity is the worst branch loss")
    worst = max(rows, key=lambda r: r["sqnr_loss_db"])
    advice = (f"Branch {worst['branch']} loses {worst['sqnr_loss_db']:.1f} dB to the shared position: "
              "bring the branches to similar ranges in the float model (scale or normalise before the "
              f"{rule}), or keep the {rule} in float.")
    return Finding(layer, "alignment", severity, evidence, advice)


def constraint(
    layer: str,
    rule: str,
    tensor: str,
    before: int,
    after: int,
    x: np.ndarray,
    mode: Round,
    layer_iso_sqnr_db: float | None = None,
    noise_frac: float | None = None,
    text: str = "",
    measured_gain_db: float | None = None,
) -> Finding | None:
    """A DPU shift constraint that moved a position away from the calibrated one.

    ``x``: the float tensor whose position moved (weights, bias or activation). Local cost: its SQNR at
    ``before`` against at ``after``. Severity: ``measured_gain_db`` when given (output SQNR gain with
    the position put back, measured in the emulator); else share times the layer's noise fraction, the
    share being the added relative error ``r(after) - r(before)`` over the layer's isolated relative
    error ``10^(-iso/10)`` (capped at 1), or over ``r(after)`` without it.
    """
    x = np.asarray(x, np.float32).ravel()
    if x.size == 0 or before == after:
        return None
    signal = _sq(x)
    if signal == 0:
        return None
    r_before = _quant_error(x, before, mode) / signal
    r_after = _quant_error(x, after, mode) / signal
    loss = _db(r_after / r_before) if r_before > 0 else (math.inf if r_after > 0 else 0.0)
    if loss < CONSTRAINT_MIN_LOSS_DB:
        return None
    if layer_iso_sqnr_db is not None and math.isfinite(layer_iso_sqnr_db):
        share = min(1.0, (r_after - r_before) / 10.0 ** (-layer_iso_sqnr_db / 10.0))
    else:
        share = (r_after - r_before) / r_after
    evidence = {
        "constraint": ev(rule, "the DPU constraint (DPU_NUMERICS.md section 5)"),
        "tensor": ev(tensor, "the quantizer whose position moved"),
        "position_before": ev(int(before), "calibrated position"),
        "position_after": ev(int(after), "position after the constraint"),
        "sqnr_before_db": ev(-_db(r_before), "SQNR of the float tensor quantized at the calibrated position"),
        "sqnr_after_db": ev(-_db(r_after), "same at the constrained position"),
        "sqnr_loss_db": ev(loss, "before - after"),
    }
    if text:
        evidence["text"] = ev(text, "the adjustment as the constraint pass logged it")
    severity = _severity(evidence, share, loss, noise_frac)
    if measured_gain_db is not None:
        severity = max(0.0, measured_gain_db)
        evidence["what_if_gain_db"] = ev(measured_gain_db, "output SQNR gain measured in the emulator with "
                                                           "this position put back to its calibrated value")
        evidence["severity_basis"] = ev("what-if", "the measured output SQNR gain of undoing the constraint")
    advice = (f"The {rule} constraint moved {tensor} from {before} to {after}: rebalance the ranges the "
              "constraint ties together (weights against activations), or keep this layer in float.")
    return Finding(layer, "constraint", severity, evidence, advice)


def count_partitions(order: Sequence[str], inbound: Mapping[str, Sequence[str]], device: Mapping[str, str]) -> int:
    """Number of DPU subgraphs: connected components of DPU layers when CPU layers are cut out."""
    parent = {name: name for name in order if device.get(name) == "DPU"}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for name in parent:
        for src in inbound.get(name, ()):
            if src in parent:
                parent[find(src)] = find(name)
    return len({find(a) for a in parent})


def cpu_fallback(
    layer: str,
    class_name: str,
    reason: str,
    partitions: int,
    splits: bool,
    noise_frac: float | None = None,
    requantized: bool = True,
    identity: bool = False,
    alternative: str | None = None,
) -> Finding:
    """A layer the DPU cannot run: computed in float on the CPU, the model cut around it.

    Severity: the accuracy cost is only the requantization of its output for the next DPU subgraph,
    i.e. its output noise fraction in the severity formula (0 when unknown or when nothing quantized
    follows). ``requantized``: its output has a quantizer; without one (a softmax at the edge, whose
    quantizer rounds its input) the placement explains none of the layer's error. The finding is always
    reported, whatever its severity: it changes how the model deploys. ``alternative``: what the DPU runs
    in its place (:func:`qinspect.analysis.cpu_alternatives.dpu_alternative`), a phrase.
    """
    evidence = {
        "class": ev(class_name, "the layer's Keras class"),
        "reason": ev(reason, "why the DPU cannot run it"),
        "partitions": ev(int(partitions), "DPU subgraphs of the model (connected DPU layers with CPU layers "
                                          "cut out)"),
        "splits_model": ev(bool(splits), "True when DPU layers both feed it and read it (a round trip)"),
    }
    severity = _severity(evidence, 1.0 if requantized else 0.0, 0.0, noise_frac) if noise_frac is not None else 0.0
    if noise_frac is None:
        evidence["severity_basis"] = ev("none", "no sensitivity figure; accuracy cost unknown, set to 0")
    else:
        # not the layer's sensitivity row: that one also counts a quantizer on its input (a softmax's)
        evidence["layer_noise_frac"] = ev(noise_frac, "output noise of its output's requantization alone (0 "
                                                      "without an output quantizer), the only cost its CPU "
                                                      "placement adds")
    advice = f"{layer} runs on the CPU ({reason}): replace it with a DPU-supported equivalent"
    if identity:
        # "replace it with a DPU-supported equivalent" of a layer that computes nothing sent users looking
        evidence["identity"] = ev(True, "a linear activation: it passes its input on unchanged")
        advice = (f"{layer} is a linear (identity) activation: it computes nothing and runs in float only because "
                  "the quantizer leaves it unquantized; removing it from the model changes no number.")
        return Finding(layer, "cpu_fallback", severity, evidence, advice)
    if alternative:
        evidence["alternative"] = ev(alternative, "what the DPU runs in its place, by the quantizer's rules (not "
                                                  "measured here)")
    if class_name == "LeakyReLU":
        advice += " (LeakyReLU with alpha 0.1, or ReLU) and retrain."
    elif splits:
        advice = (f"{layer} runs on the CPU ({reason}). Instead: {alternative}. Or accept the CPU round trip."
                  if alternative else advice + ", or accept the CPU round trip.")
    else:
        advice = (f"{layer} runs on the CPU ({reason}) at the edge of the model: no round trip, "
                  "usually acceptable" + (f". Instead: {alternative}." if alternative else "."))
    return Finding(layer, "cpu_fallback", severity, evidence, advice)


def group_cpu_fallbacks(found: list[Finding]) -> list[Finding]:
    """CPU-layer findings of one Keras class, reason and placement (round trip or model edge) as one finding.

    A ConvNeXt has 97 CPU layers in five kinds; listed one by one, they buried everything else under the
    same sentence. The group keeps its first layer as ``layer`` (in model order), names the others in
    ``affects``, lists every member with its own cost in evidence ``layers``, and takes the largest member's
    severity (each was measured alone; their sum is not a measurement). A kind with one layer is unchanged."""
    groups: dict[tuple, list[Finding]] = {}
    for f in found:
        e = f.evidence
        key = (e["class"]["value"], e["reason"]["value"], e["splits_model"]["value"], e.get("share", {}).get("value"),
               "identity" in e, e.get("alternative", {}).get("value"))
        groups.setdefault(key, []).append(f)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        first, worst = members[0], max(members, key=lambda f: f.severity_db)
        names = [f.layer for f in members]
        e = first.evidence
        evidence = {k: v for k, v in e.items() if k not in ("layer_noise_frac",)}
        evidence["count"] = ev(len(members), "layers of this class that run on the CPU for this reason")
        evidence["layers"] = ev([{"layer": f.layer, "layer_noise_frac": f.evidence.get("layer_noise_frac",
                                                                                       {}).get("value")}
                                 for f in members],
                                "each layer, in model order, with its output requantization's noise share "
                                "(measured alone; null without a sensitivity run)")
        if "layer_noise_frac" in worst.evidence:
            evidence["layer_noise_frac"] = ev(worst.evidence["layer_noise_frac"]["value"],
                                              "the largest of the group's layers (the group's severity is that "
                                              "layer's)")
        cls, splits = e["class"]["value"], e["splits_model"]["value"]
        # the sentence names the layers and the reason (qinspect.report.wording): the advice says what to do
        if "identity" in e:
            advice = (f"These {len(names)} linear (identity) activations compute nothing: removing them from the "
                      "model changes no number.")
        elif cls == "LeakyReLU":
            advice = (f"Replace these {len(names)} LeakyReLU layers with a DPU-supported equivalent (LeakyReLU with "
                      "alpha 0.1, or ReLU) and retrain.")
        elif splits:
            alternative = e.get("alternative", {}).get("value")
            advice = (f"These {len(names)} {cls} layers split the model. Instead: {alternative}. Or accept the "
                      "CPU round trips."
                      if alternative else f"Replace these {len(names)} {cls} layers with a DPU-supported equivalent, "
                                          "or accept the CPU round trips.")
        else:
            alternative = e.get("alternative", {}).get("value")
            advice = (f"These {len(names)} {cls} layers sit at the edge of the model: no round trip, usually acceptable"
                      + (f". Instead: {alternative}." if alternative else "."))
        out.append(Finding(first.layer, "cpu_fallback", worst.severity_db, evidence, advice, affects=names[1:]))
    return out
