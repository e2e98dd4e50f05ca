"""The quantizer's graph rewrites on hand-built float models (no TensorFlow): each rewrite, its record,
and that the float function is preserved where the quantizer preserves it."""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.dpu.emulator import Emulator
from qinspect.dpu.executor import Evaluator, batch_inputs
from qinspect.dpu.options import QuantizerOptions
from qinspect.dpu.rewrites import graph_from_float
from qinspect.errors import QInspectError
from tests.dpu_graph_fixtures import model, rng_weights

S4 = [None, 8, 8, 4]


def _conv_bn_relu(act_layer=("relu", "ReLU", {})):
    rng = np.random.default_rng(1)
    w = rng_weights(rng, {"c": {"kernel": (3, 3, 4, 6), "bias": (6,)},
                          "bn": {"gamma": (6,), "beta": (6,), "moving_mean": (6,), "moving_variance": (6,)}})
    name, cls, cfg = act_layer
    return model([
        ("x", "InputLayer", {}, [], S4),
        ("c", "Conv2D", {"filters": 6, "kernel_size": [3, 3], "padding": "same", "activation": "linear",
                         "use_bias": True}, ["x"], [None, 8, 8, 6]),
        ("bn", "BatchNormalization", {"epsilon": 1e-3, "axis": -1}, ["c"], [None, 8, 8, 6]),
        (name, cls, cfg, ["bn"], [None, 8, 8, 6]),
    ], [name], w), w


def test_batchnorm_fold_matches_the_formula_and_is_recorded():
    src, w = _conv_bn_relu()
    g = graph_from_float(src.graph, src)
    node = g["quant_c"]
    g_, b_, m_, v_ = (w["bn"][k].astype(np.float64) for k in ("gamma", "beta", "moving_mean", "moving_variance"))
    mult = g_ / np.sqrt(v_ + 1e-3)
    np.testing.assert_allclose(node.weights["kernel"], w["c"]["kernel"] * mult, rtol=1e-6)
    np.testing.assert_allclose(node.weights["bias"], b_ + (w["c"]["bias"] - m_) * mult, rtol=1e-5, atol=1e-6)
    assert node.weights["kernel"].dtype == np.float32
    assert "bn" not in g and node.origin == ["c", "bn"]
    kinds = [r.kind for r in g.rewrites]
    assert "fold_batchnorm" in kinds and "fuse_activation" in kinds
    assert node.out_slot is None and g["quant_relu"].out_slot == ("relu", "output_0")
    assert g.fused_activation(node) is g["quant_relu"]
    assert g.rounding_activation(node) is g["quant_relu"]


def test_conv_with_two_consumers_keeps_its_bn_and_its_quantizer():
    rng = np.random.default_rng(2)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)},
                          "bn": {"gamma": (4,), "beta": (4,), "moving_mean": (4,), "moving_variance": (4,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["x"], S4),
        ("bn", "BatchNormalization", {"epsilon": 1e-3}, ["c"], S4),
        ("add", "Add", {}, ["c", "bn"], S4),
    ], ["add"], w)
    g = graph_from_float(src.graph, src)
    assert g["quant_bn"].op == "depthwise_conv2d"  # standalone BN -> 1x1 depthwise
    mult = w["bn"]["gamma"] / np.sqrt(w["bn"]["moving_variance"] + np.float32(1e-3))
    np.testing.assert_array_equal(g["quant_bn"].weights["depthwise_kernel"].reshape(-1), mult)
    np.testing.assert_array_equal(g["quant_bn"].weights["bias"], w["bn"]["beta"] + (-w["bn"]["moving_mean"]) * mult)
    np.testing.assert_array_equal(g["quant_c"].weights["kernel"], w["c"]["kernel"])
    assert g["quant_c"].out_slot == ("c", "linear")


