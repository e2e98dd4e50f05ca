"""A model's outputs one by one: which ones a diagnosis weighs, and each output's own figures.

A model with several outputs (a detector's heads, segmentation beside classification) gets one
output SQNR that pools them: the error powers of all outputs over their signal powers. The output
with the most signal power (the most values, or the largest ones) sets that figure, so a small head
that int8 ruins can hide behind a large one that is fine. :func:`output_figures` gives each output
its own SQNR and top-1 agreement; :func:`hidden_output_warning` says when the pooled figure hides a
worse output; :func:`focused` restricts a graph to the outputs a diagnosis should weigh, so every
sensitivity, what-if and remedy is measured on them alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qinspect.analysis.decisions import Top1Tally, decision_kind, decision_pair
from qinspect.analysis.metrics import ErrorStats
from qinspect.analysis.sensitivity import display_name
from qinspect.dpu.dpu_graph import DpuGraph
from qinspect.dpu.executor import Evaluator
from qinspect.errors import QInspectError

# An output whose own SQNR is this far below the pooled figure is called hidden by it.
HIDDEN_GAP_DB = 3.0
# ... and one whose own top-1 agreement is this far below the pooled agreement.
HIDDEN_GAP_TOP1 = 0.05


CONSTANT_OUTPUT_REL = 1e-3  # an output whose spread over samples is at most this share of its size


def constant_output_notes(graph: DpuGraph, runner: Any) -> list[str]:
    """The :class:`OutputSpread` note of each float model output that is dead or nearly the same for every
    sample, from a sensitivity run's walks (``runner.ref``: the float outputs; None: no notes)."""
    if runner is None:
        return []
    notes = []
    for name in graph.outputs:
        spread = OutputSpread()
        spread.update(runner.ref[name].float())
        note = spread.note(output_layer(graph, name))
        if note:
            notes.append(note)
    return notes


class OutputSpread:
    """How much a float output varies from sample to sample, streamed batch by batch.

    A random-weight network's activations can collapse: its softmax sits at 1/classes for every input.
    The output SQNR then measures a constant (high, or infinite when int8 gives the same constant) while
    every layer before it is lost; a dead output (exactly 0) gives 0/0. :meth:`note` says so."""

    def __init__(self) -> None:
        self.n = 0
        self._sum: np.ndarray | None = None
        self._sum2: np.ndarray | None = None

    def update(self, ref: np.ndarray) -> None:
        """Add a batch of the output's float values (samples first)."""
        x = np.asarray(ref, np.float64).reshape(len(ref), -1)
        if not len(x):
            return
        if self._sum is None:
            self._sum, self._sum2 = x.sum(axis=0), (x * x).sum(axis=0)
        else:
            self._sum += x.sum(axis=0)
            self._sum2 += (x * x).sum(axis=0)
        self.n += len(x)

    def note(self, label: str) -> str | None:
        """The sentence for a dead or constant output named ``label``, or None (fewer than 2 samples too)."""
        if self.n < 2 or self._sum is None or self._sum2 is None:
            return None
        mean = self._sum / self.n
        size = float(np.sqrt(np.mean(self._sum2 / self.n)))
        spread = float(np.sqrt(np.mean(np.maximum(self._sum2 / self.n - mean * mean, 0.0))))
        if size == 0:  # a dead output: every SQNR of it is 0/0 (shown inf) or x/0 (-inf), never a measure
            return (f"the float model's output {label!r} is exactly 0 for every sample: its output SQNR (infinite "
                    "when int8 gives 0 too, -inf otherwise) and top-1 agreement describe a dead output, not the "
                    "model; the accumulated SQNR of the layers before it says more")
        if spread <= CONSTANT_OUTPUT_REL * size:
            how = f"it varies by {spread / size:.1g} of its size" if spread > 0 else "exactly the same"
            return (f"the float model's output {label!r} is nearly the same for every sample ({how}): the output "
                    "SQNR and top-1 agreement describe a constant, not the model (random or untrained weights do "
                    "this); the accumulated SQNR of the layers before it says more")
        return None


def output_layer(graph: DpuGraph, node_name: str) -> str:
    """The float model's layer an output node stands for (the name users see in the tree)."""
    return display_name(graph[node_name])


def resolve_outputs(graph: DpuGraph, names: Iterable[str], path: str | None = None) -> list[str]:
    """Output node names for ``names`` (float-model layer names or node names), in the graph's order.

    Raises :class:`QInspectError` (about the file ``path``) naming the model's outputs when a name is not
    one of them."""
    by_name: dict[str, str] = {}
    for node_name in graph.outputs:
        by_name[node_name] = node_name
        by_name.setdefault(output_layer(graph, node_name), node_name)
    wanted = [n.strip() for n in names if n.strip()]
    if not wanted:
        raise QInspectError("--outputs names no output", path)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        known = ", ".join(output_layer(graph, o) for o in graph.outputs)
        raise QInspectError(f"{unknown[0]!r} is not an output of the model (its outputs: {known})", path)
    chosen = {by_name[n] for n in wanted}
    return [o for o in graph.outputs if o in chosen]


