"""The vai_q_tensorflow2 options that change pof2s results (cle_steps, cle_to_relu6, convert_relu6_to_relu)
on hand-checkable models: which pairs are equalized, the scales of one step worked out by hand, and that an
option which changes the function shows as error against the float model's own function."""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.analysis.metrics import ErrorStats
from qinspect.dpu.dpu_graph import CLE_GROUPED_TAIL
from qinspect.dpu.emulator import Emulator
from qinspect.dpu.executor import Evaluator, batch_inputs
from qinspect.dpu.options import QuantizerOptions
from qinspect.dpu.reference import FLOAT_FUNCTION_PARAMS
from qinspect.dpu.rewrites import graph_from_float
from tests.dpu_graph_fixtures import model

S4 = [None, 6, 6, 4]


def _pair(mid: list[tuple], seed: int = 7):
    """x -> conv a (1x1) -> <mid layers> -> conv b (1x1): channel 0 of ``a`` twenty times wider."""
    rng = np.random.default_rng(seed)
    w = {"a": {"kernel": rng.normal(size=(1, 1, 4, 4)).astype(np.float32),
               "bias": (rng.normal(size=4) * 0.1).astype(np.float32)},
         "b": {"kernel": (rng.normal(size=(1, 1, 4, 3)) * 0.3).astype(np.float32),
               "bias": (rng.normal(size=3) * 0.1).astype(np.float32)}}
    w["a"]["kernel"][..., 0] *= 20.0
    conv = {"filters": 4, "kernel_size": [1, 1], "activation": "linear", "use_bias": True}
    layers = [("x", "InputLayer", {}, [], S4), ("a", "Conv2D", conv, ["x"], S4)]
    prev = "a"
    for name, cls, cfg in mid:
        layers.append((name, cls, cfg, [prev], S4))
        prev = name
    layers.append(("b", "Conv2D", {**conv, "filters": 3}, [prev], [None, 6, 6, 3]))
    return model(layers, ["b"], w), w


def _one_step_scale(wa: dict, wb: dict) -> np.ndarray:
    """The quantizer's scale for one step, by hand: sqrt(max|tail in-channel| / max|head out-channel, bias
    included|), clipped to [0.1, 10]."""
    head = np.maximum(np.abs(wa["kernel"][0, 0]).max(axis=0), np.abs(wa["bias"]))
    tail = np.abs(wb["kernel"][0, 0]).max(axis=1)
    return np.clip(np.sqrt(tail / head), 0.1, 10).astype(np.float32)


def _equalized(g) -> bool:
    return any(r.kind == "cross_layer_equalization" and r.layers for r in g.rewrites)


def _float_model(x: np.ndarray, w: dict, cap: float | None, pad: bool = False) -> np.ndarray:
    """The float model by hand (1x1 convs as matrix products)."""
    h = x @ w["a"]["kernel"][0, 0] + w["a"]["bias"]
    h = np.maximum(h, 0) if cap is None else np.clip(h, 0, cap)
    if pad:
        h = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return h @ w["b"]["kernel"][0, 0] + w["b"]["bias"]


RELU = ("r", "ReLU", {"max_value": None})
RELU6 = ("r", "ReLU", {"max_value": 6.0})
PAD = ("p", "ZeroPadding2D", {"padding": [[1, 1], [1, 1]]})


def test_a_plain_relu_between_convs_is_equalized_with_the_hand_worked_scale():
    src, w = _pair([RELU])
    g = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=1))
    s = _one_step_scale(w["a"], w["b"])
    np.testing.assert_allclose(g["quant_a"].weights["kernel"], w["a"]["kernel"] * s, rtol=1e-6)
    np.testing.assert_allclose(g["quant_a"].weights["bias"], w["a"]["bias"] * s, rtol=1e-6)
    np.testing.assert_allclose(g["quant_b"].weights["kernel"], w["b"]["kernel"] / s.reshape(1, 1, -1, 1), rtol=1e-6)
    assert any("ConvReLUConv pair a -> b" in r.text for r in g.rewrites)


