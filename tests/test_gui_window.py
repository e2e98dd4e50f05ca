"""The real inspector window, driven offscreen by pytest-qt: open, select, what-if, compare, errors."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import HAND_VALUES, N_CHAIN, chain_max, isolated_settings, stop_helpers, write_gui_capture  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def capture_path(tmp_path_factory):
    return write_gui_capture(tmp_path_factory.mktemp("gui") / "calib.h5")


@pytest.fixture
def window(qtbot, tmp_path):
    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown()


def open_and_wait(qtbot, win, path):
    """Open a capture and wait until the panel and the model-wide emulation are done (the emulation's
    positions reload the panel when they arrive)."""
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(path))
    qtbot.waitUntil(lambda: win.session.analysis is not None, timeout=60000)
    qtbot.waitUntil(lambda: win.layer_panel.data is not None and win.layer_panel.data.complete, timeout=10000)


def show_layer(qtbot, win, name):
    win.select_layer(name)
    qtbot.waitUntil(lambda: win.layer_panel.data is not None and win.layer_panel.data.name == name
                    and win.layer_panel.data.complete and win.layer_panel.whatif is not None, timeout=10000)


def test_empty_window_prompts_to_open(window):
    assert window.stack.currentWidget() is window.empty
    from PySide6.QtWidgets import QLabel

    text = window.empty.findChild(QLabel, "emptyTitle").text()
    assert "Open a model or capture" in text
    assert window.export_model_action.isEnabled() is False


def test_open_capture_fills_tree_and_panel(qtbot, window, capture_path):
    open_and_wait(qtbot, window, capture_path)
    assert window.stack.currentWidget() is window.tabs
    model = window.tree_model
    # Top level: input, block (nested model), flat, hand, chain_0..: the nested conv is a child of block.
    assert model.rowCount() == 4 + N_CHAIN
    block = model.index(1, 0)
    assert block.data() == "block" and model.rowCount(block) == 1
    from qinspect.gui.graph_model import LAYER_NAME_ROLE

    assert model.index(0, 0, block).data(LAYER_NAME_ROLE) == "block/conv"
    assert model.index(0, 0, block).data().endswith("conv")  # may carry a findings badge
    assert window.settings.recent_files()[0] == str(capture_path.resolve())
    assert "calib.h5" in window.windowTitle()


def test_position_what_if_gives_hand_checked_numbers(qtbot, window, capture_path):
    open_and_wait(qtbot, window, capture_path)
    show_layer(qtbot, window, "hand")
    panel = window.layer_panel
    # x_i = (i - 50) / 16 are multiples of 1/16: at p = 5 nothing clips and every value is exact.
    panel.position.setValue(5)
    qtbot.waitUntil(lambda: panel.whatif is not None and panel.whatif.position == 5, timeout=5000)
    assert "below: <b>0%</b>" in panel.clip_label.text() and "above: <b>0%</b>" in panel.clip_label.text()
    assert "∞" in panel.sqnr_label.text()
    # p = 6: range [-2, 127/64]. Below: i = 0..17 (18 of 100); above: i = 82..99 (18 of 100).
    panel.position.setValue(6)
    qtbot.waitUntil(lambda: panel.whatif is not None and panel.whatif.position == 6, timeout=5000)
    assert "below: <b>18.00%</b>" in panel.clip_label.text()
    assert "above: <b>18.00%</b>" in panel.clip_label.text()
    # Error energy by hand: below, errors k/16 for k = 1..18; above, (4j + 1)/64 for j = 0..17.
    noise = sum(k * k for k in range(1, 19)) / 256 + sum((4 * j + 1) ** 2 for j in range(18)) / 4096
    signal = sum((i - 50) ** 2 for i in range(100)) / 256
    expected = 10 * math.log10(signal / noise)
    assert f"{expected:.2f} dB" in panel.sqnr_label.text()
    assert abs(panel.whatif.sqnr_db - expected) < 1e-9
    assert panel.whatif.lo == -2.0 and panel.whatif.hi == 127 / 64
    # the method box says the position is a manual one (it kept naming the int8 model's)
    from qinspect.gui.layer_panel import MANUAL, USED

    assert panel.method.currentText() == MANUAL
    panel.reset.click()
    qtbot.waitUntil(lambda: panel.method.currentText() == USED, timeout=5000)


def test_method_combo_moves_position(qtbot, window, capture_path):
    from qinspect.dpu.fixed_point import pos_non_overflow

    open_and_wait(qtbot, window, capture_path)
    show_layer(qtbot, window, "hand")
    panel = window.layer_panel
    panel.method.setCurrentText("non-overflow")
    # non-overflow of [-3.125, 3.0625]: the range must hold -3.125, so p = 5 ([-4, 3.97]).
    expected = pos_non_overflow(float(HAND_VALUES.min()), float(HAND_VALUES.max()))
    assert expected == 5
    qtbot.waitUntil(lambda: panel.whatif is not None and panel.whatif.method == "non-overflow", timeout=5000)
    assert panel.position.value() == 5 and panel.whatif.position == 5


def test_rapid_clicks_never_show_a_stale_layer(qtbot, window, capture_path):
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    shown = []
    panel.shown.connect(shown.append)
    names = [f"chain_{k}" for k in range(50)]
    for name in names:
        window.select_layer(name)
        qtbot.wait(2)
        # Whatever the panel shows at any moment belongs to the layer selected last.
        if panel.data is not None:
            assert panel.data.name == name
    last = names[-1]
    qtbot.waitUntil(lambda: panel.data is not None and panel.data.complete and panel.data.name == last, timeout=10000)
    assert last in panel.title.text()
    assert f"{chain_max(49):.5g}" in panel.range_label.text() or panel.data.vmax == pytest.approx(chain_max(49))
    assert abs(panel.data.vmax - chain_max(49)) < 1e-5
    assert all(n == last for n in shown[-1:])
    assert window.current_layer() == last


def test_weights_show_bits_wasted_per_channel(qtbot, window, capture_path):
    open_and_wait(qtbot, window, capture_path)
    show_layer(qtbot, window, "block/conv")
    kernel = next(w for w in window.layer_panel.data.weights if w.name == "kernel")
    # Channel c spans ±2^-c against the tensor's ±1: it wastes exactly c bits.
    np.testing.assert_allclose(kernel.bits_wasted, [0, 1, 2, 3])
    assert kernel.tensor_absmax == pytest.approx(1.0)


def test_search_filters_by_name_and_type(qtbot, window, capture_path):
    open_and_wait(qtbot, window, capture_path)
    window.search.setText("conv2d")  # by type, case-insensitive: keeps the nested model as parent
    proxy = window.proxy
    assert proxy.rowCount() == 1
    block = proxy.index(0, 0)
    assert block.data() == "block" and proxy.rowCount(block) == 1
    window.search.setText("chain_4")
    assert proxy.rowCount() == 1 + 10  # chain_4 and chain_40..49
    # typing a filter that hides the layer shown does not show another layer nobody chose
    window.search.setText("")
    show_layer(qtbot, window, "hand")
    window.search.setText("chain_1")
    qtbot.wait(200)
    assert window.layer_panel.current == "hand"
    window.search.setText("zzz_nomatch")
    assert proxy.rowCount() == 0 and window.status_label.text() == "No layer matches 'zzz_nomatch' (name or type)"


def test_corrupt_file_shows_message_and_window_stays_usable(qtbot, window, capture_path, tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with qtbot.waitSignal(window.errors.reported, timeout=10000) as blocker:
        window.open_path(str(bad))
    record = blocker.args[0]
    assert record.user_error and "broken.h5" in record.summary
    assert window.errors.box.isVisible() and not window.errors.box.isModal()
    # The window still works: open a good capture afterwards.
    open_and_wait(qtbot, window, capture_path)
    assert window.tree_model.rowCount() == 4 + N_CHAIN


def test_compare_captures_reports_values_outside_calibrated_range(qtbot, window, capture_path, tmp_path):
    evaluation = write_gui_capture(tmp_path / "eval.h5", scale=2.0)
    open_and_wait(qtbot, window, capture_path)
    with qtbot.waitSignal(window.session.coverage_changed, timeout=30000):
        window.session.load_eval_capture(str(evaluation))
    rows = {r.layer: r for r in window.session.coverage.rows}
    from qinspect.io.capture_file import Capture as Cap

    with Cap.open(evaluation) as ev, Cap.open(capture_path) as cal:
        for name in ("chain_3", "chain_30"):
            row = rows[name]
            hi = 127 * 2.0 ** -row.position
            x_eval = ev.activation(name)
            x_cal = cal.activation(name)
            assert row.eval_above == pytest.approx(np.count_nonzero(x_eval > hi) / x_eval.size)
            assert row.calib_above == pytest.approx(np.count_nonzero(x_cal > hi) / x_cal.size)
            # The evaluation data reaches twice the calibration range: far more of it clips.
            assert row.eval_outside > 10 * row.calib_outside + 0.01
    assert window.compare.table.rowCount() == len(rows)


def test_settings_persist_metric_and_recent_files(qtbot, tmp_path, capture_path):
    from qinspect.gui.main_window import MainWindow

    ini = isolated_settings(tmp_path)
    win = MainWindow(settings_path=ini)
    qtbot.addWidget(win)
    win.set_metric("cosine")
    win.settings.add_recent_file(capture_path)
    win.show()
    win.resize(1111, 777)
    win.close()
    win.shutdown()
    again = MainWindow(settings_path=ini)
    qtbot.addWidget(again)
    assert again.metric == "cosine" and again.metric_actions["cosine"].isChecked()
    assert again.settings.recent_files() == [str(capture_path.resolve())]
    assert again.recent_menu.actions()[0].text() == str(capture_path.resolve())
    # Geometry and dock layout were saved on close and are given back (the offscreen screen may clamp
    # the size, so compare what restoreGeometry accepts, not pixels).
    assert again.settings.window_geometry() is not None and again.settings.window_state() is not None
    assert again.restoreGeometry(again.settings.window_geometry())
    again.shutdown()


def wait_emulated(qtbot, win):
    qtbot.waitUntil(lambda: win.session.analysis is not None and not win.session.channels["emulate"].busy,
                    timeout=60000)


def test_propagation_click_selects_layer_and_metric_switch_updates_tree(qtbot, window, capture_path):
    import pyqtgraph as pg

    from qinspect.gui.graph_model import COL_METRIC

    open_and_wait(qtbot, window, capture_path)
    wait_emulated(qtbot, window)
    view = window.propagation
    assert "chain_10" in view.layers
    # A hidden tab is drawn when it is shown.
    assert not any(isinstance(i, pg.ScatterPlotItem) for i in view.plot.getPlotItem().items)
    window.tabs.setCurrentWidget(view)
    scatter = next(i for i in view.plot.getPlotItem().items if isinstance(i, pg.ScatterPlotItem))
    point = next(p for p in scatter.points() if p.data() == "chain_10")
    scatter.sigClicked.emit(scatter, [point], None)
    assert window.current_layer() == "chain_10"
    assert window.tabs.currentWidget() is window.layer_panel
    # The tree's metric column follows the chosen metric: MSE of the accumulated error of chain_10.
    window.set_metric("mse")
    stats = window.session.analysis.layer_stats(accumulated=True)["chain_10"]
    idx = window.tree_model.index_of("chain_10").siblingAtColumn(COL_METRIC)
    assert window.tree_model.headerData(COL_METRIC, pg.QtCore.Qt.Orientation.Horizontal) == "MSE"
    assert idx.data() == f"{stats.mse:.3g}"
    assert idx.data(pg.QtCore.Qt.ItemDataRole.BackgroundRole) is not None


def test_keyboard_navigation_moves_the_panel(qtbot, window, capture_path):
    from PySide6.QtCore import Qt

    open_and_wait(qtbot, window, capture_path)
    show_layer(qtbot, window, "chain_5")
    window.tree.setFocus()
    qtbot.keyClick(window.tree, Qt.Key.Key_Down)
    assert window.current_layer() == "chain_6"
    qtbot.waitUntil(lambda: window.layer_panel.data is not None and window.layer_panel.data.name == "chain_6"
                    and window.layer_panel.data.complete, timeout=10000)
    assert abs(window.layer_panel.data.vmax - chain_max(6)) < 1e-5


def test_held_arrow_key_over_100_layers_draws_only_the_last(qtbot, window, capture_path):
    # A held arrow key: one press, then auto-repeats, down 54 rows and back up 46 (100 selections).
    from PySide6.QtCore import QEvent, Qt
    from PySide6.QtGui import QKeyEvent
    from PySide6.QtWidgets import QApplication

    from qinspect.gui.main_window import KEY_REPEAT_SETTLE_MS

    open_and_wait(qtbot, window, capture_path)
    show_layer(qtbot, window, "chain_0")
    panel = window.layer_panel
    drawn, shown = [], []
    # Whatever is drawn belongs to the layer named in the panel at that moment.
    panel.first_plot.connect(lambda name: drawn.append((name, panel.current)))
    panel.shown.connect(lambda name: shown.append((name, panel.current)))
    loads = []
    panel.load_channel.started.connect(loads.append)
    window.tree.setFocus()
    # The test decides when the key is released (a loaded machine must not decide it for it).
    window._settle.setInterval(60_000)
    keys = [Qt.Key.Key_Down] * 54 + [Qt.Key.Key_Up] * 46
    for i, key in enumerate(keys):
        QApplication.sendEvent(window.tree, QKeyEvent(QEvent.Type.KeyPress, key, Qt.KeyboardModifier.NoModifier,
                                                      "", i > 0))
        qtbot.wait(2)  # paints, worker results and timers run between the repeats
        assert panel.data is None or panel.data.name == window.current_layer()
    last = "chain_8"  # chain_0 + 54 - 46
    assert window.current_layer() == last and last in panel.title.text()
    window._settle.setInterval(KEY_REPEAT_SETTLE_MS)  # the key is released: the repeats stop
    qtbot.waitUntil(lambda: (last, last) in shown and not panel.drawer.pending, timeout=20000)
    # Only the first press and the layer the key stopped at were loaded and drawn; never another
    # layer's data.
    assert len(loads) == 2
    assert {name for name, _ in shown} <= {"chain_1", last}
    assert all(name == current for name, current in drawn + shown)
    # The last layer's plots are shown, with its data and nothing stale.
    assert panel.data.name == last and panel.data.complete
    assert abs(panel.data.vmax - chain_max(8)) < 1e-5
    x, _y = panel.act_curve.getData()
    assert panel.act_curve.isVisible() and x[-1] == pytest.approx(panel.data.float_hist.edges[-1])
    assert x[-1] == pytest.approx(chain_max(8), rel=0.02)
    assert panel.scatter.isVisible() and panel.err_curve.isVisible()
    sx = panel.scatter.getData()[0]
    assert sx.max() == pytest.approx(chain_max(8))  # the extremes are always among the points
    assert panel.weights_stack.currentWidget() is panel.weights_message  # a ReLU: no kernel
    assert "ReLU" in panel.weights_message.text()


def test_line_labels_always_name_their_own_line(qtbot, window, capture_path):
    """Every shown clip or method line's label gives that line's own position, in the first pass and
    the full one, from one layer to the next (a label set while its line was hidden kept the previous
    layer's text: "KL divergence: p=12" beside a p=9 line)."""
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    seen = []
    original = panel._draw_activation_lines

    def lines_step():
        original()
        for _lo_line, hi_line in panel.method_lines:
            if hi_line.isVisible():
                p = round(-math.log2(hi_line.value() / 127))
                seen.append((hi_line.label.toPlainText(), f"p={p}"))
        for line in panel.clip_lines:
            if line.isVisible():
                seen.append((line.label.toPlainText(), f"clip {line.value():.4g}"))

    panel._draw_activation_lines = lines_step
    for name in ("chain_1", "hand", "chain_3", "block/conv", "chain_1"):
        show_layer(qtbot, window, name)
        qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    assert len(seen) >= 10
    wrong = [(text, want) for text, want in seen if not text.endswith(want)]
    assert wrong == []


def test_weightless_layers_keep_the_layout_in_place(qtbot, window, capture_path):
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    show_layer(qtbot, window, "block/conv")
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    assert panel.weights_stack.currentWidget() is panel.weights_page and panel.ch_bars.isVisible()
    places = [w.geometry() for w in (panel.act_plot, panel.err_plot, panel.scatter_plot, panel.weights_stack)]
    show_layer(qtbot, window, "chain_3")
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    # One message where the three weight plots were; nothing else moved or resized.
    assert panel.weights_stack.currentWidget() is panel.weights_message
    assert "no kernel" in panel.weights_message.text()
    assert places == [w.geometry() for w in (panel.act_plot, panel.err_plot, panel.scatter_plot,
                                             panel.weights_stack)]
    # From one weighted layer to another: each weight plot stays covered from the click until its own
    # step has drawn this layer's data into it (never the previous layer's channels, nor empty axes),
    # and the three are uncovered one per step (one plot painted per turn), never hidden.
    show_layer(qtbot, window, "block/conv")
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    seen = []

    def shown():
        page = panel.weights_stack.currentWidget() is panel.weights_page
        return (page, page and panel.ch_blank.isHidden(), page and panel.bits_blank.isHidden())

    def recorded(name):
        original = getattr(panel, name)

        def step():
            original()
            seen.append((name, shown(), panel.ch_bars.isVisible() and len(panel.ch_bars.opts["x"]),
                         panel.bits_bars.isVisible() and len(panel.bits_bars.opts["x"])))

        return step

    for name in ("_draw_weight_histogram", "_draw_channel_ranges", "_draw_bits_wasted"):
        setattr(panel, name, recorded(name))
    window.select_layer("hand")
    assert not panel.ch_bars.isVisible() and not panel.bits_bars.isVisible()
    assert panel.weights_stack.currentWidget() is panel.weights_message and panel.weights_page.isVisible()
    assert shown() == (False, False, False)
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=10000)
    # the Dense layer's 100 units, in each plot as it is shown
    assert seen[:3] == [("_draw_weight_histogram", (True, False, False), False, False),
                        ("_draw_channel_ranges", (True, True, False), 100, False),
                        ("_draw_bits_wasted", (True, True, True), 100, 100)]
    assert panel.w_plot.isVisible() and panel.ch_plot.isVisible() and panel.bits_plot.isVisible()


