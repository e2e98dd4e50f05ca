"""Building the demo captures from the window: ``qinspect demo --progress-lines`` in a child process.

A child process, not a thread: the build imports TensorFlow, which the window never loads, and a
process can be stopped cleanly if the window closes first. Its progress lines drive a progress bar.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QProcess, Signal

from qinspect.capture.demo import CAPTURE_NAME
from qinspect.userdirs import demo_folder


def build_command() -> list[str]:
    """The command that builds the demo into the user's data folder with this installation's qinspect."""
    return [sys.executable, "-m", "qinspect", "demo", "--progress-lines"]


class DemoBuilder(QObject):
    """Runs the build; emits ``progress(done, total)``, then ``finished(path)`` or ``failed(message)``."""

    progress = Signal(int, int)
    finished = Signal(str)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._stdout = b""
        self._stderr = b""

    @property
    def running(self) -> bool:
        """True while a build runs."""
        return self._process is not None

    def start(self, command: list[str] | None = None) -> None:
        """Start building (``command``: for tests; default :func:`build_command`)."""
        if self._process is not None:
            return
        program, *args = command or build_command()
        self._stdout = self._stderr = b""
        process = QProcess(self)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(
            lambda: setattr(self, "_stderr", self._stderr + bytes(process.readAllStandardError().data())))
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self._process = process
        process.start(program, args)

    def stop(self) -> None:
        """Stop a running build (the captures are written atomically: nothing half-built is left)."""
        process, self._process = self._process, None
        if process is not None:
            process.finished.disconnect(self._on_finished)
            process.terminate()
            if not process.waitForFinished(5000):
                process.kill()
                process.waitForFinished(2000)

    def _read_stdout(self) -> None:
        if self._process is None:
            return
        self._stdout += bytes(self._process.readAllStandardOutput().data())
        *lines, self._stdout = self._stdout.split(b"\n")
        for line in lines:
            words = line.decode(errors="replace").split()
            if len(words) == 3 and words[0] == "progress":
                self.progress.emit(int(words[1]), int(words[2]))

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        self._process = None
        if code == 0 and status == QProcess.ExitStatus.NormalExit:
            self.finished.emit(str(demo_folder() / CAPTURE_NAME))
            return
        lines = self._stderr.decode(errors="replace").strip().splitlines()
        errors = [line for line in lines if line.startswith("qinspect: error:")]
        self.failed.emit((errors or lines or [f"the demo build stopped (exit code {code})"])[-1])

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and self._process is not None:
            self._process = None
            self.failed.emit(f"could not start {build_command()[0]}")
