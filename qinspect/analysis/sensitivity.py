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
over the nodes that depend on it: the unchanged prefix is reused from the full walks, and a partial walk
stops following a branch as soon as a node's value comes out identical to the full walk's (same codes),
so the results equal full re-runs exactly. For a chain of ``L`` layers that is about ``L^2`` node
evaluations per batch; it grows linearly with the samples. ``whatifs=False`` skips the partial walks
(no per-layer rows; accumulated, isolated and own errors are still measured): about 4 walks in all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from qinspect.analysis.decisions import decision_kind, decision_pair
from qinspect.analysis.metrics import ErrorStats, json_safe, ratio_se_db, representable_range
from qinspect.dpu.dpu_graph import CONV_OPS, DpuGraph, Node
from qinspect.dpu.executor import Evaluator, Value

NodeFn = Callable[[Node, list[Value]], Value]


def display_name(node: Node) -> str:
    """The float model's layer a node stands for (its last origin), else the node's own name."""
    return node.origin[-1] if node.origin else node.name


def quantizing_nodes(graph: DpuGraph) -> list[Node]:
    """Nodes that introduce quantization error of their own (weights, output or pre-activation)."""
    return [n for n in graph.nodes if n.op != "input" and (n.out_slot or n.weight_slots or n.pre_slot)]


_PART_OF_OP = {"depthwise_conv2d": "depthwise", "conv2d": "pointwise", "dense": "dense", "quantize": "input"}


def row_names(nodes: Sequence[Node]) -> dict[str, str]:
    """One label per node, unique among ``nodes``, naming a float-model layer the user finds in the tree.

    A node is labelled by its :func:`display_name`. Where several nodes would share a label (the depthwise
    and pointwise parts of a SeparableConv2D without a BatchNorm, the calls of a shared layer), each gets
    the part it computes in brackets, else its emulator node name: ``sep1 (depthwise)``, ``sep1 (pointwise)``.
    """
    base = {n.name: display_name(n) for n in nodes}
    count: dict[str, int] = {}
    for label in base.values():
        count[label] = count.get(label, 0) + 1
    out: dict[str, str] = {}
    separable = {base[n.name] for n in nodes if n.op == "depthwise_conv2d"}  # labels with a depthwise half
    for n in nodes:
        label = base[n.name]
        if count[label] > 1:
            # a conv is the pointwise half only beside a depthwise one; else it is the layer's conv
            part = "conv" if n.op == "conv2d" and label not in separable else _PART_OF_OP.get(n.op, n.op)
            label = f"{label} ({part})"
        out[n.name] = label
    taken: dict[str, int] = {}
    for label in out.values():
        taken[label] = taken.get(label, 0) + 1
    return {k: (f"{base[k]} ({k})" if taken[v] > 1 else v) for k, v in out.items()}


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
    top1: tuple[int, int] = (0, 0)  # (agreeing, compared) arg-max decisions, int8 against float
    # the last batch's walks, for what-if runs that reuse them (the whole data when it was one batch)
    runner: BatchRunner | None = field(default=None, repr=False)
    # per sample, the float output's power and the quantized output's error power (all outputs summed)
    output_signal: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    output_noise: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def output_se_db(self) -> float:
        """The output SQNR's standard error over the samples (jackknife; nan below 2 samples)."""
        return ratio_se_db(self.output_signal, self.output_noise)

    def by_layer(self) -> dict[str, LayerSensitivity]:
        """Sensitivities keyed by node name."""
        return {s.node: s for s in self.layers}


def _same(a: Value, b: Value) -> bool:
    """True when two plain quantized values are identical (same position and codes).

    Float values are never compared: a changed input almost always changes a float output, and the
    comparison would cost a pass over the tensor for nothing. A fused conv's value also carries its
    pre-activation: never treated as the same either.
    """
    if type(a) is not Value or type(b) is not Value or a.pos is None or a.pos != b.pos:
        return False
    return bool(np.array_equal(a.codes(), b.codes()))


def _rewalk(graph: DpuGraph, start: str | set[str], base: dict[str, Value], fn: NodeFn,
            order: dict[str, int]) -> dict[str, Value]:
    """Recompute ``start`` (one node or a set) and every node depending on it with ``fn``; others come
    from ``base``.

    A recomputed node (other than a start) whose value equals ``base``'s is not recorded as changed,
    so its consumers are not recomputed: the result is the same as a full walk's, with less work.
    """
    starts = {start} if isinstance(start, str) else set(start)
    if not starts:
        return {}
    changed: dict[str, Value] = {}
    for node in graph.nodes[min(order[s] for s in starts):]:
        forced = node.name in starts
        if not forced and not any(i in changed for i in node.inputs):
            continue
        ins = [changed[i] if i in changed else base[i] for i in node.inputs]
        v = fn(node, ins)
        if forced or not _same(v, base[node.name]):
            changed[node.name] = v
    return changed


