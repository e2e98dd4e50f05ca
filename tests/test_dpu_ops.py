"""Integer DPU operators. References: hand-worked integer arithmetic (written out in each test), a slow
obvious int64 loop for the convolutions, every operator of the Vitis reference cases fed with the dumped
int8 inputs and compared with the dumped int8 outputs, and TensorFlow for the float kernels."""

from __future__ import annotations

import numpy as np
import pytest
from dpu_ops_fixtures import dump_int8, dump_weight_int8, h5_weights, positions, refcase

from qinspect.dpu import float_ops, ops
from qinspect.dpu._conv_core import pads_1d


def a8(*v) -> np.ndarray:
    return np.array(v, dtype=np.int8)


def px(values, c: int = 1) -> np.ndarray:
    """A (1, 1, len/c, c)... helper: codes as a 1 x 1 x W x C NHWC int8 image."""
    arr = np.array(values, dtype=np.int8)
    return arr.reshape(1, 1, -1, c)


# ---------------------------------------------------------------------------------------------------
# Conv output stage, by hand
# ---------------------------------------------------------------------------------------------------


def test_conv_bias_shift_and_half_up_ties() -> None:
    # x = [100, -50], w = [3, -2]: acc = 300 + 100 = 400. Bias 5 at pb=5, pi+pw = 7: 5 << 2 = 20 -> 420.
    # po = 4: shift_cut = 3: 420 / 8 = 52.5 -> HALF_UP 53.
    w = np.array([3, -2], np.int8).reshape(1, 1, 2, 1)
    x = np.array([100, -50], np.int8).reshape(1, 1, 1, 2)
    assert ops.conv2d(x, w, a8(5), 4, 3, 5, 4).ravel().tolist() == [53]
    # negated input: acc = -400 + 20 = -380: -380 / 8 = -47.5 -> -47 (half up goes towards +inf)
    assert ops.conv2d(-x, w, a8(5), 4, 3, 5, 4).ravel().tolist() == [-47]
    # the accumulator alone
    assert ops.conv2d_acc(x, w).ravel().tolist() == [400]


def test_conv_saturates_at_both_ends() -> None:
    # 64 taps of 127 * 127 = 1032256; shift_cut 4 -> 64516 -> 127. Negated -> -128.
    x = np.full((1, 1, 1, 64), 127, np.int8)
    w = np.full((1, 1, 64, 1), 127, np.int8)
    assert ops.conv2d(x, w, None, 2, 2, 0, 0).ravel().tolist() == [127]
    assert ops.conv2d(x, -w, None, 2, 2, 0, 0).ravel().tolist() == [-128]
    # -128 * -128 = 16384 per tap, the extreme product
    xm = np.full((1, 1, 1, 4), -128, np.int8)
    wm = np.full((1, 1, 4, 1), -128, np.int8)
    assert ops.conv2d_acc(xm, wm).ravel().tolist() == [65536]


def test_shift_cut_zero_and_sixteen() -> None:
    x = np.array([3], np.int8).reshape(1, 1, 1, 1)
    w = np.array([-5], np.int8).reshape(1, 1, 1, 1)
    # shift_cut = pi + pw - po = 0: y = acc = -15
    assert ops.conv2d(x, w, None, 3, 2, 0, 5).ravel().tolist() == [-15]
    # shift_cut = 16 with acc = 3 * 2^15 = 98304 from the bias: bq = 3 at pb = pi + pw - 15 -> 3 << 15
    # 98304 / 65536 = 1.5 -> 2 ; with bq = -3: -1.5 -> -1
    z = np.zeros((1, 1, 1, 1), np.int8)
    assert ops.conv2d(z, w, a8(3), 10, 8, 3, 2).ravel().tolist() == [2]
    assert ops.conv2d(z, w, a8(-3), 10, 8, 3, 2).ravel().tolist() == [-1]


def test_bias_shift_limits() -> None:
    z = np.zeros((1, 1, 1, 1), np.int8)
    w = np.ones((1, 1, 1, 1), np.int8)
    # shift_bias = pi + pw - pb = 16: bias 1 -> 65536; po with shift_cut 16 -> exactly 1
    assert ops.conv2d(z, w, a8(1), 8, 8, 0, 0).ravel().tolist() == [1]
    # shift_bias = 16 with bias -128 -> -2^23; shift_cut 16 -> -128
    assert ops.conv2d(z, w, a8(-128), 8, 8, 0, 0).ravel().tolist() == [-128]
    # negative shift_bias (bias finer than the accumulator): pi=2, pw=3 (acc unit 2^-5), pb=7.
    # acc 10 (0.3125) + bias 4 * 2^-7 (0.03125) = 0.34375; po=4: 5.5 -> 6. Exact: (10 << 2) + 4 = 44,
    # shift 1 + 2 = 3: 44 / 8 = 5.5 -> 6. With bias 2: 42 / 8 = 5.25 -> 5.
    x = np.array([10], np.int8).reshape(1, 1, 1, 1)
    assert ops.conv2d(x, w, a8(4), 2, 3, 7, 4).ravel().tolist() == [6]
    assert ops.conv2d(x, w, a8(2), 2, 3, 7, 4).ravel().tolist() == [5]


def test_fused_leaky_relu_on_negative_accumulator() -> None:
    w = np.ones((1, 1, 1, 1), np.int8)
    # pi + pw - po = 2. acc = -100: -100 * 26 / 2^(2 + 8) = -2600 / 1024 = -2.539 -> floor(-2.039) = -3;
    # acc = 100: 100 / 4 = 25 (positive: no alpha).
    x = np.array([-100, 100], np.int8).reshape(1, 1, 2, 1)
    assert ops.conv2d(x, w, None, 1, 1, 0, 0, act="leaky").ravel().tolist() == [-3, 25]
    # one rounding, not two: acc = -109 * 2 = -218: -218 * 26 / 1024 = -5.535 -> floor(-5.035) = -6.
    # (rounding first, -218 / 4 = -54.5 -> -54, then -54 * 26 / 256 = -5.48 -> -5, would be wrong)
    x2 = np.array([-109], np.int8).reshape(1, 1, 1, 1)
    w2 = np.full((1, 1, 1, 1), 2, np.int8)
    assert ops.conv2d(x2, w2, None, 1, 1, 0, 0, act="leaky").ravel().tolist() == [-6]
    # tie: acc = -256 (two taps of -128), shift 2: -6656 / 1024 = -6.5 -> -6 (half up)
    x3 = np.array([-128, -128], np.int8).reshape(1, 1, 1, 2)
    w3 = np.ones((1, 1, 2, 1), np.int8)
    assert ops.conv2d(x3, w3, None, 1, 1, 0, 0, act="leaky").ravel().tolist() == [-6]
    # shift 0: acc = -5: -130 / 256 = -0.508 -> floor(-0.008) = -1
    assert ops.conv2d(-np.full((1, 1, 1, 1), 5, np.int8), w, None, 0, 0, 0, 0, act="leaky").ravel().tolist() == [-1]


