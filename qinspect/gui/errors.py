"""One error hub: every failure in the GUI, from the UI thread or a worker, ends in one non-blocking message.

``ErrorHub.report(exc, tb, context)`` is the single entry. It is reached from
- ``sys.excepthook`` (installed by :meth:`ErrorHub.install`): exceptions raised in slots and event
  handlers on the UI thread, which PySide6 hands to the hook instead of crashing;
- worker channels (``Channel.failed``), connected by whoever submits work.

A :class:`~qinspect.errors.QInspectError` (bad input) shows its one-line message; anything else shows
its type and message, and the traceback goes into the box's details section. The box is never modal:
the window stays usable, and a burst of errors updates one box instead of stacking dialogs.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from types import TracebackType

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from qinspect.errors import QInspectError, one_line


@dataclass
class ErrorRecord:
    """One reported error, as shown to the user."""

    summary: str  # the one line the message box shows
    details: str  # traceback or extra text for the details section
    context: str  # what the user was doing ("Opening demo.h5", "Layer conv1")
    user_error: bool  # True for QInspectError (bad input), False for a bug


def describe(exc: BaseException) -> str:
    """The one-line summary for an exception: a QInspectError's own message, else ``Type: message``."""
    if isinstance(exc, QInspectError):
        return one_line(str(exc))  # the command line's line, escaped the same way
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ErrorHub(QObject):
    """Collects errors and presents them in one non-blocking message box."""

    reported = Signal(object)  # ErrorRecord

    def __init__(self, parent_widget: QWidget | None = None) -> None:
        super().__init__(parent_widget)
        self._parent_widget = parent_widget
        self.history: list[ErrorRecord] = []
        self._box: QMessageBox | None = None
        self._pending = 0
        self._previous_hook = None

    def install(self) -> None:
        """Route uncaught UI-thread exceptions here (restored by :meth:`uninstall`)."""
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook

    def uninstall(self) -> None:
        """Put back the exception hook that was there before :meth:`install`."""
        if self._previous_hook is not None and sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_hook
        self._previous_hook = None

    def _excepthook(
        self, etype: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(etype, KeyboardInterrupt) and self._previous_hook is not None:
            self._previous_hook(etype, value, tb)
            return
        self.report(value, "".join(traceback.format_exception(etype, value, tb)), "")

    def report(self, exc: BaseException, tb: str = "", context: str = "") -> ErrorRecord:
        """Show ``exc`` to the user (non-blocking) and record it. ``tb`` goes into the details."""
        user_error = isinstance(exc, QInspectError)
        summary = describe(exc)
        if not tb and exc.__traceback__ is not None:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        details = tb if tb else summary
        record = ErrorRecord(summary, details, context, user_error)
        self.history.append(record)
        if not user_error:
            # A bug: keep the traceback on stderr too, for the terminal the user launched from.
            print(details, file=sys.stderr)
        self._show(record)
        self.reported.emit(record)
        return record

    @property
    def box(self) -> QMessageBox | None:
        """The message box currently shown (None before the first error)."""
        return self._box

    def _show(self, record: ErrorRecord) -> None:
        box = self._box
        if box is None or not box.isVisible():
            box = QMessageBox(self._parent_widget)
            box.setWindowModality(Qt.WindowModality.NonModal)
            box.setStandardButtons(QMessageBox.StandardButton.Close)
            box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self._box = box
            self._pending = 0
        else:
            self._pending += 1
        box.setIcon(QMessageBox.Icon.Warning if record.user_error else QMessageBox.Icon.Critical)
        title = "Cannot use this file" if record.user_error else "Something went wrong"
        box.setWindowTitle(f"qinspect: {title}")
        head = f"{record.context}: " if record.context else ""
        text = head + record.summary
        if self._pending:
            text += f"\n\n({self._pending} earlier error(s) replaced; see the terminal or the details.)"
        box.setText(text)
        box.setInformativeText(
            "" if record.user_error else "The window is still usable. The details below help a bug report."
        )
        box.setDetailedText(record.details)
        box.show()
