"""The numbers behind the layer panel, computed in a worker thread (numpy only, no Qt).

:func:`load_layer` reads one layer's float activations (in sample batches, checking for cancellation
between reads) and weights once; :func:`what_if` quantizes the loaded values at one position and
derives everything the panel draws: clip fractions, saturation, SQNR, error histogram, scatter. The
what-if path reuses the loaded values, so moving the position only redoes the quantization.

Numbers follow the Vitis pof2s rules of ``qinspect.dpu.fixed_point``: activations are quantized with
HALF_UP, weights with HALF_TO_EVEN; error statistics come from ``qinspect.analysis.metrics.ErrorStats``
so they mean the same as everywhere else in qinspect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from qinspect.analysis.histograms import Histogram, activation_histogram, channel_code_counts, channel_ranges
from qinspect.analysis.metrics import ErrorStats, representable_range
from qinspect.dpu.fixed_point import Round, dequantize, pos_kl, pos_min_mse, pos_non_overflow, pos_percentile, quantize

# Values kept for one layer: enough for stable tail fractions (one value in 262144 is visible), and
# small enough that every numpy / h5py call in the worker is short. Those calls hold the GIL, and the
# UI thread's painting needs it many times per frame: long calls would stall the window.
MAX_VALUES = 1 << 18
# The first, quick pass (a first plot within ~100 ms on the demo) reads at most this many values.
FIRST_PASS_VALUES = 1 << 15
SCATTER_POINTS = 1500
HIST_BINS = 200
PERCENTILE = 99.99

# What-if methods: label -> (function of the values, whether vai_q pof2s uses it for activations).
METHODS: dict[str, tuple[Callable[[np.ndarray], int], bool]] = {
    "min-MSE (vai_q pof2s default)": (lambda x: pos_min_mse(x, Round.HALF_UP), True),
    "non-overflow": (lambda x: pos_non_overflow(float(x.min()), float(x.max())) if x.size else 0, True),
    f"percentile {PERCENTILE}% (what-if)": (lambda x: pos_percentile(x, PERCENTILE), False),
    "KL divergence (what-if)": (lambda x: pos_kl(x, Round.HALF_UP), False),
}
DEFAULT_METHOD = "min-MSE (vai_q pof2s default)"

WEIGHT_KEYS = ("kernel", "depthwise_kernel", "pointwise_kernel")


@dataclass
class WeightInfo:
    """One weight tensor of the layer against its per-tensor int8 quantization."""

    name: str
    shape: tuple[int, ...]
    position: int
    position_source: str
    hist: Histogram
    channel_min: np.ndarray | None
    channel_max: np.ndarray | None
    bits_wasted: np.ndarray | None  # per output channel, log2(tensor max|w| / channel max|w|)
    codes_used: np.ndarray | None  # distinct int8 codes per output channel
    sqnr_db: float
    tensor_absmax: float


@dataclass
class LayerData:
    """One layer's float data, loaded once and reused by every what-if."""

    name: str
    class_name: str
    n_samples_used: int
    n_samples_total: int
    values: np.ndarray  # float32, flat
    vmin: float
    vmax: float
    float_hist: Histogram
    method_positions: dict[str, int]
    position: int | None  # the position in use (emulator, Vitis import or default method)
    position_source: str
    weights: list[WeightInfo] = field(default_factory=list)
    complete: bool = True  # False for the quick first pass over a few samples

    @property
    def has_activations(self) -> bool:
        """True when the capture holds this layer's activations."""
        return self.values.size > 0


@dataclass
class WhatIf:
    """The layer's activations quantized at one position (HALF_UP, int8)."""

    layer: str
    position: int
    method: str
    lo: float  # representable range [-128, 127] * 2^-p
    hi: float
    stats: ErrorStats
    err_hist: Histogram  # error in LSB units: (fake_quant(x) - x) * 2^p
    scatter_x: np.ndarray
    scatter_y: np.ndarray

    @property
    def clip_lo_frac(self) -> float:
        """Fraction of float values below the representable range."""
        return self.stats.clip_lo_frac

    @property
    def clip_hi_frac(self) -> float:
        """Fraction of float values above the representable range."""
        return self.stats.clip_hi_frac

    @property
    def sqnr_db(self) -> float:
        """SQNR of this tensor quantized alone, ``10 log10(sum x^2 / sum (fq(x) - x)^2)``."""
        return self.stats.sqnr_db


# Values read from the file for one layer at most (16 MB of float32), spread over the samples.
READ_VALUES = 1 << 22


