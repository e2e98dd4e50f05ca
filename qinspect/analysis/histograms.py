"""Histogram helpers shared by the GUI, the reports and the findings.

- Float activation histograms with linear or symmetric-log bin edges, and an accumulator that adds
  batches with fixed edges (so a capture larger than memory can be histogrammed by streaming).
- Per-output-channel weight ranges and the bits each channel wastes against the per-tensor range:
  ``bits_wasted = log2(tensor_absmax / channel_absmax)``. With one per-tensor position, a channel whose
  largest magnitude is ``2^-k`` of the tensor's uses about ``k`` bits fewer than the tensor could give it.
- Int8 code histograms (256 bins, re-exported from :mod:`qinspect.analysis.metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qinspect.analysis.metrics import code_histogram

__all__ = [
    "ChannelRanges",
    "Histogram",
    "HistogramAccumulator",
    "activation_histogram",
    "channel_code_counts",
    "channel_ranges",
    "code_histogram",
    "histogram_edges",
    "output_channel_axis",
]


@dataclass
class Histogram:
    """Counts over ``edges`` (len(counts) + 1 edges); values outside the edges are counted apart."""

    counts: np.ndarray
    edges: np.ndarray
    below: int = 0  # values < edges[0]
    above: int = 0  # values > edges[-1]
    nonfinite: int = 0  # NaN / Inf values, never binned

    @property
    def total(self) -> int:
        """All values seen, binned or not."""
        return int(self.counts.sum()) + self.below + self.above + self.nonfinite


def histogram_edges(lo: float, hi: float, bins: int = 128, log: bool = False, floor: float | None = None) -> np.ndarray:
    """Bin edges over ``[lo, hi]``.

    ``log=False``: ``bins`` equal bins. ``log=True``: symmetric-log edges: magnitudes spaced
    geometrically from ``floor`` up to ``max(|lo|, |hi|)`` on each side that the range covers, and one
    central bin ``[-floor, floor]`` (``[0, floor]`` or ``[-floor, 0]`` when the range is one-sided).
    ``floor`` defaults to ``max(|lo|, |hi|) * 1e-6``. Used for activations spanning many decades.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("histogram range must be finite")
    if hi <= lo:
        # A constant tensor: one bin of width 1 (or relative width) around the value.
        half = 0.5 * max(abs(lo), 1.0) * 1e-3
        lo, hi = lo - half, hi + half
    if not log:
        return np.linspace(lo, hi, bins + 1)
    mag = max(abs(lo), abs(hi))
    floor = mag * 1e-6 if floor is None else float(floor)
    if not 0 < floor < mag:
        raise ValueError(f"log floor {floor} must lie in (0, {mag})")
    neg = lo < 0
    pos = hi > 0
    sides = int(neg) + int(pos)
    per_side = max(1, (bins - 1) // max(sides, 1))
    parts: list[np.ndarray] = []
    if neg:
        parts.append(-np.geomspace(abs(lo) if abs(lo) > floor else floor * 2, floor, per_side + 1))
    else:
        parts.append(np.array([0.0]))
    if pos:
        parts.append(np.geomspace(floor, hi if hi > floor else floor * 2, per_side + 1))
    else:
        parts.append(np.array([0.0]))
    return np.concatenate(parts)


def activation_histogram(
    x: np.ndarray,
    bins: int = 128,
    log: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    floor: float | None = None,
) -> Histogram:
    """Histogram of a float tensor; range defaults to its finite min/max (see :func:`histogram_edges`)."""
    x = np.asarray(x).reshape(-1)
    finite = np.isfinite(x)
    nonfinite = int(x.size - np.count_nonzero(finite))
    xf = x[finite] if nonfinite else x
    if xf.size == 0:
        return Histogram(np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1), nonfinite=nonfinite)
    lo = float(xf.min()) if lo is None else float(lo)
    hi = float(xf.max()) if hi is None else float(hi)
    edges = histogram_edges(lo, hi, bins, log=log, floor=floor)
    acc = HistogramAccumulator(edges)
    acc.update(xf)
    acc.hist.nonfinite += nonfinite
    return acc.hist


