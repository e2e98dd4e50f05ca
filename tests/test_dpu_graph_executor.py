"""The executor on hand-worked integer examples: one conv through the whole node path (quantize, weight
quantization, accumulator, bias alignment, one HALF_UP rounding, fused activation, saturation), in the
integer (DPU) and the float32-simulation evaluators."""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.dpu.dpu_graph import DpuGraph, Node, SlotSpec
from qinspect.dpu.executor import Evaluator
from qinspect.errors import QInspectError


def _graph(w, b, pi, pw, pb, po, act_node=None):
    nodes = [Node("x", "input"), Node("q", "quantize", ["x"], out_slot=("q", "input")),
             Node("c", "conv2d", ["q"], params={"act": "linear", "strides": (1, 1), "padding": "valid",
                                                "dilation": (1, 1)},
                  weights={"kernel": np.asarray(w, np.float32).reshape(1, 1, -1, 1),
                           "bias": np.asarray([b], np.float32)},
                  weight_slots={"kernel": ("c", "c/kernel:0"), "bias": ("c", "c/bias:0")})]
    if act_node is None:
        nodes[-1].out_slot = ("c", "linear")
    else:
        nodes.append(act_node)
    g = DpuGraph(nodes=nodes, inputs=["x"], outputs=[nodes[-1].name])
    g.add_slot(SlotSpec("q", "input", "input", 0, 1))
    g.add_slot(SlotSpec("c", "c/kernel:0", "weight", 1, 0))
    g.add_slot(SlotSpec("c", "c/bias:0", "weight", 1, 0))
    out = nodes[-1].out_slot
    g.add_slot(SlotSpec(out[0], out[1], "output", 1, 1))
    for slot, p in ((("q", "input"), pi), (("c", "c/kernel:0"), pw), (("c", "c/bias:0"), pb), (out, po)):
        g.set_pos(slot, p)
    return g


def _run(g, x):
    x = np.asarray(x, np.float32).reshape(1, 1, 1, -1)
    ints = Evaluator(g, "int").run({"x": x})[g.outputs[0]]
    sims = Evaluator(g, "sim").run({"x": x})[g.outputs[0]]
    return int(ints.codes().reshape(-1)[0]), int(sims.codes().reshape(-1)[0])


# x = [1.0, 0.5] at pi=4 -> [16, 8]; w = [0.5, -0.25] at pw=3 -> [4, -2]; acc = 64 - 16 = 48.
@pytest.mark.parametrize(
    ("b", "pb", "po", "expected"),
    [
        (0.0625, 5, 5, 14),  # bias code 2, aligned << 2 -> 56; shift 2 -> 14 (0.4375 exactly)
        (0.125, 4, 5, 16),  # bias code 2, aligned << 3 -> 64; shift 2 -> 16 (0.5 exactly)
        (0.0625, 5, 7, 56),  # shift 0: the accumulator itself
    ],
)
def test_conv_node_hand_worked(b, pb, po, expected):
    g = _graph([0.5, -0.25], b, 4, 3, pb, po)
    got_int, got_sim = _run(g, [1.0, 0.5])
    acc = 16 * 4 + 8 * (-2) + int(round(b * 2**pb)) * 2 ** (4 + 3 - pb)
    assert got_int == got_sim == expected == int(np.floor(acc / 2 ** (4 + 3 - po) + 0.5))


def test_half_up_ties_positive_and_negative():
    # acc = 16*4 + 8*(-2) = 48, bias 0.078125 at pb=6 -> code 5, aligned << 1 = 10 -> 58; 58 / 4 = 14.5 -> 15.
    g = _graph([0.5, -0.25], 0.078125, 4, 3, 6, 5)
    assert _run(g, [1.0, 0.5]) == (15, 15)
    # Negated inputs: -48 + 10 = -38 -> -9.5 -> -9 (HALF_UP goes towards +inf at a tie).
    assert _run(g, [-1.0, -0.5]) == (-9, -9)
    # -58: inputs negated and bias negated -> -14.5 -> -14.
    g = _graph([0.5, -0.25], -0.078125, 4, 3, 6, 5)
    assert _run(g, [-1.0, -0.5]) == (-14, -14)