def test_method_line_labels_stay_inside_the_view(qtbot, window, capture_path):
    """A method's line near either edge of the activation plot keeps its whole label in sight: the label
    sits on the side of the line nearer the middle (a line near the left edge used to push its label,
    which always sat on its left, out of the view: "ence: p=10")."""
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    show_layer(qtbot, window, "chain_3")
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    _lo_line, hi_line = panel.method_lines[0]
    assert hi_line.isVisible()
    (x0, x1), _y = panel.act_plot.getPlotItem().getViewBox().viewRange()
    for x in (x0 + 0.02 * (x1 - x0), x1 - 0.02 * (x1 - x0)):
        hi_line.setValue(x)
        hi_line.label.updatePosition()
        rect = hi_line.label.mapRectToView(hi_line.label.boundingRect())
        assert x0 <= rect.left() and rect.right() <= x1, (x, rect.left(), rect.right(), x0, x1)


def test_selections_never_re_lay_out_the_tabs(qtbot, window, capture_path):
    """New header text and the weight plots giving way to a message and back stay inside the layer
    panel: a layout request reaching the tab widget repaints its whole area (every label and control of
    the window), which was most of a selection's paint time."""
    from PySide6.QtCore import QEvent, QObject

    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    requests, pages, states = [], [], set()

    class Requests(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt override
            if event.type() == QEvent.Type.LayoutRequest:
                requests.append(obj.objectName())
            return False

    watcher = Requests()
    window.tabs.installEventFilter(watcher)
    try:
        for name in ("block/conv", "chain_3", "hand", "chain_1", "block/conv"):
            show_layer(qtbot, window, name)
            qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
            pages.append(panel.weights_stack.currentWidget() is panel.weights_page)
            states.add(panel.state.text())
            qtbot.wait(50)  # posted layout requests are delivered
    finally:
        window.tabs.removeEventFilter(watcher)
    # The sequence did switch pages and change the header, each time.
    assert pages == [True, False, True, False, True] and len(states) > 1
    assert requests == []


def test_a_selection_empties_the_old_plots_one_per_turn(qtbot, window, capture_path):
    """Selecting a layer empties the previous layer's plots step by step, never painting two of them in
    one event-loop turn (the three at once made the click's own turn the longest); before the new data
    is drawn, none of the old data is left. Hidden (another tab shown), the panel empties them at once."""
    from PySide6.QtCore import QEvent, QObject, QTimer

    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    plots = {panel.act_plot.viewport(): "act", panel.err_plot.viewport(): "err",
             panel.scatter_plot.viewport(): "scatter"}
    old_items = (panel.act_curve, panel.err_curve, panel.scatter)
    show_layer(qtbot, window, "block/conv")
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    assert all(item.isVisible() for item in old_items)
    log = []

    class Paints(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt override
            if event.type() == QEvent.Type.Paint and obj in plots:
                log.append(plots[obj])
            return False

    watcher = Paints()
    for viewport in plots:
        viewport.installEventFilter(watcher)
    ticker = QTimer()
    ticker.setInterval(0)
    ticker.timeout.connect(lambda: log.append("turn"))
    emptied = []
    try:
        ticker.start()
        window.select_layer("hand")
        # the old data is gone before the new layer's is drawn (or the new one is already there)
        qtbot.waitUntil(lambda: not panel.drawer.pending or panel.data is not None, timeout=10000)
        emptied.append(panel.data is not None or not any(item.isVisible() for item in old_items))
        show_layer(qtbot, window, "hand")
        qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    finally:
        ticker.stop()
        for viewport in plots:
            viewport.removeEventFilter(watcher)
    turns = "/".join(log).split("turn")
    assert emptied == [True] and any(turns)  # plots were painted, in the turns recorded
    assert max(len([p for p in t.split("/") if p]) for t in turns) == 1  # one plot per turn
    # Hidden, nothing waits for a paint: the old plots are emptied with the selection.
    window.tabs.setCurrentWidget(window.findings)
    assert not panel.isVisible()
    window.select_layer("block/conv")
    assert not any(item.isVisible() for item in old_items)


def test_elided_label_keeps_its_text_and_its_size(qtbot):
    from PySide6.QtWidgets import QLabel, QSizePolicy

    from qinspect.gui.elided_label import ElidedLabel

    label = ElidedLabel("short")
    qtbot.addWidget(label)
    label.resize(120, 20)
    label.show()
    hint = label.sizeHint()
    long = "Statistics over 1,605,632 values from 16 of 16 samples kept with full tensors, of 1000 fed"
    label.setText(long)
    # The whole text is kept (and said in the tooltip); what is shown fits the width, with an ellipsis.
    assert label.text() == long and label.toolTip() == long
    assert QLabel.text(label).endswith("…") and label.fontMetrics().horizontalAdvance(QLabel.text(label)) <= 120
    assert label.sizePolicy().horizontalPolicy() == QSizePolicy.Policy.Ignored
    assert label.sizeHint().height() == hint.height()
    label.resize(2000, 20)
    assert QLabel.text(label) == long and label.toolTip() == ""


def test_a_cut_rich_line_is_whole_in_its_tooltip(qtbot):
    """The Layer tab's figure lines (rich text, which cannot be elided) were cut at a small window's width
    with nothing saying the rest ("... the 1,843,200 float values read lie in")."""
    from PySide6.QtWidgets import QSizePolicy

    from qinspect.gui.elided_label import CutRichLabel

    label = CutRichLabel()
    qtbot.addWidget(label)
    label.resize(200, 20)
    label.show()
    long = "Clipped below: <b>0.0055%</b> · above: <b>0.00033%</b> · codes used: 241/256 · the 1,843,200 values"
    label.setText(long)
    assert label.toolTip() == long and label.sizePolicy().horizontalPolicy() == QSizePolicy.Policy.Ignored
    label.resize(2000, 20)
    assert label.toolTip() == ""
    label.resize(200, 20)
    assert label.toolTip() == long
    label.setText("short")
    assert label.toolTip() == ""


def test_a_hidden_layer_tab_draws_when_shown(qtbot, window, capture_path):
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    window.tabs.setCurrentWidget(window.propagation)
    panel.show_layer("chain_4")  # a tree click while another tab is shown
    qtbot.waitUntil(lambda: panel.data is not None and panel.data.complete, timeout=10000)
    qtbot.wait(100)
    assert panel.drawer.pending and not panel.act_curve.isVisible()  # loaded, not drawn
    window.tabs.setCurrentWidget(panel)
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    assert panel.act_curve.isVisible() and panel.scatter.isVisible()
    assert panel.act_curve.getData()[0][-1] == pytest.approx(chain_max(4), rel=0.02)


def test_drop_a_file_opens_it(qtbot, window, capture_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(capture_path))])
    event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.open_channel.finished, timeout=10000):
        window.dropEvent(event)
    assert window.document is not None and window.document.path == str(capture_path)


