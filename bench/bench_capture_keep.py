"""Capture at calibration-set sizes (issue 12): time, file size and peak memory against the sample count.

For tf_keras MobileNetV2 (random weights, 224x224x3, random inputs) and each sample count, side by side,
each in a fresh process (TensorFlow imported before the clock starts):
  tf        : load the model file + ``model.predict`` of the samples (batch 32)
  capture   : ``qinspect capture`` with the default budget (2 GiB): load + full tensors of the kept
              samples + every input + per-node statistics of every sample
and the ratio capture / tf (issue 12's target: <= 1.2 at 256 samples), the file size against the budget
(target: within +5%) and each process's peak resident memory. ``write s`` is a floor no capture can beat:
the time to write the capture's byte count to a plain file in the same folder (no TensorFlow, no
statistics), measured right after; ``floor`` is (tf + write) / tf.

``--stats`` instead times 32 samples' statistics: numpy on the activations copied out of TensorFlow,
and inside the TensorFlow graph in pieces of 32, 8 and 2 samples.

Run: ``.venv/bin/python bench/bench_capture_keep.py [--samples 64 256 1024] [--rounds 1] [--dir /tmp]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

_CHILD = textwrap.dedent("""
    import json, os, resource, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.path.insert(0, {root!r})
    import numpy as np, tensorflow as tf, tf_keras
    mode, model_path, inputs, out = sys.argv[1:5]
    started = time.perf_counter()
    if mode == "tf":
        model = tf_keras.models.load_model(model_path, compile=False)
        model.predict(np.load(inputs, mmap_mode="r"), batch_size=32, verbose=0)
        size = 0
    else:
        from qinspect.capture.runner import plan_capture, run_capture
        plan = plan_capture(model_path, inputs)
        result = run_capture(plan, out, overwrite=True)
        size = os.path.getsize(out)
        kept = result.kept
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"seconds": seconds, "size": size, "peak": peak,
                       "kept": kept if mode != "tf" else 0}}))
""")


def _child(mode: str, model: Path, inputs: Path, out: Path) -> dict:
    code = _CHILD.format(root=str(ROOT))
    done = subprocess.run([PYTHON, "-c", code, mode, str(model), str(inputs), str(out)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _make_model(folder: Path) -> Path:
    import tf_keras

    path = folder / "mobilenetv2.h5"
    tf_keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None).save(path)
    return path


def _write_seconds(path: Path, size: int) -> float:
    """Seconds to write ``size`` bytes to ``path`` in 32 MiB blocks (then removed)."""
    import time

    block = np.random.default_rng(1).bytes(32 << 20)
    started = time.perf_counter()
    with open(path, "wb") as f:
        for offset in range(0, size, len(block)):
            f.write(block[: min(len(block), size - offset)])
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds


def sweep(samples: list[int], rounds: int, folder: Path) -> None:
    """Print time, size and memory of tf vs capture for each sample count."""
    model = _make_model(folder)
    rng = np.random.default_rng(0)
    print(f"{'N':>5} {'K':>4} {'tf s':>7} {'capture s':>9} {'ratio':>6} {'write s':>7} {'floor':>6} {'file':>9} "
          f"{'vs 2GiB':>7} {'tf peak':>8} {'cap peak':>8}")
    for n in samples:
        inputs = folder / f"x{n}.npy"
        np.save(inputs, rng.uniform(-1, 1, (n, 224, 224, 3)).astype(np.float32))
        out = folder / f"cap{n}.h5"
        for _ in range(rounds):  # alternating, so both see the same machine load
            tf_run = _child("tf", model, inputs, out)
            cap = _child("capture", model, inputs, out)
            write = _write_seconds(folder / "floor.bin", cap["size"])
            floor = (tf_run["seconds"] + write) / tf_run["seconds"]
            print(f"{n:>5} {cap['kept']:>4} {tf_run['seconds']:7.1f} {cap['seconds']:9.1f} "
                  f"{cap['seconds'] / tf_run['seconds']:6.2f} {write:7.1f} {floor:6.2f} "
                  f"{cap['size'] / 2**30:7.2f}Gi "
                  f"{cap['size'] / 2**31:7.3f} {tf_run['peak'] / 2**30:6.2f}Gi {cap['peak'] / 2**30:6.2f}Gi",
                  flush=True)
        out.unlink(missing_ok=True)
        inputs.unlink()


def stats_ways() -> None:
    """32 MobileNetV2 samples: predict alone, every activation copied out with numpy's statistics, and the
    statistics inside the graph in pieces of 32, 8 and 2 samples (nothing copied out)."""
    import time

    import tensorflow as tf
    import tf_keras

    from qinspect.capture.runner import _compiled_run
    from qinspect.io.capture_stats import StatsAccumulator

    model = tf_keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    extractor = tf_keras.Model(model.inputs, [layer.output for layer in model.layers[1:]])
    x = np.random.default_rng(0).uniform(-1, 1, (32, 224, 224, 3)).astype(np.float32)
    predict = tf.function(lambda a: model(a, training=False))
    outputs = _compiled_run(extractor, [(224, 224, 3)], tensors=True)
    in_graph = _compiled_run(extractor, [(224, 224, 3)], tensors=False, wide_counts=False)
    predict(x), in_graph(x), outputs(x)  # traced and warm (memory already mapped) before any clock

    def timed(label: str, fn) -> None:
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        print(f"{label:64} {best:6.2f} s (best of 2)", flush=True)

    def numpy_stats() -> None:
        for k, (out, _) in enumerate(outputs(x)):
            StatsAccumulator(str(k), 32).add(out)

    def pieces(size: int) -> None:
        for start in range(0, 32, size):
            in_graph(x[start:start + size])

    timed("predict (model output only)", lambda: predict(x).numpy())
    timed("every activation copied out (no statistics)", lambda: outputs(x))
    timed("copied out + numpy statistics", numpy_stats)
    for size in (32, 8, 2):
        timed(f"statistics inside the graph, pieces of {size} (nothing copied out)", lambda s=size: pieces(s))


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--stats", action="store_true", help="compare the ways to compute the statistics")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    if args.stats:
        stats_ways()
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        sweep(args.samples, args.rounds, Path(folder))


if __name__ == "__main__":
    main()
