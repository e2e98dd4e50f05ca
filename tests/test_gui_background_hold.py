"""The window pauses its background helpers while it draws a selection, and never leaves one stopped."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

from gui_fixtures import main_window, stop_helpers, write_gui_capture  # noqa: E402

pytestmark = pytest.mark.gui


def teardown_module() -> None:
    stop_helpers()


def _state(pid: int) -> str:
    """The kernel's run state of ``pid`` ('T': stopped by a signal), or '' once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text.rsplit(")", 1)[1].split()[0]


def _becomes(pid: int, wanted, timeout: float = 10.0) -> bool:
    """Whether ``pid``'s state turns to one of ``wanted`` (a signal acts when the process next runs)."""
    deadline = time.monotonic() + timeout
    while _state(pid) not in wanted:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _pids(pool) -> list[int]:
    return [p.pid for p in pool._processes.values()]


def _helpers_or_skip():
    from qinspect.gui import compute_process

    if compute_process._DISABLED or not compute_process._CAN_PAUSE or not Path("/proc/self/stat").exists():
        pytest.skip("no helper processes or no job control here")
    return compute_process


def _count_slowly(n):  # runs in a helper process
    from qinspect.gui.compute_process import report_progress

    for i in range(n):
        time.sleep(0.05)
        report_progress(i + 1, n, "counting")
    return n


def test_pausing_stops_the_background_helpers_and_never_the_layer_helper():
    cp = _helpers_or_skip()
    try:
        assert cp.call(cp._warm) is True  # the layer helper
        assert cp.call_model(cp._warm) is True  # the model helper
        job_result = []
        job = threading.Thread(target=lambda: job_result.append(cp.call_with_progress(
            _count_slowly, 40, progress=lambda *a: None, cancelled=lambda: False)))
        job.start()
        deadline = time.monotonic() + 30
        while not cp._JOBS or not _pids(next(iter(cp._JOBS))):
            assert time.monotonic() < deadline, "the job helper never started"
            time.sleep(0.02)
        (job_pool,) = cp._JOBS
        (layer_pid,) = _pids(cp._POOL)
        (model_pid,) = _pids(cp._MODEL_POOL)
        (job_pid,) = _pids(job_pool)

        assert cp.pause_background() == 2
        assert sorted(cp.paused_pids()) == sorted([model_pid, job_pid])
        assert _becomes(model_pid, ("T",)) and _becomes(job_pid, ("T",))
        assert _state(layer_pid) not in ("T", "")
        assert cp.call(cp._warm) is True  # what the window draws is still computed
        cp.pause_background()  # twice: nothing more to stop, nothing stopped twice
        assert sorted(cp.paused_pids()) == sorted([model_pid, job_pid])

        cp.resume_background()
        assert not cp.paused_pids()
        assert _becomes(model_pid, ("R", "S", "D")) and _becomes(job_pid, ("R", "S", "D"))
        job.join(60)
        assert job_result == [40]  # the paused job carried on to its end
        assert cp.call_model(cp._warm) is True
    finally:
        cp.resume_background()
        cp.shutdown()


def test_a_paused_helper_is_continued_before_it_is_stopped_or_waited_for():
    # A stopped process acts on no SIGTERM and exits for no shutdown: every path that ends a helper
    # must continue it first, or the helper lives on (and a shutdown waiting for it hangs).
    cp = _helpers_or_skip()
    try:
        assert cp.call(cp._warm) is True  # the layer helper: without it nothing is paused (below)
        assert cp.call_model(cp._warm) is True
        (model_pid,) = _pids(cp._MODEL_POOL)
        figures = cp.start_helpers(2, 0)
        figure_pids = _pids(figures)
        assert cp.pause_background() == 3
        assert all(_becomes(pid, ("T",)) for pid in [model_pid, *figure_pids])

        closing = threading.Thread(target=cp.close_helpers, args=(figures,), daemon=True)
        closing.start()
        closing.join(20)
        assert not closing.is_alive(), "closing a paused figure pool waited forever"
        assert sorted(cp.paused_pids()) == [model_pid]

        cp.kill_model_helper()
        assert _becomes(model_pid, ("", "Z"), 20), "a paused model helper survived its stop"
        assert not cp.paused_pids()
    finally:
        cp.resume_background()
        cp.shutdown()


def test_shutdown_ends_paused_helpers():
    cp = _helpers_or_skip()
    assert cp.call(cp._warm) is True
    assert cp.call_model(cp._warm) is True
    (model_pid,) = _pids(cp._MODEL_POOL)
    cp.pause_background()
    assert _becomes(model_pid, ("T",))
    cp.shutdown()
    assert _becomes(model_pid, ("", "Z"), 20)


