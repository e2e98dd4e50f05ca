"""The DPU equivalent named for a CPU layer: by its kind and its place in the graph, and only where one is known."""

from __future__ import annotations

import numpy as np

from qinspect.analysis import findings as fnd
from qinspect.analysis.cpu_alternatives import dpu_alternative
from qinspect.dpu.dpu_graph import DpuGraph, Node


def _cpu(node: str, op: str, inputs: list[str], **params) -> Node:
    return Node(node, op, inputs, params=params, device="CPU", cpu_reason="r")


def _graph(*nodes: Node) -> DpuGraph:
    first = [Node("x", "input"), Node("q", "quantize", ["x"], out_slot=("q", "input"))]
    return DpuGraph([*first, *nodes], ["x"], [nodes[-1].name])


def test_layer_scale_folds_only_into_a_single_reader_conv_or_dense():
    conv = Node("c", "conv2d", ["q"], params={"act": "linear"})
    g = _graph(conv, _cpu("ls", "cpu_layer", ["c"], keras_class="LayerScale"))
    assert "into the kernel and bias of the Conv2D" in dpu_alternative(g, g["ls"])
    # the conv's output read elsewhere too: scaling its kernel would change that reader's input
    g = _graph(conv, _cpu("ls", "cpu_layer", ["c"], keras_class="LayerScale"),
               _cpu("a", "add", ["ls", "c"], keras_class="KerasOp"))
    assert dpu_alternative(g, g["ls"]) is None
    # after something that is not a conv or dense (a GELU): nothing to fold into
    g = _graph(conv, _cpu("g", "activation", ["c"], name="gelu", keras_class="Activation"),
               _cpu("ls", "cpu_layer", ["g"], keras_class="LayerScale"))
    assert dpu_alternative(g, g["ls"]) is None


def test_preprocessing_layers_move_out_only_when_they_read_the_model_input():
    g = _graph(_cpu("r", "scalar", ["q"], keras_class="Rescaling", fn="affine"),
               _cpu("n", "cpu_layer", ["r"], keras_class="Normalization"),
               Node("c", "conv2d", ["n"], params={"act": "linear"}),
               _cpu("r2", "scalar", ["c"], keras_class="Rescaling", fn="affine"))
    assert "in preprocessing" in dpu_alternative(g, g["r"])
    assert "in preprocessing" in dpu_alternative(g, g["n"])  # through the CPU Rescaling before it
    assert dpu_alternative(g, g["r2"]) is None  # reads a conv: there is no "before the model" for it


def test_activations_and_operations_by_kind():
    conv = Node("c", "conv2d", ["q"], params={"act": "linear"})
    g = _graph(conv, _cpu("g", "activation", ["c"], name="gelu", keras_class="Activation"),
               _cpu("hs", "activation", ["g"], name="hard_silu", keras_class="Activation"),
               _cpu("op", "activation", ["hs"], name="relu", keras_class="KerasOp"),
               _cpu("lin", "activation", ["op"], name="linear", keras_class="Activation"),
               _cpu("r4", "relu", ["lin"], max_value=4.0), _cpu("rl", "relu", ["r4"]),
               _cpu("leak", "relu", ["rl"], negative_slope=0.3),
               _cpu("add", "add", ["leak", "c"], keras_class="TFOpLambda"),
               _cpu("ln", "cpu_layer", ["add"], keras_class="LayerNormalization"),
               _cpu("cu", "cpu_layer", ["ln"], keras_class="SomethingCustom"))
    alt = {n.name: dpu_alternative(g, n) for n in g.nodes if n.device == "CPU"}
    assert alt["g"].startswith("Activation('swish')") and "fine-tune" in alt["g"]
    assert "hard swish" in alt["hs"] and "2731/16384" in alt["hs"]
    assert "as a Keras layer" in alt["op"] and "the same function" in alt["op"]
    assert alt["r4"].startswith("ReLU6") and alt["leak"].startswith("LeakyReLU(alpha=0.1)")
    assert alt["add"].startswith("keras.layers.Add()") and "the same function" in alt["add"]
    assert alt["ln"].startswith("BatchNormalization") and "retrain" in alt["ln"]
    # no equivalent is invented: a linear activation (it computes nothing), a plain ReLU kept on the CPU for
    # its place in the graph, a layer class the rules do not know
    assert alt["lin"] is None and alt["rl"] is None and alt["cu"] is None


def test_the_advice_names_the_equivalent_and_a_group_shares_it():
    alt = "BatchNormalization, which the quantizer folds; a different function: retrain"
    one = fnd.cpu_fallback("ln0", "LayerNormalization", "not in the registry", 3, True, alternative=alt)
    assert one.advice == f"ln0 runs on the CPU (not in the registry). Instead: {alt}. Or accept the CPU round trip."
    assert one.evidence["alternative"]["value"] == alt
    edge = fnd.cpu_fallback("n", "Normalization", "not in the registry", 1, False, alternative="x")
    assert edge.advice.endswith("usually acceptable. Instead: x.")
    members = [fnd.cpu_fallback(f"ln{i}", "LayerNormalization", "not in the registry", 3, True,
                              noise_frac=x, alternative=alt) for i, x in enumerate((0.01, 0.1))]
    other = fnd.cpu_fallback("ln9", "LayerNormalization", "not in the registry", 3, True, noise_frac=0.2)
    grouped, alone = fnd.group_cpu_fallbacks([*members, other])
    assert grouped.affects == ["ln1"] and alone.layer == "ln9"  # another (or no) equivalent: not one group
    assert grouped.advice == (f"These 2 LayerNormalization layers split the model. Instead: {alt}. Or accept the "
                              "CPU round trips.")
    assert grouped.severity_db == np.float64(-10 * np.log10(1 - 0.1))
    assert "DPU-supported equivalent" in alone.advice


def test_inception_resnets_scale_layer_folds_into_the_conv_of_its_second_input():
    conv = Node("c", "conv2d", ["q"], params={"act": "linear"})
    g = _graph(conv, _cpu("s", "cpu_layer", ["q", "c"], keras_class="CustomScaleLayer"))
    assert dpu_alternative(g, g["s"]).startswith("keras.layers.Add(), with the constant scale folded into the "
                                                 "kernel and bias of the Conv2D")
    g = _graph(conv, _cpu("s", "cpu_layer", ["c", "q"], keras_class="CustomScaleLayer"))  # the scaled one: q
    assert dpu_alternative(g, g["s"]) is None
