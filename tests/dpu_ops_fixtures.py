"""Shared helpers for the dpu fixed-point / operator tests: the Vitis reference cases on disk."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

REFCASES = Path(__file__).resolve().parents[2] / "shared" / "refcases" / "vitis"
if not REFCASES.is_dir():  # the tree may live elsewhere; /work/shared is the documented location
    REFCASES = Path("/work/shared/refcases/vitis")


def refcase(name: str) -> Path:
    """Path of a reference case, or skip the test when the refcases are not available."""
    p = REFCASES / name
    if not (p / "positions.json").is_file():
        pytest.skip(f"Vitis reference case {name} not available at {p}")
    return p


def positions(case: Path) -> dict:
    return json.loads((case / "positions.json").read_text())


def h5_weights(case: Path) -> dict[tuple[str, str], np.ndarray]:
    """{(wrapped layer group, short weight name): float32 array} of kernels / biases in quantized.h5."""
    out: dict[tuple[str, str], np.ndarray] = {}
    with h5py.File(case / "quantized.h5", "r") as f:
        mw = f["model_weights"]
        for group in mw:
            def visit(name: str, obj, group=group) -> None:
                if not isinstance(obj, h5py.Dataset):
                    return
                short = name.rsplit("/", 1)[-1]
                if short in ("kernel:0", "bias:0", "depthwise_kernel:0", "alpha:0"):
                    out[(group, short[:-2])] = np.asarray(obj[()], dtype=np.float32)
            mw[group].visititems(visit)
    return out


def dump_int8(case: Path, name: str) -> np.ndarray:
    return np.fromfile(case / "dump_results" / "dump_results_0" / f"{name}.bin", dtype=np.int8)


def dump_weight_int8(case: Path, layer: str, short: str) -> np.ndarray:
    return np.fromfile(case / "dump_results" / "dump_results_weights" / f"quant_{layer}_{short}.bin", dtype=np.int8)
