"""Real Keras models saved to disk, with what Keras itself reports about them (the test oracle).

Built once per test session (TensorFlow is slow to import) into a session temp folder:

* ``keras2``: a tf_keras Functional model with Conv2D+BN+ReLU, SeparableConv2D, a nested Sequential
  (two Conv+BN pairs: Keras stores its trainable weights first), a nested Functional (DepthwiseConv2D,
  a frozen BatchNormalization and a custom layer, so its weights need name matching), TFOpLambda
  ``x + 3`` and ``x * y`` (a tensor keyword argument), a Lambda whose code writes a marker file when
  run, a custom layer class, Add, GlobalAveragePooling2D, Dense. Saved as ``.h5``.
* ``keras2_seq``: tf_keras Sequential inside Sequential.
* ``keras3``: a Keras 3 Functional model with the same kinds of layers, ops ``x + 3`` and ``x * y``,
  nested Sequential (in Functional and in Sequential) and nested Functional; saved as ``.keras``
  and as a Keras-3 ``.h5``.
* ``zoo``: every layer class shapes.py knows, for shape inference against Keras (both generations).

Each case carries ``truth``: ``{flat name: {"class", "shape", "params", "weights"}}`` read from the
live Keras model (``layer.output.shape``, ``count_params()``, ``get_weights()``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
FER_MODEL = REPO / ".venv" / "lib" / "python3.11" / "site-packages" / "fer" / "data" / "emotion_model.hdf5"

_CACHE: dict[str, Any] = {}


@dataclass
class Case:
    """A saved model and what Keras says about it."""

    paths: dict[str, Path]
    truth: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def session_dir() -> Path:
    """One temp folder per test process for the generated models."""
    if "dir" not in _CACHE:
        _CACHE["dir"] = Path(tempfile.mkdtemp(prefix="qinspect-keras-models-"))
    return _CACHE["dir"]


def _shape(tensor_shape: Any) -> list[int | None]:
    if hasattr(tensor_shape, "as_list"):
        return tensor_shape.as_list()
    return [None if d is None else int(d) for d in tensor_shape]


def keras_truth(model: Any, model_classes: tuple[type, ...], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Flatten a live Keras model like qinspect does and record Keras' own answers."""
    truth: dict[str, dict[str, Any]] = {}
    for layer in model.layers:
        name = prefix + layer.name
        nested = isinstance(layer, model_classes)
        if prefix and type(layer).__name__ == "InputLayer":
            continue  # inner inputs are aliased to the outer tensor
        entry = {
            "class": type(layer).__name__,
            "params": int(layer.count_params()) if layer.weights or not nested else 0,
            "container": nested,
        }
        if not nested:
            entry["shape"] = _shape(layer.output.shape)
            entry["weights"] = [np.asarray(w) for w in layer.get_weights()]
            entry["weight_names"] = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
        truth[name] = entry
        if nested:
            truth.update(keras_truth(layer, model_classes, name + "/"))
    return truth


# ----------------------------------------------------------------------------------------- keras 2


