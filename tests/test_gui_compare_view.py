"""The Calibration vs evaluation tab: nothing but its prompt before an evaluation capture is open."""

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