def test_findings_click_selects_the_layer(qtbot, window, capture_path):
    from PySide6.QtCore import Qt

    open_and_wait(qtbot, window, capture_path)
    wait_emulated(qtbot, window)
    qtbot.waitUntil(lambda: not window.session.channels["findings"].busy and window.findings.table.rowCount() > 0,
                    timeout=60000)
    table = window.findings.table
    layer = table.item(0, 1).text()
    assert layer in window.document.graph
    # a measured gain, an estimate "~x", or "-" for a finding with neither (a CPU layer costing nothing measured)
    severities = [float(table.item(r, 0).text().lstrip("~").replace("–", "0")) for r in range(table.rowCount())]
    assert severities == sorted(severities, reverse=True)
    window.tabs.setCurrentWidget(window.findings)
    table.cellClicked.emit(0, 1)
    kind = table.item(0, 2).data(Qt.ItemDataRole.UserRole)  # the cell shows the kind's title
    expected = window.propagation if kind == "error_growth" else window.layer_panel
    assert window.current_layer() == layer and window.tabs.currentWidget() is expected


def test_opening_a_vitis_quantized_model_says_how_to_use_it(qtbot, window, refcases):
    with qtbot.waitSignal(window.errors.reported, timeout=10000) as blocker:
        window.open_path(str(refcases / "small" / "quantized.h5"))
    assert "Import Vitis quantized.h5" in blocker.args[0].summary and blocker.args[0].user_error
    assert window.document is None and window.stack.currentWidget() is window.empty


