"""Checks the emulator makes on what it is given: finite inputs, weights of the right shape, positions in
range, and refusals that name the file they are about.

Each turns what would fail deep in a kernel (``cannot convert float NaN to integer``, ``not enough values
to unpack``, ``OverflowError``) into one line naming the file and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from qinspect.dpu.dpu_graph import CONV_OPS, DpuGraph
from qinspect.errors import QInspectError
from qinspect.io.vitis import MAX_POSITION, is_position


def finite_batches(batches: Iterator[dict[str, np.ndarray]], path: str | None) -> Iterator[dict[str, np.ndarray]]:
    """``batches`` passed through, refused at the first NaN or Inf (``path``: the file they come from).

    NaN or Inf in calibration inputs leave no position to choose (the range of a tensor holding
    them is infinite or undefined), and in emulation inputs they turn every error figure into NaN.
    qinspect refuses them rather than quietly dropping samples: the message gives their count and the
    first sample holding one, and names the file.
    """
    seen = 0
    for batch in batches:
        for name, x in batch.items():
            if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all():
                bad = ~np.isfinite(np.asarray(x)).reshape(len(x), -1)
                first = seen + int(np.flatnonzero(bad.any(axis=1))[0])
                count = int(bad.sum()) + sum(_nonfinite(b) for b in batches)
                where = f" of input {name!r}" if len(batch) > 1 else ""
                raise QInspectError(f"inputs hold {count} non-finite values (NaN or Inf), first in sample {first}"
                                    f"{where}: positions and errors need finite inputs; fix or drop those samples",
                                    path)
        seen += len(next(iter(batch.values())))
        yield batch


def check_finite_capture(capture: Any, batch: int = 64) -> None:
    """Refuse a capture whose inputs hold NaN or Inf (an ``--eval`` capture: its activations would be
    compared with the calibration's), reading its inputs batch by batch."""
    names = list(capture.graph.inputs)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, int(capture.n_samples), batch):
            rows = slice(start, start + batch)
            yield {name: capture.inputs(name if len(names) > 1 else None, rows) for name in names}

    for _ in finite_batches(batches(), capture.path):
        pass


def _nonfinite(batch: dict[str, np.ndarray]) -> int:
    return sum(int((~np.isfinite(x)).sum()) for x in batch.values() if np.issubdtype(np.asarray(x).dtype, np.floating))


def check_node_weights(graph: DpuGraph, path: str) -> None:
    """Refuse a conv or dense node whose kernel or bias does not have the shape its operator needs
    (a damaged file would otherwise fail deep in a kernel: ``not enough values to unpack``)."""
    for node in graph.nodes:
        if node.op not in CONV_OPS:
            continue
        kernel = node.weights.get("depthwise_kernel" if node.op == "depthwise_conv2d" else "kernel")
        if kernel is None:
            continue
        rank = 2 if node.op == "dense" else 4
        shape = tuple(np.shape(kernel))
        if len(shape) != rank:
            raise QInspectError(f"{node.name}: its kernel has shape {shape}; a {node.op} kernel has {rank} axes "
                                "(damaged weights)", path)
        if node.op == "depthwise_conv2d":
            out = shape[2] * shape[3]
        elif node.op == "conv2d_transpose":
            out = shape[2]
        else:
            out = shape[-1]
        bias = node.weights.get("bias")
        if bias is not None and tuple(np.shape(bias)) != (out,):
            raise QInspectError(f"{node.name}: its bias has shape {tuple(np.shape(bias))}; its kernel "
                                f"{shape} gives {out} outputs (damaged weights)", path)


def checked_position(slot: tuple[str, str], value: Any, path: str | None) -> int:
    """A position from a positions table as an int within +-MAX_POSITION (one-line refusal otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float | np.floating):
        ok = False
    else:
        ok = is_position(int(value) if isinstance(value, int | np.integer) else float(value))
    if not ok:
        raise QInspectError(f"position {slot[0]}:{slot[1]} = {str(value)[:30]} is not a whole number within "
                            f"-{MAX_POSITION}..{MAX_POSITION} (a scale of 2^-p)", path)
    return int(value)


@contextmanager
def naming_file(path: str) -> Iterator[None]:
    """Give a refusal that names no file (an operator that cannot be emulated, ...) the model's file."""
    try:
        yield
    except QInspectError as exc:
        if exc.path is None and path:
            raise QInspectError(exc.message, path) from None
        raise
