"""The start page offers the demo in one click: open it when built, else build it with a progress bar,
else say what to install. The build runs as a child process (``qinspect demo --progress-lines``)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

from gui_fixtures import isolated_settings, stop_helpers  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from qinspect.capture import demo  # noqa: E402

pytestmark = pytest.mark.gui
TESTS = Path(__file__).resolve().parent

# Stands in for `qinspect demo --progress-lines`: progress lines, then a real (small) capture where
# the real build puts the demo.
FAKE_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gui_fixtures import write_gui_capture
    from qinspect.userdirs import demo_folder
    for done in (0, 32, 64, 96):
        print(f"progress {done} 96", flush=True)
        time.sleep(0.05)
    folder = demo_folder()
    folder.mkdir(parents=True, exist_ok=True)
    write_gui_capture(folder / "demo_capture.h5")
""")


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


@pytest.fixture()
def user_data(tmp_path, monkeypatch):
    """An empty XDG data home, and no demo built in the source tree either."""
    from qinspect.gui import main_window

    home = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    user_demo = home / "qinspect" / "demo" / "demo_capture.h5"
    monkeypatch.setattr(main_window, "demo_capture_path", lambda: str(user_demo) if user_demo.exists() else None)
    return home


def _window(qtbot, tmp_path):
    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    return win


def test_the_user_data_folder_is_where_the_window_looks_first(tmp_path, monkeypatch):
    from qinspect.gui.main_window import demo_capture_path

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    built = tmp_path / "qinspect" / "demo" / "demo_capture.h5"
    built.parent.mkdir(parents=True)
    built.write_bytes(b"")
    assert demo_capture_path() == str(built)


def test_build_in_one_click_with_progress_then_open(qtbot, tmp_path, user_data, monkeypatch):
    from qinspect.gui import demo_builder

    monkeypatch.setattr(demo, "missing_packages", lambda: [])
    monkeypatch.setattr(demo_builder, "build_command", lambda: [sys.executable, "-c", FAKE_BUILD])
    win = _window(qtbot, tmp_path)
    button = win.empty.demo_button
    assert button.text() == "Build the demo capture" and button.isEnabled()
    seen: list[tuple[int, int]] = []
    win.demo_builder.progress.connect(lambda done, total: seen.append((done, total)))
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert win.empty.demo_progress.isVisible() and not button.isEnabled()
    qtbot.waitUntil(lambda: win.document is not None, timeout=60000)
    assert seen == [(0, 96), (32, 96), (64, 96), (96, 96)]
    assert win.document.path == str(user_data / "qinspect" / "demo" / "demo_capture.h5")
    assert win.errors.history == []
    win.shutdown()


def test_missing_packages_are_named_and_the_button_is_off(qtbot, tmp_path, user_data, monkeypatch):
    monkeypatch.setattr(demo, "missing_packages", lambda: ["/py -m pip install 'scikit-image>=0.22'"])
    win = _window(qtbot, tmp_path)
    assert not win.empty.demo_button.isEnabled()
    assert "/py -m pip install 'scikit-image>=0.22'" in win.empty.demo_note.text()
    win.open_demo()  # File > Open the demo capture: the same message, as an error
    assert "scikit-image" in win.errors.history[-1].summary
    win.shutdown()


def test_a_failed_build_is_reported_in_its_own_words(qtbot, tmp_path, user_data, monkeypatch):
    from qinspect.gui import demo_builder

    fail = "import sys; print('progress 0 96', flush=True); sys.exit('qinspect: error: the disk is full')"
    monkeypatch.setattr(demo, "missing_packages", lambda: [])
    monkeypatch.setattr(demo_builder, "build_command", lambda: [sys.executable, "-c", fail])
    win = _window(qtbot, tmp_path)
    with qtbot.waitSignal(win.demo_builder.failed, timeout=60000):
        win.open_demo()
    assert win.errors.history[-1].summary.endswith("the disk is full")
    assert win.empty.demo_button.isEnabled() and not win.empty.demo_progress.isVisible()
    win.shutdown()

