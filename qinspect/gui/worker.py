"""The one way the GUI runs work off the UI thread: a request channel where the latest request wins.

A :class:`Channel` owns a sequence of requests. ``submit(fn, *args)`` cancels the previous request's
:class:`CancelToken`, gives the new one a fresh id and runs ``fn(token, *args)`` in a small
``QRunnable`` on a ``QThreadPool``. Results, progress and errors come back as Qt signals carrying the
request id, and the channel drops every signal whose id is not the current one: a slow, superseded
request can never paint over a newer one (clicking quickly through layers never shows a stale layer).

Cancellation is cooperative (Python threads cannot be killed): ``fn`` calls ``token.check()`` between
steps, which raises :class:`Cancelled` once a newer request exists, so superseded work stops early and
the pool stays free for the request that matters.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class Cancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a worker function by :meth:`CancelToken.check` once its request is superseded."""


class CancelToken:
    """Handed to every worker function: cancellation flag plus progress/partial-result reporting."""

    def __init__(self, request_id: int, signals: _TaskSignals | None = None) -> None:
        self.request_id = request_id
        self._event = threading.Event()
        self._signals = signals

    def cancel(self) -> None:
        """Mark the request superseded (called from the UI thread)."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once a newer request was submitted or the channel was cancelled."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the request is superseded; call it between steps of long work."""
        if self._event.is_set():
            raise Cancelled()

    def progress(self, done: int, total: int, text: str = "") -> None:
        """Report progress (``done`` of ``total`` steps); raises :class:`Cancelled` when superseded."""
        self.check()
        if self._signals is not None:
            self._signals.progress.emit(self.request_id, int(done), int(total), text)

    def partial(self, result: Any) -> None:
        """Hand an intermediate result to the UI (for example a first plot from a few samples)."""
        self.check()
        if self._signals is not None:
            self._signals.partial.emit(self.request_id, result)


class _TaskSignals(QObject):
    # Emitted from the worker thread; the receiving Channel lives in the UI thread, so Qt queues them.
    progress = Signal(int, int, int, str)
    partial = Signal(int, object)
    finished = Signal(int, object)
    failed = Signal(int, object, str)
    cancelled = Signal(int)


