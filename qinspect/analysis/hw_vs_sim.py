"""Where the DPU's integer pipeline and the quantizer's float32 simulation disagree.

The quantizer's ``dump_model`` output and every accuracy figure measured with its quantized model come
from a float32 fake-quant simulation; the DPU computes in integers (DPU_NUMERICS.md section 4b). The
two agree while every float32 result is exact: a conv's partial sums stay below 2^24 of the unit
``2^-(pi + pw)``, a hard sigmoid's product fits float32's mantissa, an average pool's factor is
applied in one exact step. Past that, the simulation rounds sums and products the DPU keeps exact,
and an output code can come out one LSB away: the board then differs from the dump and from the
accuracy the user measured on the quantized model.

:func:`sim_vs_dpu` measures it layer by layer and *in isolation*: every DPU node gets the integer
pipeline's own int8 inputs and runs both as the DPU does and as the float32 simulation does, so a
count is what that layer adds, not what it inherits. The simulation here sums in numpy's order;
TensorFlow's differs, so a dump can differ in other codes of the same layers, but only in layers
whose float32 results are not exact, which is what the finding names (with the bound that says so).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.analysis.findings import Finding, ev
from qinspect.dpu import ops
from qinspect.dpu.dpu_graph import CONV_OPS, DpuGraph, Node
from qinspect.dpu.executor import Evaluator, Value, batch_inputs

EXACT_LIMIT = 2**24  # float32 holds every integer up to this exactly


def _cause(node: Node) -> str:
    if node.op in CONV_OPS:
        return "float32 partial sums"
    if node.op == "hard_sigmoid":
        return "hard-sigmoid product"
    if node.op in ("avg_pool", "global_avg_pool"):
        return "average-pool factor"
    return "float32 rounding"


@dataclass
class LayerDisagreement:
    """One DPU node's codes: as the DPU computes them against the float32 simulation, same int8 inputs."""

    node: str
    op: str
    cause: str
    differ: int = 0
    total: int = 0
    max_lsb: int = 0
    at_risk: int = 0  # conv-like: outputs whose sum of |x_k * w_k| passes 2^24 (float32 may round them)
    abs_sum_max: int | None = None  # conv-like: the largest sum of |x_k * w_k| seen, in units of 2^-(pi + pw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"node": self.node, "op": self.op, "cause": self.cause, "codes_differ": self.differ,
                "codes": self.total, "max_lsb": self.max_lsb, "codes_at_risk": self.at_risk,
                "abs_sum_max": self.abs_sum_max,
                "abs_sum_max_over_2_24": None if self.abs_sum_max is None else self.abs_sum_max / EXACT_LIMIT}


@dataclass
class SimVsDpu:
    """Every DPU node's comparison, in graph order."""

    layers: list[LayerDisagreement] = field(default_factory=list)
    samples: int = 0

    @property
    def differing(self) -> list[LayerDisagreement]:
        """The nodes where the simulation differs here or may differ in another summation order."""
        return [x for x in self.layers if x.differ or x.at_risk]

    @property
    def codes_differ(self) -> int:
        """Differing codes over all nodes (numpy's summation order)."""
        return sum(x.differ for x in self.layers)

    @property
    def codes_at_risk(self) -> int:
        """Codes whose exact sum float32 may round, in any summation order."""
        return sum(x.at_risk for x in self.layers)


def _abs_sums(ev: Evaluator, node: Node, xq: np.ndarray) -> np.ndarray | None:
    """Per output, sum_k |x_k * w_k| in units of 2^-(pi + pw): no partial sum, in any order, exceeds it, so
    float32 adds exactly wherever it is at most 2^24."""
    wname = "depthwise_kernel" if node.op == "depthwise_conv2d" else "kernel"
    wq, pw = ev.weight(node, wname)
    if wq is None or pw is None:
        return None
    x = np.abs(xq.astype(np.int16))
    w = np.abs(wq.astype(np.int16))
    p = node.params
    if node.op == "dense":
        return ops.dense_acc(x, w)
    if node.op == "conv2d":
        return ops.conv2d_acc(x, w, p["strides"], p["padding"], p["dilation"])
    if node.op == "depthwise_conv2d":
        return ops.depthwise_conv2d_acc(x, w, p["strides"], p["padding"], p["dilation"])
    return ops.conv2d_transpose_acc(x, w, p["strides"], p["padding"])