@pytest.mark.parametrize("mid", [[RELU6], [RELU, PAD]], ids=["relu6", "relu-pad"])
def test_relu6_and_padded_relu_pairs_are_left_alone_by_default(mid):
    src, w = _pair(mid)
    g = graph_from_float(src.graph, src)
    np.testing.assert_array_equal(g["quant_a"].weights["kernel"], w["a"]["kernel"])
    np.testing.assert_array_equal(g["quant_b"].weights["kernel"], w["b"]["kernel"])
    assert not _equalized(g)


@pytest.mark.parametrize("mid", [[RELU6], [RELU, PAD], [RELU6, PAD]], ids=["relu6", "relu-pad", "relu6-pad"])
def test_cle_to_relu6_equalizes_them_with_the_same_scale(mid):
    src, w = _pair(mid)
    g = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=1, cle_to_relu6=True))
    s = _one_step_scale(w["a"], w["b"])
    np.testing.assert_allclose(g["quant_a"].weights["kernel"], w["a"]["kernel"] * s, rtol=1e-6)
    np.testing.assert_allclose(g["quant_b"].weights["kernel"], w["b"]["kernel"] / s.reshape(1, 1, -1, 1), rtol=1e-6)


def test_cle_steps_is_the_number_of_passes():
    src, w = _pair([RELU])
    one = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=1))
    two = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=2))
    s1 = _one_step_scale(w["a"], w["b"])
    wa1 = {"kernel": w["a"]["kernel"] * s1, "bias": w["a"]["bias"] * s1}
    wb1 = {"kernel": w["b"]["kernel"] / s1.reshape(1, 1, -1, 1)}
    s2 = _one_step_scale(wa1, wb1)
    np.testing.assert_allclose(one["quant_a"].weights["kernel"], wa1["kernel"], rtol=1e-6)
    np.testing.assert_allclose(two["quant_a"].weights["kernel"], wa1["kernel"] * s2, rtol=1e-5)


def _x(seed: int = 1) -> np.ndarray:
    # inputs large enough that the head's channels cross 6
    return (np.random.default_rng(seed).normal(size=(8, 6, 6, 4)) * 1.5).astype(np.float32)


@pytest.mark.parametrize("options", [
    QuantizerOptions(cle_to_relu6=True),
    QuantizerOptions(convert_relu6_to_relu=True),
    QuantizerOptions(convert_relu6_to_relu=True, cle_to_relu6=True),
], ids=["cle_to_relu6", "convert_relu6_to_relu", "both"])
def test_the_float_reference_stays_the_float_models_function(options):
    src, w = _pair([RELU6])
    x = _x()
    g = graph_from_float(src.graph, src, options)
    ref = Evaluator(g, "float").run(batch_inputs(g, x))[g.outputs[0]].float()
    np.testing.assert_allclose(ref, _float_model(x, w, 6.0), rtol=1e-4, atol=1e-4)
    # ... while the quantized model's own float function (the quantizer's simulation without rounding)
    # is another one: the option changed the function.
    changed = Evaluator(g, "float")
    for n in g.nodes:
        n.params.pop("float_max_value", None)
    own = changed.run(batch_inputs(g, x))[g.outputs[0]].float()
    assert np.max(np.abs(own - ref)) > 0.1


def test_convert_relu6_to_relu_makes_a_capless_relu_that_cle_then_equalizes():
    src, w = _pair([RELU6])
    g = graph_from_float(src.graph, src, QuantizerOptions(convert_relu6_to_relu=True, cle_steps=1))
    relu = g["quant_r"]
    assert relu.op == "relu" and relu.params["max_value"] is None
    assert any(r.kind == "convert_relu6_to_relu" for r in g.rewrites)
    # without a cap the ReLU matches ConvReLUConv (max_value None): equalized although cle_to_relu6 is off
    s = _one_step_scale(w["a"], w["b"])
    np.testing.assert_allclose(g["quant_a"].weights["kernel"], w["a"]["kernel"] * s, rtol=1e-6)
    np.testing.assert_allclose(relu.params["float_max_value"], 6.0 * s, rtol=1e-6)


