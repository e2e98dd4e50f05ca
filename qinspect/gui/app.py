"""QApplication set-up and the GUI's entry point (``qinspect gui [FILE]``, ``qinspect FILE``, ``qinspect``)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from PySide6.QtCore import QObject, QSocketNotifier, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from qinspect.desktop import APP_ID

# An explicit size: screenshots run under Xvfb with no window manager, which would otherwise give the
# window its minimum size in a corner.
DEFAULT_SIZE = (1400, 900)


def _icon() -> QIcon | None:
    here = Path(__file__).resolve()
    for candidate in (here.parent.parent / "resources" / "qinspect.svg",):
        if candidate.exists():
            return QIcon(str(candidate))
    return None


_COLLECTOR: list = []  # the one main-thread garbage collector (see collect_in_main_thread)


def collect_in_main_thread() -> None:
    """Run Python's cyclic garbage collection only in the UI thread, from a timer (once per process).

    Left automatic, a collection runs in whichever thread allocates at that moment: a worker thread then
    destroys the Qt objects of an old view's reference cycles, whose destructors take a Qt lock and call
    back into Python; with the UI thread holding the GIL and waiting for that lock (deleting another
    object), both stop for good (seen in the suite). pyqtgraph's GarbageCollector disables the automatic
    collection and collects, by generation thresholds, from a QTimer in the UI thread."""
    if _COLLECTOR:
        return
    from pyqtgraph.util.garbage_collector import GarbageCollector

    _COLLECTOR.append(GarbageCollector(interval=0.5))


def application(argv: list[str] | None = None) -> QApplication:
    """The process's QApplication (created once, configured for qinspect)."""
    app = QApplication.instance()
    if app is None:
        # Not sys.argv: Qt crashes on an argument that is not valid UTF-8 (a file name with such bytes).
        app = QApplication(argv if argv is not None else ["qinspect"])
    # Worker threads run numpy and h5py code that holds the GIL in stretches; a shorter switch
    # interval hands the UI thread the GIL sooner, so the window keeps repainting meanwhile.
    sys.setswitchinterval(0.001)
    collect_in_main_thread()
    app.setApplicationName("qinspect")
    app.setOrganizationName("qinspect")
    app.setApplicationDisplayName("qinspect")
    # Wayland compositors match the window to its launcher (`qinspect --install-desktop`) by this id.
    app.setDesktopFileName(APP_ID)
    icon = _icon()
    if icon is not None:
        app.setWindowIcon(icon)
    import pyqtgraph as pg

    # White plots read better next to the widgets and in exported images. No antialiasing: the plots
    # are step histograms, bars and straight lines, and software-rasterised antialiasing doubles paint time.
    pg.setConfigOptions(background="w", foreground="#222", antialias=False)
    return app


def close_on_signals(window, app: QApplication, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> QObject:
    """Close ``window`` as a user would (settings saved, helpers stopped) on SIGTERM or SIGINT.

    Python runs a signal handler only between bytecodes of the main thread, which sits in Qt's C++
    event loop: the handler would wait for the next mouse move. The C-level handler therefore writes
    the signal number to a socket (``signal.set_wakeup_fd``) that a QSocketNotifier watches, so the
    event loop wakes at once and the close runs as an ordinary Qt event. A second signal while closing
    gets the default action (Ctrl-C twice always ends the process). Returns the notifier (keep it)."""
    reader, writer = socket.socketpair()
    for sock in (reader, writer):
        sock.setblocking(False)
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)  # the notifier does the work, in the event loop

    for signum in signals:
        signal.signal(signum, on_signal)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read, app)

    def on_wakeup() -> None:
        try:
            got = reader.recv(64)
        except OSError:
            got = b""
        if not (set(got) & set(signals)) and not received:
            return
        for signum in signals:
            signal.signal(signum, signal.SIG_DFL)
        notifier.setEnabled(False)
        window.close()
        app.quit()

    notifier.activated.connect(on_wakeup)
    notifier._sockets = (reader, writer)  # alive as long as the notifier
    return notifier


def main(path: str | None = None, settings_path: str | None = None) -> int:
    """Show the inspector window (opening ``path`` if given) and run the event loop."""
    app = application()
    from qinspect.gui.main_window import MainWindow

    window = MainWindow(settings_path=settings_path)
    window.show()
    watch = close_on_signals(window, app)  # noqa: F841 - kept alive for the event loop
    if path:
        # Open after the window is shown, so it appears at once and the file loads in the background.
        QTimer.singleShot(0, lambda: window.open_path(os.fspath(path)))
    if os.environ.get("QINSPECT_STARTUP_PROBE"):
        # bench/bench_gui.py: report when the window is on screen and when the file is open, then quit.
        QTimer.singleShot(0, lambda: print(f"SHOWN {time.time():.6f}", flush=True))
        window.open_channel.finished.connect(lambda *_: (print(f"OPENED {time.time():.6f}", flush=True),
                                                         app.quit()))
        window.open_channel.failed.connect(lambda *_: app.quit())
    code = app.exec()
    signal.set_wakeup_fd(-1)
    window.shutdown()
    from qinspect.gui import compute_process

    compute_process.shutdown()
    return int(code)
