"""The worker channel (latest request wins) and the error hub, without the main window."""

from __future__ import annotations

import os
import sys
import threading

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

pytestmark = pytest.mark.gui


def test_latest_request_wins_and_earlier_ones_are_cancelled(qtbot):
    from qinspect.gui.worker import Channel

    channel = Channel("t")
    release = threading.Event()
    started = threading.Event()
    seen_cancel = []

    def slow(token, value):
        # The first request blocks until the second exists, then must see itself cancelled.
        if value == 1:
            started.set()
            release.wait(5)
            seen_cancel.append(token.cancelled)
            token.check()
        return value * 10

    results = []
    channel.finished.connect(lambda rid, r: results.append((rid, r)))
    first = channel.submit(slow, 1)
    assert started.wait(5)
    second = channel.submit(slow, 2)
    release.set()
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    qtbot.wait(100)
    assert results == [(second, 20)]
    assert first != second and seen_cancel == [True]
    assert not channel.busy


def test_worker_errors_come_back_as_signals(qtbot):
    from qinspect.errors import QInspectError
    from qinspect.gui.worker import Channel

    channel = Channel("t")

    def bad(token):
        raise QInspectError("not a capture", "/x/y.h5")

    with qtbot.waitSignal(channel.failed, timeout=5000) as blocker:
        channel.submit(bad)
    _rid, exc, tb = blocker.args
    assert isinstance(exc, QInspectError) and "Traceback" in tb and "bad" in tb


def test_progress_and_partial_of_superseded_request_are_dropped(qtbot):
    from qinspect.gui.worker import Channel

    channel = Channel("t")
    partials = []
    channel.partial.connect(lambda rid, r: partials.append(r))
    gate = threading.Event()

    def job(token, tag):
        if tag == "old":
            gate.wait(5)
            try:
                token.partial(tag)
            finally:
                return tag  # noqa: B012 - the partial raises Cancelled; returning shows nothing leaks
        token.partial(tag)
        return tag

    channel.submit(job, "old")
    with qtbot.waitSignal(channel.finished, timeout=5000):
        channel.submit(job, "new")
    gate.set()
    qtbot.wait(200)
    assert partials == ["new"]


def test_error_hub_shows_one_line_for_user_errors_and_details_for_bugs(qtbot):
    from PySide6.QtWidgets import QWidget

    from qinspect.errors import QInspectError
    from qinspect.gui.errors import ErrorHub

    parent = QWidget()
    qtbot.addWidget(parent)
    hub = ErrorHub(parent)
    rec = hub.report(QInspectError("not an HDF5 file", "/data/x.h5"))
    assert rec.summary == "/data/x.h5: not an HDF5 file" and rec.user_error
    assert hub.box.text() == "/data/x.h5: not an HDF5 file"
    assert not hub.box.isModal()
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        rec = hub.report(exc, context="Layer conv1")
    assert rec.summary == "ZeroDivisionError: division by zero" and not rec.user_error
    assert "Traceback" in hub.box.detailedText() and "Layer conv1" in hub.box.text()


@pytest.mark.qt_no_exception_capture
def test_excepthook_routes_ui_exceptions_to_the_hub(qtbot):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QWidget

    from qinspect.gui.errors import ErrorHub

    parent = QWidget()
    qtbot.addWidget(parent)
    hub = ErrorHub(parent)
    hub.install()
    try:
        assert sys.excepthook == hub._excepthook
        hub._excepthook(RuntimeError, RuntimeError("boom in a slot"), None)
        assert hub.history[-1].summary == "RuntimeError: boom in a slot"
        # A slot raising on the UI thread: PySide hands it to sys.excepthook, the loop keeps running.
        fired = []

        def slot():
            fired.append(1)
            raise ValueError("bad slot")

        QTimer.singleShot(0, slot)
        qtbot.waitUntil(lambda: bool(fired), timeout=2000)
        qtbot.waitUntil(lambda: hub.history[-1].summary == "ValueError: bad slot", timeout=2000)
    finally:
        hub.uninstall()
    assert sys.excepthook != hub._excepthook


