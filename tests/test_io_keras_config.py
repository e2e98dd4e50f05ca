"""Keras config -> ModelGraph and shape inference, checked against what Keras itself reports."""

from __future__ import annotations

import json
import zipfile

import h5py
import pytest
from io_keras_fixtures import zoo_case

from qinspect.io.keras_config import ConfigError, graph_from_config, snake_case
from qinspect.io.shapes import broadcast, conv_length, deconv_length, infer_output_shape


def _config_of(path) -> dict:
    if str(path).endswith(".keras"):
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


@pytest.mark.tf
@pytest.mark.parametrize("generation", ["keras2", "keras3"])
def test_inferred_shapes_equal_keras_for_every_zoo_layer(generation):
    """Shapes computed from the config alone (no stored hints) equal Keras' layer.output.shape."""
    case = zoo_case(generation)
    graph = graph_from_config(_config_of(case.paths["model"]), use_hints=False)
    checked = 0
    for name, truth in case.truth.items():
        assert graph[name].output_shape == truth["shape"], name
        checked += 1
    assert checked == len(graph.leaves()) == 39


def test_conv_length_matches_hand_worked_values():
    # valid: floor((n - k) / s) + 1 ; same: ceil(n / s)
    assert conv_length(23, 3, 2, "valid") == 11
    assert conv_length(23, 3, 2, "same") == 12
    assert conv_length(19, 5, 1, "valid") == 15
    assert conv_length(10, 3, 1, "valid", dilation=2) == 6  # effective kernel 5
    assert conv_length(None, 3, 1, "same") is None
    # transposed: valid n*s + max(k - s, 0); same n*s
    assert deconv_length(5, 3, 2, "valid", None) == 11
    assert deconv_length(5, 4, 2, "same", None) == 10
    assert deconv_length(5, 3, 2, "same", 1) == 10  # (5-1)*2 + 3 - 2*1 + 1


def test_broadcast_follows_numpy_rules_with_unknown_dims():
    assert broadcast([[None, 8, 8, 4], []]) == [None, 8, 8, 4]
    assert broadcast([[None, 8, 1, 4], [8, 5, 1]]) == [None, 8, 5, 4]
    assert broadcast([[None, 8, 8, 4], [None, 8, 8, 3]]) is None


def test_unknown_class_and_unknown_input_give_no_shape():
    assert infer_output_shape("MyLayer", {}, [[None, 4]]) is None
    assert infer_output_shape("Dense", {"units": 3}, [None]) is None
    assert infer_output_shape("Conv2D", {"filters": 3}, [[None, 8, 8, 4]]) is None  # no kernel_size
    assert infer_output_shape("TFOpLambda", {"function": "math.reduce_sum"}, [[None, 4]]) is None


def test_elementwise_tfoplambda_broadcasts_constant_kwargs():
    shape = infer_output_shape("TFOpLambda", {"function": "math.multiply"}, [[None, 4, 4, 3]], {"y": [[1.0, 2.0, 3.0]]})
    assert shape == [None, 4, 4, 3]
    assert infer_output_shape("TFOpLambda", {"function": "__operators__.add"}, [[None, 2]], {"y": 3.0}) == [
        None,
        2,
    ]


def test_snake_case_matches_keras_auto_names():
    # The names Keras 3 gives layers in model.weights.h5 (seen in real .keras files).
    assert snake_case("Conv2D") == "conv2d"
    assert snake_case("DepthwiseConv2D") == "depthwise_conv2d"
    assert snake_case("BatchNormalization") == "batch_normalization"
    assert snake_case("ReLU") == "re_lu"
    assert snake_case("GlobalAveragePooling2D") == "global_average_pooling2d"


def _k2_layer(cls, name, inbound, **config):
    return {"class_name": cls, "name": name, "config": {"name": name, **config}, "inbound_nodes": inbound}


def test_keras2_shared_layer_is_one_entry_per_call():
    layers = [
        _k2_layer("InputLayer", "a", [], batch_input_shape=[None, 4]),
        _k2_layer("InputLayer", "b", [], batch_input_shape=[None, 4]),
        _k2_layer("Dense", "shared", [[["a", 0, 0, {}]], [["b", 0, 0, {}]]], units=3),
        _k2_layer("Add", "sum", [[["shared", 0, 0, {}], ["shared", 1, 0, {}]]]),
    ]
    cfg = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": layers,
            "input_layers": [["a", 0, 0], ["b", 0, 0]],
            "output_layers": [["sum", 0, 0]],
        },
    }
    graph = graph_from_config(cfg)
    assert [layer.name for layer in graph] == ["a", "b", "shared", "shared@2", "sum"]
    assert graph["shared"].inbound == ["a"]
    assert graph["shared@2"].inbound == ["b"]
    assert (graph["shared"].shares, graph["shared@2"].shares, graph["shared@2"].call) == ("", "shared", 1)
    assert graph["sum"].inbound == ["shared", "shared@2"]
    assert graph["sum"].output_shape == [None, 3]
    assert graph.calls("shared") == ["shared", "shared@2"]
    assert not graph.warnings


