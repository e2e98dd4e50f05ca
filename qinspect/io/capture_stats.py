"""Streaming statistics of one captured tensor over every sample fed (capture format 1.2, ``/stats``).

A capture may keep full float tensors for only some samples (``--keep``); for all of them it keeps,
per captured node, what the statistics-based views need:

- ``batch_min``/``batch_max``: float32 ``(n_batches,)``, one per calibration batch of ``batch_size``
  consecutive samples (the last one may be smaller), as the quantizer's calibration sees them;
- ``channel_min``/``channel_max``: float32 ``(C,)`` over the last axis;
- ``hist_bins`` (uint16) / ``hist_counts`` (int64): a sparse histogram of the finite float32 values
  binned by their top 16 bits (``bits >> 16``: sign, exponent and 7 mantissa bits, i.e. truncation to
  bfloat16 toward zero), nonzero bins only, sorted by value. A bin covers a relative width of at most
  2^-7 of its values' magnitude, so quantiles read from it are within that of the exact ones;
- ``count`` (values seen, finite or not) and ``nonfinite`` (NaN and +-Inf among them, not binned).

Minimum and maximum follow numpy: a NaN in a batch makes that batch's min and max NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bins whose exponent bits are all ones (Inf, NaN) never hold a finite value.
_EXP_MASK = 0x7F80
_HIST_SIZE = 1 << 16


def _bin_floor(bins: np.ndarray) -> np.ndarray:
    """The float32 value of each bin's bit pattern (its edge nearest zero)."""
    return (np.asarray(bins, dtype=np.uint32) << 16).view(np.float32)


def _value_order(bins: np.ndarray) -> np.ndarray:
    """Indices sorting bins by the values they hold (-0's bin just before +0's)."""
    bins = np.asarray(bins, dtype=np.uint16)
    negative = (bins & 0x8000) != 0
    magnitude = (bins & 0x7FFF).astype(np.int64)
    # Negative bins: larger magnitude first; -0 (magnitude 0) sorts to -1, before +0's 0.
    key = np.where(negative, -magnitude - 1, magnitude)
    return np.argsort(key, kind="stable")


def bin_values(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(bins, counts, nonfinite)`` of the finite float32 values of ``x`` (bins sorted by value)."""
    return _sparse(_dense_counts(x))


def _dense_counts(x: np.ndarray) -> np.ndarray:
    """Counts of every one of the 65536 top-16-bit patterns in ``x`` (int64)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32) >> 16
    return np.bincount(bits, minlength=_HIST_SIZE).astype(np.int64, copy=False)


