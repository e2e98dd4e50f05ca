"""The layer panel's layout: weight plots only for layers that have weights."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import isolated_settings, stop_helpers, write_gui_capture  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


pytestmark = pytest.mark.gui


def _show(qtbot, win, name):
    win.select_layer(name)
    panel = win.layer_panel
    qtbot.waitUntil(lambda: panel.data is not None and panel.data.name == name and panel.data.complete,
                    timeout=10000)
    qtbot.wait(50)  # let the layout settle


def test_weight_plots_hidden_without_weights_and_back_with_them(qtbot, tmp_path):
    from qinspect.gui.main_window import MainWindow

    cap = write_gui_capture(tmp_path / "cap.h5")
    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(cap))
    panel = win.layer_panel
    weight_plots = (panel.w_plot, panel.ch_plot, panel.bits_plot)

    _show(qtbot, win, "hand")  # Dense: a kernel with 100 output channels
    assert all(p.isVisible() for p in weight_plots)
    act_with, scatter_with = panel.act_plot.height(), panel.scatter_plot.width()

    _show(qtbot, win, "chain_3")  # ReLU: no weights
    assert not any(p.isVisible() for p in weight_plots)
    # The room goes to the activation plots: taller histogram, wider scatter.
    assert panel.act_plot.height() > act_with * 1.2
    assert panel.scatter_plot.width() > scatter_with * 1.5

    _show(qtbot, win, "block/conv")  # Conv2D: the weight plots come back, the layout as before
    assert all(p.isVisible() for p in weight_plots)
    assert abs(panel.act_plot.height() - act_with) <= 2
    assert win.errors.history == []
    win.shutdown()
