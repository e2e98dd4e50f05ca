"""Report figure drawing: helper processes side by side against drawing every figure in this process.

A report draws two or three PNG figures per layer (about 50 ms each with pyqtgraph), which made the
figures most of a report's time (a 155-layer MobileNetV2: 20 of 29 s). ``render_figures`` now hands
them to one helper process per core. This prints both times, measured alternately in one run, their
ratio, and checks that both ways give byte-identical PNGs.

Run: ``.venv/bin/python bench/bench_report.py [CAPTURE] [--rounds 2]`` (default: the demo capture,
``make demo``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="?", help="capture file (default: the demo capture)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each way (best is kept)")
    args = parser.parse_args()
    from qinspect.gui import figures
    from qinspect.gui.main_window import demo_capture_path
    from qinspect.report.collect import build_report

    path = args.capture or demo_capture_path()
    if not path:
        print("no capture given and no demo capture: run `make demo`", file=sys.stderr)
        return 2
    specs = build_report(path).all_figures()
    cores = len(os.sched_getaffinity(0))
    helpers = figures.figure_helpers(len(specs), on_gui_thread=True)
    print(f"{path}: {len(specs)} figures; {cores} cores, {helpers} helper processes")
    if not helpers:
        print("(too few figures or cores for helpers: both ways draw in this process)")
    here, pooled = float("inf"), float("inf")
    for _ in range(args.rounds):
        t = time.perf_counter()
        a = figures._render_here(specs)
        here = min(here, time.perf_counter() - t)
        t = time.perf_counter()
        b = figures.render_figures(specs)
        pooled = min(pooled, time.perf_counter() - t)
        if a != b:
            bad = sorted(k for k in a if a[k] != b.get(k))
            print(f"MISMATCH: {len(bad)} figures differ, e.g. {bad[:3]}")
            return 1
    print(f"in this process: {here:6.2f} s ({1e3 * here / len(specs):.0f} ms a figure)")
    print(f"helpers:         {pooled:6.2f} s (start-up included)")
    print(f"ratio helpers / in-process: {pooled / here:.2f}x (PNG bytes identical)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
