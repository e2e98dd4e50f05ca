"""Root causes and remedies: each finding's fix tried in the emulator before it is advised.

A finding's fix is a what-if of the int8 pipeline (:meth:`qinspect.analysis.sensitivity.BatchRunner.what_if`,
which re-walks only what the change reaches): a position override, a recalibration (every position the
quantizer's calibration changes on cleaned or representative data, :mod:`qinspect.analysis.data_remedies`),
or layers kept in float. Measured on the
diagnosis' data (the evaluation data when there is one): the output SQNR after the fix, its gain over
the fully quantized model, and top-1 agreement with the float model.

Root causes: findings of one kind that follow each other along the graph (a dim calibration set clips
the input and then every layer after it) are one cause. The most upstream one is the ``origin``; the
others are listed in its ``affects`` and fixed with it, and its cost is what fixing them all gains.

Noise budget: a fix removing a share ``s = 1 - 10^(-gain/10)`` of the output's error power explains
that share (``noise_share``). ``explained`` is their sum (capped at 1: causes can overlap); the rest is
reported as accumulated rounding, naming the layers that add the most error and those that amplify it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.analysis.findings import Finding, ev
from qinspect.analysis.metrics import ErrorStats, json_safe, ratio_se_db
from qinspect.analysis.sensitivity import (
    BatchRunner,
    SensitivityResult,
    _output_stats,
    descendants,
    output_powers,
    top1_counts,
)
from qinspect.dpu.dpu_graph import DpuGraph, Slot, float_layers, quantizes_model_input

# kinds whose findings chain along the graph into one root cause, and how their fix is phrased
CHAINED = ("coverage", "saturation", "outlier_range")
MAX_MEASURED = 12  # candidate findings whose fix is run (highest estimated cost first)
MIN_GAIN_DB = 0.1
# said of the rounding share when a quantizer option is among the causes: the two were measured on two models
OPTION_APART = " (on the model as quantized: the quantizer option above rebuilds it, and was measured apart)"


@dataclass
class Fix:
    """What to change in the emulator to undo one cause."""

    kind: str  # "position", "recalibrate", "keep_float"
    action: str
    positions: dict[Slot, int] = field(default_factory=dict)
    float_nodes: tuple[str, ...] = ()
    # measured samples left out of this fix's measurement, and its baseline's (the outlier samples a
    # recalibration drops, when they are among the measured ones: the fix is for data without them)
    exclude: tuple[int, ...] = ()
    measured_on: str = ""  # in words, when not every measured sample


@dataclass
class Remedy:
    """A fix and what the emulator measured after applying it."""

    kind: str
    action: str
    measured_sqnr_db: float
    measured_gain_db: float
    top1_agreement: float | None
    fix: Fix | None = None  # what was changed (kept out of the JSON)
    gain_se_db: float | None = None  # the gain's standard error over the samples (jackknife), when known
    options: dict[str, Any] | None = None  # a quantizer-option remedy's change ({"cle_to_relu6": True})
    measured_on: str = ""  # the samples, in words, when not every measured one (then the gain is over them)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return json_safe({"kind": self.kind, "action": self.action, "measured_sqnr_db": self.measured_sqnr_db,
                          "measured_gain_db": self.measured_gain_db, "top1_agreement": self.top1_agreement,
                          **({} if self.gain_se_db is None else {"measured_gain_se_db": self.gain_se_db}),
                          **({} if self.options is None else {"options": self.options}),
                          **({"measured_on": self.measured_on} if self.measured_on else {})})


def node_of(f: Finding) -> str | None:
    """The emulator node a finding is tagged with."""
    return f.evidence.get("node", {}).get("value")


def _value(f: Finding, key: str) -> Any:
    return f.evidence.get(key, {}).get("value")


def fixes_for(graph: DpuGraph, f: Finding) -> list[Fix]:
    """The fixes worth trying for one finding, from its evidence (the best measured one is advised).

    A position-level fix (override, recalibration) first, then keeping the layer in float: where the
    clipped values matter to the output (real outliers, say), clipping them loses and float wins.
    """
    name = node_of(f)
    if name is None or name not in graph:
        return []
    node = graph[name]
    pos = _value(f, "position")
    out: list[Fix] = []
    if f.kind == "saturation" and node.out_slot is not None and _value(f, "non_overflow_position") is not None:
        p = int(_value(f, "non_overflow_position"))
        out.append(Fix("position", f"set {f.layer}'s output position to {p} (its non-overflow position: no "
                       f"clipping) instead of {pos}", {node.out_slot: p}))
    elif f.kind == "outlier_range" and node.out_slot is not None and _value(f, "bulk_position") is not None \
            and int(_value(f, "bulk_position")) > pos:
        # a finer position clips the outliers (what a learned clip would do); a coarser one would not be
        # "the bulk's" at all. Dropping the samples that hold them is a recalibration, tried by the diagnosis.
        p = int(_value(f, "bulk_position"))
        out.append(Fix("position", f"set {f.layer}'s output position to {p} (the bulk's min-MSE position: "
                       f"the outliers clip) instead of {pos}", {node.out_slot: p}))
    # (never a model input's quantizer: the DPU reads its input in int8, so keeping it float is no remedy)
    if f.kind in (*CHAINED, "channel_spread", "error_growth") and node.device == "DPU" \
            and not quantizes_model_input(graph, node):
        # every node of the layer, as ignore_layers floats it (a Dense's split softmax and its input quantizer)
        out.append(Fix("keep_float", f"keep {f.layer} in float (a CPU layer)", {},
                       float_fix([name], {}, graph).float_nodes))
    return out


def group_root_causes(graph: DpuGraph, found: list[Finding], fixes: dict[int, list[Fix]]) -> list[Finding]:
    """Fold findings of one chained kind that lie downstream of another into that origin's finding.

    The origin gets ``origin`` / ``affects`` evidence and a fix joining all their position changes; a
    finding with no upstream relative is its own origin. Other kinds are their own origin.
    """
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    reach = descendants(graph)
    roots: list[Finding] = []
    out: list[Finding] = []
    for f in sorted(found, key=lambda f: order.get(node_of(f) or "", 1 << 30)):
        name = node_of(f)
        root = None
        if f.kind in CHAINED and name is not None:
            root = next((r for r in roots if r.kind == f.kind and name in reach[node_of(r)]), None)
        if root is None:
            # a chained kind's downstream layers are gathered here; another kind keeps the layers it names
            # itself (a group of CPU layers)
            f.origin, f.affects = f.layer, [] if f.kind in CHAINED else f.affects
            if f.kind in CHAINED:
                roots.append(f)
            out.append(f)
            continue
        root.affects.append(f.layer)
        # the origin's position-level fix sets the affected layers' positions too
        # (a recalibration already sets every position the data change moves)
        moves = [fx for fx in fixes.get(id(f), []) if fx.positions and fx.kind != "recalibrate"]
        for rf in fixes.get(id(root), []):
            if rf.positions and moves and rf.kind != "recalibrate":
                rf.positions.update(moves[0].positions)
    for r in roots:
        for fx in fixes.get(id(r), []):
            if r.affects and fx.positions and fx.kind != "recalibrate":
                fx.action += f", and at the {len(r.affects)} layer(s) downstream it affects ({', '.join(r.affects)})"
    return out


class Trial:
    """Runs fixes on the sensitivity pass's walks and measures them against the fully quantized model."""

    def __init__(self, graph: DpuGraph, sens: SensitivityResult,
                 fallback: Callable[[Fix], tuple[ErrorStats, tuple[int, int]]] | None = None,
                 sample: dict[str, Any] | None = None, mode: str = "sim") -> None:
        self.graph = graph
        self.sens = sens
        self.runner: BatchRunner | None = sens.runner
        self.fallback = fallback
        self.base_db = sens.output.sqnr_db
        self.sample = sample  # the measured samples, for fixes measured without some of them
        self.mode = mode
        self._subsets: dict[tuple[int, ...], BatchRunner] = {}

    def _subset(self, exclude: tuple[int, ...]) -> BatchRunner:
        """The walks of the measured samples but ``exclude`` (built once per set)."""
        assert self.sample is not None
        if exclude not in self._subsets:
            self._subsets[exclude] = BatchRunner(self.graph, without_samples(self.sample, exclude), self.mode)
        return self._subsets[exclude]

    def run(self, fix: Fix) -> Remedy:
        """Apply ``fix`` as a what-if and measure the output; a fix with ``exclude`` is measured, with its
        own baseline, on the measured samples but those."""
        if fix.exclude and self.sample is not None:
            runner = self._subset(fix.exclude)
            base_db = _output_stats(self.graph, runner.ref, runner.base).sqnr_db
            return self._measured(fix, runner, base_db, output_powers(self.graph, runner.ref, runner.base)[1])
        if self.runner is not None:
            return self._measured(fix, self.runner, self.base_db, self.sens.output_noise)
        assert self.fallback is not None
        stats, (agree, total) = self.fallback(fix)
        return self._remedy(fix, stats.sqnr_db, self.base_db, agree, total, None)

    def _measured(self, fix: Fix, runner: BatchRunner, base_db: float, base_noise: np.ndarray) -> Remedy:
        values = runner.what_if(fix.positions, fix.float_nodes) if fix.positions or fix.float_nodes else runner.base
        agree, total = top1_counts(self.graph, runner.ref, values)
        # the runner holds every sample it measures (one batch): same samples, paired
        se = ratio_se_db(base_noise, output_powers(self.graph, runner.ref, values)[1])
        return self._remedy(fix, _output_stats(self.graph, runner.ref, values).sqnr_db, base_db, agree, total, se)

    @staticmethod
    def _remedy(fix: Fix, sqnr: float, base_db: float, agree: int, total: int, se: float | None) -> Remedy:
        gain = 0.0 if base_db == math.inf else sqnr - base_db
        return Remedy(fix.kind, fix.action, sqnr, 0.0 if math.isnan(gain) else gain,
                      agree / total if total else None, fix, None if se is None or math.isnan(se) else se,
                      measured_on=fix.measured_on)


