"""DPU position constraints (DPU_NUMERICS.md s5) on hand-built graphs: each rule, its limits, the order."""

from __future__ import annotations

from qinspect.dpu.constraints import apply_constraints, check_constraints
from qinspect.dpu.dpu_graph import DpuGraph, Node, SlotSpec


def _g(nodes: list[Node], positions: dict[tuple[str, str], int]) -> DpuGraph:
    g = DpuGraph(nodes=nodes, inputs=[nodes[0].name], outputs=[nodes[-1].name])
    for (layer, key), p in positions.items():
        kind = "weight" if "/" in key else "output"
        g.add_slot(SlotSpec(layer, key, kind))
        g.set_pos((layer, key), p)
    return g


def _inp(name="in", pos_slot=("quant_in", "input")):
    return [Node("in", "input"), Node("quant_in", "quantize", ["in"], out_slot=pos_slot)]


def _conv(name, src, out=True, act=None):
    n = Node(name, "conv2d", [src], params={"act": "linear"},
             weight_slots={"kernel": (name, f"{name}/kernel:0"), "bias": (name, f"{name}/bias:0")})
    if out:
        n.out_slot = (name, "linear")
    return n


def test_shift_cut_moves_the_weight_position_to_the_nearest_limit():
    g = _g(_inp() + [_conv("c", "quant_in")],
           {("quant_in", "input"): 7, ("c", "c/kernel:0"): 12, ("c", "c/bias:0"): 12, ("c", "linear"): 1})
    log = apply_constraints(g)  # shift_cut = 12 + 7 - 1 = 18 > 16 -> w = 16 + 1 - 7 = 10
    assert g.pos(("c", "c/kernel:0")) == 10
    assert [(a.constraint, a.before, a.after) for a in log][0] == ("shift_cut", 12, 10)
    assert check_constraints(g) == []


def test_shift_cut_lower_limit_and_exact_limits_untouched():
    g = _g(_inp() + [_conv("c", "quant_in")],
           {("quant_in", "input"): 2, ("c", "c/kernel:0"): 3, ("c", "c/bias:0"): 5, ("c", "linear"): 9})
    apply_constraints(g)  # 3 + 2 - 9 = -4 < 0 -> w = 7
    assert g.pos(("c", "c/kernel:0")) == 7
    g2 = _g(_inp() + [_conv("c", "quant_in")],
            {("quant_in", "input"): 7, ("c", "c/kernel:0"): 9, ("c", "c/bias:0"): 16, ("c", "linear"): 0})
    assert apply_constraints(g2) == []  # shift_cut exactly 16, shift_bias exactly 0: both allowed


def test_shift_bias_range_depends_on_shift_cut():
    # w=8, i=7, o=7: shift_cut 8 -> lower limit min(0, -(24 - 16)) = -8; bias 30 gives -15 -> b = 23.
    g = _g(_inp() + [_conv("c", "quant_in")],
           {("quant_in", "input"): 7, ("c", "c/kernel:0"): 8, ("c", "c/bias:0"): 30, ("c", "linear"): 7})
    log = apply_constraints(g)
    assert g.pos(("c", "c/bias:0")) == 23
    assert log[-1].constraint == "shift_bias" and (log[-1].before, log[-1].after) == (30, 23)
    # Upper limit 16: bias -2 gives shift_bias 17 -> b = -1.
    g = _g(_inp() + [_conv("c", "quant_in")],
           {("quant_in", "input"): 7, ("c", "c/kernel:0"): 8, ("c", "c/bias:0"): -2, ("c", "linear"): 7})
    apply_constraints(g)
    assert g.pos(("c", "c/bias:0")) == -1


def test_shift_bias_before_leaky_relu_is_at_least_zero():
    conv = _conv("c", "quant_in", out=False)
    act = Node("lk", "leaky_relu", ["c"], params={"alpha": 26 / 256}, out_slot=("lk", "output_0"))
    g = _g(_inp() + [conv, act], {("quant_in", "input"): 6, ("c", "c/kernel:0"): 8, ("c", "c/bias:0"): 16,
                                  ("lk", "output_0"): 6})
    log = apply_constraints(g)  # general rule allows -2 (>= -8) but the leaky rule needs >= 0 -> b = 14
    assert g.pos(("c", "c/bias:0")) == 14
    assert [a.constraint for a in log] == ["shift_bias_leakyrelu"]


def test_hard_sigmoid_input_and_output_rules():
    pre = _conv("c", "quant_in")
    sig = Node("s", "hard_sigmoid", ["c"], out_slot=("s", "output_0"))
    g = _g(_inp() + [pre, sig], {("quant_in", "input"): 7, ("c", "c/kernel:0"): 8, ("c", "c/bias:0"): 8,
                                 ("c", "linear"): 17, ("s", "output_0"): 5})
    apply_constraints(g)
    assert g.pos(("c", "linear")) == 15  # input clipped to [0, 15]
    assert g.pos(("s", "output_0")) == 7  # output at least 7
    g = _g(_inp() + [_conv("c", "quant_in"), Node("s", "hard_sigmoid", ["c"], out_slot=("s", "output_0"))],
           {("quant_in", "input"): 7, ("c", "c/kernel:0"): 8, ("c", "c/bias:0"): 8, ("c", "linear"): -3,
            ("s", "output_0"): 20})
    apply_constraints(g)
    assert g.pos(("c", "linear")) == 0
    assert g.pos(("s", "output_0")) == 14  # 14 + 0 - 20 <= 0 -> 14 + p_in


