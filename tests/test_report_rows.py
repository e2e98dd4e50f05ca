"""Which report row stands for which float layer, in which order, numbered how (no TensorFlow)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from qinspect.dpu.rewrites import graph_from_float
from qinspect.io.graph import Layer, ModelGraph
from qinspect.report.collect import _placement, _rows, _table_x
from qinspect.report.figspec import propagation_figure
from qinspect.report.layer_map import LayerMap, map_layers
from tests.dpu_graph_fixtures import model, rng_weights

S4 = [None, 8, 8, 4]


def _separable_with_bn(with_source: bool = False):
    rng = np.random.default_rng(3)
    w = rng_weights(rng, {"s": {"depthwise_kernel": (3, 3, 4, 1), "pointwise_kernel": (1, 1, 4, 6), "bias": (6,)},
                          "bn": {"gamma": (6,), "beta": (6,), "moving_mean": (6,), "moving_variance": (6,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("s", "SeparableConv2D", {"filters": 6, "kernel_size": [3, 3], "padding": "same", "activation": "linear",
                                  "depth_multiplier": 1}, ["x"], [None, 8, 8, 6]),
        ("bn", "BatchNormalization", {"epsilon": 1e-3}, ["s"], [None, 8, 8, 6]),
        ("r", "ReLU", {}, ["bn"], [None, 8, 8, 6]),
    ], ["r"], w)
    return graph_from_float(src.graph, src) if not with_source else (src.graph, graph_from_float(src.graph, src))


def test_a_separable_conv_folded_with_its_batchnorm_has_no_int8_output_of_its_own():
    # Its depthwise half's output is an intermediate tensor (position for ~1/8 the range of the layer's
    # output): standing for the layer, it gave the report clip fractions of the wrong tensor.
    g = _separable_with_bn()
    lm = map_layers(["x", "s", "bn", "r"], g)
    assert "s" not in lm.standing
    assert [n.name for n in lm.merged_into["s"]] == ["quant_s_depthwise_conv", "quant_s_pointwise_conv"]
    assert lm.standing["bn"].name == "quant_s_pointwise_conv"
    row = SimpleNamespace(node=None, name="s", merged_into=lm.merged_into["s"])
    device, note = _placement(row, g)
    assert device == "" and note.startswith("no int8 output of its own: merged into quant_s_depthwise_conv")


def test_rows_keep_the_float_models_order_and_made_nodes_follow_their_input():
    # The emulator's node order may differ from the float model's (two heads of a U-Net came out
    # swapped): the table's index, its order and the figures must agree.
    n = {k: SimpleNamespace(name=k, inputs=i, op="quantize") for k, i in
         (("nx", []), ("nb", ["nx"]), ("na", ["nx"]), ("nu", ["nb"]))}
    lm = LayerMap(standing={"x": n["nx"], "a": n["na"], "b": n["nb"]},
                  merged_into={"x": [n["nx"]], "a": [n["na"]], "b": [n["nb"]]},
                  unowned=[n["nu"]], owner_of={"nx": "x", "na": "a", "nb": "b", "nu": None})
    leaves = [Layer(name=k, class_name="Conv2D", config={}, inbound=[], output_shape=S4) for k in "xab"]
    graph = ModelGraph(name="m", layers=leaves, inputs=["x"], outputs=["a"])
    rows = _rows(graph, lm)
    assert [r.name for r in rows] == ["x", "a", "b", "nu"]
    assert rows[3].layer is None and "made by the quantizer" in rows[3].class_name


def test_figure_x_is_the_tables_index():
    secs = [SimpleNamespace(index=i) for i in (0, 1, 2, None, 3)]
    x = _table_x(secs)
    assert x == [0.0, 1.0, 2.0, 2.5, 3.0]
    spec = propagation_figure("p", list("abcde"), [30.0, 20.0, 25.0, 24.0, 10.0], [30.0, 20, 19, 18, 9], x=x)
    assert spec.series[0].x == x


def test_the_window_gives_a_folded_layer_no_figures_of_its_own_as_the_report_does():
    # The tree showed conv2d_1 (folded into batch_normalization_1) at the BatchNorm's SQNR, the report n/a.
    import pytest

    pytest.importorskip("PySide6")
    from qinspect.gui.emulation import Analysis

    g = _separable_with_bn()
    results = {n.name: SimpleNamespace(isolated="iso-" + n.name, accumulated="acc-" + n.name) for n in g.nodes}
    a = Analysis(available=True, graph=g, results=results)
    assert a.folded_into("s") == "bn" and a.folded_into("bn") is None and a.folded_into("r") is None
    assert a.result("s") is None and a.result("bn") is results["quant_s_pointwise_conv"]
    stats = a.layer_stats(accumulated=True)
    assert "s" not in stats and stats["bn"] == "acc-quant_s_pointwise_conv"
    assert a.activation_position("s")[0] is None


def test_a_conv_with_a_builtin_softmax_is_split_not_fused_in_its_row():
    # Conv2D(activation="softmax"): the DPU rounds the conv's accumulator at the softmax's input quantizer
    # and the CPU runs the softmax in float. The row said "runs in the same DPU step" and "stays on the CPU".
    from qinspect.report.collect import _fused_note

    rng = np.random.default_rng(4)
    src = model([("x", "InputLayer", {}, [], S4),
                 ("seg", "Conv2D", {"filters": 3, "kernel_size": [1, 1], "activation": "softmax"}, ["x"],
                  [None, 8, 8, 3])], ["seg"],
                rng_weights(rng, {"seg": {"kernel": (1, 1, 4, 3), "bias": (3,)}}))
    g = graph_from_float(src.graph, src)
    conv, act = g["quant_seg"], g["quant_seg_softmax"]
    assert g.fused_activation(conv) is act and act.device == "CPU" and act.pre_slot is not None
    note = _fused_note(conv, act, 5)
    assert note.startswith("split: the conv2d (quant_seg) runs on the DPU") and "p = 5" in note
    assert "same DPU step" not in note and "output (after the activation) is float" in note


def test_a_folded_separable_convs_kernel_is_on_its_own_row_not_the_batchnorms():
    # The report put the folded kernel (positions, histogram, channel ranges) on the BatchNorm's row, where no
    # kernel is; the window, the channel findings and a Vitis positions.json (conv1/kernel:0) name the conv.
    from qinspect.report.collect import _kernel_elsewhere, _kernel_node, kernel_owners

    float_graph, g = _separable_with_bn(with_source=True)
    # as the model readers give them: the file's weight names and shapes
    float_graph["s"].weight_shapes = {"depthwise_kernel": [3, 3, 4, 1], "pointwise_kernel": [1, 1, 4, 6], "bias": [6]}
    float_graph["bn"].weight_shapes = {"gamma": [6], "beta": [6], "moving_mean": [6], "moving_variance": [6]}
    kernels = kernel_owners(float_graph)
    assert kernels == {"s"}
    lm = map_layers(["x", "s", "bn", "r"], g)
    rows = {r.name: r for r in _rows(float_graph, lm)}
    # the separable's row holds its pointwise half's kernel; the depthwise half keeps its own row and kernel
    assert _kernel_node(rows["s"], lm, kernels).name == "quant_s_pointwise_conv"
    assert _kernel_elsewhere(rows["bn"], lm, kernels) == "s"
    assert all(_kernel_elsewhere(rows[n], lm, kernels) == "" for n in rows if n != "bn")
    assert all(_kernel_node(rows[n], lm, kernels) is None for n in rows if n != "s")


def test_a_builtin_softmax_is_not_said_to_quantize_the_result():
    """The rewrite list said a CPU softmax "is fused into it and quantizes the result", beside "softmax stays
    float on the CPU": it rounds the conv's accumulator at its input quantizer, then runs in float."""
    rng = np.random.default_rng(4)
    src = model([("x", "InputLayer", {}, [], S4),
                 ("seg", "Conv2D", {"filters": 3, "kernel_size": [1, 1], "activation": "softmax"}, ["x"],
                  [None, 8, 8, 3]),
                 ("r", "Conv2D", {"filters": 3, "kernel_size": [1, 1], "activation": "relu"}, ["seg"],
                  [None, 8, 8, 3])], ["r"],
                rng_weights(rng, {"seg": {"kernel": (1, 1, 4, 3), "bias": (3,)},
                                  "r": {"kernel": (1, 1, 3, 3), "bias": (3,)}}))
    texts = [r.text for r in graph_from_float(src.graph, src).rewrites if r.kind == "fuse_activation"]
    softmax = [t for t in texts if t.startswith("seg output")]
    relu = [t for t in texts if t.startswith("r output")]
    assert softmax == ["seg output not quantized: the input quantizer of Activation seg_softmax (softmax, run in "
                       "float on the CPU) rounds the accumulator once"], texts
    assert relu and relu[0].endswith("is fused into it and quantizes the result")
