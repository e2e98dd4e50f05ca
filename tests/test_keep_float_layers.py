"""A keep-float remedy keeps every node of the layers its ignore_layers call names: a SeparableConv2D's
depthwise and pointwise halves float together. advise showed the pointwise half alone (22.24 dB) beside
``ignore_layers=['separable_conv2d_2', 'batch_normalization_5']``, which floats both (22.41 dB)."""

from __future__ import annotations

import numpy as np

from qinspect.analysis import remedies as rem
from qinspect.analysis.advisor import _keep_float_rows
from qinspect.analysis.sensitivity import sensitivity, what_if
from qinspect.dpu.emulator import Emulator
from qinspect.dpu.rewrites import graph_from_float
from tests.dpu_graph_fixtures import model


def _separable():
    rng = np.random.default_rng(0)
    w = {"sep": {"depthwise_kernel": rng.normal(size=(3, 3, 3, 1)).astype("f4"),
                 "pointwise_kernel": rng.normal(size=(1, 1, 3, 4)).astype("f4"), "bias": np.zeros(4, "f4")},
         "bn": {"gamma": rng.uniform(0.5, 1.5, 4).astype("f4"), "beta": np.zeros(4, "f4"),
                "moving_mean": np.zeros(4, "f4"), "moving_variance": np.ones(4, "f4")},
         "dense": {"kernel": rng.normal(size=(4, 3)).astype("f4"), "bias": np.zeros(3, "f4")}}
    src = model([("x", "InputLayer", {}, [], [None, 6, 6, 3]),
                 ("sep", "SeparableConv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same",
                                             "activation": "linear", "depth_multiplier": 1}, ["x"], [None, 6, 6, 4]),
                 ("bn", "BatchNormalization", {"axis": -1, "epsilon": 1e-3}, ["sep"], [None, 6, 6, 4]),
                 ("relu", "ReLU", {}, ["bn"], [None, 6, 6, 4]),
                 ("gap", "GlobalAveragePooling2D", {}, ["relu"], [None, 4]),
                 ("dense", "Dense", {"units": 3, "activation": "linear"}, ["gap"], [None, 3])], ["dense"], w)
    graph = graph_from_float(src.graph, src)
    x = {"x": rng.normal(size=(16, 6, 6, 3)).astype("f4")}
    emu = Emulator(graph)
    emu.calibrate(x, 16)
    return emu.graph, x


HALVES = ["quant_sep_depthwise_conv", "quant_sep_pointwise_conv"]


def test_the_closure_of_a_half_is_both_halves_not_the_input_quantizer():
    graph, _ = _separable()
    assert graph.layer_closure(["quant_sep_depthwise_conv"]) == HALVES
    assert graph.layer_closure(["quant_sep_pointwise_conv"]) == HALVES  # through sep, not quant_x
    assert graph.layer_closure(["quant_relu"]) == ["quant_relu"]


def test_advise_and_diagnose_float_both_halves_and_measure_that():
    graph, x = _separable()
    sens = sensitivity(graph, x, batch_size=16, whatifs=False)
    base = type("Base", (), {"options": {}, "quantizer_stops": None})()
    rows = _keep_float_rows(base, graph, sens, sens.runner, None)
    sep_rows = [r for r in rows if "sep" in r.keep_float and len(r.keep_float) == 2]
    assert sep_rows and sep_rows[0].keep_float == ["sep", "bn"] and sep_rows[0].cpu_layers_added == 2
    both = what_if(graph, x, float_nodes=HALVES, batch_size=16).sqnr_db
    assert abs(sep_rows[0].output_sqnr_db - both) < 1e-9  # the figure is the command's
    fix = rem.float_fix(["quant_sep_depthwise_conv"], {}, graph)
    assert list(fix.float_nodes) == HALVES
    # the remedy names the layers its ignore_layers call names (the advice row's), folded BatchNorm too
    assert fix.action == "keep sep, bn in float (CPU layers)" and sep_rows[0].keep_float == ["sep", "bn"]


def test_a_separable_convs_depthwise_half_has_a_report_row_and_a_panel_line():
    """The depthwise half is a quantized tensor (the demo's worst isolated SQNR) that neither the report nor
    the window showed: it stands for no float layer."""
    from qinspect.gui.emulation import Analysis
    from qinspect.io.graph import Layer, ModelGraph
    from qinspect.report.collect import _rows
    from qinspect.report.layer_map import map_layers

    graph, _ = _separable()
    names = ["x", "sep", "bn", "relu", "gap", "dense"]
    lmap = map_layers(names, graph)
    assert [n.name for n in lmap.intermediate] == ["quant_sep_depthwise_conv"]
    float_graph = ModelGraph("m", [Layer(n, "Layer") for n in names], ["x"], ["dense"])
    rows = [r.name for r in _rows(float_graph, lmap)]
    assert rows[rows.index("sep") + 1] == "quant_sep_depthwise_conv"
    # a layer report of the separable conv has its depthwise step too (it had only an empty row)
    from qinspect.report.collect import _select

    # and the row of bn, whose node carries its pointwise output (folded)
    assert [r.name for r in _select(_rows(float_graph, lmap), "sep", "m")] == ["sep", "quant_sep_depthwise_conv", "bn"]
    analysis = Analysis(True, graph=graph)
    assert [n.name for n in analysis.inner_steps("sep")] == ["quant_sep_depthwise_conv"]
    assert analysis.inner_steps("bn") == [] and analysis.inner_steps("relu") == []


