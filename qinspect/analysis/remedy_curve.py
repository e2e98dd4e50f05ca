"""A remedy applied as a what-if, with the error-propagation curve before and after it.

The window's **Try it** button: a finding's :class:`~qinspect.analysis.remedies.Fix` (changed positions,
layers kept in float) is applied to the int8 pipeline with the same partial walks the diagnosis measured
it with (:meth:`~qinspect.analysis.sensitivity.BatchRunner.what_if`), and every node's accumulated error
is gathered twice on the same batches: as quantized, and with the fix. Both curves, the output SQNR and
the top-1 agreement before and after come from one pass over one data set, so they compare like for like.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qinspect.analysis.metrics import ErrorStats
from qinspect.analysis.outputs import focused
from qinspect.analysis.sensitivity import BatchRunner, _add, _batches, _output_stats, top1_counts
from qinspect.dpu.dpu_graph import DpuGraph, Slot

BATCH = 16  # samples per walk: a walk holds every node's values for its batch


@dataclass
class RemedyCurves:
    """Accumulated error per emulator node and at the output, as quantized and with one fix applied."""

    action: str
    before: dict[str, ErrorStats] = field(default_factory=dict)
    after: dict[str, ErrorStats] = field(default_factory=dict)
    output_before: ErrorStats = field(default_factory=ErrorStats)
    output_after: ErrorStats = field(default_factory=ErrorStats)
    top1_before: float | None = None
    top1_after: float | None = None
    n_samples: int = 0
    measured_on: str = ""  # the samples, in words, when the fix was measured without some (its outliers)

    @property
    def gain_db(self) -> float:
        """Output SQNR after minus before (dB)."""
        return self.output_after.sqnr_db - self.output_before.sqnr_db


def remedy_curves(graph: DpuGraph, data: dict[str, np.ndarray], positions: dict[Slot, int] | None,
                  float_nodes: Iterable[str], action: str = "", batch_size: int = BATCH, mode: str = "sim",
                  progress: Callable[[int, int], None] | None = None,
                  outputs: Sequence[str] | None = None) -> RemedyCurves:
    """Walk ``data`` through the int8 pipeline as quantized and with ``positions`` changed and
    ``float_nodes`` computed in float; per node, the accumulated error of both against float. The
    output figures are over ``outputs`` (node names; None: all the model's outputs)."""
    floats = tuple(float_nodes)
    measured = focused(graph, outputs)  # every node is walked; only the output figures narrow
    out = RemedyCurves(action, {n.name: ErrorStats() for n in graph.nodes},
                       {n.name: ErrorStats() for n in graph.nodes})
    total = len(next(iter(data.values())))
    agree = [0, 0]
    compared = 0
    for batch in _batches(data, batch_size):
        run = BatchRunner(graph, batch, mode)
        fixed = run.what_if(positions, floats)
        for node in graph.nodes:
            _add(out.before[node.name], node, run.ref[node.name], run.base[node.name])
            _add(out.after[node.name], node, run.ref[node.name], fixed[node.name])
        out.output_before.merge(_output_stats(measured, run.ref, run.base))
        out.output_after.merge(_output_stats(measured, run.ref, fixed))
        for i, values in enumerate((run.base, fixed)):
            a, c = top1_counts(measured, run.ref, values)
            agree[i] += a
        compared += c
        out.n_samples += len(next(iter(batch.values())))
        if progress is not None:
            progress(out.n_samples, total)
    if compared:
        out.top1_before, out.top1_after = agree[0] / compared, agree[1] / compared
    return out