def keras2_case() -> Case:
    """The tf_keras model described in the module docstring, saved as .h5 (built once)."""
    if "keras2" in _CACHE:
        return _CACHE["keras2"]
    import tf_keras as K  # noqa: N812 - the usual alias

    L = K.layers
    K.utils.set_random_seed(7)
    out = session_dir()
    marker = out / "lambda_ran.txt"

    class MyScale(L.Layer):
        """A custom layer: qinspect shows it but never runs it."""

        def build(self, shape: Any) -> None:
            self.scale = self.add_weight(name="scale", shape=(shape[-1],), initializer="random_normal")

        def call(self, x: Any) -> Any:
            return x * self.scale

    inner_seq = K.Sequential(
        [
            L.InputLayer((8, 8, 4)),
            L.Conv2D(6, 3, padding="same", name="ic1"),
            L.BatchNormalization(name="ibn1"),
            L.ReLU(name="ir1"),
            L.Conv2D(4, 1, name="ic2"),
            L.BatchNormalization(name="ibn2"),
        ],
        name="inner_seq",
    )
    ii = L.Input((8, 8, 4), name="ii")
    t = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="idw")(ii)
    frozen_bn = L.BatchNormalization(name="ibn_frozen")
    t = frozen_bn(t)
    t = MyScale(name="iscale")(t)
    t = L.Conv2D(4, 1, name="ipw")(t)
    inner_fn = K.Model(ii, t, name="inner_fn")
    frozen_bn.trainable = False

    inp = L.Input((16, 16, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.SeparableConv2D(4, 3, strides=2, padding="same", name="sep")(x)
    y = inner_seq(x)
    z = inner_fn(y)
    z = z + 3
    w = z * y
    target = str(marker)
    w = L.Lambda(lambda v, p=target: (open(p, "w").write("ran"), v)[1], name="lam")(w)
    w = MyScale(name="mys")(w)
    s = L.Add(name="add")([w, y])
    s = L.GlobalAveragePooling2D(name="gap")(s)
    o = L.Dense(3, name="fc")(s)
    model = K.Model(inp, o, name="outer")
    # Non-trivial BN statistics, so a mix-up of moving_mean/variance shows.
    for layer in [model.get_layer("bn1"), inner_seq.get_layer("ibn1"), inner_seq.get_layer("ibn2"), frozen_bn]:
        layer.set_weights([np.random.default_rng(len(v.shape)).normal(size=v.shape) + 2 for v in layer.weights])

    h5 = out / "keras2.h5"
    model.save(h5)
    weights_only = out / "keras2_weights_only.h5"
    model.save_weights(weights_only)
    _CACHE["keras2_model"] = model
    truth = keras_truth(model, (K.Model,))
    lambda_ran_at_build = marker.exists()
    marker.unlink(missing_ok=True)

    seq = K.Sequential(
        [
            L.InputLayer((10,)),
            K.Sequential([L.Dense(6, name="d1"), L.BatchNormalization(name="bn")], name="seqin"),
            L.Dense(2, name="d2"),
        ],
        name="seqout",
    )
    seq_path = out / "keras2_seq.h5"
    seq.save(seq_path)
    _CACHE["keras2_seq"] = Case({"h5": seq_path}, keras_truth(seq, (K.Model,)))

    case = Case(
        {"h5": h5, "weights_only": weights_only},
        truth,
        {"marker": marker, "lambda_ran_at_build": lambda_ran_at_build},
    )
    _CACHE["keras2"] = case
    return case


def keras2_savedmodel() -> Path:
    """The keras2 model saved as a SavedModel folder (slow: TensorFlow traces it; built once)."""
    if "keras2_savedmodel" not in _CACHE:
        case = keras2_case()
        folder = session_dir() / "keras2_savedmodel"
        _CACHE["keras2_model"].save(folder, save_format="tf")  # tracing runs the Lambda
        case.extra["marker"].unlink(missing_ok=True)
        _CACHE["keras2_savedmodel"] = folder
    return _CACHE["keras2_savedmodel"]


def keras2_seq_case() -> Case:
    """tf_keras Sequential inside Sequential (built with keras2_case)."""
    keras2_case()
    return _CACHE["keras2_seq"]


# ----------------------------------------------------------------------------------------- keras 3


def keras3_case() -> Case:
    """A Keras 3 model saved as .keras and as Keras-3 .h5 (built once)."""
    if "keras3" in _CACHE:
        return _CACHE["keras3"]
    import keras

    L = keras.layers
    keras.utils.set_random_seed(11)
    out = session_dir()
    inner_seq = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            L.Conv2D(4, 3, padding="same", name="ic"),
            L.BatchNormalization(name="ibn"),
            keras.Sequential([L.Conv2D(4, 1, name="deep"), L.ReLU(name="deep_relu")], name="seq_in_seq"),
        ],
        name="inner_seq",
    )
    ii = keras.Input((8, 8, 4), name="ii")
    t = L.DepthwiseConv2D(3, padding="same", name="idw")(ii)
    t = L.Conv2D(4, 1, name="ipw")(t)
    inner_fn = keras.Model(ii, t, name="inner_fn")

    inp = keras.Input((16, 16, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.SeparableConv2D(4, 3, strides=2, padding="same", name="sep")(x)
    y = inner_seq(x)
    z = inner_fn(y)
    z = z + 3
    w = z * y
    s = L.Add(name="addl")([w, y])
    s = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="up")(s)
    s = L.GlobalAveragePooling2D(name="gap")(s)
    o = L.Dense(3, name="fc")(s)
    model = keras.Model(inp, o, name="outer3")
    for layer in [model.get_layer("bn1"), inner_seq.get_layer("ibn")]:
        layer.set_weights([np.random.default_rng(3).normal(size=v.shape) + 2 for v in layer.weights])
    path = out / "keras3.keras"
    model.save(path)
    h5 = out / "keras3.h5"
    model.save(h5)
    truth = keras_truth(model, (keras.Model,))
    ops = {op.name: _shape(op.output.shape) for op in model.operations if not isinstance(op, keras.layers.Layer)}
    case = Case({"keras": path, "h5": h5}, truth, {"ops": ops})
    _CACHE["keras3"] = case
    return case


# ----------------------------------------------------------------------------------------- shape zoo


def build_zoo(K: Any) -> Any:
    """One model using every layer class shapes.py infers, with awkward settings (strides, valid)."""
    L = K.layers
    inp = L.Input((23, 19, 3), name="zin")
    a = L.Conv2D(6, (3, 5), strides=(2, 1), padding="valid", dilation_rate=1, name="conv_valid")(inp)
    b = L.Conv2D(6, 3, padding="same", dilation_rate=2, name="conv_dil")(inp)
    b = L.DepthwiseConv2D(3, strides=2, padding="valid", depth_multiplier=3, name="dw")(b)
    b = L.SeparableConv2D(6, 3, strides=1, padding="same", name="sep_z")(b)
    b = L.Conv2DTranspose(5, 3, strides=2, padding="valid", name="tconv_valid")(b)
    b = L.Conv2DTranspose(4, 4, strides=2, padding="same", name="tconv_same")(b)
    b = L.MaxPooling2D(3, strides=2, padding="valid", name="maxp")(b)
    b = L.AveragePooling2D(2, padding="same", name="avgp")(b)
    b = L.ZeroPadding2D(((1, 2), (0, 3)), name="zpad")(b)
    b = L.Cropping2D(((0, 1), (2, 0)), name="crop")(b)
    b = L.UpSampling2D((2, 3), name="ups")(b)
    b = L.BatchNormalization(name="bnz")(b)
    b = L.ReLU(max_value=6.0, name="relu6")(b)
    b = L.LeakyReLU(name="lrelu")(b)
    b = L.PReLU(name="prelu")(b)
    b = L.Activation("sigmoid", name="act")(b)
    b = L.Dropout(0.5, name="drop")(b)
    b = L.Rescaling(0.5, name="resc")(b)
    c = L.Conv2D(4, 1, name="proj")(b)
    d = L.Conv2D(4, 1, name="proj2")(b)
    merged = [
        L.Add(name="m_add")([c, d]),
        L.Multiply(name="m_mul")([c, d]),
        L.Subtract(name="m_sub")([c, d]),
        L.Average(name="m_avg")([c, d]),
        L.Maximum(name="m_max")([c, d]),
        L.Minimum(name="m_min")([c, d]),
    ]
    cat = L.Concatenate(name="cat")(merged)
    gmax = L.GlobalMaxPooling2D(keepdims=True, name="gmax_keep")(cat)
    gavg = L.GlobalAveragePooling2D(name="gavg")(cat)
    perm = L.Permute((3, 1, 2), name="perm")(cat)
    flat = L.Flatten(name="flat")(perm)
    dense = L.Dense(12, name="dz")(flat)
    resh = L.Reshape((3, -1), name="resh")(dense)
    soft = L.Softmax(name="soft")(resh)
    flat2 = L.Flatten(name="flat2")(gmax)
    outs = L.Concatenate(name="tail")([L.Flatten(name="flat3")(soft), flat2, gavg, L.Flatten(name="flat_a")(a)])
    return K.Model(inp, outs, name="zoo")


def zoo_case(generation: str) -> Case:
    """The zoo saved by tf_keras (``"keras2"``, .h5) or Keras 3 (``"keras3"``, .keras)."""
    key = f"zoo_{generation}"
    if key in _CACHE:
        return _CACHE[key]
    if generation == "keras2":
        import tf_keras as K  # noqa: N812 - the usual alias

        model = build_zoo(K)
        path = session_dir() / "zoo2.h5"
    else:
        import keras as K  # noqa: N812

        model = build_zoo(K)
        path = session_dir() / "zoo3.keras"
    model.save(path)
    case = Case({"model": path}, keras_truth(model, (K.Model,)))
    _CACHE[key] = case
    return case
