"""GUI responsiveness: event-loop stalls while clicking through every layer of a capture.

A 5 ms precise QTimer runs beside the real event loop; a *stall* is the gap between two of its ticks
(5 ms when nothing blocks the loop). Measured, in one process per run:
- idle: the timer alone for a few seconds (what the machine's other load costs by itself);
- click-through: every layer selected in turn, the next one once the previous is fully drawn;
- key repeat: a held Down arrow on the tree (auto-repeat every 33 ms) over as many rows as there are
  layers, until the layer it stops at is drawn;
- the click-through again with a background emulation (`qinspect emulate CAPTURE`, restarted as
  long as needed) competing for the cores.
For each: the worst and the 95th-percentile stall, and click -> fully drawn (median, max). Beside each
stall figure, the UI thread's own CPU time between two ticks (worst, 95th percentile): on a loaded
machine the wall-clock gaps mostly measure the wait for a core; the CPU figure is what the window
itself spends in one turn of its event loop, close to the stall an idle machine would see. Then the
time from starting `qinspect CAPTURE` to the window shown and to the capture open (target 1.5 s),
next to a bare `python -c pass` start for scale.
Targets (issue 14): no stall over 30 ms idle, none over 50 ms beside a capture or an emulation.

`--compare TREE` runs the same measurement on another checkout (say /work/main) and on this one,
alternating, so the two columns share the machine's load. Stall figures on a shared machine are
noisy: read the columns side by side, not against a figure from another day.

Run: `.venv/bin/python bench/bench_gui.py [CAPTURE ...] [--compare TREE] [--rounds N]` (offscreen).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo" / "demo_capture.h5"
TICK_MS = 5
KEY_REPEAT_MS = 33


def _default_capture() -> Path:
    if DEMO.exists():
        return DEMO
    sys.path.insert(0, str(REPO / "tests"))
    from gui_fixtures import write_gui_capture

    print("demo capture not built (make demo): using a generated stand-in")
    return write_gui_capture(Path(tempfile.mkdtemp()) / "standin.h5", n=256)


def _stats(gaps: list[float], cpu_gaps: list[float]) -> dict[str, float]:
    """Worst and 95th-percentile gap between ticks (wall clock), and the same for the UI thread's own
    CPU time between ticks: what the window itself spends, which the machine's load does not inflate."""
    if not gaps:
        return {"worst": 0.0, "p95": 0.0, "cpu_worst": 0.0, "cpu_p95": 0.0, "n": 0}
    s, c = sorted(gaps), sorted(cpu_gaps)

    def p95(v: list[float]) -> float:
        return v[min(len(v) - 1, int(0.95 * len(v)))]

    return {"worst": s[-1], "p95": p95(s), "cpu_worst": c[-1], "cpu_p95": p95(c), "n": len(s)}


