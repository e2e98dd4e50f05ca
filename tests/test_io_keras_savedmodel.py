"""Keras SavedModel folders (tf_keras ``model.save(dir)``), read without deserializing any layer."""

from __future__ import annotations

import pytest
from conftest import run_cli
from io_keras_fixtures import keras2_case, keras2_savedmodel
from test_io_keras_h5 import assert_matches_keras, assert_topological

from qinspect.errors import QInspectError
from qinspect.io.model_file import NeedsTensorFlowError, open_model

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def k2():
    case = keras2_case()
    case.paths["savedmodel"] = keras2_savedmodel()
    return case


def test_io_refuses_savedmodel_and_says_tensorflow_is_needed(k2):
    with pytest.raises(NeedsTensorFlowError, match="SavedModel folder; reading it needs TensorFlow"):
        open_model(k2.paths["savedmodel"])


def test_savedmodel_graph_and_weights_equal_tf_keras(k2):
    from qinspect.capture.savedmodel import open_savedmodel

    with open_savedmodel(k2.paths["savedmodel"]) as source:
        assert source.kind == "savedmodel"
        g = source.graph
        # the same config as the .h5: shapes are unknown after the custom layer / Lambda
        unknown = {"inner_fn/iscale", "inner_fn/ipw", "tf.__operators__.add", "tf.math.multiply"}
        unknown |= {"lam", "mys", "add", "gap", "fc"}
        assert_matches_keras(source, k2.truth, unknown_shapes=unknown)
        assert_topological(g)
        assert not g["lam"].runnable
        assert g["tf.math.multiply"].call_kwargs == {"y": {"__inbound__": 1}}


def test_savedmodel_lambda_is_never_run(k2):
    marker = k2.extra["marker"]
    marker.unlink(missing_ok=True)
    result = run_cli("info", str(k2.paths["savedmodel"]))
    assert result.returncode == 0, result.stderr
    assert "inner_seq/" in result.stdout and "Lambda !" in result.stdout
    assert not marker.exists()


def test_savedmodel_with_damaged_metadata(k2, tmp_path):
    import shutil

    from qinspect.capture.savedmodel import open_savedmodel

    folder = tmp_path / "sm"
    shutil.copytree(k2.paths["savedmodel"], folder)
    (folder / "keras_metadata.pb").write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(QInspectError, match="damaged keras_metadata.pb"):
        open_savedmodel(folder)


def test_an_adapted_normalization_counts_the_params_keras_counts(tmp_path):
    """A SavedModel also tracks Normalization's adapt_mean and adapt_variance, which Keras neither counts
    nor saves in .h5: the layer read 13 parameters where Keras says 7."""
    import numpy as np
    import tf_keras as keras

    from qinspect.capture.savedmodel import open_savedmodel

    norm = keras.layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).normal(size=(16, 4, 4, 3)).astype(np.float32))
    inp = keras.Input((4, 4, 3))
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, name="c")(norm(inp)))
    model.save(tmp_path / "sm")
    with open_savedmodel(tmp_path / "sm") as source:
        assert source.graph["norm"].params == model.get_layer("norm").count_params() == 7
        assert source.graph.total_params == model.count_params()
        assert set(source.weights("norm")) == {"mean", "variance", "count"}
