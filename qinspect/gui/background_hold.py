"""Pausing the window's background work while it draws what the user asked for, for a bounded time.

Beside a running emulation or capture, the window's own drawing slows down 2 to 4 times: the helper's
work and the UI thread's painting share the memory bus, whatever the helper's priority
(:func:`qinspect.gui.compute_process.pause_background` says more). A :class:`BackgroundHold` pauses the
background helpers from a selection until its plots are drawn. Two bounds keep the background going
and nothing waiting long on a paused helper: a hold ends after ``MAX_HOLD_MS`` whatever the drawing
does, and after a hold that ran out, the background runs at least ``MIN_RUN_MS`` before the next one.
So under a continuous stream of clicks the background still gets a third of the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer

from qinspect.gui import compute_process

MAX_HOLD_MS = 400
MIN_RUN_MS = 200


class BackgroundHold(QObject):
    """Pauses the background helpers between :meth:`hold` and :meth:`release` (bounded, see module)."""

    def __init__(self, parent: QObject | None = None, pause: Callable[[], int] | None = None,
                 resume: Callable[[], None] | None = None) -> None:
        super().__init__(parent)
        self._pause = pause or compute_process.pause_background
        self._resume = resume or compute_process.resume_background
        self.held = False
        self._paused_any = False
        self._held_since = 0.0
        self._held_before = 0.0  # seconds held in earlier holds
        self._limit = QTimer(self)
        self._limit.setSingleShot(True)
        self._limit.setInterval(MAX_HOLD_MS)
        self._limit.timeout.connect(self._ran_out)
        self._rest = QTimer(self)  # running: the background's guaranteed time after a hold ran out
        self._rest.setSingleShot(True)
        self._rest.setInterval(MIN_RUN_MS)

    @property
    def resting(self) -> bool:
        """The background is owed run time after a hold that ran out: no hold starts now."""
        return self._rest.isActive()

    def hold(self) -> None:
        """Pause the background (the window starts drawing), unless it is paused already or owed time."""
        if self.held or self.resting:
            return
        self._paused_any = self._pause() > 0
        self.held = True
        self._held_since = time.monotonic()
        self._limit.start()

    def release(self) -> None:
        """Continue the background (the drawing is done)."""
        self._limit.stop()
        if self.held:
            self.held = False
            if self._paused_any:
                self._held_before += time.monotonic() - self._held_since
            self._resume()

    def held_seconds(self) -> float:
        """How long background work was paused in all, so far (holds with nothing to pause not counted):
        what the bench reports beside its stalls."""
        now = time.monotonic() - self._held_since if self.held and self._paused_any else 0.0
        return self._held_before + now

    def _ran_out(self) -> None:
        self.release()
        self._rest.start()
