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
# The scatter plot is a few hundred pixels wide: points closer than 1/SCATTER_GRID of its range in
# both x and y land on the same pixels, and one of them is drawn (drawing costs per point).
SCATTER_GRID = 400
HIST_BINS = 200
# The channel plots draw at most this many bars (a plot a few hundred pixels wide cannot show more);
# past it, each bar stands for a group of adjacent channels and the plot says so.
MAX_BARS = 256
PERCENTILE = 99.99

# What-if methods: label -> (function of the values, whether vai_q pof2s uses it for activations).
# Each method's position from (values, narrow): ``narrow`` for a tensor coded in [-127, 127] (a DPUCADF8H
# target), which the quantizer's two methods choose for; the two what-ifs only look at the values.
METHODS: dict[str, tuple[Callable[[np.ndarray, bool], int], bool]] = {
    "min-MSE (vai_q pof2s default)": (lambda x, narrow: pos_min_mse(x, Round.HALF_UP, narrow), True),
    "non-overflow": (lambda x, narrow: pos_non_overflow(float(x.min()), float(x.max()), narrow) if x.size else 0,
                     True),
    f"percentile {PERCENTILE}% (what-if)": (lambda x, _narrow: pos_percentile(x, PERCENTILE), False),
    "KL divergence (what-if)": (lambda x, _narrow: pos_kl(x, Round.HALF_UP), False),
}
DEFAULT_METHOD = "min-MSE (vai_q pof2s default)"

WEIGHT_KEYS = ("kernel", "depthwise_kernel", "pointwise_kernel")


@dataclass
class ChannelBars:
    """The per-channel plots' bars, at most :data:`MAX_BARS`: one per channel, or per group of
    ``per_bar`` adjacent channels (the group's lowest minimum, highest maximum, most bits wasted)."""

    x: np.ndarray  # bar centres, in channel numbers
    lo: np.ndarray
    hi: np.ndarray
    wasted: np.ndarray  # bits wasted, capped at 8 (a channel past 8 quantizes to all zeros)
    per_bar: int
    n_channels: int
    dead: int  # channels that quantize to all zeros


def channel_bars(cmin: np.ndarray, cmax: np.ndarray, bits_wasted: np.ndarray,
                 max_bars: int = MAX_BARS) -> ChannelBars:
    """Group adjacent channels so at most ``max_bars`` bars are drawn (see :class:`ChannelBars`)."""
    n = int(cmin.size)
    wasted = np.minimum(np.where(np.isfinite(bits_wasted), bits_wasted, 8.0), 8.0)
    dead = int(np.count_nonzero(wasted >= 8.0))
    per = max(1, math.ceil(n / max_bars)) if n else 1
    if per == 1:
        return ChannelBars(np.arange(n, dtype=np.float64), cmin.astype(np.float64), cmax.astype(np.float64),
                           wasted.astype(np.float64), 1, n, dead)
    groups = math.ceil(n / per)
    pad = groups * per - n

    def grouped(v: np.ndarray, reduce, fill: float) -> np.ndarray:
        return reduce(np.concatenate([v.astype(np.float64), np.full(pad, fill)]).reshape(groups, per), axis=1)

    starts = np.arange(groups) * per
    ends = np.minimum(starts + per, n) - 1
    return ChannelBars((starts + ends) / 2.0, grouped(cmin, np.min, np.inf), grouped(cmax, np.max, -np.inf),
                       grouped(wasted, np.max, -np.inf), per, n, dead)


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
    bars: ChannelBars | None = None  # what the channel plots draw (None without per-channel ranges)


EXPONENTS = 320  # binary exponents tallied, from EXP_MIN: every float32 one (-125..128) with room to spare
EXP_MIN = -170


TOP_MANTISSA = 0x7E0000  # float32 mantissa bits of 1.984375: 1.f > 127/64 means m = 1.f / 2 > 127/128