def test_tree_model_nests_children_and_filters_recursively(qtbot):
    from gui_fixtures import gui_graph

    from qinspect.gui.graph_model import COL_TYPE, LAYER_NAME_ROLE, GraphTreeModel, LayerFilterProxy

    model = GraphTreeModel(gui_graph())
    block = model.index(1, 0)
    assert model.hasChildren(block) and block.data(LAYER_NAME_ROLE) == "block"
    assert model.rowCount(block) == 1
    assert model.index(0, COL_TYPE, block).data() == "Conv2D"
    proxy = LayerFilterProxy()
    proxy.setSourceModel(model)
    proxy.set_search("CONV2D")
    assert proxy.rowCount() == 1 and proxy.index(0, 0).data(LAYER_NAME_ROLE) == "block"
    assert proxy.index(0, 0, proxy.index(0, 0)).data(LAYER_NAME_ROLE) == "block/conv"
    # The index of a nested layer is found without expanding anything by hand.
    assert model.index_of("block/conv").data(LAYER_NAME_ROLE) == "block/conv"
    model.set_placement({"hand": "CPU"})
    from qinspect.gui.graph_model import COL_PLACEMENT

    assert model.index_of("hand").siblingAtColumn(COL_PLACEMENT).data() == "CPU"


def test_tree_model_updates_reach_a_sorted_proxy(qtbot):
    """Placement, metric and badges are written into the cells after the rows exist: a proxy that
    sorts by the metric re-sorts, the colour and alignment follow, and a new graph clears them."""
    from gui_fixtures import gui_graph
    from PySide6.QtCore import Qt

    from qinspect.gui.graph_model import (
        COL_METRIC,
        COL_NAME,
        COL_PLACEMENT,
        LAYER_NAME_ROLE,
        GraphTreeModel,
        LayerFilterProxy,
    )

    graph = gui_graph()
    model = GraphTreeModel(graph)
    proxy = LayerFilterProxy()
    proxy.setSourceModel(model)
    proxy.sort(COL_METRIC, Qt.SortOrder.AscendingOrder)
    top = [layer.name for layer in graph.layers if layer.parent is None]
    values = {name: float(40 - 3 * i) for i, name in enumerate(top)}  # the last layer: least SQNR
    model.set_metric(values, "sqnr")
    assert model.headerData(COL_METRIC, Qt.Orientation.Horizontal) == "SQNR dB"
    assert proxy.index(0, 0).data(LAYER_NAME_ROLE) == top[-1]
    assert proxy.index(0, COL_METRIC).data() == f"{values[top[-1]]:.1f}"
    cell = model.index_of(top[0]).siblingAtColumn(COL_METRIC)
    assert cell.data(Qt.ItemDataRole.BackgroundRole).color().hue() == 120  # 40 dB: green
    assert cell.data(Qt.ItemDataRole.TextAlignmentRole) == int(Qt.AlignmentFlag.AlignRight
                                                               | Qt.AlignmentFlag.AlignVCenter)
    model.set_metric({top[0]: 1e-3}, "mse", "MSE")
    assert model.headerData(COL_METRIC, Qt.Orientation.Horizontal) == "MSE"
    assert model.index_of(top[1]).siblingAtColumn(COL_METRIC).data() == ""
    model.set_badges({top[0]: ("⚠", "saturates")})
    name_cell = model.index_of(top[0]).siblingAtColumn(COL_NAME)
    assert name_cell.data().startswith("⚠ ") and "saturates" in name_cell.data(Qt.ItemDataRole.ToolTipRole)
    model.set_placement({top[0]: "CPU"}, {top[0]: "float op"})
    placed = model.index_of(top[0]).siblingAtColumn(COL_PLACEMENT)
    assert placed.data(Qt.ItemDataRole.ForegroundRole).color().name() == "#b35900"
    assert "float op" in placed.data(Qt.ItemDataRole.ToolTipRole)
    model.set_graph(graph)
    assert model.index_of(top[0]).siblingAtColumn(COL_PLACEMENT).data() == ""
    assert model.index_of(top[0]).siblingAtColumn(COL_NAME).data() == graph[top[0]].short_name


def test_helper_shutdown_leaves_no_executor_thread_closing_its_pipe_at_exit():
    # concurrent.futures' exit hook wakes every executor manager thread through a pipe, without the
    # executor's lock; a manager thread still closing that pipe (its helper was terminated) made the
    # hook fail with "OSError: [Errno 9] Bad file descriptor" at interpreter exit. After shutdown()
    # every manager thread has finished and every wakeup pipe is marked closed, so the hook skips it.
    from concurrent.futures import process as cf_process

    from qinspect.gui import compute_process

    if compute_process._DISABLED:
        pytest.skip("no helper process here")
    # only this test's executors: earlier tests' abandoned ones (other modules) may not be collected yet
    before = set(cf_process._threads_wakeups)
    assert compute_process.call(compute_process._warm) is True
    assert compute_process.call_model(compute_process._warm) is True
    compute_process.kill_model_helper()  # a cancelled emulation: stopped without waiting
    assert compute_process.call_model(compute_process._warm) is True  # the next job's new helper
    items = [(t, w) for t, w in cf_process._threads_wakeups.items() if t not in before]
    assert len(items) >= 2, "the helpers ran in no executor"
    compute_process.shutdown()
    for thread, wakeup in items:
        assert not thread.is_alive()
        assert wakeup._closed