class _Background:
    """`qinspect emulate CAPTURE` running beside the window, restarted whenever it finishes."""

    def __init__(self, capture: Path) -> None:
        self.capture = capture
        self.proc: subprocess.Popen | None = None

    def poll(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-m", "qinspect", "emulate", str(self.capture)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def startup(capture: Path) -> dict[str, float]:
    """Seconds from spawning `qinspect gui CAPTURE` to the window shown and to the capture open."""
    settings = str(Path(tempfile.mkdtemp()) / "startup-settings.ini")
    env = dict(os.environ, QINSPECT_STARTUP_PROBE="1")
    exe = [sys.executable, "-m", "qinspect", "gui", "--settings", settings, str(capture)]
    t0 = time.time()
    out = subprocess.run(exe, capture_output=True, text=True, env=env, timeout=120).stdout
    stamps = dict(line.split() for line in out.splitlines() if line.startswith(("SHOWN", "OPENED")))
    t1 = time.time()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.time() - t1
    return {"shown": float(stamps["SHOWN"]) - t0, "opened": float(stamps["OPENED"]) - t0, "bare": bare}


def _drawing(panel) -> bool:
    drawer = getattr(panel, "drawer", None)  # absent before the panel drew in steps
    return bool(drawer is not None and drawer.pending)


def measure(capture: Path, wait_emulation: bool = False) -> dict:
    """Open ``capture`` in a window and measure (in this process); return the figures.

    ``wait_emulation``: let the window's own emulation and diagnosis finish first (minutes on a loaded
    machine); by default they are stopped, so the layers show the positions min-MSE gives."""
    from PySide6.QtCore import QElapsedTimer, QEvent, QEventLoop, Qt, QTimer

    from qinspect.gui.app import application

    app = application()
    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=str(Path(tempfile.mkdtemp()) / "bench-settings.ini"))
    win.show()
    win.open_path(str(capture))
    panel = win.layer_panel
    deadline = time.time() + 300

    def spin(until) -> None:
        while not until() and time.time() < deadline:
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
            time.sleep(0.002)

    spin(lambda: panel.data is not None and panel.data.complete)
    if wait_emulation:
        # The model-wide emulation and diagnosis first: the figures below are about the window's work.
        spin(lambda: win.session is not None and not any(c.busy for c in win.session.channels.values()))
    elif win.session is not None:
        win.session.shutdown()  # stop them: the background phase below runs its own emulation
    spin(lambda: not _drawing(panel))  # the first layer's last plots: not part of the idle figure
    layers = [n for n in win.document.activation_layers if win.document.graph[n].class_name != "InputLayer"]

    clock = QElapsedTimer()
    gaps: list[float] = []
    cpu_gaps: list[float] = []  # the UI thread's own CPU time between two ticks
    ticker = QTimer()
    ticker.setTimerType(Qt.TimerType.PreciseTimer)
    ticker.setInterval(TICK_MS)
    last = [0.0, 0.0]

    def on_tick() -> None:
        now, cpu = clock.nsecsElapsed() / 1e6, time.thread_time() * 1000
        gaps.append(now - last[0])
        cpu_gaps.append(cpu - last[1])
        last[0], last[1] = now, cpu

    ticker.timeout.connect(on_tick)

    def run_loop(start, done, timeout_s: float) -> None:
        """Run the real event loop with the ticker until ``done()``; ``start()`` runs inside it."""
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(20)
        poll.timeout.connect(lambda: loop.quit() if done() or time.time() > stop_at else None)
        stop_at = time.time() + timeout_s
        gaps.clear()
        cpu_gaps.clear()
        clock.start()
        last[0], last[1] = 0.0, time.thread_time() * 1000
        ticker.start()
        poll.start()
        QTimer.singleShot(0, start)
        loop.exec()
        poll.stop()
        ticker.stop()

    out: dict = {"layers": len(layers), "capture": str(capture)}
    run_loop(lambda: None, lambda: clock.elapsed() > 3000, 10)
    out["idle"] = _stats(gaps, cpu_gaps)

    def click_through(background: _Background | None) -> dict:
        state = {"i": -1, "t0": 0.0, "drawn": []}

        def next_layer(_name: str = "") -> None:
            if state["i"] >= 0:
                state["drawn"].append((time.perf_counter() - state["t0"]) * 1000)
            if background is not None:
                background.poll()
            state["i"] += 1
            if state["i"] < len(layers):
                state["t0"] = time.perf_counter()
                if win.current_layer() == layers[state["i"]]:
                    panel.show_layer(layers[state["i"]])  # selected already: selecting it loads nothing
                else:
                    win.select_layer(layers[state["i"]])

        panel.shown.connect(next_layer)
        try:
            run_loop(next_layer, lambda: state["i"] >= len(layers), 600)
        finally:
            panel.shown.disconnect(next_layer)
        drawn = sorted(state["drawn"])
        res = _stats(gaps, cpu_gaps)
        res["drawn_median"] = drawn[len(drawn) // 2] if drawn else 0.0
        res["drawn_max"] = drawn[-1] if drawn else 0.0
        res["complete"] = len(drawn) == len(layers)
        return res

    out["click"] = click_through(None)

    # Key repeat: a held Down arrow on the tree (a press, then auto-repeats every 33 ms) from the first
    # layer, as many rows as there are layers; then wait for the layer it stopped at to be drawn.
    from PySide6.QtGui import QKeyEvent
    from PySide6.QtWidgets import QApplication

    win.select_layer(layers[0])
    spin(lambda: panel.data is not None and panel.data.complete and not _drawing(panel))
    seq = {"i": 0, "shown": "", "stop": ""}
    repeat = QTimer()
    repeat.setInterval(KEY_REPEAT_MS)

    def press() -> None:
        if seq["i"] < len(layers):
            QApplication.sendEvent(win.tree, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Down,
                                                       Qt.KeyboardModifier.NoModifier, "", seq["i"] > 0))
            seq["i"] += 1
        else:
            repeat.stop()
            seq["stop"] = win.current_layer() or ""

    def on_shown(name: str) -> None:
        seq["shown"] = name

    repeat.timeout.connect(press)
    panel.shown.connect(on_shown)
    win.tree.setFocus()
    run_loop(repeat.start, lambda: bool(seq["stop"]) and seq["shown"] == seq["stop"], 120)
    panel.shown.disconnect(on_shown)
    out["repeat"] = _stats(gaps, cpu_gaps)
    out["repeat"]["last_shown"] = bool(seq["stop"]) and seq["shown"] == seq["stop"]

    background = _Background(capture)
    try:
        background.poll()
        time.sleep(3.0)  # past its start-up, into the emulation itself
        out["click_bg"] = click_through(background)
    finally:
        background.stop()
    win.shutdown()
    from qinspect.gui import compute_process

    compute_process.shutdown()
    out["startup"] = startup(capture)
    return out