def test_convert_relu6_to_relu_also_uncaps_an_activation_relu6_and_the_float_reference_keeps_the_cap():
    # vai_q 3.5's ConvertReLU6ToReLU matches ReLU|Activation: an Activation('relu6') becomes 'relu' too,
    # then matches ConvActConv (Activation linear|relu) and is equalized
    src, w = _pair([("r", "Activation", {"activation": "relu6"})])
    g = graph_from_float(src.graph, src, QuantizerOptions(convert_relu6_to_relu=True, cle_steps=1))
    relu = g["quant_r"]
    assert relu.op == "relu" and relu.params["max_value"] is None
    assert any(r.kind == "convert_relu6_to_relu" and r.layers == ["r"] for r in g.rewrites)
    s = _one_step_scale(w["a"], w["b"])
    np.testing.assert_allclose(g["quant_a"].weights["kernel"], w["a"]["kernel"] * s, rtol=1e-6)
    np.testing.assert_allclose(relu.params["float_max_value"], 6.0 * s, rtol=1e-6)
    # the float reference is the float model's function, cap included, whatever the rewrite did
    x = _x()
    y = Evaluator(g, "float").run(batch_inputs(g, x))[g.outputs[0]].float()
    np.testing.assert_allclose(y, _float_model(x, w, 6.0), rtol=1e-4, atol=1e-4)
    # without the option it keeps its cap and no pair is equalized across it
    g0 = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=1))
    assert g0["quant_r"].params["max_value"] == 6.0 and not _equalized(g0)


def test_an_option_that_changes_the_function_shows_as_error():
    src, _ = _pair([RELU6])
    x = _x()
    sqnr = {}
    for name, options in (("default", QuantizerOptions()), ("relu", QuantizerOptions(convert_relu6_to_relu=True)),
                          ("cle6", QuantizerOptions(cle_to_relu6=True))):
        emu = Emulator.from_model(src, x, options=options.with_(calib_batch_size=4))
        res = emu.run(x, stats_factory=ErrorStats)
        sqnr[name] = res[emu.graph.outputs[0]].accumulated.sqnr_db
    assert np.isfinite(sqnr["default"])
    # an output error far above int8 rounding: ReLU6 -> ReLU lets values above 6 through
    assert sqnr["relu"] < sqnr["default"] - 6
    assert sqnr["cle6"] < sqnr["default"] - 3


def _as_read_from_quantized_h5(options: QuantizerOptions, x: np.ndarray):
    """The graph a quantized.h5 made under ``options`` gives: the quantized model's layers, weights and
    positions, and nothing of the float model's functions (no float caps)."""
    src, w = _pair([RELU6])
    emu = Emulator.from_model(src, x, options=options.with_(calib_batch_size=4))
    for n in emu.graph.nodes:
        n.params.pop("float_max_value", None)
    emu.graph.options = None
    return emu, src, w


@pytest.mark.parametrize("options", [QuantizerOptions(convert_relu6_to_relu=True), QuantizerOptions(cle_to_relu6=True)],
                         ids=["convert_relu6_to_relu", "cle_to_relu6"])
def test_with_a_quantized_models_graph_the_reference_is_the_float_model(options):
    x = _x()
    emu, src, w = _as_read_from_quantized_h5(options, x)
    own = emu.run(x, stats_factory=ErrorStats, keep_float=True, keep_int8=True)
    out = emu.graph.outputs[0]
    note = emu.use_float_reference(src, options)
    assert "equal the quantized model's (2 weighted layers)" in note and "WARNING" not in note
    res = emu.run(x, stats_factory=ErrorStats, keep_float=True, keep_int8=True)
    # the reference is now the float model's own function, worked out by hand ...
    np.testing.assert_allclose(res[out].float_ref.reshape(-1, 3), _float_model(x, w, 6.0).reshape(-1, 3),
                               rtol=1e-4, atol=1e-4)
    # ... and the function change shows as error (the graph's own float function hid it)
    assert res[out].accumulated.sqnr_db < own[out].accumulated.sqnr_db - 6
    # the emulated (integer) values are the quantized model's, unchanged
    np.testing.assert_array_equal(res[out].int8, own[out].int8)


