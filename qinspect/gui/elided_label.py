"""A one-line label whose text never moves the layout around it: too long, it is cut with an ellipsis.

A plain QLabel's size hint follows its text, so new text re-lays out its parent. In the layer panel's
header that resized the panel's minimum width, and through it the main window's central area: every
plot and label of the window was repainted on each selection (tens of ms in software, more beside a
background job). This label takes the width its layout gives it (size policy Ignored), shows what
fits, and carries the whole text in its tooltip when it is cut.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget


class ElidedLabel(QLabel):
    """A single-line label sized by its layout, not its text; ``text()`` is the whole text."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setText(text)

    def text(self) -> str:  # noqa: D102 - QLabel's, the whole text
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        """Show ``text``, cut to the label's width."""
        self._full = text
        self._elide()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        """Re-cut the text to the new width."""
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(0, self.width()))
        if shown != super().text():
            super().setText(shown)
        tip = self._full if shown != self._full else ""
        if tip != self.toolTip():
            self.setToolTip(tip)


class CutRichLabel(QLabel):
    """A one-line rich-text label sized by its layout, not its text (as :class:`ElidedLabel`): rich text
    cannot be elided, so when the line is cut at the label's width, its whole text is the tooltip."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        """Show ``text``; the tooltip holds it whole when it does not fit."""
        super().setText(text)
        self._tip()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        """A new width may cut the line, or show it whole."""
        super().resizeEvent(event)
        self._tip()

    def _tip(self) -> None:
        tip = self.text() if self.text() and self.sizeHint().width() > self.width() else ""
        if tip != self.toolTip():
            self.setToolTip(tip)
