"""How soon Ctrl-C stops a capture, measured side by side with how long one batch takes (issue 10, item 12).

A tf_keras conv net (random weights, 96x96x3, a few wide convolutions) whose batches take seconds. The
capture runs as ``qinspect capture`` in a child; once its temporary file appears, SIGINT is sent at a
random point of a batch and the time until the child has exited is measured. Before the fix a Python
signal handler waited for TensorFlow's C++ batch to return, so the delay was up to one batch; the
figure to read is ``stop delay / batch time`` (well under 1 means the batch no longer holds Ctrl-C).
Run: ``.venv/bin/python bench/bench_interrupt.py [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
BATCH = 16


def build(folder: Path) -> tuple[Path, Path, float]:
    import tf_keras as tfk

    inp = tfk.Input((96, 96, 3))
    x = inp
    for i in range(4):
        x = tfk.layers.Conv2D(96, 5, padding="same", activation="relu", name=f"c{i}")(x)
    model = tfk.Model(inp, tfk.layers.GlobalAveragePooling2D()(x))
    path, data = folder / "m.h5", folder / "x.npy"
    model.save(path)
    np.save(data, np.random.default_rng(0).normal(size=(BATCH * 40, 96, 96, 3)).astype(np.float32))
    started = time.perf_counter()
    model.predict(np.load(data)[: BATCH * 3], batch_size=BATCH, verbose=0)
    return path, data, (time.perf_counter() - started) / 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, data, batch_seconds = build(folder)
        delays = []
        for round_ in range(args.rounds):
            out = folder / f"c{round_}.h5"
            proc = subprocess.Popen([sys.executable, "-m", "qinspect", "capture", str(model), "--inputs", str(data),
                                     "-o", str(out), "--batch-size", str(BATCH), "-q"], cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})
            while proc.poll() is None and not any(p.suffix == ".tmp" for p in folder.iterdir()):
                time.sleep(0.02)
            time.sleep(random.uniform(0, 2 * batch_seconds))
            sent = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            proc.wait()
            delays.append(time.perf_counter() - sent)
            left = [p.name for p in folder.iterdir() if p.suffix == ".tmp"]
            print(f"round {round_}: exit {proc.returncode}, stopped {delays[-1]:.2f} s after SIGINT, "
                  f"temporary files left: {left or 'none'}")
        print(f"one batch of {BATCH}: {batch_seconds:.2f} s (model.predict, warm)")
        print(f"stop delay: median {np.median(delays):.2f} s, max {max(delays):.2f} s; "
              f"max delay / batch time = {max(delays) / batch_seconds:.2f}")


if __name__ == "__main__":
    main()
