"""Shared layers, repeated sub-models and multi-output layers: a node is a call (issue 8, item 2).

Tiny siamese models (a Conv/ReLU/GAP/Dense tower called on two inputs), built as shared layers and as
a nested sub-Model, in Keras 2 (tf_keras ``.h5``) and Keras 3 (``.keras``). The oracles are
TensorFlow's own per-call outputs, tf_keras' real execution order (a stateful layer that records the
last value assigned to its variable, as the quantizer's shared position variable is) and, for the
positions, the pof2s rule applied to TensorFlow's output of the call that ran last.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from qinspect.cli.info import format_plain
from qinspect.io.call_order import keras_call_order
from qinspect.io.capture_file import Capture
from qinspect.io.model_file import open_model
from tests.conftest import run_cli

pytestmark = [pytest.mark.tf, pytest.mark.slow]

SHAPE = (8, 8, 2)
TOWER = ("conv", "relu", "gap", "dense")


def _tower_layers(L):  # noqa: N803 - the Keras layers module
    return [L.Conv2D(4, 3, padding="same", name="conv"), L.ReLU(name="relu"),
            L.GlobalAveragePooling2D(name="gap"), L.Dense(3, name="dense")]


def _siamese(K, nested: bool):  # noqa: N803 - the Keras module
    L = K.layers
    a, b = L.Input(SHAPE, name="a"), L.Input(SHAPE, name="b")
    layers = _tower_layers(L)
    if nested:
        t_in = L.Input(SHAPE, name="t_in")
        x = t_in
        for layer in layers:
            x = layer(x)
        tower = K.Model(t_in, x, name="tower")
        ya, yb = tower(a), tower(b)
    else:
        ya, yb = a, b
        for layer in layers:
            ya, yb = layer(ya), layer(yb)
    return K.Model([a, b], L.Subtract(name="sub")([ya, yb]), name="siamese")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(3)
    d = tmp_path_factory.mktemp("shared")
    x = {"a": rng.normal(size=(12, *SHAPE)).astype(np.float32), "b": rng.normal(size=(12, *SHAPE)).astype(np.float32)}
    np.savez(d / "in.npz", **x)
    return d, x


def _keras(gen3: bool):
    if gen3:
        import keras

        return keras
    import tf_keras

    return tf_keras


@pytest.fixture(scope="module", params=["keras2-layers", "keras2-submodel", "keras3-layers", "keras3-submodel"])
def siamese(request, data):
    """(model file, capture file, live Keras model, nested?) for each flavour, captured once."""
    d, x = data
    gen3, nested = request.param.startswith("keras3"), request.param.endswith("submodel")
    _keras(gen3).utils.set_random_seed(8)  # the same weights every run
    model = _siamese(_keras(gen3), nested)
    path = d / (request.param + (".keras" if gen3 else ".h5"))
    model.save(path)
    cap = d / (request.param + ".cap.h5")
    result = run_cli("capture", str(path), "--inputs", str(d / "in.npz"), "-o", str(cap))
    assert result.returncode == 0, result.stderr
    return path, cap, model, nested, x


def _names(nested: bool, call: int) -> list[str]:
    if nested:
        return [("tower" if call == 0 else "tower@2") + "/" + n for n in TOWER]
    return [n if call == 0 else n + "@2" for n in TOWER]


def _tf_per_call(model, nested: bool, x) -> dict[str, np.ndarray]:
    """TensorFlow's own output of every call of the tower's layers, named as qinspect names them."""
    out = {}
    if nested:
        tower = model.get_layer("tower")
        K = _keras(hasattr(tower, "_operations"))
        inner = K.Model(tower.inputs, [tower.get_layer(n).output for n in TOWER])
        for call, key in enumerate(("a", "b")):
            for name, value in zip(_names(True, call), inner.predict(x[key], verbose=0), strict=True):
                out[name] = value
        return out
    is_k3 = hasattr(model, "_operations")
    K = _keras(is_k3)
    tensors = []
    for call in (0, 1):
        for n in TOWER:
            layer = model.get_layer(n)
            tensors.append(layer._inbound_nodes[call].outputs[0] if is_k3 else layer.get_output_at(call))
    values = K.Model(model.inputs, tensors).predict([x["a"], x["b"]], verbose=0)
    return dict(zip(_names(False, 0) + _names(False, 1), values, strict=True))


def test_every_call_is_a_node_with_its_inputs_and_the_layers_weights(siamese):
    path, _, model, nested, _ = siamese
    with open_model(path) as source:
        g = source.graph
        first, second = _names(nested, 0), _names(nested, 1)
        assert (g[first[0]].inbound, g[second[0]].inbound) == (["a"], ["b"])
        assert g["sub"].inbound == [first[-1], second[-1]]
        assert [g[n].shares for n in second] == first
        assert g.total_params == model.count_params()
        for one, two in zip(first, second, strict=True):
            w1, w2 = source.weights(one), source.weights(two)
            assert w1.keys() == w2.keys()
            for k in w1:
                np.testing.assert_array_equal(w1[k], w2[k])
        # info lists each call, and says the later calls share their first call's layer
        text = format_plain(g)
        rows = {line.split()[0] for line in text.splitlines() if line.strip()}
        if nested:
            assert {"tower/", "tower@2/"} <= rows
        else:
            assert {"conv", "conv@2", "dense", "dense@2"} <= rows
        assert "shared: 4 later call(s)" in text
        assert f"11 nodes (7 layers, 4 later calls or extra outputs of them), {model.count_params()} parameters" in text


def test_capture_holds_each_calls_own_activations_equal_to_tensorflows(siamese):
    _, cap, model, nested, x = siamese
    truth = _tf_per_call(model, nested, x)
    with Capture.open(cap) as c:
        for one, two in zip(_names(nested, 0), _names(nested, 1), strict=True):
            a1, a2 = c.activation(one), c.activation(two)
            assert np.max(np.abs(a1 - a2)) > 1e-3  # the two calls saw different inputs
            np.testing.assert_allclose(a1, truth[one], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(a2, truth[two], rtol=1e-5, atol=1e-5)
        # one set of weights per layer, read back for every call
        kernels = [c.weights(_names(nested, call)[0])["kernel"] for call in (0, 1)]
        np.testing.assert_array_equal(kernels[0], kernels[1])


def test_emulated_subtract_is_not_zero_and_output_sqnr_is_finite(siamese):
    _, cap, _, nested, _ = siamese
    result = run_cli("emulate", str(cap), "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["layers"]}
    acc = rows["sub"]["accumulated"]
    # the float reference of Subtract is far from zero, and the int8 pipeline follows it
    assert np.isfinite(acc["sqnr_db"]) and acc["sqnr_db"] > 10 and acc["cosine"] > 0.95
    with Capture.open(cap) as c:
        assert np.max(np.abs(c.activation("sub"))) > 0.05
    if not nested:
        # a layer object called twice at the model's top level: vai_q's pattern matcher refuses a layer with
        # two inbound nodes, so it never quantizes it: both calls run float on the CPU, said beside them
        for name in _names(False, 0) + _names(False, 1):
            assert rows[name]["device"] == "CPU" and rows[name]["position"] is None, rows[name]
            assert "more than one inbound node" in rows[name]["cpu_reason"]
        return
    # both calls of a sub-model are emulated, sharing its layers' quantizers, and say so
    dense1, dense2 = "quant_" + _names(nested, 0)[-1], "quant_" + _names(nested, 1)[-1]
    assert rows[dense1]["shared_with"] == [dense1, dense2] == rows[dense2]["shared_with"]
    assert rows[dense1]["position"] == rows[dense2]["position"]
    text = run_cli("emulate", str(cap)).stdout
    assert f"{dense1}, {dense2}" in text and "* shared layer" in text


# ------------------------------------------------------------------ Keras' execution order of calls


def _recorder_model(K):  # noqa: N803
    """Shared stateful layers at several depths; each remembers the last value it was called on."""
    import tensorflow as tf

    L = K.layers

    class Rec(L.Layer):
        def build(self, shape):
            self.v = self.add_weight(name="v", shape=(), initializer="zeros", trainable=False)

        def call(self, x):
            self.v.assign(tf.reduce_mean(x))
            return x

    a, b = L.Input((4,), name="a"), L.Input((4,), name="b")
    r1, r2, r3, r4 = Rec(name="r1"), Rec(name="r2"), Rec(name="r3"), Rec(name="r4")
    d1, d2 = L.Dense(4, name="d1"), L.Dense(4, name="d2")

    def tower(x):
        return r3(r2(d1(r1(x))))

    ya, yb = tower(a), tower(b)
    yc = r4(d2(a))  # r4 called once more, deeper on one side only
    # a nested model called twice, with a shared layer inside it called twice per call
    r5, r6 = Rec(name="r5"), Rec(name="r6")
    n_in, n_in2 = L.Input((4,), name="n_in"), L.Input((4,), name="n_in2")
    nested = K.Model([n_in, n_in2], r6(L.Add(name="n_add")([r5(n_in), r5(L.Dense(4, name="n_d")(n_in2))])),
                     name="nested")
    out = L.Concatenate(name="cat")([yb, ya, r4(yb), yc, nested([a, b]), nested([b, a])])
    return K.Model([a, b], out), (r1, r2, r3, r4, r5, r6)


def test_keras_call_order_is_tf_keras_execution_order(tmp_path):
    import tf_keras

    model, recs = _recorder_model(tf_keras)
    xa, xb = np.full((1, 4), 1.0, np.float32), np.full((1, 4), 2.0, np.float32)
    model.predict([xa, xb], verbose=0)
    last_value = {r.name: float(r.v.numpy()) for r in recs}
    model.save(tmp_path / "rec.h5")
    with open_model(tmp_path / "rec.h5") as source:  # Rec is custom: shown, never run, still ordered
        g = source.graph
        order = keras_call_order(g)
        assert sorted(order) == sorted(layer.name for layer in g.leaves())
        # the call that tf_keras ran last is the one whose value each shared variable kept
        assert sorted(g.calls("nested/r5")) == ["nested/r5", "nested/r5@2", "nested@2/r5", "nested@2/r5@2"]
        for rec in ("r1", "r2", "r3", "r4", "nested/r5", "nested/r6"):
            calls = g.calls(rec)
            last = max(calls, key=order.index)
            value = _input_of(g, last, model, xa, xb)
            assert value == pytest.approx(last_value[rec.split("/")[-1]]), (rec, calls, order)
        # and it is not always the same call: r1 (deep) kept a's, r3 (near the output) b's
        assert last_value["r1"] != last_value["r3"]


def _input_of(g, name: str, model, xa, xb) -> float:
    """The mean value call ``name`` sees, computed by TensorFlow for that call's own Keras node."""
    import tf_keras

    if g[name].parent is None:
        tensor = model.get_layer(g[name].owner).get_output_at(g[name].call)
        return float(np.mean(tf_keras.Model(model.inputs, tensor).predict([xa, xb], verbose=0)))
    # inside a call of the nested model: run the nested graph on that call's inputs
    nested = model.get_layer("nested")
    inner = nested.get_layer(g[name].short_name.split("@")[0])
    probe = tf_keras.Model(nested.inputs, inner.get_output_at(g[name].call))  # the nested graph's own nodes
    feeds = [xa, xb] if g[g[name].parent].call == 0 else [xb, xa]
    return float(np.mean(probe.predict(feeds, verbose=0)))


