"""Start-up as a user runs it: no TensorFlow to inspect a capture, a real window under Xvfb, and export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

from gui_fixtures import isolated_settings, stop_helpers, write_gui_capture  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


pytestmark = pytest.mark.gui

# Opens the window on a capture, waits until the layer panel and the emulation are done, then reports.
SCRIPT = textwrap.dedent("""
    import sys, time
    from qinspect.gui.app import application
    app = application()
    from qinspect.gui.main_window import MainWindow
    win = MainWindow(settings_path=sys.argv[2])
    win.show()
    win.open_path(sys.argv[1])
    deadline = time.time() + 60
    def ready():
        p = win.layer_panel
        s = win.session
        return (p.data is not None and p.data.complete and s is not None and s.analysis is not None
                and not any(c.busy for c in s.channels.values()))
    while time.time() < deadline and not ready():
        app.processEvents()
        time.sleep(0.01)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    if len(sys.argv) > 3:
        win.screen().grabWindow(0).save(sys.argv[3])
    print("READY", ready())
    print("TF", sorted(m for m in ("tensorflow", "tf_keras", "keras") if m in sys.modules))
    print("ERRORS", [r.summary for r in win.errors.history])
    win.shutdown()
""")


def _run(args, tmp_path, extra_env=None, prefix=()):
    script = tmp_path / "open_window.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env.update(extra_env or {})
    return subprocess.run([*prefix, sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                          timeout=240)


def test_inspecting_a_capture_does_not_import_tensorflow(tmp_path):
    cap = write_gui_capture(tmp_path / "cap.h5")
    out = _run([str(cap), str(tmp_path / "s.ini")], tmp_path)
    assert "READY True" in out.stdout, out.stdout + out.stderr
    assert "TF []" in out.stdout, out.stdout
    assert "ERRORS []" in out.stdout, out.stdout + out.stderr


def test_screenshot_of_a_real_window_under_xvfb(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb xauth)")
    cap = write_gui_capture(tmp_path / "cap.h5")
    png = tmp_path / "window.png"
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["QT_QPA_PLATFORM"] = "xcb"
    out = _run([str(cap), str(tmp_path / "s.ini"), str(png)], tmp_path, env,
               prefix=("xvfb-run", "-a", "-s", "-screen 0 1600x1000x24"))
    if "could not connect to display" in out.stderr or "xcb" in out.stderr and "READY" not in out.stdout:
        pytest.skip(f"no usable X server: {out.stderr.strip().splitlines()[-1:]}")
    assert "READY True" in out.stdout, out.stdout + out.stderr
    from PIL import Image

    image = Image.open(png).convert("L")
    assert image.size == (1600, 1000)
    # The window (1400x900 at the top-left, no window manager) is drawn: light widgets, dark text and plots.
    window = image.crop((0, 0, 1400, 900))
    lo, hi = window.getextrema()
    assert hi > 200 and lo < 80


def _window_on_gui_capture(qtbot, tmp_path):
    from qinspect.gui.main_window import MainWindow

    cap = write_gui_capture(tmp_path / "cap.h5")
    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(cap))
    qtbot.waitUntil(lambda: win.session.analysis is not None, timeout=60000)
    return win


@pytest.mark.qt_no_exception_capture
def test_export_layer_report_writes_html_json_csv(qtbot, tmp_path):
    win = _window_on_gui_capture(qtbot, tmp_path)
    out = tmp_path / "report"
    with qtbot.waitSignal(win.session.exported, timeout=120000) as blocker:
        win.export_report(str(out), "hand")
    assert Path(blocker.args[0]) == out
    html = (out / "report.html").read_text()
    data = json.loads((out / "report.json").read_text())
    assert "data:image/png;base64," in html and "http://" not in html.replace("http://www.w3.org", "")
    assert [layer["name"] for layer in data["layers"]] == ["hand"]
    rows = (out / "layers.csv").read_text().splitlines()
    assert len(rows) == 2 and "hand" in rows[1]
    assert win.errors.history == []
    win.shutdown()


@pytest.mark.qt_no_exception_capture
def test_model_report_figures_are_drawn_by_helper_processes_off_the_window(qtbot, tmp_path, monkeypatch):
    """The whole-model export gathers its numbers in a helper process and draws its figures in helper
    processes (never in the window's process, whose GIL the UI thread needs), and every figure lands
    in the report, with progress heard along the way."""
    from qinspect.gui import figures
    from qinspect.report import collect

    def not_here(*_a, **_k):
        raise AssertionError("the report's numbers were gathered in the window's process")

    monkeypatch.setattr(collect, "build_report", not_here)  # the helper imports its own, untouched

    monkeypatch.delenv("QINSPECT_NO_HELPER_PROCESS", raising=False)
    monkeypatch.setattr(figures, "POOL_MIN_FIGURES", 1)
    drawn_here = []
    real_render_png = figures.render_png
    monkeypatch.setattr(figures, "render_png", lambda spec: (drawn_here.append(spec.id), real_render_png(spec))[1])
    win = _window_on_gui_capture(qtbot, tmp_path)
    progress = []
    win.session.progress.connect(lambda done, total, text: progress.append((done, total, text)))
    out = tmp_path / "report"
    with qtbot.waitSignal(win.session.exported, timeout=180000):
        win.export_report(str(out), None)
    html = (out / "report.html").read_text()
    figure_files = sorted((out / "figures").glob("*.png"))
    assert len(figure_files) >= 4 and html.count("data:image/png;base64,") >= len(figure_files)
    assert drawn_here == []  # none was drawn in the window's process
    assert any(text.startswith(("calibrating", "emulating", "diagnosing")) for _done, _total, text in progress)
    assert any("figures" in text and done == total for done, total, text in progress)
    assert win.errors.history == []
    win.shutdown()


@pytest.mark.qt_no_exception_capture
def test_cancelling_the_export_while_figures_are_drawn_stops_the_helpers_and_writes_nothing(qtbot, tmp_path,
                                                                                             monkeypatch):
    import multiprocessing

    from qinspect.gui import compute_process, figures

    monkeypatch.delenv("QINSPECT_NO_HELPER_PROCESS", raising=False)
    monkeypatch.setattr(figures, "POOL_MIN_FIGURES", 1)
    monkeypatch.setattr(figures, "FIGURES_PER_TASK", 1)  # one figure per request: many chances to stop
    stopped = []
    real_stop = compute_process.stop_helpers
    monkeypatch.setattr(compute_process, "stop_helpers", lambda pool: (stopped.append(pool), real_stop(pool)))
    win = _window_on_gui_capture(qtbot, tmp_path)
    before = {p.pid for p in multiprocessing.active_children()}
    win.session.progress.connect(lambda done, total, text: "figures" in text and win.session.cancel_background())
    out = tmp_path / "report"
    win.export_report(str(out), None)
    qtbot.waitUntil(lambda: bool(stopped) and not win.session.channels["write"].busy, timeout=180000)
    assert not out.exists()
    qtbot.waitUntil(lambda: {p.pid for p in multiprocessing.active_children()} <= before, timeout=10000)
    assert win.errors.history == []
    win.shutdown()


@pytest.mark.qt_no_exception_capture
def test_emulation_and_diagnosis_in_the_model_helper_show_their_progress(qtbot, tmp_path):
    """The model helper's jobs report what they are doing to the status bar (a diagnosis of a big model
    takes minutes; it used to show "Diagnosing…" and nothing else)."""
    from qinspect.gui.main_window import MainWindow

    cap = write_gui_capture(tmp_path / "cap.h5")
    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    heard = []
    win.show()
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(cap))
    with qtbot.waitSignal(win.session.findings_changed, timeout=120000):  # emulation, then diagnosis
        win.session.progress.connect(lambda done, total, text: heard.append(text))
    assert "calibrating" in heard  # from the emulation in the helper
    assert any("sensitivity" in text for text in heard), heard  # from the diagnosis' stages
    assert "trying each remedy (what-if runs)" in heard
    assert win.errors.history == []
    win.shutdown()


@pytest.mark.qt_no_exception_capture
def test_findings_tab_says_a_diagnosis_is_running_then_what_it_found(qtbot, tmp_path):
    from qinspect.gui.main_window import MainWindow

    cap = write_gui_capture(tmp_path / "cap.h5")
    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    view = win.findings
    said = []
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(cap))
    win.session.busy.connect(lambda *_: said.append(view.info.text()))
    with qtbot.waitSignal(win.session.findings_changed, timeout=120000):
        pass
    assert any(text.startswith("Diagnosing the int8 model") for text in said), said
    final = view.info.text()
    assert not final.startswith("Diagnosing") and "emulation of a capture has finished" not in final
    assert final.startswith("No findings") == (len(win.session.findings) == 0)
    win.shutdown()


def test_layer_names_on_an_axis_never_overlap_however_long(qtbot):
    """Every k-th layer name is shown, k chosen from the widest name in the axis' own font (names like
    batch_normalization_149 ran into each other with a fixed 110 px guess)."""
    import pyqtgraph as pg
    from PySide6.QtGui import QFontMetrics

    from qinspect.gui.session import set_layer_ticks

    plot = pg.PlotWidget()
    qtbot.addWidget(plot)
    plot.resize(600, 300)
    names = [f"block/batch_normalization_{i}" for i in range(200)]
    set_layer_ticks(plot, names)
    axis = plot.getAxis("bottom")
    major, minor = axis._tickLevels
    assert len(minor) == 200 and major[0] == (0, "batch_normalization_0")  # the short name, after the "/"
    metrics = QFontMetrics(axis.style.get("tickFont") or axis.font())
    widest = max(metrics.horizontalAdvance(text) for _i, text in major)
    spacing_px = 600 / 200 * (major[1][0] - major[0][0])  # the plot's width shared by the layers
    assert spacing_px > widest
