"""Helpers for the emulator graph tests: hand-built models (no TensorFlow) and the Vitis reference cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qinspect.io.graph import Layer, ModelGraph

REFCASES = Path(__file__).resolve().parents[2] / "shared" / "refcases" / "vitis"
if not REFCASES.is_dir():
    REFCASES = Path("/work/shared/refcases/vitis")
FER = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/fer/data/emotion_model.hdf5"


def refcase(name: str) -> Path:
    """Path of a reference case (skips when the cases are not on this machine)."""
    p = REFCASES / name
    if not (p / "positions.json").is_file():
        pytest.skip(f"Vitis reference case {name} not available at {p}")
    return p


def positions_json(case: Path) -> dict[str, Any]:
    """The case's positions.json."""
    return json.loads((case / "positions.json").read_text())


class DictSource:
    """A weight source for a hand-built :class:`ModelGraph`."""

    def __init__(self, graph: ModelGraph, weights: dict[str, dict[str, np.ndarray]]) -> None:
        self.graph = graph
        self._w = weights
        self.path = ""
        self.kind = "keras-h5"

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.float32) for k, v in self._w.get(layer, {}).items()}


def model(layers: list[tuple], outputs: list[str], weights: dict[str, dict[str, np.ndarray]] | None = None
          ) -> DictSource:
    """Build a model from ``(name, class, config, inbound, output_shape[, call_kwargs])`` tuples."""
    ls = []
    for t in layers:
        name, cls, cfg, inbound, shape = t[:5]
        kw = t[5] if len(t) > 5 else {}
        ls.append(Layer(name=name, class_name=cls, config={"name": name, **cfg}, inbound=list(inbound),
                        output_shape=shape, call_kwargs=kw))
    inputs = [x[0] for x in layers if x[1] == "InputLayer"]
    g = ModelGraph(name="m", layers=ls, inputs=inputs, outputs=outputs)
    return DictSource(g, weights or {})


def rng_weights(rng: np.random.Generator, shapes: dict[str, dict[str, tuple[int, ...]]],
                scale: float = 0.3) -> dict[str, dict[str, np.ndarray]]:
    """Random float32 weights; BN variances positive."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer, ws in shapes.items():
        out[layer] = {}
        for k, shp in ws.items():
            if k == "moving_variance":
                out[layer][k] = rng.uniform(0.5, 2.0, shp).astype(np.float32)
            elif k == "gamma":
                out[layer][k] = rng.uniform(0.5, 1.5, shp).astype(np.float32)
            else:
                out[layer][k] = (rng.normal(size=shp) * scale).astype(np.float32)
    return out
