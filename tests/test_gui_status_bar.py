"""The status bar: a long message never pushes the output figures at its right out of the window."""

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
