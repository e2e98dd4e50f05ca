"""StepDrawer: one drawing step per event-loop turn, each after the previous step's plot painted."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pg = pytest.importorskip("pyqtgraph")

pytestmark = pytest.mark.gui


@pytest.fixture
def view(qtbot):
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtWidgets import QHBoxLayout, QWidget

    w = QWidget()
    box = QHBoxLayout(w)
    w.plots = [pg.PlotWidget(), pg.PlotWidget()]
    for p in w.plots:
        box.addWidget(p)
    w.log = []

    class Paints(QObject):
        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.Paint:
                w.log.append(("paint", obj))
            return False

    w.paints = Paints()
    for p in w.plots:
        p.viewport().installEventFilter(w.paints)
    qtbot.addWidget(w)
    w.resize(600, 300)
    w.show()
    qtbot.waitExposed(w)
    qtbot.wait(50)
    return w


def _step(view, name, plot):
    def run():
        view.log.append(("step", name))
        plot.plot([0, 1, 2], [0, len(view.log), 0])  # changes what the plot shows: it must repaint

    return run


def test_steps_run_in_order_each_after_the_previous_plot_painted(qtbot, view):
    from qinspect.gui.draw_steps import StepDrawer

    drawer = StepDrawer(view)
    done = []
    drawer.finished.connect(lambda: done.append(True))
    view.log.clear()
    a, b = view.plots
    drawer.add("a", _step(view, "a", a), a)
    drawer.add("b", _step(view, "b", b), b)
    drawer.add("a", _step(view, "a2", a), a)  # replaces the queued "a", in its place
    assert view.log == []  # nothing runs inside add(): the caller's turn stays short
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    steps = [e[1] for e in view.log if e[0] == "step"]
    assert steps == ["a2", "b"] and done == [True] and not drawer.pending
    i_a, i_b = view.log.index(("step", "a2")), view.log.index(("step", "b"))
    assert ("paint", a.viewport()) in view.log[i_a:i_b]  # a painted before b's step ran


def test_cancelled_steps_never_run_and_a_hidden_view_waits(qtbot, view):
    from qinspect.gui.draw_steps import StepDrawer

    drawer = StepDrawer(view)
    a, _b = view.plots
    view.log.clear()
    drawer.add("a", _step(view, "stale", a), a)
    drawer.cancel()
    qtbot.wait(100)
    assert ("step", "stale") not in view.log and not drawer.pending
    view.hide()
    drawer.add("a", _step(view, "later", a), a)
    qtbot.wait(100)
    assert ("step", "later") not in view.log and drawer.pending
    view.show()
    drawer.resume()
    qtbot.waitUntil(lambda: not drawer.pending, timeout=5000)
    assert ("step", "later") in view.log


def test_a_new_range_is_painted_once_not_twice(qtbot, view):
    """pyqtgraph applies a view's new range at the start of its next paint, and that change paints the
    view again: the drawer applies it when the step ends, so a step that moves the range costs one paint."""

    a, _b = view.plots
    a.getAxis("left").setWidth(40)  # tick labels of another width would re-lay out the plot: a paint of its own
    curve = a.plot([0, 1], [0, 1])
    qtbot.wait(100)
    _each_new_range_paints_once(qtbot, view, a, curve)


def test_a_new_range_with_clip_lines_is_painted_once(qtbot, view):
    """Infinite lines size themselves from the view when first asked, and a size found during the paint
    paints the view again: the drawer asks the shown lines (only them) when the step ends."""

    a, _b = view.plots
    a.getAxis("left").setWidth(40)
    a.getAxis("bottom").setHeight(30)
    curve = a.plot([0, 1], [0, 1])
    lines = [pg.InfiniteLine(angle=90, movable=False, label="clip", labelOpts={"position": 0.9}),
             pg.InfiniteLine(angle=0, movable=False)]  # one labelled, one not (its label sizes it)
    hidden = pg.InfiniteLine(angle=90, movable=False)
    for line in (*lines, hidden):
        a.addItem(line)
    hidden.setVisible(False)
    qtbot.wait(100)

    def move_lines(i: int) -> None:
        for line, x in zip(lines, (0.2 * i, 0.8 * i), strict=True):
            line.setValue(x)

    _each_new_range_paints_once(qtbot, view, a, curve, move_lines)


def _each_new_range_paints_once(qtbot, view, a, curve, also=lambda _i: None) -> None:
    """Three steps, each giving plot ``a`` new data and a new range (and ``also(i)``): one paint each."""
    from qinspect.gui.draw_steps import StepDrawer

    drawer = StepDrawer(view)
    for i in range(1, 4):
        def step(i=i):
            curve.setData([0, i], [0, 2 * i])
            also(i)
            a.getPlotItem().getViewBox().setRange(xRange=(0, i), yRange=(0, 2 * i), padding=0)

        view.log.clear()
        drawer.add("range", step, a)
        qtbot.waitUntil(lambda: not drawer.pending, timeout=5000)
        qtbot.wait(100)  # a second paint, if one were coming, comes now
        assert view.log.count(("paint", a.viewport())) == 1


def test_a_plot_widened_by_its_labels_repaints_before_the_next_step(qtbot, view):
    """An axis measures its tick labels while painting; wider ones re-lay the plot out and paint it again,
    whole. That paint gets a turn of its own: the next step (another plot) waits for it."""
    from qinspect.gui.draw_steps import StepDrawer

    a, b = view.plots
    a.plot([0, 1], [0, 1])
    qtbot.wait(100)
    width = a.getAxis("left").width()
    drawer = StepDrawer(view)

    def widen():
        view.log.append(("step", "a"))
        a.getPlotItem().getViewBox().setRange(yRange=(-0.000123, 0.000456), padding=0)

    view.log.clear()
    drawer.add("a", widen, a)
    drawer.add("b", _step(view, "b", b), b)
    qtbot.waitUntil(lambda: not drawer.pending, timeout=5000)
    qtbot.wait(100)
    assert a.getAxis("left").width() > width  # the labels did widen the axis
    i_b = view.log.index(("step", "b"))
    assert view.log[:i_b].count(("paint", a.viewport())) == 2  # the step's paint and the re-layout's
    assert ("paint", a.viewport()) not in view.log[i_b:]  # none left to share b's turn


def test_a_step_that_changed_nothing_does_not_wait_for_a_paint(qtbot, view):
    """A step returning False (say, hiding what was already hidden) brings no paint: the next step runs
    at once instead of after the paint wait (made a minute long here, so waiting could not pass)."""
    from qinspect.gui.draw_steps import StepDrawer

    a, b = view.plots
    drawer = StepDrawer(view)
    drawer._paint_wait.setInterval(60_000)
    view.log.clear()
    drawer.add("nothing", lambda: view.log.append(("step", "nothing")) or False, a)
    drawer.add("b", _step(view, "b", b), b)
    qtbot.waitUntil(lambda: not drawer.pending, timeout=5000)
    assert [e[1] for e in view.log if e[0] == "step"] == ["nothing", "b"]
    assert ("paint", b.viewport()) in view.log


def test_a_covered_plot_is_not_waited_for_nor_painted(qtbot, view):
    """A plot under an opaque cover (StablePages(cover=True)) is drawn without a paint: the next step
    does not wait for one, and uncovering paints it once, never hidden and shown again."""
    from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

    from qinspect.gui.draw_steps import PAINT_WAIT_MS, StepDrawer
    from qinspect.gui.stable_pages import StablePages

    layout = view.layout()
    a, b = view.plots
    pages = StablePages(cover=True)
    page = QWidget()
    QHBoxLayout(page).addWidget(a)
    message = QLabel("no weights")
    pages.addWidget(page)
    pages.addWidget(message)
    layout.insertWidget(0, pages)
    qtbot.wait(100)
    pages.setCurrentWidget(message)
    qtbot.wait(100)
    assert page.isVisible() and message.isVisible() and pages.currentWidget() is message
    drawer = StepDrawer(view)
    view.log.clear()
    drawer.add("a", _step(view, "a", a), a)
    drawer.add("b", _step(view, "b", b), b)
    qtbot.waitUntil(lambda: ("step", "b") in view.log, timeout=PAINT_WAIT_MS - 10)  # no wait for a's paint
    qtbot.waitUntil(lambda: not drawer.pending, timeout=5000)
    qtbot.wait(100)
    assert ("paint", a.viewport()) not in view.log  # covered: its new data was not painted
    hidden = []
    page.hideEvent = lambda _e: hidden.append(True)
    view.log.clear()
    pages.setCurrentWidget(page)
    qtbot.wait(150)
    assert not message.isVisible() and pages.currentWidget() is page and not hidden
    assert view.log.count(("paint", a.viewport())) == 1


def test_a_blank_covers_one_plot_and_follows_its_size(qtbot, view):
    """A Blank over one plot: the plot's updates are not painted while it is blank, the drawer does
    not wait for them, lifting it paints the plot once, and the blank keeps the plot's size."""
    from qinspect.gui.draw_steps import PAINT_WAIT_MS, StepDrawer
    from qinspect.gui.stable_pages import Blank

    a, b = view.plots
    blank = Blank(a)
    blank.cover()
    qtbot.wait(100)
    assert blank.geometry() == a.rect() and a.isVisible()
    drawer = StepDrawer(view)
    view.log.clear()
    drawer.add("a", _step(view, "a", a), a)
    drawer.add("b", _step(view, "b", b), b)
    qtbot.waitUntil(lambda: ("step", "b") in view.log, timeout=PAINT_WAIT_MS - 10)
    qtbot.waitUntil(lambda: not drawer.pending, timeout=5000)
    qtbot.wait(100)
    assert ("paint", a.viewport()) not in view.log and ("paint", b.viewport()) in view.log
    view.log.clear()
    blank.lift()
    qtbot.wait(150)
    assert view.log.count(("paint", a.viewport())) == 1 and ("paint", b.viewport()) not in view.log
    view.resize(800, 400)
    qtbot.wait(100)
    assert blank.geometry() == a.rect()