def test_keras2_constant_first_argument_and_tensor_kwarg():
    layers = [
        _k2_layer("InputLayer", "x", [], batch_input_shape=[None, 5]),
        _k2_layer("InputLayer", "y", [], batch_input_shape=[None, 5]),
        # tf.maximum(x, y) as Keras 2 stores it: the tensor y passed by keyword
        _k2_layer(
            "TFOpLambda", "tf.math.maximum", [["x", 0, 0, {"y": ["y", 0, 0], "name": None}]], function="math.maximum"
        ),
        # 2.0 - t: the constant is the first argument
        _k2_layer(
            "TFOpLambda",
            "tf.math.subtract",
            [[["_CONSTANT_VALUE", -1, 2.0, {"y": ["tf.math.maximum", 0, 0], "name": None}]]],
            function="math.subtract",
        ),
    ]
    cfg = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": layers,
            "input_layers": [["x", 0, 0], ["y", 0, 0]],
            "output_layers": [["tf.math.subtract", 0, 0]],
        },
    }
    graph = graph_from_config(cfg)
    mx = graph["tf.math.maximum"]
    assert mx.inbound == ["x", "y"]
    assert mx.call_kwargs == {"y": {"__inbound__": 1}}
    sub = graph["tf.math.subtract"]
    assert sub.inbound == ["tf.math.maximum"]
    assert sub.call_kwargs == {"arg0": 2.0, "y": {"__inbound__": 0}}
    assert sub.output_shape == [None, 5]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"class_name": "Dense", "config": {"name": "d", "units": 3}}, "single 'Dense' layer, not a model"),
        ({"config": {}}, "no class_name"),
        ({"class_name": "Functional", "config": {"name": "m", "layers": []}}, "no input_layers"),
        (
            {
                "class_name": "Functional",
                "config": {
                    "name": "m",
                    "layers": [_k2_layer("Dense", "d", [[["ghost", 0, 0, {}]]], units=2)],
                    "input_layers": [["d", 0, 0]],
                    "output_layers": [["d", 0, 0]],
                },
            },
            "cannot connect layers d",
        ),
    ],
)
def test_broken_configs_raise_config_error(config, fragment):
    with pytest.raises(ConfigError, match=fragment):
        graph_from_config(config)


def test_not_json_raises_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        graph_from_config("{not json")


def test_keras20_sequential_config_as_a_bare_list():
    """Keras 2.0 stored a Sequential's config as the list of its layers, the first with the input shape."""
    cfg = {
        "class_name": "Sequential",
        "config": [
            {"class_name": "Conv2D", "config": {"name": "conv", "filters": 4, "kernel_size": [3, 3],
                                                "strides": [2, 2], "padding": "valid",
                                                "batch_input_shape": [None, 9, 9, 1]}},
            {"class_name": "Flatten", "config": {"name": "flat"}},
            {"class_name": "Dense", "config": {"name": "out", "units": 2}},
        ],
    }  # fmt: skip
    graph = graph_from_config(cfg)
    assert [layer.name for layer in graph] == ["conv_input", "conv", "flat", "out"]
    assert graph.inputs == ["conv_input"] and graph.outputs == ["out"]
    assert graph["conv"].inbound == ["conv_input"]
    assert [graph[n].output_shape for n in ("conv", "flat", "out")] == [[None, 4, 4, 4], [None, 64], [None, 2]]


def test_keras3_tensor_records_give_shapes_and_edges():
    def kt(layer, shape):
        return {"class_name": "__keras_tensor__", "config": {"shape": shape, "keras_history": [layer, 0, 0]}}

    layers = [
        {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_shape": [None, 6]},
         "inbound_nodes": []},
        # a custom layer: its output shape is only known from the tensor record its consumer holds
        {"class_name": "Mine>Odd", "name": "odd", "config": {"name": "odd", "trainable": True, "dtype": "float32"},
         "inbound_nodes": [{"args": [kt("x", [None, 6])], "kwargs": {}}]},
        {"class_name": "Concatenate", "name": "cat",
         "config": {"name": "cat", "axis": -1, "trainable": True, "dtype": "float32"},
         "inbound_nodes": [{"args": [[kt("odd", [None, 3]), kt("x", [None, 6])]], "kwargs": {}}]},
    ]  # fmt: skip
    model = {"name": "m", "layers": layers, "input_layers": ["x", 0, 0], "output_layers": ["cat", 0, 0]}
    cfg = {"class_name": "Functional", "config": model}
    graph = graph_from_config(cfg)
    assert graph["odd"].class_name == "Odd" and not graph["odd"].runnable
    assert graph["odd"].output_shape == [None, 3]  # from the record, not inferred
    assert graph["cat"].inbound == ["odd", "x"]
    assert graph["cat"].output_shape == [None, 9]  # inferred from the recorded inputs
    assert graph_from_config(cfg, use_hints=False)["odd"].output_shape is None


def _mutations(config, rng, n):
    """n copies of config, each with one value somewhere replaced by something of the wrong kind."""
    import copy

    junk = [None, 7, -1, "x", [], {}, [None], {"class_name": 3}, 1.5, True, [["a", 0]], ["ghost", 0, 0]]

    def spots(node, path=()):
        yield path
        if isinstance(node, dict):
            for k, v in node.items():
                yield from spots(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from spots(v, (*path, i))

    places = [p for p in spots(config) if p]
    for _ in range(n):
        mutated = copy.deepcopy(config)
        path = places[rng.integers(len(places))]
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = junk[rng.integers(len(junk))]
        yield mutated


@pytest.mark.parametrize("case", ["small", "rich"])
def test_mutated_configs_give_a_config_error_or_a_graph_never_a_crash(refcases, case):
    import numpy as np

    config = _config_of(refcases / case / "float.h5")
    rng = np.random.default_rng(2026)
    outcomes = {"graph": 0, "error": 0}
    for mutated in _mutations(config, rng, 400):
        try:
            graph_from_config(mutated)
            outcomes["graph"] += 1
        except ConfigError:
            outcomes["error"] += 1
    assert outcomes["graph"] and outcomes["error"]  # both kinds of outcome were exercised
