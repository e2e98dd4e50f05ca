"""The quantizer's sigmoid/swish replacement measured as a cause of its own, against hand-computed functions."""

from __future__ import annotations

import numpy as np

from qinspect.analysis.function_change import (
    function_change_finding,
    function_only_powers,
    hard_function_graph,
    replaced_nodes,
)
from qinspect.dpu.executor import Evaluator
from qinspect.dpu.options import QuantizerOptions
from qinspect.dpu.rewrites import graph_from_float
from qinspect.report import wording
from tests.dpu_graph_fixtures import model

S = [None, 4, 4, 3]


def _graph(act: str):
    rng = np.random.default_rng(3)
    w = {"c": {"kernel": rng.normal(size=(1, 1, 3, 3)).astype(np.float32), "bias": np.zeros(3, np.float32)}}
    layers = [("x", "InputLayer", {}, [], S),
              ("c", "Conv2D", {"filters": 3, "kernel_size": [1, 1], "activation": "linear"}, ["x"], S),
              ("a", "Activation", {"activation": act}, ["c"], S)]
    src = model(layers, ["a"], w)
    return graph_from_float(src.graph, src, QuantizerOptions(include_cle=False)), w


def _hard_sigmoid(x):
    return np.clip(x + 3.0, 0.0, 6.0) * 2731.0 / 16384.0  # the DPU's hard sigmoid (DPU_NUMERICS.md)


def test_the_hard_swish_in_place_of_swish_is_measured_in_float_without_int8():
    g, w = _graph("swish")
    nodes = replaced_nodes(g)
    assert len(nodes) == 1 and nodes[0].params["float_fn"] == "sigmoid"
    x = np.random.default_rng(1).normal(size=(5, 4, 4, 3)).astype(np.float32) * 3
    conv = x @ w["c"]["kernel"][0, 0]
    true = conv / (1 + np.exp(-conv))  # the float model's swish
    hard = conv * _hard_sigmoid(conv)  # the quantizer's replacement, by hand
    out = g.outputs[0]
    np.testing.assert_allclose(Evaluator(g, "float").run({"x": x})[out].float(), true, rtol=1e-5, atol=1e-6)
    alt = Evaluator(hard_function_graph(g, nodes), "float").run({"x": x})[out].float()
    np.testing.assert_allclose(alt, hard, rtol=1e-5, atol=1e-6)
    assert "float_fn" in nodes[0].params  # the graph itself keeps the true function
    signal, noise = function_only_powers(g, nodes, {"x": x}, batch_size=2)
    np.testing.assert_allclose(signal, (true.reshape(5, -1) ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(noise, ((hard - true).reshape(5, -1) ** 2).sum(1), rtol=1e-4, atol=1e-9)
    # the finding: its share of an int8 output error twice the replacement's is one half
    f = function_change_finding(g, {"x": x}, 2, signal, 2 * noise, lambda n: "a")
    assert f.kind == "function_change" and abs(f.evidence["share"]["value"] - 0.5) < 1e-6
    assert f.evidence["what"]["value"] == "1 swish activation(s)"
    expected = 10 * np.log10(signal.sum() / noise.sum())
    assert abs(f.evidence["function_only_sqnr_db"]["value"] - expected) < 1e-6
    assert "with that change alone and no int8, the output SQNR against the float model is" in \
        wording.finding_sentence(f)
    # the ceiling bounds int8 remedies that keep the replacement: keeping the layers float removes it and passes
    # it (a remedy measured above the "ceiling" read as a contradiction)
    assert "a ceiling no int8 remedy passes while the replacement stays (keeping those layers float removes it" \
        in wording.finding_sentence(f)
    # a replacement that makes under 5% of the output error is no finding
    assert function_change_finding(g, {"x": x}, 2, signal, 30 * noise, lambda n: "a") is None


def test_a_model_with_no_sigmoid_or_swish_has_nothing_replaced():
    g, _ = _graph("relu")
    assert replaced_nodes(g) == []
    g, _ = _graph("sigmoid")
    (node,) = replaced_nodes(g)
    assert node.params["float_fn"] == "sigmoid"
