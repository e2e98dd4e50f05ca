"""Tiny tf_keras models with one cause of int8 error planted on purpose, for the diagnosis tests.

Each builder saves a Keras-2 ``.h5`` and returns ``Plant(path, calib, eval, layer, kind)``: the float
model, calibration inputs, optional evaluation inputs, and the layer and kind a correct diagnosis must
rank first. Models are small (16x16 inputs, a handful of layers) so the whole set builds in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

H = W = 16
N = 32


@dataclass
class Plant:
    path: Path
    calib: np.ndarray
    eval: np.ndarray | None
    layer: str
    kind: str


def _keras():
    import tf_keras as keras

    keras.utils.set_random_seed(7)
    return keras


def _inputs(seed: int, n: int = N, lo: float = 0.0, hi: float = 0.9, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, H, W, c)).astype(np.float32)


def _head(keras, x, name: str = "out"):
    """GAP then a dense head: the usual end of a small classifier."""
    y = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.layers.Dense(4, name=name)(y)


def channel_spread(folder: Path) -> Plant:
    """The depthwise case: input channel 2 is small (binary {0, 1/64}, exact in int8) and the depthwise
    kernel of that channel 50x the others, so the outputs of all channels have similar ranges but one
    per-tensor weight position leaves the other channels' kernels a handful of codes."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw_spread")(inp)
    x = keras.layers.ReLU(name="relu1")(x)
    out = _head(keras, x)
    model = keras.Model(inp, out)
    k, b = model.get_layer("dw_spread").get_weights()
    k[:, :, 2, :] *= 50.0
    model.get_layer("dw_spread").set_weights([k, b])
    path = folder / "spread.h5"
    model.save(path)
    calib = _inputs(1)
    calib[..., 2] = (calib[..., 2] > 0.45).astype(np.float32) / 64.0
    return Plant(path, calib, None, "dw_spread", "channel_spread")


def relu6_spread(folder: Path) -> Plant:
    """conv -> ReLU6 -> depthwise (channel 0's kernel 40x, the others 0.3x) -> ReLU6 -> conv (channel 0's
    weights /40, so the float function stays reasonable): the per-tensor depthwise position leaves
    channels 1..7 a handful of codes; CLE would balance them, but both pairs are joined by ReLU6, which
    the quantizer skips by default: the cure is the option ``cle_to_relu6=True``."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((H, W, 3), name="img")
    x = keras.layers.Conv2D(8, 1, name="c1")(inp)
    x = keras.layers.ReLU(6.0, name="r1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.ReLU(6.0, name="r2")(x)
    x = keras.layers.Conv2D(8, 1, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="out")(x))
    w, b = model.get_layer("dw").get_weights()
    w[..., 0, 0] *= 40
    w[..., 1:, 0] *= 0.3
    model.get_layer("dw").set_weights([w, b])
    cw, cb = model.get_layer("c2").get_weights()
    cw[:, :, 0, :] /= 40
    model.get_layer("c2").set_weights([cw, cb])
    path = folder / "m.h5"
    model.save(path)
    calib = np.random.default_rng(0).uniform(0, 1, (N, H, W, 3)).astype(np.float32)
    return Plant(path, calib, None, "dw", "channel_spread")


def _spike_branch(keras, inp):
    """conv1 + spike (a 1x1 conv passing input channel 2) -> add -> relu_outlier."""
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    spike = keras.layers.Conv2D(8, 1, use_bias=False, name="spike")(inp)
    x = keras.layers.Add(name="add")([x, spike])
    return keras.layers.ReLU(name="relu_outlier")(x)


def _plant_spikes(model, blind: tuple[str, ...] = ("conv1",)) -> None:
    """The spike conv passes input channel 2 times 512; the ``blind`` convs ignore that channel."""
    k = np.zeros((1, 1, 3, 8), np.float32)
    k[0, 0, 2, :] = 512.0
    model.get_layer("spike").set_weights([k])
    for name in blind:
        k1, b1 = model.get_layer(name).get_weights()
        k1[:, :, 2, :] = 0.0
        model.get_layer(name).set_weights([k1, b1])


def _spike_inputs() -> np.ndarray:
    """Inputs in [0, 0.9] whose channel 2 is zero except at 3 pixels in 8192."""
    calib = _inputs(2)
    flat = np.zeros(N * H * W, np.float32)
    flat[np.random.default_rng(3).choice(flat.size, 3, replace=False)] = 0.875
    calib[..., 2] = flat.reshape(N, H, W)
    return calib


def outlier(folder: Path) -> Plant:
    """A spike branch (a 1x1 conv passing input channel 2, zero except at 3 pixels in 8192, times 500)
    added to a normal conv: the sum's range is set by the rare spikes and its bulk keeps a few codes.
    The inputs themselves stay within [0, 0.9]."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    model = keras.Model(inp, _head(keras, _spike_branch(keras, inp)))
    _plant_spikes(model)
    path = folder / "outlier.h5"
    model.save(path)
    return Plant(path, _spike_inputs(), None, "relu_outlier", "outlier_range")


