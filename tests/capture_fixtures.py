"""Shared helpers for the capture tests: a tiny hand-made graph and a capture written from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from qinspect.io.capture_file import CaptureWriter
from qinspect.io.graph import Layer, ModelGraph

N_SAMPLES = 10


def tiny_graph() -> ModelGraph:
    """input -> outer/conv (nested, a ``/`` in its name) -> dense."""
    return ModelGraph(
        "tiny",
        [
            Layer("input", "InputLayer", output_shape=[None, 4, 4, 3]),
            Layer("outer", "Functional", is_container=True),
            Layer("outer/conv", "Conv2D", inbound=["input"], output_shape=[None, 4, 4, 2], parent="outer",
                  weight_shapes={"kernel": [1, 1, 3, 2], "bias": [2]}),
            Layer("dense", "Dense", inbound=["outer/conv"], output_shape=[None, 4, 4, 5],
                  weight_shapes={"kernel": [2, 5]}),
        ],
        ["input"],
        ["dense"],
    )


class TinyWeights:
    """Weights for :func:`tiny_graph` (bias deliberately first to check that order is kept)."""

    arrays = {
        "outer/conv": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 3, 2),
                       "bias": np.array([0.5, -0.5], np.float32)},
        "dense": {"kernel": np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)},
    }

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        return dict(self.arrays.get(layer, {}))


def tiny_data(seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs and activations for :func:`tiny_graph`."""
    rng = np.random.default_rng(seed)
    return {
        "input": rng.normal(size=(N_SAMPLES, 4, 4, 3)).astype(np.float32),
        "outer/conv": rng.normal(size=(N_SAMPLES, 4, 4, 2)).astype(np.float32),
        "dense": rng.normal(size=(N_SAMPLES, 4, 4, 5)).astype(np.float32),
    }


def write_tiny(path: Path, data: dict[str, np.ndarray] | None = None, *, batch: int = 4, **kwargs) -> Path:
    """Write a complete capture of :func:`tiny_graph` in batches of ``batch`` samples."""
    data = data if data is not None else tiny_data()
    kwargs.setdefault("attrs", {"preprocess": "0..1"})
    with CaptureWriter(
        path,
        tiny_graph(),
        N_SAMPLES,
        {"outer/conv": (4, 4, 2), "dense": (4, 4, 5)},
        {"input": (4, 4, 3)},
        input_links={"input": "input"},
        **kwargs,
    ) as writer:
        writer.write_weights(TinyWeights(), ["input", "outer/conv", "dense"])
        for start in range(0, N_SAMPLES, batch):
            stop = min(N_SAMPLES, start + batch)
            writer.write_batch(
                start,
                {"input": data["input"][start:stop]},
                {k: data[k][start:stop] for k in ("outer/conv", "dense")},
            )
    return path


def run_here(*args: str) -> subprocess.CompletedProcess:
    """``qinspect ARGS`` in this process (TensorFlow, once loaded, stays: seconds saved per call).

    The real command in a fresh process is exercised by the session capture, SIGINT and no-TF tests.
    """
    import contextlib
    import io

    from qinspect.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
