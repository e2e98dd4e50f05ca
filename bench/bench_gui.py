"""GUI responsiveness: event-loop stalls while clicking through every layer of a capture.

A 5 ms precise QTimer runs beside the real event loop; a *stall* is the gap between two of its ticks
(5 ms when nothing blocks the loop). Measured, in one process per run:
- idle: the timer alone for a few seconds (what the machine's other load costs by itself);
- click-through: every layer selected in turn, the next one once the previous is fully drawn;
- key repeat: a held Down arrow on the tree (auto-repeat every 33 ms) over as many rows as there are
  layers, until the layer it stops at is drawn;
- paced: the click-through at the pace of the background phases below, with nothing beside it (their
  control: what the pace alone does);
- the click-through again beside background work, at a brisk person's pace (a click every 250 ms,
  or once the layer is drawn), the work restarted as long as needed (``--phases``):
  bg_emu_cli `qinspect emulate CAPTURE` and bg_cap_cli `qinspect capture` as other programs at the
  window's priority, started from the window's own session (as `qinspect capture ... &` in the terminal
  the window was started from); bg_emu_term and bg_cap_term the same programs in a session of their own,
  as from another terminal: where the kernel groups a session's tasks for scheduling (Linux autogroup,
  on by default in desktop kernels), that group shares the cores with the window's group, not task by
  task; bg_emu_win the window's own emulation (its model helper) and bg_cap_win a capture started from
  the window (its job helper), both as the window runs them (lower priority, one BLAS thread). The
  capture phases need the model and inputs (`--bg-model/--bg-inputs`, or the capture's own sources when
  they are still files).
For each: the worst and the 95th-percentile stall, and click -> fully drawn (median, max); beside
background work, the share of the phase the window held its own background paused while drawing. Beside each
stall figure, the UI thread's own CPU time between two ticks (worst, 95th percentile): on a loaded
machine the wall-clock gaps mostly measure the wait for a core; the CPU figure is what the window
itself spends in one turn of its event loop, close to the stall an idle machine would see. Then the
time from starting `qinspect CAPTURE` to the window shown and to the capture open (target 1.5 s),
next to a bare `python -c pass` start for scale.
Targets (issue 14): no stall over 30 ms idle, none over 50 ms beside a capture or an emulation.
Every gap over 40 ms is explained: a watchdog thread samples the UI thread's Python stack while it is
stalled, and garbage collections on it are timed. "No Python frame" means the UI thread was in Qt's
C++ (layout, painting, or waiting for a core or the GIL: compare the UI-thread CPU figure); "no
sample" means the watchdog, which first looks 40 ms into a gap, did not run before the gap ended (it
had no core, or another thread held the GIL). Beside each
stall, how many times the kernel took the core from the UI thread during it, and the CPU time the
hypervisor took from this virtual machine meanwhile (host steal, in 10 ms ticks; also per phase, with
the worst gap during which the host stole nothing): a stall whose UI CPU is small next to its length
was a wait for a core, not the window's work. Of the UI CPU, the part spent in the kernel and the page
faults taken are shown too: a large UI CPU with neither is the thread's own code running slower (on this
machine: sharing the memory bus with the background), not page faults or memory compaction.
The kernel's own accounts close the sum (Linux): how
long the UI thread was runnable but queued for a core ("waiting for a core", from its schedstat), its
kernel state at each watchdog look (R runnable, S asleep with where: a futex is a lock such as the
GIL, D the disk), and the other threads of this process that used the most CPU meanwhile. Whatever
the UI CPU and the queue wait leave unexplained while the thread was runnable is time the hypervisor
did not run this virtual CPU (steal is counted late, by tick, so it may show in the next gap).

`--compare TREE` runs the same measurement on another checkout (say /work/main) and on this one,
alternating, so the two columns share the machine's load. Stall figures on a shared machine are
noisy: read the columns side by side, not against a figure from another day.

Run: `.venv/bin/python bench/bench_gui.py [CAPTURE ...] [--compare TREE] [--rounds N]` (offscreen).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo" / "demo_capture.h5"
TICK_MS = 5
KEY_REPEAT_MS = 33
STALL_MS = 40  # a gap past this is a stall worth a stack
SAMPLE_MS = 5  # how often the watchdog looks during a stall
STACK_DEPTH = 8
WORST_KEPT = 6  # stalls reported per phase, worst first
BG_CAPTURE_SAMPLES = 8
# Beside background work, layers are clicked at a brisk person's pace (the next click this long after the
# previous one, or once it is drawn if that takes longer), so the background runs between clicks, as it
# would for a user: clicked back to back, a window that pauses it while it draws would starve it.
BG_PACE_MS = 250
BG_WARMUP_S = {"bg_emu_cli": 3.0, "bg_emu_term": 3.0, "bg_emu_win": 3.0,
               "bg_cap_cli": 8.0, "bg_cap_term": 8.0, "bg_cap_win": 8.0}


def _default_capture() -> Path:
    if DEMO.exists():
        return DEMO
    sys.path.insert(0, str(REPO / "tests"))
    from gui_fixtures import write_gui_capture

    print("demo capture not built (make demo): using a generated stand-in")
    return write_gui_capture(Path(tempfile.mkdtemp()) / "standin.h5", n=256)


class _CoreWaits:
    """Why a turn took longer than its own CPU time: how often the kernel took the core from the UI
    thread (involuntary context switches, ``getrusage(RUSAGE_THREAD)``), how long it was runnable but
    queued for a core (its ``schedstat``), and how much CPU time the hypervisor took from the whole
    machine (the steal column of ``/proc/stat``, in 10 ms ticks). Made and read in the UI thread.
    Linux only; elsewhere all read 0."""

    def __init__(self) -> None:
        self._stat, self._queue = (_open_or_none(path) for path in ("/proc/stat", "/proc/thread-self/schedstat"))
        self._tick_ms = 1000 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 10.0

    def read(self) -> tuple[int, float, float]:
        """(involuntary switches of the calling thread so far, machine steal so far in ms, the UI
        thread's wait for a core so far in ms)."""
        try:
            switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        except (AttributeError, OSError):
            switches = 0
        steal = queued = 0.0
        if self._stat is not None:
            fields = os.pread(self._stat, 256, 0).split(b"\n", 1)[0].split()
            steal = int(fields[8]) * self._tick_ms if len(fields) > 8 else 0.0
        if self._queue is not None:
            queued = int(os.pread(self._queue, 128, 0).split()[1]) / 1e6
        return switches, steal, queued


def _thread_usage() -> tuple[float, int]:
    """The calling thread's kernel-mode CPU so far (ms) and its page faults so far (minor and major):
    a UI thread slowed by page faults or memory compaction spends its stall in the kernel."""
    try:
        ru = resource.getrusage(resource.RUSAGE_THREAD)
    except (AttributeError, OSError):
        return 0.0, 0
    return ru.ru_stime * 1000, ru.ru_minflt + ru.ru_majflt


def _open_or_none(path: str) -> int | None:
    """A descriptor to read ``path`` again and again (pread), or None where it does not exist."""
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


class _ThreadTimes:
    """Per-thread scheduler figures of this process: every thread's CPU time (``/proc/self/task/*/
    schedstat``, ms) and the watched thread's kernel state (``stat``: R running, S sleeping, D waiting for
    I/O) with ``wchan`` (where in the kernel it sleeps). With the UI thread's wait for a core
    (:class:`_CoreWaits`) they tell what a stalled UI thread was doing when it used no CPU: waiting for a
    core, for a lock such as the GIL (sleeping in a futex while another thread of this process burns
    CPU), or for the disk. Linux only; elsewhere everything reads empty."""

    def __init__(self, tid: int) -> None:
        self.tid = tid

    def state(self) -> str:
        """The watched thread's kernel state and, when asleep, where: "S futex_wait_queue"."""
        try:
            with open(f"/proc/self/task/{self.tid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0].decode()
            with open(f"/proc/self/task/{self.tid}/wchan", "rb") as f:
                wchan = f.read().decode().strip()
        except (OSError, IndexError):
            return ""  # not Linux: nothing to tell
        return f"{state} {wchan}" if state != "R" and wchan not in ("", "0") else state

    @staticmethod
    def all_cpu() -> dict[int, float]:
        """CPU ms so far of every thread of this process."""
        out = {}
        try:
            tids = os.listdir("/proc/self/task")
        except OSError:
            return out
        for tid in tids:
            try:
                with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                    out[int(tid)] = int(f.read().split()[0]) / 1e6
            except (OSError, ValueError, IndexError):
                pass
        return out

    @staticmethod
    def name(tid: int) -> str:
        """A thread's Python name when it is a Python thread, else its kernel name."""
        for t in threading.enumerate():
            if t.native_id == tid:
                return t.name
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                return f.read().strip()
        except OSError:
            return str(tid)


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
    """Work competing with the window while it is clicked through, restarted whenever it finishes.

    ``cli``: a command line (`qinspect emulate CAPTURE`, `qinspect capture ...`) run as a separate
    program at the window's own priority, as another application on the machine would be.
    ``job``: a function run in a loop in a thread of the window's process, as the window runs its own
    background work (the emulation in the model helper, a capture in a job helper); ``stop()`` ends it."""

    def __init__(self, cli: list[str] | None = None, job=None, stop_job=None, own_session: bool = False) -> None:
        self.cli, self.job, self.stop_job, self.own_session = cli, job, stop_job, own_session
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.runs = 0

    def poll(self) -> None:
        """Start the background work once; it restarts itself in its own thread (never in the UI
        thread: a fork from the window's thread would be a stall the bench made itself)."""
        if self.thread is not None:
            return

        def loop() -> None:
            while not self.stopping.is_set():
                self.runs += 1
                try:
                    if self.cli is not None:
                        self.proc = subprocess.Popen([sys.executable, "-m", "qinspect", *self.cli],
                                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                     start_new_session=self.own_session)
                        self.proc.wait()
                    else:
                        self.job(self.stopping)
                except Exception as exc:  # noqa: BLE001 - a stopped job raises; a broken one is said
                    if not self.stopping.is_set():
                        print(f"background job failed: {exc!r}", file=sys.stderr)
                        return

        self.thread = threading.Thread(target=loop, name="bench-background", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        if self.stop_job is not None:
            self.stop_job()
        if self.thread is not None:
            self.thread.join(60)
        if self.proc is not None and self.proc.poll() is None:  # started as stop() began
            self.proc.terminate()
            self.proc.wait(30)


def _backgrounds(capture: Path, bg_model: Path | None, bg_inputs: Path | None) -> dict[str, _Background]:
    """The background work each `click_*` phase runs beside the click-through (a capture only when a
    model and inputs to capture are known)."""
    from qinspect.gui import capture_job, compute_process, emulation

    out = {
        "bg_emu_cli": _Background(cli=["emulate", str(capture)]),
        "bg_emu_term": _Background(cli=["emulate", str(capture)], own_session=True),
        "bg_emu_win": _Background(job=lambda _stop: compute_process.call_model(
            emulation._emulate_in_helper, str(capture), None), stop_job=compute_process.kill_model_helper),
    }
    if bg_model is not None and bg_inputs is not None:
        target = str(Path(tempfile.mkdtemp()) / "bg_capture.h5")
        cli = ["capture", str(bg_model), "--inputs", str(bg_inputs), "-o", target,
               "--samples", str(BG_CAPTURE_SAMPLES), "--force", "-q"]
        out["bg_cap_cli"] = _Background(cli=cli)
        out["bg_cap_term"] = _Background(cli=cli, own_session=True)

        def capture_in_helper(stop: threading.Event) -> None:
            try:
                compute_process.call_with_progress(capture_job.capture, str(bg_model), str(bg_inputs), target,
                                                   BG_CAPTURE_SAMPLES, None, progress=lambda *_: None,
                                                   cancelled=stop.is_set)
            except compute_process.Superseded:
                pass

        out["bg_cap_win"] = _Background(job=capture_in_helper)
    return out


class _StallSampler:
    """A watchdog thread that records the UI thread's Python stack while its event loop is stalled.

    It wakes when the gap since the ticker's last tick would reach ``STALL_MS``, and while the gap
    lasts, every ``SAMPLE_MS`` it takes the UI thread's stack (``sys._current_frames``). Waking only
    then, not every few ms, keeps its own grabs of the GIL (which the UI thread must wait out) rare.
    A stall is then known by where the UI thread was (which call, which layer) rather than only by
    how long it lasted. Python garbage collections on the UI thread are timed too (``gc.callbacks``):
    a full collection is a stall no stack shows."""

    def __init__(self) -> None:
        self.ui = threading.get_ident()
        self.times = _ThreadTimes(threading.get_native_id())
        self.kstates: dict[float, list[str]] = {}  # tick time -> the UI thread's kernel states seen since
        self.cpu_at: dict[float, dict[int, float]] = {}  # tick time -> every thread's CPU at the first look
        self.tick_at = time.perf_counter()
        self.context = ""  # the layer being selected
        self.samples: dict[float, list[tuple[str, ...]]] = {}  # tick time -> stacks seen since
        self.gc_runs: list[tuple[float, float, int]] = []  # (start, ms, generation) on the UI thread
        self._gc_start = 0.0
        self.armed = False  # only while the ticker runs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-sampler", daemon=True)
        gc.callbacks.append(self._on_gc)
        self._thread.start()

    def _on_gc(self, phase: str, info: dict) -> None:
        if threading.get_ident() != self.ui:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_runs.append((self._gc_start, (time.perf_counter() - self._gc_start) * 1000,
                                 info["generation"]))

    def _watch(self) -> None:
        wait_ms = STALL_MS
        while not self._stop.wait(wait_ms / 1000):
            since = self.tick_at
            gap = (time.perf_counter() - since) * 1000
            if self.armed and gap > STALL_MS:
                frame = sys._current_frames().get(self.ui)
                if frame is not None:
                    self.samples.setdefault(since, []).append(_short_stack(frame))
                state = self.times.state()
                if state:
                    self.kstates.setdefault(since, []).append(state)
                if since not in self.cpu_at:
                    self.cpu_at[since] = _ThreadTimes.all_cpu()
                wait_ms = SAMPLE_MS
            else:
                wait_ms = max(SAMPLE_MS, STALL_MS - gap)

    def take(self, since: float, until: float) -> tuple[list[tuple[str, ...]], float]:
        """The stacks sampled during the gap that started at ``since``, and the UI thread's garbage
        collection time inside it (ms)."""
        gc_ms = sum(ms for start, ms, _ in self.gc_runs if since <= start <= until)
        return self.samples.pop(since, []), gc_ms

    def others(self, since: float) -> tuple[list[str], list[tuple[str, float]]]:
        """For the gap that started at ``since``: the UI thread's kernel states the watchdog saw, and the
        two other threads of this process that used the most CPU from its first look to now (name, ms)."""
        states = self.kstates.pop(since, [])
        before = self.cpu_at.pop(since, None)
        if before is None:
            return states, []
        now = _ThreadTimes.all_cpu()
        used = sorted(((now[t] - ms, t) for t, ms in before.items() if t in now and t != self.times.tid),
                      reverse=True)[:2]
        return states, [(_ThreadTimes.name(t), ms) for ms, t in used if ms >= 1.0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)
        gc.callbacks.remove(self._on_gc)


def _short_stack(frame) -> tuple[str, ...]:
    """The frames of interest, innermost first: this project's and pyqtgraph's (not the bench's own)."""
    out = []
    for fs in reversed(traceback.extract_stack(frame)):
        path = fs.filename.replace(os.sep, "/")
        if "/bench/" in path:
            continue
        if "/qinspect/" in path or "/pyqtgraph/" in path or "/numpy/" in path or "/h5py/" in path:
            tail = "/".join(path.split("/")[-2:])
            out.append(f"{tail}:{fs.lineno} {fs.name}")
        if len(out) >= STACK_DEPTH:
            break
    return tuple(out) or ("(no Python frame: Qt's C++ - layout, paint, events)",)


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


def measure(capture: Path, wait_emulation: bool = False, phases: list[str] | None = None,
            bg_model: Path | None = None, bg_inputs: Path | None = None) -> dict:
    """Open ``capture`` in a window and measure (in this process); return the figures.

    ``wait_emulation``: let the window's own emulation and diagnosis finish first (minutes on a loaded
    machine); by default they are stopped, so the layers show the positions min-MSE gives.
    ``phases``: the background phases to run (default: every one :func:`_backgrounds` offers)."""
    from PySide6.QtCore import QElapsedTimer, QEvent, QEventLoop, Qt, QTimer

    from qinspect.gui.app import application

    app = application()
    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=str(Path(tempfile.mkdtemp()) / "bench-settings.ini"))
    win.show()
    win.open_path(str(capture))
    panel = win.layer_panel
    deadline = time.time() + 300

    def spin(until, seconds: float = 0.0) -> None:
        end = min(deadline, time.time() + seconds) if seconds else deadline
        while not until() and time.time() < end:
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
    unstolen: list[float] = []  # the gaps during which the hypervisor took no CPU from the machine
    ticker = QTimer()
    ticker.setTimerType(Qt.TimerType.PreciseTimer)
    ticker.setInterval(TICK_MS)
    last = [0.0, 0.0]
    waits = _CoreWaits()
    last_waits = [waits.read()]
    last_usage = [_thread_usage()]
    steal_at_start = [0.0]
    sampler = _StallSampler()
    stalls: list[dict] = []

    def on_tick() -> None:
        now, cpu = clock.nsecsElapsed() / 1e6, time.thread_time() * 1000
        usage, usage0 = _thread_usage(), last_usage[0]
        last_usage[0] = usage
        gap, cpu_gap = now - last[0], cpu - last[1]
        gaps.append(gap)
        cpu_gaps.append(cpu_gap)
        last[0], last[1] = now, cpu
        counters, (switches0, steal0, queued0) = waits.read(), last_waits[0]
        last_waits[0] = counters
        if counters[1] == steal0:
            unstolen.append(gap)
        t = time.perf_counter()
        stacks, gc_ms = sampler.take(sampler.tick_at, t)
        states, busy = sampler.others(sampler.tick_at)
        if gap > STALL_MS:
            stalls.append({"ms": gap, "cpu": cpu_gap, "gc": gc_ms, "layer": sampler.context,
                           "preempted": counters[0] - switches0, "steal": counters[1] - steal0,
                           "queued": counters[2] - queued0, "kstates": collections.Counter(states).most_common(2),
                           "busy": busy, "sys": usage[0] - usage0[0], "faults": usage[1] - usage0[1],
                           "stacks": collections.Counter(stacks).most_common(2), "samples": len(stacks)})
        sampler.tick_at = t

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
        unstolen.clear()
        stalls.clear()
        sampler.gc_runs.clear()
        clock.start()
        last[0], last[1] = 0.0, time.thread_time() * 1000
        last_waits[0] = waits.read()
        last_usage[0] = _thread_usage()
        steal_at_start[0] = last_waits[0][1]
        sampler.tick_at = time.perf_counter()
        sampler.armed = True
        ticker.start()
        poll.start()
        QTimer.singleShot(0, start)
        loop.exec()
        sampler.armed = False
        poll.stop()
        ticker.stop()

    def stats() -> dict:
        res = _stats(gaps, cpu_gaps)
        res["stalls"] = sorted(stalls, key=lambda st: -st["ms"])[:WORST_KEPT]
        res["n_stalls"] = len(stalls)
        res["gc_worst"] = max((ms for _, ms, _ in sampler.gc_runs), default=0.0)
        res["steal_ms"] = waits.read()[1] - steal_at_start[0]
        res["worst_unstolen"] = max(unstolen, default=0.0)
        return res

    out: dict = {"layers": len(layers), "capture": str(capture)}
    run_loop(lambda: None, lambda: clock.elapsed() > 3000, 10)
    out["idle"] = stats()

    def click_through(pace_ms: int = 0) -> dict:
        state = {"i": -1, "t0": 0.0, "drawn": []}
        hold = getattr(panel, "background", None)  # the background's pause (trees that have one)
        held_at_start = hold.held_seconds() if hold is not None else 0.0
        started = time.perf_counter()

        def next_layer(_name: str = "") -> None:
            if state["i"] >= 0:
                state["drawn"].append((time.perf_counter() - state["t0"]) * 1000)
            wait_ms = pace_ms - (time.perf_counter() - state["t0"]) * 1000 if state["i"] >= 0 else 0
            if wait_ms > 1:
                QTimer.singleShot(int(wait_ms), click)
            else:
                click()

        def click() -> None:
            state["i"] += 1
            if state["i"] < len(layers):
                state["t0"] = time.perf_counter()
                sampler.context = layers[state["i"]]
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
        res = stats()
        res["drawn_median"] = drawn[len(drawn) // 2] if drawn else 0.0
        res["drawn_max"] = drawn[-1] if drawn else 0.0
        res["complete"] = len(drawn) == len(layers)
        if hold is not None and pace_ms:
            res["background_paused"] = (hold.held_seconds() - held_at_start) / (time.perf_counter() - started)
        return res

    out["click"] = click_through()

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
            sampler.context = f"key repeat {seq['i']}"
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
    out["repeat"] = stats()
    out["repeat"]["last_shown"] = bool(seq["stop"]) and seq["shown"] == seq["stop"]

    if phases is None or "paced" in phases:
        out["paced"] = click_through(BG_PACE_MS)  # the background phases' control: their pace, alone
    for phase, background in _backgrounds(capture, bg_model, bg_inputs).items():
        if phases is not None and phase not in phases:
            continue
        try:
            background.poll()
            # Past its start-up (imports, TensorFlow's for a capture), into the work itself.
            spin(lambda: False, BG_WARMUP_S[phase])
            res = click_through(BG_PACE_MS)
            res["background_runs"] = background.runs
            out[phase] = res
        finally:
            background.stop()
    sampler.stop()
    win.shutdown()
    from qinspect.gui import compute_process

    compute_process.shutdown()
    out["startup"] = startup(capture)
    return out


PHASES = ("idle", "click", "repeat", "paced", "bg_emu_cli", "bg_emu_term", "bg_emu_win", "bg_cap_cli",
          "bg_cap_term", "bg_cap_win")
PHASE_NOTES = {
    "paced": f"at the background phases' pace (a click every {BG_PACE_MS} ms), nothing beside it: their control",
    "bg_emu_cli": "beside `qinspect emulate` (another program, same priority)",
    "bg_emu_term": "beside `qinspect emulate` started from another terminal (its own session)",
    "bg_emu_win": "beside the window's own emulation (its model helper)",
    "bg_cap_cli": "beside `qinspect capture` (another program, same priority)",
    "bg_cap_term": "beside `qinspect capture` started from another terminal (its own session)",
    "bg_cap_win": "beside a capture started from the window (its job helper)",
}


def _autogroup() -> str:
    """Whether the kernel schedules each session as one group (what separates bg_*_term from bg_*_cli)."""
    try:
        return "on" if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1" else "off"
    except OSError:
        return "unknown (not Linux, or no autogroup)"


def _capture_sources(capture: Path) -> tuple[Path | None, Path | None]:
    """The model and the inputs ``capture`` was made from, when both are still files (for the
    background capture phases)."""
    import h5py

    with h5py.File(capture, "r") as f:
        model, inputs = (Path(str(f.attrs.get(k, ""))) for k in ("source_model", "inputs_source"))
    return (model, inputs) if model.is_file() and inputs.is_file() else (None, None)


def _run_child(tree: Path, capture: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), QT_QPA_PLATFORM="offscreen")
    extra = ["--wait-emulation"] if args.wait_emulation else []
    if args.phases:
        extra += ["--phases", args.phases]
    model, inputs = (args.bg_model, args.bg_inputs) if args.bg_model else _capture_sources(capture)
    if model is not None:
        extra += ["--bg-model", str(model), "--bg-inputs", str(inputs)]
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
        if "background_paused" in r:
            extra += f"; background paused {r['background_paused']:.0%} of the phase"
        return (f"{key:10s} worst {r['worst']:6.1f} ms, p95 {r['p95']:5.1f} ms (UI-thread CPU: worst "
                f"{r['cpu_worst']:5.1f}, p95 {r['cpu_p95']:4.1f}; {r['n_stalls']} gaps > {STALL_MS} ms; "
                f"GC worst {r['gc_worst']:.0f}; host steal {r.get('steal_ms', 0):.0f} ms, worst gap without "
                f"steal {r.get('worst_unstolen', r['worst']):.1f} ms){extra}")

    st = res["startup"]
    return "\n".join([*(f"  {label:>10s}  {cell(k)}" for k in PHASES if k in res),
                      f"  {label:>10s}  startup    window shown {st['shown']:.2f} s, capture open "
                      f"{st['opened']:.2f} s (bare python {st['bare']:.2f} s)"])


def _stall_lines(label: str, res: dict) -> list[str]:
    """Where the UI thread was during each phase's worst stalls (the watchdog's samples)."""
    lines = []
    for phase in PHASES:
        for st in res.get(phase, {}).get("stalls", []):
            where = "; ".join(f"{n}/{st['samples']} x [{' <- '.join(stack[:4])}]" for stack, n in st["stacks"])
            kernel = ", ".join(f"{n} x {state}" for state, n in st.get("kstates", []))
            busy = ", ".join(f"{name} {ms:.0f} ms" for name, ms in st.get("busy", []))
            lines.append(f"  {label:>10s}  {phase:10s} {st['ms']:6.1f} ms (UI CPU {st['cpu']:5.1f}, of it in the "
                         f"kernel {st.get('sys', 0):5.1f}, page faults {st.get('faults', 0)}, waiting "
                         f"for a core {st.get('queued', 0):5.1f}, GC {st['gc']:4.1f}, core taken "
                         f"{st.get('preempted', 0)} x, host steal {st.get('steal', 0):.0f} ms) at "
                         f"{st['layer'] or '-'}: {where or 'no sample (the watchdog got no core or no GIL)'}"
                         + (f"; UI thread in the kernel: {kernel}" if kernel else "")
                         + (f"; busiest other threads meanwhile: {busy}" if busy else ""))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="*", type=Path)
    parser.add_argument("--compare", type=Path, help="another checkout, measured alternately with this one")
    parser.add_argument("--rounds", type=int, default=1, help="runs per capture (alternating with --compare)")
    parser.add_argument("--wait-emulation", action="store_true",
                        help="let the window's own emulation and diagnosis finish before measuring "
                             "(default: stop them)")
    parser.add_argument("--phases", default="", help="comma-separated background phases to run "
                        f"(default all: {', '.join(PHASES[3:])})")
    parser.add_argument("--bg-model", type=Path, help="model for the background capture phases (default: "
                        "the capture's own source model, when it is still there)")
    parser.add_argument("--bg-inputs", type=Path, help=".npy inputs for --bg-model")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    captures = args.captures or [_default_capture()]
    if args.child:
        phases = args.phases.split(",") if args.phases else None
        print("RESULT " + json.dumps(measure(captures[0], args.wait_emulation, phases, args.bg_model,
                                             args.bg_inputs)), flush=True)
        return 0
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores; "
          f"{TICK_MS} ms timer; targets: idle < 30 ms, beside a capture or an emulation < 50 ms")
    print(f"scheduling groups per session (autogroup): {_autogroup()}")
    for phase, note in PHASE_NOTES.items():
        print(f"  {phase}: click-through {note}")
    trees = [("before", args.compare.resolve()), ("after", REPO)] if args.compare else [("this", REPO)]
    everything = {}
    for capture in captures:
        results: dict[str, list[dict]] = {label: [] for label, _ in trees}
        for _ in range(max(1, args.rounds)):
            for label, tree in trees:
                results[label].append(_run_child(tree, capture, args))
        everything[str(capture)] = results
        first = results[trees[0][0]][0]
        print(f"\n{capture} ({first['layers']} layers)")
        stall_lines = []
        for label, runs in results.items():
            for i, res in enumerate(runs):
                name = f"{label}{i + 1 if len(runs) > 1 else ''}"
                print(_row(name, res))
                stall_lines += _stall_lines(name, res)
                if not (res["click"]["complete"] and res["repeat"]["last_shown"]):
                    print(f"  {label}: NOT every layer was drawn")
        if stall_lines:
            print(f"\n  stalls over {STALL_MS} ms, worst first per phase, with the UI thread's Python stack "
                  "(innermost first):")
            print("\n".join(stall_lines))
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
