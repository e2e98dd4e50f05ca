"""The emulator's fast paths (offset folded into the GEMM, strided depthwise phases, cached bounds,
the fused float value stage) and the average-pool rescale rule, against slow obvious references."""

from __future__ import annotations

import numpy as np
import pytest
from test_dpu_ops import _rand_codes, _ref_conv

from qinspect.dpu import _conv_core, ops
from qinspect.dpu.layer_map import avgpool_scale, layer_node


@pytest.mark.parametrize(
    ("k", "s", "pad", "winograd"),
    [(1, 1, "valid", True), (3, 1, "same", True), (3, 1, "same", False), (3, 2, "same", True), (2, 1, "valid", True)],
)
def test_offset_folded_into_gemm_is_exact(monkeypatch, k, s, pad, winograd) -> None:
    rng = np.random.default_rng(40 + k + s)
    x = _rand_codes(rng, (2, 9, 8, 12))
    w = rng.integers(-60, 61, size=(k, k, 12, 6)).astype(np.int8)
    b = _rand_codes(rng, (6,))
    monkeypatch.setattr(_conv_core, "_WINOGRAD", winograd)
    ref = _ref_conv(x, w, (s, s), pad, (1, 1))
    for pi, pw, pb, po, act in [(6, 8, 10, 4, "relu6"), (5, 7, 9, 6, None), (4, 4, 6, 2, "relu")]:
        stage = ops.float_output_stage(b, pi, pw, pb, po, act, ops.weight_bound("conv2d", w))
        # the fold is really taken here (float32 stage, integer offset, small bound)
        assert _conv_core._foldable(stage, np.float32, ops.weight_bound("conv2d", w))
        want = ops.output_stage(ref, b, pi, pw, pb, po, act)
        got = ops.conv2d(x, w, b, pi, pw, pb, po, s, pad, act=act)
        assert np.array_equal(got, want), (pi, pw, pb, po, act)
        monkeypatch.setattr(_conv_core, "_FOLD", False)
        assert np.array_equal(ops.conv2d(x, w, b, pi, pw, pb, po, s, pad, act=act), want)
        monkeypatch.setattr(_conv_core, "_FOLD", True)


def test_fold_refused_when_the_offset_could_break_float32() -> None:
    w = np.full((1, 1, 4, 1), 100, np.int8)
    bound = ops.weight_bound("conv2d", w)  # 128 * 400 = 51200
    assert bound == 51200
    # offset in accumulator units 2^23 + ...: bound + offset >= 2^24 -> not folded
    big = _conv_core.Epilogue(finish=lambda t, d: None, scale=1.0, offset=np.array([2.0**24 - 1000.0], np.float32),
                              dtype=np.float32)
    assert not _conv_core._foldable(big, np.float32, bound)
    # a non-integer offset in accumulator units -> not folded
    frac = _conv_core.Epilogue(finish=lambda t, d: None, scale=1.0, offset=np.array([0.5], np.float32),
                               dtype=np.float32)
    assert not _conv_core._foldable(frac, np.float32, bound)
    # float64 stages never fold
    f64 = ops.float_output_stage(None, 2, 3, 5, 1, "leaky", bound)
    assert f64.dtype == np.float64 and not _conv_core._foldable(f64, np.float32, bound)


def _ref_dw(x, w, s, pad, d):
    kh, kw, cin, mult = w.shape
    cols = [_ref_conv(x[..., c : c + 1], w[:, :, c : c + 1, m : m + 1], s, pad, d)
            for c in range(cin) for m in range(mult)]
    return np.concatenate(cols, axis=-1)


@pytest.mark.parametrize(("s", "d", "mult"), [((2, 2), (1, 1), 1), ((3, 2), (1, 1), 2), ((2, 1), (1, 1), 1),
                                              ((2, 2), (2, 2), 1), ((1, 3), (1, 1), 1)])