def noise_share(gain_db: float) -> float:
    """Share of the output's error power a fix gaining ``gain_db`` removes."""
    if gain_db == math.inf:
        return 1.0
    return max(0.0, 1.0 - 10.0 ** (-gain_db / 10.0))


def attach(f: Finding, remedy: Remedy) -> None:
    """Record a measured remedy on a finding: its cost becomes the measured gain."""
    f.remedy = remedy.to_dict()
    f.fix = remedy.fix
    f.noise_share = noise_share(remedy.measured_gain_db)
    f.severity_db = remedy.measured_gain_db


INPUT_ROUNDING_NOTE_DB = 1.0  # the model input's own rounding worth a sentence of advice
EACH_ALONE_DB = 3.0  # a layer quantized alone within this of the whole model's output SQNR loses it alone ...
EACH_ALONE_GAIN_DB = 1.0  # ... when keeping it float alone gains less than this (the others still lose it)


def rounding_finding(graph: DpuGraph, sens: SensitivityResult, explained: float,
                     labels: dict[str, str], top: int = 3, covered: frozenset[str] = frozenset()) -> Finding | None:
    """The error no single cause explains: accumulated rounding, with the layers adding the most error
    (largest only-quantized noise share) and those amplifying the error reaching them. ``covered``: the
    emulator nodes a kept cause already names (never adders: their error is that cause's)."""
    rest = max(0.0, 1.0 - explained)
    if rest <= 0.0 or not sens.layers:
        return None
    # the layers whose error costs the output most: the largest measured keep-float gains
    adders = sorted(sens.layers, key=lambda s: -s.keep_float_gain_db if math.isfinite(s.keep_float_gain_db) else 0)
    # (layers a finding already names are that finding's; a model input's quantizer stays: the DPU reads int8)
    inputs = {n.name for n in graph.nodes if quantizes_model_input(graph, n)}
    adders = [s for s in adders if s.keep_float_gain_db > 0 and s.node not in covered and s.node not in inputs]
    # Layers that each lose the output on their own: quantized alone, each already gives (about) the whole
    # model's output SQNR, so keeping any one float gains nothing while the others still lose it. They go
    # first, so the noise budget's "worst k together" keeps them all float at once.
    full = sens.output.sqnr_db
    each_alone = sorted((s for s in sens.layers if s.node not in inputs and s.node not in covered
                         and math.isfinite(full) and math.isfinite(s.only_quantized_sqnr_db)
                         and abs(s.only_quantized_sqnr_db - full) <= EACH_ALONE_DB
                         and s.keep_float_gain_db < EACH_ALONE_GAIN_DB), key=lambda s: s.only_quantized_sqnr_db)
    if len(each_alone) >= 2:
        adders = each_alone + [s for s in adders if s not in each_alone]
    adders = adders[:top]
    amps = []
    for node in graph.nodes:
        if node.name not in sens.own or not node.inputs:
            continue
        ins = [sens.accumulated[i].sqnr_db for i in node.inputs if i in sens.accumulated and sens.accumulated[i].n]
        acc_out, own = sens.accumulated[node.name].sqnr_db, sens.own[node.name].sqnr_db
        if not ins or not all(map(math.isfinite, (*ins, acc_out, own))):
            continue
        # noise gain: the drop across the layer beyond what its own error accounts for
        acc_in = min(ins)
        expected = -10 * math.log10(10 ** (-acc_in / 10) + 10 ** (-own / 10))
        gain_db = expected - acc_out
        if gain_db >= 3.0:
            amps.append((gain_db, labels.get(node.name, node.name)))
    amps.sort(reverse=True)
    input_gain = max((s.keep_float_gain_db for s in sens.layers if s.node in inputs
                      and math.isfinite(s.keep_float_gain_db)), default=None)
    evidence = {
        "share": ev(rest, "1 - explained: the output error no finding's fix removes"),
        "adders": ev([{"layer": s.layer, "keep_float_gain_db": s.keep_float_gain_db,
                       "only_noise_share": s.only_noise_share} for s in adders],
                     "layers whose keep-float run gains the most output SQNR (sensitivity)"),
        "amplifiers": ev([{"layer": n, "noise_gain_db": g} for g, n in amps[:top]],
                         "layers whose accumulated SQNR drops >= 3 dB more than their inputs' error plus "
                         "their own error account for (their own quantization on float inputs, from the "
                         "sensitivity pass; not emulate's isolated SQNR, which feeds them quantized inputs)"),
    }
    if len(each_alone) >= 2:
        evidence["each_alone_loses_output"] = ev(
            [s.layer for s in each_alone[:top]], f"layers whose only-quantized output SQNR is within {EACH_ALONE_DB:g} "
            "dB of the whole model's: each alone loses the output, so no single layer's fix gains")
    if input_gain is not None:
        evidence["input_rounding_db"] = ev(input_gain, "output SQNR gained with the model input's own rounding "
                                                       "left out: a cost the DPU cannot avoid, since it reads int8")
    advice = ("The remaining error is rounding spread over many layers"
              + (f", added most by {', '.join(s.layer for s in adders)}" if adders else "")
              + (f" and amplified by {', '.join(n for _, n in amps[:top])}" if amps else "")
              + ": keep the worst adders in float or quantize them with more bits.")
    finding = Finding(adders[0].layer if adders else "(model)", "accumulated_rounding", 0.0, evidence, advice,
                      origin=None, affects=[s.layer for s in adders], noise_share=rest)
    finding.advice += each_alone_note(finding) + input_rounding_note(finding)
    return finding