def test_cle_scales_conv_act_conv_pairs_and_preserves_the_float_function():
    rng = np.random.default_rng(3)
    w = rng_weights(rng, {"a": {"kernel": (3, 3, 4, 5), "bias": (5,)}, "b": {"kernel": (3, 3, 5, 3), "bias": (3,)}})
    w["a"]["kernel"][..., 0] *= 20.0  # one channel far wider than the others
    layers = [
        ("x", "InputLayer", {}, [], S4),
        ("a", "Conv2D", {"filters": 5, "kernel_size": [3, 3], "padding": "same", "activation": "relu"}, ["x"],
         [None, 8, 8, 5]),
        ("b", "Conv2D", {"filters": 3, "kernel_size": [3, 3], "padding": "same", "activation": "linear"}, ["a"],
         [None, 8, 8, 3]),
    ]
    on = graph_from_float(model(layers, ["b"], w).graph, model(layers, ["b"], w), QuantizerOptions())
    off = graph_from_float(model(layers, ["b"], w).graph, model(layers, ["b"], w), QuantizerOptions(include_cle=False))
    head_on, head_off = on["quant_a"].weights["kernel"], off["quant_a"].weights["kernel"]
    assert not np.array_equal(head_on, head_off)
    # After 10 steps each channel's max|head| (bias included) and max|tail| are balanced: s -> 1.
    hmax = np.maximum(np.abs(head_on).reshape(-1, 5).max(0), np.abs(on["quant_a"].weights["bias"]))
    tmax = np.abs(on["quant_b"].weights["kernel"]).transpose(0, 1, 3, 2).reshape(-1, 5).max(0)
    np.testing.assert_allclose(hmax, tmax, rtol=1e-3)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    y_on = Evaluator(on, "float").run(batch_inputs(on, x))[on.outputs[0]].float()
    y_off = Evaluator(off, "float").run(batch_inputs(off, x))[off.outputs[0]].float()
    np.testing.assert_allclose(y_on, y_off, rtol=1e-4, atol=1e-5)
    assert any(r.kind == "cross_layer_equalization" and r.layers == ["a", "b"] for r in on.rewrites)


def test_separable_split_dropout_removal_and_leaky_alpha():
    rng = np.random.default_rng(5)
    w = rng_weights(rng, {"s": {"depthwise_kernel": (3, 3, 4, 1), "pointwise_kernel": (1, 1, 4, 6), "bias": (6,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("d", "Dropout", {"rate": 0.5}, ["x"], S4),
        ("s", "SeparableConv2D", {"filters": 6, "kernel_size": [3, 3], "padding": "same", "activation": "linear",
                                  "depth_multiplier": 1}, ["d"], [None, 8, 8, 6]),
        ("lk", "LeakyReLU", {"alpha": 0.1}, ["s"], [None, 8, 8, 6]),
    ], ["lk"], w)
    g = graph_from_float(src.graph, src)
    names = [n.name for n in g.nodes]
    assert names == ["x", "quant_x", "quant_s_depthwise_conv", "quant_s_pointwise_conv", "quant_lk"]
    assert g["quant_s_depthwise_conv"].inputs == ["quant_x"]
    assert "bias" not in g["quant_s_depthwise_conv"].weights
    assert g["quant_lk"].params["alpha"] == 26 / 256 and g["quant_lk"].device == "DPU"
    kinds = {r.kind for r in g.rewrites}
    assert {"remove_dropout", "split_separable", "leaky_relu_alpha"} <= kinds


def test_leaky_relu_after_add_stays_float_with_an_input_quantizer():
    rng = np.random.default_rng(6)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "e": {"kernel": (1, 1, 4, 2), "bias": (2,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["x"], S4),
        ("add", "Add", {}, ["x", "c"], S4),
        ("lk", "LeakyReLU", {"alpha": 0.1}, ["add"], S4),
        ("e", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["lk"], [None, 8, 8, 2]),
    ], ["e"], w)
    g = graph_from_float(src.graph, src)
    assert g["lk"].device == "CPU" and g["lk"].out_slot is None
    assert g["lk"].params["alpha"] == 26 / 256  # still rewritten
    q = g["quant_lk"]
    assert q.op == "quantize" and g.slots[q.out_slot].method == 0  # the input method (non-overflow)
    assert g["quant_e"].inputs == ["quant_lk"]


def test_a_float_layer_with_two_readers_gets_no_input_quantizer_and_its_readers_take_floats():
    # vai_q's LayersInputQuantize pattern holds the float layer as a non-head node, which its
    # ModelTransformer matches only with a single consumer: two readers, no quant_lk.
    rng = np.random.default_rng(6)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "e": {"kernel": (1, 1, 4, 2), "bias": (2,)},
                          "f": {"kernel": (1, 1, 4, 2), "bias": (2,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["x"], S4),
        ("add", "Add", {}, ["x", "c"], S4),
        ("lk", "LeakyReLU", {"alpha": 0.2}, ["add"], S4),
        ("e", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["lk"], [None, 8, 8, 2]),
        ("f", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["lk"], [None, 8, 8, 2]),
        ("cat", "Concatenate", {"axis": -1}, ["e", "f"], [None, 8, 8, 4]),
    ], ["cat"], w)
    g = graph_from_float(src.graph, src)
    assert "quant_lk" not in g
    assert g["quant_e"].inputs == ["lk"] and g["quant_f"].inputs == ["lk"]
    rec = [r for r in g.rewrites if r.kind == "no_input_quantizer"]
    assert len(rec) == 1 and rec[0].layers == ["lk", "e", "f"]
    # the reader computes on the float tensor (the quantizer's simulation), only its output is rounded:
    # by hand, a 1x1 conv of the float LeakyReLU output with the fake-quantized kernel and bias
    x = np.random.default_rng(3).uniform(-2, 2, (6, 8, 8, 4)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=6, options=QuantizerOptions(include_cle=False))
    pos = emu.graph.pos
    e = emu.graph["quant_e"]
    pi_w, pi_b, po = pos(e.weight_slots["kernel"]), pos(e.weight_slots["bias"]), pos(e.out_slot)
    assert pos(emu.graph.input_slot(e, 0)) is None  # nothing quantizes its input
    cq = emu.graph["quant_c"]
    xq = np.clip(np.floor(x * 2.0 ** pos(emu.graph["quant_x"].out_slot) + 0.5), -128, 127) \
        * 2.0 ** -pos(emu.graph["quant_x"].out_slot)

    def fq(v, p):  # weights: half to even
        return np.clip(np.round(v * 2.0 ** p), -128, 127) * 2.0 ** -p

    cv = xq @ fq(cq.weights["kernel"][0, 0], pos(cq.weight_slots["kernel"])) + fq(cq.weights["bias"],
                                                                                  pos(cq.weight_slots["bias"]))
    cv = np.clip(np.floor(cv * 2.0 ** pos(cq.out_slot) + 0.5), -128, 127) * 2.0 ** -pos(cq.out_slot)
    s = np.clip(np.floor((xq + cv) * 2.0 ** pos(emu.graph["quant_add"].out_slot) + 0.5), -128, 127) \
        * 2.0 ** -pos(emu.graph["quant_add"].out_slot)
    lk = np.where(s >= 0, s, 0.2 * s)
    want = lk @ fq(e.weights["kernel"][0, 0], pi_w) + fq(e.weights["bias"], pi_b)
    want = np.clip(np.floor(want * 2.0 ** po + 0.5), -128, 127)
    res = Evaluator(emu.graph, "int").run(batch_inputs(emu.graph, x), keep={"quant_e"})["quant_e"]
    np.testing.assert_array_equal(res.codes(), want)