def test_strided_depthwise_phases_match_loop(s, d, mult) -> None:
    rng = np.random.default_rng(sum(s) * 7 + mult)
    x = _rand_codes(rng, (2, 11, 10, 3))
    w = _rand_codes(rng, (3, 3, 3, mult))
    for pad in ("same", "valid"):
        ref = _ref_dw(x, w, s, pad, d)
        assert np.array_equal(ops.depthwise_conv2d_acc(x, w, s, pad, d), ref), pad
        b = _rand_codes(rng, (3 * mult,))
        assert np.array_equal(ops.depthwise_conv2d(x, w, b, 5, 7, 9, 4, s, pad, d, act="relu6"),
                              ops.output_stage(ref, b, 5, 7, 9, 4, "relu6")), pad


def test_weight_bound_by_hand() -> None:
    w = np.zeros((2, 1, 2, 2), np.int8)
    w[0, 0, :, 0] = [3, -4]  # column 0 over (kh, kw, cin): |3| + |-4| + |1| = 8
    w[1, 0, 0, 0] = 1
    w[:, :, :, 1] = -2  # column 1: 4 taps of |-2| = 8 as well; then one more
    w[0, 0, 0, 1] = -3  # 9
    assert ops.weight_bound("conv2d", w) == 128 * 9
    wd = np.array([[[[5], [-6]]], [[[-7], [1]]]], np.int8)  # (2, 1, 2, 1): channel 0 |5|+|-7|, 1 |-6|+|1|
    assert ops.weight_bound("depthwise_conv2d", wd) == 128 * 12


@pytest.mark.parametrize(("pi", "pw", "pb"), [(6, 8, 10), (2, 3, 9), (5, 7, 0), (4, 4, 4)])
def test_value_stage_equals_accumulator_plus_bias(pi, pw, pb) -> None:
    rng = np.random.default_rng(pi + pw + pb)
    x = _rand_codes(rng, (2, 7, 6, 5))
    w = _rand_codes(rng, (3, 3, 5, 4))
    b = _rand_codes(rng, (4,))
    for s in (1, 2):
        acc = _ref_conv(x, w, (s, s), "same", (1, 1)).astype(np.float64)
        want = ((acc + b.astype(np.float64) * 2.0 ** (pi + pw - pb)) * 2.0 ** -(pi + pw)).astype(np.float32)
        got = ops.conv2d(x, w, b, pi, pw, pb, None, s, "same")
        assert got.dtype == np.float32 and np.array_equal(got, want), s
        nob = ops.conv2d(x, w, None, pi, pw, pb, None, s, "same")
        assert np.array_equal(nob, (acc * 2.0 ** -(pi + pw)).astype(np.float32))
    wd = _rand_codes(rng, (3, 3, 5, 1))
    bd = _rand_codes(rng, (5,))
    accd = _ref_dw(x, wd, (2, 2), "same", (1, 1)).astype(np.float64)
    want = ((accd + bd.astype(np.float64) * 2.0 ** (pi + pw - pb)) * 2.0 ** -(pi + pw)).astype(np.float32)
    assert np.array_equal(ops.depthwise_conv2d(x, wd, bd, pi, pw, pb, None, 2, "same"), want)


# ---------------------------------------------------------------------------------------------------
# Average-pool rescale: vai_q_tensorflow2 vitis_pooling.py `_get_avgpool_scale(kh, kw)` starts with
# `if kh > 255 or kw > 255: return 1.0` -- no rescale only when a SIDE exceeds 255, not the area.
# ---------------------------------------------------------------------------------------------------


def test_avgpool_rescale_rule_is_per_side() -> None:
    # 17x17 (area 289 > 255, sides <= 255): rescaled. n < 7 + ceil(log2 289) = 16; n = 15:
    # round(32768 / 289) = 113, |113/32768 - 1/289| = 1.17e-5 (n = 14: 57/16384, 1.88e-5)
    scale, factor = ops.avgpool_rescale(17, 17)
    assert factor == (113, 15)
    assert scale == float(np.float32(np.float32(113 / 32768) * np.float32(289)))
    # 16x16: K = 1, N = 8 exactly (scale 1.0); a side of 256 or more: no rescale at all
    assert ops.avgpool_rescale(16, 16) == (1.0, (1, 8))
    assert ops.avgpool_rescale(256, 256) == (1.0, None)
    assert ops.avgpool_rescale(300, 2) == (1.0, None)
    assert ops.avgpool_rescale(3, 3) == (float(np.float32(63 / 64)), (7, 6))
    # the graph mapping uses the same rule
    assert avgpool_scale(17, 17) == ops.avgpool_rescale(17, 17)
    node = layer_node("p", "AveragePooling2D", {"pool_size": [17, 17]}, ["x"], {})
    assert node.params["dpu_factor"] == (113, 15) and node.params["rescale"] == scale
    # a non-square AveragePooling2D: no rescale (VitisAveragePooling2D.build's local variable)
    rect = layer_node("r", "AveragePooling2D", {"pool_size": [2, 3]}, ["x"], {})
    assert rect.params["dpu_factor"] is None and rect.params["rescale"] == 1.0


