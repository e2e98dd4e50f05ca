"""Per-layer sensitivity: what the model output's SQNR does when one layer alone is changed.

For each node that quantizes something (weights, its output, or an input quantizer):

- ``keep_float_gain_db``: output SQNR with every layer quantized *except* this one (it computes in
  float, with float weights, and its output is not quantized) minus the output SQNR of the fully
  quantized model. Positive: this layer costs that much. Answers "which layer is it?".
- ``only_quantized_sqnr_db``: output SQNR when this layer alone is quantized (its inputs quantized at
  their positions, it runs its integer operator, everything else float). The float model has infinite
  SQNR, so this figure *is* the drop; ``only_noise_share`` is that run's output noise over the fully
  quantized model's (``10^((full - only)/10)``), the fraction of the output error this layer produces
  on its own.

Along the way the pass also yields, per node, the *accumulated* error (int8 pipeline from the model
input against float), the *isolated* error (the node alone quantized, fed with the quantized float
reference; for an activation fused into a conv that means the conv's float output quantized at the
activation's position, the activation's own share, where the emulator facade isolates the fused pair as
one DPU operator) and the *own* error (the node's own weights and output quantization, fed with the float
reference itself, so its inputs' rounding is not counted), as
:class:`~qinspect.analysis.metrics.ErrorStats`.

Cost: per batch, one float and one integer walk over the graph, then for each node two partial walks
over the nodes that depend on it (the rest is reused from the full walks). For a chain of ``L`` layers
that is about ``L^2`` node evaluations per batch; it grows linearly with the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from qinspect.analysis.metrics import ErrorStats, json_safe, representable_range
from qinspect.dpu.dpu_graph import DpuGraph, Node
from qinspect.dpu.executor import Evaluator, Value

NodeFn = Callable[[Node, list[Value]], Value]


def display_name(node: Node) -> str:
    """The float model's layer a node stands for (its last origin), else the node's own name."""
    return node.origin[-1] if node.origin else node.name


def quantizing_nodes(graph: DpuGraph) -> list[Node]:
    """Nodes that introduce quantization error of their own (weights, output or pre-activation)."""
    return [n for n in graph.nodes if n.op != "input" and (n.out_slot or n.weight_slots or n.pre_slot)]


@dataclass
class LayerSensitivity:
    """Sensitivity of the model output to one node."""

    node: str
    layer: str
    keep_float_gain_db: float
    only_quantized_sqnr_db: float
    only_noise_share: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with how each number is computed."""
        return json_safe(
            {
                "layer": self.layer,
                "node": self.node,
                "keep_float_gain_db": self.keep_float_gain_db,
                "only_quantized_sqnr_db": self.only_quantized_sqnr_db,
                "only_noise_share": self.only_noise_share,
            }
        )


HOW = {
    "keep_float_gain_db": "output SQNR (dB, sums over all outputs and samples) with this layer alone in "
    "float minus the fully quantized model's",
    "only_quantized_sqnr_db": "output SQNR when only this layer is quantized (the float model's is +inf)",
    "only_noise_share": "output noise with only this layer quantized / output noise fully quantized",
}


@dataclass
class SensitivityResult:
    """Everything one sensitivity pass measured."""

    output: ErrorStats  # fully quantized model output against float
    layers: list[LayerSensitivity]
    accumulated: dict[str, ErrorStats]  # node name -> int8 pipeline against float
    isolated: dict[str, ErrorStats]  # node name -> node alone quantized against float
    own: dict[str, ErrorStats]  # node name -> node's own quantization only (float inputs) against float
    n_samples: int
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # float min/max per node

    def by_layer(self) -> dict[str, LayerSensitivity]:
        """Sensitivities keyed by node name."""
        return {s.node: s for s in self.layers}


def _rewalk(graph: DpuGraph, start: str, base: dict[str, Value], fn: NodeFn,
            order: dict[str, int]) -> dict[str, Value]:
    """Recompute ``start`` and every node depending on it with ``fn``; others come from ``base``."""
    changed: dict[str, Value] = {}
    for node in graph.nodes[order[start]:]:
        if node.name != start and not any(i in changed for i in node.inputs):
            continue
        ins = [changed[i] if i in changed else base[i] for i in node.inputs]
        changed[node.name] = fn(node, ins)
    return changed


def _f(v: Value) -> Value:
    return Value(f=v.float())


def _output_stats(graph: DpuGraph, ref: dict[str, Value], test: dict[str, Value]) -> ErrorStats:
    stats = ErrorStats()
    for name in graph.outputs:
        stats.update(ref[name].float(), test[name].float())
    return stats


def _batches(inputs: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in inputs.items()}


class BatchRunner:
    """The float and integer walks of one batch, and partial walks that change one node."""

    def __init__(self, graph: DpuGraph, batch: dict[str, np.ndarray], mode: str = "sim") -> None:
        self.graph = graph
        self.order = {n.name: i for i, n in enumerate(graph.nodes)}
        self.fl = Evaluator(graph, "float")
        self.it = Evaluator(graph, mode)
        self.ref = self.fl.run(batch)
        self.base = self.it.run(batch)

    def _keep_node(self, target: str, n: Node, ins: list[Value]) -> Value:
        if n.name == target:
            return self.fl.node(n, [_f(v) for v in ins])
        return self.it.node(n, ins)

    def _only_node(self, target: str, n: Node, ins: list[Value]) -> Value:
        if n.name == target:
            qins = [self.it.quant_value(v.float(), self.graph.output_slot(i))
                    for v, i in zip(ins, n.inputs, strict=True)]
            return self.it.node(n, qins)
        return self.fl.node(n, [_f(v) for v in ins])

    def keep_float(self, name: str) -> dict[str, Value]:
        """All values with ``name`` alone computed in float (its output unquantized)."""
        changed = _rewalk(self.graph, name, self.base, partial(self._keep_node, name), self.order)
        return {**self.base, **changed}

    def own_error(self, name: str) -> Value:
        """The node's value with its own quantization (weights, output) but float inputs."""
        node = self.graph[name]
        return self.it.node(node, [_f(self.ref[i]) for i in node.inputs])

    def only_quantized(self, name: str) -> dict[str, Value]:
        """All values with ``name`` alone quantized (its inputs quantized at their positions)."""
        changed = _rewalk(self.graph, name, self.ref, partial(self._only_node, name), self.order)
        return {**self.ref, **changed}


