"""Captures for the GUI tests, written with the real capture writer, with hand-checkable values.

``hand`` holds the same 100 values in every sample: ``x_i = (i - 50) / 16`` for i = 0..99, so at
position p = 5 (range [-4, 3.96875], step 1/32) nothing clips and every value is exact, and at p = 6
(range [-2, 1.984375]) exactly 18 values clip at each end (see test_gui_window).
The ``chain_k`` layers are ReLU-like outputs scaled by ``k + 1``, so each layer's maximum says which
layer a panel is showing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qinspect.io.capture_file import CaptureWriter
from qinspect.io.graph import Layer, ModelGraph

N_SAMPLES = 12
N_CHAIN = 55
HAND_VALUES = (np.arange(100, dtype=np.float32) - 50) / 16


def chain_max(k: int) -> float:
    """The largest activation of ``chain_k`` in the capture."""
    return float(chain_values(k).max())


def chain_values(k: int, n: int = N_SAMPLES, scale: float = 1.0) -> np.ndarray:
    """Activations of ``chain_k``: (n, 100), non-negative, maximum (k + 1) * scale."""
    rng = np.random.default_rng(k)
    x = np.abs(rng.normal(size=(n, 100))).astype(np.float32)
    x /= x.max()
    return (x * (k + 1) * scale).astype(np.float32)


CONV_CFG = {"filters": 4, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same", "activation": "linear",
            "use_bias": True}


def gui_graph() -> ModelGraph:
    """input -> block/conv (nested) -> flat -> hand (Dense) -> chain_0 .. chain_{N_CHAIN-1} (ReLU).

    A model the emulator can run (its own float reference comes from the inputs and the weights);
    the captured activations are the hand-made values above, which the layer panel reads.
    """
    layers = [
        Layer("input", "InputLayer", output_shape=[None, 8, 8, 4]),
        Layer("block", "Functional", is_container=True),
        Layer("block/conv", "Conv2D", config=CONV_CFG, inbound=["input"], output_shape=[None, 8, 8, 4],
              parent="block", params=4 * 4 * 9 + 4, weight_shapes={"kernel": [3, 3, 4, 4], "bias": [4]}),
        Layer("flat", "Flatten", inbound=["block/conv"], output_shape=[None, 256]),
        Layer("hand", "Dense", config={"units": 100, "activation": "linear", "use_bias": True}, inbound=["flat"],
              output_shape=[None, 100], params=256 * 100 + 100, weight_shapes={"kernel": [256, 100], "bias": [100]}),
    ]
    prev = "hand"
    for k in range(N_CHAIN):
        layers.append(Layer(f"chain_{k}", "ReLU", inbound=[prev], output_shape=[None, 100]))
        prev = f"chain_{k}"
    return ModelGraph("guimodel", layers, ["input"], [prev])


class GuiWeights:
    """A conv kernel whose output channel c spans ±2^-c: channel c wastes c bits."""

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        if layer == "hand":
            rng = np.random.default_rng(7)
            return {"kernel": (rng.normal(size=(256, 100)) / 16).astype(np.float32),
                    "bias": np.zeros(100, np.float32)}
        if layer != "block/conv":
            return {}
        k = np.linspace(-1, 1, 3 * 3 * 4 * 4, dtype=np.float32).reshape(3, 3, 4, 4)
        k = k / np.abs(k).max(axis=(0, 1, 2), keepdims=True)  # each channel max|w| = 1
        k = k * (2.0 ** -np.arange(4, dtype=np.float32))
        return {"kernel": k.astype(np.float32), "bias": np.zeros(4, np.float32)}


def write_gui_capture(path: Path, scale: float = 1.0, n: int = N_SAMPLES) -> Path:
    """Write the GUI test capture (``scale`` multiplies the chain activations: an evaluation set)."""
    graph = gui_graph()
    shapes = {"block/conv": (8, 8, 4), "flat": (256,), "hand": (100,)}
    shapes.update({f"chain_{k}": (100,) for k in range(N_CHAIN)})
    rng = np.random.default_rng(1)
    with CaptureWriter(path, graph, n, shapes, {"input": (8, 8, 4)}, input_links={"input": "input"},
                       overwrite=True) as writer:
        writer.write_weights(GuiWeights(), [layer.name for layer in graph.leaves()])
        acts = {
            "block/conv": rng.normal(size=(n, 8, 8, 4)).astype(np.float32),
            "flat": rng.normal(size=(n, 256)).astype(np.float32),
            "hand": np.tile(HAND_VALUES, (n, 1)),
        }
        acts.update({f"chain_{k}": chain_values(k, n, scale) for k in range(N_CHAIN)})
        writer.write_batch(0, {"input": rng.normal(size=(n, 8, 8, 4)).astype(np.float32)}, acts)
    return path


def window_on(qtbot, tmp_path: Path, path: Path | str):  # noqa: ANN201 - a MainWindow (Qt imported late)
    """A window on a settings file of its own, ``path`` opened and its model-wide emulation done."""
    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.open_channel.finished, timeout=20000):
        win.open_path(str(path))
    qtbot.waitUntil(lambda: win.session.analysis is not None and not win.session.channels["emulate"].busy,
                    timeout=60000)
    return win


def isolated_settings(tmp_path: Path) -> str:
    """A settings file of the test's own (never the user's)."""
    path = str(tmp_path / "qinspect-settings.ini")
    os.environ["QINSPECT_SETTINGS"] = path
    return path


def stop_helpers() -> None:
    """Stop the GUI's helper processes (module teardown: before the interpreter's exit joins them)."""
    from qinspect.gui import compute_process

    compute_process.shutdown()


def main_window(qtbot, tmp_path: Path):
    """A shown MainWindow with settings of its own, shut down after the test (use with ``yield from``)."""
    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown()
