"""Fixed point: rounding, (de)quantization, position selection, voting. References: hand-worked values,
the Vitis reference cases (weights, dumps, input positions) and, where marked, TensorFlow itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dpu_ops_fixtures import dump_weight_int8, h5_weights, positions, refcase

from qinspect.dpu.fixed_point import (
    Round,
    choose_position,
    dequantize,
    fake_quant,
    pos_kl,
    pos_min_mse,
    pos_non_overflow,
    pos_percentile,
    quantize,
    round_values,
    shift_round_half_up,
    symmetric_range,
    vote,
)

TIES = np.array([2.5, -2.5, 1.5, -1.5, 0.5, -0.5, 2.4, -2.6], dtype=np.float32)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # half to even: 2.5->2, -2.5->-2, 1.5->2, -1.5->-2, 0.5->0, -0.5->-0
        (Round.HALF_TO_EVEN, [2, -2, 2, -2, 0, 0, 2, -3]),
        # half up = floor(x + 0.5): 3, floor(-2.0)=-2, 2, floor(-1.0)=-1, 1, floor(0)=0
        (Round.HALF_UP, [3, -2, 2, -1, 1, 0, 2, -3]),
        # away from zero: 3, -3, 2, -2, 1, -1
        (Round.HALF_AWAY_FROM_ZERO, [3, -3, 2, -2, 1, -1, 2, -3]),
        # floor
        (Round.FLOOR, [2, -3, 1, -2, 0, -1, 2, -3]),
    ],
)
def test_round_values_ties(mode: Round, expected: list[int]) -> None:
    assert round_values(TIES, mode).tolist() == expected


def test_half_up_float32_quirk() -> None:
    # The largest float32 below 0.5 is 0.5 - 2^-25; + 0.5 = 1 - 2^-25 is not a float32 and rounds to
    # 1.0 (ties to even), so floor gives 1: the quantizer's float32 floor(x + 0.5) does the same.
    x = np.float32(0.5) - np.float32(2.0**-25)
    assert round_values(np.array([x], np.float32), Round.HALF_UP)[0] == 1.0
    # In float64 the same value rounds to 0.
    assert round_values(np.array([float(x)], np.float64), Round.HALF_UP)[0] == 0.0


def test_quantize_ties_saturation_and_negative_positions() -> None:
    # pos 2: x * 4. 0.625*4 = 2.5 -> HALF_UP 3, HALF_TO_EVEN 2; -0.625*4 = -2.5 -> -2 both ways.
    x = np.array([0.625, -0.625, 0.375, -0.375], np.float32)
    assert quantize(x, 2, Round.HALF_UP).tolist() == [3, -2, 2, -1]
    assert quantize(x, 2, Round.HALF_TO_EVEN).tolist() == [2, -2, 2, -2]
    assert quantize(x, 2, Round.HALF_AWAY_FROM_ZERO).tolist() == [3, -3, 2, -2]
    # saturation: 40 * 4 = 160 -> 127; -40 * 4 = -160 -> -128 (narrow: -127)
    assert quantize(np.array([40.0, -40.0], np.float32), 2, Round.HALF_UP).tolist() == [127, -128]
    assert quantize(np.array([40.0, -40.0], np.float32), 2, Round.HALF_UP, narrow=True).tolist() == [127, -127]
    # negative position -3: scale 1/8. 100/8 = 12.5 -> 13 (HALF_UP), 12 (even); -1020/8 = -127.5 -> -127
    # (HALF_UP) ; -1030/8 = -128.75 -> -129 -> clip -128
    y = np.array([100.0, -1020.0, -1030.0], np.float32)
    assert quantize(y, -3, Round.HALF_UP).tolist() == [13, -127, -128]
    assert quantize(y, -3, Round.HALF_TO_EVEN).tolist() == [12, -128, -128]
    assert quantize(y, -3, Round.HALF_UP).dtype == np.int8
    # dequantize: 13 * 2^3 = 104; -128 * 2^-7 = -1
    assert dequantize(np.array([13], np.int8), -3).tolist() == [104.0]
    assert dequantize(np.array([-128], np.int8), 7).tolist() == [-1.0]
    assert fake_quant(np.array([0.3], np.float32), 4, Round.HALF_UP).tolist() == [5 / 16]  # 4.8 -> 5


def test_quantize_is_float32_product() -> None:
    # float64 1/3 * 2^1 would round to 1 either way; the check is that a float64 input is first cast:
    # 0.25 + 2^-40 (float64) becomes exactly 0.25 in float32, so *2 = 0.5 -> HALF_TO_EVEN 0, not 1.
    x = np.array([0.25 + 2.0**-40], np.float64)
    assert quantize(x, 1, Round.HALF_TO_EVEN).tolist() == [0]


def test_symmetric_range_and_non_overflow_by_hand() -> None:
    # r = -254/256. mn=-1, mx=0.9921875: lo = min(-1, 0.9921875 / r = -1) = -1, hi = max(0.99, 0.99) ->
    # scale_inv = max(1/128, 0.9921875/127 = 2^-7) = 2^-7 -> p = 7 (the rich refcase's last input batch)
    lo, hi = symmetric_range(-1.0, 0.9921875)
    assert (float(lo), float(hi)) == (-1.0, 0.9921875)
    assert pos_non_overflow(-1.0, 0.9921875) == 7
    # mn=0, mx=0.5: hi=0.5 -> 0.5/127 -> -log2 = log2(254) = 7.99 -> 7 (0.5*2^7 = 64 <= 127; 2^8 too big)
    assert pos_non_overflow(0.0, 0.5) == 7
    # a wide negative range: mn=-300, mx=10: lo=-300 -> 300/128 = 2.34 -> -log2 = -1.23 -> floor -2
    assert pos_non_overflow(-300.0, 10.0) == -2
    # mn=0.2 (all positive), mx=3: hi=3 -> 3/127 -> log2(42.3) = 5.4 -> 5
    assert pos_non_overflow(0.2, 3.0) == 5
    # exactly 127 * 2^-3: scale_inv = 2^-3 exactly -> 3 (the float32 log gives exactly 3 here)
    assert pos_non_overflow(0.0, 127 * 2.0**-3) == 3


def test_min_mse_prefers_finer_position_when_outlier_is_alone() -> None:
    # One value 1.0 and 1000 values 0.01. Non-overflow: hi = 1 -> 1/127 -> p0 = 6.
    #  p=6: 1.0 -> 64 exact; 0.01*64 = 0.64 -> 1 -> err (1/64 - 0.01)^2 = 3.16e-5, x1000 = 0.0316
    #  p=7: 1.0*128 = 128 -> 127: err (1/128)^2 = 6.1e-5; 0.01*128 = 1.28 -> 1: (0.0078125-0.01)^2 =
    #       4.79e-6, x1000 = 0.00479; total 0.00485 (smallest)
    #  p=8: 1.0 -> 127/256: err 0.254 -> far worse; p=9, 10 worse still.
    x = np.concatenate([[1.0], np.full(1000, 0.01)]).astype(np.float32)
    assert pos_non_overflow(float(x.min()), float(x.max())) == 6
    assert pos_min_mse(x, Round.HALF_UP) == 7
    assert choose_position(x, 0, Round.HALF_UP) == 6
    assert choose_position(x, 1, Round.HALF_UP) == 7


def test_min_mse_keeps_p0_when_max_dominates() -> None:
    # x = [0.75, 0.1]: p0 = 7 (0.75 / 127 -> log2(169.3) = 7.4). p=7: 96 exact, 0.1*128 = 12.8 -> 13:
    # err 2.4e-6; p=8: 0.75*256 = 192 -> 127: err 0.064 -> p=7.
    assert pos_min_mse(np.array([0.75, 0.1], np.float32), Round.HALF_TO_EVEN) == 7


def test_all_zero_tensor_position() -> None:
    # scale_inv = eps = 2^-52; the quantizer's float32 graph computes log(2^-52) * (-1/ln 2) =
    # 51.999996, floor 51 (DPU_NUMERICS says 52: the graph's float32 arithmetic says 51; see the
    # TensorFlow check below). min-MSE: every candidate has error 0, the first (p0) wins.
    z = np.zeros(10, np.float32)
    assert pos_non_overflow(0.0, 0.0) == 51
    assert pos_min_mse(z, Round.HALF_UP) == 51


def test_vote() -> None:
    assert vote([6, 6, 7, 7]) == 6  # tie -> first seen (the small refcase's input)
    assert vote([7, 6, 6, 7]) == 7
    assert vote([5, 4, 5, 4, 5, 4, 5, 4]) == 5  # the rich refcase's c9c:linear
    assert vote([3, 4, 4]) == 4
    assert vote([2, 1, 3]) == 2
    with pytest.raises(ValueError):
        vote([])


def test_shift_round_half_up() -> None:
    acc = np.array([5, -5, 6, -6, 7, -7, 0], np.int64)
    # /2: 2.5->3, -2.5->-2, 3, -3, 3.5->4, -3.5->-3, 0
    assert shift_round_half_up(acc, 1).tolist() == [3, -2, 3, -3, 4, -3, 0]
    assert shift_round_half_up(acc, 0).tolist() == acc.tolist()
    assert shift_round_half_up(acc, -2).tolist() == [20, -20, 24, -24, 28, -28, 0]
    # shift 16: 32768/65536 = 0.5 -> 1; -0.5 -> 0; 32767 -> 0; -32769 -> -1; 98304 = 1.5 -> 2
    big = np.array([32768, -32768, 32767, -32769, 98304, -98304], np.int64)
    assert shift_round_half_up(big, 16).tolist() == [1, 0, 0, -1, 2, -1]


def test_percentile_and_kl_are_what_if_positions() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000).astype(np.float32)
    x[0] = 40.0  # an outlier: non-overflow must keep it, a 99.9 percentile ignores it
    p_no = pos_non_overflow(float(x.min()), float(x.max()))
    assert p_no == 1  # 40 / 127 -> log2(3.17) -> 1
    # 99.9th percentile of |N(0,1)| is about 3.29 -> 3.29/127 -> log2(38.6) -> 5
    assert pos_percentile(x, 99.9) == 5
    p_kl = pos_kl(x)
    assert p_no < p_kl <= p_no + 4  # KL clips the lone outlier
    assert "not what vai_q pof2s does" in (pos_kl.__doc__ or "").lower()
    assert "not what vai_q pof2s does" in (pos_percentile.__doc__ or "").lower()


# ---------------------------------------------------------------------------------------------------
# Real quantizer runs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_name", ["small", "rich"])
def test_weight_positions_and_codes_match_vitis(case_name: str) -> None:
    case = refcase(case_name)
    pj = positions(case)
    weights = h5_weights(case)
    checked = 0
    for layer, types in pj["tensor_types"].items():
        for key, kind in types.items():
            if kind != "weight":
                continue
            short = key.split("/")[-1][:-2]  # "kernel", "bias", "depthwise_kernel"
            w = weights[("quant_" + layer, short)]
            # method 1 (min-MSE) with HALF_TO_EVEN, on the folded/equalized float weights in the file
            p = pos_min_mse(w, Round.HALF_TO_EVEN)
            assert p == pj["pre_refine_positions"][layer][key], (layer, key)
            assert p == pj["calib_batch_positions"][layer][key][0], (layer, key)
            final = pj["positions"][layer][key]
            codes = dump_weight_int8(case, layer, short)
            assert np.array_equal(quantize(w, final, Round.HALF_TO_EVEN).ravel(), codes), (layer, key)
            checked += 1
    assert checked >= (6 if case_name == "small" else 20)


@pytest.mark.parametrize("case_name", ["small", "rich"])
def test_input_positions_per_batch_and_vote_match_vitis(case_name: str) -> None:
    case = refcase(case_name)
    pj = positions(case)
    calib = np.load(case / "calib.npy", allow_pickle=False)
    bs = pj["calib_batch_size"]
    qname = next(k for k, v in pj["tensor_types"].items() if "input" in v)
    expected = pj["calib_batch_positions"][qname]["input"]
    got = [choose_position(calib[i : i + bs], 0, Round.HALF_UP) for i in range(0, len(calib), bs)]
    assert got == expected
    assert vote(got) == pj["positions"][qname]["input"]
    # the stored min/max are the widened range of the last batch
    last = calib[-bs:]
    lo, hi = symmetric_range(float(last.min()), float(last.max()))
    assert [float(lo), float(hi)] == pytest.approx(pj["last_calib_batch_min_max"][qname]["input"], abs=0)


# ---------------------------------------------------------------------------------------------------
# TensorFlow: the quantizer's own float32 graph arithmetic
# ---------------------------------------------------------------------------------------------------


@pytest.mark.tf
def test_non_overflow_matches_tensorflow_graph() -> None:
    tf = pytest.importorskip("tensorflow")
    import sys

    var = tf.Variable(0.0)

    @tf.function
    def tf_pos() -> object:  # the quantizer's get_quantize_pos_non_overflow, on a variable
        s = tf.math.maximum(var, sys.float_info.epsilon)
        return tf.math.floor(-tf.math.log(s) / tf.math.log(2.0))

    values = [2.0**-k for k in range(-20, 60)]
    rng = np.random.default_rng(3)
    values += list(rng.random(150) * 10.0 ** rng.uniform(-12, 4, 150))
    near = []
    for k in (3, 7, 13, 15, 26, 27):
        b = np.float32(2.0**-k)
        near += [np.nextafter(b, np.float32(1e9)), np.nextafter(b, np.float32(0))]
    values += [float(v) for v in near] + [0.0]
    for v in values:
        s = np.float32(v)
        var.assign(s)
        expected = int(tf_pos().numpy())
        # feed the value as a pure max/127 ratio: mx = s * 127 computed so that hi/127 == s exactly
        got = _pos_for_scale_inv(s)
        assert got == expected, (v, got, expected)


def _pos_for_scale_inv(s: np.float32) -> int:
    from qinspect.dpu.fixed_point import _pos_from_scale_inv

    return _pos_from_scale_inv(s)


@pytest.mark.tf
def test_quantize_matches_tensorflow_fake_quant_arithmetic() -> None:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(5000) * 3).astype(np.float32)
    x[:4] = [np.float32(0.5) - np.float32(2**-25), 2.5 / 16, -2.5 / 16, 1e6]
    for pos in (-2, 0, 4, 9):
        scale = tf.math.pow(2.0, float(pos))
        half_up = tf.clip_by_value(tf.math.floor(tf.constant(x) * scale + 0.5), -128, 127).numpy()
        even = tf.clip_by_value(tf.math.round(tf.constant(x) * scale), -128, 127).numpy()
        assert np.array_equal(quantize(x, pos, Round.HALF_UP), half_up.astype(np.int8))
        assert np.array_equal(quantize(x, pos, Round.HALF_TO_EVEN), even.astype(np.int8))
    assert math.isfinite(float(fake_quant(x, 3, Round.HALF_UP).sum()))
