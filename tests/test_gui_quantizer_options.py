"""The window's quantizer options: named like vai_q_tensorflow2's keywords, persisted, and the open model
emulated again under them."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import isolated_settings, stop_helpers, write_gui_capture  # noqa: E402

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
