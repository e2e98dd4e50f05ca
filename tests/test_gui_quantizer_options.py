"""The window's quantizer options: named like vai_q_tensorflow2's keywords, persisted, and the open model
emulated again under them."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import isolated_settings, stop_helpers, window_on, write_gui_capture  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


def test_options_persist_and_the_model_is_emulated_again_under_them(qtbot, tmp_path):
    from qinspect.dpu.options import QuantizerOptions
    from qinspect.gui.main_window import MainWindow

    capture = write_gui_capture(tmp_path / "calib.h5")
    ini = isolated_settings(tmp_path)
    win = MainWindow(settings_path=ini)
    qtbot.addWidget(win)
    win.show()
    assert win.option_actions["include_cle"].isChecked() and not win.option_actions["cle_to_relu6"].isChecked()
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(capture))
    qtbot.waitUntil(lambda: win.session.analysis is not None and not win.session.channels["emulate"].busy,
                    timeout=60000)
    assert win.session.analysis.graph.options == QuantizerOptions()
    assert "batch size 32, default options" in win.session.analysis.positions_source
    # the findings measured under the options being left go at once (they were shown, unmarked, until the
    # new options' emulation arrived)
    qtbot.waitUntil(lambda: win.session.diagnosis is not None, timeout=60000)
    assert "Output SQNR" in win.quality_label.text() and win.tree_model.metric_value("block/conv") is not None
    win.set_quantizer_option("calib_batch_size", 8)
    assert win.session.diagnosis is None and win.session.findings == []
    # while the model is emulated again, no figure of the old run shows under the new options' name (the
    # status bar kept the old output SQNR beside "batch size 8", the tree its SQNR column)
    assert win.session.refiguring
    assert "Output SQNR" not in win.quality_label.text() and "batch size 8" in win.quality_label.text()
    assert win.tree_model.metric_value("block/conv") is None
    qtbot.waitUntil(lambda: not win.session.channels["emulate"].busy, timeout=60000)
    win.set_quantizer_option("calib_batch_size", 32)
    win.set_quantizer_option("include_cle", False)
    win.set_quantizer_option("calib_batch_size", 4)
    wanted = QuantizerOptions(include_cle=False, calib_batch_size=4)
    qtbot.waitUntil(lambda: win.session.analysis.graph.options == wanted and not win.session.channels["emulate"].busy,
                    timeout=60000)
    assert "batch size 4, include_cle=False" in win.session.analysis.positions_source  # the batch size is said
    assert not win.option_actions["include_cle"].isChecked()
    win.close()
    win.shutdown()
    again = MainWindow(settings_path=ini)
    qtbot.addWidget(again)
    assert again.settings.quantizer_options() == wanted
    assert not again.option_actions["include_cle"].isChecked()
    again.shutdown()


def test_a_model_the_quantizer_cannot_run_says_so_and_what_to_do_beside_its_figures(qtbot, tmp_path):
    # a conv -> ReLU -> grouped conv pair: vai_q_tensorflow2's CLE stops there. The status bar's figure
    # says it is no real run and which option gives one; with CLE off it is a real run and says nothing
    from qinspect.io.capture_file import CaptureWriter
    from tests.test_dpu_quantizer_options import _grouped_pair, _x

    src, w = _grouped_pair(1, 2)
    x = _x()
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.executor import Evaluator, batch_inputs

    graph = src.graph
    emu = Emulator.from_model(src, x)
    ref = Evaluator(emu.graph, "float").run(batch_inputs(emu.graph, x))
    acts = {name: ref[node].float() for name, node in (("a", "quant_a"), ("r", "quant_r"), ("b", "quant_b"))}
    path = tmp_path / "grouped.h5"
    with CaptureWriter(path, graph, len(x), {k: v.shape[1:] for k, v in acts.items()}, {"x": x.shape[1:]},
                       input_links={"x": "x"}, overwrite=True) as writer:
        writer.write_weights(src, [layer.name for layer in graph.leaves()])
        writer.write_batch(0, {"x": x}, acts)
    win = window_on(qtbot, tmp_path, path)
    assert "no run vai_q can make: uncheck Quantizer ▸ Cross-layer equalization" in win.quality_label.text()
    assert "include_cle=False" in win.quality_label.toolTip()
    win.set_quantizer_option("include_cle", False)
    qtbot.waitUntil(lambda: not win.session.channels["emulate"].busy and "Output SQNR" in win.quality_label.text(),
                    timeout=60000)
    assert "vai_q" not in win.quality_label.text() and "include_cle=False" in win.quality_label.text()
    win.shutdown()


def test_the_target_menu_emulates_a_dpucadf8h_with_activations_from_minus_127(qtbot, tmp_path):
    capture = write_gui_capture(tmp_path / "calib.h5")
    win = window_on(qtbot, tmp_path, capture)
    assert win.target_actions[""].isChecked() and not win.target_actions["DPUCADF8H"].isChecked()
    win.target_actions["DPUCADF8H"].trigger()
    qtbot.waitUntil(lambda: win.session.analysis is not None and not win.session.channels["emulate"].busy
                    and win.session.analysis.graph.options.target == "DPUCADF8H", timeout=60000)
    graph = win.session.analysis.graph
    assert all(spec.narrow_range == (spec.kind != "weight") for spec in graph.slots.values())
    assert "target=DPUCADF8H" in win.session.analysis.positions_source  # said beside the figures' source
    assert win.target_actions["DPUCADF8H"].isChecked() and not win.target_actions[""].isChecked()
    assert win.settings.quantizer_options().narrow_activations  # persisted
    # the Layer tab's range, clip lines and what-ifs are the narrow range's: -127 * 2^-p at the bottom
    panel = win.layer_panel
    layer = next(name for name in win.document.activation_layers
                 if win.session.activation_position(name)[0] is not None)
    with qtbot.waitSignal(panel.shown, timeout=30000):
        win.select_layer(layer) if win.current_layer() != layer else panel.show_layer(layer)
    pos = win.session.activation_position(layer)[0]
    assert panel.data.code_min == -127 and panel.whatif.lo == -127 * 2.0**-pos
    assert panel.clip_lines[0].value() == -127 * 2.0**-pos
    assert f"codes used: {panel.whatif.stats.codes_used}/255 " in panel.clip_label.text()  # of 255 codes
    win.shutdown()


def test_cancelling_a_re_emulation_brings_back_the_run_on_hand_and_its_options(qtbot, tmp_path, monkeypatch):
    """The window kept "Emulating again under batch size 8 ..." and an empty SQNR column for good, with options in
    effect (and persisted) that no figure was measured under."""
    import threading

    from qinspect.dpu.options import QuantizerOptions

    win = window_on(qtbot, tmp_path, write_gui_capture(tmp_path / "c.h5"))
    session = win.session
    qtbot.waitUntil(lambda: session.diagnosis is not None, timeout=60000)
    release = threading.Event()
    # a re-emulation that lasts until cancelled
    monkeypatch.setattr(session, "start", lambda: session._run("emulate", lambda token: release.wait(30)))
    try:
        win.set_quantizer_option("calib_batch_size", 8)
        assert session.refiguring and "Emulating again under batch size 8" in win.quality_label.text()
        assert win.tree_model.metric_value("chain_3") is None
        win._cancel_background()
        assert not session.refiguring and session.options == QuantizerOptions()
        assert win.settings.quantizer_options() == QuantizerOptions()  # persisted as the figures' own
        assert "Output SQNR" in win.quality_label.text() and "batch size 32" in win.quality_label.text()
        assert win.tree_model.metric_value("chain_3") is not None
        assert "the figures shown are the previous run's again" in win.status_label.text()
        qtbot.waitUntil(lambda: session.diagnosis is not None, timeout=60000)  # the findings come back
    finally:
        release.set()
        win.shutdown()