def test_saturation_both_ends_and_negative_positions():
    g = _graph([0.5, -0.25], 0.0, 4, 3, 4, 9)  # 48 << 2 = 192 -> 127
    assert _run(g, [1.0, 0.5]) == (127, 127)
    assert _run(g, [-1.0, -0.5]) == (-128, -128)
    # Negative input position: x = [6, -2] at pi = -1 -> codes [3, -1]; w [0.5, 0.25] at 3 -> [4, 2];
    # acc = 12 - 2 = 10 at scale 2^-(2) -> 2.5; po = 1 -> shift 1: 10 / 2 = 5 (2.5 exactly).
    g = _graph([0.5, 0.25], 0.0, -1, 3, 4, 1)
    assert _run(g, [6.0, -2.0]) == (5, 5)


def test_fused_relu6_and_leaky_through_the_activation_node():
    relu6 = Node("r", "relu", ["c"], params={"max_value": 6.0}, out_slot=("r", "output_0"))
    g = _graph([0.5, 0.25], 0.0, 0, 3, 3, 4, act_node=relu6)  # x [8, 8]: acc 8*4 + 8*2 = 48 at 2^-3 = 6.0
    assert _run(g, [8.0, 8.0]) == (96, 96)  # 6.0 at po=4 -> 96: the cap is 6 * 2^4
    assert _run(g, [16.0, 16.0]) == (96, 96)  # 12.0 capped at 6
    assert _run(g, [-8.0, -8.0]) == (0, 0)
    leaky = Node("k", "leaky_relu", ["c"], params={"alpha": 26 / 256}, out_slot=("k", "output_0"))
    g = _graph([0.5, 0.25], 0.0, 0, 3, 3, 4, act_node=leaky)
    # acc = -48 at 2^-3 (-6.0); leaky: -48 * 26 / 2^(3 + 8 - 4) = -1248 / 128 = -9.75 -> -10 (once rounded).
    assert _run(g, [-8.0, -8.0]) == (-10, -10)


def test_missing_position_is_a_clear_error():
    g = _graph([0.5, -0.25], 0.0625, 4, 3, 5, 5)
    g.positions["c"].pop("linear")
    with pytest.raises(QInspectError, match="no position for c:linear"):
        Evaluator(g, "int").run({"x": np.zeros((1, 1, 1, 2), np.float32)})


def _pool_graph(pool, strides, padding="valid"):
    from qinspect.dpu.layer_map import avgpool_scale

    rescale, factor = avgpool_scale(*pool) if pool[0] == pool[1] else (1.0, None)
    nodes = [Node("x", "input"), Node("q", "quantize", ["x"], out_slot=("q", "input")),
             Node("p", "avg_pool", ["q"], params={"pool": pool, "strides": strides, "padding": padding,
                                                  "rescale": rescale, "dpu_factor": factor},
                  out_slot=("p", "output_0"))]
    g = DpuGraph(nodes=nodes, inputs=["x"], outputs=["p"])
    g.add_slot(SlotSpec("q", "input", "input", 0, 1))
    g.add_slot(SlotSpec("p", "output_0", "output", 1, 1))
    g.set_pos(("q", "input"), 0)
    g.set_pos(("p", "output_0"), 0)
    return g


@pytest.mark.parametrize(("pool", "shape", "code", "expected"), [
    ((2, 3), (2, 3), 100, 98),  # pooled whole: the lcm square 6x6's factor 36 * 7 / 2^8: 98.4375 -> 98
    ((1, 7), (1, 7), 110, 111),  # 7x7's 49 * 21 / 2^10: 110.54 -> 111
    ((1, 5), (1, 5), 100, 98),  # 5x5's 25 * 10 / 2^8
    ((2, 3), (4, 6), 100, 100),  # not pooled whole (a 2x2 output): no rescale, the quantizer's quirk
    ((3, 5), (3, 5), 100, 100),  # lcm 15 > 8: no square the DPU has, no rescale
])
def test_a_rectangle_pooled_whole_gets_its_lcm_squares_factor(pool, shape, code, expected):
    # VitisAveragePooling2D.build: a non-square kernel whose output is 1 x 1 takes the factor of its lcm
    # square when that is at most 8 (as a global pool); any other non-square kernel gets none
    g = _pool_graph(pool, pool)
    x = np.full((1, *shape, 1), float(code), np.float32)
    for mode in ("int", "sim"):
        out = Evaluator(g, mode).run({"x": x})["p"].codes()
        assert set(out.reshape(-1).tolist()) == {expected}, mode