def test_compare_with_a_capture_of_another_model_names_both_files(qtbot, window, capture_path, tmp_path):
    from capture_fixtures import write_tiny

    other = write_tiny(tmp_path / "other.h5")
    open_and_wait(qtbot, window, capture_path)
    with qtbot.waitSignal(window.errors.reported, timeout=10000) as blocker:
        window.session.load_eval_capture(str(other))
    summary = blocker.args[0].summary
    assert "other.h5" in summary and "calib.h5" in summary and blocker.args[0].user_error
    assert window.session.coverage is None


def test_without_the_helper_process_the_numbers_are_the_same(qtbot, window, capture_path, monkeypatch):
    from qinspect.gui import compute_process

    monkeypatch.setattr(compute_process, "_DISABLED", True)
    open_and_wait(qtbot, window, capture_path)
    show_layer(qtbot, window, "hand")
    window.layer_panel.position.setValue(6)
    qtbot.waitUntil(lambda: window.layer_panel.whatif is not None and window.layer_panel.whatif.position == 6,
                    timeout=5000)
    assert "below: <b>18.00%</b>" in window.layer_panel.clip_label.text()


def test_the_tree_columns_fit_the_models_longest_names(qtbot, window):
    """Five BatchNormalization layers all read "batch_normalizatio…" at the old fixed width."""
    from types import SimpleNamespace

    from qinspect.gui.graph_model import COL_NAME

    window.resize(1600, 1000)
    names = [f"batch_normalization_{k}" for k in range(10, 15)] + ["mobilenetv2_1.00_224/block_16_project_BN"]
    layers = [SimpleNamespace(short_name=n, depth=0, class_name="BatchNormalization", output_shape=[None, 7, 7, 320])
              for n in names]
    window._fit_tree_columns(SimpleNamespace(layers=layers))
    fm, header = window.tree.fontMetrics(), window.tree.header()
    assert header.sectionSize(COL_NAME) >= fm.horizontalAdvance("batch_normalization_14")
    assert header.sectionSize(COL_NAME) <= 330  # capped: a 40-character name is elided, not the whole pane
    assert header.sectionSize(1) >= fm.horizontalAdvance("BatchNormalization")
    assert header.sectionSize(4) >= fm.horizontalAdvance("DPU+CPU") + 8  # "Runs on" read "DP...PU" for a split layer