def _conv_relu_model(path: Path) -> Path:
    """img -> conv1 -> relu1 -> GAP -> dense: a plain small model, saved at ``path``."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.ReLU(name="relu1")(x)
    keras.Model(inp, _head(keras, x)).save(path)
    return path


def coverage(folder: Path) -> Plant:
    """Calibration inputs in [0, 0.9]; evaluation inputs twice as large."""
    path = _conv_relu_model(folder / "coverage.h5")
    return Plant(path, _inputs(4), 2.0 * _inputs(5), "img", "coverage")


def alignment(folder: Path) -> Plant:
    """Two branches, one ~50x the other's range, concatenated; a 1x1 conv with exactly representable
    weights weighs them back to equal importance, so only the concat's shared position hurts."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    a = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inp)
    a = keras.layers.ReLU(name="relu_a")(a)
    b = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(inp)
    b = keras.layers.ReLU(name="relu_b")(b)
    cat = keras.layers.Concatenate(name="cat")([a, b])
    out = keras.layers.Conv2D(4, 1, use_bias=False, name="mix")(cat)
    model = keras.Model(inp, out)
    k, bias = model.get_layer("conv_b").get_weights()
    model.get_layer("conv_b").set_weights([k * 50.0, bias * 50.0])
    mix = np.zeros((1, 1, 8, 4), np.float32)
    for j in range(4):
        mix[0, 0, j, j] = 1.0  # branch a, channel j
        mix[0, 0, 4 + j, j] = -1.0 / 64  # branch b, channel j: exact in int8 at position 7 (code -2)
    model.get_layer("mix").set_weights([mix])
    path = folder / "alignment.h5"
    model.save(path)
    return Plant(path, _inputs(6), None, "cat", "alignment")


def leaky(folder: Path) -> Plant:
    """A LeakyReLU with alpha 0.2 between two convs: the DPU cannot run it. The model ends in a softmax,
    also on the CPU but at the edge (no round trip): the LeakyReLU must rank above it."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.LeakyReLU(alpha=0.2, name="leaky")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = _head(keras, x, name="logits")
    out = keras.layers.Softmax(name="probs")(x)
    model = keras.Model(inp, out)
    path = folder / "leaky.h5"
    model.save(path)
    return Plant(path, _inputs(7), None, "leaky", "cpu_fallback")


def growth(folder: Path) -> Plant:
    """conv2 reads a constant channel through a +1/-1 tap pair that cancels exactly, so its weight range
    is set by weights that contribute nothing, while the signal flows through weights ~100x smaller that
    keep one or two codes: conv2 adds far more error than it inherits (no saturation, no outliers, and
    every output channel has the same range)."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, padding="valid", name="conv_growth")(x)
    out = _head(keras, x)
    model = keras.Model(inp, out)
    k, b = model.get_layer("conv1").get_weights()
    k[..., 0] = 0.0
    b[0] = 1.0  # channel 0 is the constant 1 after the ReLU
    b[1:] = np.abs(b[1:]) + 0.1
    model.get_layer("conv1").set_weights([k, b])
    rng = np.random.default_rng(8)
    k2 = rng.normal(scale=0.01, size=(3, 3, 8, 8)).astype(np.float32)
    k2[:, :, 0, :] = 0.0
    k2[0, 0, 0, :] = 1.0
    k2[0, 1, 0, :] = -1.0
    model.get_layer("conv_growth").set_weights([k2, np.zeros(8, np.float32)])
    path = folder / "growth.h5"
    model.save(path)
    return Plant(path, _inputs(9), None, "conv_growth", "error_growth")


def calib_outliers(folder: Path) -> Plant:
    """Calibration inputs with rare huge outliers (4 pixels at 40, the rest in [0, 0.9]); evaluation
    inputs clean. The outliers set the input's position in calibration; in use they never come."""
    path = _conv_relu_model(folder / "calib_outliers.h5")
    calib = _inputs(11)
    flat = calib.reshape(-1)
    flat[np.random.default_rng(12).choice(flat.size, 4, replace=False)] = 40.0
    return Plant(path, calib, _inputs(13), "img", "outlier_range")


def dim_calibration(folder: Path) -> Plant:
    """Calibration data 4x dimmer than use, through a chain of layers: every layer's range is too small,
    and it all starts at the input."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    out = _head(keras, x)
    model = keras.Model(inp, out)
    k, b = model.get_layer("conv1").get_weights()
    model.get_layer("conv1").set_weights([k, np.abs(b) + 0.05])
    path = folder / "dim.h5"
    model.save(path)
    return Plant(path, 0.25 * _inputs(14), _inputs(15), "img", "coverage")


# Issue 9's planted root causes: (builder, layers the origin's finding must list as affected)
ROOT_CAUSES = {
    "calib_outliers": (calib_outliers, []),
    "dim_calibration": (dim_calibration, ["relu1", "relu2"]),
}

BUILDERS = {
    "channel_spread": channel_spread,
    "outlier_range": outlier,
    "coverage": coverage,
    "alignment": alignment,
    "cpu_fallback": leaky,
    "error_growth": growth,
}


def two_heads(folder: Path) -> Plant:
    """Two outputs: ``seg``, a 3x3 conv of the image (2048 values a sample, quantized well), and ``cls``,
    the outlier model's head (4 values a sample, behind a range that rare spikes stretch). Pooled by
    signal power, seg sets the output SQNR and hides how much worse cls is."""
    keras = _keras()
    inp = keras.Input((H, W, 3), name="img")
    seg = keras.layers.Conv2D(8, 3, padding="same", name="seg")(inp)
    model = keras.Model(inp, [seg, _head(keras, _spike_branch(keras, inp), "cls")])
    _plant_spikes(model, ("conv1", "seg"))
    path = folder / "two_heads.h5"
    model.save(path)
    return Plant(path, _spike_inputs(), None, "relu_outlier", "outlier_range")
