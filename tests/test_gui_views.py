"""The window's smaller views, each on the GUI test capture: the status bar (a long message never pushes the
output figures out of the window), the error propagation plot (an exact layer is said exact, not read as
120 dB) and the Calibration vs evaluation tab (its prompt alone before there is a comparison)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

from gui_fixtures import stop_helpers, window_on, write_gui_capture  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


def test_a_long_message_is_cut_and_the_output_figures_stay_in_view(qtbot, tmp_path):
    from PySide6.QtWidgets import QApplication, QLabel

    win = window_on(qtbot, tmp_path, write_gui_capture(tmp_path / "c.h5"))
    try:
        win.resize(1500, 800)
        qtbot.waitUntil(lambda: "Output SQNR" in win.quality_label.text(), timeout=60000)
        long = ("/a/very/long/folder/name/" * 12) + "dump_perturbed: a quantizer dump_model folder; 26 tensors compared"
        win.set_status(long)
        QApplication.processEvents()
        bar = win.statusBar()
        right = win.quality_label.mapTo(bar, win.quality_label.rect().topRight()).x()
        assert win.quality_label.isVisible() and right <= bar.width()  # whole, inside the bar ...
        assert win.width() == 1500  # ... which the message did not widen
        assert win.status_label.text() == long and win.status_label.toolTip() == long  # whole on hover
        assert QLabel.text(win.status_label).endswith("…")
    finally:
        win.shutdown()


def test_exact_layers_are_said_exact_not_read_as_120_db(qtbot, tmp_path):
    import math

    from qinspect.gui.propagation_view import EXACT_DB, _tip

    win = window_on(qtbot, tmp_path, write_gui_capture(tmp_path / "c.h5"))
    try:
        exact = [n for n, s in win.session.analysis.layer_stats(False).items() if math.isinf(s.sqnr_db)]
        assert exact  # the chain's isolated ReLUs are exact on these values
        win.tabs.setCurrentWidget(win.propagation)
        qtbot.waitUntil(lambda: "layers" in win.propagation.info.text(), timeout=30000)
        assert f"exact (∞ dB, no error) drawn at {EXACT_DB:.0f} dB" in win.propagation.info.text()
        assert _tip("chain_3", EXACT_DB) == "chain_3\nexact (∞ dB): no error"
        assert _tip("chain_3", 31.25) == "chain_3\n31.25"
    finally:
        win.shutdown()


def test_the_plot_and_table_show_only_once_there_is_a_comparison(qtbot, tmp_path):
    win = window_on(qtbot, tmp_path, write_gui_capture(tmp_path / "c.h5"))
    try:
        view = win.compare
        win.tabs.setCurrentWidget(view)
        # an empty plot with 0.1 .. 0.9 ticks on both axes read as data (outside audit)
        assert not view.plot.isVisible() and not view.table.isVisible()
        assert "Open an evaluation capture" in view.info.text() and view.open_button.isVisible()
        evaluation = write_gui_capture(tmp_path / "eval.h5", scale=2.0)
        win.session.load_eval_capture(str(evaluation))
        qtbot.waitUntil(lambda: win.session.coverage is not None, timeout=60000)
        assert view.plot.isVisible() and view.table.isVisible() and view.table.rowCount() > 0
    finally:
        win.shutdown()