def test_helpers_run_below_the_window_priority():
    # The scheduler must prefer the UI thread over a helper's numpy work (an emulation beside the
    # window must not stall its painting).
    from qinspect.gui import compute_process

    if compute_process._DISABLED:
        pytest.skip("no helper process here")
    assert compute_process.call(compute_process._warm) is True
    assert compute_process.call_model(compute_process._warm) is True
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        for pool, niceness in ((compute_process._POOL, compute_process.LAYER_NICENESS),
                               (compute_process._MODEL_POOL, compute_process.MODEL_NICENESS)):
            (proc,) = pool._processes.values()
            assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, mine + niceness)
    finally:
        compute_process.shutdown()


def _blas_pools():  # runs in a helper process
    import numpy as np
    import threadpoolctl

    np.ones((64, 64)) @ np.ones((64, 64))
    return {info["internal_api"]: info["num_threads"] for info in threadpoolctl.threadpool_info()}


def test_numpy_helpers_run_their_blas_on_one_thread():
    # A helper's matrix products on every core would leave the UI thread waiting for one, however low
    # the helper's priority: its BLAS and OpenMP pools start with one thread (the window's own do not).
    pytest.importorskip("threadpoolctl")
    from qinspect.gui import compute_process

    if compute_process._DISABLED:
        pytest.skip("no helper process here")
    before = {k: os.environ.get(k) for k in compute_process.ONE_THREAD_ENV}
    try:
        for pools in (compute_process.call(_blas_pools), compute_process.call_model(_blas_pools)):
            assert pools, "numpy loaded no BLAS in the helper"
            assert set(pools.values()) == {1}, pools
    finally:
        compute_process.shutdown()
    assert {k: os.environ.get(k) for k in compute_process.ONE_THREAD_ENV} == before  # the window's own


def _count_to(n):  # runs in a helper process
    from qinspect.gui.compute_process import report_progress

    for i in range(n):
        report_progress(i + 1, n, "counting")
    return os.getpid()


def _count_until_cancelled():  # runs in a helper process
    import time

    from qinspect.gui.compute_process import report_progress

    for i in range(10_000):
        report_progress(i, 0, "")
        time.sleep(0.01)
    return "never cancelled"


def test_a_job_with_progress_runs_in_a_helper_and_stops_when_cancelled():
    from qinspect.gui import compute_process

    if compute_process._DISABLED:
        pytest.skip("no helper process here")
    seen = []
    pid = compute_process.call_with_progress(_count_to, 5, progress=lambda *a: seen.append(a), cancelled=lambda: False)
    assert pid != os.getpid()  # not in this process: its GIL stays free for the window
    assert seen == [(i, 5, "counting") for i in range(1, 6)]
    reports = []
    with pytest.raises(compute_process.Superseded):
        compute_process.call_with_progress(_count_until_cancelled, progress=lambda *a: reports.append(a),
                                           cancelled=lambda: len(reports) >= 3)
    assert 3 <= len(reports) < 10_000
    assert not compute_process._JOBS


def _sleep_then(value):  # runs in a helper process
    import time

    time.sleep(30)
    return value


def test_a_call_stopped_by_shutdown_ends_instead_of_running_here():
    # At exit the window stops the helpers under a worker thread still waiting on one: that call must
    # end (Superseded), not redo the work in its thread while the interpreter finalizes.
    import threading

    from qinspect.gui import compute_process

    if compute_process._DISABLED:
        pytest.skip("no helper process here")
    assert compute_process.call(compute_process._warm) is True
    outcome = []

    def worker():
        try:
            outcome.append(compute_process.call(_sleep_then, "ran"))
        except compute_process.Superseded:
            outcome.append("superseded")

    t = threading.Thread(target=worker)
    t.start()
    import time

    time.sleep(1.0)  # the call is in the helper
    compute_process.shutdown()
    t.join(20)
    assert outcome == ["superseded"] and not compute_process._DISABLED
    assert compute_process.call(compute_process._warm) is True  # a later window gets a new helper
    compute_process.shutdown()