def _sparse(full: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(bins, counts, nonfinite)`` of a dense 65536-count histogram (bins sorted by value)."""
    nonfinite_bins = (np.arange(_HIST_SIZE) & _EXP_MASK) == _EXP_MASK
    nonfinite = int(full[nonfinite_bins].sum())
    bins = np.flatnonzero(np.where(nonfinite_bins, 0, full)).astype(np.uint16)
    bins = bins[_value_order(bins)]
    return bins, full[bins.astype(np.int64)].astype(np.int64), nonfinite


def _merge_hist(b1: np.ndarray, c1: np.ndarray, b2: np.ndarray, c2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    full = np.zeros(_HIST_SIZE, dtype=np.int64)
    np.add.at(full, b1.astype(np.int64), c1)
    np.add.at(full, b2.astype(np.int64), c2)
    bins = np.flatnonzero(full).astype(np.uint16)
    bins = bins[_value_order(bins)]
    return bins, full[bins.astype(np.int64)]


def _batch_extrema(x: np.ndarray, start: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``x`` (samples ``start ..``) per calibration batch it touches."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    first, last = start // batch_size, (start + n - 1) // batch_size
    lo = np.empty(last - first + 1, dtype=np.float32)
    hi = np.empty(last - first + 1, dtype=np.float32)
    for k, b in enumerate(range(first, last + 1)):
        rows = flat[max(0, b * batch_size - start): min(n, (b + 1) * batch_size - start)]
        lo[k], hi[k] = rows.min(), rows.max()
    return lo, hi


@dataclass
class LayerStats:
    """Statistics of one node's float output over ``n_samples`` consecutive samples from ``start``."""

    name: str
    batch_size: int
    n_samples: int
    batch_min: np.ndarray
    batch_max: np.ndarray
    channel_min: np.ndarray
    channel_max: np.ndarray
    hist_bins: np.ndarray
    hist_counts: np.ndarray
    count: int
    nonfinite: int
    start: int = field(default=0)  # first sample (in memory only while streaming; a file's stats start at 0)

    @classmethod
    def from_tensor(cls, x: np.ndarray, batch_size: int, *, name: str = "", start: int = 0) -> LayerStats:
        """Statistics of ``x`` (samples ``start .. start + len(x)``, sample axis first) for batches of
        ``batch_size``; ``start`` places a streamed piece in its calibration batches."""
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 1 or x.shape[0] < 1:
            raise ValueError("statistics need at least one sample")
        lo, hi = _batch_extrema(x, start, batch_size)
        channels = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(-1, 1)
        bins, counts, nonfinite = bin_values(x)
        return cls(name, int(batch_size), int(x.shape[0]), lo, hi, channels.min(axis=0), channels.max(axis=0),
                   bins, counts, int(x.size), nonfinite, int(start))

    def merge(self, other: LayerStats) -> LayerStats:
        """The statistics of ``self``'s samples followed by ``other``'s (which must start where these end)."""
        if other.start != self.start + self.n_samples or other.batch_size != self.batch_size:
            raise ValueError(f"{self.name}: cannot merge samples from {other.start} (batch {other.batch_size}) after "
                             f"{self.start}..{self.start + self.n_samples} (batch {self.batch_size})")
        if self.channel_min.shape != other.channel_min.shape:
            raise ValueError(f"{self.name}: channel counts differ "
                             f"({self.channel_min.shape} vs {other.channel_min.shape})")
        lo, hi = self.batch_min, self.batch_max
        o_lo, o_hi = other.batch_min, other.batch_max
        if other.start % self.batch_size:  # other's first batch continues our last one
            lo = np.concatenate([lo[:-1], np.minimum(lo[-1:], o_lo[:1]), o_lo[1:]])
            hi = np.concatenate([hi[:-1], np.maximum(hi[-1:], o_hi[:1]), o_hi[1:]])
        else:
            lo, hi = np.concatenate([lo, o_lo]), np.concatenate([hi, o_hi])
        bins, counts = _merge_hist(self.hist_bins, self.hist_counts, other.hist_bins, other.hist_counts)
        return LayerStats(self.name, self.batch_size, self.n_samples + other.n_samples, lo, hi,
                          np.minimum(self.channel_min, other.channel_min),
                          np.maximum(self.channel_max, other.channel_max),
                          bins, counts, self.count + other.count, self.nonfinite + other.nonfinite, self.start)

    # --- file --------------------------------------------------------------------------------------

    def write(self, group: Any) -> None:
        """Store into an (empty) h5py group: the datasets and attributes of the format's ``/stats/<node>``."""
        if self.start != 0:
            raise ValueError(f"{self.name}: stats written to a capture must start at sample 0")
        group.attrs["name"] = self.name
        group.attrs["count"] = int(self.count)
        group.attrs["nonfinite"] = int(self.nonfinite)
        group.attrs["n_samples"] = int(self.n_samples)
        group.attrs["batch_size"] = int(self.batch_size)
        for key in ("batch_min", "batch_max", "channel_min", "channel_max"):
            group.create_dataset(key, data=np.asarray(getattr(self, key), dtype=np.float32))
        group.create_dataset("hist_bins", data=np.asarray(self.hist_bins, dtype=np.uint16))
        group.create_dataset("hist_counts", data=np.asarray(self.hist_counts, dtype=np.int64))

    @classmethod
    def read(cls, group: Any, batch_size: int | None = None, n_samples: int | None = None) -> LayerStats:
        """Read a ``/stats/<node>`` group; ``batch_size``/``n_samples`` default to the group's attributes."""
        attrs = group.attrs
        name = attrs.get("name", "")
        name = name.decode() if isinstance(name, bytes) else str(name)
        b = int(batch_size if batch_size is not None else attrs["batch_size"])
        n = int(n_samples if n_samples is not None else attrs["n_samples"])
        arrays = {key: np.asarray(group[key][()]) for key in
                  ("batch_min", "batch_max", "channel_min", "channel_max", "hist_bins", "hist_counts")}
        return cls(name, b, n, arrays["batch_min"].astype(np.float32), arrays["batch_max"].astype(np.float32),
                   arrays["channel_min"].astype(np.float32), arrays["channel_max"].astype(np.float32),
                   arrays["hist_bins"].astype(np.uint16), arrays["hist_counts"].astype(np.int64),
                   int(attrs["count"]), int(attrs["nonfinite"]))

    # --- queries -----------------------------------------------------------------------------------

    @property
    def n_batches(self) -> int:
        """Calibration batches covered."""
        return int(self.batch_min.shape[0])

    def min(self) -> float:
        """Smallest value (exact; NaN if a NaN was seen)."""
        return float(np.min(self.batch_min))

    def max(self) -> float:
        """Largest value (exact; NaN if a NaN was seen)."""
        return float(np.max(self.batch_max))

    def abs_max(self) -> float:
        """Largest magnitude (exact)."""
        return float(max(abs(self.min()), abs(self.max())))

    def finite_count(self) -> int:
        """Values in the histogram (the finite ones)."""
        return int(self.hist_counts.sum())

    def hist_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` float64 value range of each histogram bin, in bin order; a value ``v`` of a bin
        satisfies ``low <= v < high`` for non-negative bins and ``low < v <= high`` for negative ones."""
        return _edges(self.hist_bins)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) of the finite values, from the histogram.

        Exact rank rule: numpy's ``method="inverted_cdf"`` (the ``ceil(q * n)``-th smallest value). The
        result lies in the same bin as that value (linearly placed by rank inside the bin), so it is off
        by less than the bin's width: at most 2^-7 of the value's magnitude for normal floats (2^-133
        absolute for subnormals). Raises ValueError when no finite value was seen.
        """
        return _quantile(self.hist_bins, self.hist_counts, q)

    def abs_percentile(self, p: float) -> float:
        """The ``p``-th percentile (0..100) of the finite values' magnitudes (same rule and bound as
        :meth:`quantile`)."""
        magnitudes = (self.hist_bins & 0x7FFF).astype(np.uint16)
        bins, counts = _merge_hist(magnitudes, self.hist_counts, np.empty(0, np.uint16), np.empty(0, np.int64))
        return _quantile(bins, counts, p / 100.0)


def _edges(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bins = np.asarray(bins, dtype=np.uint16)
    magnitude = (bins & 0x7FFF).astype(np.uint32)
    near = _bin_floor(magnitude).astype(np.float64)
    far = _bin_floor(magnitude + 1).astype(np.float64)  # 0x7F7F + 1 is Inf: the last bin is open-ended
    negative = (bins & 0x8000) != 0
    return np.where(negative, -far, near), np.where(negative, -near, far)


def _quantile(bins: np.ndarray, counts: np.ndarray, q: float) -> float:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in 0..1, got {q}")
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no finite value to take a quantile of")
    rank = max(1, int(np.ceil(q * total)))  # 1-based rank of the wanted value
    cumulative = np.cumsum(counts)
    i = int(np.searchsorted(cumulative, rank))
    low, high = _edges(bins[i:i + 1])
    low_v, high_v = float(low[0]), float(high[0])
    if not np.isfinite(high_v) or not np.isfinite(low_v):  # the open last bin: its finite edge
        return low_v if np.isfinite(low_v) else high_v
    before = int(cumulative[i] - counts[i])
    fraction = (rank - before - 0.5) / int(counts[i])
    return low_v + (high_v - low_v) * fraction


# HDF5 headers of one /stats group: the group, six datasets and their attributes (measured about 5 KiB).
_GROUP_OVERHEAD = 8 << 10


def stats_bytes_bound(n_samples: int, batch_size: int, sample_shape: Any) -> int:
    """Most bytes one node's ``/stats`` group takes in a file: min/max per batch and channel, and a
    histogram of at most 65536 bins (or one per value), 10 bytes a bin."""
    shape = tuple(int(d) for d in sample_shape)
    values = n_samples * int(np.prod(shape, dtype=np.int64))
    channels = shape[-1] if shape else 1
    batches = -(-n_samples // batch_size)
    return 8 * batches + 8 * channels + 10 * min(_HIST_SIZE, values) + _GROUP_OVERHEAD


class StatsAccumulator:
    """Builds one node's :class:`LayerStats` from consecutive pieces of samples (a capture's batches),
    keeping a dense histogram so each piece costs one ``bincount``."""

    def __init__(self, name: str, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.name = name
        self.batch_size = int(batch_size)
        self.n_samples = 0
        self._lo: list[np.ndarray] = []
        self._hi: list[np.ndarray] = []
        self._channel_min: np.ndarray | None = None
        self._channel_max: np.ndarray | None = None
        self._hist = np.zeros(_HIST_SIZE, dtype=np.int64)
        self._count = 0

    def add(self, x: np.ndarray) -> None:
        """Add the next ``len(x)`` samples (sample axis first)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 1 or x.shape[0] == 0:
            return
        lo, hi = _batch_extrema(x, self.n_samples, self.batch_size)
        channels = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(-1, 1)
        self._add(lo, hi, channels.min(axis=0), channels.max(axis=0), _dense_counts(x), int(x.shape[0]), int(x.size))

    def add_summary(self, n: int, channel_min: np.ndarray, channel_max: np.ndarray, counts: np.ndarray) -> None:
        """Add the next ``n`` samples from their summary, computed elsewhere (inside the model's graph):
        per-channel min and max, and the 65536 counts of the top 16 bits. The samples must lie in one
        calibration batch (their min and max are then the batch's, taken from the channels')."""
        first, last = self.n_samples // self.batch_size, (self.n_samples + n - 1) // self.batch_size
        if n < 1 or first != last:
            raise ValueError(f"{self.name}: a summary must cover samples of one calibration batch")
        channel_min = np.asarray(channel_min, dtype=np.float32).reshape(-1)
        channel_max = np.asarray(channel_max, dtype=np.float32).reshape(-1)
        counts = np.asarray(counts, dtype=np.int64)
        self._add(np.min(channel_min, keepdims=True), np.max(channel_max, keepdims=True), channel_min, channel_max,
                  counts, int(n), int(counts.sum()))

    def _add(self, lo: np.ndarray, hi: np.ndarray, c_lo: np.ndarray, c_hi: np.ndarray, counts: np.ndarray,
             n: int, values: int) -> None:
        if self.n_samples % self.batch_size:  # this piece's first batch continues the previous piece's last
            self._lo[-1] = np.minimum(self._lo[-1], lo[:1])
            self._hi[-1] = np.maximum(self._hi[-1], hi[:1])
            lo, hi = lo[1:], hi[1:]
        if lo.size:  # an empty piece would hide the open batch from the next piece's update above
            self._lo.append(lo)
            self._hi.append(hi)
        if self._channel_min is None or self._channel_max is None:
            self._channel_min, self._channel_max = c_lo, c_hi
        else:
            self._channel_min = np.minimum(self._channel_min, c_lo)
            self._channel_max = np.maximum(self._channel_max, c_hi)
        self._hist += counts
        self._count += values
        self.n_samples += n

    def result(self) -> LayerStats:
        """The statistics of every sample added."""
        if self._channel_min is None or self._channel_max is None:
            raise ValueError(f"{self.name}: no sample was added")
        bins, counts, nonfinite = _sparse(self._hist)
        return LayerStats(self.name, self.batch_size, self.n_samples, np.concatenate(self._lo),
                          np.concatenate(self._hi), self._channel_min, self._channel_max, bins, counts,
                          self._count, nonfinite)