def test_avg_pool_17x17_applies_the_quantizer_factor() -> None:
    # 173 codes of 101 and 116 of 100: sum 29073. Plain average 100.598 -> 101; with the factor,
    # 29073 * 113 / 2^15 = 100.258 -> 100 (the quantizer's simulation: 100.598 * 0.99661 = 100.258).
    q = np.full(289, 100, np.int8)
    q[:173] = 101
    q = q.reshape(1, 17, 17, 1)
    assert ops.avg_pool(q, 0, 0, 17, 17, "valid").ravel().tolist() == [100]
    assert ops.avg_pool(q, 0, 0, 17, 17, "valid", factor=None).ravel().tolist() == [101]
    assert ops.global_avg_pool(q, 0, 0).ravel().tolist() == [100]


def test_int16_tap_groups_by_hand() -> None:
    # one channel, four taps |w| = 100, 100, 55, 1: with max|x| = 128 the running bound 128 * (100 + 100
    # + 55) = 32640 fits int16, + 1 more (32768) does not; with max|x| = 127, 127 * 256 = 32512 fits.
    w = np.array([100, -100, 55, -1], np.int8).reshape(2, 2, 1, 1)
    x128 = np.array([-128, 5], np.int8).reshape(1, 1, 2, 1)
    x127 = np.array([127, -127], np.int8).reshape(1, 1, 2, 1)
    assert _conv_core._int16_tap_groups(x128, w) == [[0, 1, 2], [3]]
    assert _conv_core._int16_tap_groups(x127, w) == [[0, 1, 2, 3]]
    # float operands (the float kernels) never take the int16 path
    assert _conv_core._int16_tap_groups(x128.astype(np.float32), w) is None
    assert _conv_core._int16_tap_groups(x128, w.astype(np.float32)) is None


@pytest.mark.parametrize(("k", "wmax", "s", "mult"), [(3, 128, 1, 1), (3, 20, 1, 1), (5, 6, 2, 2), (3, 128, 2, 1)])
def test_int16_depthwise_groups_are_exact(monkeypatch, k, wmax, s, mult) -> None:
    # all -128 weights and inputs (every group one tap), small weights (one group for all taps)
    rng = np.random.default_rng(k * wmax + s)
    x = _rand_codes(rng, (2, 9, 8, 4))
    w = rng.integers(-wmax, wmax, size=(k, k, 4, mult)).astype(np.int8)
    if wmax == 128:
        w[0, :, :, :] = -128
        x[:, :3] = -128
    groups = _conv_core._int16_tap_groups(x, w)
    assert groups is not None and sorted(t for g in groups for t in g) == list(range(k * k))
    b = _rand_codes(rng, (4 * mult,))
    ref = _ref_dw(x, w, (s, s), "same", (1, 1))
    got_acc = ops.depthwise_conv2d_acc(x, w, s, "same")
    got = {act: ops.depthwise_conv2d(x, w, b, 6, 7, 9, 5, s, "same", act=act) for act in (None, "relu6", "leaky")}
    assert np.array_equal(got_acc, ref)
    for act, q in got.items():
        assert np.array_equal(q, ops.output_stage(ref, b, 6, 7, 9, 5, act)), act
    monkeypatch.setattr(_conv_core, "_DW_INT16", False)
    assert np.array_equal(ops.depthwise_conv2d_acc(x, w, s, "same"), ref)
    for act, q in got.items():
        assert np.array_equal(q, ops.depthwise_conv2d(x, w, b, 6, 7, 9, 5, s, "same", act=act)), act


