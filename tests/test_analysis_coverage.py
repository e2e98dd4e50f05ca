"""The shared reader of a layer's share outside an int8 range (window coverage tab, report --eval)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.analysis.coverage import activation_batches, range_shares
from qinspect.analysis.metrics import representable_range


class _Capture:
    """Just the two reads the coverage functions make, over an in-memory tensor."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.reads: list[slice] = []

    def activation_shape(self, layer: str) -> tuple[int, ...]:
        return self.x.shape

    def activation(self, layer: str, samples: slice) -> np.ndarray:
        self.reads.append(samples)
        return self.x[samples]


def test_values_on_the_bounds_are_representable_and_each_side_is_counted() -> None:
    lo, hi = representable_range(4)  # position 4: codes -128..127 times 1/16
    assert (lo, hi) == (-8.0, 127 / 16)
    # 3 samples x 2 channels: below lo twice, above hi once, the bounds themselves kept
    x = np.array([[[-8.0, 127 / 16]], [[-8.0625, 7.9]], [[-9.0, 8.0]]], np.float32)
    got = range_shares(activation_batches(_Capture(x), "l", batch_bytes=8), lo, hi)
    assert (got.below, got.above, got.total) == (2, 1, 6)
    assert got.absmax == 9.0
    assert got.below_share == pytest.approx(2 / 6) and got.above_share == pytest.approx(1 / 6)
    assert got.outside_share == pytest.approx(3 / 6)


def test_scale_is_applied_per_channel_before_counting_and_max_samples_limits_the_read() -> None:
    # channel 1 is halved by equalization: 10 on the captured tensor is 5 in the int8 model, inside
    x = np.array([[[1.0, 10.0]], [[2.0, 12.0]], [[100.0, 100.0]]], np.float32)
    cap = _Capture(x)
    batches = list(activation_batches(cap, "l", max_samples=2, scale=np.array([1.0, 0.5]), batch_bytes=8))
    assert [b.shape[0] for b in batches] == [1, 1]  # 8 bytes = one sample of two float32 a read
    assert cap.reads == [slice(0, 1), slice(1, 2)]
    got = range_shares(batches, *representable_range(4))
    assert (got.below, got.above, got.total, got.absmax) == (0, 0, 4, 6.0)
    unscaled = range_shares(activation_batches(_Capture(x), "l", max_samples=2), *representable_range(4))
    assert (unscaled.above, unscaled.absmax) == (2, 12.0)


def test_nothing_read_has_no_share_and_cancel_runs_before_each_batch() -> None:
    empty = range_shares([], -1.0, 1.0)
    assert empty.outside_share is None and math.isnan(empty.below_share) and math.isnan(empty.absmax)
    calls = []
    range_shares(activation_batches(_Capture(np.zeros((3, 1), np.float32)), "l", batch_bytes=4), -1.0, 1.0,
                 check=lambda: calls.append(1))
    assert len(calls) == 3

    def cancel() -> None:
        raise InterruptedError

    with pytest.raises(InterruptedError):
        range_shares(activation_batches(_Capture(np.zeros((3, 1), np.float32)), "l"), -1.0, 1.0, check=cancel)