# ------------------------------------------------------------------ positions of a shared layer


def _pool_model(K):  # noqa: N803
    """Two shared MaxPooling2D layers (at depths 2 and 1) on inputs of very different ranges."""
    L = K.layers
    a, b = L.Input((4, 4, 1), name="a"), L.Input((4, 4, 1), name="b")
    p1, p2 = L.MaxPooling2D(1, name="p1"), L.MaxPooling2D(2, name="p2")
    ya, yb = p2(p1(a)), p2(p1(b))
    return K.Model([a, b], L.Concatenate(name="cat")([ya, yb]))


def test_a_layer_called_twice_stays_float_and_its_reader_quantizes_the_float_values(tmp_path):
    """vai_q_tensorflow2's ModelTransformer refuses every pattern holding a layer with more than one
    inbound node (``_is_match_supported``), its quantize wrapper included: both calls of a shared pooling
    stay float, and the Concatenate after them quantizes what they computed.

    Inputs are multiples of their quantization step (a: 2^-4 below 8, b: 2^-8 below 0.5), so the
    input quantizers are exact and max pooling is too: the Concatenate's position is the pof2s rule on
    TensorFlow's own output.
    """
    import tf_keras

    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.fixed_point import Round, choose_position

    rng = np.random.default_rng(0)
    xa = (rng.integers(-128, 128, size=(6, 4, 4, 1)) / 16).astype(np.float32)
    xb = (rng.integers(-128, 128, size=(6, 4, 4, 1)) / 256).astype(np.float32)
    model = _pool_model(tf_keras)
    model.save(tmp_path / "pool.h5")
    with open_model(tmp_path / "pool.h5") as source:
        emu = Emulator.from_model(source, {"a": xa, "b": xb}, batch_size=6, constraints=False)
    pos = emu.calibration.positions
    assert not any(key.split("@")[0] in ("p1", "p2") for key in pos)  # no quantizer of theirs
    for name in ("p1", "p1@2", "p2", "p2@2"):
        node = emu.graph[name]
        assert node.device == "CPU" and node.out_slot is None and "more than one inbound node" in node.cpu_reason
    assert any(r.kind == "reused_layer_float" for r in emu.graph.rewrites)
    want = int(choose_position(model.predict([xa, xb], verbose=0), 1, Round.HALF_UP))
    assert pos["cat"]["output_0"] == want


