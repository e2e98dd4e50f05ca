"""Emulator benchmarks (issue 3, performance bullets 2 and 3), measured side by side in one run.

1. Whole-model accumulated int8 propagation of a MobileNetV2-sized model (tf_keras MobileNetV2,
   224x224x3, random weights) over 32 samples, against TensorFlow's float inference of the same
   samples. Target: at most 3x.
2. Streaming: a generated capture larger than the memory the run is given is propagated batch by batch;
   the child process's peak resident memory is printed beside the capture's size.

The MobileNetV2 figure is printed with this machine's environment as set and again from a child
process with the OpenBLAS pins (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) removed for that command alone,
each with the OpenBLAS kernel it ran (see bench_conv.py).

Run: ``.venv/bin/python bench/bench_model.py [--samples 32] [--capture-gb 1.5] [--no-unpinned]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_conv import blas_kernel, env_label, rerun_unpinned  # noqa: E402


def _best(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_mobilenet(n: int, tmp: str) -> None:
    import tf_keras as k

    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.executor import Evaluator, batch_inputs

    m = k.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    path = os.path.join(tmp, "mobilenetv2.h5")
    m.save(path)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, 224, 224, 3)).astype(np.float32)
    t = time.perf_counter()
    emu = Emulator.from_model(path, x[:8], batch_size=8)
    t_cal = time.perf_counter() - t
    m.predict(x[:4], verbose=0)  # warm-up (graph tracing)
    ev = Evaluator(emu.graph, "int")
    bs = 16

    def emulate() -> None:
        for i in range(0, n, bs):
            ev.run(batch_inputs(emu.graph, x[i:i + bs]), keep=())

    emulate()  # warm-up (weight codes and bounds cached per node)
    # interleaved, best of 5 each: load from other processes hits both alike; CPU time (all threads)
    # beside the wall time
    t_tf = t_int = c_tf = c_int = float("inf")
    for _ in range(5):
        c0 = time.process_time()
        t_tf = min(t_tf, _best(lambda: m.predict(x, batch_size=n, verbose=0), repeat=1))
        c1 = time.process_time()
        t_int = min(t_int, _best(emulate, repeat=1))
        c_tf, c_int = min(c_tf, c1 - c0), min(c_int, time.process_time() - c1)
    from qinspect.analysis.metrics import ErrorStats

    t_full = _best(lambda: emu.run(x, batch_size=bs, stats_factory=ErrorStats), repeat=1)
    nodes = len(emu.graph.nodes)
    print(f"MobileNetV2 224x224x3, {n} samples, {nodes} emulator nodes, {len(m.layers)} Keras layers")
    print(f"  [{env_label()}; BLAS: {blas_kernel()}; load average {os.getloadavg()[0]:.1f}]")
    print(f"  rewrites + calibration on 8 samples: {t_cal:.2f} s")
    print(f"  TensorFlow float predict:            {t_tf:.2f} s")
    print(f"  emulator accumulated int8 pipeline:  {t_int:.2f} s   ratio {t_int / t_tf:.2f}x (target <= 3x)")
    print(f"  CPU time (all threads): TensorFlow {c_tf:.2f} s, emulator {c_int:.2f} s, ratio {c_int / c_tf:.2f}x")
    print(f"  emulator run() float + accumulated + isolated + stats: {t_full:.2f} s   ratio {t_full / t_tf:.2f}x")


_CHILD = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[3])
import numpy as np
from qinspect.analysis.metrics import ErrorStats
from qinspect.dpu.emulator import Emulator
from qinspect.io.capture_file import Capture
cap = Capture.open(sys.argv[1])
bs = int(sys.argv[2])
emu = Emulator.from_model(cap, cap.inputs(None, slice(0, 64)), batch_size=bs)
t = time.perf_counter()
res = emu.run(cap, batch_size=bs, stats_factory=ErrorStats)
dt = time.perf_counter() - t
out = res[emu.graph.outputs[0]]
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(f"{cap.n_samples} {dt:.2f} {hwm} {out.accumulated.n}")
"""


def bench_streaming(gb: float, tmp: str) -> None:
    import tf_keras as k

    from qinspect.io.capture_file import CaptureWriter
    from qinspect.io.model_file import open_model

    L = k.layers
    i = L.Input((128, 128, 3), name="img")
    a = L.Conv2D(8, 3, strides=4, padding="same", activation="relu", name="c1")(i)
    a = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="c2")(a)
    a = L.GlobalAveragePooling2D(name="gap")(a)
    model = k.Model(i, L.Dense(10, name="fc")(a))
    path = os.path.join(tmp, "small.h5")
    model.save(path)
    per = 128 * 128 * 3 * 4
    n = int(gb * 2**30 / per)
    cap_path = os.path.join(tmp, "big_capture.h5")
    src = open_model(path)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    with CaptureWriter(cap_path, src.graph, n, {}, {"img": (128, 128, 3)}) as w:
        w.write_weights(src, [layer.name for layer in src.graph.leaves()])
        for s in range(0, n, 256):
            m = min(256, n - s)
            w.write_batch(s, {"img": rng.uniform(-1, 1, (m, 128, 128, 3)).astype(np.float32)}, {})
    size = os.path.getsize(cap_path)
    print(f"generated capture: {n} samples, {size / 2**30:.2f} GiB in {time.perf_counter() - t:.1f} s")
    r = subprocess.run([sys.executable, "-c", _CHILD, cap_path, "64", REPO], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr[-3000:])
        raise SystemExit(1)
    samples, dt, rss_kb, n_out = r.stdout.split()[-4:]
    rss = int(rss_kb) * 1024
    print(f"  propagated {samples} samples in {float(dt):.1f} s (batch 64), output elements compared {n_out}")
    print(f"  peak RSS of the propagating process: {rss / 2**20:.0f} MiB = {rss / size:.2f} x the capture size "
          f"(bounded: it streams by batch)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--capture-gb", type=float, default=1.5)
    ap.add_argument("--no-unpinned", action="store_true", help="skip the child run with the BLAS pins unset")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_mobilenet(args.samples, tmp)
        if args.child:
            return
        if not args.no_unpinned:
            rerun_unpinned(__file__, ["--samples", str(args.samples)])
        bench_streaming(args.capture_gb, tmp)
    print(f"bench process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