@pytest.mark.parametrize(
    ("shape", "pad", "budget"),
    [((2, 7, 9, 16), "same", None), ((1, 8, 6, 24), "valid", None), ((2, 13, 11, 16), "same", 4096),
     ((1, 5, 5, 16), "valid", None)],
)
def test_winograd_2d_path_is_exact(monkeypatch, shape, pad, budget) -> None:
    rng = np.random.default_rng(sum(shape))
    x = _rand_codes(rng, shape)  # extremes -128 / 127 included
    w = rng.integers(-100, 101, size=(3, 3, shape[-1], 16)).astype(np.int8)
    b = _rand_codes(rng, (16,))
    if budget is not None:  # several tile-row chunks per image
        monkeypatch.setattr(_conv_core, "_CHUNK_BYTES", budget)
    bound = ops.weight_bound("conv2d", w)
    stage = ops.float_output_stage(b, 5, 7, 9, 6, "relu6", bound)
    assert _conv_core._wino2d_exact(w, stage, np.float32, bound)  # the 2-D path is really taken
    ref = _ref_conv(x, w, (1, 1), pad, (1, 1))
    assert np.array_equal(ops.conv2d_acc(x, w, 1, pad), ref)
    assert np.array_equal(ops.conv2d_acc(x.astype(np.float32), w, 1, pad), ref)  # float-held codes
    for act in (None, "relu6", "relu"):
        want = ops.output_stage(ref, b, 5, 7, 9, 6, act)
        assert np.array_equal(ops.conv2d(x, w, b, 5, 7, 9, 6, 1, pad, act=act), want), act
        # the offset outside the GEMMs (no fold): the same codes
        monkeypatch.setattr(_conv_core, "_FOLD", False)
        assert np.array_equal(ops.conv2d(x, w, b, 5, 7, 9, 6, 1, pad, act=act), want), act
        monkeypatch.setattr(_conv_core, "_FOLD", True)


def test_winograd_2d_bounds_by_hand_and_refusal() -> None:
    # one channel in and out, all weights 1: U'_11 = (1+1+1)^2 = 9, the largest |U'|; the GEMM bound is
    # 512 * 9; the final 4 * acc bound is 4 * 128 * 9.
    w = np.ones((3, 3, 1, 1), np.int8)
    worst, final = _conv_core._wino2d_bounds(w)
    assert final == 4 * 128 * 9
    assert worst >= 512 * 9
    # 64 channels of -128: 512 * 64 * 1152 = 37.7M > 2^24: refused; the result is still exact
    rng = np.random.default_rng(2)
    wb = np.full((3, 3, 64, 16), -128, np.int8)
    bound = ops.weight_bound("conv2d", wb)
    assert bound < 2**24  # so only the Winograd bounds refuse it
    assert not _conv_core._wino2d_exact(wb, ops._INT64_ACC, np.float32, bound)
    assert _conv_core._wino2d_bounds(wb)[0] >= 512 * 64 * 1152
    x = _rand_codes(rng, (1, 5, 6, 64))
    assert np.array_equal(ops.conv2d_acc(x, wb, 1, "same"), _ref_conv(x, wb, (1, 1), "same", (1, 1)))


@pytest.mark.parametrize("k_in", [40, 1300])  # one float32 GEMM; K > 1024 (float64 partial sums)
def test_dense_fused_equals_integer_output_stage(k_in) -> None:
    rng = np.random.default_rng(k_in)
    x = _rand_codes(rng, (3, 2, k_in))  # leading dims kept
    w = _rand_codes(rng, (k_in, 7))
    b = _rand_codes(rng, (7,))
    acc = (x.reshape(-1, k_in).astype(np.int64) @ w.astype(np.int64)).reshape(3, 2, 7)
    assert np.array_equal(ops.dense_acc(x, w), acc)
    for pi, pw, pb, po in [(6, 8, 10, 4), (2, 3, 9, 0), (8, 8, 6, -2)]:
        for act in (None, "relu", "relu6", "leaky"):
            got = ops.dense(x, w, b, pi, pw, pb, po, act)
            assert got.shape == (3, 2, 7)
            assert np.array_equal(got, ops.output_stage(acc, b, pi, pw, pb, po, act)), (pi, pw, pb, po, act)
        want = ((acc + b.astype(np.float64) * 2.0 ** (pi + pw - pb)) * 2.0 ** -(pi + pw)).astype(np.float32)
        assert np.array_equal(ops.dense(x, w, b, pi, pw, pb, None), want)


