"""TensorFlow functions called inline in a Keras model (TFOpLambda / SlicingOpLambda): read from the
saved file, run by the emulator in float32, against TensorFlow's own output on the same input."""

from __future__ import annotations

import numpy as np
import pytest
from keras_family_fixtures import fresh_keras_names  # noqa: F401 - autouse: Keras names reset around each test

from qinspect.dpu import tf_functions

pytestmark = pytest.mark.tf

RNG = np.random.default_rng(5)
EXACT = True  # moves and cuts copy values: equal to the bit
CASES = {
    "concat": (lambda tf, x: tf.concat([x, x * 2.0], axis=-1), EXACT),
    "reshape": (lambda tf, x: tf.reshape(x, (-1, 36, 4)), EXACT),
    "transpose": (lambda tf, x: tf.transpose(x, (0, 2, 1, 3)), EXACT),
    "pad_constant": (lambda tf, x: tf.pad(x, [[0, 0], [1, 2], [0, 1], [0, 0]], constant_values=0.5), EXACT),
    "pad_reflect": (lambda tf, x: tf.pad(x, [[0, 0], [2, 1], [1, 1], [0, 0]], mode="REFLECT"), EXACT),
    "pad_symmetric": (lambda tf, x: tf.pad(x, [[0, 0], [1, 1], [2, 2], [0, 0]], mode="SYMMETRIC"), EXACT),
    "reduce_mean": (lambda tf, x: tf.reduce_mean(x, axis=[1, 2]), not EXACT),
    "reduce_max": (lambda tf, x: tf.reduce_max(x, axis=-1, keepdims=True), EXACT),
    "reduce_min": (lambda tf, x: tf.reduce_min(x, axis=2), EXACT),
    "reduce_sum": (lambda tf, x: tf.reduce_sum(x, axis=[1, 3], keepdims=True), not EXACT),
    "clip": (lambda tf, x: tf.clip_by_value(x, -0.4, 0.3), EXACT),
    "resize_bilinear": (lambda tf, x: tf.image.resize(x, (9, 14)), EXACT),
    "resize_nearest": (lambda tf, x: tf.image.resize(x, (12, 3), method="nearest"), EXACT),
    "depth_to_space": (lambda tf, x: tf.nn.depth_to_space(x, 2), EXACT),
    "space_to_depth": (lambda tf, x: tf.nn.space_to_depth(x, 3), EXACT),
    "expand_squeeze": (lambda tf, x: tf.squeeze(tf.expand_dims(x, 2), axis=2), EXACT),
    "slice": (lambda tf, x: x[:, 1:5, ::2, 1], EXACT),
    "slice_step": (lambda tf, x: x[:, ::-1, 2:, :3], EXACT),
}


def _emulated_like_keras(path, x: np.ndarray, want: list[np.ndarray], tol: float = 1e-6) -> None:
    """The emulator's float outputs of the saved model at ``path`` on ``x`` equal Keras's ``want``, and no
    node of it is left unsupported."""
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.executor import Evaluator

    emu = Emulator.from_model(str(path))
    assert not [n.name for n in emu.graph.nodes if n.op == "unsupported"]
    got = Evaluator(emu.graph, "float").run({"img": x})
    for name, w in zip(emu.graph.outputs, want, strict=True):
        np.testing.assert_allclose(got[name].float(), w, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_tf_function_equals_tensorflow(case, tmp_path):
    import tensorflow as tf
    import tf_keras as keras

    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.executor import Evaluator

    fn, exact = CASES[case]
    inp = keras.Input((6, 6, 4), name="img")
    out = fn(tf, inp)
    model = keras.Model(inp, out)
    model.save(tmp_path / "m.h5")
    x = RNG.normal(size=(3, 6, 6, 4)).astype(np.float32)
    want = model(x).numpy()
    # The file reader infers the output shape without TensorFlow (the tree shows it).
    from qinspect.io.model_file import open_model

    source = open_model(str(tmp_path / "m.h5"))
    last = list(source.graph.leaves())[-1]  # the model's one output, last in call order
    assert list(last.output_shape) == [None, *want.shape[1:]], (last.name, last.output_shape)
    source.close()
    emu = Emulator.from_model(str(tmp_path / "m.h5"))
    nodes = [n for n in emu.graph.nodes if n.op == "cpu_layer"]
    assert nodes and all(n.params["layer"] == "tf_function" for n in nodes), [(n.name, n.op) for n in emu.graph]
    got = Evaluator(emu.graph, "float").run({"img": x})[emu.graph.outputs[0]].float()
    assert got.shape == want.shape
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("function", "kwargs", "n"), [
    ("concat", {"axis": 0}, 2),  # along the samples
    ("math.reduce_mean", {"axis": None}, 1),  # over everything, samples included
    ("math.reduce_max", {"axis": [0, 1]}, 1),
    ("compat.v1.transpose", {"perm": [1, 0, 2, 3]}, 1),
    ("compat.v1.pad", {"paddings": [[1, 0], [0, 0]]}, 1),
    ("image.resize", {"size": [4, 4], "method": "bicubic"}, 1),
    ("image.resize", {"size": [4, 4], "antialias": True}, 1),
    ("reshape", {"shape": [2, -1]}, 1),  # a fixed batch size
    ("expand_dims", {"axis": 0}, 1),
    ("__operators__.getitem", {"slice_spec": [{"start": 1, "stop": None, "step": None}]}, 1),
    ("nn.depth_to_space", {"block_size": 2, "data_format": "NCHW"}, 1),
    ("math.cumsum", {"axis": 1}, 1),
])
def test_calls_it_cannot_reproduce_are_not_claimed(function, kwargs, n):
    assert not tf_functions.supports(function, kwargs, n)