def test_a_method_line_just_beyond_the_data_widens_the_view_and_a_far_one_loses_its_label(qtbot, window,
                                                                                        capture_path):
    """The demo's add_4: non-overflow's line at 3.97 beyond the view's 3.1 cut its label to "non-overflo"."""
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    show_layer(qtbot, window, "chain_3")
    qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    _lo_line, hi_line = panel.method_lines[0]
    view = panel.act_plot.getPlotItem().getViewBox()
    for line in (line for pair in panel.method_lines[1:] for line in pair):
        line.setVisible(False)  # only the line under test may widen the view
    data, w = panel.data, panel.whatif
    lo = min(data.vmin, 0.0, w.lo if data.vmin < 0 else 0.0)  # what the view fits without it
    hi = max(data.vmax, 0.0, w.hi)
    near = hi + 0.5 * (hi - lo)
    hi_line.setValue(near)
    panel._fit_activation_x()
    assert view.viewRange()[0][1] >= near and hi_line.label.format  # in sight, label kept
    far = hi + 20 * (hi - lo)
    hi_line.setValue(far)
    panel._fit_activation_x()
    assert view.viewRange()[0][1] < far and hi_line.label.format == ""  # histogram kept, no cut label


def test_the_sqnr_column_stays_in_view_when_the_names_would_push_it_out(qtbot, window):
    """At 1400 px, long names and classes filled the 45% dock and the SQNR column sat behind a scroll bar."""
    from types import SimpleNamespace

    window.resize(1400, 900)
    qtbot.wait(50)
    layers = [SimpleNamespace(short_name=f"expanded_conv_{k}_squeeze_excite_conv_1", depth=1,
                              class_name="GlobalAveragePooling2D", output_shape=[None, 112, 112, 1024])
              for k in range(12)]
    window._fit_tree_columns(SimpleNamespace(layers=layers))
    qtbot.wait(50)
    header = window.tree.header()
    used = sum(header.sectionSize(c) for c in range(header.count()))
    assert used <= window.tree.viewport().width(), (used, window.tree.viewport().width())


