"""Which layer classes qinspect lets TensorFlow rebuild: Keras's own, and the few that keras.applications
define for themselves, recognised by name, module and exact config keys (no code is ever looked at)."""

from __future__ import annotations

from qinspect.io.keras_classes import is_keras_own

_SCALE = {"name": "custom_scale_layer", "trainable": True, "dtype": "float32", "scale": 0.17}


def test_inception_resnet_custom_scale_layer_as_tf_keras_saves_it_is_keras_own():
    # tf_keras registers the class as serializable, so its .h5 names it "Custom>CustomScaleLayer"
    assert is_keras_own({"class_name": "Custom>CustomScaleLayer", "config": dict(_SCALE)})


def test_inception_resnet_custom_scale_layer_as_keras3_saves_it_is_keras_own():
    assert is_keras_own({"module": "keras.src.applications.inception_resnet_v2", "class_name": "CustomScaleLayer",
                         "registered_name": "CustomScaleLayer",
                         "config": {**_SCALE, "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                                         "config": {"name": "float32"}}}})


def test_a_users_class_of_the_same_name_is_not_keras_own():
    # another module (Keras 3 records it) or another config (an argument keras.applications' layer lacks)
    assert not is_keras_own({"module": "my_project.layers", "class_name": "CustomScaleLayer",
                             "registered_name": "CustomScaleLayer", "config": dict(_SCALE)})
    assert not is_keras_own({"class_name": "Custom>CustomScaleLayer", "config": {**_SCALE, "axis": -1}})
    assert not is_keras_own({"class_name": "MyScale", "config": dict(_SCALE)})
