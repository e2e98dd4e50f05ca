"""The float CPU layers (qinspect.dpu.cpu_layers) against TensorFlow's own output on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
from keras_family_fixtures import fresh_keras_names  # noqa: F401 - autouse: Keras names reset around each test

from qinspect.dpu import cpu_layers, float_ops

pytestmark = pytest.mark.tf

RNG = np.random.default_rng(11)


def _run_keras(layer, x):
    """Keras' output and the layer's weights by short name (after building on ``x``)."""
    y = np.asarray(layer(x))
    names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
    return y, dict(zip(names, (np.asarray(w) for w in layer.get_weights()), strict=True))


def _randomize(layer):
    layer.set_weights([RNG.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])


@pytest.fixture(scope="module")
def K():  # noqa: N802 - the usual alias
    import tf_keras

    return tf_keras


@pytest.mark.parametrize("kwargs", [
    {"padding": "valid"},
    {"padding": "same", "strides": 2, "activation": "relu"},
    {"padding": "causal", "dilation_rate": 2, "activation": "tanh"},
])
def test_conv1d_equals_tensorflow(K, kwargs):
    x = RNG.normal(size=(3, 17, 5)).astype(np.float32)
    layer = K.layers.Conv1D(7, 3, **kwargs)
    layer(x)
    _randomize(layer)
    want, w = _run_keras(layer, x)
    got = cpu_layers.conv1d(x, w, layer.get_config())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("cls", "kwargs"), [
    ("MaxPooling1D", {"pool_size": 3}),
    ("MaxPooling1D", {"pool_size": 3, "strides": 2, "padding": "same"}),
    ("AveragePooling1D", {"pool_size": 2}),
    ("AveragePooling1D", {"pool_size": 4, "strides": 3, "padding": "same"}),  # border windows: fewer taps
    ("GlobalMaxPooling1D", {}),
    ("GlobalAveragePooling1D", {"keepdims": True}),
    ("UpSampling1D", {"size": 3}),
    ("ZeroPadding1D", {"padding": (2, 1)}),
    ("Cropping1D", {"cropping": (1, 3)}),
])
def test_1d_layers_equal_tensorflow(K, cls, kwargs):
    x = RNG.normal(size=(3, 17, 5)).astype(np.float32)
    layer = getattr(K.layers, cls)(**kwargs)
    want = np.asarray(layer(x))
    cfg = layer.get_config()
    assert cpu_layers.supports(cls, cfg)
    got = cpu_layers.run({"layer": cls, "config": cfg}, [x], {})
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("size", "out"), [((4, 4), (8, 8)), ((5, 7), (15, 21)), ((7, 9), (16, 20)),
                                           ((32, 32), (13, 11)), ((6, 10), (9, 4))])
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_resize_equals_tensorflow_to_the_bit(size, out, method):
    import tensorflow as tf

    x = RNG.normal(size=(2, *size, 3)).astype(np.float32)
    want = tf.image.resize(x, out, method=method).numpy()
    got = (float_ops.resize_bilinear if method == "bilinear" else float_ops.resize_nearest)(x, *out)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs", [{"height": 12, "width": 7}, {"height": 5, "width": 9, "interpolation": "nearest"}])
def test_resizing_layer_equals_tensorflow(K, kwargs):
    x = RNG.normal(size=(2, 8, 6, 3)).astype(np.float32)
    layer = K.layers.Resizing(**kwargs)
    cfg = layer.get_config()
    assert cpu_layers.supports("Resizing", cfg)
    np.testing.assert_array_equal(cpu_layers.run({"layer": "Resizing", "config": cfg}, [x], {}), np.asarray(layer(x)))
    assert not cpu_layers.supports("Resizing", {**cfg, "crop_to_aspect_ratio": True})
    assert not cpu_layers.supports("Resizing", {**cfg, "interpolation": "bicubic"})


def test_bilinear_upsampling_runs_in_float_then_takes_its_output_position(K, tmp_path):
    """UpSampling2D(interpolation="bilinear") used to stop the emulator: it is a CPU layer whose float
    output equals Keras' to the bit, and whose quantized output is that float output at its position."""
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.executor import Evaluator

    inp = K.Input((8, 8, 3), name="img")
    x = K.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    up = K.layers.UpSampling2D((2, 3), interpolation="bilinear", name="up")(x)
    model = K.Model(inp, K.layers.Conv2D(2, 1, name="head")(up))
    model.save(tmp_path / "up.h5")
    data = RNG.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    emu = Emulator.from_model(str(tmp_path / "up.h5"), calib_inputs=data, batch_size=4)
    node = next(n for n in emu.graph.nodes if n.op == "upsample")
    assert node.device == "CPU" and node.out_slot is not None
    import tensorflow as tf

    conv_node = emu.graph[node.inputs[0]]
    values = Evaluator(emu.graph, "float").run({"img": data})
    # TensorFlow's resize of the same conv output, to the bit (the conv itself sums in another order than
    # TensorFlow's, so the layer as a whole agrees with Keras within float32 rounding only).
    want = tf.image.resize(values[conv_node.name].float(), (16, 24), method="bilinear").numpy()
    np.testing.assert_array_equal(values[node.name].float(), want)
    np.testing.assert_allclose(values[node.name].float(), K.Model(inp, up)(data).numpy(), atol=1e-5)
    sim = Evaluator(emu.graph, "sim").run({"img": data})
    x_q = sim[conv_node.name].float()
    p = emu.graph.positions[node.out_slot[0]][node.out_slot[1]]
    expected = np.clip(np.floor(float_ops.resize_bilinear(x_q, 16, 24) * 2.0**p + 0.5), -128, 127) / 2.0**p
    np.testing.assert_array_equal(sim[node.name].float(), expected)


