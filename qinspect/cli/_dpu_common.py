"""Helpers shared by the emulator's sub-commands (calibrate, emulate, compare-dump)."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from typing import Any

from qinspect.errors import QInspectError


def input_shapes(graph: Any) -> dict[str, list[int | None]]:
    """``{input name: shape without the batch axis}`` of an emulator graph."""
    out = {}
    for name in graph.inputs:
        shape = graph[name].output_shape
        out[name] = list(shape[1:]) if shape else None
    return out


def open_data(path: str, graph: Any, samples: int | None = None) -> Any:
    """An input source for ``--inputs`` (.npy / .npz / image folder is not preprocessed here)."""
    from qinspect.io.inputs import open_inputs

    return open_inputs(path, input_shapes(graph), samples=samples)


def json_safe(obj: Any) -> Any:
    """Non-finite floats as strings so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype"):
        return json_safe(obj.item())
    return obj


def print_json(obj: Any) -> None:
    """Strict JSON on stdout."""
    json.dump(json_safe(obj), sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON beside the destination, then rename: nothing half-written."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".qinspect-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(json_safe(obj), fh, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_vitis_quantized(path: str) -> bool:
    """True for an HDF5 file holding a Vitis quantized model."""
    try:
        with open(path, "rb") as fh:
            if not fh.read(8).startswith(b"\x89HDF"):
                return False
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                return False
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return "Vitis>QuantizeWrapper" in text or "Vitis>VitisQuantize" in text
    except OSError:
        return False


def require_file(path: str) -> None:
    """One-line error for a missing path."""
    if not os.path.exists(path):
        raise QInspectError("no such file or folder", path)
