"""Helper processes for the GUI's numpy and TensorFlow work, so the UI thread never competes for the GIL.

Three kinds: the layer helper (below), the model helper (emulation, diagnosis; killed when its job
is cancelled) and one process per job with progress (a capture, :func:`call_with_progress`). All run
below the window's priority, start with SIGINT blocked, and are stopped by :func:`shutdown`, which
also waits for their executors' manager threads (see :func:`_join_retired`). Every helper but the
layer helper does background work: the window pauses it while it draws (:func:`pause_background`).

Reading a layer (h5py decompression) and its statistics (numpy) hold the GIL in stretches; in a worker
*thread* they make the window's painting (hundreds of Python calls per frame) wait behind them. The
layer panel's worker thread therefore hands that work to one long-lived process and only waits for the
answer (waiting releases the GIL). The process is started lazily, warmed up in the background, and
shared by every window of the application.

Requests carry an id; the panel publishes the latest id in shared memory before submitting, and the
process drops (raises :class:`Superseded` for) any request that is no longer the latest, between reads,
so a burst of clicks never queues work. If the process cannot be used, the same functions run in the
calling thread: slower to paint next to, never wrong.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import CancelledError, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from qinspect import memory_reuse
from qinspect.gui import layer_stats as ls


class Superseded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The request is no longer the latest one."""


_POOL: ProcessPoolExecutor | None = None
_LATEST: Any = None  # multiprocessing.Array("q", N_SLOTS): the latest request id per kind of request
N_SLOTS = 2
LOAD, WHAT_IF = 0, 1  # slots: a what-if never supersedes the layer load it follows
_DISABLED = bool(os.environ.get("QINSPECT_NO_HELPER_PROCESS"))
# Counts shutdown() calls. A call whose helper was stopped by a shutdown must end (Superseded), not
# redo its work in its own thread: at exit that thread would still run Python while the interpreter
# finalizes, and Qt's thread pool waits for it forever.
_SHUTDOWNS = 0

# --- in the helper process ---------------------------------------------------------------------------
_child: dict[str, Any] = {"latest": None, "captures": {}}


# Helpers run at a lower priority than the window: when the UI thread wakes (a click, a repaint) the
# scheduler hands it a core before a helper's numpy work, so a long emulation does not stall painting.
# The helpers still get every cycle the window leaves idle.
LAYER_NICENESS = 5
MODEL_NICENESS = 10
# The numpy helpers run their BLAS (OpenBLAS, MKL) and OpenMP pools with one thread: by default they start
# one thread per core, so a helper's matrix product would occupy every core of a small machine (and
# OpenBLAS's idle threads spin for a while after each call), leaving the UI thread waiting for a core
# however low the helper's priority. Set in the environment the child inherits: the pools read it once,
# when numpy loads, which is before the initializer runs. The capture job (TensorFlow, its own thread
# pools) keeps every core: it is a one-off the user waits for, and its low priority yields to the window.
ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _init(latest: Any, parent_pid: int, niceness: int = 0, paused: Any = None) -> None:
    _child["latest"] = latest
    if niceness:
        try:
            os.nice(niceness)
        except OSError:
            pass  # not allowed here: same priority as the window
    # Ctrl-C in the terminal reaches the whole process group: the GUI closes and stops its helpers
    # itself; a helper must not die mid-request printing a KeyboardInterrupt traceback. SIGINT was
    # blocked since the spawn (see _spawn): ignoring it first discards one that came meanwhile.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # Tensors freed by one step are reused by the next, not faulted in and zeroed afresh: that zeroing
    # also streams through the memory bus the window's painting needs (see memory_reuse).
    memory_reuse.keep_freed_memory()
    # A GUI killed by a signal runs no atexit: the helper notices its parent is gone and leaves,
    # rather than living on as an orphan holding the terminal's pipes.
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                # The layer helper (never paused) continues the helpers its window had paused when the
                # window died (see pause_background): stopped, they could not notice it themselves.
                for pid in paused or ():
                    if pid > 0:
                        try:
                            os.kill(pid, signal.SIGCONT)
                        except OSError:
                            pass
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm() -> bool:
    return True


def _check(rid: int, slot: int = LOAD) -> None:
    latest = _child["latest"]
    if latest is not None and latest[slot] != rid:
        raise Superseded()


def _capture(path: str) -> Any:
    from qinspect.io.capture_file import Capture

    key = (path, os.path.getmtime(path))
    cache = _child["captures"]
    if key not in cache:
        for old in list(cache):
            if old[0] == path:
                cache.pop(old).close()
        cache[key] = Capture.open(path)
    return cache[key]


