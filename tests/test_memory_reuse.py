"""The command line and the window's helpers keep freed tensors' memory for the next ones (glibc), and
the long-lived helpers give it back after each job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qinspect import memory_reuse

ROOT = Path(__file__).resolve().parents[1]

if not memory_reuse._glibc():
    pytest.skip("malloc settings are glibc's", allow_module_level=True)

# Allocates and frees a 64 MiB array 20 times, after one to warm up: the page faults it took meanwhile,
# the resident memory with the last one freed, and again after return_freed_memory().
PROBE = r"""
import json, resource, sys
import numpy as np
from qinspect import memory_reuse
kept = memory_reuse.keep_freed_memory() if sys.argv[1] == "kept" else False
def rss_kb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
n = 64 * 2**20 // 8
a = np.ones(n); del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = np.ones(n); a += 1; del a
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
freed = rss_kb()
memory_reuse.return_freed_memory()
print(json.dumps({"kept": kept, "faults": faults, "rss_freed_kb": freed, "rss_returned_kb": rss_kb()}))
"""


def _probe(variant: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, variant], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads(out.stdout)


def test_freed_arrays_are_reused_without_page_faults_and_given_back_on_request():
    default, kept = _probe("default"), _probe("kept")
    pages = 64 * 2**20 // 4096
    # glibc as it comes maps every 64 MiB array afresh: the kernel faults it in (in 4 KiB or 2 MiB pages)
    assert default["faults"] > 20 * pages // 512
    assert kept["kept"] is True
    assert kept["faults"] < 50  # the same 64 MiB block, reused 20 times
    # the freed block stays resident until it is given back, then it is gone
    assert kept["rss_freed_kb"] - kept["rss_returned_kb"] > 0.9 * 64 * 1024


def test_a_command_line_process_keeps_freed_memory(tmp_path):
    code = ("import sys; from qinspect import memory_reuse; from qinspect.cli import main\n"
            f"sys.argv = ['qinspect', 'info', {str(tmp_path / 'missing.h5')!r}]\n"
            "rc = main()\n"
            "print(rc, memory_reuse.keeping_freed_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.split() == ["2", "True"], out.stderr


def test_calling_main_in_process_leaves_the_callers_malloc_alone(tmp_path):
    code = ("from qinspect import memory_reuse; from qinspect.cli import main\n"
            f"rc = main(['info', {str(tmp_path / 'missing.h5')!r}])\n"
            "print(rc, memory_reuse.keeping_freed_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.split() == ["2", "False"], out.stderr


def _rss_kb() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])


def _free_a_big_array() -> tuple[bool, int]:  # runs in the model helper
    import numpy as np

    a = np.ones(128 * 2**20 // 8)
    del a
    return memory_reuse.keeping_freed_memory(), _rss_kb()


@pytest.mark.gui
def test_the_window_helpers_keep_freed_memory_and_give_it_back_after_each_job():
    pytest.importorskip("PySide6")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qinspect.gui import compute_process as cp

    if cp._DISABLED:
        pytest.skip("no helper processes here")
    try:
        assert cp.call(memory_reuse.keeping_freed_memory) is True  # the layer helper
        keeping, rss_freed = cp.call_model(_free_a_big_array)
        assert keeping is True
        # the job's end gave its freed 128 MiB back: the idle helper does not hold the job's peak
        assert rss_freed - cp.call_model(_rss_kb) > 0.9 * 128 * 1024
    finally:
        cp.shutdown()
