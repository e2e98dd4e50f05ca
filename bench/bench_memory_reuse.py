"""Keeping freed memory for reuse (qinspect.memory_reuse): page faults, system time and wall time of a run.

Runs ``qinspect emulate CAPTURE`` (and ``diagnose``, with ``--diagnose``) in fresh processes, alternating
two variants in one session so they share the machine's load: *default*, glibc's malloc as it comes
(large blocks mapped afresh and unmapped on free), and *kept*, the setting the command line and the
window's helpers use (:func:`qinspect.memory_reuse.keep_freed_memory`). Both call the same command-line
entry point in-process; only that one call differs. For each: wall, user and system seconds, minor page
faults and peak resident memory (the child's rusage), median over ``--rounds``; then kept/default ratios.
Target: system time and page faults well down (the kernel no longer zeroes every new tensor), peak memory
within 1.25x.

Run: ``.venv/bin/python bench/bench_memory_reuse.py [CAPTURE] [--rounds N] [--diagnose]`` (default: the
demo capture).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo" / "demo_capture.h5"

RUN = r"""
import sys
from qinspect import memory_reuse
if sys.argv[1] == "kept":
    assert memory_reuse.keep_freed_memory(), "this C library does not take glibc's malloc settings"
from qinspect.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def run_once(variant: str, argv: list[str]) -> dict[str, float]:
    """One fresh process running ``qinspect argv`` under ``variant``; its times, faults and peak memory."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", RUN, variant, *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{variant} run of qinspect {' '.join(argv)} failed:\n{err[-2000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "faults": usage.ru_minflt,
            "peak_mb": usage.ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", type=Path, default=DEMO)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--diagnose", action="store_true", help="also measure `qinspect diagnose`")
    args = parser.parse_args()
    if not args.capture.is_file():
        raise SystemExit(f"{args.capture}: no such capture (make demo builds the demo's)")
    commands = [["emulate", str(args.capture)]]
    if args.diagnose:
        commands.append(["diagnose", str(args.capture)])
    print(f"{args.capture} ({args.capture.stat().st_size / 2**20:.0f} MiB), {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    for argv in commands:
        runs: dict[str, list[dict[str, float]]] = {"default": [], "kept": []}
        for _ in range(args.rounds):
            for variant in runs:
                runs[variant].append(run_once(variant, argv))
        med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
        print(f"qinspect {argv[0]}")
        for variant, m in med.items():
            print(f"  {variant:8s} wall {m['wall']:6.2f} s  user {m['user']:6.2f} s  sys {m['sys']:5.2f} s  "
                  f"page faults {m['faults']:9,.0f}  peak {m['peak_mb']:7.0f} MB")
        d, k = med["default"], med["kept"]
        print(f"  kept/default: wall {k['wall'] / d['wall']:.2f}x, sys {k['sys'] / max(d['sys'], 1e-3):.2f}x, "
              f"page faults {k['faults'] / max(d['faults'], 1):.2f}x, peak memory {k['peak_mb'] / d['peak_mb']:.2f}x"
              " (targets: sys and faults well under 1x, peak memory <= 1.25x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