def test_a_hold_ends_when_released_or_after_its_limit_and_then_owes_the_background_time(qtbot, monkeypatch):
    from qinspect.gui import background_hold

    monkeypatch.setattr(background_hold, "MAX_HOLD_MS", 150)
    monkeypatch.setattr(background_hold, "MIN_RUN_MS", 300)
    calls = []
    hold = background_hold.BackgroundHold(pause=lambda: calls.append("pause") or 1,
                                          resume=lambda: calls.append("resume"))
    hold.hold()
    hold.hold()  # already held: no second pause
    assert calls == ["pause"] and hold.held
    hold.release()
    hold.release()  # nothing held: nothing to resume
    assert calls == ["pause", "resume"] and not hold.held

    hold.hold()
    qtbot.waitUntil(lambda: not hold.held, timeout=5000)  # ran out: the background runs again
    assert calls == ["pause", "resume", "pause", "resume"]
    hold.hold()  # the background is owed its time: no pause yet
    assert not hold.held and calls[-1] == "resume"
    qtbot.wait(400)
    hold.hold()
    assert hold.held and calls[-1] == "pause"
    hold.release()


@pytest.fixture()
def recorded_window(qtbot, tmp_path, monkeypatch):
    """A window whose pauses and resumes of the background are recorded (in ``win.events``), not made."""
    from qinspect.gui import compute_process

    events: list[str] = []
    monkeypatch.setattr(compute_process, "pause_background", lambda: events.append("pause") or 0)
    monkeypatch.setattr(compute_process, "resume_background", lambda: events.append("resume"))
    for win in main_window(qtbot, tmp_path):
        win.events = events
        yield win


def test_a_selection_holds_the_background_until_its_plots_are_drawn(qtbot, tmp_path, recorded_window):
    win, events = recorded_window, recorded_window.events
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(write_gui_capture(tmp_path / "cap.h5")))
    panel = win.layer_panel
    # The first layer's draw over, and on a loaded machine, where a hold can run out, the time the
    # background is then owed: only then does a selection start a hold.
    free = lambda: not panel.background.held and not panel.background.resting  # noqa: E731
    qtbot.waitUntil(free, timeout=10000)
    events.clear()
    with qtbot.waitSignal(panel.shown, timeout=20000) as shown:
        win.select_layer("hand")
        assert events == ["pause"] and panel.background.held  # at once, before anything loads
    assert shown.args == ["hand"]
    assert events == ["pause", "resume"] and not panel.background.held

    # A what-if the user asks for is drawn the same way: held until its plots are drawn.
    qtbot.waitUntil(free, timeout=10000)
    events.clear()
    position = panel.data.position + 2
    panel.set_position(position)
    assert events[-1] == "pause" and panel.background.held
    qtbot.waitUntil(lambda: not panel.background.held and not panel.whatif_channel.busy and not panel.drawer.pending,
                    timeout=20000)  # (a hold that ran out on a loaded machine ends before the drawing)
    assert panel.whatif is not None and panel.whatif.position == position
    # held, then released, and never left held; on a loaded machine a late redraw (the layer's full pass
    # landing after the what-if) may take a hold of its own, released the same way
    assert not panel.drawer.pending and events and events == ["pause", "resume"] * (len(events) // 2)

    # With another tab in front nothing is drawn, so nothing is held; showing the tab draws and holds.
    qtbot.waitUntil(free, timeout=10000)
    events.clear()
    win.tabs.setCurrentWidget(win.findings)
    win.select_layer("flat", show_layer_tab=False)
    qtbot.wait(200)
    assert events == [] and not panel.background.held
    with qtbot.waitSignal(panel.shown, timeout=20000):
        win.tabs.setCurrentWidget(panel)
        assert events == ["pause"]
    assert events == ["pause", "resume"]


_DIES_WHILE_PAUSED = """
import os, signal, sys, time
from qinspect.gui import compute_process as cp
assert cp.call(cp._warm) and cp.call_model(cp._warm)
(pid,) = [p.pid for p in cp._MODEL_POOL._processes.values()]
assert cp.pause_background() == 1
print(pid, flush=True)
time.sleep(0.5)
os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no shutdown: as if killed out of memory
"""


def test_nothing_is_paused_without_a_layer_helper_to_continue_it():
    # The layer helper continues paused helpers should the window die; without it, pausing is refused.
    cp = _helpers_or_skip()
    try:
        cp.shutdown()
        assert cp.call_model(cp._warm) is True
        (model_pid,) = _pids(cp._MODEL_POOL)
        assert cp.pause_background() == 0
        assert _state(model_pid) not in ("T", "")
    finally:
        cp.shutdown()


def test_helpers_paused_by_a_window_that_dies_are_continued_and_leave(tmp_path):
    # Stopped, a helper cannot notice that its window is gone: the layer helper, never paused,
    # continues it, and it leaves as any orphaned helper does.
    import subprocess
    import sys

    cp = _helpers_or_skip()
    assert cp.PAUSED_SLOTS >= 11  # the model helper, a capture, an export and up to 8 figure helpers
    # Output to files: a helper left stopped would hold a pipe open forever.
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _DIES_WHILE_PAUSED], stdout=stdout, stderr=stderr,
                                start_new_session=True)
        assert proc.wait(120) == -9, err.read_text()
    pid = int(out.read_text().split()[0])
    try:
        assert _becomes(pid, ("", "Z"), 20), "the paused helper outlived its window, stopped"
    finally:
        if _state(pid) not in ("", "Z"):
            os.kill(pid, 9)
