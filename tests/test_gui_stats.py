"""The layer panel's numbers without widgets: sample spreading, what-if figures, weight channels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.gui import layer_stats as ls

pytestmark = pytest.mark.gui


class FakeCapture:
    """Per sample i, every value equals i: which samples were read shows in the values."""

    def __init__(self, n: int, size: int) -> None:
        self.data = np.repeat(np.arange(n, dtype=np.float32)[:, None], size, axis=1)

    def activation(self, layer: str, samples):
        return self.data[samples]


def test_spread_plan_reads_samples_across_the_capture():
    ids, keep = ls.spread_plan(1000, 100, max_values=5000, read_values=20_000)
    assert len(ids) == 200 and ids[0] == 0 and ids[-1] == 999  # 20_000 / 100 samples, first to last
    assert keep == 25  # 5000 kept values over 200 samples
    ids, keep = ls.spread_plan(10, 100)
    assert list(ids) == list(range(10)) and keep == 100  # small layers are read whole


def test_read_spread_keeps_values_of_the_chosen_samples():
    cap = FakeCapture(50, 40)
    ids = np.array([0, 10, 49])
    x = ls.read_spread(cap, "l", ids, 7, lambda: None)
    assert x.size == 21
    assert sorted(set(x.tolist())) == [0.0, 10.0, 49.0]
    np.testing.assert_array_equal(ls.read_spread(cap, "l", ids, 40, lambda: None), np.repeat([0, 10, 49], 40))


def test_what_if_counts_clipping_and_sqnr_by_hand():
    # Values 0, 0.5, ..., 9.5 at p = 3: range [-16, 15.875], all exact -> infinite SQNR, nothing clipped.
    x = np.arange(20, dtype=np.float32) / 2
    data = ls.layer_data("l", "ReLU", x, 1, 1, 3, "test", [], True)
    w = ls.what_if(data, 3)
    assert w.clip_lo_frac == 0 and w.clip_hi_frac == 0 and math.isinf(w.sqnr_db)
    # p = 4: range [-8, 7.9375]: 8.0 .. 9.5 (4 of 20 values) clip to 7.9375.
    w = ls.what_if(data, 4)
    assert w.clip_hi_frac == pytest.approx(4 / 20) and w.hi == 127 / 16
    noise = sum((v - 127 / 16) ** 2 for v in (8.0, 8.5, 9.0, 9.5))
    assert w.sqnr_db == pytest.approx(10 * math.log10(float(np.sum(x.astype(np.float64) ** 2)) / noise))
    assert w.stats.codes_used == 17  # 0..7.5 give codes 0, 8, ..., 120 (16 codes), plus the clipped 127


def test_weight_channels_against_the_tensor_range():
    k = np.zeros((1, 1, 2, 3), np.float32)
    k[..., 0], k[..., 1], k[..., 2] = 1.0, 0.25, 0.0
    (info,) = [w for w in ls.weight_infos("Conv2D", {"kernel": k}, {"kernel": 7}, "test") if w.name == "kernel"]
    assert info.position == 7 and info.position_source == "test"
    np.testing.assert_allclose(info.bits_wasted[:2], [0.0, 2.0])
    assert math.isinf(info.bits_wasted[2])  # an all-zero channel has no code at all
    assert list(info.codes_used) == [1, 1, 1]
