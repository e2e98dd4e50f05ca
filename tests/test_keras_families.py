"""Stock Keras families and a hand-built sequence model, run as a new user would (issue 8, items 1 and 3).

Each is built offline (weights=None, smallest input, 4 samples): ``info`` gives Keras's parameter
count, ``capture`` runs, ``emulate`` gives a finite output SQNR, layers the DPU cannot run land on the
CPU with their reason, and the emulator's float reference equals Keras's own prediction (which
checks every float CPU layer's numpy implementation along the whole graph).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import run_cli
from keras_family_fixtures import (
    Family,
    attention_model_h5,
    convnext_h5,
    densenet_small_h5,
    efficientnet_h5,
    fresh_keras_names,  # noqa: F401 - autouse
    inception_resnet_h5,
    inception_resnet_keras3,
    inception_resnet_keras3_h5,
    mobilenet_v3_h5,
    mobilenet_v3_keras3,
    sequence_model_h5,
    sequence_model_keras3,
)

from qinspect.dpu.emulator import Emulator
from qinspect.io.model_file import open_model

pytestmark = pytest.mark.tf


def _emulate_json(path, *extra: str) -> dict:
    result = run_cli("emulate", str(path), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _output_row(report: dict, output_layer: str) -> dict:
    rows = [row for row in report["layers"] if output_layer in row["origin"] or row["name"] == output_layer]
    assert rows, output_layer
    return rows[-1]


def _cpu_reasons(report: dict) -> dict[str, str]:
    return {row["name"]: row["cpu_reason"] for row in report["layers"] if row["device"] == "CPU"}


def _float_reference_equals_keras(fam: Family, atol: float) -> None:
    """The emulator's float evaluator (numpy, CPU layers included) against Keras's prediction."""
    x = np.load(fam.inputs)
    with open_model(fam.path) as source:
        out = source.graph.outputs[0]
        emu = Emulator.from_model(source, calib_inputs=x, batch_size=len(x))
    node = emu.node_for(out)
    res = emu.run(x, layers=[node.name], keep_float=True, isolated=False)[node.name]
    np.testing.assert_allclose(res.float_ref, fam.prediction, rtol=1e-3, atol=atol)


def _capture_and_emulate(fam: Family, tmp_path, *capture_args: str) -> dict:
    cap = tmp_path / "cap.h5"
    result = run_cli("capture", str(fam.path), "--inputs", str(fam.inputs), "-o", str(cap), "-q", *capture_args)
    assert result.returncode == 0, result.stderr
    report = _emulate_json(cap)
    with open_model(fam.path) as source:
        assert source.graph.total_params == fam.params
        out = source.graph.outputs[0]
    sqnr = _output_row(report, out)["accumulated"]["sqnr_db"]
    assert isinstance(sqnr, float) and math.isfinite(sqnr), sqnr
    return report


@pytest.mark.slow
@pytest.mark.parametrize(("build", "cpu_layer"), [(mobilenet_v3_h5, "rescaling"), (densenet_small_h5, None)],
                         ids=["MobileNetV3Small", "DenseNet"])
def test_slash_named_families_run_end_to_end(tmp_path, build, cpu_layer):
    """The families whose layer names hold "/": capture, emulate, and the float reference is Keras's."""
    fam = build()
    report = _capture_and_emulate(fam, tmp_path)
    assert cpu_layer is None or cpu_layer in _cpu_reasons(report)
    _float_reference_equals_keras(fam, atol=1e-4)


@pytest.mark.slow
def test_efficientnet_normalization_runs_on_the_cpu(tmp_path):
    fam = efficientnet_h5()
    report = _capture_and_emulate(fam, tmp_path)
    reasons = _cpu_reasons(report)
    assert "Normalization is not in the Vitis pof2s quantizer's layer registry" in reasons["normalization"]
    # the first conv reads the float Normalization through an input quantizer
    assert any(row["name"] == "quant_normalization" and row["op"] == "quantize" for row in report["layers"])
    _float_reference_equals_keras(fam, atol=1e-4)