def test_permute_stays_float_and_its_reader_gets_an_input_quantizer():
    # the pof2s registry lists ZeroPadding2D, Reshape and Flatten, not Permute
    rng = np.random.default_rng(8)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "e": {"kernel": (1, 1, 8, 2), "bias": (2,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "relu"}, ["x"], S4),
        ("perm", "Permute", {"dims": [2, 3, 1]}, ["c"], [None, 8, 4, 8]),
        ("e", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["perm"], [None, 8, 4, 2]),
    ], ["e"], w)
    g = graph_from_float(src.graph, src)
    assert g["perm"].device == "CPU" and "no entry for Permute" in g["perm"].cpu_reason
    q = g["quant_perm"]
    assert q.op == "quantize" and g.slots[q.out_slot].method == 0
    assert g["quant_e"].inputs == ["quant_perm"]


def test_a_batchnorm_on_a_dense_output_is_a_layer_the_quantizer_stops_at():
    # ConvertBNToDWConv makes every unfolded BatchNormalization a 1x1 DepthwiseConv2D, rank unchecked:
    # after GlobalAveragePooling2D (the fine-tuning head) the rebuilt model cannot be built
    rng = np.random.default_rng(10)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "d": {"kernel": (4, 3), "bias": (3,)},
                          "bn": {"gamma": (4,), "beta": (4,), "moving_mean": (4,), "moving_variance": (4,)}})
    src = model([("x", "InputLayer", {}, [], S4),
                 ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "relu"}, ["x"], S4),
                 ("gap", "GlobalAveragePooling2D", {}, ["c"], [None, 4]),
                 ("bn", "BatchNormalization", {"epsilon": 1e-3, "axis": -1}, ["gap"], [None, 4]),
                 ("d", "Dense", {"units": 3, "activation": "linear"}, ["bn"], [None, 3])], ["d"], w)
    g = graph_from_float(src.graph, src)
    assert g["bn"].device == "CPU" and g["quant_d"].inputs == ["quant_bn"]
    note = g.model_stop_note()
    assert note is not None and "cannot quantize this model" in note and "bn" in note and "(N, 4)" in note
    assert note in g.caveats() and g.quantizer_stop_note() is None
    # on a 4-D tensor it converts and stops nothing
    src4 = model([("x", "InputLayer", {}, [], S4),
                  ("bn", "BatchNormalization", {"epsilon": 1e-3, "axis": -1}, ["x"], S4)], ["bn"],
                 {"bn": w["bn"]})
    g4 = graph_from_float(src4.graph, src4)
    assert g4["quant_bn"].op == "depthwise_conv2d" and g4.model_stop_note() is None


