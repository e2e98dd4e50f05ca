"""One layer's report section from the arrays and statistics the emulator and the capture give.

The caller (:mod:`qinspect.report.collect`) hands over what it has for the layer: the float output
values from the capture, the output position, the isolated / accumulated :class:`ErrorStats` the
emulator run produced, the weights as quantized, the rewrites and adjustments. This module derives
only what the analysis helpers define (histograms, per-channel ranges, the output tensor's clipping
and code use at its position) and copies every metric from the statistics objects unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.analysis.histograms import (
    Histogram,
    HistogramAccumulator,
    activation_histogram,
    channel_ranges,
    histogram_edges,
    output_channel_axis,
)
from qinspect.analysis.metrics import ErrorStats, representable_range
from qinspect.dpu.fixed_point import Round, quantize
from qinspect.report import figspec
from qinspect.report.content import LayerSection

HIST_BINS = 128
KERNEL_KEYS = ("kernel", "depthwise_kernel", "pointwise_kernel")


@dataclass
class LayerInputs:
    """What the report knows about one layer; ``None`` wherever a number is not available."""

    name: str
    class_name: str
    index: int | None = None
    placement: str = "DPU"
    placement_note: str = ""
    positions: dict[str, Any] = field(default_factory=dict)  # input (list), weights, bias, output
    positions_source: str = ""
    fused_activation: str = ""  # the built-in activation node whose position is the output position
    float_out: np.ndarray | None = None  # the layer's float output values (capture), any shape
    float_summary: FloatSummary | None = None  # or the same summarised by streaming (summarize_float)
    isolated: ErrorStats | None = None
    accumulated: ErrorStats | None = None
    isolated_error: np.ndarray | None = None  # emulated isolated output - float output, element-wise
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # as quantized (folded, equalized)
    rewrites: list[str] = field(default_factory=list)
    adjustments: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    other_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # what-if methods
    notes: list[str] = field(default_factory=list)
    equalized: str = ""  # the float values are the int8 model's equalized tensor (wording.equalized_note)
    code_min: int = -128  # the output quantizer's lowest code (-127 on a DPUCADF8H target)


def error_metrics(stats: ErrorStats | None, position: int | None) -> dict[str, float | None] | None:
    """The five numbers of one error view, copied from ``stats``; rmse/scale needs the position."""
    if stats is None or stats.n == 0:
        return None
    return {
        "sqnr_db": stats.sqnr_db,
        "mse": stats.mse,
        "cosine": stats.cosine,
        "max_abs": stats.max_abs,
        "rmse_over_scale": stats.rmse_over_scale(2.0 ** (-position)) if position is not None else None,
    }


def _hist_dict(h: Any) -> dict[str, Any]:
    return {"edges": h.edges.tolist(), "counts": h.counts.tolist(), "below": h.below, "above": h.above,
            "nonfinite": h.nonfinite}


@dataclass
class FloatSummary:
    """A layer's float output summarised in two streaming passes (bounded memory for any capture)."""

    count: int
    vmin: float | None
    vmax: float | None
    hist: Histogram | None
    position: int | None
    output_stats: ErrorStats | None  # the output quantized alone at ``position`` (None without one)
    rounding_error: Histogram | None  # fake_quant(x) - x at ``position``