class HistogramAccumulator:
    """Adds batches into fixed edges: values outside count in ``below`` / ``above``."""

    def __init__(self, edges: np.ndarray) -> None:
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("edges must be a strictly increasing 1-D array of at least 2 values")
        self.hist = Histogram(np.zeros(edges.size - 1, np.int64), edges)

    def update(self, x: np.ndarray) -> HistogramAccumulator:
        """Add the values of ``x`` (any shape). Returns ``self``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        finite = np.isfinite(x)
        h = self.hist
        h.nonfinite += int(x.size - np.count_nonzero(finite))
        x = x[finite]
        e = h.edges
        h.below += int(np.count_nonzero(x < e[0]))
        h.above += int(np.count_nonzero(x > e[-1]))
        inside = x[(x >= e[0]) & (x <= e[-1])]
        # Right-closed last bin, as np.histogram: searchsorted right, then the top edge into the last bin.
        idx = np.searchsorted(e, inside, side="right") - 1
        idx = np.minimum(idx, e.size - 2)
        h.counts += np.bincount(idx, minlength=e.size - 1).astype(np.int64)
        return self


def output_channel_axis(class_name: str, weight_name: str = "kernel") -> int | None:
    """The kernel axis holding output channels in Keras layout, or None for a non-channel weight.

    Conv2D/Dense ``kernel``: last axis (HWIO / (in, out)). DepthwiseConv2D ``depthwise_kernel``
    (kh, kw, cin, mult): outputs are cin x mult, flattened in that order, so the caller treats the last
    two axes together (returned as -2, see :func:`channel_ranges`). Conv2DTranspose ``kernel``
    (kh, kw, out, in): axis 2.
    """
    if weight_name == "depthwise_kernel" or (class_name == "DepthwiseConv2D" and weight_name == "kernel"):
        return -2
    if weight_name == "kernel" and class_name == "Conv2DTranspose":
        return 2
    if weight_name in ("kernel", "pointwise_kernel"):
        return -1
    return None


def _per_channel(w: np.ndarray, axis: int) -> np.ndarray:
    """View of ``w`` as (channels, elements-per-channel)."""
    if axis == -2:  # depthwise: channel index = cin * mult + m
        kh_kw = int(np.prod(w.shape[:-2]))
        return w.reshape(kh_kw, -1).T
    moved = np.moveaxis(w, axis, 0)
    return moved.reshape(moved.shape[0], -1)


@dataclass
class ChannelRanges:
    """Per-output-channel ranges of one weight tensor against its single per-tensor range."""

    channel_min: np.ndarray
    channel_max: np.ndarray
    channel_absmax: np.ndarray
    tensor_absmax: float
    bits_wasted: np.ndarray  # log2(tensor_absmax / channel_absmax); inf for an all-zero channel

    @property
    def spread_bits(self) -> float:
        """log2 of the largest over the smallest non-zero channel magnitude."""
        nz = self.channel_absmax[self.channel_absmax > 0]
        return float(np.log2(nz.max() / nz.min())) if nz.size else 0.0


def channel_ranges(w: np.ndarray, class_name: str = "Conv2D", weight_name: str = "kernel") -> ChannelRanges:
    """Per-output-channel min / max / max|w| and bits wasted against the per-tensor max|w|."""
    axis = output_channel_axis(class_name, weight_name)
    if axis is None:
        raise ValueError(f"{weight_name} of {class_name} has no output-channel axis")
    per = _per_channel(np.asarray(w, dtype=np.float64), axis)
    cmin = per.min(axis=1)
    cmax = per.max(axis=1)
    cabs = np.maximum(np.abs(cmin), np.abs(cmax))
    tmax = float(cabs.max()) if cabs.size else 0.0
    with np.errstate(divide="ignore"):
        wasted = np.where(cabs > 0, np.log2(tmax / np.where(cabs > 0, cabs, 1.0)), np.inf)
    return ChannelRanges(cmin, cmax, cabs, tmax, wasted)


def channel_code_counts(q: np.ndarray, class_name: str = "Conv2D", weight_name: str = "kernel") -> np.ndarray:
    """Number of distinct int8 codes each output channel of a quantized kernel ``q`` uses."""
    axis = output_channel_axis(class_name, weight_name)
    if axis is None:
        raise ValueError(f"{weight_name} of {class_name} has no output-channel axis")
    per = _per_channel(np.asarray(q).astype(np.int16), axis)
    # One bincount over (channel, code) pairs: channel * 256 + code + 128.
    keys = (np.arange(per.shape[0])[:, None] * 256 + per + 128).reshape(-1)
    present = np.bincount(keys, minlength=per.shape[0] * 256).reshape(per.shape[0], 256) > 0
    return present.sum(axis=1)
