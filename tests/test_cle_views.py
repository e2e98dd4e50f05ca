"""Views that set a capture's float values against an int8 position show the tensor the position was
chosen on. Cross-layer equalization scales a head's output channels (and everything up to its tail):
the capture holds the float model's tensor, the int8 model holds it times the per-channel scales. The
report's histogram, clipped fractions and coverage read the float model's tensor against the equalized
position and showed clipping that never happens (2.29% above, 0% in the int8 pipeline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from qinspect.dpu.emulator import Emulator
from qinspect.io.capture_file import Capture

pytestmark = pytest.mark.tf

CHANNEL_GAIN = np.array([6.0, 1.0, 0.2, 3.0], np.float32)  # unequal channel ranges, as trained nets have


def _model(path):
    import tf_keras as keras

    x = keras.Input((8, 8, 3), name="img")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="head")(x)
    t = keras.layers.Conv2D(4, 1, activation="relu", name="tail")(h)
    y = keras.layers.Conv2D(2, 1, name="out")(t)
    model = keras.Model(x, y)
    rng = np.random.default_rng(3)
    for layer in model.layers[1:]:
        kernel, bias = (w.copy() for w in layer.get_weights())
        kernel = rng.normal(0, 0.5, kernel.shape).astype(np.float32)
        if layer.name == "head":
            kernel *= CHANNEL_GAIN
        layer.set_weights([kernel, np.full(bias.shape, 0.05, np.float32)])
    model.save(path)


@pytest.fixture(scope="module")
def equalized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cle")
    _model(tmp / "m.h5")
    for name, seed in (("calib", 0), ("eval", 1)):
        np.save(tmp / f"{name}.npy", np.random.default_rng(seed).uniform(0, 1, (24, 8, 8, 3)).astype(np.float32))
        done = run_cli("capture", str(tmp / "m.h5"), "--inputs", str(tmp / f"{name}.npy"), "-o",
                       str(tmp / f"{name}.h5"), "-q")
        assert done.returncode == 0, done.stderr
    return tmp


def _int8_view(tmp, layer):
    """The capture's tensor of ``layer`` as the int8 model holds it, its node's position and the scale."""
    emu = Emulator.from_model(str(tmp / "calib.h5"))
    with Capture.open(tmp / "calib.h5") as cap:
        emu.calibrate(cap)
        # the node holding the layer's output: the last one made from it (a conv's split ReLU)
        node = [n for n in emu.graph.nodes if n.origin and n.origin[-1] == layer and n.op != "quantize"][-1]
        scale = emu.graph.channel_scale(node.name)
        slot = emu.graph.output_slot(node.name)
        return cap.activation(layer).astype(np.float64), scale, emu.graph.pos(slot), emu, node


def test_the_scale_turns_the_captured_tensor_into_the_emulators_float_reference(equalized):
    keras_head, scale, _, emu, node = _int8_view(equalized, "head")
    assert scale is not None and scale.max() / scale.min() > 3  # the channels were equalized
    with Capture.open(equalized / "calib.h5") as cap:
        ref = emu.run(cap, keep_float=True, isolated=False)[node.name].float_ref
    np.testing.assert_allclose(keras_head * scale, ref, rtol=1e-5, atol=1e-5)
    assert emu.graph.channel_scale("quant_out") is None  # the last layer is nobody's head


def test_report_histogram_clipping_and_coverage_are_of_the_equalized_tensor(equalized, tmp_path):
    keras_head, scale, pos, _, _ = _int8_view(equalized, "head")
    lo, hi = -128 * 2.0**-pos, 127 * 2.0**-pos  # the int8 range at a power-of-two position
    held = keras_head * scale
    done = run_cli("report", str(equalized / "calib.h5"), "--eval", str(equalized / "eval.h5"), "-o",
                   str(tmp_path / "rep"), "--no-sensitivity")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    head = next(layer for layer in data["layers"] if layer["name"] == "head")["activation"]
    assert head["float_max"] == pytest.approx(held.max(), rel=1e-5)
    assert head["float_max"] != pytest.approx(keras_head.max(), rel=1e-2)  # the capture's own differs
    assert head["clipped_high"] == pytest.approx(np.mean(held > hi))
    assert "cross-layer equalization" in head["values_as"]
    with Capture.open(equalized / "eval.h5") as ev:
        outside = np.mean((ev.activation("head") * scale < lo) | (ev.activation("head") * scale > hi))
    assert data["coverage"]["head"] == pytest.approx(outside)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "values as the int8 model holds them" in html


def test_diagnose_findings_on_an_equalized_layer_say_their_values_are_the_equalized_tensor(equalized):
    # a coverage finding quoted the equalized tensor's ranges as the capture's own (numbers audit)
    from qinspect.analysis.diagnose import _activation_findings

    keras_head, scale, pos, emu, node = _int8_view(equalized, "head")
    held = (keras_head * scale).astype(np.float32)
    wide = {node.name: (float(held.min()), float(held.max()))}
    found = _activation_findings(emu.graph, node, {node.name: 8 * held}, {}, wide, "evaluation data")
    assert found
    for f in found:
        assert "cross-layer equalization" in f.evidence["values_as"]["value"]
        for key in ("calib_range", "eval_range"):
            if key in f.evidence:
                assert "equalized tensor" in f.evidence[key]["how"]
    # a layer nobody equalized says nothing of the kind
    out = next(n for n in emu.graph.nodes if n.name == "quant_out")
    assert emu.graph.channel_scale(out.name) is None


@pytest.fixture
def window(qtbot, tmp_path):
    pytest.importorskip("PySide6")
    from gui_fixtures import main_window, stop_helpers

    try:
        yield from main_window(qtbot, tmp_path)
    finally:
        stop_helpers()


@pytest.mark.gui
def test_the_windows_histogram_shows_the_equalized_tensor(equalized, qtbot, window):
    keras_head, scale, pos, _, _ = _int8_view(equalized, "head")
    with qtbot.waitSignal(window.open_channel.finished, timeout=10000):
        window.open_path(str(equalized / "calib.h5"))
    qtbot.waitUntil(lambda: window.session.analysis is not None, timeout=60000)
    window.select_layer("head")
    panel = window.layer_panel
    qtbot.waitUntil(lambda: panel.data is not None and panel.data.name == "head" and panel.data.complete
                    and panel.data.values_note != "", timeout=20000)
    assert panel.data.position == pos
    assert panel.data.vmax == pytest.approx((keras_head * scale).max(), rel=1e-5)
    assert "equalized" in panel.clip_label.text()  # beside the values' range