def spread_plan(n_total: int, sample_size: int, max_values: int = MAX_VALUES,
                read_values: int = READ_VALUES) -> tuple[np.ndarray, int]:
    """Which samples to read (evenly spread over the capture, not just the first ones) and how many
    values to keep from each, so a layer costs at most ``read_values`` read and ``max_values`` kept."""
    size = max(1, int(sample_size))
    if n_total <= 0:
        return np.zeros(0, np.int64), 0
    n_read = max(1, min(n_total, read_values // size))
    ids = np.unique(np.linspace(0, n_total - 1, n_read).round().astype(np.int64))
    keep = max(1, min(size, max_values // len(ids)))
    return ids, keep


def read_spread(capture, layer: str, ids: np.ndarray, keep: int, check: Callable[[], None],
                seed: int = 0) -> np.ndarray:
    """Read samples ``ids`` one at a time (one chunk each: short GIL holds, a cancel check between),
    keeping ``keep`` values of each: all of them, or a uniform random draw (with replacement, which
    keeps every fraction unbiased) when the sample is larger."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in ids:
        check()
        x = capture.activation(layer, int(i)).reshape(-1)
        if keep < x.size:
            x = x[rng.integers(0, x.size, keep)]
        parts.append(x)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def weight_infos(class_name: str, weights: dict[str, np.ndarray], positions: dict[str, int],
                 source: str) -> list[WeightInfo]:
    """Histogram, per-channel ranges and codes of each kernel (and bias) at its int8 position.

    ``positions`` (weight name -> position) comes from the emulator or a Vitis import; a weight not in
    it gets the vai_q pof2s weight rule, min-MSE with HALF_TO_EVEN, from its own values.
    """
    out = []
    for key, w in weights.items():
        w = np.asarray(w, dtype=np.float32)
        if w.size == 0 or not np.all(np.isfinite(w)):
            continue
        if key not in WEIGHT_KEYS and key != "bias":
            continue
        if key in positions:
            pos, how = int(positions[key]), source
        else:
            pos, how = pos_min_mse(w, Round.HALF_TO_EVEN), "min-MSE, HALF_TO_EVEN (vai_q pof2s weight rule)"
        q = quantize(w, pos, Round.HALF_TO_EVEN)
        stats = ErrorStats().update(w, dequantize(q, pos))
        cmin = cmax = wasted = codes = None
        if key in WEIGHT_KEYS and w.ndim >= 2:
            ranges = channel_ranges(w, class_name, key)
            cmin, cmax, wasted = ranges.channel_min, ranges.channel_max, ranges.bits_wasted
            codes = channel_code_counts(q, class_name, key)
        out.append(WeightInfo(key, tuple(w.shape), pos, how, activation_histogram(w, bins=HIST_BINS),
                              cmin, cmax, wasted, codes, stats.sqnr_db, float(np.abs(w).max())))
    return out


def layer_data(name: str, class_name: str, values: np.ndarray, n_used: int, n_total: int,
               position: int | None, position_source: str, weights: list[WeightInfo],
               complete: bool, check: Callable[[], None] = lambda: None) -> LayerData:
    """Histogram and per-method positions of loaded values (see :class:`LayerData`)."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    finite = values[np.isfinite(values)] if values.size else values
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 0.0
    hist = activation_histogram(finite, bins=HIST_BINS) if finite.size else activation_histogram(np.zeros(1))
    methods: dict[str, int] = {}
    if finite.size:
        for label, (fn, vitis) in METHODS.items():
            if not complete and not vitis:
                continue  # the quick first pass skips the what-if methods (percentile, KL)
            check()
            methods[label] = int(fn(finite))
    if position is None and methods:
        why = f" ({position_source})" if position_source else ""
        position, position_source = methods[DEFAULT_METHOD], f"min-MSE over these values, as a what-if{why}"
    return LayerData(name, class_name, n_used, n_total, finite, vmin, vmax, hist, methods, position,
                     position_source, weights, complete)


def what_if(data: LayerData, position: int, method: str = "") -> WhatIf:
    """Quantize the layer's values at ``position`` (HALF_UP, int8) and derive the panel's figures."""
    x = data.values
    lo, hi = representable_range(position)
    q = quantize(x, position, Round.HALF_UP)
    y = dequantize(q, position)
    stats = ErrorStats().update(x, y, q=q, clip_lo=lo, clip_hi=hi)
    err_lsb = (y.astype(np.float64) - x) * 2.0**position
    if err_lsb.size:
        e_lo, e_hi = float(err_lsb.min()), float(err_lsb.max())
        # Unclipped errors lie in [-0.5, 0.5] LSB; keep that window visible even when nothing clips.
        err_hist = activation_histogram(err_lsb, bins=HIST_BINS, lo=min(e_lo, -0.5), hi=max(e_hi, 0.5))
    else:
        err_hist = activation_histogram(np.zeros(1))
    sx, sy = scatter_sample(x, y)
    return WhatIf(data.name, int(position), method, lo, hi, stats, err_hist, sx, sy)


def scatter_sample(x: np.ndarray, y: np.ndarray, n: int = SCATTER_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` (x, y) pairs: a fixed random subset plus the extremes, so clipped tails always show."""
    if x.size <= n:
        return x.copy(), y.copy()
    rng = np.random.default_rng(0)
    idx = rng.choice(x.size, n - 64, replace=False)
    order = np.argpartition(x, (32, x.size - 33))
    idx = np.concatenate([idx, order[:32], order[-32:]])
    return x[idx], y[idx]


def fmt_frac(f: float) -> str:
    """A fraction as a percentage that keeps rare events visible (0.0012% rather than 0.00%)."""
    if f is None or not math.isfinite(f):
        return "–"
    if f == 0:
        return "0%"
    pct = 100.0 * f
    return f"{pct:.2f}%" if pct >= 0.01 else f"{pct:.2g}%"


def fmt_db(v: float) -> str:
    """SQNR in dB with infinities spelled out."""
    if v is None or math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞ dB (exact)" if v > 0 else "-∞ dB"
    return f"{v:.2f} dB"