def test_relu_and_relu6_cap() -> None:
    w = np.ones((1, 1, 1, 1), np.int8)
    x = np.array([110, 50, -20], np.int8).reshape(1, 1, 3, 1)
    # po = 4: 6 * 2^4 = 96 caps 110; relu zeroes -20
    assert ops.conv2d(x, w, None, 4, 0, 0, 4, act="relu6").ravel().tolist() == [96, 50, 0]
    assert ops.conv2d(x, w, None, 4, 0, 0, 4, act="relu").ravel().tolist() == [110, 50, 0]
    # po = -2: 6 * 2^-2 = 1.5 -> HALF_UP 2; x/4 at shift 2: 110/4 = 27.5 -> 28 -> capped 2
    assert ops.conv2d(x, w, None, 0, 0, 0, -2, act="relu6").ravel().tolist() == [2, 2, 0]
    # standalone requantize with relu6: po = 5 caps at 192 > 127: saturates at 127
    assert ops.requantize(a8(100, 127, -3), 5, 5, act="relu6").tolist() == [100, 127, 0]
    assert ops.requantize(a8(100, 127, -3), 4, 4, act="relu6").tolist() == [96, 96, 0]


# ---------------------------------------------------------------------------------------------------
# Element-wise, by hand
# ---------------------------------------------------------------------------------------------------


def test_requantize() -> None:
    q = a8(5, -5, 127, -128)
    # shift 1: 2.5 -> 3, -2.5 -> -2, 63.5 -> 64, -64
    assert ops.requantize(q, 3, 2).tolist() == [3, -2, 64, -64]
    # left shift 2: 20, -20, 508 -> 127, -512 -> -128
    assert ops.requantize(q, 3, 5).tolist() == [20, -20, 127, -128]
    assert ops.requantize(q, 3, 3).tolist() == q.tolist()


def test_add_nary() -> None:
    # (100 @5) + (-50 @8) to po=5: 100 - 50/8 = 93.75 -> 94. Exact: 800 - 50 = 750, >> 3 -> 93.75 -> 94
    assert ops.add([(a8(100), 5), (a8(-50), 8)], 5).tolist() == [94]
    # ties: 3 @1 = 1.5 -> 2 ; -3 @1 = -1.5 -> -1 (po 0)
    assert ops.add([(a8(3, -3), 1), (a8(0, 0), 1)], 0).tolist() == [2, -1]
    # saturation both ends and the fused relu
    assert ops.add([(a8(127, -128), 0), (a8(127, -128), 0)], 0).tolist() == [127, -128]
    assert ops.add([(a8(10, -100), 0), (a8(1, 1), 0)], 0, act="relu").tolist() == [11, 0]
    # three inputs at 2, 3, 4 to po 1: 5/4 + 6/8 + 7/16 = 2.4375 -> x2 = 4.875 -> 5
    assert ops.add([(a8(5), 2), (a8(6), 3), (a8(7), 4)], 1).tolist() == [5]
    # an output position finer than every input (left shift): 3 @0 + 1 @1 = 3.5 at po 2 -> 14
    assert ops.add([(a8(3), 0), (a8(1), 1)], 2).tolist() == [14]


def test_multiply() -> None:
    # 100 @6 * -50 @7 to po 5: -5000 >> 8 = -19.53 -> -20
    assert ops.multiply((a8(100), 6), (a8(-50), 7), 5).tolist() == [-20]
    # ties: 3 * 1 >> 1 = 1.5 -> 2 ; -3 -> -1.5 -> -1
    assert ops.multiply((a8(3, -3), 1), (a8(1, 1), 0), 0).tolist() == [2, -1]
    # saturation: 127 * 127 >> 0 -> 127 ; -128 * 127 -> -128
    assert ops.multiply((a8(127, -128), 0), (a8(127, 127), 0), 0).tolist() == [127, -128]


def test_concat_re_expresses_inputs() -> None:
    a = a8(10, -10).reshape(1, 1, 1, 2)
    b = a8(7).reshape(1, 1, 1, 1)
    # b at 3 to po 2: 7 / 2 = 3.5 -> 4
    assert ops.concat([(a, 2), (b, 3)], 2).ravel().tolist() == [10, -10, 4]


def test_leaky_relu_and_prelu() -> None:
    # pi = po = 5: -100 * 26 / 256 = -10.156 -> -10; -64 * 26 / 256 = -6.5 -> -6; 100 -> 100
    assert ops.leaky_relu(a8(-100, -64, 100), 5, 5).tolist() == [-10, -6, 100]
    # pi 5 -> po 6: positive 100 << 1 = 200 -> 127; -100: -2600 / 128 = -20.3 -> -20
    assert ops.leaky_relu(a8(-100, 100), 5, 6).tolist() == [-20, 127]
    # PReLU alpha 13 @7 (0.1015625): -64 * 13 / 2^7 = -6.5 -> -6 ; -10 * 13 / 128 = -1.016 -> -1
    assert ops.prelu(a8(-64, -10, 9), 4, a8(13), 7, 4).tolist() == [-6, -1, 9]
    # per-channel alpha broadcast on NHWC: channel alphas [13, 64] @7
    q = a8(-64, -64).reshape(1, 1, 1, 2)
    assert ops.prelu(q, 4, a8(13, 64).reshape(1, 1, 2), 7, 4).ravel().tolist() == [-6, -32]


def test_hard_sigmoid_points() -> None:
    # pi 4, po 7: shift = 4 + 14 - 7 = 11; t = clip(xq + 48, 0, 96); y = t * 2731 / 2048
    # x=0 (xq 0):      48 * 2731 = 131088 / 2048 = 64.008 -> 64  (0.5)
    # x=-3 (xq -48):   t 0 -> 0
    # x=3 (xq 48):     96 * 2731 = 262176 / 2048 = 128.02 -> 128 -> clip 127
    # x=1 (xq 16):     64 * 2731 = 174784 / 2048 = 85.34 -> 85
    # x=-1.25 (xq -20): 28 * 2731 = 76468 / 2048 = 37.34 -> 37
    # x=6.25 (xq 100): t capped at 96 -> 127
    q = a8(0, -48, 48, 16, -20, 100)
    assert ops.hard_sigmoid(q, 4, 7).tolist() == [64, 0, 127, 85, 37, 127]
    # pi 1, po 7 (the rich case's vitis_sigmoid): shift 8; xq -3 (x=-1.5): t = 3, 3 * 2731 / 256 = 32.0 -> 32
    assert ops.hard_sigmoid(a8(-3), 1, 7).tolist() == [32]