def test_channels_first_1d_pooling_is_not_claimed():
    assert not cpu_layers.supports("MaxPooling1D", {"data_format": "channels_first"})
    assert not cpu_layers.supports("GlobalAveragePooling1D", {"data_format": "channels_first"})


@pytest.mark.parametrize("kwargs", [
    {},
    {"return_sequences": True, "go_backwards": True},
    {"recurrent_activation": "hard_sigmoid", "use_bias": False},
])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
def test_recurrent_layers_equal_tensorflow(K, cls, kwargs):
    x = RNG.normal(size=(4, 9, 6)).astype(np.float32)
    if cls == "SimpleRNN":
        kwargs = {k: v for k, v in kwargs.items() if k != "recurrent_activation"}
    layer = getattr(K.layers, cls)(5, **kwargs)
    layer(x)
    _randomize(layer)
    want, w = _run_keras(layer, x)
    got = cpu_layers.run({"layer": cls, "config": layer.get_config()}, [x], w)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_gru_reset_before_equals_tensorflow(K):
    x = RNG.normal(size=(2, 7, 3)).astype(np.float32)
    layer = K.layers.GRU(4, reset_after=False, return_sequences=True)
    layer(x)
    _randomize(layer)
    want, w = _run_keras(layer, x)
    np.testing.assert_allclose(cpu_layers.gru(x, w, layer.get_config()), want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("kwargs", [{}, {"axis": [1, 2, 3], "epsilon": 1e-6}, {"center": False}])
def test_layer_normalization_equals_tensorflow(K, kwargs):
    x = (RNG.normal(size=(3, 4, 5, 6)) * 3 + 1).astype(np.float32)
    layer = K.layers.LayerNormalization(**kwargs)
    layer(x)
    _randomize(layer)
    want, w = _run_keras(layer, x)
    np.testing.assert_allclose(cpu_layers.layer_normalization(x, w, layer.get_config()), want, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize(("cls", "kwargs"), [
    ("GroupNormalization", {"groups": 2}),
    ("GroupNormalization", {"groups": 3, "epsilon": 1e-5, "center": False}),
    ("UnitNormalization", {}),
    ("UnitNormalization", {"axis": [1, 2]}),
    ("ELU", {"alpha": 0.7}),
    ("ThresholdedReLU", {"theta": 0.4}),
])
def test_more_float_layers_equal_tensorflow(K, cls, kwargs):
    x = (RNG.normal(size=(3, 4, 5, 6)) * 2 + 0.5).astype(np.float32)
    layer = getattr(K.layers, cls)(**kwargs)
    layer(x)
    if layer.get_weights():
        _randomize(layer)
    want, w = _run_keras(layer, x)
    cfg = layer.get_config()
    assert cpu_layers.supports(cls, cfg)
    np.testing.assert_allclose(cpu_layers.run({"layer": cls, "config": cfg}, [x], w), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("shapes", "kwargs"), [
    (((3, 7), (3, 7)), {"axes": 1}),
    (((3, 7), (3, 7)), {"axes": -1, "normalize": True}),  # cosine similarity
    (((3, 4, 6), (3, 5, 6)), {"axes": 2}),
    (((3, 4, 6), (3, 4, 5)), {"axes": (1, 1)}),
])
def test_dot_equals_tensorflow(K, shapes, kwargs):
    from qinspect.io.shapes import infer_output_shape

    xs = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    layer = K.layers.Dot(**kwargs)
    want = np.asarray(layer(xs))
    cfg = layer.get_config()
    assert cpu_layers.supports("Dot", cfg)
    np.testing.assert_allclose(cpu_layers.run({"layer": "Dot", "config": cfg}, xs, {}), want, rtol=1e-5, atol=1e-6)
    assert infer_output_shape("Dot", cfg, [[None, *s[1:]] for s in shapes]) == [None, *want.shape[1:]]
    assert not cpu_layers.supports("Dot", {"axes": [0, 1]})


def test_repeat_vector_equals_tensorflow(K):
    x = RNG.normal(size=(3, 7)).astype(np.float32)
    layer = K.layers.RepeatVector(4)
    got = cpu_layers.run({"layer": "RepeatVector", "config": layer.get_config()}, [x], {})
    np.testing.assert_array_equal(got, np.asarray(layer(x)))


def test_normalization_equals_tensorflow(K):
    x = (RNG.normal(size=(4, 6, 6, 3)) * 20 + 100).astype(np.float32)
    layer = K.layers.Normalization(axis=-1)
    layer.adapt(x)
    want, w = _run_keras(layer, x)
    np.testing.assert_allclose(cpu_layers.normalization(x, w, layer.get_config()), want, rtol=1e-5, atol=1e-5)
    fixed = K.layers.Normalization(axis=-1, mean=[1.0, 2.0, 3.0], variance=[4.0, 0.25, 9.0], invert=True)
    want = np.asarray(fixed(x))
    np.testing.assert_allclose(cpu_layers.normalization(x, {}, fixed.get_config()), want, rtol=1e-6)


def test_layer_scale_equals_tensorflow():
    from tf_keras.src.applications.convnext import LayerScale

    x = RNG.normal(size=(2, 3, 3, 8)).astype(np.float32)
    layer = LayerScale(1e-2, 8)
    layer(x)
    _randomize(layer)
    want, w = _run_keras(layer, x)
    np.testing.assert_allclose(cpu_layers.layer_scale(x, w, layer.get_config()), want, rtol=1e-6)


@pytest.mark.parametrize("generation", ["tf_keras", "keras"])
def test_custom_scale_layer_equals_tensorflow_to_the_bit(generation):
    """InceptionResNetV2's CustomScaleLayer: the same float32 product and sum as TensorFlow's."""
    import importlib

    module = importlib.import_module(f"{generation}.src.applications.inception_resnet_v2")
    a, b = (RNG.normal(size=(2, 5, 5, 7)) * 3).astype(np.float32), RNG.normal(size=(2, 5, 5, 7)).astype(np.float32)
    layer = module.CustomScaleLayer(0.17)
    want = np.asarray(layer([a, b]))
    cfg = layer.get_config()
    assert cpu_layers.supports("CustomScaleLayer", cfg)
    params = {"layer": "CustomScaleLayer", "config": cfg}
    np.testing.assert_array_equal(cpu_layers.run(params, [a, b], {}), want)
    # 0.17 is not a float32: the product uses float32(0.17), as TensorFlow's constant does
    assert not np.array_equal(cpu_layers.run(params, [a, b], {}), (a + b.astype(np.float64) * 0.17).astype(np.float32))


def test_custom_scale_layer_without_a_numeric_scale_is_not_claimed():
    """A config that is not keras.applications' (no number under "scale") is left to the captured output."""
    assert not cpu_layers.supports("CustomScaleLayer", {"name": "s"})
    assert not cpu_layers.supports("CustomScaleLayer", {"name": "s", "scale": [0.1, 0.2]})
    assert not cpu_layers.supports("CustomScaleLayer", {"name": "s", "scale": True})


def test_a_grouped_conv2d_is_no_cpu_layer_and_its_float_form_equals_tensorflow(K):
    # the quantizer quantizes a grouped Conv2D as any Conv2D: it is a conv2d node, not a float CPU layer
    x = RNG.normal(size=(2, 7, 7, 6)).astype(np.float32)
    layer = K.layers.Conv2D(9, 3, groups=3, padding="same", activation="relu")
    layer(x)
    _randomize(layer)
    want, w = _run_keras(layer, x)
    assert not cpu_layers.supports("Conv2D", layer.get_config())
    got = np.maximum(float_ops.conv2d(x, w["kernel"], w["bias"], 1, "same"), 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", ["abs", "negative", "square", "exp", "sign", "floor"])
def test_unary_tf_functions_equal_tensorflow(fn):
    import tensorflow as tf

    x = (RNG.normal(size=(3, 5)) * 2).astype(np.float32)
    want = getattr(tf.math, fn)(x).numpy()
    got = cpu_layers.elementwise([x], {"function": f"math.{fn}"}, {})
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_binary_ops_with_tensors_and_constants():
    import tensorflow as tf

    a, b = RNG.normal(size=(2, 4)).astype(np.float32), RNG.normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(cpu_layers.elementwise([a, b], {"function": "math.subtract"}, {}),
                               tf.math.subtract(a, b).numpy())
    np.testing.assert_allclose(cpu_layers.elementwise([a, b], {"function": "math.maximum"}, {}),
                               tf.math.maximum(a, b).numpy())
    # tf_keras: the constant is y; Keras 3: numbered by argument position (3 - x has arg0 = 3)
    np.testing.assert_allclose(cpu_layers.elementwise([a], {"function": "math.subtract"}, {"y": 3.0}), a - 3)
    np.testing.assert_allclose(cpu_layers.elementwise([a], {"function": "numpy.subtract"}, {"arg0": 3.0}), 3 - a)
    with pytest.raises(ValueError, match="not emulated"):
        cpu_layers.elementwise([a, b, a], {"function": "math.abs"}, {})


def test_keras3_hard_silu_and_tf_keras_hard_sigmoid():
    import keras
    import tensorflow as tf
    import tf_keras

    x = np.linspace(-5, 5, 41, dtype=np.float32)
    np.testing.assert_allclose(float_ops.activation("hard_silu", x), np.asarray(keras.activations.hard_silu(x)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float_ops.hard_sigmoid_tf_keras(x),
                               tf_keras.activations.hard_sigmoid(tf.constant(x)).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float_ops.gelu(x), np.asarray(keras.activations.gelu(x, approximate=False)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["softsign", "exponential", "mish", "log_softmax", "hard_tanh", "tanh_shrink",
                                  "log_sigmoid", "leaky_relu", "celu", "soft_shrink", "hard_shrink", "squareplus",
                                  "sparse_plus"])
def test_keras_activations_equal_keras(name):
    """Every activation name a Keras file may hold and the emulator runs, against Keras 3's own function
    (tf_keras has softsign and exponential too: the same formulas)."""
    import keras

    x = np.linspace(-4, 4, 81, dtype=np.float32).reshape(3, 27)
    want = np.asarray(getattr(keras.activations, name)(x))
    np.testing.assert_allclose(float_ops.activation(name, x), want, rtol=2e-6, atol=2e-7)


def test_an_activation_with_no_implementation_is_an_unsupported_node():
    """Not a crash: the node has no implementation, so a capture's recorded output stands in for it (or the
    command says in one line that it needs a capture)."""
    from qinspect.dpu.layer_map import layer_node

    node = layer_node("act", "Activation", {"activation": "glu"}, ["x"], {})
    assert node.op == "unsupported" and node.params["class_name"] == "Activation(glu)"
    assert layer_node("act", "Activation", {"activation": "softsign"}, ["x"], {}).op == "activation"


def test_erf_within_one_float32_ulp_of_the_exact_function():
    import math

    x = np.concatenate([RNG.normal(0, 3, 20000), np.linspace(-6, 6, 4001),
                        [0.0, 1e-30, -1e-8, 0.4999999, 0.5, 0.5000001, 30.0, -30.0]]).astype(np.float32)
    exact = np.array([math.erf(float(v)) for v in x])
    got = float_ops.erf(x)
    assert got.dtype == np.float32
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / ulp) <= 1.0
    assert got[np.flatnonzero(x == 0.0)[0]] == 0.0


def test_keras3_operations_take_their_tf_keras_form():
    from qinspect.dpu.layer_map import keras_op_as_tf_op

    assert keras_op_as_tf_op({"function": "numpy.add"}, {"arg1": 3.0}) == (
        {"function": "__operators__.add"}, {"arg1": 3.0, "y": 3.0})
    assert keras_op_as_tf_op({"function": "numpy.multiply"}, {"arg0": 0.5})[1]["y"] == 0.5  # 0.5 * x
    cfg, kwargs = keras_op_as_tf_op({"function": "numpy.subtract"}, {"arg0": 3.0})  # 3 - x: not x - 3
    assert cfg["function"] == "math.subtract" and "y" not in kwargs


def test_a_missing_weight_is_named_not_called_a_shape_mismatch():
    """A Keras 3 .h5 stored LayerScale's weight as 'variable': the error said the config 'does not apply to
    inputs of shape (8, 8, 8, 96)', which sent the user after shapes."""
    import numpy as np
    import pytest

    from qinspect.dpu import cpu_layers
    from qinspect.errors import QInspectError

    with pytest.raises(QInspectError, match=r"LayerScale needs a weight 'gamma', but the file stores 'variable'"):
        cpu_layers.run({"layer": "LayerScale", "config": {}}, [np.ones((1, 2, 2, 3), np.float32)],
                       {"variable": np.ones(3, np.float32)})
