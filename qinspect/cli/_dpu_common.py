"""Helpers shared by the emulator's sub-commands (calibrate, emulate, compare-dump)."""

from __future__ import annotations

import argparse
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


# ------------------------------------------------------------------ arguments shared by the commands

POSITIONS_HELP = "take positions (and, from a quantized.h5, the folded weights) from here"


def add_positions_arg(parser: argparse.ArgumentParser, help: str = POSITIONS_HELP, dest: str | None = None) -> None:
    """``--positions QUANTIZED.h5|POSITIONS.json``."""
    kwargs = {"dest": dest} if dest else {}
    parser.add_argument("--positions", metavar="QUANTIZED.h5|POSITIONS.json", help=help, **kwargs)


def add_data_args(parser: argparse.ArgumentParser, inputs_help: str | None, batch_help: str,
                  samples_help: str = "use only the first N samples", samples_default: int | None = None,
                  inputs_metavar: str = "X") -> None:
    """``--inputs`` (when ``inputs_help`` is given), ``--batch-size``, ``--no-cle`` and ``--samples``: the
    calibration and emulation data options of calibrate, emulate, diagnose and report."""
    if inputs_help is not None:
        parser.add_argument("--inputs", metavar=inputs_metavar, help=inputs_help)
    parser.add_argument("--batch-size", type=int, default=32, metavar="B", help=batch_help)
    parser.add_argument("--no-cle", action="store_true", help="calibrate without cross-layer equalization")
    parser.add_argument("--samples", type=int, default=samples_default, metavar="N", help=samples_help)


def check_counts(args: argparse.Namespace, *flags: str) -> None:
    """One-line error for a count option below 1 (``--batch-size``, ``--samples``, ...); None is allowed."""
    for flag in ("--batch-size", "--samples", *flags):
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None and value < 1:
            raise QInspectError(f"{flag} must be at least 1 (got {value})")


# ------------------------------------------------------------------ sources, positions, data

def open_positions_emulator(source: Any, args: argparse.Namespace) -> tuple[Any, str]:
    """The emulator for ``source`` and where its positions come from (``""``: still to calibrate).

    A quantized.h5 given as ``args.positions`` brings its positions and its folded weights; a positions
    JSON is loaded into the graph rewritten from ``source`` (``--batch-size``, ``--no-cle``) and must
    cover every quantizer of it.
    """
    from qinspect.dpu.emulator import Emulator

    positions = getattr(args, "positions", None)

    if positions:
        require_file(positions)
        if os.path.isdir(positions):
            raise QInspectError("is a folder; --positions needs a quantized.h5 or a positions JSON file", positions)
        if is_vitis_quantized(positions):
            return Emulator.from_quantized(positions), f"{positions} (quantized model: positions and folded weights)"
    emu = Emulator.from_model(source, None, args.batch_size, cle=not args.no_cle)
    if not positions:
        return emu, ""
    load_positions_file(emu, positions)
    return emu, f"{positions} (positions file)"


def load_positions_file(emu: Any, positions: str) -> None:
    """Load a positions JSON into ``emu``; one-line error when it is not one, or misses quantizers."""
    from qinspect.io.capture_file import is_capture

    if is_capture(positions):
        raise QInspectError("is a qinspect capture, not positions: --positions needs a Vitis quantized.h5 or a "
                            "positions JSON (calibrate --json, or a Vitis run's positions.json)", positions)
    with open(positions, "rb") as fh:
        if fh.read(8).startswith(b"\x89HDF"):
            raise QInspectError("is an HDF5 file but not a Vitis quantized model: --positions needs a quantized.h5 "
                                "or a positions JSON", positions)
    missing = emu.load_positions(positions)
    if missing:
        raise QInspectError(f"gives no position for {len(missing)} tensor(s) of the model, first "
                            f"{missing[0]}", positions)


def data_source(inputs: str | None, emu: Any, source: Any, model_path: str, samples: int | None = None,
                need: str = "needs --inputs (a .npy / .npz of preprocessed samples) or a capture") -> Any:
    """The samples to calibrate or emulate on: ``--inputs`` when given, else a capture's own inputs."""
    from qinspect.cli._sources import is_capture_source

    if inputs:
        require_file(inputs)
        return open_data(inputs, emu.graph, samples)
    if source is not None and is_capture_source(source):
        return source
    raise QInspectError(need, model_path)
