"""`qinspect gui` stopped by SIGTERM or Ctrl-C closes like a window close: helpers stopped, nothing leaked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import write_gui_capture  # noqa: E402

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[1]


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start(tmp_path: Path, new_session: bool) -> tuple[subprocess.Popen, set[int]]:
    cap = write_gui_capture(tmp_path / "cap.h5")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "qinspect", "gui", str(cap), "--settings",
                             str(tmp_path / "s.ini")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path, start_new_session=new_session)
    # Up: the resource tracker and the layer helper run (the window starts them once it is built).
    deadline = time.time() + 60
    while time.time() < deadline and len(_children(proc.pid)) < 2 and proc.poll() is None:
        time.sleep(0.1)
    helpers = _children(proc.pid)
    assert len(helpers) >= 2, f"the window did not come up: {proc.poll()} {proc.stderr.read() if proc.poll() else ''}"
    time.sleep(2.0)  # the capture opens and its background jobs start
    return proc, _children(proc.pid)


def _assert_clean_exit(proc: subprocess.Popen, helpers: set[int]) -> None:
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "leaked" not in err, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in helpers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in helpers)


def test_sigterm_closes_the_window_and_its_helpers(tmp_path):
    proc, helpers = _start(tmp_path, new_session=False)
    proc.send_signal(signal.SIGTERM)
    _assert_clean_exit(proc, helpers)
    # Closed like a window close: the window's layout was saved.
    assert "geometry" in (tmp_path / "s.ini").read_text().lower()


def test_ctrl_c_in_the_terminal_closes_cleanly(tmp_path):
    # Ctrl-C sends SIGINT to the terminal's whole process group: the GUI and its helpers alike.
    proc, helpers = _start(tmp_path, new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    _assert_clean_exit(proc, helpers)
