"""Configs the emulator cannot compute are refused before any work, with one line naming the layer.

Each model is a hand-built copy of a small valid one with one value damaged, as a hand-edited or
corrupted file carries them (they divided by zero or failed deep in numpy with a traceback before).
"""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.dpu.layer_map import act_name
from qinspect.dpu.rewrites import graph_from_float
from qinspect.errors import QInspectError
from tests.dpu_graph_fixtures import model, rng_weights

S = [None, 8, 8, 4]


def _build(conv: dict | None = None, pool: dict | None = None, bn: dict | None = None, relu: dict | None = None,
           pool_shape: list | None = None):
    w = rng_weights(np.random.default_rng(0), {
        "c": {"kernel": (3, 3, 4, 4), "bias": (4,)},
        "bn": {"gamma": (4,), "beta": (4,), "moving_mean": (4,), "moving_variance": (4,)}})
    src = model([
        ("x", "InputLayer", {}, [], S),
        ("c", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                         "dilation_rate": [1, 1], "activation": "linear", **(conv or {})}, ["x"], S),
        ("bn", "BatchNormalization", {"epsilon": 1e-3, **(bn or {})}, ["c"], S),
        ("r", "ReLU", {"negative_slope": 0.0, "max_value": None, **(relu or {})}, ["bn"], S),
        ("p", "MaxPooling2D", {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid", **(pool or {})}, ["r"],
         pool_shape or [None, 4, 4, 4]),
    ], ["p"], w)
    return graph_from_float(src.graph, src)


def test_the_undamaged_model_builds():
    assert _build().outputs


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"conv": {"strides": [0, 0]}}, r"layer c: strides \[0, 0\] are not whole numbers of at least 1"),
    ({"conv": {"dilation_rate": 0}}, r"layer c: dilation_rate 0 is not a whole number of at least 1"),
    ({"conv": {"kernel_size": [3, "3"]}}, r"layer c: kernel_size"),
    ({"conv": {"padding": "weird"}}, r"layer c: padding 'weird' is not one of same, valid, causal"),
    ({"pool": {"pool_size": [2, -2]}}, r"layer p: pool_size \[2, -2\]"),
    ({"pool": {"strides": [True, 1]}}, r"layer p: strides"),
    ({"conv": {"filters": 0}}, r"layer c: filters 0 is not a whole number of at least 1"),
    ({"bn": {"epsilon": "abc"}}, r"layer bn: epsilon 'abc' is not a finite number"),
    ({"bn": {"epsilon": -1.0}}, r"layer bn: epsilon -1.0 is negative"),
    ({"relu": {"negative_slope": "x"}}, r"layer r: negative_slope 'x' is not a finite number"),
    ({"relu": {"max_value": float("nan")}}, r"layer r: max_value nan is not a finite number"),
    ({"pool": {"pool_size": [64, 64]}, "pool_shape": [None, 0, 0, 4]},
     r"layer p: its output would have no values .*window is larger than its input"),
])
def test_a_damaged_config_is_one_line_naming_the_layer(kwargs, message):
    with pytest.raises(QInspectError, match="damaged layer config .*" + message) as err:
        _build(**kwargs)
    assert "\n" not in str(err.value)


def test_an_activation_serialized_as_someone_elses_function_is_never_a_known_one():
    keras3 = {"module": "keras.activations", "class_name": "function", "config": "relu", "registered_name": "function"}
    assert act_name(keras3) == "relu"
    assert act_name({"module": "builtins", "class_name": "function", "config": "print"}) == "builtins.print"
    assert act_name({"class_name": "function", "config": 3}) == "function"


def test_calibration_refuses_a_position_no_positions_file_could_hold():
    # inputs of 1e30 calibrated to position -93: `calibrate` wrote it, `--positions` then refused it
    from qinspect.dpu.emulator import Emulator

    w = rng_weights(np.random.default_rng(0), {"c": {"kernel": (1, 1, 4, 4), "bias": (4,)}})
    src = model([("x", "InputLayer", {}, [], S),
                 ("c", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["x"], S)],
                ["c"], w)
    emu = Emulator.from_model(src)
    with pytest.raises(QInspectError, match=r"quant_x:input at position -9\d, beyond -64..64.*calibration inputs"):
        emu.calibrate(np.full((2, 8, 8, 4), 1e30, np.float32), 2)


def test_an_input_shape_with_a_negative_axis_is_the_models_fault_not_the_inputs():
    from qinspect.io.config_check import layer_config_problem
    from qinspect.io.graph import Layer

    bad = Layer(name="x", class_name="InputLayer", config={"batch_input_shape": [None, -32, 32, 3]})
    assert "input shape [None, -32, 32, 3] has an axis" in layer_config_problem(bad)
    good = Layer(name="x", class_name="InputLayer", config={"batch_shape": [None, None, 32, 3]})
    assert layer_config_problem(good) is None