def load_pass(rid: int, path: str, name: str, class_name: str, position: int | None, source: str,
              first_pass: bool, scale: Any = None, code_min: int = -128) -> tuple[ls.LayerData, ls.WhatIf | None]:
    """One pass over a layer's activations (the quick first pass or the full one); no weights.
    ``scale``: per-channel factor to the int8 model's equalized tensor (``Analysis.channel_scale``);
    ``code_min``: the tensor's lowest code (-127 on a DPUCADF8H target)."""
    import numpy as np

    check = (lambda: _check(rid)) if _child["latest"] is not None else (lambda: None)
    check()
    capture = _capture(path)
    shape = capture.activation_shape(name)
    n_total = int(shape[0])
    size = int(np.prod(shape[1:], dtype=np.int64))
    ids, keep = ls.spread_plan(n_total, size)
    if first_pass:
        first_ids, keep = ls.spread_plan(len(ids), keep, ls.FIRST_PASS_VALUES, ls.FIRST_PASS_VALUES)
        ids = ids[first_ids]
    tally = ls.RangeTally()
    values = ls.read_spread(capture, name, ids, keep, check, scale=scale, tally=tally)
    data = ls.layer_data(name, class_name, values, len(ids), n_total, position, source, [], not first_pass,
                         check, tally, code_min)
    if scale is not None:
        from qinspect.report.wording import equalized_note

        data.values_note = equalized_note(scale)
    return data, (ls.what_if(data, data.position) if data.position is not None else None)


def needs_first_pass(path: str, name: str) -> bool:
    """True when the full pass reads more than the quick first pass would (cheap: metadata only)."""
    import numpy as np

    capture = _capture(path)
    shape = capture.activation_shape(name)
    ids, keep = ls.spread_plan(int(shape[0]), int(np.prod(shape[1:], dtype=np.int64)))
    first_ids, first_keep = ls.spread_plan(len(ids), keep, ls.FIRST_PASS_VALUES, ls.FIRST_PASS_VALUES)
    return len(first_ids) * first_keep < len(ids) * keep


def weight_pass(rid: int, class_name: str, raw: dict, positions: dict[str, int],
                source: str) -> list[ls.WeightInfo]:
    """A layer's weights against their int8 positions (:func:`layer_stats.weight_infos`)."""
    if _child["latest"] is not None:
        _check(rid)
    return ls.weight_infos(class_name, raw, positions, source)


def what_if(rid: int, data: ls.LayerData, position: int, method: str) -> ls.WhatIf:
    """Quantize loaded values at ``position``."""
    if _child["latest"] is not None:
        _check(rid, WHAT_IF)
    return ls.what_if(data, position, method)


# --- in the GUI process ----------------------------------------------------------------------------
def _spawn_layer_helper() -> ProcessPoolExecutor:
    """The layer helper, with the shared latest-request array (the model helper: _spawn_model_helper)."""
    global _LATEST, _PAUSED
    ctx = mp.get_context("spawn")
    _LATEST = latest = ctx.Array("q", N_SLOTS, lock=False)
    if _PAUSED is None:  # kept across layer helpers: it may list helpers still paused
        _PAUSED = ctx.Array("q", PAUSED_SLOTS, lock=False)
    return _spawn(_init, (latest, os.getpid(), LAYER_NICENESS, _PAUSED), ONE_THREAD_ENV)


def _spawn(initializer: Any, initargs: tuple, env: dict[str, str] | None = None,
           workers: int = 1) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, started now, with ``env`` added to the environment they inherit.

    A spawned child re-imports the parent's __main__ unless told otherwise, and `python -m qinspect` runs
    the CLI at import (a second window): the main module's identity is hidden while the children start
    (the pool spawns them synchronously, in the first submits)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if main is not None and k in main.__dict__}
    saved_env = {k: os.environ.get(k) for k in env or {}}
    try:
        os.environ.update(env or {})
        if main is not None:
            main.__dict__["__spec__"] = None
            main.__dict__.pop("__file__", None)
        ctx = mp.get_context("spawn")  # never fork a process that runs Qt threads
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)
        # The child starts with SIGINT blocked (a signal mask survives fork and exec; Python's own
        # resource tracker starts the same way): a Ctrl-C while it is still importing, before its
        # initializer ignores SIGINT, would otherwise end it with a KeyboardInterrupt traceback.
        # The mask is per thread, so this works from the worker threads that start the model helper.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            # Each submit finding no idle process spawns one, synchronously: all start while __main__
            # is hidden.
            for _ in range(workers):
                pool.submit(_warm)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return pool
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if main is not None:
            main.__dict__.update(saved)
            if "__spec__" not in saved:
                main.__dict__.pop("__spec__", None)