@pytest.mark.parametrize(("act", "stops"), [("mish", True), ("gelu", False), ("silu", False), ("relu6", False)])
def test_a_fused_activation_the_quantizers_wrapper_does_not_list_stops_it(act, stops):
    # QuantizeAwareActivation raises (VAILogger.error) on a function outside its pre/post lists
    rng = np.random.default_rng(11)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    src = model([("x", "InputLayer", {}, [], S4),
                 ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": act}, ["x"], S4)], ["c"], w)
    note = graph_from_float(src.graph, src).model_stop_note()
    assert (note is not None) == stops
    if stops:
        assert f"c_{act}" in note and f"'{act}'" in note


def test_a_separable_conv_loses_its_activation_as_in_the_quantizer_and_the_float_reference_keeps_it():
    # vai_q 3.5's SeparableConv replacement builds the pointwise Conv2D without the activation, so the
    # BatchNorm after it folds into a linear conv; the float reference stays the float model's bn(relu(z))
    rng = np.random.default_rng(12)
    w = rng_weights(rng, {"s": {"depthwise_kernel": (1, 1, 4, 1), "pointwise_kernel": (1, 1, 4, 6), "bias": (6,)},
                          "bn": {"gamma": (6,), "beta": (6,), "moving_mean": (6,), "moving_variance": (6,)}})
    w["bn"]["moving_variance"] = np.abs(w["bn"]["moving_variance"]) + 0.5
    src = model([("x", "InputLayer", {}, [], S4),
                 ("s", "SeparableConv2D", {"filters": 6, "kernel_size": [1, 1], "activation": "relu"}, ["x"],
                  [None, 8, 8, 6]),
                 ("bn", "BatchNormalization", {"epsilon": 1e-3, "axis": -1}, ["s"], [None, 8, 8, 6])], ["bn"], w)
    x = rng.uniform(-2, 2, (4, 8, 8, 4)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=4, options=QuantizerOptions(include_cle=False))
    g = emu.graph
    pw = g["quant_s_pointwise_conv"]
    assert pw.params["act"] == "linear" and "bn" in pw.origin  # linear, so the BatchNorm folded into it
    assert any("without the layer's activation" in note and "'relu'" in note for note in g.caveats())
    z = (x * w["s"]["depthwise_kernel"][0, 0, :, 0]) @ w["s"]["pointwise_kernel"][0, 0] + w["s"]["bias"]
    bnw = w["bn"]
    mult = bnw["gamma"] / np.sqrt(bnw["moving_variance"] + 1e-3)

    def bn(v):
        return (v - bnw["moving_mean"]) * mult + bnw["beta"]

    ref = Evaluator(g, "float").run(batch_inputs(g, x))[g.outputs[0]].float()
    np.testing.assert_allclose(ref, bn(np.maximum(z, 0)), rtol=1e-4, atol=1e-4)
    # the int8 model computes bn(z): within a few LSB of it, and far from the float model where z < 0
    out = Evaluator(g, "int").run(batch_inputs(g, x))[g.outputs[0]]
    lsb = 2.0 ** -out.pos
    assert np.max(np.abs(out.float() - bn(z))) < 8 * lsb
    assert np.max(np.abs(out.float() - bn(np.maximum(z, 0)))) > 20 * lsb


def test_a_hard_sigmoid_reading_a_float_layer_with_other_readers_stops_the_quantizer():
    # no input quantizer (the float layer has two readers), and adjust_vitis_sigmoid's `ipos > 0` on None raises
    rng = np.random.default_rng(15)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "e": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    conv = {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}
    src = model([("x", "InputLayer", {}, [], S4), ("c", "Conv2D", conv, ["x"], S4),
                 ("add", "Add", {}, ["x", "c"], S4), ("lk", "LeakyReLU", {"alpha": 0.2}, ["add"], S4),
                 ("sg", "Activation", {"activation": "sigmoid"}, ["lk"], S4),
                 ("e", "Conv2D", conv, ["lk"], S4), ("m", "Multiply", {}, ["sg", "e"], S4)], ["m"], w)
    note = graph_from_float(src.graph, src).model_stop_note()
    assert note is not None and "adjust_vitis_sigmoid" in note and "sg" in note
    # with one reader it gets an input quantizer and nothing stops
    src1 = model([("x", "InputLayer", {}, [], S4), ("c", "Conv2D", conv, ["x"], S4),
                  ("add", "Add", {}, ["x", "c"], S4), ("lk", "LeakyReLU", {"alpha": 0.2}, ["add"], S4),
                  ("sg", "Activation", {"activation": "sigmoid"}, ["lk"], S4)], ["sg"], w)
    assert graph_from_float(src1.graph, src1).model_stop_note() is None


def test_sigmoid_swish_and_tf_op_hard_sigmoid_conversions():
    rng = np.random.default_rng(7)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "d": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "sigmoid"}, ["x"], S4),
        ("d", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "swish"}, ["c"], S4),
        ("tf.__operators__.add", "TFOpLambda", {"function": "__operators__.add"}, ["d"], S4, {"y": 3.0}),
        ("r6", "ReLU", {"max_value": 6.0}, ["tf.__operators__.add"], S4),
        ("tf.math.multiply", "TFOpLambda", {"function": "math.multiply"}, ["r6"], S4, {"y": 1 / 6}),
    ], ["tf.math.multiply"], w)
    g = graph_from_float(src.graph, src)
    assert g["quant_c_sigmoid"].op == "hard_sigmoid" and g["quant_c"].out_slot == ("c", "linear")
    assert g["quant_d_swish"].op == "hard_sigmoid"
    assert g["quant_d_swish_mul"].op == "multiply" and g["quant_d_swish_mul"].inputs == ["quant_d", "quant_d_swish"]
    assert g["quant_vitis_sigmoid"].inputs == ["quant_d_swish_mul"]
    assert "r6" not in g and "quant_r6" not in g
    assert g.outputs == ["quant_vitis_sigmoid"]