# ---------------------------------------------------------------------------------------------------
# Pooling and resampling, by hand
# ---------------------------------------------------------------------------------------------------


def test_avgpool_factor_table() -> None:
    assert ops.avgpool_factor(3, 3) == (7, 6)
    assert ops.avgpool_factor(5, 5) == (10, 8)
    assert ops.avgpool_factor(6, 6) == (7, 8)
    assert ops.avgpool_factor(7, 7) == (21, 10)
    assert ops.avgpool_factor(14, 14) == (21, 12)
    assert ops.avgpool_factor(16, 16) is None  # area 256 > 255
    assert ops.avgpool_factor(2, 3) is None  # non-square: the quantizer's quirk, no rescale
    # 4x4: 1/16 exactly at n = 4 (K = 1), the first n with zero error
    assert ops.avgpool_factor(4, 4) == (1, 4)
    # 9x9: 1/81 = 0.0123457; n = 13: round(8192 / 81) = 101 -> 0.0123291 (error 1.6e-5, the smallest
    # for n < 7 + ceil(log2 81) = 14)
    assert ops.avgpool_factor(9, 9) == (101, 13)


def test_avg_pool_3x3_dpu_factor_and_same_border() -> None:
    q = np.arange(1, 10, dtype=np.int8).reshape(1, 3, 3, 1)  # [[1,2,3],[4,5,6],[7,8,9]]
    y = ops.avg_pool(q, 0, 0, 3, 1, "same")[0, :, :, 0]
    # centre: sum 45 * 7 / 64 = 4.92 -> 5
    assert y[1, 1] == 5
    # corner: taps 1,2,4,5 = 12 over 4 valid taps, then the factor 9 * 7 / 64:
    # 12 * 63 / 256 = 2.953 -> 3 (a DPU counting the padded zeros: 12 * 7 / 64 = 1.31 -> 1)
    assert y[0, 0] == 3
    # top edge: 1+2+3+4+5+6 = 21 over 6 taps: 21 * 63 / 384 = 3.445 -> 3
    assert y[0, 1] == 3
    # bottom-right corner: 5+6+8+9 = 28: 28 * 63 / 256 = 6.89 -> 7
    assert y[2, 2] == 7
    # output two positions finer: centre 45 * 7 / 64 * 4 = 19.69 -> 20
    assert ops.avg_pool(q, 0, 2, 3, 1, "valid").ravel().tolist() == [20]


def test_avg_pool_ties_round_half_up() -> None:
    # sum 224: 224 * 7 / 64 = 24.5 -> 25 ; -224 -> -24.5 -> -24
    q = np.array([25] * 8 + [24], np.int8).reshape(1, 3, 3, 1)
    assert ops.avg_pool(q, 3, 3, 3, 3, "valid").ravel().tolist() == [25]
    assert ops.avg_pool(-q, 3, 3, 3, 3, "valid").ravel().tolist() == [-24]


def test_global_avg_pool() -> None:
    # 2x2: factor (1, 2): sum 10 / 4 = 2.5 -> 3 ; -10 / 4 -> -2.5 -> -2
    q = np.array([1, 2, 3, 4], np.int8).reshape(1, 2, 2, 1)
    assert ops.global_avg_pool(q, 0, 0).tolist() == [[3]]
    assert ops.global_avg_pool(-q, 0, 0).tolist() == [[-2]]
    assert ops.global_avg_pool(q, 0, 0, keepdims=True).shape == (1, 1, 1, 1)
    # 3x3 all 10: 90 * 7 / 64 = 9.84 -> 10 ; pi 2 -> po 0: 9.84 / 4 = 2.46 -> 2
    q3 = np.full((1, 3, 3, 1), 10, np.int8)
    assert ops.global_avg_pool(q3, 0, 0).tolist() == [[10]]
    assert ops.global_avg_pool(q3, 2, 0).tolist() == [[2]]


def test_max_pool_and_upsample() -> None:
    q = np.array([[-100, -90], [-80, -120]], np.int8).reshape(1, 2, 2, 1)
    # 'same' 3x3 stride 1: padded taps never win: every window holds -80 (all four values)
    assert ops.max_pool(q, 0, 0, 3, 1, "same").ravel().tolist() == [-80, -80, -80, -80]
    # requantize on output: -80 @4 -> po 3: -40
    assert ops.max_pool(q, 4, 3, 2, 2, "valid").ravel().tolist() == [-40]
    up = ops.upsample_nearest(a8(5, -5).reshape(1, 1, 2, 1), 3, 2, 2)
    # each code repeated 2x2 then 5/2 = 2.5 -> 3, -2.5 -> -2
    assert up[0, :, :, 0].tolist() == [[3, 3, -2, -2], [3, 3, -2, -2]]


# ---------------------------------------------------------------------------------------------------
# Convolutions against a slow obvious int64 loop (random data with -128 / 127, K > 1024)
# ---------------------------------------------------------------------------------------------------


def _rand_codes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    q = rng.integers(-128, 128, size=shape).astype(np.int8)
    flat = q.reshape(-1)
    flat[::7] = -128  # plenty of extreme values
    flat[3::11] = 127
    return q


def _ref_conv(x, w, s, pad, d) -> np.ndarray:
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    pt, _, ho = pads_1d(h, kh, s[0], d[0], pad)
    pl, _, wo = pads_1d(wd, kw, s[1], d[1], pad)
    out = np.zeros((n, ho, wo, co), np.int64)
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for b in range(kw):
                    y, xx = i * s[0] + a * d[0] - pt, j * s[1] + b * d[1] - pl
                    if 0 <= y < h and 0 <= xx < wd:
                        out[:, i, j, :] += x[:, y, xx, :].astype(np.int64) @ w[a, b].astype(np.int64)
    return out