def test_a_reference_rewritten_with_other_options_is_flagged():
    x = _x()
    emu, src, _ = _as_read_from_quantized_h5(QuantizerOptions(cle_to_relu6=True), x)
    note = emu.use_float_reference(src, QuantizerOptions())
    assert "WARNING: 2 of 2 weighted layers differ" in note and "--cle-to-relu6" in note


def test_with_matching_weights_the_graphs_own_float_path_becomes_the_float_models():
    """diagnose and the what-ifs evaluate the graph's float path: it carries the float model's caps."""
    x = _x()
    emu, src, w = _as_read_from_quantized_h5(QuantizerOptions(cle_to_relu6=True), x)
    emu.use_float_reference(src, QuantizerOptions(cle_to_relu6=True))
    g = emu.graph
    y = Evaluator(g, "float").run(batch_inputs(g, x))[g.outputs[0]].float()
    np.testing.assert_allclose(y, _float_model(x, w, 6.0), rtol=1e-4, atol=1e-4)
    # not when the weights say the options were others
    emu2, src2, _ = _as_read_from_quantized_h5(QuantizerOptions(cle_to_relu6=True), x)
    emu2.use_float_reference(src2, QuantizerOptions())
    assert all(not set(FLOAT_FUNCTION_PARAMS) & set(n.params) - {"float_fn", "float_alpha"} for n in emu2.graph.nodes)


def _float_model_act(x: np.ndarray, w: dict, act) -> np.ndarray:
    h = act(x @ w["a"]["kernel"][0, 0] + w["a"]["bias"])
    return h @ w["b"]["kernel"][0, 0] + w["b"]["bias"]


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("name,fn", [("swish", lambda v: v * _sigmoid(v)), ("sigmoid", _sigmoid),
                                     ("tanh", np.tanh)])
def test_cle_to_relu6_across_other_activations_keeps_the_float_models_function(name, fn):
    """ConvActConv matches any Activation under cle_to_relu6: the quantized model applies it to the scaled
    tensor; the reference stays the float model (hand-computed), and the quantizer's function differs."""
    src, w = _pair([("r", "Activation", {"activation": name})])
    x = _x()
    g = graph_from_float(src.graph, src, QuantizerOptions(cle_to_relu6=True))
    assert any(r.kind == "cle_across_activation" for r in g.rewrites)
    assert not np.array_equal(g["quant_a"].weights["kernel"], w["a"]["kernel"])
    ref = Evaluator(g, "float").run(batch_inputs(g, x))[g.outputs[0]].float()
    np.testing.assert_allclose(ref, _float_model_act(x, w, fn), rtol=2e-4, atol=2e-4)
    default = graph_from_float(src.graph, src)
    assert not _equalized(default)