def _bit_counts(x: np.ndarray) -> np.ndarray:
    """Counts of a float32 array's nonzero values by (frexp exponent, sign, m > 127/128, m > 1/2), read off
    the float's bits (a few integer passes: the values read for a layer run to millions)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    nonzero = (bits & 0x7FFFFFFF) != 0
    bits = bits[nonzero]
    mant = bits & 0x7FFFFF
    # a normal float32 is 1.f * 2^(E - 127) = m * 2^e with m = 1.f / 2 and e = E - 126 (subnormals land at
    # the lowest exponent: they are far below any range a position holds)
    e = ((bits >> 23) & 0xFF).astype(np.int64) - 126 - EXP_MIN
    key = (np.clip(e, 0, EXPONENTS - 1) * 8 + (bits >> 31).astype(np.int64) * 4
           + (mant > TOP_MANTISSA) * 2 + (mant > 0))
    return np.bincount(key, minlength=EXPONENTS * 8).reshape(EXPONENTS, 8)


@dataclass
class RangeTally:
    """Exact figures over every value of the samples read (the plots use a draw of them): the range, and
    counts by binary exponent from which the share below and above the int8 range of any position follows.

    The range at position ``p`` is ``[-128, 127] * 2^-p``; with ``k = 7 - p``, a value clips above when
    ``x = m * 2^e > (127/128) * 2^k``: ``e > k``, or ``e == k`` and ``m > 127/128``; below when
    ``|x| > 2^k``: ``e > k + 1``, or ``e == k + 1`` and ``m > 1/2``. A value on a bound is representable.
    A narrow range ([-127, 127], a DPUCADF8H target) clips below as it clips above, at ``|x| > (127/128) 2^k``."""

    n: int = 0
    vmin: float = math.inf
    vmax: float = -math.inf
    pos_e: np.ndarray = field(default_factory=lambda: np.zeros(EXPONENTS, np.int64))
    pos_e_top: np.ndarray = field(default_factory=lambda: np.zeros(EXPONENTS, np.int64))  # m > 127/128
    neg_e: np.ndarray = field(default_factory=lambda: np.zeros(EXPONENTS, np.int64))
    neg_e_over: np.ndarray = field(default_factory=lambda: np.zeros(EXPONENTS, np.int64))  # m > 1/2
    neg_e_top: np.ndarray = field(default_factory=lambda: np.zeros(EXPONENTS, np.int64))  # m > 127/128

    def add(self, x: np.ndarray) -> None:
        """Count one sample's finite values (every one, before any draw)."""
        x = np.asarray(x, np.float32)
        x = x[np.isfinite(x)]
        if not x.size:
            return
        self.n += int(x.size)
        self.vmin, self.vmax = min(self.vmin, float(x.min())), max(self.vmax, float(x.max()))
        c = _bit_counts(x)  # columns: sign * 4 + top * 2 + over; top implies over
        self.pos_e += c[:, 0:4].sum(axis=1)
        self.pos_e_top += c[:, 3]
        self.neg_e += c[:, 4:8].sum(axis=1)
        self.neg_e_over += c[:, 5] + c[:, 7]
        self.neg_e_top += c[:, 7]

    def clip_fracs(self, position: int, code_min: int = -128) -> tuple[float, float] | None:
        """Exact shares of the values read below and above the int8 range at ``position`` (its lowest code
        ``code_min``: -127 on a narrow range)."""
        if not self.n:
            return None
        k = 7 - int(position) - EXP_MIN  # index of exponent 7 - p

        def beyond(counts: np.ndarray, edge: np.ndarray, i: int) -> int:
            if i < 0:
                return int(counts.sum())
            if i >= EXPONENTS:
                return 0
            return int(counts[i + 1:].sum() + edge[i])

        below = beyond(self.neg_e, self.neg_e_top, k) if code_min > -128 else beyond(self.neg_e, self.neg_e_over, k + 1)
        return below / self.n, beyond(self.pos_e, self.pos_e_top, k) / self.n


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
    whatif_only: bool = False  # the int8 model holds no position for this tensor: ``position`` is a what-if
    values_note: str = ""  # the values are not the capture's own (the int8 model's equalized tensor)
    # exact range and clipped counts over every value of the samples read (``values`` may be a draw)
    tally: RangeTally | None = None
    code_min: int = -128  # the tensor's lowest code: -127 when coded in [-127, 127] (a DPUCADF8H target)

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
    lo: float  # representable range [code_min, 127] * 2^-p
    hi: float
    stats: ErrorStats
    err_hist: Histogram  # error in LSB units: (fake_quant(x) - x) * 2^p
    scatter_x: np.ndarray
    scatter_y: np.ndarray
    scatter_lo: float = 0.0  # the scatter's extent over x and y (for its diagonal)
    scatter_hi: float = 1.0
    exact_clip: tuple[float, float] | None = None  # over every value read (RangeTally), when tallied

    @property
    def clip_lo_frac(self) -> float:
        """Fraction of float values below the representable range (every value read when tallied)."""
        return self.exact_clip[0] if self.exact_clip is not None else self.stats.clip_lo_frac

    @property
    def clip_hi_frac(self) -> float:
        """Fraction of float values above the representable range (every value read when tallied)."""
        return self.exact_clip[1] if self.exact_clip is not None else self.stats.clip_hi_frac

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
                seed: int = 0, scale: np.ndarray | None = None, tally: RangeTally | None = None) -> np.ndarray:
    """Read samples ``ids`` one at a time (one chunk each: short GIL holds, a cancel check between),
    keeping ``keep`` values of each: all of them, or a uniform random draw (with replacement, which
    keeps every fraction unbiased) when the sample is larger. ``scale``: multiply each channel (last
    axis) by it first (the int8 model's equalized tensor). ``tally`` counts every value read, before
    the draw (exact range and clipping)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in ids:
        check()
        x = capture.activation(layer, int(i))
        x = (x if scale is None else (x * scale).astype(np.float32)).reshape(-1)
        if tally is not None:
            tally.add(x)
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
        bars = channel_bars(cmin, cmax, wasted) if cmin is not None else None
        out.append(WeightInfo(key, tuple(w.shape), pos, how, activation_histogram(w, bins=HIST_BINS),
                              cmin, cmax, wasted, codes, stats.sqnr_db, float(np.abs(w).max()), bars))
    return out


def layer_data(name: str, class_name: str, values: np.ndarray, n_used: int, n_total: int,
               position: int | None, position_source: str, weights: list[WeightInfo],
               complete: bool, check: Callable[[], None] = lambda: None,
               tally: RangeTally | None = None, code_min: int = -128) -> LayerData:
    """Histogram and per-method positions of loaded values (see :class:`LayerData`); with ``tally``, the
    range and the non-overflow position are those of every value read, not of the draw. ``code_min``:
    -127 for a tensor coded in [-127, 127] (the methods choose for that range)."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    finite = values[np.isfinite(values)] if values.size else values
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 0.0
    if tally is not None and tally.n:
        vmin, vmax = tally.vmin, tally.vmax
    hist = activation_histogram(finite, bins=HIST_BINS) if finite.size else activation_histogram(np.zeros(1))
    methods: dict[str, int] = {}
    narrow = code_min > -128
    if finite.size:
        for label, (fn, vitis) in METHODS.items():
            if not complete and not vitis:
                continue  # the quick first pass skips the what-if methods (percentile, KL)
            check()
            methods[label] = int(fn(finite, narrow))
        if tally is not None and tally.n:  # the draw can miss the extremes; the range over all is known
            methods["non-overflow"] = int(pos_non_overflow(vmin, vmax, narrow))
    whatif_only = position is None and bool(methods)
    if whatif_only:
        why = f" ({position_source})" if position_source else ""
        position, position_source = methods[DEFAULT_METHOD], f"min-MSE over these values, as a what-if{why}"
    return LayerData(name, class_name, n_used, n_total, finite, vmin, vmax, hist, methods, position,
                     position_source, weights, complete, whatif_only, tally=tally, code_min=code_min)


