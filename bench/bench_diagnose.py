"""Benchmark ``qinspect diagnose``: the demo capture end to end, and how the time grows with samples and
layers. Run: ``.venv/bin/python bench/bench_diagnose.py [--quick]``.

Figures (wall and CPU seconds, measured in this run):
1. the demo capture as ``qinspect diagnose resources/demo/demo_capture.h5`` runs it (open, calibrate,
   diagnose with sensitivity): target under 30 s;
2. the demo with 4, 8, 16, 32 sensitivity samples: ratio to the 4-sample time (expect ~linear);
3. synthetic conv chains of 4, 8, 16, 32 layers, 16 samples: ratio to the 4-layer time. Sensitivity
   re-walks every layer's descendants twice, so a chain costs ~L^2 node evaluations: expect the ratio
   to grow between linearly and quadratically (fixed costs dominate short chains).
4. stock keras.applications models (weights=None, small inputs, 16 samples): diagnose with and without
   the sensitivity pass (--no-sensitivity), and the growth with model size (nodes, time ratio to the
   smallest model), side by side;
5. the sensitivity pass against the naive way (every layer's two what-ifs re-run over the whole graph)
   on a 16-layer chain: the speed-up of reusing the unchanged prefix and stopping unchanged branches.
CPU time is printed beside wall time because the machine may be shared: CPU time is what the code costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qinspect.analysis.diagnose import diagnose  # noqa: E402
from qinspect.analysis.sensitivity import sensitivity  # noqa: E402
from qinspect.dpu.emulator import Emulator  # noqa: E402
from qinspect.io.capture_file import Capture  # noqa: E402
from qinspect.io.graph import Layer, ModelGraph  # noqa: E402

DEMO = REPO / "resources" / "demo" / "demo_capture.h5"


def timed(fn, repeat: int = 1):
    """(result, wall s, CPU s), the best of ``repeat`` runs (the machine may be shared)."""
    best = None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        best = (out, w, c) if best is None or w < best[1] else best
    return best


class _ChainSource:
    """A synthetic float model: input -> L x Conv2D(3x3, ReLU) -> GAP -> Dense, random weights."""

    def __init__(self, n_layers: int, hw: int = 24, ch: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        layers = [Layer("input", "InputLayer", {"batch_input_shape": [None, hw, hw, ch]},
                        output_shape=[None, hw, hw, ch])]
        self._w: dict[str, dict[str, np.ndarray]] = {}
        prev = "input"
        for i in range(n_layers):
            name = f"conv{i}"
            cfg = {"filters": ch, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                   "dilation_rate": [1, 1], "activation": "relu", "use_bias": True}
            layers.append(Layer(name, "Conv2D", cfg, [prev], output_shape=[None, hw, hw, ch],
                                weight_shapes={"kernel": [3, 3, ch, ch], "bias": [ch]}))
            self._w[name] = {"kernel": rng.normal(scale=np.sqrt(2 / (9 * ch)), size=(3, 3, ch, ch)).astype(np.float32),
                             "bias": rng.normal(scale=0.05, size=ch).astype(np.float32)}
            prev = name
        layers.append(Layer("gap", "GlobalAveragePooling2D", {}, [prev], output_shape=[None, ch]))
        layers.append(Layer("out", "Dense", {"units": 10, "activation": "linear", "use_bias": True}, ["gap"],
                            output_shape=[None, 10], weight_shapes={"kernel": [ch, 10], "bias": [10]}))
        self._w["out"] = {"kernel": rng.normal(size=(ch, 10)).astype(np.float32) / 4,
                          "bias": np.zeros(10, np.float32)}
        self.graph = ModelGraph(f"chain{n_layers}", layers, ["input"], ["out"])
        self.path = ""

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        return dict(self._w.get(layer, {}))


def demo_end_to_end(sens_samples: int = 16) -> tuple[float, float, int, int]:
    def go():
        cap = Capture.open(DEMO)
        try:
            emu = Emulator.from_model(cap, calib_inputs=cap, batch_size=32)
            x = {emu.graph.inputs[0]: cap.inputs(None, slice(0, 64))}
            d = diagnose(emu.graph, x, sens_samples=sens_samples)
            return len(emu.graph.nodes), len(d.findings)
        finally:
            cap.close()

    (nodes, nf), wall, cpu = timed(go)
    return wall, cpu, nodes, nf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points")
    args = ap.parse_args()
    if DEMO.exists():
        wall, cpu, nodes, nf = demo_end_to_end()
        print(f"1. demo capture end to end ({nodes} emulator nodes, 64 samples, sensitivity on 16): "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU; {nf} finding(s); target < 30 s: "
              f"{'OK' if wall < 30 else 'OVER'}")
        cap = Capture.open(DEMO)
        emu = Emulator.from_model(cap, calib_inputs=cap, batch_size=32)
        x = {emu.graph.inputs[0]: cap.inputs(None, slice(0, 64))}
        cap.close()
        print("2. demo vs sensitivity samples (calibration excluded; best of 2 runs): the sensitivity pass "
              "alone, and the whole diagnosis (findings on 64 samples: a fixed part)")
        diagnose(emu.graph, {k: v[:2] for k, v in x.items()}, sens_samples=2)  # warm-up (imports, caches)
        base = base_d = None
        for s in ((4, 16) if args.quick else (4, 8, 16, 32)):
            xs = {k: v[:s] for k, v in x.items()}
            _, wall, cpu = timed(lambda xs=xs, s=s: sensitivity(emu.graph, xs, batch_size=s), repeat=2)
            _, dwall, dcpu = timed(lambda s=s: diagnose(emu.graph, x, sens_samples=s), repeat=2)
            base, base_d = base or wall, base_d or dwall
            print(f"   {s:3d} samples: sensitivity {wall:5.1f} s wall ({cpu:5.1f} s CPU), ratio to 4 samples "
                  f"{wall / base:5.2f}; diagnose {dwall:5.1f} s wall, ratio {dwall / base_d:5.2f}")
    else:
        print(f"1./2. skipped: {DEMO} not built (python resources/make_demo.py)")
    print("3. synthetic conv chains (24x24x16), 16 samples, whole diagnosis (best of 2 runs):")
    base = None
    warm = _ChainSource(2)
    xw = np.zeros((2, 24, 24, 16), np.float32)
    diagnose(Emulator.from_model(warm, calib_inputs=xw, batch_size=2).graph, {"input": xw}, sens_samples=2)
    for n_layers in ((4, 16) if args.quick else (4, 8, 16, 32)):
        src = _ChainSource(n_layers)
        x = np.random.default_rng(1).uniform(0, 1, size=(16, 24, 24, 16)).astype(np.float32)
        emu = Emulator.from_model(src, calib_inputs=x, batch_size=16)
        _, wall, cpu = timed(lambda emu=emu, x=x: diagnose(emu.graph, {"input": x}, sens_samples=16), repeat=2)
        base = base or wall
        print(f"   {n_layers:3d} layers ({len(emu.graph.nodes):3d} nodes): {wall:6.1f} s wall, {cpu:6.1f} s CPU, "
              f"ratio to 4 layers {wall / base:5.2f} (L/4 = {n_layers / 4:g}, (L/4)^2 = {(n_layers / 4) ** 2:g})")
    naive_vs_fast()
    stock_models(args.quick)


def stock_models(quick: bool) -> None:
    """Section 4: keras.applications models of growing size, diagnose with and without sensitivity."""
    import os
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras as k

    specs = [("MobileNetV2 a=0.35", lambda: k.applications.MobileNetV2(
                 weights=None, input_shape=(64, 64, 3), alpha=0.35, classes=10, classifier_activation=None)),
             ("ResNet50", lambda: k.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10,
                                                          classifier_activation=None))]
    if not quick:
        specs.insert(1, ("MobileNetV2 a=1.0", lambda: k.applications.MobileNetV2(
            weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None)))
    print("4. stock models, 64x64, 16 samples: diagnose with / without sensitivity (one run each)")
    x = np.random.default_rng(0).uniform(-1, 1, (16, 64, 64, 3)).astype(np.float32)
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in specs:
            path = os.path.join(tmp, "m.h5")
            make().save(path)
            emu = Emulator.from_model(path, x, batch_size=16)
            data = {emu.graph.inputs[0]: x}
            _, wall, cpu = timed(lambda emu=emu, data=data: diagnose(emu.graph, data))
            _, nwall, ncpu = timed(lambda emu=emu, data=data: diagnose(emu.graph, data, with_sensitivity=False))
            base = base or cpu
            print(f"   {name:20s} {len(emu.graph.nodes):4d} nodes: diagnose {wall:6.1f} s wall ({cpu:6.1f} s CPU, "
                  f"ratio to the first {cpu / base:5.2f}); --no-sensitivity {nwall:5.1f} s wall ({ncpu:5.1f} s CPU), "
                  f"sensitivity share {1 - ncpu / cpu:4.0%}")


def naive_vs_fast() -> None:
    """Section 5: the sensitivity pass against full re-runs of the whole graph for every layer."""
    from qinspect.analysis.sensitivity import quantizing_nodes, what_if

    src = _ChainSource(16)
    x = np.random.default_rng(1).uniform(0, 1, size=(16, 24, 24, 16)).astype(np.float32)
    emu = Emulator.from_model(src, calib_inputs=x, batch_size=16)
    data = {"input": x}
    _, fwall, fcpu = timed(lambda: sensitivity(emu.graph, data, batch_size=16))

    def naive() -> None:  # keep-float runs only: half of what the pass measures
        for node in quantizing_nodes(emu.graph):
            what_if(emu.graph, data, float_nodes=[node.name], batch_size=16)

    _, nwall, ncpu = timed(naive)
    print(f"5. 16-layer chain, 16 samples: sensitivity pass (keep-float and only-quantized runs of every layer) "
          f"{fwall:.1f} s wall ({fcpu:.1f} s CPU); naive full re-runs of the keep-float half alone {nwall:.1f} s "
          f"wall ({ncpu:.1f} s CPU): the pass does twice the work in {fcpu / ncpu:.2f}x the CPU time")


if __name__ == "__main__":
    main()
