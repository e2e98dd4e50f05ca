"""Histogram helpers against hand-computed values and numpy's histogram."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.analysis.histograms import (
    HistogramAccumulator,
    activation_histogram,
    channel_code_counts,
    channel_ranges,
    histogram_edges,
    output_channel_axis,
)


def test_linear_histogram_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000)
    h = activation_histogram(x, bins=20)
    ref_counts, ref_edges = np.histogram(x, bins=20)
    assert np.allclose(h.edges, ref_edges)
    assert np.array_equal(h.counts, ref_counts)
    assert h.total == 1000 and h.below == 0 and h.above == 0


def test_fixed_edges_streaming_and_outside_counts():
    acc = HistogramAccumulator(np.array([0.0, 1.0, 2.0, 4.0]))
    acc.update(np.array([-1.0, 0.0, 0.5, 1.0, 3.9, 4.0, 5.0]))
    acc.update(np.array([np.nan, 2.0, np.inf]))
    h = acc.hist
    # bins [0,1) [1,2) [2,4]: 0, 0.5 | 1.0 | 2.0, 3.9, 4.0
    assert h.counts.tolist() == [2, 1, 3]
    assert h.below == 1 and h.above == 1 and h.nonfinite == 2
    assert h.total == 10


def test_log_edges_symmetric():
    e = histogram_edges(-100.0, 1000.0, bins=9, log=True, floor=1.0)
    assert np.all(np.diff(e) > 0)
    assert e[0] == pytest.approx(-100.0) and e[-1] == pytest.approx(1000.0)
    assert -1.0 in e and 1.0 in e  # the central bin [-floor, floor]
    pos = e[e >= 1.0]
    assert np.allclose(np.diff(np.log10(pos)), np.diff(np.log10(pos))[0])
    one_sided = histogram_edges(0.0, 8.0, bins=4, log=True, floor=1.0)
    # 4 bins: the central [0, floor] and 3 geometric bins up to 8
    assert one_sided.tolist() == pytest.approx([0.0, 1.0, 2.0, 4.0, 8.0])
    h = activation_histogram(np.array([0.5, 3.0, -0.1]), log=True, bins=11, floor=0.01)
    assert h.counts.sum() == 3


def test_channel_ranges_and_bits_wasted_conv():
    w = np.zeros((3, 3, 2, 4), np.float32)
    w[..., 0] = 1.0
    w[0, 0, 0, 1] = -0.25
    w[..., 2] = 0.5
    w[1, 1, 1, 2] = -0.125
    # channel 3 all zero
    cr = channel_ranges(w, "Conv2D")
    assert cr.tensor_absmax == 1.0
    assert cr.channel_absmax.tolist() == [1.0, 0.25, 0.5, 0.0]
    assert cr.bits_wasted[:3].tolist() == [0.0, 2.0, 1.0]
    assert math.isinf(cr.bits_wasted[3])
    assert cr.channel_min.tolist() == [1.0, -0.25, -0.125, 0.0]
    assert cr.spread_bits == pytest.approx(2.0)


def test_depthwise_channel_order():
    # (kh, kw, cin, mult) = (1, 2, 2, 2): output channel c*mult + m
    w = np.zeros((1, 2, 2, 2))
    w[0, 0, 1, 0] = 8.0  # channel 2
    w[0, 1, 0, 1] = 2.0  # channel 1
    cr = channel_ranges(w, "DepthwiseConv2D", "depthwise_kernel")
    assert cr.channel_absmax.tolist() == [0.0, 2.0, 8.0, 0.0]
    assert cr.bits_wasted[1] == 2.0


def test_transposed_and_axes():
    assert output_channel_axis("Conv2DTranspose", "kernel") == 2
    assert output_channel_axis("Dense", "kernel") == -1
    assert output_channel_axis("DepthwiseConv2D", "bias") is None
    w = np.zeros((2, 2, 3, 5))
    w[:, :, 1, :] = 4.0
    w[:, :, 2, :] = 1.0
    cr = channel_ranges(w, "Conv2DTranspose")
    assert cr.channel_absmax.tolist() == [0.0, 4.0, 1.0]
    with pytest.raises(ValueError):
        channel_ranges(np.zeros(3), "Dense", "bias")


def test_channel_code_counts():
    q = np.array([[5, 5, -128], [0, 1, 2], [7, 7, 7]], dtype=np.int8)  # Dense (in=3, out=3)
    # channel 0: codes 5, 0, 7 -> 3; channel 1: 5, 1, 7 -> 3; channel 2: -128, 2, 7 -> 3
    assert channel_code_counts(q, "Dense").tolist() == [3, 3, 3]
    q2 = np.array([[1, 1], [1, 2], [1, 3]], dtype=np.int8)
    assert channel_code_counts(q2, "Dense").tolist() == [1, 3]
