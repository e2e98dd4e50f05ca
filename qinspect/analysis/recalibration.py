"""Remedies in the calibration data, tried by calibrating again as the quantizer would.

Two causes live in the data rather than in the model: a few calibration samples far outside the rest
(an outlier sample sets a position for every other one), and calibration data unlike what inference
sees. Their remedy is another calibration set, so the emulator proves it the only faithful way: it runs
the quantizer's calibration again (the same batch size, votes and DPU constraints) on the cleaned or
representative data and keeps every activation position that changes. The fix is then measured like
any other, as a what-if of those positions.

Per-sample ranges find the outlier samples: for each quantized tensor, every calibration sample's
largest magnitude, over all the samples the positions were chosen from (not only those the findings
examine). A sample whose largest magnitude is more than ``2^OUTLIER_MIN_BITS`` times the median
sample's is an outlier there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from qinspect.dpu.calibrate import calibrate
from qinspect.dpu.dpu_graph import DpuGraph, Slot
from qinspect.dpu.executor import Evaluator
from qinspect.dpu.options import DEFAULT_CALIB_BATCH

OUTLIER_SAMPLE_BITS = 2.0  # a sample whose largest |x| is 2^this times the median sample's is an outlier
MAX_OUTLIER_SHARE = 0.25  # more samples than this share far beyond the median are the data, not outliers


def _batches(inputs: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch_size):
        yield {k: np.asarray(v[start:start + batch_size], np.float32) for k, v in inputs.items()}


def activation_positions(graph: DpuGraph) -> dict[Slot, int]:
    """The graph's activation positions (weights' do not depend on the data)."""
    out = {}
    for slot, spec in graph.slots.items():
        p = graph.pos(slot)
        if spec.kind != "weight" and p is not None:
            out[slot] = int(p)
    return out


def calibrated_positions(graph: DpuGraph, inputs: dict[str, np.ndarray], batch_size: int) -> dict[Slot, int]:
    """The activation positions the quantizer's calibration chooses on ``inputs`` in batches of
    ``batch_size`` (votes and DPU constraints included), on a copy: ``graph`` is not changed."""
    copy = replace(graph, positions={k: dict(v) for k, v in graph.positions.items()}, adjustments=[],
                   split_votes=[])
    calibrate(copy, _batches(inputs, batch_size), batch_size)
    return activation_positions(copy)


def per_sample_extremes(graph: DpuGraph, inputs: dict[str, np.ndarray],
                        batch_size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Quantized node -> each sample's smallest and largest float value at its output, over every sample
    of ``inputs`` (nodes whose output holds no value are left out)."""
    wanted = {n.name for n in graph.nodes if n.out_slot is not None}
    lows: dict[str, list[np.ndarray]] = {}
    highs: dict[str, list[np.ndarray]] = {}

    def on_value(node: Any, v: Any) -> None:
        if node.name in wanted:
            x = v.float()
            if x.size:
                flat = x.reshape(len(x), -1)
                lows.setdefault(node.name, []).append(flat.min(axis=1))
                highs.setdefault(node.name, []).append(flat.max(axis=1))

    for batch in _batches(inputs, batch_size):
        Evaluator(graph, "float").run(batch, keep=(), on_value=on_value)
    return {k: (np.concatenate(lows[k]).astype(np.float64), np.concatenate(highs[k]).astype(np.float64))
            for k in lows}


def outlier_samples(maxima: np.ndarray) -> np.ndarray:
    """Indices of the samples whose largest |x| exceeds ``2^OUTLIER_SAMPLE_BITS`` times the median
    sample's (none when they would be more than ``MAX_OUTLIER_SHARE`` of the samples: then they are the
    data's own spread)."""
    if maxima.size < 4:
        return np.zeros(0, np.int64)
    median = float(np.median(maxima))
    if median <= 0:
        return np.zeros(0, np.int64)
    idx = np.flatnonzero(maxima > median * 2.0**OUTLIER_SAMPLE_BITS)
    return idx if idx.size <= MAX_OUTLIER_SHARE * maxima.size else np.zeros(0, np.int64)


class Recalibration:
    """Calibrates ``graph`` again on other data and says which activation positions change.

    ``calib``: every sample the model as given was calibrated on. When its positions came from
    elsewhere (a quantized.h5, a positions file), or from another number of samples, the baseline is
    this data's own calibration, so only what the data change moves is counted."""

    def __init__(self, graph: DpuGraph, calib: dict[str, np.ndarray], float_batch: int | None = None) -> None:
        self.graph = graph
        self.calib = calib
        self.n = len(next(iter(calib.values())))
        opts = graph.options
        self.batch_size = opts.calib_batch_size if opts is not None else DEFAULT_CALIB_BATCH
        self.float_batch = float_batch or self.batch_size  # for the float pass (no vote: any batch will do)
        self._base: dict[Slot, int] | None = None
        self._done: dict[Any, dict[Slot, int]] = {}
        self._extremes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def baseline(self) -> dict[Slot, int]:
        """The activation positions the changes are counted from."""
        if self._base is None:
            if self.graph.calib_samples == self.n:
                self._base = activation_positions(self.graph)
            else:
                self._base = calibrated_positions(self.graph, self.calib, self.batch_size)
        return self._base

    def _changes(self, after: dict[Slot, int]) -> dict[Slot, int]:
        base = self.baseline
        return {slot: p for slot, p in after.items() if base.get(slot) != p}

    def without(self, samples: np.ndarray) -> dict[Slot, int]:
        """Position changes when calibrating without the calibration samples ``samples`` (indices)."""
        key = ("without", tuple(int(i) for i in samples))
        if key not in self._done:
            keep = np.setdiff1d(np.arange(self.n), samples)
            data = {k: np.asarray(v)[keep] for k, v in self.calib.items()}
            self._done[key] = self._changes(calibrated_positions(self.graph, data, self.batch_size))
        return self._done[key]

    def on(self, inputs: dict[str, np.ndarray], key: str) -> dict[Slot, int]:
        """Position changes when calibrating on ``inputs`` instead (``key`` names them for the cache)."""
        if ("on", key) not in self._done:
            self._done[("on", key)] = self._changes(calibrated_positions(self.graph, inputs, self.batch_size))
        return self._done[("on", key)]

    def _per_sample(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._extremes is None:  # one float pass over the calibration data serves both views below
            self._extremes = per_sample_extremes(self.graph, self.calib, self.float_batch)
        return self._extremes

    def maxima(self) -> dict[str, np.ndarray]:
        """Each quantized node's per-sample largest |x| over the calibration data."""
        return {k: np.maximum(np.abs(lo), np.abs(hi)) for k, (lo, hi) in self._per_sample().items()}

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Each quantized node's float (min, max) over the calibration data."""
        return {k: (float(lo.min()), float(hi.max())) for k, (lo, hi) in self._per_sample().items()}
