"""Exact int8 Conv2D emulation vs TensorFlow float32 Conv2D, side by side in one run.

Conv2D 3x3, 64 -> 64 channels, 'same', on a 32 x 56 x 56 x 64 batch. The emulator computes the exact
int64 accumulator and the DPU output stage (bias shift, HALF_UP rounding, ReLU, clip) of int8 codes;
TensorFlow computes a float32 convolution of the same values. Prints the median of several runs of each
and the ratio (target <= 1.5, goal parity).

Run: .venv/bin/python bench/bench_conv.py [--repeats N] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def _interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, alternating them so that load from other processes on a
    shared machine hits all of them alike. One warm-up call each first."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", action="store_true", help="also time other threading set-ups")
    args = ap.parse_args()

    from qinspect.dpu import ops

    rng = np.random.default_rng(0)
    xq = rng.integers(-128, 128, size=(args.batch, 56, 56, 64), dtype=np.int8)
    wq = rng.integers(-128, 128, size=(3, 3, 64, 64), dtype=np.int8)
    bq = rng.integers(-128, 128, size=(64,), dtype=np.int8)

    def emulate() -> np.ndarray:
        return ops.conv2d(xq, wq, bq, 6, 8, 10, 4, (1, 1), "same", act="relu")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    xf = tf.constant(xq.astype(np.float32))
    wf = tf.constant(wq.astype(np.float32))

    def tf_conv() -> np.ndarray:
        return tf.nn.conv2d(xf, wf, 1, "SAME").numpy()

    from qinspect.dpu import _conv_core

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
    times = _interleaved(fns, args.repeats)
    t_emu = statistics.median(times["emu"])
    t_tf = statistics.median(times["tf"])
    pair_ratio = statistics.median(e / t for e, t in zip(times["emu"], times["tf"], strict=True))

    # sanity: the float32 result of TF equals the exact accumulator here (K = 576 <= 1024)
    acc = ops.conv2d_acc(xq[:2], wq, (1, 1), "same")
    same = np.array_equal(acc, tf.nn.conv2d(xf[:2], wf, 1, "SAME").numpy().astype(np.int64))

    print(f"Conv2D 3x3 64->64 'same' on {args.batch}x56x56x64, median of {args.repeats} interleaved runs")
    print(f"  qinspect exact int8 (acc + DPU output stage): {t_emu * 1000:8.1f} ms"
          f"  (2 workers, 1 BLAS thread per GEMM)")
    print(f"  TensorFlow float32 tf.nn.conv2d:              {t_tf * 1000:8.1f} ms")
    print(f"  ratio emulator / TensorFlow (medians):        {t_emu / t_tf:8.2f}  (target <= 1.5)")
    print(f"  median of per-pair ratios (interleaved):      {pair_ratio:8.2f}")
    print(f"  best times: emulator {min(times['emu']) * 1000:.1f} ms, TensorFlow {min(times['tf']) * 1000:.1f} ms")
    if args.variants:
        for name in ("1 worker, BLAS threads", "2 workers, BLAS threads too"):
            tv = statistics.median(times[name])
            print(f"  variant {name:28s}: {tv * 1000:8.1f} ms ({tv / t_tf:.2f}x TF)")
    print(f"  accumulator equals TF float32 result on 2 images: {same}")


if __name__ == "__main__":
    main()