def test_keras3_operations_run_as_their_tensorflow_twins(tmp_path):
    """keras.ops calls stored in a .keras file (Concatenate, Reshape, Mean, Transpose, GetItem, ...)."""
    import keras
    from keras import ops


    inp = keras.Input((6, 6, 4), name="img")
    c = ops.concatenate([inp, inp * 2.0], axis=-1)
    outs = [ops.mean(ops.reshape(c, (-1, 36, 8)), axis=1), ops.transpose(c, (0, 2, 1, 3)), c[:, 1:5, ::2, :3],
            ops.max(ops.expand_dims(inp, 3), axis=[1, 2]), ops.squeeze(ops.sum(inp, axis=2, keepdims=True), axis=2),
            ops.clip(inp, -0.5, 0.25), ops.pad(inp, [[0, 0], [1, 2], [2, 1], [0, 0]], mode="reflect"),
            ops.image.resize(inp, (9, 13)), ops.nn.depth_to_space(inp, 2)]
    model = keras.Model(inp, outs)
    model.save(tmp_path / "ops.keras")
    x = RNG.normal(size=(3, 6, 6, 4)).astype(np.float32)
    want = [np.asarray(y) for y in model(x)]
    from qinspect.io.model_file import open_model

    source = open_model(str(tmp_path / "ops.keras"))
    shapes = {layer.name: layer.output_shape for layer in source.graph.leaves()}
    source.close()
    for name, w in zip(model.output_names, want, strict=True):
        assert list(shapes[name]) == [None, *w.shape[1:]], (name, shapes[name])
    _emulated_like_keras(tmp_path / "ops.keras", x, want)


def test_keras3_activation_operations_keep_the_arguments_they_were_called_with(tmp_path):
    """ops.elu(x, alpha=0.5), ops.leaky_relu(x, 0.1), ops.softmax(x, axis=1), ops.log_softmax(x, axis=1),
    ops.celu(x, alpha=0.5) and ops.gelu(x) (tanh approximation by default) were computed at the Keras
    activations' defaults: figures for another function (softmax over the wrong axis: 104% off)."""
    import keras
    from keras import ops


    inp = keras.Input((5, 6, 4), name="img")
    outs = [ops.elu(inp, alpha=0.5), ops.leaky_relu(inp, negative_slope=0.1), ops.softmax(inp, axis=1),
            ops.log_softmax(inp, axis=1), ops.celu(inp, alpha=0.5), ops.gelu(inp), ops.gelu(inp, approximate=False),
            ops.elu(inp)]
    model = keras.Model(inp, outs)
    model.save(tmp_path / "acts.keras")
    x = (3 * RNG.normal(size=(3, 5, 6, 4))).astype(np.float32)
    want = [np.asarray(y) for y in model(x)]
    _emulated_like_keras(tmp_path / "acts.keras", x, want, tol=2e-6)


def test_an_activation_operation_with_an_argument_it_does_not_know_is_not_computed_at_a_default():
    from qinspect.dpu import float_ops

    with pytest.raises(ValueError, match="argument.s. beta is not emulated"):
        float_ops.activation_with("elu", np.zeros(3, np.float32), {"beta": 2.0})


@pytest.mark.parametrize(("function", "kwargs", "n"), [
    ("concat", {"axis": -4}, 2), ("math.reduce_mean", {"axis": [-4, 1]}, 1), ("squeeze", {"axis": -4}, 1)])
def test_a_negative_axis_that_turns_out_to_be_the_samples_is_one_clear_error(function, kwargs, n):
    from qinspect.errors import QInspectError

    x = np.zeros((1, 3, 4, 5), np.float32)
    assert tf_functions.supports(function, kwargs, n)  # the file alone cannot tell
    with pytest.raises(QInspectError, match="across samples"):
        tf_functions.run(function, [x] * n, kwargs)


def test_a_reshape_across_samples_is_one_clear_error():
    from qinspect.errors import QInspectError

    x = np.zeros((2, 3, 4), np.float32)
    assert tf_functions.supports("reshape", {"shape": [-1, 4]}, 1)  # allowed by the file: the data decides
    with pytest.raises(QInspectError, match="moves values across samples"):
        tf_functions.run("reshape", [x], {"shape": [-1, 4]})