def test_the_window_collects_garbage_only_in_the_ui_thread(qtbot, tmp_path):
    """Automatic collection would run in whichever thread allocates, worker threads included, and destroy
    old views' Qt objects there (a deadlock seen in the suite): the window turns it off and collects from a
    UI-thread timer."""
    import gc

    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=str(tmp_path / "s.ini"))
    qtbot.addWidget(win)
    assert not gc.isenabled()
    gc.collect()
    win.shutdown()


def test_a_helper_killed_mid_result_leaves_no_thread_waiting_forever():
    """A helper terminated while it writes its result leaves part of a message in the result pipe; the
    pool's manager thread then waits in recv() for the rest, and the interpreter's exit hook joins that
    thread (a test run hung so at exit). Stopping the pool must let that thread finish."""
    import multiprocessing as mp
    import struct
    import time
    from concurrent.futures import ProcessPoolExecutor

    from qinspect.gui import compute_process

    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    pool.submit(time.sleep, 60)
    manager = pool._executor_manager_thread
    writer = pool._result_queue._writer
    try:
        # what a helper killed mid-write leaves: a length header and 3 of the 1000 bytes it announces
        os.write(writer.fileno(), struct.pack("!i", 1000) + b"abc")
        deadline = time.time() + 10
        while time.time() < deadline:  # until the manager thread is blocked reading the rest
            frame = sys._current_frames().get(manager.ident)
            if frame is not None and frame.f_code.co_name in ("_recv", "_recv_bytes", "recv"):
                break
            time.sleep(0.01)
        compute_process._stop(pool)
        manager.join(15)
        assert not manager.is_alive()
    finally:
        if not writer.closed:  # the assertion failed: release the thread so the test run can exit
            writer.close()


def test_model_helper_jobs_report_progress_each_to_its_own_caller():
    """Two threads wait on the one model helper at once: each hears its own job's reports, all of them,
    in order (a diagnosis' progress must not end up in a remedy trial's status line)."""
    from qinspect.gui import compute_process

    if compute_process._DISABLED:
        pytest.skip("no helper process here")
    heard: dict[int, list] = {5: [], 7: []}
    results: dict[int, int] = {}

    def run(n: int) -> None:
        results[n] = compute_process.call_model(_count_to, n, progress=lambda *r: heard[n].append(r))

    try:
        threads = [threading.Thread(target=run, args=(n,)) for n in (5, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for n in (5, 7):
            assert heard[n] == [(i + 1, n, "counting") for i in range(n)]
            assert results[n] != os.getpid()  # ran in the helper
    finally:
        compute_process.shutdown()


def test_a_model_job_whose_caller_stops_listening_ends_then_says_so():
    """``progress`` raising (the caller's request was superseded) is not heard again; the job ends in the
    helper, which is kept (another job may wait behind it), and then the exception reaches the caller."""
    from qinspect.gui import compute_process

    if compute_process._DISABLED:
        pytest.skip("no helper process here")

    class StopListeningError(Exception):
        pass

    calls = []

    def stop(*report):
        calls.append(report)
        raise StopListeningError()

    try:
        assert compute_process.call_model(_count_to, 1) != os.getpid()
        helper = compute_process._MODEL_POOL
        with pytest.raises(StopListeningError):
            compute_process.call_model(_count_to, 5, progress=stop)
        assert calls == [(1, 5, "counting")]  # heard once, then no more
        assert compute_process._MODEL_POOL is helper  # not killed
        assert compute_process.call_model(_count_to, 2) != os.getpid()
    finally:
        compute_process.shutdown()


def test_a_model_job_run_in_the_callers_thread_reports_to_no_other_job(monkeypatch):
    """Without helper processes a model job runs in its caller's thread; its progress must not reach the
    report hook a capture or advisor job has set meanwhile (nor be cancelled by it)."""
    from qinspect.gui import compute_process

    heard = []
    monkeypatch.setattr(compute_process, "_DISABLED", True)
    monkeypatch.setitem(compute_process._child, "report", lambda *r: heard.append(r))
    assert compute_process.call_model(_report_through_helper_token) == "done"
    assert heard == []
    assert not compute_process.in_model_helper()


def _report_through_helper_token():  # a model job: in the helper, or in the caller's thread
    from qinspect.gui.emulation import _HelperToken

    _HelperToken().progress(1, 2, "diagnosing")
    return "done"