def test_a_cancelled_job_takes_its_busy_bar_away(qtbot, window, capture_path):
    """Cancelling a background job (its Cancel button, or the session's shutdown) hides the status bar's
    busy bar at once, though the job's thread ends later: the bar named the cancelled job as still
    running, and its animation kept repainting the status bar for as long as the window stayed open."""
    import threading

    open_and_wait(qtbot, window, capture_path)
    session = window.session
    qtbot.waitUntil(lambda: not any(c.busy for c in session.channels.values()), timeout=60000)
    for stop in (session.cancel_background, session.shutdown):
        release = threading.Event()
        session._run("coverage", lambda token, release=release: release.wait(10))
        qtbot.waitUntil(lambda: window.progress.isVisible(), timeout=5000)
        stop()
        try:
            assert not session.channels["coverage"].running
            assert not window.progress.isVisible() and not window.cancel_button.isVisible()
        finally:
            release.set()
        qtbot.wait(100)  # the job's thread ends: nothing shows the bar again
        assert not window.progress.isVisible()


def test_weight_plot_titles_follow_the_layer(qtbot, window, capture_path):
    """The weight plots' titles name the layer's kernel and position, set again only when they change."""
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    for name in ("block/conv", "chain_3", "block/conv"):
        show_layer(qtbot, window, name)
        qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
    k = panel._kernel()
    assert k is not None
    assert panel.w_plot.getPlotItem().titleLabel.text == f"Weights: {k.name}, p={k.position}"
    per_bar = k.bars.per_bar
    assert panel.ch_plot.getPlotItem().titleLabel.text == "Channel ranges" + (
        f", {per_bar} per bar" if per_bar > 1 else "")
    assert panel.bits_plot.getPlotItem().titleLabel.text.startswith("Bits wasted per channel")
    for plot in (panel.w_plot, panel.ch_plot, panel.bits_plot):
        assert plot.getPlotItem().titleLabel.isVisible()
    # every channel reaching the tensor's range draws no bar: the title says none are wasted, not an empty frame
    wasting = bool(np.any(k.bars.wasted > 0.05))
    assert panel.bits_plot.getPlotItem().titleLabel.text.endswith(": none") != wasting
    saved = k.bars.wasted
    try:
        k.bars.wasted = np.zeros_like(saved)
        panel._draw_bits_wasted()
        assert panel.bits_plot.getPlotItem().titleLabel.text.endswith(": none")
    finally:
        k.bars.wasted = saved


