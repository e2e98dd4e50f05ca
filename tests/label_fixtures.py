"""A capture of images in class folders, and the model that classifies them (tests of class-folder labels)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

# Folders sorted by name: blue = class 0, green = 1, red = 2. Each image is one colour; "green" also
# holds one red image, which the model (correctly) calls red: the float accuracy is 6/7, not 1.
FOLDERS = {"blue": [2, 2], "green": [1, 1, 0], "red": [0, 0]}  # the channel lit in each image


def class_folders(tmp_path):
    """``val/{blue,green,red}/<i>.png``, one lit colour channel per image (FOLDERS)."""
    root = tmp_path / "val"
    for name, channels in FOLDERS.items():
        (root / name).mkdir(parents=True)
        for i, ch in enumerate(channels):
            pixels = np.full((16, 16, 3), 20, np.uint8)
            pixels[..., ch] = 200 + 10 * i
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def classifier(path, classes: int = 3):
    """Mean colour -> class: class 0 is blue, 1 green, 2 red (the folders' sorted numbering)."""
    import tf_keras as keras

    x = keras.Input((16, 16, 3), name="img")
    h = keras.layers.Conv2D(3, 1, name="conv")(x)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    y = keras.layers.Dense(classes, activation="softmax", name="probs")(h)
    model = keras.Model(x, y)
    model.get_layer("conv").set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3), np.zeros(3, np.float32)])
    kernel = np.zeros((3, classes), np.float32)
    kernel[2, 0] = kernel[1, 1] = kernel[0, 2] = 8.0  # channel -> class
    model.get_layer("probs").set_weights([kernel, np.zeros(classes, np.float32)])
    model.save(path)
    return path


@pytest.fixture(scope="module")
def labelled_capture(tmp_path_factory):
    """(folder, image root, model, capture, capture's stderr): the colour classifier captured on the folders."""
    tmp = tmp_path_factory.mktemp("classes")
    root = class_folders(tmp)
    model = classifier(tmp / "colours.h5")
    cap = tmp / "cap.h5"
    done = run_cli("capture", str(model), "--inputs", str(root), "--preprocess", "0..1", "-o", str(cap), "-q")
    assert done.returncode == 0, done.stderr
    return tmp, root, model, cap, done.stderr