def test_average_pool_rescale_and_float_reference_functions():
    src = model([
        ("x", "InputLayer", {}, [], [None, 7, 7, 2]),
        ("ap", "AveragePooling2D", {"pool_size": [3, 3], "strides": [1, 1], "padding": "same"}, ["x"], [None, 7, 7, 2]),
        ("g", "GlobalAveragePooling2D", {}, ["ap"], [None, 2]),
    ], ["g"])
    g = graph_from_float(src.graph, src)
    assert g["quant_ap"].params["rescale"] == pytest.approx(63 / 64)
    x = np.random.default_rng(8).uniform(-1, 1, (3, 7, 7, 2)).astype(np.float32)
    ref = Evaluator(g, "float").run(batch_inputs(g, x))["quant_g"].float()
    # Independent reference: Keras 'same' average pooling divides by the valid taps; no DPU rescale.
    ap = np.zeros_like(x, dtype=np.float64)
    for i in range(7):
        for j in range(7):
            win = x[:, max(0, i - 1):i + 2, max(0, j - 1):j + 2, :].astype(np.float64)
            ap[:, i, j, :] = win.mean(axis=(1, 2))
    np.testing.assert_allclose(ref, ap.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_a_vitis_quantized_model_is_refused_as_float_model():
    src = model([("x", "InputLayer", {}, [], S4), ("q", "Vitis>VitisQuantize", {}, ["x"], S4)], ["q"])
    with pytest.raises(QInspectError, match="already a Vitis quantized model"):
        graph_from_float(src.graph, src)


def test_emulator_reports_rewrites_for_a_layer_and_cpu_placement():
    src, _ = _conv_bn_relu(("sm", "Softmax", {"axis": -1}))
    x = np.random.default_rng(9).normal(size=(6, 8, 8, 4)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=3)
    assert {r.kind for r in emu.rewrites_for("bn")} >= {"fold_batchnorm"}
    sm = emu.graph["sm"]
    assert sm.device == "CPU" and "softmax" in sm.cpu_reason
    assert emu.calibration.batches == 2


def test_tf_ops_and_separable_swish_run_and_int_equals_simulation():
    rng = np.random.default_rng(10)
    w = rng_weights(rng, {"s": {"depthwise_kernel": (3, 3, 4, 1), "pointwise_kernel": (1, 1, 4, 6), "bias": (6,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("tf.math.truediv", "TFOpLambda", {"function": "math.truediv"}, ["x"], S4, {"y": 127.5}),
        ("tf.math.subtract", "TFOpLambda", {"function": "math.subtract"}, ["tf.math.truediv"], S4, {"y": 1.0}),
        ("s", "SeparableConv2D", {"filters": 6, "kernel_size": [3, 3], "padding": "same", "activation": "swish"},
         ["tf.math.subtract"], [None, 8, 8, 6]),
    ], ["s"], w)
    x = rng.uniform(0, 255, (4, 8, 8, 4)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=2)
    g = emu.graph
    assert g["tf.math.subtract"].op == "scalar" and g["tf.math.subtract"].device == "CPU"
    assert g["quant_s_depthwise_conv"].inputs == ["quant_tf.math.subtract"]  # input quantizer after the CPU op
    # the quantizer's SeparableConv split drops the swish: the pointwise conv is the output, linear
    assert g.outputs == ["quant_s_pointwise_conv"] and g["quant_s_pointwise_conv"].params["act"] == "linear"
    fv = Evaluator(g, "float").run(batch_inputs(g, x))
    np.testing.assert_allclose(fv["tf.math.subtract"].float(), x / np.float32(127.5) - 1, rtol=1e-6)
    iv, sv = Evaluator(g, "int").run(batch_inputs(g, x)), Evaluator(g, "sim").run(batch_inputs(g, x))
    for n in g.nodes:
        np.testing.assert_array_equal(iv[n.name].float(), sv[n.name].float(), err_msg=n.name)


def test_unknown_layer_fails_with_one_line_naming_it():
    src = model([("x", "InputLayer", {}, [], S4),
                 ("odd", "TFOpLambda", {"function": "math.cumsum"}, ["x"], S4, {"axis": 1})], ["odd"])
    emu = Emulator.from_model(src)
    assert emu.graph["odd"].device == "CPU" and "math.cumsum" in emu.graph["odd"].cpu_reason
    with pytest.raises(QInspectError, match="math.cumsum") as exc:
        emu.calibrate(np.zeros((2, 8, 8, 4), np.float32), 2)
    assert "\n" not in str(exc.value)


def test_float_only_layers_run_on_the_cpu():
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("rs", "Rescaling", {"scale": 0.5, "offset": -1.0}, ["x"], S4),
        ("cr", "Cropping2D", {"cropping": [[1, 1], [2, 0]]}, ["rs"], [None, 6, 6, 4]),
        ("sub", "Subtract", {}, ["cr", "cr"], [None, 6, 6, 4]),
        ("mx", "Maximum", {}, ["cr", "sub"], [None, 6, 6, 4]),
        ("gmp", "GlobalMaxPooling2D", {}, ["mx"], [None, 4]),
    ], ["gmp"])
    x = np.random.default_rng(11).uniform(-3, 3, (3, 8, 8, 4)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=3)
    assert all(emu.graph[n].device == "CPU" for n in ("rs", "cr", "sub", "mx", "gmp"))
    out = Evaluator(emu.graph, "float").run(batch_inputs(emu.graph, x))["gmp"].float()
    want = np.maximum(x * np.float32(0.5) - 1, 0)[:, 1:7, 2:8, :].max(axis=(1, 2))
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_pre_quantized_activation_inside_a_conv_and_cpu_leaky_after_conv():
    """A SeparableConv2D(activation='tanh') loses tanh in the quantizer (its SeparableConv split builds a
    linear pointwise conv, which gets a post-activation quantizer); a LeakyReLU(0.2) after a conv is
    fused by the quantizer but runs on the CPU."""
    rng = np.random.default_rng(12)
    w = rng_weights(rng, {"s": {"depthwise_kernel": (3, 3, 4, 1), "pointwise_kernel": (1, 1, 4, 4), "bias": (4,)},
                          "c": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("s", "SeparableConv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "tanh"},
         ["x"], S4),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["s"], S4),
        ("lk", "LeakyReLU", {"alpha": 0.2}, ["c"], S4),
    ], ["lk"], w)
    x = rng.normal(size=(4, 8, 8, 4)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=2)
    g = emu.graph
    pw = g["quant_s_pointwise_conv"]
    assert pw.pre_slot is None and pw.out_slot == ("s_pointwise_conv", "linear") and pw.device == "DPU"
    assert pw.params["float_post_act"] == "tanh"  # the float reference keeps it
    assert g["quant_c"].out_slot is None and g["quant_lk"].device == "CPU"
    assert g["quant_lk"].out_slot == ("lk", "output_0")
    iv, sv = Evaluator(g, "int").run(batch_inputs(g, x)), Evaluator(g, "sim").run(batch_inputs(g, x))
    for n in g.nodes:
        np.testing.assert_array_equal(iv[n.name].float(), sv[n.name].float(), err_msg=n.name)