# ------------------------------------------------------------------ multi-output layers


def test_every_output_of_a_multi_output_layer_is_captured(tmp_path):
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(9)
    L = tf_keras.layers
    t_in = L.Input((6, 6, 4), name="t_in")
    two = tf_keras.Model(t_in, [L.Conv2D(2, 1, name="left")(t_in), L.Conv2D(3, 1, name="right")(t_in)], name="two")
    x_in = L.Input((6, 6, 4), name="x")
    c = L.Conv2D(4, 1, name="c")(x_in)
    p, q = tf.split(c, 2, axis=-1)
    left, right = two(x_in)
    out = L.Concatenate(name="cat")([L.Add(name="add")([p, q]), left, right])
    model = tf_keras.Model(x_in, out)
    model.save(tmp_path / "multi.h5")
    x = np.random.default_rng(1).normal(size=(5, 6, 6, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with open_model(tmp_path / "multi.h5") as source:
        g = source.graph
        assert g["add"].inbound == ["tf.split", "tf.split:1"]
        assert (g["tf.split:1"].output_index, g["tf.split:1"].shares) == (1, "tf.split")
        assert g["cat"].inbound == ["add", "two/left", "two/right"]
    cap = tmp_path / "multi.cap.h5"
    result = run_cli("capture", str(tmp_path / "multi.h5"), "--inputs", str(tmp_path / "x.npy"), "-o", str(cap))
    assert result.returncode == 0, result.stderr
    c_out = tf_keras.Model(model.inputs, model.get_layer("c").output).predict(x, verbose=0)
    two_out = two.predict(x, verbose=0)
    with Capture.open(cap) as capture:
        np.testing.assert_allclose(capture.activation("tf.split"), c_out[..., :2], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(capture.activation("tf.split:1"), c_out[..., 2:], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(capture.activation("two/left"), two_out[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(capture.activation("two/right"), two_out[1], rtol=1e-5, atol=1e-6)
    # each output is emulated from its own part (a float CPU node), so the sum after it stays close
    result = run_cli("emulate", str(cap), "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["layers"]}
    for name in ("tf.split", "tf.split:1"):
        assert rows[name]["device"] == "CPU" and rows[name]["accumulated"]["sqnr_db"] > 20
    assert rows["quant_add"]["accumulated"]["sqnr_db"] > 15


# ------------------------------------------------------------------ capture format


def test_a_version_1_0_capture_still_opens(siamese, tmp_path):
    """A capture written before calls were nodes (no shares / call / output_index) reads as before."""
    import shutil

    _, cap, _, nested, _ = siamese
    old = tmp_path / "old.h5"
    shutil.copy(cap, old)
    from qinspect.io.capture_file import escape_name

    with h5py.File(old, "r+") as h5:  # as 1.0 wrote it: first calls only, later calls aliased to them
        h5.attrs["version"] = "1.0"
        graph = json.loads(h5["graph"][()])
        owner = {layer["name"]: layer["shares"] for layer in graph["layers"] if layer["shares"]}
        graph["layers"] = [layer for layer in graph["layers"] if layer["name"] not in owner]
        for layer in graph["layers"]:
            layer["inbound"] = [owner.get(i, i) for i in layer["inbound"]]
            for key in ("shares", "call", "output_index"):
                layer.pop(key)
        for name in owner:
            if escape_name(name) in h5["activations"]:
                del h5["activations"][escape_name(name)]
        del h5["graph"]
        h5.create_dataset("graph", data=json.dumps(graph))
    with Capture.open(old) as c:
        assert all(not layer.shares for layer in c.graph)
        assert c.activation(_names(nested, 0)[0]).shape[0] == 12


def test_split_outputs_are_emulated_as_tensorflow_splits(tmp_path):
    import tensorflow as tf

    from qinspect.dpu.executor import _split_part

    x = np.random.default_rng(2).normal(size=(2, 3, 7, 4)).astype(np.float32)
    for sizes, axis in ((7, 2), ([2, -1, 1], 2), ([1, 3], -1)):
        want = tf.split(x, sizes, axis=axis)
        for i, part in enumerate(want):
            got = _split_part(x, {"fn": "split", "sizes": sizes, "axis": axis, "output_index": i})
            np.testing.assert_array_equal(got, part.numpy())
    for i, part in enumerate(tf.unstack(x, axis=1)):
        np.testing.assert_array_equal(_split_part(x, {"fn": "unstack", "axis": 1, "output_index": i}), part.numpy())


def test_diagnose_and_report_say_where_positions_are_shared(siamese, tmp_path):
    path, cap, _, nested, _ = siamese
    if not (nested and path.suffix == ".h5"):
        pytest.skip("one flavour is enough: the text does not depend on how the model was written")
    result = run_cli("diagnose", str(cap), "--json")
    assert result.returncode == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any(note.startswith("4 shared layer(s) called more than once") for note in notes)
    result = run_cli("report", str(cap), "-o", str(tmp_path / "rep"))
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "shared layer: weights and positions shared with quant_tower@2/conv" in html


def test_a_shared_layer_inside_a_sub_model_called_twice_is_four_nodes(tmp_path):
    import tf_keras

    L = tf_keras.layers
    t_in, t_in2 = L.Input((6,), name="t_in"), L.Input((6,), name="t_in2")
    sh = L.Dense(6, name="sh")
    inner = tf_keras.Model([t_in, t_in2], L.Add(name="add")([sh(t_in), sh(t_in2)]), name="inner")
    a, b = L.Input((6,), name="a"), L.Input((6,), name="b")
    model = tf_keras.Model([a, b], L.Concatenate(name="cat")([inner([a, b]), inner([b, a])]))
    model.save(tmp_path / "nest.h5")
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    np.savez(tmp_path / "x.npz", a=xa, b=xb)
    cap = tmp_path / "nest.cap.h5"
    result = run_cli("capture", str(tmp_path / "nest.h5"), "--inputs", str(tmp_path / "x.npz"), "-o", str(cap))
    assert result.returncode == 0, result.stderr
    kernel, bias = model.get_layer("inner").get_layer("sh").get_weights()
    truth = {"inner/sh": xa @ kernel + bias, "inner/sh@2": xb @ kernel + bias,
             "inner@2/sh": xb @ kernel + bias, "inner@2/sh@2": xa @ kernel + bias}
    with Capture.open(cap) as c:
        assert [c.graph[n].shares for n in truth] == ["", "inner/sh", "inner/sh", "inner/sh"]
        for name, want in truth.items():
            np.testing.assert_allclose(c.activation(name), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c.activation("cat"), model.predict([xa, xb], verbose=0), rtol=1e-5, atol=1e-5)


def test_keras3_multi_output_op_is_captured_per_output(tmp_path):
    import keras

    L = keras.layers
    x_in = L.Input((6, 6, 4), name="x")
    c = L.Conv2D(4, 1, name="c")(x_in)
    p, q = keras.ops.split(c, 2, axis=-1)
    model = keras.Model(x_in, L.Add(name="add")([p, q]))
    model.save(tmp_path / "split.keras")
    x = np.random.default_rng(4).normal(size=(3, 6, 6, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cap = tmp_path / "split.cap.h5"
    result = run_cli("capture", str(tmp_path / "split.keras"), "--inputs", str(tmp_path / "x.npy"), "-o", str(cap))
    assert result.returncode == 0, result.stderr
    want = keras.ops.split(keras.Model(x_in, c).predict(x, verbose=0), 2, axis=-1)
    with Capture.open(cap) as capture:
        assert capture.graph["add"].inbound == ["split", "split:1"]
        for name, part in zip(("split", "split:1"), want, strict=True):
            np.testing.assert_allclose(capture.activation(name), np.asarray(part), rtol=1e-5, atol=1e-6)
