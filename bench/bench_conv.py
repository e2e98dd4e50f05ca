"""Exact int8 Conv2D emulation vs TensorFlow float32 Conv2D, side by side in one run.

Conv2D 3x3, 64 -> 64 channels, 'same', on a 32 x 56 x 56 x 64 batch. The emulator computes the exact
accumulator and the DPU output stage (bias shift, HALF_UP rounding, ReLU, clip) of int8 codes;
TensorFlow computes a float32 convolution of the same values. Prints, for both, the median wall time of
interleaved runs (so load from other processes hits both alike), the CPU time (all threads) and the
ratios (target <= 1.5, goal parity).

numpy's only fast kernel is OpenBLAS's float32 GEMM. This machine's environment pins OpenBLAS with
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (older OpenBLAS builds misbehave on some CPUs; the pin selects
older, slower kernels for a current numpy). The bench prints the figure with the environment as set,
then re-runs the same measurement in a child process with both variables removed (for that command
alone; tests and CI keep them) and prints which OpenBLAS kernel each run used (threadpoolctl).

Run: .venv/bin/python bench/bench_conv.py [--repeats N] [--batch N] [--variants] [--no-unpinned]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def _interleaved(fns: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU (process, all threads) times of each function, ``repeats`` runs, alternating the
    functions. One warm-up call each first."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return wall, cpu


BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_kernel() -> str:
    """The BLAS numpy uses and the kernel it runs, e.g. ``openblas 0.3.31 SkylakeX, 2 threads``."""
    import numpy  # noqa: F401  (load the BLAS first)

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not infos:
        return "unknown (no BLAS found by threadpoolctl)"
    # numpy's own BLAS (other libraries, e.g. scipy's, may load another copy)
    i = next((i for i in infos if "numpy" in str(i.get("filepath", ""))), infos[0])
    return f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}, {i.get('num_threads')} threads"


def env_label() -> str:
    """How the BLAS pins are set in this process."""
    pins = ", ".join(f"{k}={os.environ[k]}" for k in BLAS_PINS if k in os.environ)
    return f"env as set ({pins})" if pins else "BLAS pins unset"


def rerun_unpinned(script: str, args: list[str]) -> None:
    """Run ``script --child args`` once more with the BLAS pins removed from its environment only."""
    if not any(k in os.environ for k in BLAS_PINS):
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_PINS}
    print(f"  (same measurement in a child process with {' and '.join(BLAS_PINS)} unset:)")
    sys.stdout.flush()
    subprocess.run([sys.executable, script, "--child", *args], env=env, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", action="store_true", help="also time other threading set-ups")
    ap.add_argument("--no-unpinned", action="store_true", help="skip the child run with the BLAS pins unset")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from qinspect.dpu import _conv_core, ops

    rng = np.random.default_rng(0)
    xq = rng.integers(-128, 128, size=(args.batch, 56, 56, 64), dtype=np.int8)
    wq = rng.integers(-128, 128, size=(3, 3, 64, 64), dtype=np.int8)
    bq = rng.integers(-128, 128, size=(64,), dtype=np.int8)

    def emulate() -> np.ndarray:
        return ops.conv2d(xq, wq, bq, 6, 8, 10, 4, (1, 1), "same", act="relu")

    import tensorflow as tf

    xf = tf.constant(xq.astype(np.float32))
    wf = tf.constant(wq.astype(np.float32))

    def tf_conv() -> np.ndarray:
        return tf.nn.conv2d(xf, wf, 1, "SAME").numpy()

    def variant(workers: int, blas_1: bool):
        def run() -> np.ndarray:
            _conv_core.set_threads(workers)
            _conv_core._blas_per_call_1 = blas_1
            try:
                return emulate()
            finally:
                _conv_core.set_threads(2)
                _conv_core._blas_per_call_1 = True

        return run

    fns = {"emu": emulate, "tf": tf_conv}
    if args.variants:
        fns["1 worker, BLAS threads"] = variant(1, False)
        fns["2 workers, BLAS threads too"] = variant(2, False)
    wall, cpu = _interleaved(fns, args.repeats)
    t_emu, t_tf = statistics.median(wall["emu"]), statistics.median(wall["tf"])
    c_emu, c_tf = statistics.median(cpu["emu"]), statistics.median(cpu["tf"])

    label = f"{env_label()}; BLAS: {blas_kernel()}"
    if not args.child:
        print(f"Conv2D 3x3 64->64 'same' on {args.batch}x56x56x64, {args.repeats} interleaved runs, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"[{label}]")
    print(f"  qinspect exact int8 (acc + DPU output stage): {t_emu * 1000:8.1f} ms wall, {c_emu * 1000:8.1f} ms CPU")
    print(f"  TensorFlow float32 tf.nn.conv2d:              {t_tf * 1000:8.1f} ms wall, {c_tf * 1000:8.1f} ms CPU")
    print(f"  ratio emulator / TensorFlow, wall (medians):  {t_emu / t_tf:8.2f}  (target <= 1.5)")
    print(f"  ratio emulator / TensorFlow, CPU time:        {c_emu / c_tf:8.2f}  (independent of other load)")
    print(f"  best wall times: emulator {min(wall['emu']) * 1000:.1f} ms, TensorFlow {min(wall['tf']) * 1000:.1f} ms"
          f" (ratio {min(wall['emu']) / min(wall['tf']):.2f})")
    if args.variants:
        for name in ("1 worker, BLAS threads", "2 workers, BLAS threads too"):
            tv = statistics.median(wall[name])
            print(f"  variant {name:28s}: {tv * 1000:8.1f} ms ({tv / t_tf:.2f}x TF)")
    if not args.child:
        acc = ops.conv2d_acc(xq[:2], wq, (1, 1), "same")
        same = np.array_equal(acc, tf.nn.conv2d(xf[:2], wf, 1, "SAME").numpy().astype(np.int64))
        print(f"  accumulator equals TF float32 result on 2 images (K = 576 <= 1024, so TF is exact too): {same}")
    if not args.child and not args.no_unpinned:
        rerun_unpinned(__file__, ["--repeats", str(args.repeats), "--batch", str(args.batch)])

if __name__ == "__main__":
    main()