def test_keeping_a_dense_softmax_float_drops_its_softmax_input_quantizer_too():
    """Dense(activation='softmax'): the quantizer rounds the logits at the layer's pre-activation position
    and the softmax runs float on the CPU. ignore_layers=['dense'] leaves the whole layer unwrapped, so its
    keep-float figure must have no rounding after the int8 GAP: softmax(gap_int8 @ W + b), by hand."""
    rng = np.random.default_rng(1)
    w = {"conv": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype("f4"), "bias": np.zeros(4, "f4")},
         "dense": {"kernel": rng.normal(size=(4, 5)).astype("f4"), "bias": rng.normal(size=5).astype("f4")}}
    src = model([("x", "InputLayer", {}, [], [None, 6, 6, 3]),
                 ("conv", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
                  ["x"], [None, 6, 6, 4]),
                 ("gap", "GlobalAveragePooling2D", {}, ["conv"], [None, 4]),
                 ("dense", "Dense", {"units": 5, "activation": "softmax"}, ["gap"], [None, 5])], ["dense"], w)
    emu = Emulator(graph_from_float(src.graph, src))
    x = {"x": rng.normal(size=(16, 6, 6, 3)).astype("f4")}
    emu.calibrate(x, 16)
    graph = emu.graph
    dense = next(n.name for n in graph.nodes if n.op == "dense")
    softmax = next(n for n in graph.nodes if n.op == "softmax")
    assert softmax.device == "CPU" and softmax.pre_slot is not None  # the logits' quantizer lives here
    fix = rem.float_fix([dense], {}, graph)
    assert set(fix.float_nodes) == {dense, softmax.name}
    assert graph.float_closure([dense]) == [dense, softmax.name]
    from qinspect.analysis.sensitivity import BatchRunner

    runner = BatchRunner(graph, x)
    values = runner.what_if(None, fix.float_nodes)
    gap = runner.base[next(n.name for n in graph.nodes if n.op == "global_avg_pool")].float().astype(np.float64)
    logits = gap @ w["dense"]["kernel"].astype(np.float64) + w["dense"]["bias"]
    by_hand = np.exp(logits - logits.max(axis=1, keepdims=True))
    by_hand /= by_hand.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(values[softmax.name].float(), by_hand, rtol=1e-5, atol=1e-6)


def test_the_window_shows_the_weights_and_positions_of_every_weighted_step_of_a_layer():
    """A Conv2D(activation='relu') stands as its split activation, which has no weights: the window read
    the file's unfolded weights and gave its bias p = 51 (min-MSE of zeros) where the int8 model uses
    another. A separable conv showed its pointwise kernel alone, never the depthwise one."""
    from qinspect.gui.emulation import Analysis

    rng = np.random.default_rng(2)
    w = {"conv": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype("f4"), "bias": np.zeros(4, "f4")},
         "sep": {"depthwise_kernel": rng.normal(size=(3, 3, 4, 1)).astype("f4"),
                 "pointwise_kernel": rng.normal(size=(1, 1, 4, 2)).astype("f4"), "bias": np.zeros(2, "f4")}}
    src = model([("x", "InputLayer", {}, [], [None, 6, 6, 3]),
                 ("conv", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
                  ["x"], [None, 6, 6, 4]),
                 ("sep", "SeparableConv2D", {"filters": 2, "kernel_size": [3, 3], "padding": "same",
                                             "activation": "linear", "depth_multiplier": 1}, ["conv"],
                  [None, 6, 6, 2])],
                ["sep"], w)
    emu = Emulator(graph_from_float(src.graph, src))
    emu.calibrate({"x": rng.normal(size=(8, 6, 6, 3)).astype("f4")}, 8)
    graph = emu.graph
    analysis = Analysis(True, graph=graph)
    conv = next(n for n in graph.nodes if n.op == "conv2d" and n.origin == ["conv"])
    assert analysis.node("conv") is not conv  # the split relu stands for the layer's output
    weights, how = analysis.layer_weights("conv")
    assert set(weights) == {"kernel", "bias"} and "stored in the model file" not in how
    assert analysis.weight_positions("conv")[0] == {k: graph.pos(s) for k, s in conv.weight_slots.items()}
    halves = [n for n in graph.nodes if n.weights and n.origin[:1] == ["sep"]]
    assert len(halves) == 2
    weights, _ = analysis.layer_weights("sep")
    assert "depthwise_kernel" in weights and "kernel" in weights
    expected = {k: graph.pos(s) for n in halves for k, s in n.weight_slots.items()}
    assert analysis.weight_positions("sep")[0] == expected


def test_a_dense_softmax_runs_on_the_dpu_and_the_cpu_in_the_window_and_the_report():
    """The tree painted a Dense(softmax) orange 'CPU' while its matmul runs on the DPU."""
    from types import SimpleNamespace

    from qinspect.gui.emulation import Analysis
    from qinspect.report.collect import _placement
    from qinspect.report.layer_map import map_layers

    rng = np.random.default_rng(6)
    w = {"dense": {"kernel": rng.normal(size=(4, 3)).astype("f4"), "bias": np.zeros(3, "f4")}}
    src = model([("x", "InputLayer", {}, [], [None, 4]),
                 ("dense", "Dense", {"units": 3, "activation": "softmax"}, ["x"], [None, 3])], ["dense"], w)
    graph = graph_from_float(src.graph, src)
    analysis = Analysis(True, graph=graph)
    assert analysis.placement()["dense"] == "DPU+CPU"
    assert analysis.placement_notes()["dense"].startswith("its softmax runs on the CPU: ")
    lm = map_layers(["x", "dense"], graph)
    row = SimpleNamespace(node=lm.standing["dense"], name="dense", merged_into=lm.merged_into["dense"])
    device, note = _placement(row, graph)
    assert device == "DPU+CPU" and note.startswith(analysis.placement_notes()["dense"])