def _add_graph(pa: int, pb: int, po: int) -> DpuGraph:
    a = Node("a", "relu", ["quant_in"], out_slot=("a", "output_0"))
    b = Node("b", "relu", ["quant_in"], out_slot=("b", "output_0"))
    add = Node("add", "add", ["a", "b"], out_slot=("add", "output_0"))
    return _g(_inp() + [a, b, add], {("quant_in", "input"): 7, ("a", "output_0"): pa, ("b", "output_0"): pb,
                                     ("add", "output_0"): po})


def test_shift_read_and_shift_write():
    g = _add_graph(20, 2, 2)
    log = apply_constraints(g)
    assert g.pos(("a", "output_0")) == 17  # max - min <= 15
    assert log[0].constraint == "shift_read"
    g = _add_graph(20, 19, 2)
    apply_constraints(g)
    assert g.pos(("add", "output_0")) == 4  # min(p_in) - p_out = 17 > 15 -> p_out = 19 - 15
    g = _add_graph(0, 1, 20)
    apply_constraints(g)
    assert g.pos(("add", "output_0")) == 15  # -20 < -15 -> p_out = 0 + 15
    assert check_constraints(_add_graph(10, 5, 0)) == []


def test_shift_swish_on_a_hard_swish_multiply():
    c = _conv("c", "quant_in")
    sig = Node("s", "hard_sigmoid", ["c"], out_slot=("s", "output_0"))
    mul = Node("m", "multiply", ["c", "s"], out_slot=("m", "output_0"))
    g = _g(_inp() + [c, sig, mul], {("quant_in", "input"): 7, ("c", "c/kernel:0"): 8, ("c", "c/bias:0"): 8,
                                    ("c", "linear"): 5, ("s", "output_0"): 7, ("m", "output_0"): 20})
    apply_constraints(g)
    assert g.pos(("m", "output_0")) == 12  # 5 + 7 - 20 < 0 -> p_out = 12
    # A multiply of two unrelated tensors is not a swish: untouched.
    c2 = _conv("d", "quant_in")
    mul2 = Node("m", "multiply", ["c", "d"], out_slot=("m", "output_0"))
    g = _g(_inp() + [_conv("c", "quant_in"), c2, mul2],
           {("quant_in", "input"): 7, ("c", "c/kernel:0"): 8, ("c", "c/bias:0"): 8, ("c", "linear"): 5,
            ("d", "d/kernel:0"): 8, ("d", "d/bias:0"): 8, ("d", "linear"): 7, ("m", "output_0"): 20})
    apply_constraints(g, enabled=("shift_swish",))
    assert g.pos(("m", "output_0")) == 20


def test_concat_then_pool_alignment_order_can_break_the_concat():
    """Pool alignment runs after concat alignment and can undo it (DPU_NUMERICS.md s7)."""
    a = Node("a", "relu", ["quant_in"], out_slot=("a", "output_0"))
    b = Node("b", "relu", ["quant_in"], out_slot=("b", "output_0"))
    cat = Node("cat", "concat", ["a", "b"], params={"axis": -1}, out_slot=("cat", "output_0"))
    pool = Node("p", "max_pool", ["cat"], out_slot=("p", "output_0"))
    pool_a = Node("pa", "max_pool", ["a"], out_slot=("pa", "output_0"))
    g = _g(_inp() + [a, b, cat, pool, pool_a],
           {("quant_in", "input"): 7, ("a", "output_0"): 7, ("b", "output_0"): 6, ("cat", "output_0"): 6,
            ("p", "output_0"): 4, ("pa", "output_0"): 5})
    log = apply_constraints(g)
    kinds = [a.constraint for a in log]
    assert kinds[:1] == ["align_concat"] and "align_pool" in kinds
    assert g.pos(("a", "output_0")) == 5  # concat set it to 6, then the pool after a moved it to 5
    assert g.pos(("cat", "output_0")) == 4  # pool after the concat lowered the concat's output
    assert check_constraints(g)  # the concat is left misaligned, as the quantizer leaves it


def test_every_adjustment_is_logged_with_before_and_after():
    g = _add_graph(20, 2, 2)
    log = apply_constraints(g)
    for a in log:
        assert a.before != a.after
        assert f"{a.before} -> {a.after}" in a.text
        assert a.to_dict()["tensor"] == {"layer": a.slot[0], "key": a.slot[1]}
    assert g.adjustments == log