def test_prepared_weights_cached_only_for_read_only_arrays() -> None:
    calls = []

    def make() -> np.ndarray:
        calls.append(1)
        return np.zeros(3)

    ro = np.arange(6, dtype=np.int8)
    ro.flags.writeable = False
    a = _conv_core._cached(ro, ("t",), make)
    assert _conv_core._cached(ro, ("t",), make) is a and len(calls) == 1
    assert not a.flags.writeable  # derived arrays are handed out read-only
    _conv_core._cached(ro, ("other",), make)  # another derivation: computed
    assert len(calls) == 2
    rw = np.arange(6, dtype=np.int8)
    _conv_core._cached(rw, ("t",), make)
    _conv_core._cached(rw, ("t",), make)
    assert len(calls) == 4  # a writeable array may change: never cached
    view = rw.view()
    view.flags.writeable = False  # read-only view of writeable memory: not cached either
    _conv_core._cached(view, ("t",), make)
    assert len(calls) == 5


def test_cached_weights_follow_new_weight_arrays() -> None:
    # read-only weights (as the executor holds them), one after the other: each result is its own
    rng = np.random.default_rng(31)
    x = _rand_codes(rng, (1, 6, 7, 16))
    b = _rand_codes(rng, (16,))
    for _ in range(3):
        w = rng.integers(-90, 91, size=(3, 3, 16, 16)).astype(np.int8)
        w.flags.writeable = False
        ref = _ref_conv(x, w, (1, 1), "same", (1, 1))
        for _ in range(2):  # the second call uses the cached forms
            assert np.array_equal(ops.conv2d(x, w, b, 5, 7, 9, 6, 1, "same", act="relu6"),
                                  ops.output_stage(ref, b, 5, 7, 9, 6, "relu6"))
        wd = w[:, :, :, :1].copy()
        wd.flags.writeable = False
        refd = _ref_dw(x, wd, (2, 2), "same", (1, 1))
        for _ in range(2):
            assert np.array_equal(ops.depthwise_conv2d_acc(x, wd, 2, "same"), refd)
        del w, wd


@pytest.mark.parametrize(("ps", "po"), [((3, 5), 4), ((7, 7, 2), 0), ((0, 24), 20), ((4, 6), 9), ((1, 30), 3)])
def test_add_int32_and_int64_paths_round_half_up(ps, po) -> None:
    # reference: floor(sum q_i 2^(po - p_i) + 1/2) in Python integers (exact), clipped to int8
    rng = np.random.default_rng(sum(ps) + po)
    qs = [_rand_codes(rng, (64,)) for _ in ps]
    m = max(ps)
    want = []
    for k in range(64):
        num = sum(int(q[k]) << (m - p) for q, p in zip(qs, ps, strict=True))  # value * 2^m
        e = m - po
        y = (num + (1 << (e - 1))) >> e if e > 0 else num << -e  # floor(num / 2^e + 1/2)
        want.append(min(127, max(-128, y)))
    for act in (None, "relu"):
        got = ops.add([(q, p) for q, p in zip(qs, ps, strict=True)], po, act)
        exp = [max(0, v) for v in want] if act == "relu" else want
        assert got.dtype == np.int8 and got.tolist() == exp, act


def test_prepared_weight_entries_go_with_their_weights() -> None:
    import gc

    ro = np.arange(6, dtype=np.int8)
    ro.flags.writeable = False
    _conv_core._cached(ro, ("gone",), lambda: np.zeros(2))
    mine = [k for k in _conv_core._PREP if k[-1] == ("gone",)]
    assert len(mine) == 1
    del ro
    gc.collect()
    assert mine[0] not in _conv_core._PREP