@pytest.mark.parametrize(("function", "kwargs", "n"), [
    ("compat.v1.pad", {"paddings": [[0, 0], [1, 1]]}, 1),  # written for another rank
    ("nn.depth_to_space", {"block_size": 3}, 1),  # 4 channels do not split into 3 x 3 blocks
    ("compat.v1.transpose", {"perm": [0, 2, 1]}, 1),
])
def test_arguments_that_do_not_fit_the_data_are_one_clear_error(function, kwargs, n):
    from qinspect.errors import QInspectError

    assert tf_functions.supports(function, kwargs, n)
    with pytest.raises(QInspectError, match="does not apply to inputs of shape") as err:
        tf_functions.run(function, [np.zeros((2, 6, 6, 4), np.float32)], kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [{"paddings": [[0, 0], [1]]}, {"paddings": [[0, 0], [-1, 1]]},
                                    {"paddings": [[0, 0], ["a", 1]]}])
def test_malformed_paddings_are_not_claimed(kwargs):
    assert not tf_functions.supports("pad", kwargs, 1)
    assert not tf_functions.supports("compat.v1.transpose", {"perm": [0, 1, 1]}, 1)
    assert not tf_functions.supports("image.resize", {"size": [0, 4]}, 1)


def test_a_cpu_layer_whose_config_does_not_fit_is_one_clear_error():
    from qinspect.dpu import cpu_layers
    from qinspect.errors import QInspectError

    with pytest.raises(QInspectError, match="GroupNormalization with config .* does not apply"):
        cpu_layers.run({"layer": "GroupNormalization", "config": {"groups": 3}},
                       [np.zeros((2, 4, 4, 4), np.float32)], {})
    with pytest.raises(QInspectError, match="elementwise"):
        cpu_layers.run({"layer": "elementwise", "config": {"function": "math.abs"}},
                       [np.zeros((2, 3), np.float32)] * 3, {})


def test_every_function_the_emulator_runs_has_a_shape_rule():
    """The reader's shape rules and the emulator's functions cover the same calls (the tree shows a
    shape for every function the emulator runs)."""
    from qinspect.io import op_shapes

    assert set(tf_functions._FUNCTIONS) == set(op_shapes._FUNCTIONS)


def test_a_rescaling_with_a_scale_and_offset_per_channel_runs_as_keras_does(tmp_path):
    """Rescaling(scale=[...], offset=[...]) (ImageNet normalization in one layer) was a TypeError traceback."""
    import keras

    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.executor import Evaluator

    inp = keras.Input((4, 5, 3), name="img")
    y = keras.layers.Rescaling(scale=[1 / 58.4, 1 / 57.1, 1 / 57.4], offset=[-2.1, -2.0, -1.8], name="norm")(inp)
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, name="c")(y))
    model.save(tmp_path / "m.keras")
    x = RNG.uniform(0, 255, size=(2, 4, 5, 3)).astype(np.float32)
    emu = Emulator.from_model(str(tmp_path / "m.keras"))
    got = Evaluator(emu.graph, "float").run({"img": x})
    np.testing.assert_allclose(got["norm"].float(), np.asarray(model.get_layer("norm")(x)), rtol=1e-6, atol=1e-6)


def test_keras3_split_into_equal_sections_runs_as_tf_split(tmp_path):
    """ops.split(x, 2, axis=-1) was refused ("no float or integer implementation") where tf.split ran;
    ops.split(x, [1, 3]) cuts at numpy's points, not tf.split's sizes."""
    import keras
    from keras import ops


    inp = keras.Input((4, 5, 6), name="img")
    a, b = ops.split(inp, 2, axis=-1)
    c, d, e = ops.split(inp, [1, 3], axis=1)  # numpy's cut points: rows 0, 1..2, 3
    model = keras.Model(inp, [a * 2.0, b, c, d + 1.0, e])
    model.save(tmp_path / "m.keras")
    x = RNG.normal(size=(2, 4, 5, 6)).astype(np.float32)
    want = [np.asarray(y) for y in model(x)]
    _emulated_like_keras(tmp_path / "m.keras", x, want)


def test_cpu_reasons_name_the_operation_form_and_keras3_hard_silu(tmp_path):
    """ops.relu inline read "activation 'relu' has no DPU implementation", wrong on its face; Keras 3's
    Activation('hard_silu') did not say why its figures differ from tf_keras's MobileNetV3."""
    import keras
    from keras import ops

    from qinspect.dpu.emulator import Emulator

    inp = keras.Input((4, 4, 3), name="img")
    x = keras.layers.Conv2D(4, 1, name="c1")(inp)
    y = keras.layers.Activation("hard_silu", name="hs")(ops.relu(x))
    keras.Model(inp, keras.layers.Conv2D(2, 1, name="c2")(y)).save(tmp_path / "m.keras")
    reasons = {n.name: n.cpu_reason for n in Emulator.from_model(str(tmp_path / "m.keras")).graph.nodes}
    (relu,) = [r for name, r in reasons.items() if name.startswith("relu")]
    assert "called as a TensorFlow / Keras operation" in relu and "no DPU implementation" not in relu
    assert "Keras 3 activation 'hard_silu'" in reasons["hs"] and "no quantizer on either side" in reasons["hs"]