def test_batchnorm_on_a_flat_tensor_stays_float():
    rng = np.random.default_rng(13)
    w = rng_weights(rng, {"bn": {"gamma": (6,), "beta": (6,), "moving_mean": (6,), "moving_variance": (6,)},
                          "d": {"kernel": (6, 3), "bias": (3,)}})
    src = model([
        ("x", "InputLayer", {}, [], [None, 6]),
        ("bn", "BatchNormalization", {"epsilon": 1e-3}, ["x"], [None, 6]),
        ("d", "Dense", {"units": 3, "activation": "linear"}, ["bn"], [None, 3]),
    ], ["d"], w)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=5)
    g = emu.graph
    assert g["bn"].op == "batchnorm" and g["bn"].device == "CPU"
    assert g["quant_d"].inputs == ["quant_bn"]  # input quantizer after the float layer
    y = Evaluator(g, "float").run(batch_inputs(g, x))["quant_d"].float()
    b = w["bn"]
    ref = ((x - b["moving_mean"]) / np.sqrt(b["moving_variance"] + 1e-3) * b["gamma"] + b["beta"]) @ w["d"]["kernel"]
    np.testing.assert_allclose(y, ref + w["d"]["bias"], rtol=1e-5, atol=1e-5)


def test_a_float_cpu_layer_read_by_a_float_relu_is_not_called_fused():
    """InceptionResNetV2's shape: CustomScaleLayer (float, on the CPU) then a ReLU the quantizer leaves
    float (it follows no conv or add) and the next conv's input quantizer. Nothing rounds the scale
    layer's output at the ReLU, so neither the window nor the report may say it is fused there."""
    from types import SimpleNamespace

    from qinspect.report.collect import _placement

    rng = np.random.default_rng(4)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "c2": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    src = model([
        ("x", "InputLayer", {}, [], S4),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["x"], S4),
        ("scale", "CustomScaleLayer", {"name": "scale", "scale": 0.17}, ["x", "c"], S4),
        ("relu", "Activation", {"activation": "relu"}, ["scale"], S4),
        ("c2", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["relu"], S4),
    ], ["c2"], w)
    g = graph_from_float(src.graph, src)
    scale, relu = g["scale"], g["relu"]
    assert scale.op == "cpu_layer" and scale.out_slot is None
    assert relu.out_slot is None and relu.pre_slot is None and relu.device == "CPU"
    assert g["quant_relu"].op == "quantize"  # the conv after it reads it through an input quantizer
    assert g.fused_activation(scale) is relu  # the graph's shape alone would suggest a fusion ...
    assert g.rounding_activation(scale) is None  # ... but nothing rounds there
    pytest.importorskip("PySide6")
    from qinspect.gui.emulation import Analysis

    analysis = Analysis(available=True, graph=g)
    pos, why = analysis.activation_position("scale")
    assert pos is None and why == "no quantizer (float on the CPU)"
    # The window's "Runs on": where each layer itself runs. The float ReLU is on the CPU even though the
    # tensor standing for it is the DPU-side input quantizer quant_relu; the model input stays its quantizer.
    placement = analysis.placement()
    assert (placement["x"], placement["c"], placement["scale"], placement["relu"], placement["c2"]) == \
        ("DPU", "DPU", "CPU", "CPU", "DPU")
    assert "input quantizer quant_relu" in analysis.placement_notes()["relu"]
    assert analysis.node("relu").name == "quant_relu"  # its int8 figures are still that tensor's
    assert any(n.startswith("Runs on the CPU in float") for n in analysis.notes("relu"))
    assert any("quant_relu" in n for n in analysis.notes("relu"))
    row = SimpleNamespace(node=scale, name="scale", merged_into=[])
    device, note = _placement(row, g)
    assert device == "CPU" and "CustomScaleLayer" in note and "fused" not in note
    # the report's rows say the same as the window's "Runs on"
    from qinspect.report.layer_map import map_layers

    lm = map_layers(["x", "c", "scale", "relu", "c2"], g)
    rows = {name: SimpleNamespace(node=lm.standing[name], name=name, merged_into=lm.merged_into[name])
            for name in ("x", "relu")}
    device, note = _placement(rows["relu"], g)
    assert device == "CPU" and "left unquantized" in note and "input quantizer quant_relu" in note
    assert _placement(rows["x"], g)[0] == "DPU"  # a model input stands as its quantizer