def what_if(data: LayerData, position: int, method: str = "") -> WhatIf:
    """Quantize the layer's values at ``position`` (HALF_UP, int8 from ``data.code_min``) and derive the
    panel's figures."""
    x = data.values
    lo, hi = representable_range(position, qmin=data.code_min)
    q = quantize(x, position, Round.HALF_UP, narrow=data.code_min > -128)
    y = dequantize(q, position)
    stats = ErrorStats().update(x, y, q=q, qmin=data.code_min, clip_lo=lo, clip_hi=hi)
    err_lsb = (y.astype(np.float64) - x) * 2.0**position
    if err_lsb.size:
        e_lo, e_hi = float(err_lsb.min()), float(err_lsb.max())
        # Unclipped errors lie in [-0.5, 0.5] LSB; keep that window visible even when nothing clips.
        err_hist = activation_histogram(err_lsb, bins=HIST_BINS, lo=min(e_lo, -0.5), hi=max(e_hi, 0.5))
    else:
        err_hist = activation_histogram(np.zeros(1))
    sx, sy = scatter_sample(x, y)
    s_lo = float(min(sx.min(), sy.min())) if sx.size else 0.0
    s_hi = float(max(sx.max(), sy.max())) if sx.size else 1.0
    exact = data.tally.clip_fracs(position, data.code_min) if data.tally is not None else None
    return WhatIf(data.name, int(position), method, lo, hi, stats, err_hist, sx, sy, s_lo, s_hi, exact)


def scatter_sample(x: np.ndarray, y: np.ndarray, n: int = SCATTER_POINTS,
                   grid: int = SCATTER_GRID) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` (x, y) pairs: a fixed random subset plus the extremes, so clipped tails always show;
    then one pair per cell of a ``grid`` x ``grid`` raster of their extent (the others would be drawn
    on the same pixels)."""
    if x.size > n:
        rng = np.random.default_rng(0)
        idx = rng.choice(x.size, n - 64, replace=False)
        order = np.argpartition(x, (32, x.size - 33))
        idx = np.concatenate([order[:32], order[-32:], idx])
        x, y = x[idx], y[idx]
    if x.size < 2:
        return x.copy(), y.copy()
    # The extremes first, so they are their cells' representatives.
    first = np.array(list(dict.fromkeys([int(np.argmin(x)), int(np.argmax(x)), int(np.argmin(y)),
                                         int(np.argmax(y))])))
    order = np.concatenate([first, np.setdiff1d(np.arange(x.size), first)])
    x, y = x[order], y[order]

    def cells(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.float64)
        lo, hi = float(v.min()), float(v.max())
        return np.minimum(((v - lo) / ((hi - lo) or 1.0) * grid).astype(np.int64), grid - 1)

    _, keep = np.unique(cells(x) * grid + cells(y), return_index=True)
    keep.sort()
    return x[keep], y[keep]


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