@pytest.mark.slow
def test_convnext_layer_norm_gelu_layer_scale_run_on_the_cpu(tmp_path):
    fam = convnext_h5()
    report = _capture_and_emulate(fam, tmp_path)
    reasons = _cpu_reasons(report)
    block = "convnext_mini_stage_0_block_0_"
    assert "LayerNormalization" in reasons[block + "layernorm"]
    assert "LayerScale" in reasons[block + "layer_scale"]
    assert "gelu" in reasons[f"quant_{block}gelu"]
    dw = next(row for row in report["layers"] if block + "depthwise_conv" in row["origin"])
    assert dw["op"] == "depthwise_conv2d" and dw["device"] == "DPU"  # groups == channels: a depthwise conv
    _float_reference_equals_keras(fam, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("build", [inception_resnet_h5, inception_resnet_keras3, inception_resnet_keras3_h5],
                         ids=["tf_keras", "keras3", "keras3_h5"])
def test_inception_resnet_custom_scale_layer_runs_on_the_cpu(tmp_path, build):
    """InceptionResNetV2's CustomScaleLayer (x[0] + x[1] * scale, a class of keras.applications) was
    refused as custom code: it is rebuilt from its class name and config, and runs float on the CPU."""
    if build is not inception_resnet_h5:
        pytest.importorskip("keras", minversion="3")
    fam = build()
    report = _capture_and_emulate(fam, tmp_path)
    reasons = _cpu_reasons(report)
    scaled = sorted(name for name, why in reasons.items() if "CustomScaleLayer" in why)
    assert scaled == ["custom_scale_layer", "custom_scale_layer_1", "custom_scale_layer_2"], reasons
    assert all("assumed from its name and config" in reasons[name] for name in scaled)
    # the relu after it is not fused into a quantized producer, so it stays float; it feeds the next
    # block's branches and its scale layer, and vai_q inserts an input quantizer only after a float layer
    # with one reader: the branch convs compute on its float output
    assert any(row["name"] == "block35_1_ac" and row["device"] == "CPU" for row in report["layers"])
    assert not any(row["name"] == "quant_block35_1_ac" for row in report["layers"])
    _float_reference_equals_keras(fam, atol=1e-4)


@pytest.mark.slow
def test_keras3_mobilenet_v3_captures_and_emulates(tmp_path):
    pytest.importorskip("keras", minversion="3")
    fam = mobilenet_v3_keras3()
    report = _capture_and_emulate(fam, tmp_path)
    reasons = _cpu_reasons(report)
    assert any("hard_silu" in why for why in reasons.values())
    # relu6(x + 3) * (1/6) written with Keras 3 ops is the quantizer's hard-sigmoid pattern, as in tf_keras
    assert sum(row["op"] == "hard_sigmoid" and row["device"] == "DPU" for row in report["layers"]) == 9
    _float_reference_equals_keras(fam, atol=1e-4)


@pytest.mark.slow
def test_sequence_model_every_command(tmp_path):
    """Conv1D, abs, Subtract, LSTM, GRU, LayerNormalization, GELU: nothing refused, each on the CPU with
    its reason, and info / capture / emulate / diagnose / report all succeed."""
    fam = sequence_model_h5()
    info = run_cli("info", str(fam.path))
    assert info.returncode == 0 and f"{fam.params:,} parameters" in info.stdout
    report = _capture_and_emulate(fam, tmp_path)
    reasons = _cpu_reasons(report)
    for layer in ("conv1d", "lstm", "gru", "layer_norm"):
        assert "not in the Vitis pof2s quantizer's layer registry" in reasons[layer], layer
    assert "abs" in reasons["tf.math.abs"] and "subtract" in reasons["subtract_layer"]
    assert "gelu" in reasons["quant_dense_gelu_gelu"]
    # a quantized Dense reads the float LayerNormalization through an input quantizer
    assert any(row["name"] == "quant_layer_norm" and row["op"] == "quantize" for row in report["layers"])
    _float_reference_equals_keras(fam, atol=1e-5)
    cap = tmp_path / "cap.h5"
    diag = run_cli("diagnose", str(cap), "--json")
    assert diag.returncode == 0, diag.stderr
    rep = run_cli("report", str(cap), "-o", str(tmp_path / "report"))
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.slow
def test_layer_without_implementation_uses_the_captured_output(tmp_path):
    """MultiHeadAttention has no numpy implementation: from a capture, its recorded float output stands
    in (said beside it), so emulate, diagnose and report still run; without a capture, one clear line."""
    fam = attention_model_h5()
    report = _capture_and_emulate(fam, tmp_path)
    reason = _cpu_reasons(report)["mha"]
    assert "recorded float output stands in" in reason and "does not reach the layers after it" in reason
    cap = tmp_path / "cap.h5"
    with open_model(cap) as source:
        emu = Emulator.from_model(source)
        node = emu.node_for("logits")
        res = emu.run(source, layers=[node.name], keep_float=True, isolated=False)[node.name]
    np.testing.assert_allclose(res.float_ref, fam.prediction, rtol=1e-4, atol=1e-5)
    assert run_cli("diagnose", str(cap)).returncode == 0
    direct = run_cli("emulate", str(fam.path), "--inputs", str(fam.inputs))
    assert direct.returncode == 2
    assert "MultiHeadAttention has no float or integer implementation" in direct.stderr
    assert len(direct.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_keras3_sequence_model_reads_cell_weights_and_matches_keras():
    pytest.importorskip("keras", minversion="3")
    fam = sequence_model_keras3()
    with open_model(fam.path) as source:
        graph = source.graph
        assert graph.total_params == fam.params
        assert list(source.weights("lstm")) == ["kernel", "recurrent_kernel", "bias"]
        np.testing.assert_array_equal(source.weights("gru")["recurrent_kernel"], fam.weights["gru"][1])
    _float_reference_equals_keras(fam, atol=1e-5)


def test_tf_keras_hard_sigmoid_float_reference_is_tf_keras_function(tmp_path):
    """tf_keras's hard_sigmoid is clip(0.2 x + 0.5) (Keras 3's is relu6(x + 3) / 6): the float reference
    of a tf_keras model must be its own function, in an Activation layer and inside a Dense."""
    import tf_keras as K  # noqa: N812

    K.utils.set_random_seed(3)
    inp = K.Input((6,))
    h = K.layers.Dense(8, activation="hard_sigmoid", name="d1")(inp)
    out = K.layers.Activation("hard_sigmoid", name="act")(K.layers.Dense(4, name="d2")(h))
    model = K.Model(inp, out)
    model.save(tmp_path / "m.h5")
    x = np.random.default_rng(0).normal(0, 3, (16, 6)).astype(np.float32)
    emu = Emulator.from_model(str(tmp_path / "m.h5"), calib_inputs=x, batch_size=16)
    node = emu.node_for("act")
    res = emu.run(x, layers=[node.name], keep_float=True, isolated=False)[node.name]
    np.testing.assert_allclose(res.float_ref, model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_savedmodel_recurrent_weights_come_from_the_cell(tmp_path):
    """A SavedModel stores an LSTM's / GRU's variables under its cell object: read them there."""
    import tf_keras as K  # noqa: N812

    from qinspect.capture.savedmodel import open_savedmodel

    inp = K.Input((12, 4))
    out = K.layers.Dense(3, name="dense")(K.layers.GRU(5, name="gru")(K.layers.LSTM(6, return_sequences=True,
                                                                                   name="lstm")(inp)))
    model = K.Model(inp, out)
    model.save(tmp_path / "sm", save_format="tf")
    with open_savedmodel(tmp_path / "sm") as source:
        assert source.graph.total_params == model.count_params()
        for name in ("lstm", "gru"):
            got = source.weights(name)
            assert list(got) == ["kernel", "recurrent_kernel", "bias"]
            for g, w in zip(got.values(), model.get_layer(name).get_weights(), strict=True):
                np.testing.assert_array_equal(g, w)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["EfficientNetB0", "ConvNeXtTiny"])
def test_full_size_families_read_and_place_every_layer(tmp_path, name):
    """The stock models themselves (the end-to-end runs above use narrow copies of the same blocks):
    Keras's parameter count, and a DPU graph where every layer the DPU cannot run is on the CPU with a
    float implementation and its reason."""
    import tf_keras as K  # noqa: N812

    from qinspect.dpu.rewrites import graph_from_float

    model = getattr(K.applications, name)(input_shape=(32, 32, 3), weights=None, classes=5)
    model.save(tmp_path / "m.h5")
    with open_model(tmp_path / "m.h5") as source:
        assert source.graph.total_params == model.count_params()
        graph = graph_from_float(source.graph, source)
    assert not [n.name for n in graph.nodes if n.op == "unsupported"]
    cpu = {n.params.get("layer") for n in graph.nodes if n.op == "cpu_layer"}
    want = {"Normalization"} if name == "EfficientNetB0" else {"Normalization", "LayerNormalization", "LayerScale"}
    assert cpu == want
    assert all(n.cpu_reason for n in graph.nodes if n.device == "CPU")


@pytest.mark.parametrize("generation", ["tf_keras", "keras"])
def test_recurrent_and_wrapper_shapes_inferred_like_keras(tmp_path, generation):
    """LSTM / GRU / SimpleRNN (sequences or last step), Bidirectional and TimeDistributed: shapes from
    the config alone (no stored hints) equal Keras's."""
    import importlib
    import json
    import zipfile

    from qinspect.io.keras_config import graph_from_config

    k = importlib.import_module(generation)
    L = k.layers  # noqa: N806
    inp = L.Input((7, 3), name="x")
    a = L.LSTM(5, return_sequences=True, name="lstm")(inp)
    b = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi")(a)
    c = L.TimeDistributed(L.Dense(6), name="td")(b)
    d = L.Bidirectional(L.SimpleRNN(2), merge_mode="sum", name="bi_sum")(c)
    model = k.Model(inp, d)
    if generation == "keras":
        model.save(tmp_path / "m.keras")
        config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    else:
        config = json.loads(model.to_json())
    graph = graph_from_config(config, use_hints=False)
    for name in ("lstm", "bi", "td", "bi_sum"):
        assert graph[name].output_shape == list(model.get_layer(name).output.shape), name


def test_keras3_h5_keras_cannot_rebuild_says_to_save_as_keras(tmp_path):
    """Keras 3 cannot reload some models from its own legacy HDF5 (an operation with a constant, as in
    MobileNetV3's x + 3.0): capture says so in one line and how to get a file it can load."""
    keras = pytest.importorskip("keras", minversion="3")
    inp = keras.layers.Input((4,), name="x")
    y = keras.layers.Dense(3, name="d")(inp) + 3.0
    keras.Model(inp, keras.layers.Dense(2, name="out")(y)).save(tmp_path / "m.h5")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    out = tmp_path / "cap.h5"
    result = run_cli("capture", str(tmp_path / "m.h5"), "--inputs", str(tmp_path / "x.npy"), "-o", str(out))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "m.h5" in line and "Keras 3 cannot rebuild this model" in line and "model.save('model.keras')" in line
    assert not out.exists()