def _run_child(tree: Path, capture: Path, wait_emulation: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), QT_QPA_PLATFORM="offscreen")
    extra = ["--wait-emulation"] if wait_emulation else []
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(capture), *extra],
                          capture_output=True, text=True, env=env, cwd=str(tree), timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"bench child on {tree} failed:\n{proc.stderr[-3000:]}")


def _row(label: str, res: dict) -> str:
    def cell(key: str) -> str:
        r = res[key]
        extra = f", drawn median {r['drawn_median']:.0f} / max {r['drawn_max']:.0f}" if "drawn_max" in r else ""
        return (f"{key:9s} worst {r['worst']:6.1f} ms, p95 {r['p95']:5.1f} ms (UI-thread CPU: worst "
                f"{r['cpu_worst']:5.1f}, p95 {r['cpu_p95']:4.1f}){extra}")

    st = res["startup"]
    return "\n".join([*(f"  {label:>10s}  {cell(k)}" for k in ("idle", "click", "repeat", "click_bg")),
                      f"  {label:>10s}  startup   window shown {st['shown']:.2f} s, capture open "
                      f"{st['opened']:.2f} s (bare python {st['bare']:.2f} s)"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="*", type=Path)
    parser.add_argument("--compare", type=Path, help="another checkout, measured alternately with this one")
    parser.add_argument("--rounds", type=int, default=1, help="alternations per capture with --compare")
    parser.add_argument("--wait-emulation", action="store_true",
                        help="let the window's own emulation and diagnosis finish before measuring "
                             "(default: stop them)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    captures = args.captures or [_default_capture()]
    if args.child:
        print("RESULT " + json.dumps(measure(captures[0], args.wait_emulation)), flush=True)
        return 0
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores; "
          f"{TICK_MS} ms timer; targets: idle < 30 ms, beside an emulation < 50 ms")
    trees = [("before", args.compare.resolve()), ("after", REPO)] if args.compare else [("this", REPO)]
    for capture in captures:
        results: dict[str, list[dict]] = {label: [] for label, _ in trees}
        for _ in range(max(1, args.rounds)):
            for label, tree in trees:
                results[label].append(_run_child(tree, capture, args.wait_emulation))
        first = results[trees[0][0]][0]
        print(f"\n{capture} ({first['layers']} layers)")
        for label, runs in results.items():
            for i, res in enumerate(runs):
                print(_row(f"{label}{i + 1 if len(runs) > 1 else ''}", res))
                if not (res["click"]["complete"] and res["repeat"]["last_shown"]):
                    print(f"  {label}: NOT every layer was drawn")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
