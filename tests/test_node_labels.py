"""Names a user finds in the tree: a plain conv's split-off ReLU row is '(conv)', not '(pointwise)'; a
Dense(activation='softmax') on the CPU is 'softmax split from a Dense', not an Activation layer."""

from __future__ import annotations

import numpy as np

from qinspect.analysis.diagnose import _split_class
from qinspect.analysis.sensitivity import row_names
from qinspect.dpu.rewrites import graph_from_float
from tests.dpu_graph_fixtures import model
from tests.test_keep_float_layers import _separable


def test_conv_and_pointwise_rows():
    graph, _ = _separable()  # its pointwise half carries the folded BatchNorm's name: no clash to resolve
    assert row_names(graph.nodes)["quant_sep_depthwise_conv"] == "sep"
    rng = np.random.default_rng(0)
    sep = model([("x", "InputLayer", {}, [], [None, 4, 4, 3]),
                 ("s", "SeparableConv2D", {"filters": 2, "kernel_size": [3, 3], "padding": "same",
                                           "activation": "linear", "depth_multiplier": 1}, ["x"], [None, 4, 4, 2])],
                ["s"], {"s": {"depthwise_kernel": rng.normal(size=(3, 3, 3, 1)).astype("f4"),
                              "pointwise_kernel": rng.normal(size=(1, 1, 3, 2)).astype("f4"),
                              "bias": np.zeros(2, "f4")}})
    labels = row_names(graph_from_float(sep.graph, sep).nodes)
    assert sorted(v for v in labels.values() if v.startswith("s ")) == ["s (depthwise)", "s (pointwise)"]
    src = model([("x", "InputLayer", {}, [], [None, 4, 4, 3]),
                 ("c", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "relu"}, ["x"], [None, 4, 4, 2]),
                 ("gap", "GlobalAveragePooling2D", {}, ["c"], [None, 2]),
                 ("probs", "Dense", {"units": 3, "activation": "softmax"}, ["gap"], [None, 3])], ["probs"],
                {"c": {"kernel": rng.normal(size=(1, 1, 3, 2)).astype("f4"), "bias": np.zeros(2, "f4")},
                 "probs": {"kernel": rng.normal(size=(2, 3)).astype("f4"), "bias": np.zeros(3, "f4")}})
    g = graph_from_float(src.graph, src)
    labels = row_names(g.nodes)
    assert sorted(v for v in labels.values() if v.startswith("c ")) == ["c (conv)", "c (relu)"]
    softmax = next(n for n in g.nodes if n.device == "CPU" and n.origin == ["probs"])
    assert _split_class(g, softmax) == "softmax split from a Dense"
    # and the diagnosis' CPU finding says so (the rewrite marks the split node an Activation, which won)
    from qinspect.analysis.diagnose import _cpu_findings

    (cpu,) = _cpu_findings(g, {})
    assert cpu.evidence["class"]["value"] == "softmax split from a Dense"


def test_cpu_reasons_name_the_rule_not_a_bare_assertion():
    """'batchnorm is not quantized by the Vitis pof2s quantizer' was false as stated (the registry quantizes
    BatchNormalization; a standalone one becomes a depthwise conv), and so were the bare reasons for an
    unfused ReLU and a bilinear UpSampling2D."""
    rng = np.random.default_rng(0)
    src = model([("x", "InputLayer", {}, [], [None, 4, 4, 3]),
                 ("r", "ReLU", {}, ["x"], [None, 4, 4, 3]),
                 ("up", "UpSampling2D", {"size": [2, 2], "interpolation": "bilinear"}, ["r"], [None, 8, 8, 3]),
                 ("c", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["up"],
                  [None, 8, 8, 2]),
                 ("seq", "Reshape", {"target_shape": [64, 2]}, ["c"], [None, 64, 2]),
                 ("bn", "BatchNormalization", {"axis": -1, "epsilon": 1e-3}, ["seq"], [None, 64, 2])], ["bn"],
                {"c": {"kernel": rng.normal(size=(1, 1, 3, 2)).astype("f4"), "bias": np.zeros(2, "f4")},
                 "bn": {"gamma": np.ones(2, "f4"), "beta": np.zeros(2, "f4"), "moving_mean": np.zeros(2, "f4"),
                        "moving_variance": np.ones(2, "f4")}})
    g = graph_from_float(src.graph, src)
    reason = {n.origin[0]: n.cpu_reason for n in g.nodes if n.device == "CPU" and n.origin}
    assert "only where it fuses it into the layer before it" in reason["r"]
    assert "the DPU's own resize kernel is not emulated" in reason["up"]
    assert "1x1 depthwise conv" in reason["bn"] and "rank 3" in reason["bn"]


def test_a_quantized_h5_conv_stands_for_the_batchnorm_folded_into_it():
    """A Vitis quantized.h5 keeps no BatchNorm: its conv's output is the BatchNorm's tensor. Read as the
    conv's, the report and the window set the conv's captured (pre-BatchNorm) values against the folded
    output's position: 32 of 100 mbv3small layers' clipped shares differed from the emulator's."""
    from qinspect.dpu.emulator import Emulator
    from qinspect.io.model_file import open_model
    from qinspect.report.layer_map import map_layers
    from tests.dpu_graph_fixtures import refcase

    root = refcase("small")
    emu = Emulator.from_quantized(root / "quantized.h5")
    assert emu.graph["quant_conv1"].origin == ["conv1"]
    source = open_model(str(root / "float.h5"))
    emu.use_float_reference(source)
    assert emu.graph["quant_conv1"].origin == ["conv1", "bn1"]
    lmap = map_layers([layer.name for layer in source.graph.leaves()], emu.graph)
    assert lmap.standing["bn1"].name == "quant_conv1" and "conv1" not in lmap.standing


def test_quantizer_named_nodes_of_a_quantized_h5_stand_for_their_float_layers():
    """After a quantized.h5 import the window showed a SeparableConv2D and the TF operations of a hard
    sigmoid as 'not part of the int8 model': the quantizer names their nodes from no float layer
    (sep4_depthwise_conv, vitis_sigmoid), while the dump matched those very tensors."""
    from qinspect.dpu.emulator import Emulator
    from qinspect.io.model_file import open_model
    from tests.dpu_graph_fixtures import refcase

    root = refcase("rich")
    emu = Emulator.from_quantized(root / "quantized.h5")
    with open_model(str(root / "float.h5")) as source:
        own = Emulator.from_model(source).graph
        emu.use_float_reference(source)
    graph = emu.graph
    for name in ("quant_sep4_depthwise_conv", "quant_sep4_pointwise_conv", "quant_vitis_sigmoid"):
        assert graph[name].origin == own[name].origin, name
    assert graph["quant_sep4_depthwise_conv"].origin[0] == "sep4"
    assert "hsig_relu6" in graph["quant_vitis_sigmoid"].origin
