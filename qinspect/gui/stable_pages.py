"""A stack of pages that switches without re-laying out the window around it.

Qt re-lays out every ancestor, up to the window, when a widget in a layout is shown, hidden or
changes its text, whether or not any size changes; QTabWidget then repaints its whole area. In the
layer panel that meant every plot and label of the window was repainted when a weightless layer's
message replaced the weight plots, tens of ms in software. This widget has no layout of its own: it
gives each page its whole rectangle by hand, so a page shown, hidden or edited stops here. Its size
hints are its pages' (all of them, shown or not), so they do not change when it switches.

With ``cover=True`` the first page is never hidden: a later page (a message) is shown over it, opaque,
and hidden again to uncover it. Pyqtgraph plots on the first page then never see a Hide or a Show:
a QGraphicsView shown again repaints its scene twice more (its scene's widgets each get a window
activation), and three plots shown at once cost three paints each in one event-loop turn. Covered,
they are not painted at all, and uncovered, once each.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize
from PySide6.QtGui import QColor, QPalette, QResizeEvent
from PySide6.QtWidgets import QWidget


def opaque(widget: QWidget, background: QColor | str = "white") -> None:
    """Fill ``widget`` with ``background`` from its palette, so Qt knows it is opaque and paints nothing
    of what lies under it (a style-sheet background does not tell Qt that)."""
    palette = widget.palette()
    palette.setColor(QPalette.ColorRole.Window, QColor(background))
    widget.setPalette(palette)
    widget.setAutoFillBackground(True)


class StablePages(QWidget):
    """Shows one of its pages at a time, each filling it; switching repaints only this rectangle."""

    def __init__(self, parent: QWidget | None = None, cover: bool = False) -> None:
        super().__init__(parent)
        self._pages: list[QWidget] = []
        self._current: QWidget | None = None
        self._cover = cover

    def addWidget(self, page: QWidget) -> None:  # noqa: N802 - QStackedWidget's name
        """Add ``page``; the first one added is shown."""
        page.setParent(self)
        page.setGeometry(self.rect())
        self._pages.append(page)
        if self._current is None:
            self._current = page
        elif self._cover:
            opaque(page, page.palette().color(QPalette.ColorRole.Window))
        page.setVisible(page is self._current)

    def currentWidget(self) -> QWidget | None:  # noqa: N802 - QStackedWidget's name
        """The page shown."""
        return self._current

    def setCurrentWidget(self, page: QWidget) -> None:  # noqa: N802 - QStackedWidget's name
        """Show ``page`` in place of the current one."""
        if page is self._current or page not in self._pages:
            return
        base = self._pages[0]
        page.setGeometry(self.rect())
        page.show()
        if self._cover and page is not base:
            page.raise_()
        if self._current is not None and not (self._cover and self._current is base):
            self._current.hide()
        self._current = page

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        """Every page fills the new rectangle."""
        super().resizeEvent(event)
        for page in self._pages:
            page.setGeometry(self.rect())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        """The largest page's size hint."""
        return self._largest(lambda p: p.sizeHint())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt override
        """The largest page's minimum size hint."""
        return self._largest(lambda p: p.minimumSizeHint())

    def _largest(self, hint) -> QSize:
        out = QSize(0, 0)
        for page in self._pages:
            out = out.expandedTo(hint(page))
        return out


class Blank(QWidget):
    """An opaque, empty cover laid over one widget (its child, kept at its size).

    What it covers is not painted, whatever changes under it; hidden again, it shows the widget as last
    drawn, in one paint. A widget is never hidden and shown itself (see ``cover`` above), and covers
    laid over several plots can be lifted one per event-loop turn instead of all in one.
    """

    def __init__(self, widget: QWidget) -> None:
        super().__init__(widget)
        opaque(self)
        self.setGeometry(widget.rect())
        widget.installEventFilter(self)
        self.hide()

    def cover(self) -> None:
        """Lay the blank over the widget."""
        if self.isHidden():
            self.raise_()
            self.show()

    def lift(self) -> None:
        """Show the widget again."""
        if not self.isHidden():
            self.hide()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """Keep the widget's size."""
        if event.type() == QEvent.Type.Resize and obj is self.parent():
            self.setGeometry(obj.rect())
        return False
