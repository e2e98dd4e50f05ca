"""Keras 3 ``.keras`` archives read with zipfile + h5py, checked against Keras 3 itself."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from io_keras_fixtures import keras3_case
from test_io_keras_h5 import assert_matches_keras, assert_topological

from qinspect.errors import QInspectError
from qinspect.io.keras_v3 import KerasV3Model
from qinspect.io.model_file import open_model


@pytest.fixture(scope="module")
def k3():
    return keras3_case()


@pytest.mark.tf
def test_keras_archive_graph_weights_and_shapes_equal_keras(k3):
    with open_model(k3.paths["keras"]) as source:
        assert source.kind == "keras-v3"
        assert_matches_keras(source, k3.truth, renamed={("inner_fn/idw", "kernel"): "depthwise_kernel"})
        assert_topological(source.graph)


@pytest.mark.tf
def test_keras_archive_nesting_ops_and_edges(k3):
    with open_model(k3.paths["keras"]) as source:
        g = source.graph
        assert [layer.name for layer in g.children("inner_seq")] == [
            "inner_seq/ic", "inner_seq/ibn", "inner_seq/seq_in_seq",
        ]  # fmt: skip
        assert g["inner_seq/seq_in_seq"].is_container and g["inner_seq/seq_in_seq/deep"].depth == 2
        assert g["inner_seq/ic"].inbound == ["sep"]
        assert g["inner_fn/idw"].inbound == ["inner_seq/seq_in_seq/deep_relu"]
        add = g["add"]
        assert (add.class_name, add.config["function"], add.call_kwargs) == ("KerasOp", "numpy.add", {"arg1": 3})
        assert add.inbound == ["inner_fn/ipw"]
        assert g["multiply"].inbound == ["add", "inner_seq/seq_in_seq/deep_relu"]
        for op, shape in k3.extra["ops"].items():
            assert g[op].output_shape == shape
        assert g["addl"].inbound == ["multiply", "inner_seq/seq_in_seq/deep_relu"]


@pytest.mark.tf
def test_keras_archive_extracted_weights_are_removed_on_close(k3):
    source = KerasV3Model(k3.paths["keras"])
    tmp = source._tmp
    assert tmp is not None
    source.close()
    import os

    assert not os.path.exists(tmp)


@pytest.mark.tf
def test_keras_archive_without_weights_still_gives_the_graph(k3, tmp_path):
    path = tmp_path / "noweights.keras"
    with zipfile.ZipFile(k3.paths["keras"]) as src, zipfile.ZipFile(path, "w") as dst:
        dst.writestr("config.json", src.read("config.json"))
    with open_model(path) as source:
        assert source.graph["c1"].output_shape == [None, 16, 16, 8]
        assert source.weights("c1") == {}
        assert any("no model.weights.h5" in w for w in source.graph.warnings)


def test_zip_that_is_not_a_keras_model(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(QInspectError, match="zip file without config.json"):
        open_model(path)


@pytest.mark.tf
def test_keras3_shared_layers_and_shared_nested_models(tmp_path):
    import keras
    from test_io_keras_h5 import build_siamese, check_siamese

    model = build_siamese(keras, gen3=True)
    model.save(tmp_path / "siamese.keras")
    check_siamese(tmp_path / "siamese.keras", model)


@pytest.mark.tf
def test_keras3_lambda_and_custom_layer_are_shown_not_runnable(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="Mine")
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.s = self.add_weight(shape=(shape[-1],), initializer="ones", name="s")

        def call(self, x):
            return x * self.s

    inp = keras.Input((5,), name="x")
    y = keras.layers.Lambda(lambda t: t * 2, name="lam")(inp)
    y = Scale(name="sc")(y)
    y = keras.layers.Dense(2, name="d")(y)
    model = keras.Model(inp, y)
    model.save(tmp_path / "m.keras")
    with open_model(tmp_path / "m.keras") as source:
        g = source.graph
        assert (g["lam"].class_name, g["lam"].runnable) == ("Lambda", False)
        assert (g["sc"].class_name, g["sc"].runnable) == ("Scale", False)
        assert "Mine>Scale" in g["sc"].note or "Scale" in g["sc"].note
        # Keras stored the shapes it computed, so even after the Lambda they are known
        assert g["sc"].output_shape == [None, 5] and g["d"].output_shape == [None, 2]
        # a custom layer's weights have no known names in a .keras file: named by position
        np.testing.assert_array_equal(source.weights("sc")["var0"], np.ones(5, np.float32))
        assert list(source.weights("d")) == ["kernel", "bias"]
