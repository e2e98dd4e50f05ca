"""Keras-2 ``.h5`` models whose layer names contain ``/`` (tf_keras' MobileNetV3, DenseNet) read exactly.

The ``.h5`` weight group of a layer is named after the whole layer name, so a ``/`` in it is a path
of nested groups: ``expanded_conv/squeeze_excite/Conv_1`` must never pick up the top-level
``Conv_1``'s weights, and nothing is nested in the graph just because its name holds a ``/``.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import run_cli
from keras_family_fixtures import densenet_h5, fresh_keras_names, mobilenet_v3_h5  # noqa: F401

from qinspect.cli.info import format_plain
from qinspect.io.capture_file import escape_name, unescape_name
from qinspect.io.graph import Layer, ModelGraph
from qinspect.io.model_file import open_model

pytestmark = pytest.mark.tf


def _assert_weights_equal_keras(fam) -> None:
    with open_model(fam.path) as source:
        graph = source.graph
        assert graph.total_params == fam.params  # Keras' count_params()
        for name, want in fam.weights.items():
            got = list(source.weights(name).values())
            assert len(got) == len(want), name
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w.astype(np.float32), err_msg=name)


def test_mobilenet_v3_h5_weights_and_params_equal_keras():
    fam = mobilenet_v3_h5()
    _assert_weights_equal_keras(fam)
    with open_model(fam.path) as source:
        graph = source.graph
        # the nested-looking name is a top-level layer with its own 1x1 conv weights, not Conv_1's
        se = graph["expanded_conv/squeeze_excite/Conv_1"]
        assert se.parent is None and se.depth == 0 and se.short_name == se.name
        assert se.weight_shapes["kernel"][:2] == [1, 1] and se.params != graph["Conv_1"].params
        bn = source.weights("Conv/BatchNorm")
        assert list(bn) == ["gamma", "beta", "moving_mean", "moving_variance"]
        assert not [w for w in graph.warnings if "no weights stored" in w]


@pytest.mark.slow
def test_densenet_h5_weights_and_params_equal_keras():
    fam = densenet_h5()
    _assert_weights_equal_keras(fam)
    with open_model(fam.path) as source:
        assert source.graph["conv1/conv"].params == 3 * 7 * 7 * 64


def test_text_info_indents_only_real_nesting():
    fam = mobilenet_v3_h5()
    result = run_cli("info", str(fam.path))
    assert result.returncode == 0, result.stderr
    assert f"{fam.params:,} parameters" in result.stdout.splitlines()[0]
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[3:] if line.strip()}
    # every layer of this flat model starts at column 0 under its full name
    assert rows["expanded_conv/squeeze_excite/Conv_1"].startswith("expanded_conv/squeeze_excite/Conv_1 ")
    assert rows["Conv/BatchNorm"].startswith("Conv/BatchNorm ")
    assert not any(line.startswith(" ") for line in result.stdout.splitlines()[3:] if line.strip()
                   and not line.startswith("!") and not line.startswith("warning"))


def test_nesting_comes_from_parents_not_from_slashes_in_names():
    """A nested model holding a layer called ``a/b``: depth 1, short name ``a/b``, summed into its model."""
    layers = [
        Layer("in", "InputLayer", output_shape=[None, 4]),
        Layer("blk", "Functional", is_container=True),
        Layer("blk/a/b", "Dense", inbound=["in"], parent="blk", params=20),
        Layer("blk/c", "Dense", inbound=["blk/a/b"], parent="blk", params=5),
        Layer("blk2/x", "Dense", inbound=["blk/c"], params=7),  # top level, name with "/"
    ]
    graph = ModelGraph("m", layers, ["in"], ["blk2/x"])
    assert [layer.depth for layer in graph] == [0, 0, 1, 1, 0]
    assert graph["blk/a/b"].short_name == "a/b" and graph["blk2/x"].short_name == "blk2/x"
    assert graph.ancestors("blk/a/b") == ["blk"] and graph.ancestors("blk2/x") == []
    text = format_plain(graph)
    assert "\n  a/b " in text and "\nblk2/x " in text
    # the round trip through JSON (captures store the graph so) keeps the nesting
    again = ModelGraph.from_json(graph.to_json())
    assert [layer.depth for layer in again] == [0, 0, 1, 1, 0]


def test_capture_names_with_slashes_are_single_hdf5_links(tmp_path):
    """A layer name is one HDF5 link in a capture (h5py would make ``a/b`` two groups)."""
    names = ["expanded_conv/squeeze_excite/Conv_1", "Conv_1", ".hidden/x", "100%/y"]
    with h5py.File(tmp_path / "t.h5", "w") as f:
        for i, name in enumerate(names):
            f.create_dataset(escape_name(name), data=[i])
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert sorted(unescape_name(k) for k in f) == sorted(names)
        assert all(isinstance(f[k], h5py.Dataset) for k in f)


def test_quantized_h5_with_slash_names_reads_every_position(refcases):
    """mbv3small's quantized.h5 names layers quant_expanded_conv/depthwise: each weight is cut from its
    own layer name (not at the first "/"), so every position equals the quantizer's positions.json."""
    import json

    from qinspect.io.vitis import load_quantized_model

    case = refcases / "mbv3small"
    want = json.loads((case / "positions.json").read_text())
    want = want.get("positions", want)
    got = load_quantized_model(case / "quantized.h5").positions()
    assert got == want
    assert got["expanded_conv/depthwise"]["expanded_conv/depthwise/depthwise_kernel:0"] == 5


@pytest.mark.slow
def test_mobilenet_v3_nested_in_a_model_reads_exactly(tmp_path):
    """The usual transfer-learning form: MobileNetV3 as a sub-model. Its layers are one level deep, keep
    their own names with "/", and get their own weights from the nested model's group."""
    import tf_keras as K  # noqa: N812

    base = K.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=False)
    inp = K.Input((32, 32, 3))
    model = K.Model(inp, K.layers.Dense(3)(K.layers.GlobalAveragePooling2D()(base(inp))))
    model.save(tmp_path / "nested.h5")
    with open_model(tmp_path / "nested.h5") as source:
        graph = source.graph
        assert graph.total_params == model.count_params()
        leaf = graph[f"{base.name}/expanded_conv/squeeze_excite/Conv_1"]
        assert leaf.parent == base.name and leaf.depth == 1 and leaf.short_name == "expanded_conv/squeeze_excite/Conv_1"
        for layer in base.layers:
            want = layer.get_weights()
            got = list(source.weights(f"{base.name}/{layer.name}").values()) if layer.weights else []
            assert len(got) == len(want), layer.name
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w, err_msg=layer.name)
