"""ErrorStats against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from qinspect.analysis.metrics import ErrorStats, code_histogram, json_safe, representable_range


def test_hand_computed_sums_and_figures():
    ref = np.array([1.0, -2.0, 3.0, 0.5])
    test = np.array([1.5, -2.0, 2.0, 0.5])
    s = ErrorStats().update(ref, test)
    # d = [0.5, 0, -1, 0]
    assert s.n == 4
    assert s.sum_d == pytest.approx(-0.5)
    assert s.sum_d2 == pytest.approx(1.25)
    assert s.sum_ref2 == pytest.approx(1 + 4 + 9 + 0.25)
    assert s.sum_test2 == pytest.approx(2.25 + 4 + 4 + 0.25)
    assert s.sum_ref_test == pytest.approx(1.5 + 4 + 6 + 0.25)
    assert s.mse == pytest.approx(1.25 / 4)
    assert s.rmse == pytest.approx(math.sqrt(1.25 / 4))
    assert s.mean_error == pytest.approx(-0.125)
    assert s.sqnr_db == pytest.approx(10 * math.log10(14.25 / 1.25))
    assert s.cosine == pytest.approx(11.75 / math.sqrt(14.25 * 10.5))
    assert s.max_abs == 1.0
    assert s.ref_min == -2.0 and s.ref_max == 3.0
    assert s.rmse_over_scale(0.25) == pytest.approx(math.sqrt(1.25 / 4) / 0.25)


def test_codes_saturation_and_histogram():
    q = np.array([-128, -128, 0, 5, 127, 127, 127, 3], dtype=np.int8)
    ref = q.astype(np.float32) * 0.5
    s = ErrorStats().update(ref, ref, q=q)
    assert s.sat_lo_frac == pytest.approx(2 / 8)
    assert s.sat_hi_frac == pytest.approx(3 / 8)
    # distinct codes: -128, 0, 3, 5, 127 -> 5 of 256
    assert s.codes_used == 5
    assert s.codes_used_frac == pytest.approx(5 / 256)
    assert s.hist[0] == 2 and s.hist[255] == 3 and s.hist[128] == 1 and s.hist.sum() == 8
    assert s.sqnr_db == math.inf  # identical tensors


def test_narrow_range_codes():
    q = np.array([-127, -127, 0, 127], dtype=np.int32)
    s = ErrorStats().update(np.zeros(4), np.zeros(4), q=q, qmin=-127, qmax=127)
    assert s.sat_lo_frac == pytest.approx(0.5)
    assert s.codes_used_frac == pytest.approx(3 / 255)


def test_float_clip_counts():
    lo, hi = representable_range(3)  # scale 1/8
    assert (lo, hi) == (-16.0, 127 / 8)
    ref = np.array([-17.0, -16.0, 0.0, 15.875, 15.9, 100.0])
    s = ErrorStats().update(ref, ref, clip_lo=lo, clip_hi=hi)
    assert s.clip_lo_count == 1 and s.clip_hi_count == 2
    assert s.clip_lo_frac == pytest.approx(1 / 6)
    assert s.clip_hi_frac == pytest.approx(2 / 6)
    assert math.isnan(s.sat_lo_frac)  # no codes were given


def test_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 10, 3)).astype(np.float32)
    test = (ref + rng.normal(scale=0.1, size=ref.shape)).astype(np.float32)
    q = np.clip(np.round(ref * 64), -128, 127).astype(np.int8)
    whole = ErrorStats().update(ref, test, q=q, clip_lo=-2.0, clip_hi=1.98)
    parts = ErrorStats()
    for i in range(0, 6, 2):
        parts.merge(ErrorStats().update(ref[i : i + 2], test[i : i + 2], q=q[i : i + 2], clip_lo=-2.0, clip_hi=1.98))
    for key in ("n", "n_codes", "q_lo_count", "q_hi_count", "clip_lo_count", "clip_hi_count", "max_abs_d"):
        assert getattr(parts, key) == getattr(whole, key)
    assert parts.sum_d2 == pytest.approx(whole.sum_d2, rel=1e-12)
    assert parts.sqnr_db == pytest.approx(whole.sqnr_db, rel=1e-12)
    assert np.array_equal(parts.hist, whole.hist)
    # independent reference for the sums
    d = test.astype(np.float64) - ref.astype(np.float64)
    assert whole.sum_d2 == pytest.approx(float((d * d).sum()), rel=1e-12)


def test_chunked_update_matches_direct(monkeypatch):
    import qinspect.analysis.metrics as m

    monkeypatch.setattr(m, "_CHUNK", 7)
    ref = np.arange(30, dtype=np.float32) - 10
    test = ref + 0.25 * (np.arange(30) % 3)
    s = ErrorStats().update(ref, test)
    assert s.sum_d2 == pytest.approx(float(((test - ref) ** 2).sum()))
    assert s.ref_min == -10 and s.ref_max == 19
    assert s.max_abs_d == 0.5


def test_edge_cases():
    empty = ErrorStats()
    assert math.isnan(empty.sqnr_db) and math.isnan(empty.mse) and math.isnan(empty.cosine)
    zero_ref = ErrorStats().update(np.zeros(3), np.array([0.0, 1.0, 0.0]))
    assert zero_ref.sqnr_db == -math.inf
    assert math.isnan(zero_ref.cosine)
    both_zero = ErrorStats().update(np.zeros(3), np.zeros(3))
    assert both_zero.sqnr_db == math.inf and both_zero.cosine == 1.0
    with pytest.raises(ValueError):
        ErrorStats().update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        code_histogram(np.array([200]))
    a = ErrorStats().update(np.zeros(2), np.zeros(2), q=np.zeros(2, np.int8))
    b = ErrorStats().update(np.zeros(2), np.zeros(2), q=np.zeros(2, np.int8), qmin=-127)
    with pytest.raises(ValueError):
        a.merge(b)


def test_dict_round_trip_and_how():
    ref = np.array([1.0, 2.0, -4.0])
    test = np.array([1.0, 2.5, -4.0])
    s = ErrorStats().update(ref, test, q=np.array([8, 20, -32], np.int8), clip_lo=-16, clip_hi=15.875)
    d = s.to_dict()
    assert all(set(v) == {"value", "how"} and v["how"] for v in d.values())
    assert d["sqnr_db"]["value"] == pytest.approx(10 * math.log10(21 / 0.25))
    text = json.dumps(json_safe(d))
    back = ErrorStats.from_dict(json.loads(text))
    assert back.sqnr_db == pytest.approx(s.sqnr_db)
    assert back.n == 3 and np.array_equal(back.hist, s.hist)
    # non-finite values survive strict JSON
    perfect = ErrorStats().update(ref, ref)
    back2 = ErrorStats.from_dict(json.loads(json.dumps(json_safe(perfect.to_dict()), allow_nan=False)))
    assert back2.sqnr_db == math.inf
    assert json_safe({"a": [float("nan"), -math.inf]}) == {"a": ["nan", "-inf"]}


def test_update_leaves_inputs_untouched():
    ref = np.array([1.0, 2.0, 3.0])
    test = np.array([1.5, 2.0, 2.0])
    ErrorStats().update(ref, test)
    assert test.tolist() == [1.5, 2.0, 2.0] and ref.tolist() == [1.0, 2.0, 3.0]


def test_ratio_se_db_by_hand():
    from qinspect.analysis.metrics import ratio_se_db

    # Equal samples: every leave-one-out ratio is the same, no spread.
    assert ratio_se_db(np.ones(4), np.ones(4)) == 0.0
    # Two samples, ratios 4 and 1: leave-one-out gives 10log10(1) = 0 and 10log10(4) = 6.0206 dB, mean
    # 3.0103; jackknife SE = sqrt((n-1)/n * sum of squared deviations) = sqrt(1/2 * 2 * 3.0103^2) = 3.0103.
    assert ratio_se_db(np.array([4.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx(10 * np.log10(2), rel=1e-12)
    assert math.isnan(ratio_se_db(np.array([1.0]), np.array([1.0])))  # one sample: no spread to measure
    assert math.isnan(ratio_se_db(np.array([1.0, 1.0]), np.array([0.0, 1.0])))  # a leave-one-out ratio undefined