def test_a_recalibration_on_batches_that_carry_a_captures_stand_ins_accepts_them():
    """diagnose re-calibrates under other quantizer options on the batches it measures on; from a capture
    those carry the recorded output of each node without an implementation (``captured:<node>``), which
    the calibration refused as an unknown input (diagnose and advise exited 2 on such models)."""
    from qinspect.dpu.executor import CAPTURED

    rng = np.random.default_rng(4)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    src = model([("x", "InputLayer", {}, [], S4),
                 ("odd", "TFOpLambda", {"function": "math.cumsum"}, ["x"], S4, {"axis": 1}),
                 ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "relu"}, ["odd"], S4)],
                ["c"], w)
    x = rng.normal(size=(4, 8, 8, 4)).astype(np.float32)
    recorded = np.cumsum(x, axis=1)
    emu = Emulator.from_model(src, {"x": x, CAPTURED + "odd": recorded}, batch_size=2)
    assert emu.graph["odd"].op == "unsupported"
    with pytest.raises(QInspectError, match="no input named captured:ghost"):
        Emulator.from_model(src, {"x": x, CAPTURED + "ghost": recorded}, batch_size=2)


@pytest.mark.parametrize("cls", ["RandomFlip", "RandomRotation", "RandomContrast", "RandomGrayscale"])
def test_augmentation_layers_stay_as_float_identities(cls):
    """The transfer-learning tutorials put augmentation layers in the model; at inference they pass the
    input through (checked in Keras with training=False). The quantizer removes only ``Dropout`` (its
    RemoveDropout pattern matches that class name whole) and its registry has none of these, so they
    stay float in the quantized model and the next quantized layer quantizes its input."""
    from qinspect.io.shapes import infer_output_shape

    rng = np.random.default_rng(8)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    src = model([("x", "InputLayer", {}, [], S4),
                 ("aug", cls, {"factor": 0.1}, ["x"], None),
                 ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["aug"], S4)],
                ["c"], w)
    assert infer_output_shape(cls, {"factor": 0.1}, [S4]) == S4
    g = graph_from_float(src.graph, src)
    assert [n.name for n in g.nodes] == ["x", "quant_x", "aug", "quant_aug", "quant_c"]
    assert g["aug"].op == "identity" and g["aug"].device == "CPU" and g["aug"].inputs == ["quant_x"]
    assert g["quant_c"].inputs == ["quant_aug"]
    assert any(r.kind == "dropout_kept" and r.layers == ["aug"] for r in g.rewrites)
    assert not any(r.kind == "remove_dropout" for r in g.rewrites)