def sensitivity(
    graph: DpuGraph,
    inputs: dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]],
    batch_size: int = 16,
    nodes: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    mode: str = "sim",
) -> SensitivityResult:
    """Run the sensitivity pass over ``inputs`` (a dict of arrays, or an iterable of batches).

    ``nodes``: restrict the per-layer runs to these node names (default: every quantizing node).
    ``mode``: ``"sim"`` (default) runs the quantizer's float32 fake-quant simulation, about 3x faster
    and equal to the DPU integer pipeline wherever partial sums stay below 2^24 LSB
    (DPU_NUMERICS.md 4b); ``"int"`` runs the integer pipeline itself.
    """
    wanted = None if nodes is None else set(nodes)
    targets = [n for n in quantizing_nodes(graph) if wanted is None or n.name in wanted]
    batches = _batches(inputs, batch_size) if isinstance(inputs, dict) else iter(inputs)
    output = ErrorStats()
    keep = {n.name: ErrorStats() for n in targets}
    only = {n.name: ErrorStats() for n in targets}
    acc = {n.name: ErrorStats() for n in graph.nodes}
    iso = {n.name: ErrorStats() for n in targets}
    own = {n.name: ErrorStats() for n in targets}
    n_samples = 0
    for b, batch in enumerate(batches):
        n_samples += len(next(iter(batch.values())))
        run = BatchRunner(graph, batch, mode)
        output.merge(_output_stats(graph, run.ref, run.base))
        for node in graph.nodes:
            _add(acc[node.name], node, run.ref[node.name], run.base[node.name])
        for node in targets:
            keep[node.name].merge(_output_stats(graph, run.ref, run.keep_float(node.name)))
            _add(own[node.name], node, run.ref[node.name], run.own_error(node.name))
            values = run.only_quantized(node.name)
            _add(iso[node.name], node, run.ref[node.name], values[node.name])
            only[node.name].merge(_output_stats(graph, run.ref, values))
        if progress is not None:
            progress(b + 1, n_samples)
    full = output.sqnr_db
    full_noise = output.sum_d2
    layers = []
    for node in targets:
        k = keep[node.name].sqnr_db
        # An exact quantized output (SQNR +inf) has nothing to gain; otherwise the plain difference
        # (nan when the output SQNR is undefined: no output values, or a zero reference).
        gain = 0.0 if full == math.inf else k - full
        o = only[node.name]
        share = o.sum_d2 / full_noise if full_noise > 0 else (0.0 if o.sum_d2 == 0 else math.inf)
        layers.append(LayerSensitivity(node.name, display_name(node), gain, o.sqnr_db, share))
    ranges = {k: (s.ref_min, s.ref_max) for k, s in acc.items() if s.n}
    return SensitivityResult(output, layers, acc, iso, own, n_samples, ranges)


def what_if(
    graph: DpuGraph,
    inputs: dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]],
    positions: dict[tuple[str, str], int] | None = None,
    float_nodes: Iterable[str] = (),
    batch_size: int = 16,
    mode: str = "sim",
) -> ErrorStats:
    """Output error of the int8 pipeline with some positions changed and some nodes kept in float.

    The graph is not modified (a copy carries the changed positions). ``mode`` as in :func:`sensitivity`.
    """
    g = graph
    if positions:
        new_pos = {k: dict(v) for k, v in graph.positions.items()}
        for (layer, key), p in positions.items():
            new_pos.setdefault(layer, {})[key] = int(p)
        g = replace(graph, positions=new_pos)
    floats = set(float_nodes)
    batches = _batches(inputs, batch_size) if isinstance(inputs, dict) else iter(inputs)
    stats = ErrorStats()
    for batch in batches:
        fl_ref = Evaluator(graph, "float")
        ref = fl_ref.run(batch, keep=graph.outputs)
        fl = Evaluator(g, "float")
        it = Evaluator(g, mode)
        fl.use_captured(batch)  # recorded outputs of nodes without an implementation, if any
        it.use_captured(batch)
        values: dict[str, Value] = {}
        for node in g.nodes:
            if node.op == "input":
                values[node.name] = Value(f=np.asarray(batch[node.name], np.float32))
                continue
            ins = [values[i] for i in node.inputs]
            values[node.name] = fl.node(node, [_f(v) for v in ins]) if node.name in floats else it.node(node, ins)
        stats.merge(_output_stats(g, ref, values))
    return stats


def _add(stats: ErrorStats, node: Node, ref: Value, test: Value) -> None:
    """Add one node's values; codes and the float clip range when the node's output is quantized."""
    r = ref.float()
    t = test.float()
    if r.shape != t.shape:
        return
    pre = getattr(test, "pre", None)
    if test.quantized and pre is None and test.pos is not None:
        lo, hi = representable_range(test.pos)
        stats.update(r, t, q=test.codes(), clip_lo=lo, clip_hi=hi)
    else:
        stats.update(r, t)