def start_helpers(workers: int, niceness: int, env: dict[str, str] | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` helper processes for a one-off batch of work (the report's figures), started
    now, with the helpers' usual set-up (priority, SIGINT, leaving with the parent) and ``env`` added to
    what they inherit besides one-thread numpy. Stop it with :func:`stop_helpers` unless it finished."""
    pool = _spawn(_init, (None, os.getpid(), niceness), {**ONE_THREAD_ENV, **(env or {})}, workers=workers)
    with _PAUSE_LOCK:
        _FIGURE_POOLS.add(pool)
    return pool


def stop_helpers(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool from :func:`start_helpers` now, whatever it is doing."""
    _stop(pool)


def close_helpers(pool: ProcessPoolExecutor) -> None:
    """Shut down a pool from :func:`start_helpers` whose work is done, waiting for its processes."""
    _resume_pool(pool)
    pool.shutdown(wait=True)


# --- pausing background work while the window draws --------------------------------------------------
# A helper's numpy (or TensorFlow) work streams tensors through memory; beside it, the UI thread's
# painting, itself memory-bound, runs 2 to 4 times slower on a small machine (measured: a 2-core VM,
# a turn that takes 12 ms idle took up to 60 ms of the UI thread's own CPU). A lower priority does not
# help: the cores are free, the memory bus is not. So while the window draws what the user asked for,
# its background helpers are stopped (SIGSTOP) and continued (SIGCONT) when the drawing is done; the
# layer helper, which computes what is being drawn, is never paused. Only the UI thread pauses them,
# and only for a bounded time (gui.background_hold): a thread of this process that waits on a paused
# helper (its result, its report queue, a cancel event whose lock the helper held) waits at most that
# long. Every path that stops or waits for a helper continues it first. Should this process die during
# a pause (killed, out of memory), the layer helper continues them: a helper is paused only while the
# layer helper runs, and only once its pid is in the list the two share.
PAUSED_SLOTS = 32
# The pids paused now (0: a free slot), shared with the layer helper: multiprocessing.Array("q", PAUSED_SLOTS)
_PAUSED: Any = None
_PAUSE_LOCK = threading.Lock()
_FIGURE_POOLS: set[ProcessPoolExecutor] = set()
_CAN_PAUSE = hasattr(signal, "SIGSTOP") and hasattr(signal, "SIGCONT")


def _processes(pool: ProcessPoolExecutor | None) -> list[Any]:
    return list((getattr(pool, "_processes", None) or {}).values()) if pool is not None else []


def _background_pools() -> list[ProcessPoolExecutor]:
    return [p for p in (_MODEL_POOL, *_JOBS, *_FIGURE_POOLS) if p is not None]


def pause_background() -> int:
    """Stop every background helper process (model jobs, captures, report jobs and figures); the layer
    helper runs on. Returns how many are paused. Continue them with :func:`resume_background`."""
    shared = _PAUSED
    if not _CAN_PAUSE or shared is None or _POOL is None or not any(p.exitcode is None for p in _processes(_POOL)):
        return 0  # nobody would continue them if this process died
    with _PAUSE_LOCK:
        for pool in _background_pools():
            for proc in _processes(pool):
                pid = proc.pid
                if pid is None or pid in shared[:] or proc.exitcode is not None:
                    continue
                slot = next((i for i in range(len(shared)) if shared[i] == 0), None)
                if slot is None:
                    break
                shared[slot] = pid  # listed before it stops
                try:
                    os.kill(pid, signal.SIGSTOP)
                except OSError:
                    shared[slot] = 0
        return sum(1 for pid in shared[:] if pid)


def resume_background() -> None:
    """Continue every helper :func:`pause_background` stopped."""
    for pid in paused_pids():
        _continue(pid)


def paused_pids() -> list[int]:
    """The helper processes paused now."""
    shared = _PAUSED
    return [pid for pid in shared[:] if pid] if shared is not None else []


def _continue(pid: int) -> None:
    """Continue ``pid``, then take it off the paused list (should this process die in between, the layer
    helper continues it once more: harmless)."""
    try:
        os.kill(pid, signal.SIGCONT)
    except OSError:
        pass  # gone already
    shared = _PAUSED
    if shared is not None:
        with _PAUSE_LOCK:
            for i in range(len(shared)):
                if shared[i] == pid:
                    shared[i] = 0


def _resume_pool(pool: ProcessPoolExecutor) -> None:
    """Continue ``pool``'s processes and never pause them again (it is being stopped or shut down: a
    stopped process would not act on SIGTERM, nor exit for a shutdown that waits for it)."""
    with _PAUSE_LOCK:
        _FIGURE_POOLS.discard(pool)
    if _CAN_PAUSE:
        for proc in _processes(pool):
            if proc.pid is not None:
                _continue(proc.pid)


def _pool() -> ProcessPoolExecutor | None:
    global _POOL, _DISABLED
    if _DISABLED:
        return None
    if _POOL is None:
        try:
            _POOL = _spawn_layer_helper()
            atexit.register(shutdown)
        except (OSError, ValueError, ImportError):
            _DISABLED = True
            _POOL = None
            return None
    return _POOL


# Model-wide jobs (emulation, diagnosis) run in a second helper, so they never queue a layer behind
# them and never compete with the UI thread for the GIL either. A cancelled job's helper is killed.
_MODEL_POOL: ProcessPoolExecutor | None = None


def _init_model_helper(reports: Any, parent_pid: int, niceness: int) -> None:
    _init(None, parent_pid, niceness)
    # What a job reports goes to its caller, tagged with the job's id (several callers wait on one
    # helper). The helper is killed to cancel a job, so a report never raises here.
    _child["report"] = lambda done, total, text: reports.put((_child["job"], int(done), int(total), str(text)))
    _child["reports"] = reports


def in_model_helper() -> bool:
    """True inside a job that :func:`call_model` runs in the model helper (not when it runs the job in
    the caller's thread, where a capture's :func:`report_progress` hook may be set for another job)."""
    return "job" in _child


def _run_model_job(job: int, fn: Any, *args: Any) -> Any:
    _child["job"] = job
    try:
        return fn(*args)
    finally:
        memory_reuse.return_freed_memory()  # the helper lives on, idle: what the job freed goes back
        _child["reports"].put((job, None))  # the last report of this job (see _run_job)


class _ModelReports:
    """The model helper's reports, sorted by job for the threads waiting on it (any of them may read
    the shared queue; each takes its own job's reports)."""

    def __init__(self, reports: Any) -> None:
        self.queue = reports
        self.lock = threading.Lock()
        self.boxes: dict[int, list[tuple]] = {}

    def take(self, job: int) -> list[tuple]:
        """The reports of ``job`` that arrived so far (``(None,)`` marks its end)."""
        import queue as queues

        with self.lock:
            while True:
                try:
                    item = self.queue.get_nowait()
                except (queues.Empty, OSError, ValueError):
                    break
                self.boxes.setdefault(item[0], []).append(item[1:])
            return self.boxes.pop(job, [])


def _spawn_model_helper() -> ProcessPoolExecutor:
    reports = mp.get_context("spawn").Queue()
    pool = _spawn(_init_model_helper, (reports, os.getpid(), MODEL_NICENESS), ONE_THREAD_ENV)
    pool.qinspect_reports = _ModelReports(reports)  # type: ignore[attr-defined] - read by call_model
    return pool


_JOB_IDS = iter(range(1, 2**62))
END_GRACE_S = 2.0  # after a job's result, how long its last reports may still be in flight


def _wait_reporting(pool: ProcessPoolExecutor, future: Any, job: int, progress: Any) -> Any:
    """The job's result; meanwhile what it reports reaches ``progress`` in this thread."""
    reports: _ModelReports = pool.qinspect_reports  # type: ignore[attr-defined]
    done_at = None
    while True:
        items = reports.take(job)
        for item in items:
            if item == (None,):
                return future.result()
            progress(*item)
        if future.done():
            if future.exception() is not None or future.cancelled():
                return future.result()  # raises: the helper died or the job raised
            done_at = done_at or time.monotonic()
            if time.monotonic() - done_at > END_GRACE_S:
                return future.result()
            time.sleep(0.005)  # the end marker is on its way
        elif not items:
            wait([future], timeout=0.05)  # returns as soon as the job ends


def call_model(fn: Any, *args: Any, cancelled: Any = None, progress: Any = None) -> Any:
    """Run a model-wide job ``fn(*args)`` in the model helper (in this thread if it is unavailable).

    ``cancelled()`` (optional) tells whether the caller's request was superseded when the helper was
    killed under it; then :class:`Superseded` is raised, else the job is redone in this thread.
    What the job reports with :func:`report_progress` reaches ``progress(done, total, text)`` (optional)
    in this thread. If ``progress`` raises (its caller was superseded), it hears nothing more, the job
    still ends in the helper (another job may wait behind it; only an explicit cancel kills the helper,
    :func:`kill_model_helper`) and the exception is raised then.
    """
    global _MODEL_POOL
    pool = None
    shutdowns = _SHUTDOWNS
    if not _DISABLED:
        try:
            if _MODEL_POOL is None:
                _MODEL_POOL = _spawn_model_helper()
                atexit.register(kill_model_helper)
            pool = _MODEL_POOL
            job = next(_JOB_IDS)
            future = pool.submit(_run_model_job, job, fn, *args)
            refused: list[BaseException] = []

            def listen(*report: Any) -> None:
                if progress is not None and not refused:
                    try:
                        progress(*report)
                    except Exception as exc:  # noqa: BLE001 - raised once the job has ended
                        refused.append(exc)

            result = _wait_reporting(pool, future, job, listen)
        except (BrokenProcessPool, CancelledError):  # killed, or stopped while it waited behind another
            if _MODEL_POOL is pool:  # not a newer helper another job started meanwhile
                _MODEL_POOL = None
                _stop(pool)
            if (cancelled is not None and cancelled()) or _SHUTDOWNS != shutdowns:
                raise Superseded() from None
        except (OSError, ValueError, ImportError):
            pass
        else:
            if refused:
                raise refused[0]
            return result
    return fn(*args)


# Manager threads of pools stopped without waiting (a cancelled emulation must not block the UI
# thread); :func:`shutdown` joins them before the interpreter exits.
_RETIRED: list[threading.Thread] = []


def _stop(pool: ProcessPoolExecutor) -> None:
    """Terminate ``pool``'s process and shut it down without waiting; remember its manager thread.

    ProcessPoolExecutor cannot cancel a running call; terminating its process is the only way."""
    _resume_pool(pool)
    manager = getattr(pool, "_executor_manager_thread", None)
    results = getattr(pool, "_result_queue", None)
    calls = getattr(pool, "_call_queue", None)
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    # Not cancel_futures: the manager thread, seeing its processes gone, fails every pending call with
    # BrokenProcessPool; one cancelled meanwhile made it raise InvalidStateError and die half-way (Python
    # 3.11), printing a traceback after "interrupted" and leaving its queues to the exit hooks.
    pool.shutdown(wait=False)
    # The call queue's feeder thread may be blocked writing a large task into a full pipe whose reader is
    # this process's own copy (the helpers are gone): joined at exit, it hung the command for good after
    # Ctrl-C during a report's figures (outside audit). What it still holds is not needed.
    if calls is not None:
        calls.cancel_join_thread()
    # A process killed while it writes a result leaves part of a message in the result pipe: the manager
    # thread then waits in recv() for bytes that never come, because this process holds the pipe's write
    # end too, and the interpreter's exit hook joins that thread forever (a test run hung so at exit).
    # Without this process's copy the read ends (EOF) once the helper is gone; the manager marks the pool
    # broken and finishes.
    writer = getattr(results, "_writer", None)
    if writer is not None:
        writer.close()
    if manager is not None:
        _RETIRED.append(manager)


def _join_retired(timeout: float = 5.0) -> None:
    """Wait for the manager threads of stopped pools to finish.

    A manager thread that sees its process gone closes its wakeup pipe. concurrent.futures' exit hook
    writes to that pipe without the executor's lock, so a manager thread still closing it at
    interpreter exit makes the hook fail with "OSError: [Errno 9] Bad file descriptor". Once the
    thread has finished the pipe is marked closed and the hook skips it."""
    while _RETIRED:
        _RETIRED.pop().join(timeout)


def kill_model_helper() -> None:
    """Stop a model-wide job at once (its result is no longer wanted): the helper is killed and a new
    one starts with the next job."""
    global _MODEL_POOL
    pool, _MODEL_POOL = _MODEL_POOL, None
    if pool is not None:
        _stop(pool)


# --- jobs with progress in a process of their own (a capture: TensorFlow in a helper) ----------------
class JobCancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a job, at its next progress report, once its caller cancelled it."""


def report_progress(done: int, total: int, text: str = "") -> None:
    """Inside a job run by :func:`call_with_progress`: hand progress to the caller. Raises
    :class:`JobCancelled` once the caller cancelled the job (so it stops and cleans up)."""
    report = _child.get("report")
    if report is not None:
        report(done, total, text)


def _init_job(queue: Any, cancel: Any, parent_pid: int, niceness: int) -> None:
    _init(None, parent_pid, niceness)

    def report(done: int, total: int, text: str) -> None:
        if cancel.is_set():
            raise JobCancelled()
        queue.put((int(done), int(total), text))

    _child["report"] = report
    _child["reports"] = queue


def _run_job(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    finally:
        # Last on the queue: the caller reads every report up to here (the queue's own thread may
        # still be writing them when the result has already arrived).
        _child["reports"].put(None)


_JOBS: set[ProcessPoolExecutor] = set()


def call_with_progress(fn: Any, *args: Any, progress: Any, cancelled: Any) -> Any:
    """Run ``fn(*args)`` in a new helper process of its own (below the window's priority: TensorFlow or
    h5py there never holds this process's GIL) and return its result. What it reports with
    :func:`report_progress` reaches ``progress(done, total, text)`` in the calling thread. Once
    ``cancelled()`` the job raises :class:`JobCancelled` at its next report (it cleans up as on any
    error), and :class:`Superseded` is raised here. Runs in this thread if helpers are unavailable."""
    import queue as queues

    def in_this_thread() -> Any:
        def local(done: int, total: int, text: str) -> None:
            if cancelled():
                raise JobCancelled()
            progress(done, total, text)

        saved, _child["report"] = _child.get("report"), local
        try:
            return fn(*args)
        except JobCancelled:
            raise Superseded() from None
        finally:
            _child["report"] = saved

    if _DISABLED:
        return in_this_thread()
    try:
        ctx = mp.get_context("spawn")
        reports, cancel = ctx.Queue(), ctx.Event()
        pool = _spawn(_init_job, (reports, cancel, os.getpid(), MODEL_NICENESS))
    except (OSError, ValueError, ImportError):
        return in_this_thread()
    _JOBS.add(pool)

    ended = []

    def drain(wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while not ended:
            try:
                item = reports.get(timeout=max(0.0, deadline - time.monotonic())) if wait else reports.get_nowait()
            except queues.Empty:
                return
            if item is None:
                ended.append(True)
            else:
                progress(*item)

    future = None
    try:
        future = pool.submit(_run_job, fn, *args)
        while not future.done():
            try:
                future.result(timeout=0.1)
            except TimeoutError:
                pass
            except BaseException:  # noqa: BLE001 - raised below, after the last reports
                break
            drain()
            if cancelled():
                cancel.set()
        drain(wait=5.0)
        try:
            return future.result()
        except JobCancelled:
            raise Superseded() from None
    finally:
        if future is not None and not future.done():
            cancel.set()  # this thread is leaving (an error here): stop the job at its next report
        _JOBS.discard(pool)
        _resume_pool(pool)
        pool.shutdown(wait=True)
        reports.close()


def start() -> None:
    """Start (and warm up) the helper process in the background."""
    _pool()


def set_latest(rid: int, slot: int = LOAD) -> None:
    """Publish the id of the newest request of a kind; older ones stop at their next check."""
    if _pool() is not None and _LATEST is not None:
        _LATEST[slot] = int(rid)


def call(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in the helper process (in this thread if the process is unavailable).

    Raises :class:`Superseded` when a newer request replaced this one.
    """
    global _DISABLED, _POOL
    shutdowns = _SHUTDOWNS
    pool = _pool()
    if pool is not None:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            if _SHUTDOWNS != shutdowns:
                raise Superseded() from None  # stopped by shutdown(): the window is closing
            # The helper died (killed, out of memory): carry on in this thread from now on.
            _DISABLED = True
            if _POOL is pool:
                _POOL = None
                _stop(pool)
    child_latest = _child["latest"]
    _child["latest"] = None  # in-thread: the caller's own cancel token does the checking
    try:
        return fn(*args)
    finally:
        _child["latest"] = child_latest


def shutdown() -> None:
    """Stop both helper processes now (terminated: nothing they compute is wanted any more, and the
    interpreter's exit would otherwise wait for them)."""
    global _POOL, _SHUTDOWNS
    _SHUTDOWNS += 1
    resume_background()
    pool, _POOL = _POOL, None
    if pool is not None:
        _stop(pool)
    kill_model_helper()
    for job in list(_JOBS):  # a job still running at exit (its caller waited, then gave up)
        _JOBS.discard(job)
        _stop(job)
    _join_retired()