def with_positions(graph: DpuGraph, positions: dict[tuple[str, str], int] | None) -> DpuGraph:
    """A copy of ``graph`` with some positions changed (the graph itself is not modified)."""
    if not positions:
        return graph
    new_pos = {k: dict(v) for k, v in graph.positions.items()}
    for (layer, key), p in positions.items():
        new_pos.setdefault(layer, {})[key] = int(p)
    return replace(graph, positions=new_pos)


def slot_readers(graph: DpuGraph, slots: Iterable[tuple[str, str]]) -> set[str]:
    """Nodes whose own evaluation reads one of ``slots`` (owners, and the conv / add an owning activation
    is fused into: the DPU rounds that accumulator at the activation's position)."""
    wanted = set(slots)
    out = set()
    for n in graph.nodes:
        own = {n.out_slot, n.pre_slot, *n.weight_slots.values()}
        if own & wanted:
            out.add(n.name)
        act = graph.fused_activation(n) if n.op in (*CONV_OPS, "add") else None
        if act is not None and act.out_slot in wanted:
            out.add(n.name)
    return out


def top1_counts(graph: DpuGraph, ref: dict[str, Value], test: dict[str, Value]) -> tuple[int, int]:
    """(agreeing, compared) decisions over the model outputs that make one (analysis.decisions.decision_kind:
    a softmax, logits or sigmoid head; never a feature map or an embedding)."""
    agree = total = 0
    for name in graph.outputs:
        pair = decision_pair(decision_kind(graph, name), ref[name].float(), test[name].float())
        if pair is None:
            continue
        r, t = pair
        agree += int(np.count_nonzero(np.argmax(r, axis=-1) == np.argmax(t, axis=-1)))
        total += int(r.size // r.shape[-1])
    return agree, total


def _f(v: Value) -> Value:
    return Value(f=v.float())


def output_powers(graph: DpuGraph, ref: dict[str, Value], test: dict[str, Value]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the reference outputs' power and the test outputs' error power (all outputs summed)."""
    signal = noise = np.zeros(0)
    for name in graph.outputs:
        r = ref[name].float().astype(np.float64)
        d = test[name].float().astype(np.float64) - r
        n = len(r)
        s2, d2 = (r.reshape(n, -1) ** 2).sum(axis=1), (d.reshape(n, -1) ** 2).sum(axis=1)
        signal, noise = (s2, d2) if not signal.size else (signal + s2, noise + d2)
    return signal, noise


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

    def what_if(self, positions: dict[tuple[str, str], int] | None = None,
                float_nodes: Iterable[str] = ()) -> dict[str, Value]:
        """All values of the int8 pipeline with some positions changed and some nodes computed in float:
        only the nodes reading a changed position or kept float, and what depends on them, are recomputed."""
        floats = set(float_nodes)
        g = with_positions(self.graph, positions)
        it = self.it
        if positions:
            it = Evaluator(g, self.it.mode)
            it.captured = self.it.captured  # the batch's recorded outputs of nodes without an implementation

        def fn(n: Node, ins: list[Value]) -> Value:
            return self.fl.node(n, [_f(v) for v in ins]) if n.name in floats else it.node(n, ins)

        starts = floats | slot_readers(self.graph, (positions or {}).keys())
        return {**self.base, **_rewalk(self.graph, starts, self.base, fn, self.order)}

    def isolated(self, name: str) -> Value:
        """The node alone quantized, fed with the quantized float reference (its value in only_quantized)."""
        node = self.graph[name]
        return self._only_node(name, node, [self.ref[i] for i in node.inputs])


def descendants(graph: DpuGraph) -> dict[str, set[str]]:
    """Per node, itself and every node that depends on it."""
    reach: dict[str, set[str]] = {}
    for n in reversed(graph.nodes):
        reach[n.name] = {n.name}.union(*(reach[c.name] for c in graph.consumers(n.name)))
    return reach


def _work(graph: DpuGraph, targets: Sequence[Node]) -> dict[str, int]:
    """A proxy for each target's partial walks: the output sizes of the target and its descendants."""
    def size(n: Node) -> int:
        shape = n.output_shape or []
        return max(1, math.prod(int(d) for d in shape[1:] if d))

    reach = descendants(graph)
    sizes = {n.name: size(n) for n in graph.nodes}
    return {t.name: sum(sizes[d] for d in reach[t.name]) for t in targets}


def work_per_sample(graph: DpuGraph) -> int:
    """The per-layer partial walks' work for one sample (output values computed, summed over every
    quantizing node's re-walk): what one more sample adds to the sensitivity pass."""
    return sum(_work(graph, quantizing_nodes(graph)).values())


def sensitivity(
    graph: DpuGraph,
    inputs: dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]],
    batch_size: int = 16,
    nodes: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    mode: str = "sim",
    whatifs: bool = True,
) -> SensitivityResult:
    """Run the sensitivity pass over ``inputs`` (a dict of arrays, or an iterable of batches).

    ``nodes``: restrict the per-layer runs to these node names (default: every quantizing node).
    ``progress(done, total)`` is called after each layer's partial walks, in work units (a layer's
    share is the size of the part of the graph it re-walks); ``total`` is per batch when ``inputs`` is an
    iterable. ``mode``: ``"sim"`` (default) runs the quantizer's float32 fake-quant simulation, about 3x
    faster and equal to the DPU integer pipeline wherever partial sums stay below 2^24 LSB
    (DPU_NUMERICS.md 4b); ``"int"`` runs the integer pipeline itself. ``whatifs=False`` skips the
    per-layer partial walks: ``layers`` is empty, the other figures are measured as usual.
    """
    wanted = None if nodes is None else set(nodes)
    targets = [n for n in quantizing_nodes(graph) if wanted is None or n.name in wanted]
    labels = row_names(targets)
    n_total = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else None
    n_batches = 1 if n_total is None else max(1, -(-n_total // batch_size))
    batches = _batches(inputs, batch_size) if isinstance(inputs, dict) else iter(inputs)
    work = _work(graph, targets) if whatifs else {n.name: 1 for n in targets}
    total = max(1, sum(work.values())) * n_batches
    done = 0
    output = ErrorStats()
    keep = {n.name: ErrorStats() for n in targets}
    only = {n.name: ErrorStats() for n in targets}
    acc = {n.name: ErrorStats() for n in graph.nodes}
    iso = {n.name: ErrorStats() for n in targets}
    own = {n.name: ErrorStats() for n in targets}
    n_samples = 0
    agree = compared = n_runs = 0
    run = None
    powers: list[tuple[np.ndarray, np.ndarray]] = []
    code_min = {n.name: graph.output_code_min(n.name) for n in graph.nodes}
    for batch in batches:
        n_samples += len(next(iter(batch.values())))
        run = BatchRunner(graph, batch, mode)
        n_runs += 1
        output.merge(_output_stats(graph, run.ref, run.base))
        powers.append(output_powers(graph, run.ref, run.base))
        a, c = top1_counts(graph, run.ref, run.base)
        agree, compared = agree + a, compared + c
        for node in graph.nodes:
            _add(acc[node.name], node, run.ref[node.name], run.base[node.name], code_min[node.name])
        for node in targets:
            if whatifs:
                keep[node.name].merge(_output_stats(graph, run.ref, run.keep_float(node.name)))
            _add(own[node.name], node, run.ref[node.name], run.own_error(node.name), code_min[node.name])
            if whatifs:
                # The node's own value in it is the isolated one. ``values`` is held until the next layer's
                # walk is done: freeing a walk's tensors at once returns their pages to the system and the
                # next walk faults them in again (measured: ~25% more CPU on MobileNetV2 at 112x112).
                values = run.only_quantized(node.name)
                _add(iso[node.name], node, run.ref[node.name], values[node.name], code_min[node.name])
                only[node.name].merge(_output_stats(graph, run.ref, values))
            else:
                _add(iso[node.name], node, run.ref[node.name], run.isolated(node.name), code_min[node.name])
            done += work[node.name]
            if progress is not None:
                progress(done, total)
    full = output.sqnr_db
    full_noise = output.sum_d2
    layers = []
    for node in targets if whatifs else []:
        k = keep[node.name].sqnr_db
        # An exact quantized output (SQNR +inf) has nothing to gain; otherwise the plain difference
        # (nan when the output SQNR is undefined: no output values, or a zero reference).
        gain = 0.0 if full == math.inf else k - full
        o = only[node.name]
        share = o.sum_d2 / full_noise if full_noise > 0 else (0.0 if o.sum_d2 == 0 else math.inf)
        layers.append(LayerSensitivity(node.name, labels[node.name], gain, o.sqnr_db, share))
    ranges = {k: (s.ref_min, s.ref_max) for k, s in acc.items() if s.n}
    return SensitivityResult(output, layers, acc, iso, own, n_samples, ranges, (agree, compared),
                             run if n_runs == 1 else None,
                             np.concatenate([p[0] for p in powers]) if powers else np.zeros(0),
                             np.concatenate([p[1] for p in powers]) if powers else np.zeros(0))


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
    g = with_positions(graph, positions)
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


def _add(stats: ErrorStats, node: Node, ref: Value, test: Value, code_min: int = -128) -> None:
    """Add one node's values; codes and the float clip range when the node's output is quantized
    (``code_min``: its lowest code, -127 on a DPUCADF8H target)."""
    r = ref.float()
    t = test.float()
    if r.shape != t.shape:
        return
    pre = getattr(test, "pre", None)
    if test.quantized and pre is None and test.pos is not None:
        lo, hi = representable_range(test.pos, qmin=code_min)
        stats.update(r, t, q=test.codes(), qmin=code_min, clip_lo=lo, clip_hi=hi)
    else:
        stats.update(r, t)
