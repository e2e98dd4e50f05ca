"""Drawing a view in steps, one plot per event-loop turn, so no single turn paints them all.

Painting a pyqtgraph plot in software takes milliseconds (its axes, a filled histogram, a scatter);
painting every plot of the Layer tab in one turn stalled the event loop past 50 ms. A
:class:`StepDrawer` holds named steps, each updating one plot: it runs one, waits for that plot's
paint (the paint is where the cost is: autorange, path building, rasterising), then runs the next on
a fresh turn, so a key press or a timer gets in between. Steps wait while their view is hidden (the
rest of a tab is drawn when it is shown). Each step reads the view's current state when it runs, so
cancelled or superseded steps never draw stale data.

After a step, its plot's scene is told a paint is coming (pyqtgraph's ``prepareForPaint``): a
pyqtgraph view applies a new range only at the start of its next paint, and the transform change it
makes there schedules a second paint of the whole view. Applied at once, the one paint shows it.

Some layout is only known during the paint: an axis measures its tick labels as it draws them, and
wider ones widen the axis, move the plot area and paint the whole plot again. That second paint then
waits for its own turn too, before the next step (it used to share one with it).
"""

from __future__ import annotations

from collections.abc import Callable

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtWidgets import QGraphicsWidget, QWidget

# When a step's plot does not paint (nothing it shows changed, or it is hidden), go on after this.
PAINT_WAIT_MS = 40


class StepDrawer(QObject):
    """Runs named drawing steps one per event-loop turn, each after the previous step's plot painted."""

    finished = Signal()  # every step ran (and the last one's plot painted)

    def __init__(self, view: QWidget) -> None:
        super().__init__(view)
        self._view = view
        self._steps: dict[str, tuple[Callable[[], bool | None], QWidget | None]] = {}
        self._waiting: QWidget | None = None
        self._next = QTimer(self)
        self._next.setSingleShot(True)
        self._next.setInterval(0)
        self._next.timeout.connect(self._run_next)
        self._paint_wait = QTimer(self)
        self._paint_wait.setSingleShot(True)
        self._paint_wait.setInterval(PAINT_WAIT_MS)
        self._paint_wait.timeout.connect(self._run_next)
        self._watched: set[int] = set()
        self._check: tuple[QWidget, tuple] | None = None  # the last step's plot and its layout then

    @property
    def pending(self) -> bool:
        """True while steps remain or the last step's paint is awaited (or checked for a new layout)."""
        return bool(self._steps) or self._waiting is not None or self._check is not None

    def add(self, name: str, step: Callable[[], bool | None], plot: QWidget | None = None) -> None:
        """Queue ``step`` (replacing a queued step of that name, which keeps its place). ``plot``: the
        widget it changes; the next step waits for it to paint, unless the step returns False (it
        changed nothing, so no paint comes)."""
        if plot is not None and id(plot) not in self._watched:
            self._watched.add(id(plot))
            target = plot.viewport() if hasattr(plot, "viewport") else plot
            target.installEventFilter(self)
        self._steps[name] = (step, plot)
        if self._waiting is None and not self._next.isActive():
            self._next.start()

    def cancel(self) -> None:
        """Drop every queued step (a new layer was selected)."""
        self._steps.clear()
        self._waiting = None
        self._check = None
        self._next.stop()
        self._paint_wait.stop()

    def resume(self) -> None:
        """Carry on with queued steps (call when the view is shown)."""
        if self._steps and self._waiting is None:
            self._next.start()

    def _run_next(self) -> None:
        self._next.stop()
        self._paint_wait.stop()
        self._waiting = None
        if self._relaid_out():
            return
        if not self._steps:
            self.finished.emit()
            return
        if not self._view.isVisible():
            return  # the view's showEvent calls resume()
        name = next(iter(self._steps))
        step, plot = self._steps.pop(name)
        changed = step()
        if plot is None or changed is False:
            self._next.start()
            return
        _settle(plot)
        if _on_screen(plot):
            self._waiting = plot
            self._check = plot, _layout_of(plot)
            self._paint_wait.start()
        else:
            self._next.start()

    def _relaid_out(self) -> bool:
        """Whether the last step's plot changed its layout while painting (an axis widened for
        its labels); if so, apply it now and wait for the paint it brings, once."""
        check, self._check = self._check, None
        if check is None:
            return False
        plot, before = check
        _activate_layout(plot)  # only the layout: a range or transform the paint left pending is
        if _layout_of(plot) == before or not _on_screen(plot):  # the next paint's, not a new one's
            return False
        _settle(plot)
        self._waiting = plot
        self._paint_wait.start()
        return True

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """After the awaited plot's paint, run the next step on a fresh event-loop turn."""
        if event.type() == QEvent.Type.Paint and self._waiting is not None:
            target = self._waiting.viewport() if hasattr(self._waiting, "viewport") else self._waiting
            if obj is target:
                self._waiting = None
                self._paint_wait.stop()
                self._next.start()  # a 0 ms timer: fires once this paint has finished
        return False


def _settle(plot: QWidget) -> None:
    """Apply now what a pyqtgraph view would apply at the start of its next paint or in a later turn
    (its layout after a new title, its new range), so that one paint shows the step's result."""
    _activate_layout(plot)
    scene = plot.scene() if hasattr(plot, "scene") else None
    if hasattr(scene, "prepareForPaint"):
        scene.prepareForPaint()
        # Items that size themselves from the view (clip lines) do it when first asked, which during
        # the paint schedules a second one: ask now. Only them: the scene's whole bounding rect asked
        # every item of the plot (axes, labels, hidden lines), a third of this function's time.
        view = plot.getPlotItem().getViewBox() if hasattr(plot, "getPlotItem") else None
        for item in getattr(view, "addedItems", ()):
            if isinstance(item, pg.InfiniteLine) and item.isVisible():
                item.boundingRect()


def _activate_layout(plot: QWidget) -> None:
    """Lay out a pyqtgraph plot's parts now if a change asked for it (a new title, a wider axis)."""
    central = getattr(plot, "centralWidget", None)
    if isinstance(central, QGraphicsWidget):
        layout = QGraphicsWidget.layout(central)  # pyqtgraph's PlotItem hides the method behind an attribute
        if layout is not None:
            layout.activate()


def _layout_of(plot: QWidget) -> tuple:
    """Where a pyqtgraph plot's parts (axes, title, view box) are: what a paint that re-lays it out
    changes. Empty for other widgets."""
    central = getattr(plot, "centralWidget", None)
    layout = QGraphicsWidget.layout(central) if isinstance(central, QGraphicsWidget) else None
    if layout is None:
        return ()
    return tuple(layout.itemAt(i).geometry().getRect() for i in range(layout.count()))


def _on_screen(plot: QWidget) -> bool:
    """Whether a paint of ``plot`` will come: shown, and not wholly covered (an opaque message over it)."""
    target = plot.viewport() if hasattr(plot, "viewport") else plot
    return plot.isVisible() and not target.visibleRegion().isEmpty()