def _grouped_pair(head_groups: int, tail_groups: int, seed: int = 3):
    """x (4 ch) -> conv a (1x1, ``head_groups``) -> ReLU -> conv b (1x1, 4 filters, ``tail_groups``); channel
    0 of ``a`` twenty times wider. Grouped 1x1 kernels: (1, 1, 4 / groups, 4)."""
    rng = np.random.default_rng(seed)
    w = {"a": {"kernel": rng.normal(size=(1, 1, 4 // head_groups, 4)).astype(np.float32),
               "bias": (rng.normal(size=4) * 0.1).astype(np.float32)},
         "b": {"kernel": (rng.normal(size=(1, 1, 4 // tail_groups, 4)) * 0.3).astype(np.float32),
               "bias": (rng.normal(size=4) * 0.1).astype(np.float32)}}
    w["a"]["kernel"][..., 0] *= 20.0
    conv = {"filters": 4, "kernel_size": [1, 1], "activation": "linear", "use_bias": True}
    layers = [("x", "InputLayer", {}, [], S4), ("a", "Conv2D", {**conv, "groups": head_groups}, ["x"], S4),
              RELU + (["a"], S4), ("b", "Conv2D", {**conv, "groups": tail_groups}, ["r"], S4)]
    return model(layers, ["b"], w), w


def _grouped_1x1(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A grouped 1x1 convolution by hand: each group of input channels times its own block of filters."""
    cin, cout = x.shape[-1], kernel.shape[3]
    groups = cin // kernel.shape[2]
    gi, go = cin // groups, cout // groups
    parts = [x[..., g * gi:(g + 1) * gi] @ kernel[0, 0, :, g * go:(g + 1) * go] for g in range(groups)]
    return np.concatenate(parts, axis=-1) + bias


def test_a_grouped_conv_tail_is_left_unequalized_and_the_quantizers_stop_is_said():
    # RegNet: ReLU -> grouped Conv2D. The quantizer's formula takes the tail's in/groups = 2 input-channel
    # maxima against the head's 4 output channels: vai_q_tensorflow2 stops with a shape error there. The
    # emulator leaves the pair alone and every output says the run is not one the quantizer can make.
    src, w = _grouped_pair(1, 2)
    g = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=1))
    np.testing.assert_array_equal(g["quant_a"].weights["kernel"], w["a"]["kernel"])
    notes = [r for r in g.rewrites if r.kind == CLE_GROUPED_TAIL]
    assert len(notes) == 1 and notes[0].layers == ["a", "b"] and "grouped Conv2D" in notes[0].text
    stop = g.quantizer_stop_note()
    assert stop is not None and "a -> b" in stop and "include_cle=False" in stop
    assert graph_from_float(src.graph, src, QuantizerOptions(include_cle=False)).quantizer_stop_note() is None
    # A head that is grouped lines up: no stop
    head, _ = _grouped_pair(2, 1)
    assert graph_from_float(head.graph, head, QuantizerOptions(cle_steps=1)).quantizer_stop_note() is None


def test_a_grouped_conv_runs_in_integers_as_the_quantizer_quantizes_a_conv2d():
    # The registry matches Conv2D whatever its groups: one kernel position, bias and output positions, and
    # the DPU's integer conv per group. Checked against the arithmetic by hand from the emulator's positions.
    src, w = _grouped_pair(1, 2)
    x = _x()
    emu = Emulator.from_model(src, x, options=QuantizerOptions(calib_batch_size=4, include_cle=False))
    b = emu.graph["quant_b"]
    assert b.op == "conv2d" and b.device == "DPU"
    assert any(r.kind == "grouped_conv" and r.layers == ["b"] for r in emu.graph.rewrites)
    res = emu.run(x, keep_int8=True, keep_float=True)
    pi, po = res["quant_r"].position, res["quant_b"].position
    pw, pb = res["quant_b"].weight_positions["kernel"], res["quant_b"].weight_positions["bias"]
    xq = res["quant_r"].int8.astype(np.int64)
    wq = np.clip(np.round(w["b"]["kernel"].astype(np.float64) * 2.0**pw), -128, 127).astype(np.int64)
    bq = np.clip(np.round(w["b"]["bias"].astype(np.float64) * 2.0**pb), -128, 127).astype(np.int64)
    acc = _grouped_1x1(xq, wq, np.zeros(4, np.int64))  # exact integers: each group's dot products
    t = (acc + bq * 2.0 ** (pi + pw - pb)) / 2.0 ** (pi + pw - po)
    want = np.clip(np.floor(t + 0.5), -128, 127)
    np.testing.assert_array_equal(res["quant_b"].int8, want)
    # and the float reference is the float model's grouped conv
    ref = _grouped_1x1(np.maximum(x @ w["a"]["kernel"][0, 0] + w["a"]["bias"], 0), w["b"]["kernel"], w["b"]["bias"])
    np.testing.assert_allclose(res["quant_b"].float_ref, ref, rtol=1e-4, atol=1e-4)


def test_a_grouped_conv_head_is_equalized_with_the_hand_worked_scale_and_keeps_the_function():
    # Grouped head: its output channels are the tail's input channels, so the quantizer's formula lines up.
    src, w = _grouped_pair(2, 1)
    g = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=1))
    head = np.maximum(np.abs(w["a"]["kernel"][0, 0]).max(axis=0), np.abs(w["a"]["bias"]))
    tail = np.abs(w["b"]["kernel"][0, 0]).max(axis=1)
    s = np.clip(np.sqrt(tail / head), 0.1, 10).astype(np.float32)
    assert np.ptp(s) > 0.1  # a real rescaling, not all ones
    np.testing.assert_allclose(g["quant_a"].weights["kernel"], w["a"]["kernel"] * s, rtol=1e-6)
    np.testing.assert_allclose(g["quant_b"].weights["kernel"], w["b"]["kernel"] / s.reshape(1, 1, -1, 1), rtol=1e-6)
    x = _x()
    want = np.maximum(_grouped_1x1(x, w["a"]["kernel"], w["a"]["bias"]), 0) @ w["b"]["kernel"][0, 0] + w["b"]["bias"]
    got = Evaluator(g, "float").run(batch_inputs(g, x))[g.outputs[0]].float()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _multiplier_model(bn: bool):
    """DepthwiseConv2D(depth_multiplier=2) on 3 channels (6 out), then a BatchNormalization or a ReLU and a
    1x1 Conv2D: a head whose output channel c * 2 + j is kernel slot [:, :, c, j]."""
    rng = np.random.default_rng(5)
    s3, s6 = [None, 6, 6, 3], [None, 6, 6, 6]
    w = {"dw": {"depthwise_kernel": rng.normal(size=(3, 3, 3, 2)).astype(np.float32),
                "bias": rng.normal(size=6).astype(np.float32)},
         "bn": {"gamma": rng.uniform(0.5, 2, 6).astype(np.float32), "beta": rng.normal(size=6).astype(np.float32),
                "moving_mean": rng.normal(size=6).astype(np.float32),
                "moving_variance": rng.uniform(0.5, 2, 6).astype(np.float32)},
         "pw": {"kernel": rng.normal(size=(1, 1, 6, 4)).astype(np.float32), "bias": np.zeros(4, np.float32)}}
    dw = {"kernel_size": [3, 3], "padding": "same", "depth_multiplier": 2, "activation": "linear"}
    mid = ("bn", "BatchNormalization", {"epsilon": 1e-3}, ["dw"], s6) if bn else ("bn", "ReLU", {}, ["dw"], s6)
    layers = [("x", "InputLayer", {}, [], s3), ("dw", "DepthwiseConv2D", dw, ["x"], s6), mid,
              ("pw", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["bn"],
               [None, 6, 6, 4])]
    return model(layers, ["pw"], w), w


def test_a_depth_multiplier_folds_its_batchnorm_per_output_channel():
    # It stopped with "cannot reshape array of size 6 into shape (1,1,3,1)" (outside audit). BN channel c * 2 + j
    # scales kernel slot [:, :, c, j]: checked against the BN applied by hand after the unfolded depthwise.
    src, w = _multiplier_model(bn=True)
    g = graph_from_float(src.graph, src, QuantizerOptions(include_cle=False))
    b = w["bn"]
    mult = b["gamma"] / np.sqrt(b["moving_variance"] + 1e-3)
    k = g["quant_dw"].weights["depthwise_kernel"]
    np.testing.assert_allclose(k, w["dw"]["depthwise_kernel"] * mult.reshape(3, 2), rtol=1e-6)
    np.testing.assert_allclose(g["quant_dw"].weights["bias"],
                               b["beta"] + (w["dw"]["bias"] - b["moving_mean"]) * mult, rtol=1e-5, atol=1e-6)


def test_a_depthwise_head_with_a_multiplier_is_a_cle_pair_the_quantizer_stops_at():
    # Its formula reshapes the head's kernel to the 3 input channels while its bias and the tail hold 6: a shape
    # error in vai_q_tensorflow2's numpy code, a traceback here before (outside audit). Said, and left alone.
    src, w = _multiplier_model(bn=False)
    g = graph_from_float(src.graph, src, QuantizerOptions(cle_steps=1))
    np.testing.assert_array_equal(g["quant_dw"].weights["depthwise_kernel"], w["dw"]["depthwise_kernel"])
    notes = [r for r in g.rewrites if r.kind == CLE_GROUPED_TAIL]
    assert len(notes) == 1 and notes[0].layers == ["dw", "pw"] and "depth_multiplier > 1" in notes[0].text
    assert "include_cle=False" in g.quantizer_stop_note()