class _Task(QRunnable):
    def __init__(self, fn: Callable[..., Any], token: CancelToken, args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self.fn, self.token, self.args, self.kwargs = fn, token, args, kwargs
        self.signals = token._signals

    def run(self) -> None:  # runs in a pool thread
        # The work's references are dropped here before the outcome is sent: the channel holds them too and
        # releases them in the UI thread when the outcome arrives. A Qt object (a widget a bound method
        # holds) must never be destroyed in this thread: its destructor takes a Qt lock and calls back into
        # Python, which deadlocks with the UI thread holding the GIL while it deletes another object.
        fn, args, kwargs = self.fn, self.args, self.kwargs
        self.fn = self.args = self.kwargs = None
        token, signals = self.token, self.signals
        rid = token.request_id
        try:
            if token.cancelled:
                raise Cancelled()
            outcome: tuple = ("finished", fn(token, *args, **kwargs))
        except Cancelled:
            outcome = ("cancelled",)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the error hub
            outcome = ("failed", exc, traceback.format_exc())
        del fn, args, kwargs
        if outcome[0] == "finished":
            signals.finished.emit(rid, outcome[1])
        elif outcome[0] == "failed":
            signals.failed.emit(rid, outcome[1], outcome[2])
        else:
            signals.cancelled.emit(rid)


# Every channel's signal object lives as long as the process: a pool thread may still hold one when its
# channel is gone, and the last reference to a Qt object must not drop in that thread (see _Task.run).
_CHANNEL_SIGNALS: list[_TaskSignals] = []


def shared_pool() -> QThreadPool:
    """The pool every channel uses. At least three threads, so a long job (a capture, a whole-model
    propagation) never queues the layer the user just clicked behind it."""
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < 3:
        pool.setMaxThreadCount(3)
    return pool


class Channel(QObject):
    """A stream of requests of one kind (layer analysis, propagation, capture...): the latest wins.

    Signals carry the request id; only the current request's signals are re-emitted. ``busy`` is True
    while the current request runs.
    """

    started = Signal(int)
    progress = Signal(int, int, int, str)
    partial = Signal(int, object)
    finished = Signal(int, object)
    failed = Signal(int, object, str)
    idle = Signal()

    def __init__(self, name: str, parent: QObject | None = None, pool: QThreadPool | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._pool = pool or shared_pool()
        self._next_id = 0
        self._current: CancelToken | None = None
        # One signal object for all requests (they carry their id), created in and owned by the UI thread.
        self._signals = _TaskSignals()
        _CHANNEL_SIGNALS.append(self._signals)
        self._signals.progress.connect(self._on_progress)
        self._signals.partial.connect(self._on_partial)
        self._signals.finished.connect(self._on_finished)
        self._signals.failed.connect(self._on_failed)
        self._signals.cancelled.connect(self._on_cancelled)
        # The work of in-flight requests (function and arguments), released in this thread when each ends.
        self._inflight: dict[int, tuple] = {}

    @property
    def current_id(self) -> int:
        """The id of the latest request (0 before any)."""
        return self._current.request_id if self._current else 0

    @property
    def busy(self) -> bool:
        """True while the latest request has not finished, failed or been cancelled."""
        return self._current is not None and self._current.request_id in self._inflight

    @property
    def running(self) -> bool:
        """Busy and not cancelled: a cancelled request stays ``busy`` until its thread returns, but it is
        no longer a job to show as running."""
        return self.busy and not self._current.cancelled

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
        """Cancel the previous request and run ``fn(token, *args, **kwargs)`` in the pool; return its id."""
        self.cancel()
        self._next_id += 1
        rid = self._next_id
        token = CancelToken(rid, self._signals)
        self._current = token
        self._inflight[rid] = (fn, args, kwargs)
        self.started.emit(rid)
        self._pool.start(_Task(fn, token, args, kwargs))
        return rid

    def cancel(self) -> None:
        """Cancel the current request (its late signals are ignored)."""
        if self._current is not None:
            was_busy = self.busy
            self._current.cancel()
            if was_busy:
                self.idle.emit()

    def _is_current(self, rid: int) -> bool:
        return self._current is not None and rid == self._current.request_id and not self._current.cancelled

    def _on_progress(self, rid: int, done: int, total: int, text: str) -> None:
        if self._is_current(rid):
            self.progress.emit(rid, done, total, text)

    def _on_partial(self, rid: int, result: object) -> None:
        if self._is_current(rid):
            self.partial.emit(rid, result)

    def _done(self, rid: int) -> bool:
        current = self._is_current(rid)
        self._inflight.pop(rid, None)
        return current

    def _on_finished(self, rid: int, result: object) -> None:
        if self._done(rid):
            self.finished.emit(rid, result)
            self.idle.emit()

    def _on_failed(self, rid: int, exc: object, tb: str) -> None:
        if self._done(rid):
            self.failed.emit(rid, exc, tb)
            self.idle.emit()

    def _on_cancelled(self, rid: int) -> None:
        self._inflight.pop(rid, None)


def in_own_process(token: CancelToken, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a helper process of its own (:func:`qinspect.gui.compute_process.call_with_progress`)
    with its progress forwarded to ``token``; cancelling the token stops it at its next progress report."""
    from qinspect.gui import compute_process

    def forward(done: int, total: int, text: str) -> None:
        try:
            token.progress(done, total, text)
        except Cancelled:
            pass  # the helper is told at once: cancelled() below is now true

    try:
        return compute_process.call_with_progress(fn, *args, progress=forward, cancelled=lambda: token.cancelled)
    except compute_process.Superseded:
        raise Cancelled() from None
