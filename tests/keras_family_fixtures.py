"""Stock ``keras.applications`` families and a hand-built sequence model, saved offline (weights=None).

Built once per test process into a temp folder, smallest inputs that build, so the suite stays fast.
Each case carries Keras' own answers (``count_params()``, per-layer weights, its prediction on the
sample inputs) as the oracle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from io_keras_fixtures import session_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_CACHE: dict[str, Any] = {}


def clear_keras_sessions() -> None:
    """Reset the automatic layer names of tf_keras and Keras 3 (``dense_7`` -> ``dense``) in this process,
    so what one test builds never renames what another builds (other tests name layers by them)."""
    for module in ("tf_keras", "keras"):
        if module in sys.modules:
            sys.modules[module].backend.clear_session()


@pytest.fixture(autouse=True)
def fresh_keras_names() -> Iterator[None]:
    """Autouse where imported: the test starts and ends with Keras's automatic names reset."""
    clear_keras_sessions()
    yield
    clear_keras_sessions()


@dataclass
class Family:
    """A saved model, sample inputs for it and what Keras says about both."""

    path: Path
    inputs: Path  # a .npy of a few samples
    params: int  # Keras' count_params()
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)  # layer name -> get_weights()
    prediction: np.ndarray | None = None


def _save_inputs(name: str, shape: tuple[int, ...], lo: float, hi: float, n: int = 4) -> Path:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = rng.uniform(lo, hi, size=(n, *shape)).astype(np.float32)
    path = session_dir() / f"{name}_inputs.npy"
    np.save(path, x)
    return path


def _family(key: str, build: Any, suffix: str, shape: tuple[int, ...], lo: float, hi: float) -> Family:
    if key in _CACHE:
        return _CACHE[key]
    clear_keras_sessions()  # the stock names (normalization, not normalization_3) whatever ran before
    model = build()
    path = session_dir() / f"{key}{suffix}"
    model.save(path)
    inputs = _save_inputs(key, shape, lo, hi)
    weights = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers}
    fam = Family(path, inputs, int(model.count_params()), weights, np.asarray(model(np.load(inputs))))
    _CACHE[key] = fam
    return fam


def mobilenet_v3_h5() -> Family:
    """tf_keras MobileNetV3Small (32x32, its own Rescaling: pixels 0..255), Keras-2 ``.h5``."""
    import tf_keras as K  # noqa: N812

    return _family("mbv3", lambda: K.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                                     classes=5, classifier_activation=None),
                   ".h5", (32, 32, 3), 0, 255)


def densenet_h5() -> Family:
    """tf_keras DenseNet121 (32x32), Keras-2 ``.h5``: layer names like ``conv1/conv``."""
    import tf_keras as K  # noqa: N812

    return _family("densenet", lambda: K.applications.DenseNet121(input_shape=(32, 32, 3), weights=None,
                                                                  classes=5, classifier_activation=None),
                   ".h5", (32, 32, 3), -1, 1)


def mobilenet_v3_keras3() -> Family:
    """Keras 3 MobileNetV3Small (32x32) as a ``.keras`` archive (hard_silu activations)."""
    import keras

    return _family("k3mbv3", lambda: keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                                         classes=5, classifier_activation=None),
                   ".keras", (32, 32, 3), 0, 255)


def densenet_small_h5() -> Family:
    """tf_keras DenseNet with one layer per dense block (32x32): DenseNet121's layer kinds and names, fast."""
    from tf_keras.src.applications.densenet import DenseNet

    return _family("densenet_small", lambda: DenseNet([1, 1, 1, 1], input_shape=(32, 32, 3), weights=None, classes=5,
                                                      classifier_activation=None), ".h5", (32, 32, 3), -1, 1)


def efficientnet_h5() -> Family:
    """tf_keras EfficientNet at half width and depth (32x32): B0's Rescaling + Normalization inside, swish,
    squeeze-excite, every block kind, fewer channels."""
    from tf_keras.src.applications.efficientnet import EfficientNet

    return _family("effnet", lambda: EfficientNet(0.5, 0.5, 32, model_name="efficientnet_mini", weights=None,
                                                  input_shape=(32, 32, 3), classes=5, classifier_activation=None),
                   ".h5", (32, 32, 3), 0, 255)


def convnext_h5() -> Family:
    """tf_keras ConvNeXt with one block per stage and narrow stages (32x32, the smallest input that
    builds): ConvNeXtTiny's LayerNormalization, GELU, LayerScale and depthwise convs written as grouped
    Conv2D, without its 28M parameters."""
    from tf_keras.src.applications.convnext import ConvNeXt

    return _family("convnext", lambda: ConvNeXt([1, 1, 1, 1], [16, 32, 64, 128], input_shape=(32, 32, 3),
                                                weights=None, classes=5, classifier_activation=None,
                                                model_name="convnext_mini"), ".h5", (32, 32, 3), 0, 255)