def test_line_labels_sit_where_their_lines_put_them(qtbot, window, capture_path):
    """A line's label does not follow the view while its line is hidden; once shown, it sits where
    pyqtgraph would place it for the view as it is (never where an earlier layer's range put it)."""
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    labelled = [hi for _lo, hi in panel.method_lines] + list(panel.clip_lines)
    checked = 0
    for name in ("chain_1", "hand", "chain_3", "block/conv", "chain_1", "hand"):
        show_layer(qtbot, window, name)
        qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
        for line in labelled:
            if not line.isVisible():
                continue
            label = line.label
            pos, anchor = label.pos(), tuple(label.anchor)
            label.updatePosition()  # where pyqtgraph puts it now
            assert (label.pos().x(), label.pos().y()) == pytest.approx((pos.x(), pos.y()), abs=1e-6)
            assert tuple(label.anchor) == anchor
            checked += 1
    assert checked >= 10


def test_line_labels_never_overlap_however_small_the_plot(qtbot, window, capture_path):
    """The clip and method labels sat at fixed fractions of the plot's height: in a small window they
    overlapped ("non-overflow: p=5" over "clip 1.984", "KL divergence" over "min-MSE"). They are stacked a
    text line apart in pixels, again on a resize, and one with no room left is hidden, not drawn over another."""
    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    view = panel.act_plot.getPlotItem().getViewBox()
    checked = 0
    for size in ((1400, 900), (900, 560), (760, 420)):
        window.resize(*size)
        for name in ("chain_1", "hand", "chain_3"):
            show_layer(qtbot, window, name)
            qtbot.waitUntil(lambda: not panel.drawer.pending, timeout=10000)
            qtbot.wait(20)
            shown = [line.label for line in (*panel.clip_lines, *(hi for _lo, hi in panel.method_lines))
                     if line.isVisible() and line.label.isVisible() and line.label.toPlainText()]
            rects = [label.sceneBoundingRect() for label in shown]
            area = view.sceneBoundingRect()
            for i, a in enumerate(rects):
                assert area.top() - 1 <= a.top() and a.bottom() <= area.bottom() + 1, (size, name)
                for b in rects[i + 1:]:
                    assert not a.intersects(b), (size, name, a, b)
            checked += len(shown) >= 3
    assert checked >= 3  # layers with a clip label and at least two method labels, so stacking was tested


def test_an_inner_steps_figures_stay_on_the_emulated_line(qtbot, window, capture_path):
    """A separable conv's depthwise step was said on a second line, which pushed every plot down on such layers
    only: the layout jumped between layers (outside audit s35 window 11)."""
    from types import SimpleNamespace

    from qinspect.analysis.metrics import ErrorStats

    open_and_wait(qtbot, window, capture_path)
    panel = window.layer_panel
    stats = ErrorStats().update(np.array([1.0, 2.0]), np.array([1.0, 2.1]))
    node = SimpleNamespace(name="quant_s_depthwise_conv", op="depthwise_conv2d")
    analysis = SimpleNamespace(inner_steps=lambda _name: [node],
                               results={node.name: SimpleNamespace(isolated=stats, accumulated=stats)})
    text = panel._inner_steps_text(analysis)
    assert "<br>" not in text and text.startswith(" · its quantized depthwise_conv2d step quant_s_depthwise_conv: ")