@pytest.mark.parametrize(
    ("cin", "k", "s", "pad", "d"),
    [
        (5, 3, (1, 1), "same", (1, 1)),
        (5, 3, (1, 1), "valid", (2, 2)),
        (6, 3, (2, 2), "same", (1, 1)),
        (4, 5, (2, 1), "valid", (1, 1)),
        (3, 2, (1, 1), "same", (1, 1)),  # even kernel: TF pads 0 before, 1 after
        (200, 3, (1, 1), "same", (1, 1)),  # K = 1800 > 1024: chunked / float64 path
        (200, 3, (2, 2), "same", (1, 1)),
        (1100, 1, (1, 1), "valid", (1, 1)),  # one GEMM row K = 1100
    ],
)
def test_conv_acc_matches_int64_loop(cin, k, s, pad, d) -> None:
    rng = np.random.default_rng(cin * 31 + k)
    x = _rand_codes(rng, (2, 7, 6, cin))
    w = _rand_codes(rng, (k, k, cin, 3))
    assert np.array_equal(ops.conv2d_acc(x, w, s, pad, d), _ref_conv(x, w, s, pad, d))


@pytest.mark.parametrize(("groups", "cin_g", "k", "s", "pad"), [
    (3, 2, 3, (1, 1), "same"), (4, 8, 3, (2, 2), "same"), (46, 8, 3, (1, 1), "same"),  # RegNet's width 8
    (2, 24, 3, (1, 1), "valid"),  # 24 input channels a group: the Winograd rows path per group
    (5, 300, 1, (1, 1), "valid"),  # K = 300 per group, wide weights: the float64 chunks per group
])
def test_grouped_conv_acc_is_each_groups_int64_loop(groups, cin_g, k, s, pad) -> None:
    # A grouped kernel (kh, kw, cin / groups, cout): group g's filters see only its input channels
    rng = np.random.default_rng(groups * 7 + cin_g)
    per = 3
    x = _rand_codes(rng, (2, 7, 6, groups * cin_g))
    w = _rand_codes(rng, (k, k, cin_g, groups * per))
    want = np.concatenate([_ref_conv(x[..., g * cin_g:(g + 1) * cin_g], w[..., g * per:(g + 1) * per], s, pad, (1, 1))
                           for g in range(groups)], axis=-1)
    assert np.array_equal(ops.conv2d_acc(x, w, s, pad), want)


def test_grouped_conv_output_stage_by_hand() -> None:
    # two groups, 1x1: x = [10, 20 | -30, 40], filters [[1], [2]] and [[3], [-1]], bias [4, -4] at pb = 3
    # acc = [10 + 40, -90 - 40] = [50, -130]; pi + pw = 5: bias << 2 = [16, -16] -> [66, -146]
    # po = 2: shift 3: 66 / 8 = 8.25 -> 8; -146 / 8 = -18.25 -> -18; with relu: [8, 0]
    x = np.array([10, 20, -30, 40], np.int8).reshape(1, 1, 1, 4)
    w = np.array([[1, 3], [2, -1]], np.int8).reshape(1, 1, 2, 2)
    assert ops.conv2d_acc(x, w).ravel().tolist() == [50, -130]
    assert ops.conv2d(x, w, a8(4, -4), 2, 3, 3, 2).ravel().tolist() == [8, -18]
    assert ops.conv2d(x, w, a8(4, -4), 2, 3, 3, 2, act="relu").ravel().tolist() == [8, 0]
    # the unquantized float value: (acc + bias << 2) * 2^-5
    assert ops.conv2d(x, w, a8(4, -4), 2, 3, 3, None).ravel().tolist() == [66 / 32, -146 / 32]


def test_extreme_accumulator_beyond_float32() -> None:
    # every product is (-128)(-128) = 2^14; K = 1800: 1800 * 2^14 = 29491200 > 2^24 (not a float32
    # integer range) but must come out exact; +1 on one tap makes the sum odd-sized in the low bits.
    x = np.full((1, 3, 3, 200), -128, np.int8)
    w = np.full((3, 3, 200, 1), -128, np.int8)
    w[0, 0, 0, 0] = -127  # -128 * -127 = 16256: total 29491200 - 128 = 29491072
    acc = ops.conv2d_acc(x, w, (1, 1), "valid")
    assert acc.ravel().tolist() == [29491072]
    xd = np.full((1, 1800), -128, np.int8)
    wd = np.full((1800, 1), -128, np.int8)
    wd[5, 0] = 127
    # 1799 * 16384 - 128 * 127 = 29474816 - 16256 = 29458560
    assert ops.dense_acc(xd, wd).ravel().tolist() == [29458560]


def _ref_depthwise(x, w, s, pad):
    kh, kw, cin, mult = w.shape
    out = []
    for c in range(cin):
        for m in range(mult):
            out.append(_ref_conv(x[..., c : c + 1], w[:, :, c : c + 1, m : m + 1], s, pad, (1, 1)))
    return np.concatenate(out, axis=-1)


@pytest.mark.parametrize(("s", "pad", "mult"), [((1, 1), "same", 1), ((2, 2), "valid", 2), ((2, 2), "same", 1)])
def test_depthwise_matches_loop(s, pad, mult) -> None:
    rng = np.random.default_rng(7)
    x = _rand_codes(rng, (2, 6, 7, 3))
    w = _rand_codes(rng, (3, 3, 3, mult))
    assert np.array_equal(ops.depthwise_conv2d_acc(x, w, s, pad), _ref_depthwise(x, w, s, pad))


def test_conv_transpose_by_hand_and_loop() -> None:
    # one input pixel of code 2, kernel 2x2 (cout 1, cin 1) = [[1, 2], [3, 4]], stride 2, 'valid':
    # output 2x2 = 2 * kernel
    x = np.array([2], np.int8).reshape(1, 1, 1, 1)
    w = np.array([1, 2, 3, 4], np.int8).reshape(2, 2, 1, 1)
    assert ops.conv2d_transpose_acc(x, w, 2, "valid")[0, :, :, 0].tolist() == [[2, 4], [6, 8]]
    # general: scatter loop reference
    rng = np.random.default_rng(11)
    x = _rand_codes(rng, (2, 3, 4, 5))
    w = _rand_codes(rng, (3, 3, 4, 5))  # (kh, kw, cout, cin)
    for s in (1, 2):
        full = np.zeros((2, (3 - 1) * s + 3, (4 - 1) * s + 3, 4), np.int64)
        for i in range(3):
            for j in range(4):
                for a in range(3):
                    for b in range(3):
                        full[:, i * s + a, j * s + b, :] += x[:, i, j, :].astype(np.int64) @ w[a, b].T.astype(
                            np.int64
                        )
        valid = ops.conv2d_transpose_acc(x, w, s, "valid")
        assert np.array_equal(valid, full[:, : 3 * s + max(3 - s, 0), : 4 * s + max(3 - s, 0)])
        same = ops.conv2d_transpose_acc(x, w, s, "same")
        c = max(3 - s, 0) // 2
        assert np.array_equal(same, full[:, c : c + 3 * s, c : c + 4 * s])