def test_only_a_dropout_whose_input_has_no_other_reader_is_removed():
    rng = np.random.default_rng(9)
    w = rng_weights(rng, {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}, "d": {"kernel": (1, 1, 4, 4), "bias": (4,)},
                          "e": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    conv = {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}
    src = model([("x", "InputLayer", {}, [], S4),
                 ("c", "Conv2D", conv, ["x"], S4),
                 ("drop", "Dropout", {"rate": 0.5}, ["c"], S4),  # c has another reader: kept
                 ("d", "Conv2D", conv, ["drop"], S4),
                 ("sdrop", "SpatialDropout2D", {"rate": 0.5}, ["d"], S4),  # never removed
                 ("e", "Conv2D", conv, ["sdrop"], S4),
                 ("add", "Add", {}, ["c", "e"], S4),
                 ("drop2", "Dropout", {"rate": 0.5}, ["add"], S4)],  # add's only reader: removed
                ["drop2"], w)
    g = graph_from_float(src.graph, src)
    assert g["drop"].device == "CPU" and g["quant_d"].inputs == ["quant_drop"]
    assert g["sdrop"].device == "CPU" and g["quant_e"].inputs == ["quant_sdrop"]
    assert "drop2" not in g and g.outputs == ["quant_add"]
    assert [r.layers for r in g.rewrites if r.kind == "remove_dropout"] == [["drop2"]]


def test_ignore_layers_names_a_nested_layer_as_keras_does():
    """A backbone nested in a transfer-learning model: its layers are "mobilenetv2/block_5_project" in the
    tree, but Keras (and the quantizer's ignore_layers) call it "block_5_project"."""
    from qinspect.analysis.advisor import command
    from qinspect.dpu.dpu_graph import float_layers
    from qinspect.io.graph import Layer, ModelGraph
    from tests.dpu_graph_fixtures import DictSource

    rng = np.random.default_rng(9)
    layers = [Layer(name="x", class_name="InputLayer", config={"name": "x"}, inbound=[], output_shape=S4),
              Layer(name="net", class_name="Functional", config={"name": "net"}, inbound=["x"], is_container=True),
              Layer(name="net/c", class_name="Conv2D", parent="net", inbound=["x"], output_shape=S4,
                    config={"name": "c", "filters": 4, "kernel_size": [1, 1], "activation": "linear"})]
    g = ModelGraph(name="m", layers=layers, inputs=["x"], outputs=["net/c"])
    src = DictSource(g, {"net/c": {"kernel": rng.normal(size=(1, 1, 4, 4)), "bias": np.zeros(4)}})
    dg = graph_from_float(g, src)
    assert dg.keras_names == {"net/c": "c"}
    layers_kept = float_layers(dg, ["quant_net/c"])
    assert layers_kept == ["net/c"]  # the tree's name, for the table
    assert command({}, layers_kept, dg.keras_names).endswith("ignore_layers=['c'])")


def test_an_upsampling_qinspect_cannot_compute_stands_in_from_the_capture():
    """UpSampling2D(interpolation='bicubic') stopped emulate even on a capture (outside audit), while every other
    layer without a numpy implementation runs on the output the capture recorded: it does too now, and says so."""
    from qinspect.dpu.executor import CAPTURED, Evaluator

    s8, s16 = [None, 8, 8, 4], [None, 16, 16, 4]
    src = model([("x", "InputLayer", {}, [], s8),
                 ("up", "UpSampling2D", {"size": [2, 2], "interpolation": "bicubic"}, ["x"], s16)], ["up"])
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype(np.float32)
    recorded = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2) * 0.5  # whatever Keras computed: it is taken as is
    emu = Emulator.from_model(src, {"x": x, CAPTURED + "quant_up": recorded}, batch_size=2)
    node = emu.graph["quant_up"]  # the quantizer wraps an UpSampling2D
    assert node.op == "unsupported" and "UpSampling2D(bicubic)" in node.cpu_reason
    out = Evaluator(emu.graph, "int").run({"x": x, CAPTURED + "quant_up": recorded})["quant_up"].float()
    np.testing.assert_allclose(out, recorded, atol=2.0 ** -emu.graph.pos(node.out_slot))
