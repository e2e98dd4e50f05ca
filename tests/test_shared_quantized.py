"""A Vitis quantized.h5 whose layers are called more than once: every call its own node.

No shared-layer run of the real quantizer is available, so the file is made from the ``small``
reference case's own layers: its input quantizer and its max-pool wrapper (configs and position
variables exactly as the quantizer wrote them) are each called on two inputs, and a float Subtract
reads both pool calls. The int8 result of each call is worked out by hand below.
"""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np

from qinspect.dpu.emulator import Emulator
from qinspect.dpu.executor import Evaluator
from qinspect.io.vitis import expected_dump_files, load_quantized_model


def _shared_quantized(refcases, path):
    src_path = refcases / "small" / "quantized.h5"
    with h5py.File(src_path, "r") as src, h5py.File(path, "w") as f:
        cfg = json.loads(src.attrs["model_config"])
        by = {layer["name"]: layer for layer in cfg["config"]["layers"]}

        def input_layer(name):
            layer = copy.deepcopy(by["input"])
            layer["name"] = layer["config"]["name"] = name
            return layer

        quant_in, pool = copy.deepcopy(by["quant_input"]), copy.deepcopy(by["quant_pool1"])
        quant_in["inbound_nodes"] = [[["a", 0, 0, {}]], [["b", 0, 0, {}]]]
        pool["inbound_nodes"] = [[["quant_input", 0, 0, {}]], [["quant_input", 1, 0, {}]]]
        sub = {"class_name": "Subtract", "name": "sub", "config": {"name": "sub", "dtype": "float32"},
               "inbound_nodes": [[["quant_pool1", 0, 0, {}], ["quant_pool1", 1, 0, {}]]]}
        cfg["config"]["layers"] = [input_layer("a"), input_layer("b"), quant_in, pool, sub]
        cfg["config"]["input_layers"] = [["a", 0, 0], ["b", 0, 0]]
        cfg["config"]["output_layers"] = [["sub", 0, 0]]
        for key, value in src.attrs.items():
            f.attrs[key] = value
        f.attrs["model_config"] = json.dumps(cfg)
        weights = f.create_group("model_weights")
        for name in ("quant_input", "quant_pool1"):
            src.copy(src["model_weights"][name], weights, name)
        weights.attrs["layer_names"] = np.array([b"quant_input", b"quant_pool1"])


def test_each_call_of_a_shared_quantized_layer_is_its_own_node(refcases, tmp_path):
    path = tmp_path / "quantized.h5"
    _shared_quantized(refcases, path)
    model = load_quantized_model(path)
    assert [layer.name for layer in model.layers] == ["a", "b", "quant_input", "quant_input@2", "quant_pool1",
                                                      "quant_pool1@2", "sub"]
    assert model["quant_pool1@2"].inbound == ["quant_input@2"] and model["sub"].inbound == ["quant_pool1",
                                                                                             "quant_pool1@2"]
    # one set of positions per layer, as in positions.json
    assert set(model.positions()) == {"quant_input", "pool1"}
    # dump_model writes one output per layer: a later call is not expected in a dump folder
    assert not [e for e in expected_dump_files(model)[0] if "@" in e.layer]

    x = np.load(refcases / "small" / "calib.npy")
    inputs = {"a": x[:4], "b": x[4:8]}
    emu = Emulator.from_quantized(path)
    values = Evaluator(emu.graph, "int").run(inputs)
    p_in = emu.graph.positions["quant_input"]["input"]
    p_pool = emu.graph.positions["pool1"]["output_0"]
    assert p_in == p_pool  # the hand-worked pooling below needs no requantization
    for name, call in (("a", "quant_pool1"), ("b", "quant_pool1@2")):
        codes = np.clip(np.floor(inputs[name].astype(np.float64) * 2.0**p_in + 0.5), -128, 127)
        pooled = codes.reshape(4, 16, 2, 16, 2, 3).max(axis=(2, 4))
        np.testing.assert_array_equal(values[call].codes(), pooled)
    diff = values["sub"].float()
    assert np.max(np.abs(diff)) > 0.1  # the two calls are not computed from the same input
    np.testing.assert_array_equal(diff, values["quant_pool1"].float() - values["quant_pool1@2"].float())