def summarize_float(batches: Callable[[], Iterable[np.ndarray]], position: int | None,
                    bins: int = HIST_BINS, code_min: int = -128) -> FloatSummary:
    """Summarise float values given as batches; ``batches()`` is called twice (range, then counts).
    ``code_min``: the quantizer's lowest code (-127 for a narrow-range one, a DPUCADF8H target)."""
    count, vmin, vmax = 0, math.inf, -math.inf
    for b in batches():
        b = np.asarray(b).reshape(-1)
        count += b.size
        f = b[np.isfinite(b)]
        if f.size:
            vmin, vmax = min(vmin, float(f.min())), max(vmax, float(f.max()))
    if not math.isfinite(vmin):
        return FloatSummary(count, None, None, None, position, None, None)
    hist = HistogramAccumulator(histogram_edges(vmin, vmax, bins))
    stats = err = None
    if position is not None:
        lo, hi = representable_range(position, qmin=code_min)
        lsb = 2.0 ** (-position)
        # Rounding errs by at most half a step; a clipped value errs by up to its distance to the range.
        e_lo, e_hi = min(-lsb / 2, hi - vmax), max(lsb / 2, lo - vmin)
        err = HistogramAccumulator(histogram_edges(e_lo, e_hi, bins))
        stats = ErrorStats()
    for b in batches():
        b = np.asarray(b, dtype=np.float32).reshape(-1)
        b = b[np.isfinite(b)]
        hist.update(b)
        if stats is not None and err is not None:
            q = quantize(b, position, Round.HALF_UP, narrow=code_min > -128)
            deq = q.astype(np.float64) * 2.0 ** (-position)
            stats.update(b, deq, q=q, qmin=code_min, clip_lo=lo, clip_hi=hi)
            err.update(deq - b)
    return FloatSummary(count, vmin, vmax, hist.hist, position, stats, err.hist if err is not None else None)


def _nan_to_none(v: float) -> float | None:
    return None if isinstance(v, float) and math.isnan(v) else v


def layer_section(inp: LayerInputs, fig_prefix: str) -> LayerSection:
    """Build the section: numbers, then figure specifications named ``<fig_prefix>-<what>``."""
    pos_out = inp.positions.get("output")
    sec = LayerSection(
        name=inp.name,
        class_name=inp.class_name,
        placement=inp.placement,
        placement_note=inp.placement_note,
        index=inp.index,
        positions=dict(inp.positions),
        positions_source=inp.positions_source,
        code_min=inp.code_min,
        fused_activation=inp.fused_activation,
        isolated=error_metrics(inp.isolated, pos_out),
        accumulated=error_metrics(inp.accumulated, pos_out),
        rewrites=list(inp.rewrites),
        adjustments=list(inp.adjustments),
        findings=list(inp.findings),
        notes=list(inp.notes),
    )
    summary = inp.float_summary
    if summary is None and inp.float_out is not None:
        x = np.asarray(inp.float_out, dtype=np.float32)
        summary = summarize_float(lambda: [x], pos_out, code_min=inp.code_min)
    if summary is not None and summary.hist is not None:
        _activation_part(sec, summary, inp, fig_prefix)
    elif inp.isolated is not None and pos_out is not None and inp.isolated.n_clip_checked:
        # no capture of this layer: the emulator's float reference values beyond the int8 range are the
        # same saturation, over the samples it ran (the activation histogram and codes used need a capture)
        sec.saturation_low, sec.saturation_high = inp.isolated.clip_lo_frac, inp.isolated.clip_hi_frac
        # the float range is the same reference's (a model file with --inputs gave saturation but no range)
        lo, hi = representable_range(pos_out, qmin=inp.code_min)
        sec.activation = {"values": inp.isolated.n, "float_min": inp.isolated.ref_min,
                          "float_max": inp.isolated.ref_max, "clip_low": lo, "clip_high": hi, "histogram": None,
                          "values_from": "the emulator's float reference (no capture of this layer)"}
        sec.notes.append(f"saturation and float range: the emulator's float reference over "
                         f"{inp.isolated.n_clip_checked} values; the activation histogram and the codes used need a "
                         "capture of this layer")
    _error_part(sec, summary, inp, fig_prefix)
    _weights_part(sec, inp, fig_prefix)
    return sec