def sim_vs_dpu(graph: DpuGraph, batches: Iterable[Any]) -> SimVsDpu:
    """Compare, node by node, the DPU's integer result with the float32 simulation's on the same int8
    inputs (the integer pipeline's), over ``batches`` (arrays or dicts of model inputs)."""
    g = graph
    iev, sev = Evaluator(g, "int"), Evaluator(g, "sim")
    rows: dict[str, LayerDisagreement] = {}
    risk: dict[str, tuple[int, int]] = {}  # conv-like node -> (outputs past 2^24, largest abs sum) this batch
    out = SimVsDpu()
    for b in batches:
        inputs = batch_inputs(g, b)
        if isinstance(b, dict):  # captured stand-ins for layers without an implementation
            iev.use_captured(b)
            sev.use_captured(b)
        out.samples += len(next(iter(inputs.values())))
        remaining = {n.name: len(g.consumers(n.name)) for n in g.nodes}
        acc: dict[str, Value] = {}
        sim_pre: dict[str, Value] = {}  # the simulation's own output of a conv / add whose activation is fused
        for node in g.nodes:
            if node.op == "input":
                acc[node.name] = Value(f=np.asarray(inputs[node.name], np.float32))
                continue
            ins = [acc[i] for i in node.inputs]
            acc[node.name] = a = iev.node(node, ins)
            if node.op in CONV_OPS and node.device == "DPU" and ins and ins[0].quantized:
                sums = _abs_sums(iev, node, ins[0].codes())
                if sums is not None and sums.size:
                    risk[node.name] = (int(np.count_nonzero(sums > EXACT_LIMIT)), int(sums.max()))
            if node.device == "DPU" and all(v.quantized or i in sim_pre for v, i in zip(ins, node.inputs, strict=True)):
                s = sev.node(node, [sim_pre.pop(i, v) for v, i in zip(ins, node.inputs, strict=True)])
                act = g.fused_activation(node) if node.op in (*CONV_OPS, "add") else None
                if act is not None and not s.quantized:
                    sim_pre[node.name] = s  # compared at the activation, where the DPU rounds once
                elif a.quantized and s.quantized and a.pos == s.pos:
                    producer = next((g[i] for i in node.inputs if g.fused_activation(g[i]) is node), node)
                    row = rows.get(node.name)
                    if row is None:
                        row = rows[node.name] = LayerDisagreement(node.name, node.op, _cause(producer))
                    if producer.name in risk:
                        n_risk, top = risk.pop(producer.name)
                        row.at_risk += n_risk
                        row.abs_sum_max = max(row.abs_sum_max or 0, top)
                    d = np.abs(a.codes().astype(np.int16) - s.codes().astype(np.int16))
                    row.differ += int(np.count_nonzero(d))
                    row.total += int(d.size)
                    row.max_lsb = max(row.max_lsb, int(d.max()) if d.size else 0)
            for i in node.inputs:
                remaining[i] -= 1
                if remaining[i] <= 0:
                    acc.pop(i, None)
    out.layers = list(rows.values())
    return out


def hw_vs_sim_finding(result: SimVsDpu, names: dict[str, str]) -> Finding | None:
    """The ``hw_vs_sim`` finding: the layers whose DPU codes the float32 simulation does not reproduce, the
    first as ``origin``, the others in ``affects``; None when every code agrees.

    It states a fact about deployment, not an accuracy cost (severity 0): the DPU's result is the exact
    one, but the dump, and any accuracy measured with the quantizer's model, come from the simulation.
    ``names`` maps node names to the float model's layer names.
    """
    rows = result.differing
    if not rows:
        return None
    first = rows[0]
    layers = [names.get(r.node, r.node) for r in rows]
    total = sum(r.total for r in result.layers)
    causes = sorted({r.cause for r in rows})
    wide = [r for r in rows if r.at_risk]
    evidence = {
        "codes_at_risk": ev(result.codes_at_risk, "int8 output codes of conv-like layers whose sum of |x_k * w_k| "
                                                  "passes 2^24 of the unit 2^-(pi + pw): float32 may round their "
                                                  "sum, whatever order TensorFlow adds in, and the DPU does not"),
        "codes_differ": ev(result.codes_differ, "int8 output codes where the DPU's integer result and the float32 "
                                                "simulation's differ, each layer fed the same int8 inputs (the "
                                                "integer pipeline's), summed over layers and samples; the "
                                                "simulation adds in numpy's order, TensorFlow's can differ"),
        "codes_compared": ev(total, "int8 output codes compared over every DPU layer"),
        "samples": ev(result.samples, "samples compared"),
        "layers": ev([r.to_dict() for r in rows], "per layer: codes that differ, largest difference in LSB, cause, "
                                                  "and for conv-like layers the codes at risk and the largest sum "
                                                  "of |x_k * w_k| (no partial sum exceeds it; float32 is exact up "
                                                  "to 2^24)"),
        "causes": ev(causes, "why float32 cannot hold the exact value there"),
    }
    why = (f"{result.codes_at_risk} codes at {len(wide)} layer(s) sum products up to "
           f"{max(r.abs_sum_max or 0 for r in wide) / EXACT_LIMIT:.2f}x 2^24, past float32's exact integers, so the "
           "simulation may round them in any summation order; " if wide else "")
    advice = (f"{result.codes_differ} of {total} output codes differ between the DPU and the quantizer's float32 "
              f"simulation here, at {len(rows)} layer(s) ({', '.join(layers[:5])}{', ...' if len(layers) > 5 else ''}"
              f"); {why}the board computes them exactly, so it can differ from dump_model's files and from "
              "accuracy measured with the quantized Keras model there. Judge the deployed model by the integer "
              "emulation (qinspect emulate) or on the board (compare-dump); to make the simulation exact, "
              "narrow those layers' accumulation (fewer input channels or smaller kernels per layer).")
    f = Finding(names.get(first.node, first.node), "hw_vs_sim", 0.0, evidence, advice)
    f.origin = f.layer
    f.affects = layers[1:]
    return f
