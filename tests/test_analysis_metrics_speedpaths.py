"""The fast paths of ErrorStats.update / code_histogram give the same numbers as plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.analysis import metrics
from qinspect.analysis.metrics import ErrorStats, code_histogram


def _naive_hist(q: np.ndarray) -> np.ndarray:
    return np.array([np.count_nonzero(q == c) for c in range(-128, 128)], dtype=np.int64)


@pytest.mark.parametrize("n", [0, 1, 7, metrics._PAIR_MIN, metrics._PAIR_MIN + 1, 3 * metrics._PAIR_MIN + 5])
def test_code_histogram_pair_path_equals_counting(n: int) -> None:
    rng = np.random.default_rng(n)
    q = rng.integers(-128, 128, size=n, dtype=np.int8)
    if n:
        q[0], q[-1] = -128, 127  # both ends, and the odd last byte
    h = code_histogram(q)
    assert h.dtype == np.int64 and h.shape == (256,)
    assert np.array_equal(h, _naive_hist(q))
    assert h.sum() == n


def test_code_histogram_non_contiguous_and_wide_ints() -> None:
    rng = np.random.default_rng(3)
    q = rng.integers(-128, 128, size=(64, 64, 70), dtype=np.int8)[:, ::2, 1:]  # a strided view
    assert np.array_equal(code_histogram(q), _naive_hist(q))
    assert np.array_equal(code_histogram(q.astype(np.int32)), _naive_hist(q))
    with pytest.raises(ValueError):
        code_histogram(np.array([128], np.int32))


def test_update_matches_float64_reference_across_chunks(monkeypatch) -> None:
    # Several chunks (a small _CHUNK) and a partial last one: the sums equal plain float64 sums.
    monkeypatch.setattr(metrics, "_CHUNK", 1000)
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(3, 1111)).astype(np.float32)
    q = np.clip(np.rint(ref * 16), -128, 127).astype(np.int8)
    q[0, :5] = -128  # saturated codes at both ends
    q[1, :3] = 127
    test = q.astype(np.float32) / 16
    st = ErrorStats().update(ref, test, q=q, qmin=-128, qmax=127, clip_lo=-8.0, clip_hi=127 / 16)
    r, t = ref.astype(np.float64).ravel(), test.astype(np.float64).ravel()
    d = t - r
    assert st.n == r.size
    assert math.isclose(st.sum_d2, float(np.sum(d * d)), rel_tol=1e-12)
    assert math.isclose(st.sum_ref2, float(np.sum(r * r)), rel_tol=1e-12)
    assert math.isclose(st.sum_test2, float(np.sum(t * t)), rel_tol=1e-12)
    assert math.isclose(st.sum_ref_test, float(np.sum(r * t)), rel_tol=1e-12)
    assert math.isclose(st.sum_d, float(np.sum(d)), rel_tol=1e-9, abs_tol=1e-12)
    assert st.max_abs_d == float(np.abs(d).max())
    assert (st.ref_min, st.ref_max) == (float(r.min()), float(r.max()))
    assert st.q_lo_count == np.count_nonzero(q == -128) and st.q_hi_count == np.count_nonzero(q == 127)
    assert np.array_equal(st.hist, _naive_hist(q))
    assert st.clip_lo_count == np.count_nonzero(ref < -8.0)
    assert st.clip_hi_count == np.count_nonzero(ref > 127 / 16)


def test_update_end_counts_for_narrow_and_wide_code_ranges() -> None:
    q = np.array([-127, -127, 0, 127, -128], np.int8)
    st = ErrorStats().update(np.zeros(5), np.zeros(5), q=q[:4], qmin=-127, qmax=127)
    assert (st.q_lo_count, st.q_hi_count) == (2, 1)
    # a code range beyond int8 (wider integer codes): counted on the codes themselves
    st2 = ErrorStats().update(np.zeros(3), np.zeros(3), q=np.array([-3, 0, 3]), qmin=-200, qmax=3)
    assert (st2.q_lo_count, st2.q_hi_count) == (0, 1)


def test_code_histogram_pair_chunks(monkeypatch) -> None:
    # many bincount chunks, the last one partial, plus the odd last byte
    monkeypatch.setattr(metrics, "_PAIR_CHUNK", 1000)
    rng = np.random.default_rng(9)
    q = rng.integers(-128, 128, size=metrics._PAIR_MIN + 2501, dtype=np.int8)
    assert np.array_equal(code_histogram(q), _naive_hist(q))