def _activation_part(sec: LayerSection, s: FloatSummary, inp: LayerInputs, prefix: str) -> None:
    pos = s.position
    act: dict[str, Any] = {
        "values": s.count,
        "float_min": s.vmin,
        "float_max": s.vmax,
        "clip_low": None,
        "clip_high": None,
        "histogram": _hist_dict(s.hist),
    }
    if inp.equalized:
        act["values_as"] = inp.equalized
    if s.output_stats is not None and pos is not None:
        lo, hi = representable_range(pos, qmin=inp.code_min)
        st = s.output_stats
        act.update(clip_low=lo, clip_high=hi, clipped_low=st.clip_lo_frac, clipped_high=st.clip_hi_frac)
        sec.saturation_low = st.clip_lo_frac
        sec.saturation_high = st.clip_hi_frac
        sec.codes_used = _nan_to_none(st.codes_used_frac)
    sec.activation = act
    sec.figures.append(
        figspec.activation_figure(
            f"{prefix}-activation", sec.name, s.hist.edges, s.hist.counts, act["clip_low"], act["clip_high"],
            pos, sec.saturation_low, sec.saturation_high, inp.other_ranges or None, equalized=inp.equalized,
        )
    )


def _error_part(sec: LayerSection, s: FloatSummary | None, inp: LayerInputs, prefix: str) -> None:
    pos = inp.positions.get("output")
    lsb = 2.0 ** (-pos) if pos is not None else None
    if inp.isolated_error is not None and np.asarray(inp.isolated_error).size:
        err = np.asarray(inp.isolated_error, dtype=np.float64).reshape(-1)
        err = err[np.isfinite(err)]
        if not err.size:
            return
        lo, hi = float(err.min()), float(err.max())
        if lsb is not None:  # keep the +-1/2 LSB rounding window in view
            lo, hi = min(lo, -lsb / 2), max(hi, lsb / 2)
        hist = activation_histogram(err, bins=HIST_BINS, lo=lo, hi=hi)
        view = "isolated"
        total = inp.isolated.n if inp.isolated is not None else None
        seen = f"all {err.size} values" if err.size == total else (
            f"the first {err.size} of {total} values" if total else f"{err.size} values")
        what = f"emulated isolated output minus float reference, {seen}"
        of = seen if err.size != total else None
    elif s is not None and s.rounding_error is not None:
        # No emulator output: the error of rounding this layer's own float output at its position.
        hist, view = s.rounding_error, "output rounding"
        what = "float output quantized alone at its position (HALF_UP) minus float output"
        of = None
    else:
        return
    sec.error_histogram = {"view": view, "what": what, **_hist_dict(hist)}
    sec.figures.append(figspec.error_figure(f"{prefix}-error", sec.name, hist.edges, hist.counts, view, lsb, of))


def _weights_part(sec: LayerSection, inp: LayerInputs, prefix: str) -> None:
    kernels = [(k, np.asarray(w)) for k, w in inp.weights.items() if k in KERNEL_KEYS and np.asarray(w).size]
    if not kernels:
        return
    key, w = kernels[0]
    pos = inp.positions.get("weights")
    finite = w[np.isfinite(w)].astype(np.float64)
    hist = activation_histogram(finite, bins=HIST_BINS)
    lo, hi = representable_range(pos) if pos is not None else (None, None)
    info: dict[str, Any] = {
        "tensor": key,
        "shape": list(w.shape),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "position": pos,
        "clip_low": lo,
        "clip_high": hi,
        "histogram": _hist_dict(hist),
    }
    sec.figures.append(figspec.weights_figure(f"{prefix}-weights", sec.name, hist.edges, hist.counts, lo, hi, pos))
    if w.ndim >= 2 and output_channel_axis(sec.class_name, key) is not None:
        ranges = channel_ranges(w, sec.class_name, key)
        info["channels"] = {
            "min": ranges.channel_min.tolist(),
            "max": ranges.channel_max.tolist(),
            "bits_wasted": ranges.bits_wasted.tolist(),
            "spread_bits": ranges.spread_bits,
        }
        sec.figures.append(
            figspec.channel_ranges_figure(f"{prefix}-channels", sec.name, ranges.channel_min, ranges.channel_max,
                                          lo, hi)
        )
    sec.weights = info