def test_conv_transpose_with_dilation_and_output_padding_by_the_scatter_loop() -> None:
    # Tap (a, b) of input pixel (i, j) lands on full output (i*s + a*d, j*s + b*d); output_padding adds
    # rows / columns past the full output that get no tap (hand-checked against Keras' sizes below).
    rng = np.random.default_rng(12)
    x = _rand_codes(rng, (2, 3, 4, 5))
    w = _rand_codes(rng, (3, 2, 4, 5))  # (kh, kw, cout, cin)
    for s, d in ((1, 2), (2, 1), (3, 1)):
        kh_eff, kw_eff = (3 - 1) * d + 1, (2 - 1) * d + 1
        full = np.zeros((2, 2 * s + kh_eff + 3, 3 * s + kw_eff + 3, 4), np.int64)
        for i in range(3):
            for j in range(4):
                for a in range(3):
                    for b in range(2):
                        full[:, i * s + a * d, j * s + b * d, :] += x[:, i, j, :].astype(np.int64) @ w[a, b].T.astype(
                            np.int64)
        for op in ((0, 0), (1, 0), (s - 1, s - 1)) if s > 1 else ((0, 0),):
            # valid: (in - 1) * s + k_eff + op, nothing cropped
            valid = ops.conv2d_transpose_acc(x, w, s, "valid", d, op)
            assert np.array_equal(valid, full[:, : 2 * s + kh_eff + op[0], : 3 * s + kw_eff + op[1]])
            # same: (in - 1) * s + k_eff - 2 * (k_eff // 2) + op, cropped by TensorFlow's SAME padding
            same = ops.conv2d_transpose_acc(x, w, s, "same", d, op)
            oh, ow = 2 * s + kh_eff - 2 * (kh_eff // 2) + op[0], 3 * s + kw_eff - 2 * (kw_eff // 2) + op[1]
            ch, cw = max(2 * s + kh_eff - oh, 0) // 2, max(3 * s + kw_eff - ow, 0) // 2
            assert np.array_equal(same, full[:, ch : ch + oh, cw : cw + ow])


@pytest.mark.tf
@pytest.mark.parametrize("kwargs", [{"strides": 1, "dilation_rate": 2}, {"strides": 2, "output_padding": 1},
                                    {"strides": 2, "padding": "same", "output_padding": 1},
                                    {"strides": 3, "kernel_size": 4, "output_padding": (2, 0)},
                                    {"strides": 1, "padding": "same", "dilation_rate": (2, 3)}])
def test_float_transposed_conv_with_dilation_or_output_padding_matches_keras(tf, kwargs) -> None:
    """Conv2DTranspose(dilation_rate=2) used to be emulated as if undilated (a wrong output size) and
    output_padding was refused."""
    kw = dict(kwargs)
    k = kw.pop("kernel_size", 3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    layer = tf.keras.layers.Conv2DTranspose(4, k, use_bias=False, **kw)
    want = layer(x).numpy()
    (wt,) = layer.get_weights()
    got = float_ops.conv2d_transpose(x, wt, None, kw["strides"], kw.get("padding", "valid"),
                                     kw.get("dilation_rate", 1), kw.get("output_padding"))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# The real quantizer's dumps: every operator fed with dumped int8 inputs, compared bit for bit
# ---------------------------------------------------------------------------------------------------


class _Case:
    def __init__(self, name: str) -> None:
        self.path = refcase(name)
        self.pj = positions(self.path)["positions"]
        self.w = h5_weights(self.path)

    def act(self, layer: str, shape: tuple[int, ...]) -> np.ndarray:
        return dump_int8(self.path, "quant_" + layer).reshape(shape)

    def weight(self, layer: str, short: str) -> np.ndarray:
        shape = self.w[("quant_" + layer, short)].shape
        return dump_weight_int8(self.path, layer, short).reshape(shape)

    def pos(self, layer: str, key: str) -> int:
        return int(self.pj[layer][key])

    def wpos(self, layer: str, short: str) -> int:
        return self.pos(layer, f"{layer}/{short}:0")

    def conv_args(self, layer: str, short: str = "kernel") -> tuple:
        wq = self.weight(layer, short)
        has_b = ("quant_" + layer, "bias") in self.w
        bq = self.weight(layer, "bias") if has_b else None
        pb = self.wpos(layer, "bias") if has_b else 0
        return wq, bq, self.wpos(layer, short), pb


def _eq(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    bad = np.flatnonzero(got.ravel() != want.ravel())
    if bad.size:
        i = bad[0]
        raise AssertionError(f"{what}: {bad.size} mismatches, first at {i}: {got.ravel()[i]} vs {want.ravel()[i]}")


def test_small_refcase_operators_bit_exact() -> None:
    c = _Case("small")
    x = c.act("input", (2, 32, 32, 3))
    pi = c.pos("quant_input", "input")
    w, b, pw, pb = c.conv_args("conv1")
    relu1 = c.act("relu1", (2, 32, 32, 16))
    _eq(ops.conv2d(x, w, b, pi, pw, pb, c.pos("relu1", "output_0"), 1, "same", act="relu"), relu1, "conv1+relu1")
    pool1 = c.act("pool1", (2, 16, 16, 16))
    _eq(ops.max_pool(relu1, 6, c.pos("pool1", "output_0"), 2, 2, "valid"), pool1, "pool1")
    w, b, pw, pb = c.conv_args("conv2")
    relu2 = c.act("relu2", (2, 16, 16, 32))
    got = ops.conv2d(pool1, w, b, c.pos("pool1", "output_0"), pw, pb, c.pos("relu2", "output_0"), 1, "same", act="relu")
    _eq(got, relu2, "conv2+relu2")
    w, b, pw, pb = c.conv_args("fc")
    got = ops.dense(relu2.reshape(2, -1), w, b, c.pos("relu2", "output_0"), pw, pb, c.pos("fc", "linear"))
    _eq(got, c.act("fc", (2, 10)), "fc")


def test_rich_refcase_operators_bit_exact() -> None:
    c = _Case("rich")
    P = c.pos
    img = c.act("img", (2, 32, 32, 3))
    w, b, pw, pb = c.conv_args("c1")
    relu1 = c.act("relu1", (2, 32, 32, 16))
    _eq(ops.conv2d(img, w, b, P("quant_img", "input"), pw, pb, P("relu1", "output_0"), 1, "same", act="relu"),
        relu1, "c1+relu1")
    mp1 = c.act("mp1", (2, 16, 16, 16))
    _eq(ops.max_pool(relu1, P("relu1", "output_0"), P("mp1", "output_0"), 2, 2, "valid"), mp1, "mp1")
    p_mp1 = P("mp1", "output_0")
    w, b, pw, pb = c.conv_args("dw3", "depthwise_kernel")
    relu6_3 = c.act("relu6_3", (2, 16, 16, 16))
    _eq(ops.depthwise_conv2d(mp1, w, b, p_mp1, pw, pb, P("relu6_3", "output_0"), 1, "same", act="relu6"),
        relu6_3, "dw3+relu6")
    w, b, pw, pb = c.conv_args("c2")
    lrelu2 = c.act("lrelu2", (2, 16, 16, 16))
    _eq(ops.conv2d(mp1, w, b, p_mp1, pw, pb, P("lrelu2", "output_0"), 1, "same", act="leaky"), lrelu2, "c2+leaky")
    w, _, pw, _ = c.conv_args("sep4_depthwise_conv", "depthwise_kernel")
    sep_dw = c.act("sep4_depthwise_conv", (2, 16, 16, 16))
    p_sdw = P("sep4_depthwise_conv", "linear")
    _eq(ops.depthwise_conv2d(relu6_3, w, None, P("relu6_3", "output_0"), pw, 0, p_sdw, 1, "same"), sep_dw, "sep dw")
    w, b, pw, pb = c.conv_args("sep4_pointwise_conv")
    sep_pw = c.act("sep4_pointwise_conv", (2, 16, 16, 16))
    p_spw = P("sep4_pointwise_conv", "linear")
    _eq(ops.conv2d(sep_dw, w, b, p_sdw, pw, pb, p_spw), sep_pw, "sep pw")
    add5 = c.act("add5", (2, 16, 16, 16))
    p_add = P("add5", "output_0")
    _eq(ops.add([(lrelu2, P("lrelu2", "output_0")), (sep_pw, p_spw)], p_add), add5, "add5")
    zp = np.pad(add5, ((0, 0), (1, 1), (1, 1), (0, 0)))
    w, b, pw, pb = c.conv_args("c7")
    c7r = c.act("c7_relu", (2, 16, 16, 24))
    p_c7 = P("c7_relu", "relu")
    _eq(ops.conv2d(zp, w, b, p_add, pw, pb, p_c7, 1, "valid", act="relu"), c7r, "c7+relu")
    ap8 = c.act("ap8", (2, 16, 16, 24))
    p_ap = P("ap8", "output_0")
    _eq(ops.avg_pool(c7r, p_c7, p_ap, 3, 1, "same"), ap8, "ap8 avgpool 3x3 same")
    mp9c = c.act("mp9c", (2, 8, 8, 24))
    _eq(ops.max_pool(ap8, p_ap, P("mp9c", "output_0"), 2, 2, "valid"), mp9c, "mp9c")
    w, b, pw, pb = c.conv_args("c9c")
    c9c = c.act("c9c", (2, 8, 8, 8))
    _eq(ops.conv2d(mp9c, w, b, P("mp9c", "output_0"), pw, pb, P("c9c", "linear")), c9c, "c9c")
    sig = c.act("c9c_sigmoid", (2, 8, 8, 8))
    _eq(ops.hard_sigmoid(c9c, P("c9c", "linear"), P("c9c_sigmoid", "output_0")), sig, "c9c hard sigmoid")
    w, b, pw, pb = c.conv_args("c9a")
    c9a = c.act("c9a_relu", (2, 16, 16, 16))
    _eq(ops.conv2d(ap8, w, b, p_ap, pw, pb, P("c9a_relu", "relu"), act="relu"), c9a, "c9a+relu")
    w, b, pw, pb = c.conv_args("c9b")
    c9b = c.act("c9b", (2, 16, 16, 16))
    _eq(ops.conv2d(ap8, w, b, p_ap, pw, pb, P("c9b", "linear"), 1, "same"), c9b, "c9b")
    up = c.act("up9c", (2, 16, 16, 8))
    _eq(ops.upsample_nearest(sig, P("c9c_sigmoid", "output_0"), P("up9c", "output_0"), 2), up, "up9c")
    cat = c.act("cat10", (2, 16, 16, 40))
    p_cat = P("cat10", "output_0")
    got = ops.concat([(c9a, P("c9a_relu", "relu")), (c9b, P("c9b", "linear")), (up, P("up9c", "output_0"))], p_cat)
    _eq(got, cat, "cat10")
    w, b, pw, pb = c.conv_args("c11")
    c11 = c.act("c11", (2, 8, 8, 32))
    _eq(ops.conv2d(cat, w, b, p_cat, pw, pb, P("c11", "linear"), 2, "same"), c11, "c11 stride 2")
    vs = c.act("vitis_sigmoid", (2, 8, 8, 32))
    _eq(ops.hard_sigmoid(c11, P("c11", "linear"), P("vitis_sigmoid", "output_0")), vs, "hard sigmoid (TF ops)")
    gap = c.act("gap12", (2, 32))
    _eq(ops.global_avg_pool(vs, P("vitis_sigmoid", "output_0"), P("gap12", "output_0")), gap, "gap12")
    w, b, pw, pb = c.conv_args("fc13")
    fc13 = c.act("fc13_relu", (2, 32))
    _eq(ops.dense(gap, w, b, P("gap12", "output_0"), pw, pb, P("fc13_relu", "relu"), act="relu"), fc13, "fc13+relu")
    w, b, pw, pb = c.conv_args("fc14")
    _eq(ops.dense(fc13, w, b, P("fc13_relu", "relu"), pw, pb, P("fc14", "linear")), c.act("fc14", (2, 10)), "fc14")


# ---------------------------------------------------------------------------------------------------
# float kernels against TensorFlow
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.mark.tf
@pytest.mark.parametrize(("k", "s", "pad", "d"), [(3, 1, "same", 1), (3, 2, "same", 1), (2, 1, "same", 1),
                                                  (5, 2, "valid", 1), (3, 1, "same", 2), (1, 1, "valid", 1)])
def test_float_conv_matches_tf(tf, k, s, pad, d) -> None:
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, 9, 8, 5)).astype(np.float32)
    w = rng.standard_normal((k, k, 5, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    ref = tf.nn.conv2d(x, w, s, pad.upper(), dilations=d).numpy() + b
    np.testing.assert_allclose(float_ops.conv2d(x, w, b, s, pad, d), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_float_grouped_conv_matches_tf(tf) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 8, 12)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)  # 3 groups of 4 inputs, 2 filters each
    b = rng.standard_normal(6).astype(np.float32)
    ref = tf.nn.conv2d(x, w, 2, "SAME").numpy() + b
    np.testing.assert_allclose(float_ops.conv2d(x, w, b, 2, "same"), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_float_depthwise_transpose_dense_pool_match_tf(tf) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    wd = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
    for s, pad in ((1, "same"), (2, "valid"), (2, "same")):
        ref = tf.nn.depthwise_conv2d(x, wd, (1, s, s, 1), pad.upper()).numpy()
        np.testing.assert_allclose(float_ops.depthwise_conv2d(x, wd, None, s, pad), ref, rtol=1e-5, atol=1e-5)
    wt = rng.standard_normal((3, 3, 4, 3)).astype(np.float32)  # (kh, kw, cout, cin)
    for s, pad in ((2, "same"), (2, "valid"), (1, "same"), (3, "valid")):
        layer = tf.keras.layers.Conv2DTranspose(4, 3, strides=s, padding=pad, use_bias=False)
        layer.build(x.shape)
        layer.set_weights([wt])
        np.testing.assert_allclose(float_ops.conv2d_transpose(x, wt, None, s, pad), layer(x).numpy(),
                                   rtol=1e-5, atol=1e-5)
    wdn = rng.standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_allclose(float_ops.dense(x, wdn), tf.tensordot(x, wdn, 1).numpy(), rtol=1e-5, atol=1e-5)
    for pool, s, pad in ((3, 1, "same"), (2, 2, "valid"), (3, 2, "same")):
        np.testing.assert_allclose(float_ops.avg_pool(x, pool, s, pad),
                                   tf.nn.avg_pool2d(x, pool, s, pad.upper()).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(float_ops.max_pool(x, pool, s, pad),
                                      tf.nn.max_pool2d(x, pool, s, pad.upper()).numpy())
    np.testing.assert_allclose(float_ops.global_avg_pool(x), tf.reduce_mean(x, (1, 2)).numpy(), rtol=1e-6)
    up = tf.keras.layers.UpSampling2D(2)(x).numpy()
    np.testing.assert_array_equal(float_ops.upsample_nearest(x, 2), up)
    zp = tf.keras.layers.ZeroPadding2D(((1, 2), (0, 1)))(x).numpy()
    np.testing.assert_array_equal(float_ops.zero_pad(x, ((1, 2), (0, 1))), zp)


@pytest.mark.tf
def test_float_activations_and_batchnorm_match_tf(tf) -> None:
    x = np.linspace(-8, 8, 161, dtype=np.float32)
    acts = tf.keras.activations
    for name, ref in (("relu", acts.relu), ("sigmoid", acts.sigmoid), ("tanh", acts.tanh), ("swish", acts.swish),
                      ("elu", acts.elu), ("selu", acts.selu), ("softplus", acts.softplus), ("gelu", acts.gelu),
                      ("hard_sigmoid", acts.hard_sigmoid)):
        np.testing.assert_allclose(float_ops.activation(name, x), ref(x).numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    np.testing.assert_allclose(float_ops.relu6(x), tf.nn.relu6(x).numpy())
    np.testing.assert_allclose(float_ops.leaky_relu(x, 0.1), tf.nn.leaky_relu(x, 0.1).numpy(), rtol=1e-6)
    m = x.reshape(7, 23)
    np.testing.assert_allclose(float_ops.softmax(m), tf.nn.softmax(m).numpy(), rtol=1e-5, atol=1e-7)
    # DPU hard sigmoid: relu6(x + 3) * 2731 / 16384 at a few points by hand
    assert float_ops.hard_sigmoid_dpu(np.array([-3.0, 0.0, 3.0], np.float32)).tolist() == [
        0.0, 3 * 2731 / 16384, 6 * 2731 / 16384]
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    g, be, mu, var = (rng.random(3).astype(np.float32) + 0.5 for _ in range(4))
    bn = tf.keras.layers.BatchNormalization(epsilon=1e-3)
    bn.build(xb.shape)
    bn.set_weights([g, be, mu, var])
    np.testing.assert_allclose(float_ops.batchnorm(xb, g, be, mu, var, 1e-3), bn(xb, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_fused_float_output_stage_equals_integer_output_stage() -> None:
    # conv2d runs its output stage on float accumulators; output_stage (checked by hand above) on int64.
    # Both must agree for every activation, bias shifts of both signs, shift_cut <= 0 and large.
    rng = np.random.default_rng(21)
    x = _rand_codes(rng, (2, 6, 5, 7))
    w = _rand_codes(rng, (3, 3, 7, 4))
    b = _rand_codes(rng, (4,))
    acc = ops.conv2d_acc(x, w, 1, "same")
    wd = _rand_codes(rng, (3, 3, 7, 1))
    bd = _rand_codes(rng, (7,))
    accd = ops.depthwise_conv2d_acc(x, wd, 2, "same")
    for pi, pw, pb, po in [(6, 8, 10, 4), (2, 3, 9, 0), (0, 0, 0, 3), (5, 7, 0, 0), (8, 8, 6, -2), (4, 4, 12, 8)]:
        for act in (None, "relu", "relu6", "leaky"):
            want = ops.output_stage(acc, b, pi, pw, pb, po, act)
            got = ops.conv2d(x, w, b, pi, pw, pb, po, 1, "same", act=act)
            assert np.array_equal(got, want), (pi, pw, pb, po, act)
            want = ops.output_stage(accd, bd, pi, pw, pb, po, act)
            got = ops.depthwise_conv2d(x, wd, bd, pi, pw, pb, po, 2, "same", act=act)
            assert np.array_equal(got, want), ("depthwise", pi, pw, pb, po, act)
    # K = 3 * 3 * 130 = 1170 > 1024 (float64 accumulator path), stride 1 and strided (im2col path)
    xw = _rand_codes(rng, (1, 5, 4, 130))
    ww = _rand_codes(rng, (3, 3, 130, 3))
    bw = _rand_codes(rng, (3,))
    for s in (1, 2):
        accw = ops.conv2d_acc(xw, ww, s, "same")
        for act in (None, "relu6", "leaky"):
            want = ops.output_stage(accw, bw, 7, 9, 8, 6, act)
            assert np.array_equal(ops.conv2d(xw, ww, bw, 7, 9, 8, 6, s, "same", act=act), want), (s, act)


def test_l1_bound_path_for_wide_layers() -> None:
    from qinspect.dpu._conv_core import gemm_exact, l1_bound

    # columns |3|+|-4| = 7 and |1|+|2| = 3: bound 128 * 7 = 896
    assert l1_bound(np.array([[3, 1], [-4, 2]], np.int8)) == 896
    # K = 1800 small weights (|w| <= 8): 128 * 1800 * 8 = 1.8M < 2^24 -> one float32 GEMM, still exact
    rng = np.random.default_rng(4)
    x = _rand_codes(rng, (1, 4, 4, 200))
    w = rng.integers(-8, 9, size=(3, 3, 200, 2)).astype(np.int8)
    assert l1_bound(w.reshape(-1, 2)) <= 2**24
    a = x.reshape(-1, 200)[:, :].astype(np.float32)
    assert gemm_exact(a, w[0, 0].astype(np.float32), True).dtype == np.float32
    assert np.array_equal(ops.conv2d_acc(x, w, 1, "same"), _ref_conv(x, w, (1, 1), "same", (1, 1)))
    assert np.array_equal(ops.conv2d_acc(x, w, 2, "same"), _ref_conv(x, w, (2, 2), "same", (1, 1)))


def test_output_stage_blocks_equal_one_pass() -> None:
    # output_stage works on row blocks; the single-pass block function is the reference
    rng = np.random.default_rng(8)
    acc = rng.integers(-(2**22), 2**22, size=(3, 50, 40, 24)).astype(np.int64)
    b = _rand_codes(rng, (24,))
    assert acc.size > ops._STAGE_BLOCK
    for act in (None, "relu6", "leaky"):
        want = ops._output_stage_block(acc, b, 6, 8, 11, 4, act)
        assert np.array_equal(ops.output_stage(acc, b, 6, 8, 11, 4, act), want)


@pytest.mark.parametrize(
    ("shape", "k", "pad", "dh"),
    [
        ((2, 7, 9, 16), (3, 3), "same", 1),  # odd output width: the last pair has a dropped column
        ((1, 6, 8, 24), (3, 3), "valid", 1),
        ((2, 9, 10, 8), (3, 3), "same", 2),  # vertical dilation
        ((1, 5, 7, 20), (1, 3), "same", 1),  # one row tap
        ((1, 8, 6, 12), (5, 3), "valid", 1),  # five row taps
    ],
)
def test_winograd_rows_path_is_exact(monkeypatch, shape, k, pad, dh) -> None:
    from qinspect.dpu import _conv_core

    rng = np.random.default_rng(sum(shape) + k[0])
    x = _rand_codes(rng, shape)  # extremes -128 / 127 included
    w = rng.integers(-40, 41, size=(k[0], k[1], shape[-1], 5)).astype(np.int8)
    b = _rand_codes(rng, (5,))
    u = _conv_core._wino_filter(w.astype(np.float32))
    assert _conv_core._wino_exact(u, _conv_core.l1_bound(w.reshape(-1, 5)), ops._INT64_ACC, np.float32)
    ref = _ref_conv(x, w, (1, 1), pad, (dh, 1))
    assert np.array_equal(ops.conv2d_acc(x, w, 1, pad, (dh, 1)), ref)
    fused = {act: ops.conv2d(x, w, b, 5, 7, 9, 6, 1, pad, (dh, 1), act=act) for act in (None, "relu6", "leaky")}
    monkeypatch.setattr(_conv_core, "_WINOGRAD", False)
    assert np.array_equal(ops.conv2d_acc(x, w, 1, pad, (dh, 1)), ref)
    for act, got in fused.items():
        assert np.array_equal(got, ops.conv2d(x, w, b, 5, 7, 9, 6, 1, pad, (dh, 1), act=act)), act
        assert np.array_equal(got, ops.output_stage(ref, b, 5, 7, 9, 6, act)), act


def test_winograd_refuses_weights_that_could_overflow_float32() -> None:
    from qinspect.dpu import _conv_core

    # 3 row taps x 200 channels of -128: |U'_1| = 384 per term, 256 * 600 * 384 = 59M > 2^24
    w = np.full((3, 3, 200, 1), -128, np.float32)
    u = _conv_core._wino_filter(w)
    assert not _conv_core._wino_exact(u, _conv_core.l1_bound(w.reshape(-1, 1)), ops._INT64_ACC, np.float32)


@pytest.mark.parametrize("winograd", [True, False])
def test_row_blocks_of_one_image_bound_memory(monkeypatch, winograd) -> None:
    # A chunk budget far below one image forces blocks of a few output rows: results must not change.
    from qinspect.dpu import _conv_core

    monkeypatch.setattr(_conv_core, "_CHUNK_BYTES", 4096)
    monkeypatch.setattr(_conv_core, "_WINOGRAD", winograd)
    monkeypatch.setattr(_conv_core, "_DW_BLOCK", 64)
    rng = np.random.default_rng(12)
    x = _rand_codes(rng, (2, 13, 11, 16))
    w = rng.integers(-30, 31, size=(3, 3, 16, 4)).astype(np.int8)
    b = _rand_codes(rng, (4,))
    assert _conv_core._row_tasks(2, 13, 2, 11 * 100 * 4)[0][1] == 1  # really one image per task
    for s, pad, d in (((1, 1), "same", (1, 1)), ((1, 1), "valid", (2, 1)), ((2, 2), "same", (1, 1))):
        ref = _ref_conv(x, w, s, pad, d)
        assert np.array_equal(ops.conv2d_acc(x, w, s, pad, d), ref), (s, pad, d)
        assert np.array_equal(ops.conv2d(x, w, b, 5, 6, 8, 4, s, pad, d, act="relu6"),
                              ops.output_stage(ref, b, 5, 6, 8, 4, "relu6")), (s, pad, d)
    wd = _rand_codes(rng, (3, 3, 16, 1))
    assert np.array_equal(ops.depthwise_conv2d_acc(x, wd, 1, "same"), _ref_depthwise(x, wd, (1, 1), "same"))


def test_far_positions_neither_crash_nor_wrap() -> None:
    # an all-zero calibration output gets position 51; a fused ReLU6's cap 6 << 29 did not fit the int32
    # accumulator (OverflowError), though 1 + 1 at position 29 is simply 2
    assert ops.add([(a8(1), 29), (a8(1), 29)], 29, "relu6").tolist() == [2]
    assert ops.add([(a8(100), 29), (a8(100), 29)], 29, "relu6").tolist() == [127]  # 200 codes: clipped
    # shifts of 64 bits and more: every value is below half a step and rounds to 0 (numpy gave -1)
    assert ops.requantize(a8(0, 5, -5), 64, 0).tolist() == [0, 0, 0]
    assert ops.multiply((a8(1, 0), 40), (a8(1, 0), 24), 0).tolist() == [0, 0]
    assert ops.add([(a8(1), 64), (a8(1), 64)], 0).tolist() == [0]
    assert ops.output_stage(np.array([[0], [7]]), None, 40, 24, 0, 0).ravel().tolist() == [0, 0]
    assert set(ops.hard_sigmoid(np.arange(-128, 128).astype(np.int8), 15, -35).tolist()) == {0}
