"""The frozen app (packaging/qinspect.spec, `make app`): built with PyInstaller, then used as a user would.

One build (about a minute and a half on two cores) serves every check: --version from the bundled
metadata, info, emulate and report (figures drawn by the bundled Qt), the one-line refusal of capture
(no TensorFlow inside), and the window on a capture under the offscreen platform with its helper
processes running (multiprocessing.freeze_support: they must not re-enter the command line).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from capture_fixtures import write_tiny
from conftest import REFCASES, REPO

pytestmark = [pytest.mark.slow, pytest.mark.gui]


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Path:
    """The built one-folder app's executable."""
    if importlib.util.find_spec("PyInstaller") is None:
        if os.environ.get("CI"):
            pytest.fail("PyInstaller missing: the Makefile installs the 'app' extra")
        pytest.skip("PyInstaller not installed (pip install 'qinspect[app]')")
    work = tmp_path_factory.mktemp("pyinstaller")
    result = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN", "--distpath", str(work / "dist"),
         "--workpath", str(work / "build"), str(REPO / "packaging" / "qinspect.spec")],
        capture_output=True, text=True, timeout=1200, cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    exe = work / "dist" / "qinspect" / "qinspect"
    assert exe.is_file()
    folder = exe.parent
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"\nfrozen app: {size / 2**20:.0f} MiB in {folder}")
    return exe


def _run(exe: Path, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**clean, "QT_QPA_PLATFORM": "offscreen", **env})


def test_what_is_left_out_stays_out(app):
    inside = app.parent / "_internal"
    for absent in ("tensorflow", "tf_keras", "keras", "torch", "scipy", "skimage", "PySide6/Qt/translations"):
        assert not (inside / absent).exists(), absent
    assert not list(inside.glob("PySide6/Qt*Quick*")) and not list(inside.glob("PySide6/QtNetwork*"))


def test_version_reads_the_bundled_metadata(app):
    result = _run(app, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"qinspect {importlib.metadata.version('qinspect')}"


def test_info_emulate_diagnose_and_report_work_inside(app, tmp_path):
    model = REFCASES / "small" / "float.h5"
    if model.is_file():
        result = _run(app, "info", str(model))
        assert result.returncode == 0 and "conv1" in result.stdout, result.stderr
    capture = write_tiny(tmp_path / "tiny.h5")
    for command in ("emulate", "diagnose"):
        result = _run(app, command, str(capture), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["model"] == str(capture)
    result = _run(app, "report", str(capture), "-o", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "report.html").is_file()
    assert list((tmp_path / "report" / "figures").glob("*.png")), "the bundled Qt draws the figures"
    assert "warning" not in result.stderr


def test_capture_is_refused_in_one_line(app, tmp_path):
    model = REFCASES / "small" / "float.h5"
    if not model.is_file():
        pytest.skip("reference cases not found")
    result = _run(app, "capture", str(model), "--inputs", str(REFCASES / "small" / "calib.npy"),
                  "-o", str(tmp_path / "c.h5"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"qinspect: error: {model}: capturing needs tensorflow, which this packaged app does not include; "
        "install qinspect with pip for that: pipx install 'qinspect[capture]'"]


def _children(pid: int) -> list[str]:
    """The command lines of ``pid``'s child processes (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_window_opens_a_capture_and_runs_its_helpers(app, tmp_path):
    capture = write_tiny(tmp_path / "tiny.h5")
    settings = str(tmp_path / "settings.ini")
    probe = _run(app, str(capture), "--settings", settings, timeout=120, QINSPECT_STARTUP_PROBE="1")
    assert probe.returncode == 0, probe.stderr
    assert [line.split()[0] for line in probe.stdout.splitlines()] == ["SHOWN", "OPENED"]

    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.Popen([str(app), str(capture), "--settings", settings], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**clean, "QT_QPA_PLATFORM": "offscreen"})
    try:
        deadline = time.monotonic() + 60
        helpers: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            helpers = [c for c in _children(proc.pid) if "--multiprocessing-fork" in c]
            if helpers:
                break
            time.sleep(0.5)
        time.sleep(3)  # a helper that re-entered the command line would have exited by now
        assert proc.poll() is None, proc.communicate()[1]
        assert helpers, "the window starts its helper process"
        assert all(c.split()[0] == str(app) for c in helpers)
        assert len([c for c in _children(proc.pid) if "--multiprocessing-fork" in c]) >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for bad in ("Traceback", "invalid choice", "usage:", "leaked"):
        assert bad not in err, err