def _sequence_model(k: Any, absolute: Any, name: str) -> Any:
    """Conv1D, |x - 0.5| as a TensorFlow function / Keras operation, Subtract, LSTM, GRU,
    LayerNormalization, a GELU Dense: built with Keras module ``k`` (tf_keras or Keras 3)."""
    k.utils.set_random_seed(5)
    L = k.layers  # noqa: N806
    inp = L.Input((12, 4), name="seq")
    c = L.Conv1D(8, 3, padding="same", activation="relu", name="conv1d")(inp)
    s = L.Subtract(name="subtract_layer")([c, absolute(c - 0.5)])
    h = L.LSTM(6, return_sequences=True, name="lstm")(s)
    n = L.LayerNormalization(name="layer_norm")(L.GRU(5, name="gru")(h))
    d = L.Dense(8, activation="gelu", name="dense_gelu")(n)
    return k.Model(inp, L.Dense(3, name="logits")(d), name=name)


def sequence_model_h5() -> Family:
    """The sequence model in tf_keras (``.h5``), with tf.math.abs."""
    import tensorflow as tf
    import tf_keras as K  # noqa: N812

    return _family("seqmodel", lambda: _sequence_model(K, tf.math.abs, "sequence_model"), ".h5", (12, 4), -2, 2)


def attention_model_h5() -> Family:
    """A tf_keras model with MultiHeadAttention: a Keras layer qinspect has no numpy implementation of."""
    import tf_keras as K  # noqa: N812

    def build() -> Any:
        K.utils.set_random_seed(9)
        L = K.layers  # noqa: N806
        inp = L.Input((6, 4), name="tokens")
        d = L.Dense(8, name="embed")(inp)
        a = L.MultiHeadAttention(2, 4, name="mha")(d, d)
        out = L.Dense(3, name="logits")(L.Flatten(name="flatten")(a))
        return K.Model(inp, out, name="attention_model")

    return _family("attention", build, ".h5", (6, 4), -2, 2)


def sequence_model_keras3() -> Family:
    """The sequence model in Keras 3 (``.keras``): keras.ops.abs, recurrent weights kept in their cell."""
    import keras

    return _family("seqmodel3", lambda: _sequence_model(keras, keras.ops.abs, "sequence_model3"), ".keras",
                   (12, 4), -2, 2)


def _inception_resnet_mini(irv2: Any, k: Any, name: str) -> Any:
    """InceptionResNetV2's stem conv, one block of each kind (stock ``inception_resnet_block``: its
    CustomScaleLayer, 0.17 / 0.1 / 0.2 scales, the last block with scale 1 and no activation as the
    stock model ends) and a classifier, at 9x9: every layer kind of the 56M-parameter model, small."""
    k.utils.set_random_seed(11)
    if hasattr(irv2, "layers") and irv2.layers is None:
        irv2.layers = k.layers  # tf_keras's module sets this global when InceptionResNetV2() runs
    inp = k.layers.Input((9, 9, 3), name="image")
    x = irv2.conv2d_bn(inp, 32, 3, name="stem")
    x = irv2.inception_resnet_block(x, 0.17, "block35", 1)
    x = irv2.inception_resnet_block(x, 0.1, "block17", 1)
    x = irv2.inception_resnet_block(x, 1.0, "block8", 10, activation=None)
    x = k.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return k.Model(inp, k.layers.Dense(5, name="predictions")(x), name=name)


def inception_resnet_h5() -> Family:
    """tf_keras InceptionResNetV2 in miniature (``.h5``): CustomScaleLayer saved as ``Custom>CustomScaleLayer``."""
    import tf_keras as K  # noqa: N812
    from tf_keras.src.applications import inception_resnet_v2 as irv2

    return _family("irv2", lambda: _inception_resnet_mini(irv2, K, "irv2_mini"), ".h5", (9, 9, 3), -1, 1)


def inception_resnet_keras3() -> Family:
    """The same miniature in Keras 3 (``.keras``): CustomScaleLayer named by its keras.applications module."""
    import keras
    from keras.src.applications import inception_resnet_v2 as irv2

    return _family("k3irv2", lambda: _inception_resnet_mini(irv2, keras, "irv2_mini3"), ".keras", (9, 9, 3), -1, 1)


def inception_resnet_keras3_h5() -> Family:
    """The Keras 3 miniature saved as HDF5: the config names no module, so loading it needs the class."""
    import keras
    from keras.src.applications import inception_resnet_v2 as irv2

    return _family("k3irv2h5", lambda: _inception_resnet_mini(irv2, keras, "irv2_mini3h5"), ".h5", (9, 9, 3), -1, 1)