def focused(graph: DpuGraph, outputs: Sequence[str] | None) -> DpuGraph:
    """A copy of ``graph`` reduced to ``outputs`` (node names) and the nodes they depend on.

    The nodes, weights and positions are shared with ``graph``, not copied; positions stay those the
    whole model was calibrated with. ``None`` or every output: the graph itself."""
    if not outputs or list(outputs) == list(graph.outputs):
        return graph
    needed: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(graph[name].inputs)
    return replace(graph, nodes=[n for n in graph.nodes if n.name in needed],
                   inputs=[i for i in graph.inputs if i in needed], outputs=list(outputs),
                   adjustments=[a for a in graph.adjustments if a.layer in needed])


@dataclass
class OutputFigure:
    """One model output's own error figures, int8 against float, on the measured samples."""

    node: str
    layer: str  # the float model's layer name
    values: int  # output values compared
    signal_share: float  # this output's share of the float signal power summed over all outputs
    sqnr_db: float
    top1: Top1Tally | None  # for an output with several classes on its last axis
    weighed: bool = True  # part of what the diagnosis ranks by

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"layer": self.layer, "node": self.node, "values": self.values,
                               "signal_share": self.signal_share, "sqnr_db": self.sqnr_db,
                               "weighed": self.weighed}
        if self.top1 is not None:
            out["top1_agreement"] = self.top1.agreement
            out["near_tie_warning"] = self.top1.warning
        return out


def output_figures(graph: DpuGraph, ref: dict[str, Any], test: dict[str, Any],
                   weighed: Sequence[str] | None = None) -> list[OutputFigure]:
    """Each output of ``graph`` on its own: ``ref`` and ``test`` map output node names to float and
    int8 values (anything with ``float()``, or arrays). ``weighed``: the outputs a diagnosis ranks by
    (all when None)."""
    arrays = [(name, _array(ref[name]), _array(test[name])) for name in graph.outputs]
    powers = [float(np.sum(r * r)) for _, r, _ in arrays]
    total = sum(powers)
    figures = []
    for (name, r, t), power in zip(arrays, powers, strict=True):
        tally = None
        kind = decision_kind(graph, name)
        pair = decision_pair(kind, r, t)
        if pair is not None:
            tally = Top1Tally(output=name, kind=kind or "")
            tally.update(*pair)
        figures.append(OutputFigure(node=name, layer=output_layer(graph, name), values=int(r.size),
                                    signal_share=power / total if total > 0 else float("nan"),
                                    sqnr_db=_sqnr_db(r, t), top1=tally,
                                    weighed=weighed is None or name in weighed))
    return figures


def measure_outputs(graph: DpuGraph, batch: dict[str, np.ndarray], mode: str,
                    weighed: Sequence[str] | None = None) -> list[OutputFigure]:
    """Run ``graph`` in float and in ``mode`` on one batch and give each output's own figures."""
    ref = Evaluator(graph, "float").run(batch, keep=graph.outputs)
    test = Evaluator(graph, mode).run(batch, keep=graph.outputs)
    return output_figures(graph, ref, test, weighed)


def hidden_output_warning(figures: Sequence[OutputFigure], pooled_sqnr_db: float,
                          pooled_top1: float | None = None) -> str | None:
    """One sentence when the pooled output SQNR (or the pooled top-1 agreement) hides a weighed output
    that is much worse on its own."""
    weighed = [f for f in figures if f.weighed]
    if len(weighed) < 2:
        return None
    parts = []
    worst = min(weighed, key=lambda f: f.sqnr_db)
    if np.isfinite(pooled_sqnr_db) and worst.sqnr_db < pooled_sqnr_db - HIDDEN_GAP_DB:
        top = max(weighed, key=lambda f: f.signal_share)
        pooled_power = sum(f.signal_share for f in weighed)  # shares are of every output's power
        share = top.signal_share / pooled_power if pooled_power > 0 else float("nan")
        parts.append(f"the output SQNR pools {len(weighed)} outputs by their signal power, and {top.layer} carries "
                     f"{100 * share:.1f}% of it; {worst.layer} alone is {worst.sqnr_db:.1f} dB, "
                     f"{pooled_sqnr_db - worst.sqnr_db:.1f} dB below the pooled figure, which hides it")
    decided = [(f.layer, f.top1.agreement, f.top1.total) for f in weighed
               if f.top1 is not None and f.top1.agreement is not None]
    if pooled_top1 is not None and len(decided) >= 2:
        low, low_agree, _ = min(decided, key=lambda d: d[1])
        most, _, most_total = max(decided, key=lambda d: d[2])
        if low_agree < pooled_top1 - HIDDEN_GAP_TOP1:
            parts.append(f"the top-1 agreement pools the decisions of {len(decided)} outputs ({most} makes "
                         f"{most_total} of them); {low} alone agrees on {100 * low_agree:.1f}%, not "
                         f"{100 * pooled_top1:.1f}%")
    return "; ".join(parts) or None


def _sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    stats = ErrorStats()  # the same definition as the pooled figure's
    stats.update(ref, test)
    return stats.sqnr_db


def _array(v: Any) -> np.ndarray:
    return np.asarray(v.float() if hasattr(v, "float") else v, np.float64)
