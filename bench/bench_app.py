"""The frozen app next to the pip-installed command: start-up times and the app's size, side by side.

Prints, for `dist/qinspect/qinspect` (from `make app`) and `python -m qinspect` measured in this one run
(median of 5, alternating): `--version`, and `qinspect CAPTURE` to the window shown and to the capture
open (offscreen), with the frozen/python ratio; then the app folder's size and its largest parts.

Run: `.venv/bin/python bench/bench_app.py [dist/qinspect/qinspect]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = 5


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds to exit, and to the SHOWN / OPENED probe lines (nan when not printed)."""
    start = time.time()
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300).stdout
    end = time.time()
    marks = {line.split()[0]: float(line.split()[1]) - start for line in out.splitlines()
             if line.startswith(("SHOWN ", "OPENED "))}
    return end - start, marks.get("SHOWN", float("nan")), marks.get("OPENED", float("nan"))


def _size(folder: Path) -> tuple[int, list[tuple[int, str]]]:
    files = [f for f in folder.rglob("*") if f.is_file() and not f.is_symlink()]
    parts: dict[str, int] = {}
    for f in files:
        rel = f.relative_to(folder / "_internal").parts if "_internal" in f.parts else (f"{f.name} (executable)",)
        parts[rel[0]] = parts.get(rel[0], 0) + f.stat().st_size
    return sum(parts.values()), sorted(((n, k) for k, n in parts.items()), reverse=True)[:8]


def main() -> int:
    """Measure and print."""
    app = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "dist" / "qinspect" / "qinspect")
    if not app.is_file():
        print(f"{app} not found: build it with `make app`")
        return 1
    sys.path.insert(0, str(REPO / "tests"))
    from gui_fixtures import write_gui_capture

    tmp = Path(tempfile.mkdtemp())
    capture = write_gui_capture(tmp / "capture.h5", n=64)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QINSPECT_STARTUP_PROBE": "1"}
    frozen_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    runs: dict[str, list[tuple[float, ...]]] = {"frozen": [], "python": []}
    commands = (("frozen", [str(app)], frozen_env), ("python", [sys.executable, "-m", "qinspect"], env))
    for _ in range(RUNS):
        for name, prefix, e in commands:
            version = _timed([*prefix, "--version"], e)[0]
            _, shown, opened = _timed([*prefix, str(capture), "--settings", str(tmp / f"{name}.ini")], e)
            runs[name].append((version, shown, opened))
    medians = {name: [statistics.median(r[i] for r in rows) for i in range(3)] for name, rows in runs.items()}
    print(f"{'':24}{'frozen':>10}{'python':>10}{'ratio':>8}")
    for i, what in enumerate(("--version (s)", "window shown (s)", "capture open (s)")):
        f, p = medians["frozen"][i], medians["python"][i]
        print(f"{what:24}{f:10.2f}{p:10.2f}{f / p:8.2f}")
    total, parts = _size(app.parent)
    print(f"\n{app.parent}: {total / 2**20:.0f} MiB; largest parts:")
    for n, name in parts:
        print(f"  {n / 2**20:7.1f} MiB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