def each_alone_note(f: Finding) -> str:
    """A sentence for the rounding finding when several layers each lose the output on their own."""
    names = (f.evidence.get("each_alone_loses_output") or {}).get("value") or []
    if len(names) < 2:
        return ""
    return (f" {', '.join(names)} each lose the output on their own (quantized alone, each gives within "
            f"{EACH_ALONE_DB:g} dB of the whole model's output SQNR), so fixing one of them changes nothing: "
            "they must be fixed together.")


def input_rounding_note(f: Finding) -> str:
    """A sentence for the rounding finding's advice when the model input's own rounding costs much."""
    gain = (f.evidence.get("input_rounding_db") or {}).get("value")
    if gain is None or not gain >= INPUT_ROUNDING_NOTE_DB:
        return ""
    return (f" Quantizing the model input to int8 alone costs {gain:.1f} dB, which no quantizer option removes (the "
            "DPU reads int8): a model trained on inputs its position represents exactly avoids it (8-bit images "
            "as (x - 128) / 128 are; x / 255 is not); retraining is not something the emulator can try.")


def without_samples(data: dict[str, np.ndarray], exclude: Sequence[int]) -> dict[str, np.ndarray]:
    """``data`` (model inputs, samples first) without the samples at ``exclude`` (a fix's outliers)."""
    n = len(next(iter(data.values())))
    keep = np.setdiff1d(np.arange(n), np.asarray(list(exclude), np.int64))
    return {k: v[keep] for k, v in data.items()}


def float_fix(nodes: Sequence[str], labels: dict[str, str], graph: DpuGraph | None = None) -> Fix:
    """Keep some nodes in float; with ``graph``, with every node of the same float layers
    (:meth:`DpuGraph.layer_closure`), as the ``ignore_layers`` call that names those layers does."""
    if graph is None:
        names = list(dict.fromkeys(labels.get(n, n) for n in nodes))
    else:  # the given nodes, and the others of their layers that run on the DPU
        chosen = set(nodes) | set(graph.float_closure(nodes))
        nodes = [n for n in graph.layer_closure(nodes) if n in chosen]
        names = float_layers(graph, nodes)  # as ignore_layers names them (a conv and its folded BatchNorm)
    return Fix("keep_float", f"keep {', '.join(names)} in float (CPU layers)", {}, tuple(nodes))
