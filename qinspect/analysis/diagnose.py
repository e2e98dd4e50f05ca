"""Diagnosis: find the causes of an emulated model's int8 error, try each one's remedy, rank them by the
output SQNR the remedy gains.

Input: an emulator graph with positions (:class:`~qinspect.dpu.dpu_graph.DpuGraph`, calibrated by
qinspect or read from a Vitis ``quantized.h5``), the samples to measure on (the evaluation data when
there is one, else the calibration data) and, for ``coverage`` and calibration-side outliers, the
calibration samples.

What is measured where:

- the float tensors the findings look at come from the first ``max_samples`` samples of the measured
  data (one float walk); outliers that set a position are looked for in the calibration data;
- sensitivity, accumulated and isolated errors come from the first ``sens_samples`` (one float walk,
  one quantized walk and two partial walks per quantizing node; see
  :mod:`qinspect.analysis.sensitivity`): the costly part, growing with layers x samples;
- calibration ranges for ``coverage`` come from a float walk over *all* calibration samples;
- every candidate cause's remedy is a what-if run on the sensitivity samples (see
  :mod:`qinspect.analysis.remedies`): its measured gain is the finding's severity, and causes chained
  along the graph are one finding at their origin.

Candidates whose remedy gains less than ``MIN_SEVERITY_DB`` are dropped, except ``cpu_fallback`` and
``alignment`` (facts about how the model deploys, whatever their accuracy cost). Ranking: by severity;
the accumulated-rounding residual after the causes; a CPU layer at the model's edge (no DPU round trip,
such as a final softmax), and CPU layers and shared positions that cost no measured accuracy, last.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.analysis import findings as fnd
from qinspect.analysis import remedies as rem
from qinspect.analysis.cpu_alternatives import dpu_alternative
from qinspect.analysis.data_remedies import (
    attach_outlier_samples,
    data_fixes,
    input_ceiling_notes,
    measured_outliers_note,
)
from qinspect.analysis.decisions import Top1Tally, decision_kind, decision_pair
from qinspect.analysis.findings import Branch, Finding, ev
from qinspect.analysis.function_change import function_change_finding, replaced_nodes
from qinspect.analysis.hw_vs_sim import hw_vs_sim_finding, sim_vs_dpu
from qinspect.analysis.metrics import ErrorStats, json_safe
from qinspect.analysis.option_remedies import QUANTIZER_STOPS, OptionTrials, candidate_options
from qinspect.analysis.outputs import (
    OutputFigure,
    constant_output_notes,
    focused,
    hidden_output_warning,
    measure_outputs,
    output_figures,
    output_layer,
)
from qinspect.analysis.recalibration import Recalibration
from qinspect.analysis.sensitivity import (
    HOW,
    LayerSensitivity,
    SensitivityResult,
    _output_stats,
    display_name,
    quantizing_nodes,
    row_names,
    sensitivity,
    what_if,
    work_per_sample,
)
from qinspect.dpu.dpu_graph import (
    CLE_GROUPED_TAIL,
    CONV_OPS,
    DpuGraph,
    Node,
    Slot,
    float_layers,
    quantizes_model_input,
)
from qinspect.dpu.executor import Evaluator
from qinspect.dpu.fixed_point import Round
from qinspect.dpu.options import option_text
from qinspect.io.labels import ClassLabels

MIN_SEVERITY_DB = 0.1
_KIND_ORDER = {k: i for i, k in enumerate(fnd.KINDS)}
_CLASS_OF_OP = {"conv2d": "Conv2D", "depthwise_conv2d": "DepthwiseConv2D",
                "conv2d_transpose": "Conv2DTranspose", "dense": "Dense"}
_ALIGN_RULES = {"align_concat": "concat", "align_pool": "pool"}
_ALWAYS = ("cpu_fallback", "alignment", "hw_vs_sim")
EXPLAINED_TARGET = 0.8  # the accumulated-rounding finding names adders until the budget explains this share
ROUNDING_MAX_ADDERS = 12  # rounding adders the noise budget may name
BUDGET_MAX_STEPS = 14  # fixes the noise budget's forward selection may take
BUDGET_MIN_STEP = 0.005  # a fix joins the budget only when it removes this much more output error power
# What-if samples by default: as many as this much sensitivity work allows (about what 16 samples of a
# MobileNetV2 at 224x224 cost), between SENS_MIN and SENS_MAX. On a small model 16 samples are too few:
# the demo's 16 samples x 7 classes moved one layer's keep-float gain from +2.8 dB to +0.8 dB at 32 samples.
SENS_WORK_BUDGET = 6.4e9
SENS_MEMORY_BUDGET = 2 * 2**30
SENS_MIN, SENS_MAX = 16, 64
ROUGH_SE_DB = 1.0  # an output SQNR standard error past this gets a note


@dataclass
class Diagnosis:
    """Ranked findings, per-layer sensitivity and how they were measured."""

    findings: list[Finding]
    sensitivity: list[LayerSensitivity]
    output: ErrorStats
    measured_on: str
    n_samples: int
    n_sens_samples: int = 0
    mode: str = "sim"
    notes: list[str] = field(default_factory=list)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    explained: float | None = None  # share of the output error power the findings' fixes remove
    advice: list[dict[str, Any]] = field(default_factory=list)  # measured rows (qinspect.analysis.advisor)
    top1_agreement: float | None = None  # int8 against float arg-max, outputs with several classes
    accuracy: dict[str, Any] | None = None  # with labels: float and int8 top-1 accuracy
    constant_output: str | None = None  # why the output SQNR measures nothing (a dead or constant output)
    near_tie_warning: str | None = None  # when ties weigh on top1_agreement (float near ties, int8 exact ties)
    top1_rests_on_near_ties: bool = False  # float near ties are so many that top1_agreement says little
    output_se_db: float = math.nan  # the output SQNR's standard error over the samples (jackknife)
    explained_se: float | None = None  # explained's standard error over the samples (from its set's gain)
    # Models with several outputs: each output's own figures (qinspect.analysis.outputs), which of them
    # the diagnosis weighs (all unless it was focused on some), and the note when the pooled figure hides one.
    outputs: list[OutputFigure] = field(default_factory=list)
    weighed_outputs: list[str] = field(default_factory=list)  # float-model layer names
    hidden_output_warning: str | None = None

    def worst_by_layer(self) -> dict[str, Finding]:
        """Each layer's highest-ranked finding (for a badge on the layer's row in a tree)."""
        worst: dict[str, Finding] = {}
        for f in self.findings:  # already ranked: the first one seen for a layer is its worst
            worst.setdefault(f.layer, f)
        return worst

    def for_layer(self, layer: str) -> list[Finding]:
        """The findings of one layer (float-model name or emulator node name), in rank order."""
        return [f for f in self.findings
                if f.layer == layer or f.evidence.get("node", {}).get("value") == layer]

    def to_dict(self) -> dict[str, Any]:
        """The ``qinspect diagnose --json`` structure (strict JSON: non-finite numbers as strings)."""
        return json_safe(
            {
                "measured_on": self.measured_on,
                "mode": self.mode,
                "samples": self.n_samples,
                "sensitivity_samples": self.n_sens_samples,
                "output_sqnr_db": ev(self.output.sqnr_db, "SQNR of the fully quantized model's output(s) "
                                                          "against float, sums over the weighed outputs "
                                                          "(output.weighed) and samples"),
                "output": {"sqnr_db": self.output.sqnr_db, "sqnr_se_db": self.output_se_db,
                           "sqnr_se_how": "standard error over the measured samples: leave-one-out jackknife of "
                                          "the output SQNR (remedies' measured_gain_se_db: the same for their gain, "
                                          "paired on the same samples)",
                           "top1_agreement": self.top1_agreement,
                           "near_tie_warning": self.near_tie_warning,
                           "top1_rests_on_near_ties": self.top1_rests_on_near_ties,
                           "weighed": self.weighed_outputs,
                           "per_output": [f.to_dict() for f in self.outputs],
                           "hidden_output_warning": self.hidden_output_warning,
                           **({"accuracy": self.accuracy} if self.accuracy is not None else {})},
                "explained": self.explained,
                "explained_se": self.explained_se,
                "explained_how": "measured: the share of the output's error power removed when the fixes of the "
                                 "findings carrying evidence.budget_share are applied together (chosen by forward "
                                 "selection, each step measured; fixes overlap, so findings' own noise_share do "
                                 "not add up), plus quantizer-option remedies' own shares",
                "advice": self.advice,
                "findings": [f.to_dict() for f in self.findings],
                "sensitivity": [s.to_dict() for s in self.sensitivity],
                "sensitivity_how": HOW,
                "severity_how": "output SQNR (dB) the finding's remedy gains, measured in the emulator (remedy."
                                "measured_gain_db); an estimate only where it has no measured remedy "
                                "(see its severity_basis)",
                "adjustments": self.adjustments,
                "notes": self.notes,
            }
        )


def _batches(inputs: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in inputs.items()}


def _head(inputs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v[:n], np.float32) for k, v in inputs.items()}


def float_values(graph: DpuGraph, inputs: dict[str, np.ndarray], batch_size: int,
                 keep: set[str] | None = None) -> dict[str, np.ndarray]:
    """The float (reference) output of the nodes in ``keep`` (all when None) over all samples."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in _batches(inputs, batch_size):
        for name, v in Evaluator(graph, "float").run(batch, keep=keep).items():
            parts.setdefault(name, []).append(v.float())
    return {k: np.concatenate(v) for k, v in parts.items()}


def _mode(graph: DpuGraph, slot: Slot, default: Round) -> tuple[Round, bool]:
    spec = graph.slots.get(slot)
    if spec is None:
        return default, False
    return Round(spec.round_mode), bool(spec.narrow_range)


def _cle_state(graph: DpuGraph, node: Node) -> str:
    names = set(node.origin) | {node.name}
    for rw in graph.rewrites:
        if rw.kind == "source":
            return "unknown: weights read from a quantized model"
        if rw.kind == CLE_GROUPED_TAIL and names & set(rw.layers):
            return "not applied: the pair ends in a grouped Conv2D, where the quantizer's CLE stops with an error"
        if rw.kind == "cross_layer_equalization":
            if not rw.layers:
                return "disabled"
            if names & set(rw.layers):
                return "applied"
    if node.op not in ("conv2d", "depthwise_conv2d"):
        return "not applicable: CLE pairs only Conv2D / DepthwiseConv2D layers"
    return ("not applicable: none of the quantizer's CLE patterns matched (conv -> conv, conv -> "
            "Activation('relu' or 'linear') -> conv, conv -> ReLU (uncapped) -> conv, the conv before a single "
            "consumer; ReLU -> ZeroPadding2D -> conv only where max_value reads '0', which no ReLU has)")


def _tag(f: Finding, node: Node) -> Finding:
    f.evidence = {"node": ev(node.name, "the emulator node (quantized model's layer name)"),
                  "origin": ev(list(node.origin), "float model layers this node comes from"), **f.evidence}
    return f


def _pack_sqnr(stats: list[ErrorStats]) -> float:
    ref2 = sum(s.sum_ref2 for s in stats)
    d2 = sum(s.sum_d2 for s in stats)
    if d2 == 0:
        return math.inf
    if ref2 == 0:
        return -math.inf
    return 10.0 * math.log10(ref2 / d2)


def default_sens_samples(graph: DpuGraph, available: int) -> int:
    """How many samples the sensitivity and what-if runs use by default: as many as SENS_WORK_BUDGET of
    per-layer walks and SENS_MEMORY_BUDGET of walk values allow, at least SENS_MIN (16) and at most
    SENS_MAX (64), no more than ``available`` (the same with or without the walks, so the output figures
    do not depend on them)."""
    values = sum(math.prod(int(d) for d in (n.output_shape or [])[1:] if d) for n in graph.nodes)
    # the what-if runs hold every sample's float and int8 walks and one partial walk, as float32
    fit = min(SENS_WORK_BUDGET // max(1, work_per_sample(graph)), SENS_MEMORY_BUDGET // max(1, 12 * values))
    wanted = int(min(SENS_MAX, max(SENS_MIN, fit)))
    return max(1, min(available, wanted))


def diagnose(
    graph: DpuGraph,
    data: dict[str, np.ndarray],
    calib: dict[str, np.ndarray] | None = None,
    *,
    data_label: str = "calibration",
    max_samples: int = 64,
    sens_samples: int | None = None,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
    mode: str = "sim",
    memory_budget: float = 2**30,
    external_positions: bool | None = None,
    with_sensitivity: bool = True,
    step: Callable[[str, int, int], None] | None = None,
    labels: np.ndarray | ClassLabels | None = None,
    rebuild: Callable[[dict[str, Any]], DpuGraph] | None = None,
    outputs: Sequence[str] | None = None,
) -> Diagnosis:
    """Diagnose ``graph`` on ``data``; ``calib`` (when ``data`` is evaluation data) enables coverage.

    ``memory_budget`` (bytes) bounds the float tensors kept for the findings: fewer samples are used
    (and a note says so) when ``max_samples`` of them would not fit. ``external_positions``: the
    positions came from elsewhere (a quantized.h5 or positions JSON), so no log of the constraint pass
    exists and concat alignment is inferred (None: decide from the graph, True for a quantized.h5).

    ``mode``: ``"sim"`` (the quantizer's float32 simulation, fast) or ``"int"`` (the DPU integer
    pipeline), see :func:`qinspect.analysis.sensitivity.sensitivity`.

    ``with_sensitivity=False`` skips the per-layer what-if walks (the costly part on big models): no
    sensitivity rows and no noise budget; candidates are picked by their local cost (``severity_basis``
    says so) and their remedies are still tried and measured.
    ``rebuild(option_changes)`` (optional) returns the graph rebuilt and recalibrated with some quantizer
    options changed: with it, quantizer options are tried as remedies (:mod:`qinspect.analysis.option_remedies`).
    ``labels`` (one class index, or a one-hot row, per sample of ``data``): the float and int8 models'
    top-1 accuracy on the sensitivity samples (the first classification output); a
    :class:`~qinspect.io.labels.ClassLabels` also says where they come from (``accuracy["labels"]``).
    ``progress(text)`` is told each stage; ``step(text, done, total)`` each stage and, during the
    sensitivity pass, the work done (``total`` 0 for a stage with no measure of its work).
    ``outputs`` (node names, :func:`qinspect.analysis.outputs.resolve_outputs`): weigh only these model
    outputs; everything is measured on them and the layers they depend on. Each output's own figures
    are given whatever the choice, when the model has several.
    """
    def say(text: str) -> None:
        if progress is not None:
            progress(text)
        if step is not None:
            step(text, 0, 0)

    whole = graph
    graph = focused(graph, outputs)
    if rebuild is not None and graph is not whole:
        rebuild = _focused_rebuild(rebuild, graph.outputs)
    n_total = len(next(iter(data.values())))
    sample = _head(data, max_samples)
    n = len(next(iter(sample.values())))
    if sens_samples is None:
        sens_samples = default_sens_samples(graph, n)
    sens_sample = _head(data, min(sens_samples, max_samples))
    n_sens = len(next(iter(sens_sample.values())))
    notes: list[str] = []
    notes += [f"WARNING: {caveat}" for caveat in graph.caveats()]
    if n < n_total:
        notes.append(f"findings measured on the first {n} of {n_total} {data_label} samples")
    notes.append(f"sensitivity, what-if runs and the accumulated/isolated errors they start from measured on the "
                 f"first {n_sens} {data_label} samples")
    shared = {tuple(g) for g in graph.shared_groups().values()}
    if graph is not whole:
        left_out = [output_layer(whole, o) for o in whole.outputs if o not in graph.outputs]
        notes.append(f"weighs only the output(s) {', '.join(output_layer(whole, o) for o in graph.outputs)}: every "
                     f"figure, sensitivity and remedy is measured on them and the layers they depend on "
                     f"({', '.join(left_out)} left out)")
    if shared:
        notes.append(f"{len(shared)} shared layer(s) called more than once: each call is its own node, all calls "
                     "of a layer share its weights and positions (as the quantizer's one wrapper per layer)")
    what = f"sensitivity over {n_sens} samples" if with_sensitivity else f"errors over {n_sens} samples"
    say(what)
    sens = sensitivity(graph, sens_sample, batch_size=max(batch_size, n_sens), mode=mode, whatifs=with_sensitivity,
                       progress=None if step is None else (lambda done, total: step(what, done, total)))
    if not with_sensitivity:
        notes.append("sensitivity skipped (no per-layer what-if runs): no sensitivity rows and no noise budget; "
                     "candidate causes are picked by their tensor's local cost, then each is tried in the emulator "
                     "as usual")
    notes.append("errors measured with the quantizer's float32 simulation (equal to the DPU integer pipeline "
                 "wherever partial sums stay below 2^24 LSB)" if mode == "sim" else
                 "errors measured with the DPU integer pipeline")
    by_node = sens.by_layer()
    noise: dict[str, float] = {k: s.only_noise_share for k, s in by_node.items()}
    out_values = sens.output.n
    spread = sens.output_se_db
    if out_values < 100:
        notes.append(f"the output SQNR rests on only {out_values} output values; sensitivity figures are rough")
    elif spread > ROUGH_SE_DB:
        notes.append(f"the output SQNR varies from sample to sample: {sens.output.sqnr_db:.1f} dB with a standard "
                     f"error of {spread:.1f} dB over {n_sens} samples; gains below about {2 * spread:.1f} dB may "
                     "not hold on other data (more samples: --sens-samples)")
    constant = next(iter(constant_output_notes(graph, sens.runner)), None)
    if constant:
        notes.append(constant)
    # The findings read the float output of every quantized node and the input of every conv.
    needed = {n.name for n in graph.nodes if n.out_slot is not None}
    needed |= {n.inputs[0] for n in graph.nodes if n.op in CONV_OPS and n.inputs}
    per_sample = sum(sens.accumulated[k].n for k in needed if k in sens.accumulated) * 4 / max(n_sens, 1)
    n_find = max(1, min(n, int(memory_budget // max(per_sample, 1))))
    if n_find < n:
        notes.append(f"findings measured on {n_find} samples, not {n}: their float tensors "
                     f"({per_sample / 2**20:.0f} MiB a sample) must fit in {memory_budget / 2**30:.1f} GiB")
        sample = _head(sample, n_find)
        n = n_find
    say("float tensors")
    values = float_values(graph, sample, batch_size, keep=needed)
    calib_ranges = None
    calib_values = None
    # every sample the positions were calibrated on: its ranges, its outlier samples, calibrating again
    recal = Recalibration(graph, calib if calib is not None else data, batch_size)
    if calib is not None:
        say("calibration ranges")
        calib_ranges = recal.ranges()
        # Calibration-side causes (outliers that set a position) live in the calibration data.
        calib_values = float_values(graph, _head(calib, n), batch_size,
                                    keep={x.name for x in graph.nodes if x.out_slot is not None})
    found: list[Finding] = []
    fixes: dict[int, list[rem.Fix]] = {}
    for node in quantizing_nodes(graph):
        found.extend(_activation_findings(graph, node, values, noise, calib_ranges, data_label, calib_values))
        sp = _spread_finding(graph, node, values, noise)
        if sp is not None:
            found.append(sp)
    say("alignment and constraints (what-if runs)")
    if external_positions is None:
        external_positions = any(rw.kind == "source" for rw in graph.rewrites)
    found.extend(_adjustment_findings(graph, sens_sample, values, sens, noise, max(batch_size, n_sens), mode,
                                      infer=external_positions and not graph.adjustments, fixes=fixes))
    found.extend(_cpu_findings(graph, noise))
    say("DPU integers against the float32 simulation")
    hw = hw_vs_sim_finding(sim_vs_dpu(graph, [sens_sample]),
                           {x.name: display_name(x) for x in graph.nodes})
    if hw is not None:
        found.append(hw)
    say("outlier samples and calibration again (every calibration sample)")
    found.extend(attach_outlier_samples(graph, found, recal, noise, _tag, display_name))
    by_data = data_fixes(graph, found, recal, notes, calib is None, n_sens, data if calib is not None else None)
    for f in found:
        if id(f) in by_data:
            fixes[id(f)] = by_data[id(f)] + rem.fixes_for(graph, f)
    among = measured_outliers_note(found, sens.output_signal, sens.output_noise) if calib is None else None
    if among:
        notes.append(among)
    found.extend(_growth_findings(graph, sens, noise, found))
    say("the quantizer's function replacements (sigmoid, swish)")
    changed = function_change_finding(graph, sens_sample, max(batch_size, n_sens), sens.output_signal,
                                      sens.output_noise, display_name)
    if changed is not None:
        replaced = [n.name for n in replaced_nodes(graph)]
        fixes[id(changed)] = [rem.float_fix(replaced, {}, graph)]
        # the error those layers add is the replacement's: not also a growth of their own
        own = set(fixes[id(changed)][0].float_nodes)
        found = [f for f in found if not (f.kind == "error_growth" and rem.node_of(f) in own)]
        found.append(changed)
    say("trying each remedy (what-if runs)")
    options = None if rebuild is None else OptionTrials(rebuild, sens_sample, sens.output.sqnr_db, mode,
                                                        sens.output_noise)
    kept, explained, explained_se = _measure(graph, sens, found, fixes, sens_sample, max(batch_size, n_sens),
                                             mode, notes, options)
    remedied = [f for f in kept if f.remedy is not None and isinstance(f.remedy.get("measured_sqnr_db"), float)]
    top = max(remedied, key=lambda f: f.remedy["measured_sqnr_db"], default=None)
    if not with_sensitivity and math.isfinite(sens.output.sqnr_db) and sens.output.sqnr_db < fnd.GROWTH_MAX_SQNR_DB \
            and (top is None or top.remedy["measured_sqnr_db"] - sens.output.sqnr_db < 1.0):
        # a poor model with nothing that explains it read as if little were wrong
        notes.append(f"the output SQNR is low ({sens.output.sqnr_db:.1f} dB) and no finding listed recovers as much "
                     "as 1 dB of it: without sensitivity there is no noise budget, no accumulated-rounding finding "
                     "and no input-precision ceiling; run without --no-sensitivity to see where the error comes from")
    best = None if top is None else (f"the {top.kind.replace('_', ' ')} finding at {top.layer}",
                                     top.remedy["measured_sqnr_db"])
    rows = sens.layers or _input_only_rows(graph, sens_sample, max(batch_size, n_sens), mode)
    notes.extend(input_ceiling_notes(graph, rows, sens_sample, display_name, _inputs_moved(graph, kept), best,
                                     sens.output_se_db))
    kept.sort(key=_rank_key)
    agree, compared = sens.top1
    accuracy = _accuracy(graph, sens, labels) if labels is not None else None
    ties = _top1_ties(graph, sens)
    figures = _output_figures(whole, graph, sens, sens_sample, mode)
    sens.runner = None  # the walks' memory goes now
    return Diagnosis(
        findings=kept,
        sensitivity=sens.layers,
        output=sens.output,
        measured_on=data_label,
        mode=mode,
        n_samples=n,
        n_sens_samples=n_sens,
        notes=notes,
        adjustments=[a.to_dict() for a in graph.adjustments],
        explained=explained,
        explained_se=explained_se,
        top1_agreement=agree / compared if compared else None,
        accuracy=accuracy,
        near_tie_warning=ties.warning if ties is not None else None,
        top1_rests_on_near_ties=ties is not None and ties.rests_on_near_ties,
        output_se_db=sens.output_se_db,
        outputs=figures,
        weighed_outputs=[output_layer(whole, o) for o in graph.outputs],
        hidden_output_warning=hidden_output_warning(figures, sens.output.sqnr_db,
                                                    agree / compared if compared else None),
        advice=_advice(graph, kept, sens.output.sqnr_db, agree / compared if compared else None),
        constant_output=constant,
    )


def _output_figures(whole: DpuGraph, graph: DpuGraph, sens: SensitivityResult, sample: dict[str, np.ndarray],
                    mode: str) -> list[OutputFigure]:
    """Each output's own figures, for a model with several: from the sensitivity pass's walks when they
    hold every output (the whole model, all samples in one batch), else from a float and a quantized walk
    of the whole model."""
    if len(whole.outputs) < 2:
        return []
    if sens.runner is not None and graph is whole:
        return output_figures(whole, sens.runner.ref, sens.runner.base)
    return measure_outputs(whole, sample, mode, weighed=graph.outputs)


def _focused_rebuild(rebuild: Callable[[dict[str, Any]], DpuGraph],
                     outputs: list[str]) -> Callable[[dict[str, Any]], DpuGraph]:
    """``rebuild`` whose graphs keep the diagnosis's choice of outputs."""
    return lambda change: focused(rebuild(change), outputs)


def _top1_ties(graph: DpuGraph, sens: SensitivityResult) -> Top1Tally | None:
    """The ties under top-1 agreement (analysis.decisions): its warning and whether it rests on near ties."""
    run = sens.runner
    if run is None:
        return None
    tally = Top1Tally()
    for name in graph.outputs:
        pair = decision_pair(decision_kind(graph, name), run.ref[name].float(), run.base[name].float())
        if pair is not None:
            tally.update(*pair)
    return tally


def _accuracy(graph: DpuGraph, sens: SensitivityResult, labels: np.ndarray | ClassLabels) -> dict[str, Any] | None:
    """Top-1 accuracy of the float and the int8 model against ``labels`` (first output with classes)."""
    origin = labels.origin if isinstance(labels, ClassLabels) else None
    labels = labels.values if isinstance(labels, ClassLabels) else labels
    run = sens.runner
    if run is None:
        return None
    for name in graph.outputs:
        pair = decision_pair(decision_kind(graph, name), run.ref[name].float(), run.base[name].float())
        if pair is None or pair[0].ndim != 2:
            continue
        ref, test = pair
        n = len(ref)
        y = np.asarray(labels)[:n]
        y = np.argmax(y, axis=-1) if y.ndim == 2 else y.astype(np.int64)
        out = {"float": float(np.mean(np.argmax(ref, -1) == y)), "int8": float(np.mean(np.argmax(test, -1) == y)),
               "samples": n, "output": name}
        return {**out, "labels": origin} if origin else out
    return None


def _advice(graph: DpuGraph, kept: list[Finding], sqnr: float, top1: float | None) -> list[dict[str, Any]]:
    """The measured ways to quantize found on the way: as calibrated, each quantizer-option remedy (a
    ``quantize_model`` call too), each recalibration (on the evaluation data, or without outlier samples)
    and each keep-float remedy."""
    from qinspect.analysis.advisor import AdviceRow, command, rank_key

    stops = graph.quantizer_stop_note()  # the quantizer stops under these options unless CLE is switched off
    rows = [AdviceRow({}, [], sqnr, top1, 0, command({}, []), stops)]
    batch = {} if graph.options is None else {"calib_batch_size": graph.options.calib_batch_size}
    seen: set[str] = set()
    for f in kept:
        second = (f.evidence.get("option_remedy") or {}).get("value")
        for r in ([second] if isinstance(second, dict) else []) + [f.remedy]:
            if r is not None and r.get("kind") == "quantizer_option" and isinstance(r.get("options"), dict):
                options = {**batch, **r["options"]}
                call = command(options, [])
                if call not in seen:  # one option can cure several findings
                    seen.add(call)
                    rows.append(AdviceRow(options, [], float(r["measured_sqnr_db"]), r.get("top1_agreement"), 0,
                                          call, None if options.get("include_cle") is False else stops))
        r = f.remedy
        if r is not None and r.get("kind") == "quantizer_option" and isinstance(r.get("options"), dict):
            continue
        if r is not None and r.get("kind") == "recalibrate" and f.fix is not None:
            # a data remedy is a quantize_model call too: on the data in use, or without the outlier samples
            data = "evaluation" if f.kind == "coverage" else None
            exclude = [int(i) for i in (f.evidence.get("outlier_samples") or {}).get("value") or []] \
                if data is None else []
            if data is None and not exclude:
                continue
            on = r.get("measured_on") or ("the evaluation samples it calibrates on (an upper bound)" if data else "")
            rows.append(AdviceRow({}, [], float(r["measured_sqnr_db"]), r.get("top1_agreement"), 0,
                                  command({}, [], calib_exclude=exclude, calib_data=data), stops, data, exclude, on))
            continue
        if r is None or r.get("kind") != "keep_float" or f.fix is None:
            continue
        # ignore_layers names the float model's layers, every one a kept node was built from (a conv and the
        # BatchNorm folded into it), as the advisor does
        layers = float_layers(graph, f.fix.float_nodes)
        moved = sum(graph[n].device == "DPU" for n in f.fix.float_nodes)  # a CPU softmax was on the CPU already
        # float(): the remedy's JSON form holds an infinite SQNR as the string "inf"
        rows.append(AdviceRow({}, layers, float(r["measured_sqnr_db"]), r.get("top1_agreement"), moved,
                              command({}, layers, graph.keras_names), stops))
    # best first (an exact, infinite figure leads; an undefined one trails; a way the quantizer cannot take last)
    rows.sort(key=rank_key, reverse=True)
    return [row.to_dict() for row in rows]


def _inputs_moved(graph: DpuGraph | None, kept: list[Finding]) -> dict[str, str]:
    """Model-input quantizers whose position a kept finding's remedy changes (a recalibration without outlier
    samples, a coverage fix), each with the first such finding's title: the input's rounding measured at the
    calibrated position is then no floor for that remedy."""
    if graph is None:
        return {}
    slots = {n.out_slot: n.name for n in graph.nodes if quantizes_model_input(graph, n) and n.out_slot is not None}
    out: dict[str, str] = {}
    for f in kept:
        if f.remedy is None or f.fix is None:
            continue
        for slot in f.fix.positions:
            if slot in slots:
                out.setdefault(slots[slot], f"the {f.kind.replace('_', ' ')} finding at {f.layer}")
    return out


def _joint_fix(fixes: list[rem.Fix]) -> rem.Fix | None:
    """Several fixes applied at once (positions merged, float layers joined)."""
    if not fixes:
        return None
    positions: dict[Any, int] = {}
    floats: list[str] = []
    for fx in fixes:
        positions.update(fx.positions)
        floats += [n for n in fx.float_nodes if n not in floats]
    # A recalibration without outlier samples is measured without them (its positions are for data like
    # the rest, and clip those samples hard): joined, it keeps them out, or the set would measure it on the
    # very samples it drops and never pick it.
    exclude = tuple(sorted({i for fx in fixes for i in fx.exclude}))
    measured_on = "; ".join(dict.fromkeys(fx.measured_on for fx in fixes if fx.exclude and fx.measured_on))
    return rem.Fix("joint", "every cause's remedy at once", positions, tuple(floats), exclude, measured_on)


def _noise_budget(kept: list[Finding], rounding: Finding | None, sens: SensitivityResult, trial: rem.Trial,
                  labels: dict[str, str], options_share: float,
                  options_se: float | None = None, notes: list[str] | None = None) -> tuple[float, float | None]:
    """The measured noise budget: ``explained`` and the accumulated-rounding finding's named layers.

    Fixes do not add up (two fixes can remove the same error, and one can undo what another gained), so
    the budget is built by forward selection, every step measured: from the kept causes' fixes and the
    worst rounding adders kept float one at a time, take the one whose joint application removes the most
    output error power, until EXPLAINED_TARGET or no candidate helps. ``explained`` is that set's measured
    share (plus the options' own shares, which these walks cannot replay). The rounding finding names the
    adders selected; its share is what they add to the set. Sets the rounding finding's fields. Returns
    ``explained`` and its standard error over the samples (from the set's gain, None where unknown)."""
    causes: list[tuple[Finding | None, rem.Fix]] = [(f, f.fix) for f in kept if f.fix is not None]
    by_layer = {s.layer: s.node for s in sens.layers}
    graph = getattr(trial, "graph", None)  # floats every node of a layer, as ignore_layers does
    rounding_cands: list[tuple[Finding | None, rem.Fix]] = []
    if rounding is not None:
        # each adder alone, and the worst k together (errors of neighbouring layers can cancel, so a
        # group can remove what no single layer does)
        worst = [by_layer[a] for a in rounding.affects if a in by_layer]
        rounding_cands += [(None, rem.float_fix([n], labels, graph)) for n in worst]
        rounding_cands += [(None, rem.float_fix(worst[:k], labels, graph)) for k in range(2, len(worst) + 1)]
    chosen: list[rem.Fix] = []
    picked: list[tuple[Finding | None, rem.Fix, float]] = []
    share = 0.0
    measured: rem.Remedy | None = None  # the chosen set's own measurement
    # The causes first, then the rounding they leave: keeping most of the model float removes any error,
    # a saturating layer's too, so in one pool it took the share of the cause that made that error.
    for cands in (causes, rounding_cands):
        while cands and share < EXPLAINED_TARGET and len(picked) < BUDGET_MAX_STEPS:
            best = None
            for i, (_f, fx) in enumerate(cands):
                joint = _joint_fix([*chosen, fx])
                assert joint is not None
                result = trial.run(joint)
                s = rem.noise_share(result.measured_gain_db)
                if best is None or s > best[0]:
                    best = (s, i, result)
            if best is None or best[0] <= share + BUDGET_MIN_STEP:
                break
            f, fx = cands.pop(best[1])
            chosen.append(fx)
            picked.append((f, fx, best[0] - share))
            share, measured = best[0], best[2]
    # An option's share was measured on the model rebuilt under it, the set's on the model as given: they do
    # not add (the set's rounding may be the very error the option removes). The larger one stands, a lower
    # bound of what both together remove.
    explained = min(1.0, max(share, options_share))
    if notes is not None and measured is not None and measured.fix is not None and measured.fix.exclude \
            and share >= options_share:
        notes.append(f"the share of the error the findings' fixes remove (explained) is measured on "
                     f"{measured.fix.measured_on or 'the measured samples but those a fix leaves out'}, as the "
                     "recalibration among them is")
    se = None
    if options_share > share:
        se = options_se
    elif measured is not None and measured.gain_se_db is not None and math.isfinite(measured.measured_gain_db):
        se = _share_se(measured.measured_gain_db, measured.gain_se_db)
    for f, _, d in picked:
        if f is not None:
            f.evidence["budget_share"] = ev(d, "output error power this finding's fix adds to the noise budget's "
                                               "jointly measured set (0 or absent: not in it)")
    if rounding is not None:
        adders = list(dict.fromkeys(n for f, fx, _ in picked if f is None for n in fx.float_nodes))
        if adders:
            # one list, in one order, everywhere the finding names them: the largest keep-float gain first
            row = {sl.layer: sl for sl in sens.layers}
            names = sorted(dict.fromkeys(labels.get(n, n) for n in adders),
                           key=lambda x: -_finite(row[x].keep_float_gain_db) if x in row else math.inf)
            added = sum(d for f, _, d in picked if f is None)
            alone = trial.run(rem.float_fix(adders, labels, graph))
            rounding.affects = names
            rounding.layer = names[0]
            rounding.noise_share = added
            rounding.evidence["budget_share"] = ev(added, "output error power these layers add to the noise "
                                                          "budget's jointly measured set")
            rounding.evidence["share"] = ev(added, "output error power these layers' rounding accounts for, measured: "
                                                   "what keeping them float adds to the noise budget's other fixes")
            rounding.evidence["adders"] = ev(
                [{"layer": x, "keep_float_gain_db": row[x].keep_float_gain_db,
                  "only_noise_share": row[x].only_noise_share} for x in names if x in row],
                "the layers the noise budget keeps float together to remove this rounding (its jointly measured "
                "set), the largest keep-float gain alone first; one may gain nothing alone (zero or negative) "
                "and still count with the others")
            gaining = [x for x in names if x in row and _finite(row[x].keep_float_gain_db) > 0.05]
            others = [x for x in names if x not in gaining]
            amps = [a["layer"] for a in rounding.evidence.get("amplifiers", {}).get("value") or []]
            unlike = rem.OPTION_APART if options_share > 0 else ""
            if unlike:
                rounding.evidence["option_apart"] = ev(True, "the shares are of the model as quantized; the "
                                                             "quantizer option's was measured on its rebuilt model")
            share = f"{100 * added:.2g}%" if 100 * added < 10 else f"{100 * added:.0f}%"  # as the sentence says it
            by = (f", added most by {', '.join(gaining)}" if gaining else "") + (
                (", and by " if gaining else ", by ") + ", ".join(others)
                + " (nothing gained kept float alone: they count only with the others)" if others else "")
            rounding.advice = (f"{share} of the output error is rounding the causes above leave{unlike}{by}"
                               + (f" and amplified by {', '.join(amps)}" if amps else "")
                               + ": keep the worst adders in float, or quantize them with more bits (the quantizer's "
                               "fast finetuning, include_fast_ft=True, adjusts weights to the rounding and is not "
                               "emulated here)." + rem.each_alone_note(rounding)
                               # the input's rounding was measured at the calibrated position, which a cause's
                               # fix moves: no ceiling then, and no retraining to advise
                               + ("" if _inputs_moved(graph, kept) else rem.input_rounding_note(rounding)))
            rounding.remedy = alone.to_dict()
            rounding.fix = alone.fix
            rounding.severity_db = alone.measured_gain_db
    return explained, se


def _share_se(gain_db: float, gain_se_db: float) -> float:
    """The standard error of the noise share ``1 - 10^(-gain/10)`` a gain removes: its slope in the gain
    carries the gain's error over."""
    return math.log(10) / 10 * 10 ** (-gain_db / 10) * gain_se_db


def _stands_out(f: Finding) -> bool:
    """A measured finding worth listing: its gain reaches MIN_SEVERITY_DB; an error growth (a symptom, a layer
    adding error) only when its gain also stands out of its spread over the samples (a healthy model's
    +1.25 ± 1.45 dB is no cause)."""
    if QUANTIZER_STOPS in f.evidence:  # the options as given are no real run: said whatever the gain
        return True
    # an undefined gain (inf - inf on a constant output) is no measured gain: it ranked first as "n/a"
    if math.isnan(f.severity_db) or f.severity_db < MIN_SEVERITY_DB:
        return False
    spread = (f.remedy or {}).get("measured_gain_se_db") or 0.0
    return f.kind != "error_growth" or f.severity_db >= spread


def _merge_option_cures(measured: list[Finding]) -> list[Finding]:
    """Findings cured by one quantizer option are one root cause: the first keeps it, the others' layers
    join its ``affects`` (one option counted once in the noise budget)."""
    by_action: dict[str, Finding] = {}
    out = []
    for f in measured:
        r = f.remedy or {}
        if r.get("kind") != "quantizer_option":
            out.append(f)
            continue
        first = by_action.get(r["action"])
        if first is None:
            by_action[r["action"]] = f
            out.append(f)
        elif f.layer not in first.affects and f.layer != first.layer:
            first.affects.append(f.layer)
    return out


def _measure(graph: DpuGraph, sens: SensitivityResult, found: list[Finding], fixes: dict[int, list[rem.Fix]],
             sample: dict[str, np.ndarray], batch_size: int, mode: str,
             notes: list[str], options: OptionTrials | None = None
             ) -> tuple[list[Finding], float | None, float | None]:
    """Group root causes, try the fixes of the costliest candidates, keep what a measured gain supports.

    cpu_fallback and alignment are kept whatever their cost: their own triggers are strict and they are
    structural facts about the deployed model a user must know. Returns the findings, ``explained`` and
    its standard error over the samples (None where unknown).
    """
    for f in found:
        fx = fixes.get(id(f)) or rem.fixes_for(graph, f)
        if fx:
            fixes[id(f)] = fx
    found = rem.group_root_causes(graph, found, fixes)
    # Findings a quantizer option may cure are tried with it even when no emulator-level fix applies.
    optional = {id(f) for f in found if options is not None and candidate_options(graph, f)}

    def fallback(fx: rem.Fix) -> tuple[ErrorStats, tuple[int, int]]:
        return what_if(graph, sample, fx.positions, fx.float_nodes, batch_size, mode), (0, 0)

    trial = rem.Trial(graph, sens, fallback, sample, mode)
    candidates = sorted((f for f in found if id(f) in fixes or id(f) in optional),
                        key=lambda f: -_finite(f.severity_db))
    measured = candidates[:rem.MAX_MEASURED]
    untried = len(candidates) - len(measured)
    last_estimate = max(0.0, _finite(measured[-1].severity_db)) if measured else 0.0
    done: dict[tuple, rem.Remedy] = {}
    not_clipping: set[int] = set()  # saturation findings whose own fix (no clipping) gains nothing
    options_tried: set[str] = set()  # quantizer options measured as some finding's remedy
    for f in measured:
        tried = [] if options is None else options.remedies(graph, f)
        for fx in fixes.get(id(f), []):
            key = (tuple(sorted(fx.positions.items())), fx.float_nodes)
            if key not in done:
                done[key] = trial.run(fx)
            tried.append(done[key])
        best = max(tried, key=lambda r: r.measured_gain_db)
        own = next((r for r in tried if r.fix is not None and r.fix.kind == "position"), None)
        if f.kind == "saturation" and own is not None and own.measured_gain_db < MIN_SEVERITY_DB \
                and best.measured_gain_db >= MIN_SEVERITY_DB:
            # The position that clips nothing does not help: clipping is not what this layer loses (keeping
            # it float gains by removing its rounding). Listed as saturation, that gain was credited to
            # clipping and the advice to lower the position made the output worse.
            not_clipping.add(id(f))
            notes.append(f"{f.layer} clips some values, but that is not what it costs: its non-overflow position "
                         f"(no clipping) changes the output SQNR by {own.measured_gain_db:+.2f} dB, so it is not "
                         f"listed as saturation; keeping it float gains {best.measured_gain_db:.2f} dB by removing "
                         "its rounding (the sensitivity rows and advise measure that)")
        rem.attach(f, best)
        if best.options:  # the measured cure is a quantize_model option: the advice leads with it
            f.advice = (f"Quantize with {option_text(best.options)} (the remedy measured below). Otherwise: "
                        f"{f.advice[:1].lower()}{f.advice[1:]}")
        option_tries = [r for r in tried if r.options]
        options_tried.update(r.action for r in option_tries)
        runner_up = max(option_tries, key=lambda r: r.measured_gain_db, default=None)
        if not best.options and runner_up is not None and runner_up.measured_gain_db >= MIN_SEVERITY_DB:
            # The option removes this same error (listed apart, it read as a second cause): said here, with
            # its own figure, beside the larger gain of the remedy below.
            f.evidence["option_remedy"] = ev(runner_up.to_dict(), "the quantize_model option this finding's error "
                                                                   "also yields to, measured the same way")
            f.advice += (f" Measured: quantizing with {option_text(runner_up.options)} gains "
                         f"{runner_up.measured_gain_db:+.2f} dB with no layer left float; the remedy below "
                         f"({best.action}) gains {best.measured_gain_db:+.2f} dB.")
    if untried:
        # the estimates are upper bounds that often run far above what the remedies then measure: both said
        gains = [_finite(f.severity_db) for f in measured]
        below = (f"their estimated costs are below {last_estimate:.2f} dB, the lowest estimate tried"
                 if last_estimate > 0.005 else "none is estimated to cost anything measurable")
        notes.append(f"{untried} further candidate cause{'s were' if untried > 1 else ' was'} not tried in the "
                     f"emulator and {'are' if untried > 1 else 'is'} not listed: {below}; the {len(measured)} tried "
                     f"measured {min(gains):+.2f} to {max(gains):+.2f} dB")
    if options is not None:
        # Options that change the whole model, measured even where no single layer's finding points at them
        # (the loss of skipped CLE pairs is spread over many layers); one already tried for a finding is not
        # repeated.
        tried = {str((f.remedy or {}).get("action")) for f in measured} | options_tried
        names = {x.name: display_name(x) for x in graph.nodes}
        extra = options.model_findings(graph, names, tried)
        measured += extra
        found += extra
    before = {id(f) for f in measured}
    measured = _merge_option_cures(measured)
    dropped = before - {id(f) for f in measured}
    found = [f for f in found if id(f) not in dropped]
    ok = {id(f) for f in measured if _stands_out(f) and id(f) not in not_clipping}
    # error_growth is a symptom where a root cause at the same node explains at least as much
    best: dict[str, float] = {}
    for f in measured:
        if f.kind != "error_growth" and id(f) in ok:
            name = rem.node_of(f) or ""
            best[name] = max(best.get(name, -math.inf), f.severity_db)
    ok -= {id(f) for f in measured if f.kind == "error_growth" and best.get(rem.node_of(f) or "", -math.inf)
           >= f.severity_db}
    ok -= _same_remedy_twice([f for f in measured if id(f) in ok])
    kept = [f for f in found if id(f) in ok or f.kind in _ALWAYS]
    if not sens.layers:
        return kept, None, None
    labels = row_names(quantizing_nodes(graph))
    option_cures = [f for f in kept if (f.remedy or {}).get("kind") == "quantizer_option"]
    best_option = max(option_cures, key=lambda f: f.noise_share or 0.0, default=None)
    options_share = (best_option.noise_share or 0.0) if best_option is not None else 0.0
    options_se = None
    if best_option is not None and (best_option.remedy or {}).get("measured_gain_se_db") is not None:
        options_se = _share_se(best_option.remedy["measured_gain_db"], best_option.remedy["measured_gain_se_db"])
    # A residual worth naming only where the output is noisy (the same bar as error_growth's).
    noisy = sens.output.sqnr_db < fnd.GROWTH_MAX_SQNR_DB
    # the nodes of the layers kept causes are found at (their own error is the cause's; the layers a cause
    # affects stay candidates: the budget tries them only on top of the causes' fixes)
    named = {f.layer for f in kept}
    covered = frozenset(n.name for n in quantizing_nodes(graph) if labels.get(n.name) in named or n.name in named)
    rounding = (rem.rounding_finding(graph, sens, 0.0, labels, top=ROUNDING_MAX_ADDERS, covered=covered)
                if noisy else None)
    explained, explained_se = _noise_budget(kept, rounding, sens, trial, labels, options_share, options_se, notes)
    if rounding is not None and rounding.remedy is not None and rounding.severity_db >= MIN_SEVERITY_DB:
        kept.append(rounding)
    return kept, explained, explained_se


@dataclass
class _InputOnly:
    """The one sensitivity figure the input-ceiling note reads, measured without a sensitivity run."""

    node: str
    only_quantized_sqnr_db: float


def _input_only_rows(graph: DpuGraph, sample: dict[str, np.ndarray], batch_size: int, mode: str) -> list[_InputOnly]:
    """Without sensitivity, each model input's quantization alone (every other node float), one run each:
    the input-precision ceiling was said only with sensitivity, though it costs one float pass."""
    rows = []
    for node in graph.nodes:
        if quantizes_model_input(graph, node):
            others = [n.name for n in graph.nodes if n.op != "input" and n.name != node.name]
            stats = what_if(graph, sample, None, others, batch_size, mode)
            rows.append(_InputOnly(node.name, stats.sqnr_db))
    return rows


def _same_remedy_twice(findings: list[Finding]) -> set[int]:
    """The findings to drop because another one names the same remedy (``id``s). One Keras layer the
    quantizer splits into several nodes (a swish into a hard sigmoid and a multiply, a conv and its
    sigmoid) gave a finding per node, each with the same measured fix and gain: listed twice, counted twice
    in the noise budget, with contradictory figures. The one kept names a cause (not a growth symptom),
    else is the larger; it says where else the error showed."""
    kept: dict[str, Finding] = {}
    drop: set[int] = set()
    for f in sorted(findings, key=lambda f: (f.kind == "error_growth", -_finite(f.severity_db))):
        action = (f.remedy or {}).get("action")
        if action is None:
            continue
        first = kept.setdefault(str(action), f)
        if first is f:
            continue
        drop.add(id(f))
        also = first.evidence.setdefault("also_at", ev([], "other nodes of the model (the same layer split by the "
                                                           "quantizer, or a layer it feeds) whose finding had this "
                                                           "same remedy and gain: listed once, counted once"))
        also["value"].append({"node": rem.node_of(f), "kind": f.kind})
    return drop


def _rank_key(f: Finding) -> tuple[int, float, int]:
    """Severity first; the accumulated-rounding residual after every cause; a CPU layer at the model's edge
    (no DPU round trip), and any CPU layer or shared position costing no measured accuracy, are information
    and go last. Options the quantizer cannot run lead, whatever."""
    sev = f.severity_db if not math.isnan(f.severity_db) else 0.0
    edge = f.kind == "cpu_fallback" and not f.evidence.get("splits_model", {}).get("value", False)
    # a fact of how the model deploys that costs no measured accuracy (a mid-model CPU layer's round trip)
    # is no cause: it goes with the edge CPU layers, after the rounding the causes leave
    fact = f.kind in _ALWAYS and sev < MIN_SEVERITY_DB
    # among those facts, CPU round trips first: a model cut into 41 DPU subgraphs came after 20 shared
    # positions that cost nothing measurable (InceptionResNetV2), past the default --top
    group = (-1 if QUANTIZER_STOPS in f.evidence else 4 if edge else 2 if fact and f.kind == "cpu_fallback"
             else 3 if fact else 1 if f.kind == "accumulated_rounding" else 0)
    return (group, -sev, _KIND_ORDER.get(f.kind, 99))


def _activation_findings(graph: DpuGraph, node: Node, values: dict[str, np.ndarray], noise: dict[str, float],
                         calib_ranges: dict[str, tuple[float, float]] | None, label: str,
                         calib_values: dict[str, np.ndarray] | None = None) -> list[Finding]:
    if node.out_slot is None or node.name not in values:
        return []
    pos = graph.pos(node.out_slot)
    if pos is None:
        return []
    mode, narrow = _mode(graph, node.out_slot, Round.HALF_UP)
    x = values[node.name]
    frac = noise.get(node.name)
    out = []
    layer = display_name(node)
    covered = False
    if calib_ranges is not None and node.name in calib_ranges:
        f = fnd.coverage(layer, x, pos, calib_ranges[node.name], mode, narrow, noise_frac=frac,
                         method=graph.slots[node.out_slot].method)
        if f is not None:
            out.append(_tag(f, node))
            covered = True
    # On evaluation data, values clipped beyond the calibrated range are the coverage finding's.
    f = None if covered else fnd.saturation(layer, x, pos, mode, narrow, noise_frac=frac, data=label)
    if f is not None:
        out.append(_tag(f, node))
    # Outliers that set a position are a calibration-side cause: looked for in the calibration data.
    side = calib_values.get(node.name) if calib_values is not None else None
    f = fnd.outlier_range(layer, x if side is None else side, pos, mode, narrow, noise_frac=frac)
    if f is not None:
        if side is not None:
            in_use = fnd.outlier_range(layer, x, pos, mode, narrow) is not None
            f.evidence["data"] = ev("calibration data" if in_use else "calibration data (outliers absent in use)",
                                    "the outliers are looked for in the calibration data, which set the position")
        if quantizes_model_input(graph, node):
            # no layer of the model makes these values and the DPU reads its input in int8: the remedy is in
            # the data (or the input position), never a retrained clip or a float input
            p_bulk = f.evidence["bulk_position"]["value"]
            f.advice = (f"The model's inputs hold rare outliers that set the input position: calibrate on inputs "
                        f"without them, or clip them in preprocessing (the bulk's position is {p_bulk}); the DPU "
                        "reads its input in int8, so the input cannot stay float.")
        out.append(_tag(f, node))
    scale = graph.channel_scale(node.name)
    if scale is not None:
        # the values a finding quotes are the quantized model's tensor, whose position was chosen on it:
        # CLE scaled its channels, so its ranges are not the capture's own (same for both captures)
        note = (f"values as the int8 model holds them: the float model's output times cross-layer equalization's "
                f"per-channel scales ({float(scale.min()):.3g} .. {float(scale.max()):.3g})")
        for f in out:
            f.evidence["values_as"] = ev(note, "cross-layer equalization rescaled this layer's output channels")
            for key in ("calib_range", "eval_range"):
                if key in f.evidence:
                    f.evidence[key]["how"] += " (of the equalized tensor: see values_as)"
    return out


def _input_rel_error(graph: DpuGraph, node: Node, values: dict[str, np.ndarray]) -> float:
    """Relative error of quantizing the node's input at its position (fake quant of the float input)."""
    if not node.inputs:
        return 0.0
    src = node.inputs[0]
    slot = graph.output_slot(src)
    p = graph.pos(slot)
    if slot is None or p is None or src not in values:
        return 0.0
    mode, narrow = _mode(graph, slot, Round.HALF_UP)
    x = values[src].astype(np.float32)
    from qinspect.dpu.fixed_point import fake_quant

    signal = float(np.dot(x.ravel().astype(np.float64), x.ravel().astype(np.float64)))
    d = (x - fake_quant(x, p, mode, narrow)).ravel().astype(np.float64)
    return float(np.dot(d, d)) / signal if signal > 0 else 0.0


def _spread_finding(graph: DpuGraph, node: Node, values: dict[str, np.ndarray],
                    noise: dict[str, float]) -> Finding | None:
    if node.op not in CONV_OPS:
        return None
    wname = "depthwise_kernel" if node.op == "depthwise_conv2d" else "kernel"
    w = node.weights.get(wname)
    slot = node.weight_slots.get(wname)
    wp = graph.pos(slot) if slot else None
    if w is None or wp is None:
        return None
    f = fnd.channel_spread(
        node.origin[0] if node.origin else node.name,
        _CLASS_OF_OP[node.op],
        w,
        wp,
        weight_name=wname,
        other_rel_error=_input_rel_error(graph, node, values),
        cle=_cle_state(graph, node),
        noise_frac=noise.get(node.name),
    )
    return _tag(f, node) if f is not None else None


def _slot_owner(graph: DpuGraph, slot: Slot) -> tuple[Node | None, str]:
    """The node a slot belongs to and whether it is its ``output`` or a weight name."""
    for n in graph.nodes:
        if n.out_slot == slot:
            return n, "output"
        for wname, s in n.weight_slots.items():
            if s == slot:
                return n, wname
    return None, ""


def _what_if_gain(graph: DpuGraph, sens: SensitivityResult, sample: dict[str, np.ndarray],
                  positions: dict[Any, int], batch_size: int, mode: str, base_sqnr: float) -> float:
    """Output SQNR gained with ``positions`` changed: on the sensitivity pass's walks when it kept them (only
    what the change reaches is recomputed; an EfficientNetB3's 119 DPU-constraint moves each ran the whole
    model), else by a whole run."""
    run = getattr(sens, "runner", None)
    if run is not None:
        return _output_stats(graph, run.ref, run.what_if(positions)).sqnr_db - base_sqnr
    return what_if(graph, sample, positions=positions, batch_size=batch_size, mode=mode).sqnr_db - base_sqnr


def _adjustment_findings(graph: DpuGraph, sample: dict[str, np.ndarray], values: dict[str, np.ndarray],
                         sens: SensitivityResult, noise: dict[str, float], batch_size: int,
                         mode: str, infer: bool, fixes: dict[int, list[rem.Fix]] | None = None) -> list[Finding]:
    base_sqnr = sens.output.sqnr_db
    fixes = {} if fixes is None else fixes
    out: list[Finding] = []
    moved: dict[str, list[Any]] = {}  # constraint -> its moves' (adjustment, owner, finding)
    # Alignment: group the moves of each aligned node.
    groups: dict[tuple[str, str], list[Any]] = {}
    for adj in graph.adjustments:
        if adj.constraint in _ALIGN_RULES:
            groups.setdefault((adj.layer, adj.constraint), []).append(adj)
    inferred = infer
    if inferred:
        groups.update(_infer_concat_alignment(graph, values))
    for (name, rule_key), adjs in groups.items():
        node = graph[name]
        rule = _ALIGN_RULES[rule_key]
        shared = min(a.after for a in adjs)
        branches = []
        for a in adjs:
            owner, what = _slot_owner(graph, a.slot)
            if owner is None or what != "output" or owner.name not in values:
                continue
            branches.append(Branch(display_name(owner), values[owner.name], a.before, noise.get(owner.name),
                                   node=owner.name))
        if not branches:
            continue
        restore = {a.slot: a.before for a in adjs}
        floats = [name] if rule == "concat" else []
        gain = what_if(graph, sample, positions=restore, float_nodes=floats, batch_size=batch_size,
                       mode=mode).sqnr_db - base_sqnr
        how = "aligned positions put back" + (f" and {name} kept in float (no shared position)" if floats else "")
        f = fnd.alignment(display_name(node), branches, shared, rule=rule, measured_gain_db=_finite(gain),
                          what_if=how)
        if f is not None:
            if inferred:
                f.evidence["own_positions_inferred"] = ev(
                    True, "positions came from a file with no log of the alignment: each branch's "
                    "own position is what its quantizer's method picks on the measured samples")
            fixes[id(f)] = [rem.Fix("position", f"give the {rule} inputs their own positions back ("
                                   + ", ".join(b.layer for b in branches) + ")"
                                   + (f" and keep {display_name(node)} in float" if floats else ""),
                                   dict(restore), tuple(floats))]
            out.append(_tag(f, node))
    for adj in graph.adjustments:
        if adj.constraint in _ALIGN_RULES:
            continue
        owner, what = _slot_owner(graph, adj.slot)
        if owner is None:
            continue
        if what == "output":
            x = values.get(owner.name)
            rmode, _ = _mode(graph, adj.slot, Round.HALF_UP)
        else:
            x = owner.weights.get(what)
            rmode, _ = _mode(graph, adj.slot, Round.HALF_TO_EVEN)
        if x is None:
            continue
        iso = sens.isolated.get(owner.name)
        local = fnd.constraint(display_name(owner), adj.constraint, f"{adj.slot[0]}:{adj.slot[1]}", adj.before,
                               adj.after, x, rmode, iso.sqnr_db if iso is not None else None,
                               noise.get(owner.name), text=adj.text)
        if local is None:
            continue
        gain = _what_if_gain(graph, sens, sample, {adj.slot: adj.before}, batch_size, mode, base_sqnr)
        f = fnd.constraint(display_name(owner), adj.constraint, f"{adj.slot[0]}:{adj.slot[1]}", adj.before,
                           adj.after, x, rmode, iso.sqnr_db if iso is not None else None, noise.get(owner.name),
                           text=adj.text, measured_gain_db=_finite(gain))
        if f is not None:
            fixes[id(f)] = [rem.Fix("position", f"put {display_name(owner)}'s {what} position back to "
                                    f"{adj.before} (the {adj.constraint} constraint moved it to {adj.after})",
                                    {adj.slot: adj.before})]
            out.append(_tag(f, owner))
            moved.setdefault(adj.constraint, []).append((adj, owner, f))
    out.extend(_joint_constraint_findings(graph, sample, moved, base_sqnr, batch_size, mode, fixes))
    return out


JOINT_MARGIN_DB = 1.0  # a constraint's moves together must gain this much more than the best one alone


def _joint_constraint_findings(graph: DpuGraph, sample: dict[str, np.ndarray], moved: dict[str, list[Any]],
                               base_sqnr: float, batch_size: int, mode: str,
                               fixes: dict[int, list[rem.Fix]]) -> list[Finding]:
    """One finding per DPU constraint whose moves cost much together while none costs much alone (the
    hard-sigmoid rule moving two dozen conv outputs to one position: undoing one move leaves the others
    zeroing the signal, so each alone gains nothing)."""
    out = []
    for rule, items in moved.items():
        if len(items) < 2:
            continue
        best = max(_finite(f.severity_db) for _, _, f in items)
        restore = {adj.slot: adj.before for adj, _, _ in items}
        gain = _finite(what_if(graph, sample, positions=restore, batch_size=batch_size, mode=mode).sqnr_db - base_sqnr)
        if gain < max(rem.MIN_GAIN_DB, best + JOINT_MARGIN_DB):
            continue
        adj, owner, first = items[0]  # the most upstream move (the constraint pass runs in graph order)
        names = [display_name(o) for _, o, _ in items]
        f = Finding(display_name(owner), "constraint", gain, dict(first.evidence),
                    f"The {rule} constraint moved {len(items)} tensors ({', '.join(names[:6])}"
                    + (f" and {len(names) - 6} more" if len(names) > 6 else "") + "); put back together they "
                    f"gain {gain:.1f} dB, each alone at most {best:.2f} dB: rebalance the ranges the constraint "
                    "ties together (the activations feeding it), or keep those layers in float.")
        f.evidence["moved_together"] = ev(names, f"every tensor the {rule} constraint moved, put back together")
        f.evidence["what_if_gain_db"] = ev(gain, "output SQNR gain with all of them put back at once")
        f.evidence["severity_basis"] = ev("what-if", "the measured output SQNR gain of undoing them together")
        fixes[id(f)] = [rem.Fix("position", f"put the {len(items)} positions the {rule} constraint moved back "
                                "together", restore)]
        out.append(_tag(f, owner))
    return out


def _infer_concat_alignment(graph: DpuGraph, values: dict[str, np.ndarray]) -> dict[tuple[str, str], list[Any]]:
    """Concat inputs sharing the concat's position although their own data would pick a higher one."""
    from qinspect.dpu.dpu_graph import Adjustment
    from qinspect.dpu.fixed_point import choose_position

    groups: dict[tuple[str, str], list[Any]] = {}
    for node in graph.nodes:
        if node.op != "concat" or node.out_slot is None:
            continue
        shared = graph.pos(node.out_slot)
        if shared is None:
            continue
        for i in node.inputs:
            slot = graph.output_slot(i)
            owner, _ = _slot_owner(graph, slot) if slot else (None, "")
            if slot is None or owner is None or graph.pos(slot) != shared or owner.name not in values:
                continue
            spec = graph.slots.get(slot)
            method, mode = (spec.method, Round(spec.round_mode)) if spec else (1, Round.HALF_UP)
            own = choose_position(values[owner.name], method, mode)
            if own > shared:
                groups.setdefault((node.name, "align_concat"), []).append(
                    Adjustment("align_concat", node.name, slot, int(own), int(shared), "inferred"))
    return groups


def _finite(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _on_dpu(graph: DpuGraph, node: Node) -> bool:
    """A DPU computation: not a model input, nor the input's own quantizer (the int8 conversion of what the
    model is fed, which no DPU subgraph computes: a Rescaling right after it is no round trip)."""
    return node.device == "DPU" and node.op != "input" and not quantizes_model_input(graph, node)


def _cpu_findings(graph: DpuGraph, noise: dict[str, float]) -> list[Finding]:
    order = [n.name for n in graph.nodes if n.op != "input"]
    device = {n.name: "DPU" if _on_dpu(graph, n) else "CPU" for n in graph.nodes}
    inbound = {n.name: list(n.inputs) for n in graph.nodes}
    parts = fnd.count_partitions(order, inbound, device)
    out = []
    around: dict[str, tuple[bool, bool]] = {}  # CPU node -> its run's (fed by, read by) DPU layers
    for node in graph.nodes:
        if node.device != "CPU" or node.op == "input":
            continue
        if node.name not in around:
            run, sides = _cpu_run(graph, node)
            around.update(dict.fromkeys(run, sides))
        feeds, reads = around[node.name]
        # a softmax split out of a Dense is the user's Dense (the rewrite marks the split node an Activation)
        cls = _split_class(graph, node) or node.params.get("user_class") or node.params.get("class_name") \
            or node.params.get("keras_class") or _class_name(node)
        # Its cost is its own output's requantization. Without an output quantizer (a softmax at the edge:
        # the quantizer before it is the previous layer's) it has none: the only-quantized run of this node
        # would measure its input's quantizer, which is another node's.
        frac = noise.get(node.name, 0.0 if noise else None) if node.out_slot is not None \
            else (0.0 if noise else None)  # None: no sensitivity run
        f = fnd.cpu_fallback(display_name(node), cls, node.cpu_reason or "not a DPU operator", parts,
                             feeds and reads, noise_frac=frac, requantized=node.out_slot is not None,
                             identity=node.op == "activation" and node.params.get("name") == "linear",
                             alternative=dpu_alternative(graph, node))
        out.append(_tag(f, node))
    return fnd.group_cpu_fallbacks(out)


def _cpu_run(graph: DpuGraph, node: Node) -> tuple[set[str], tuple[bool, bool]]:
    """The run of connected CPU layers ``node`` is part of, and whether DPU layers feed it and read it: a
    CPU layer between two others is still a round trip when DPU layers sit on either side of the run."""
    run: set[str] = set()
    pending = [node.name]
    feeds = reads = False
    while pending:
        name = pending.pop()
        if name in run:
            continue
        run.add(name)
        for other in [*(graph[i] for i in graph[name].inputs), *graph.consumers(name)]:
            if other.device == "CPU" and other.op != "input":
                pending.append(other.name)
        feeds = feeds or any(_on_dpu(graph, graph[i]) for i in graph[name].inputs)
        reads = reads or any(_on_dpu(graph, c) for c in graph.consumers(name))
    return run, (feeds, reads)


def _split_class(graph: DpuGraph, node: Node) -> str | None:
    """``softmax split from a Dense`` for an activation the quantizer split off a conv or dense layer (the
    user's layer is that Dense, not an Activation layer), else None."""
    if not node.origin:
        return None
    owner = next((m for m in graph.nodes if m is not node and m.op in CONV_OPS and m.origin[:1] == node.origin[:1]),
                 None)
    if owner is None:
        return None
    act = node.params.get("name") or node.op
    return f"{act} split from a {_CLASS_OF_OP.get(owner.op, owner.op)}"


def _class_name(node: Node) -> str:
    names = {"leaky_relu": "LeakyReLU", "softmax": "Softmax", "activation": "Activation", "relu": "ReLU",
             "upsample": "UpSampling2D", "unsupported": "Layer"}
    return names.get(node.op, node.op)


def _layer_inputs(graph: DpuGraph, node: Node) -> list[str]:
    """The nodes feeding the float layer ``node`` stands for: its inputs, walking back through the layer's
    own earlier steps (a conv before its fused hard sigmoid), so "in" is the input the user sees, not a
    tensor inside the layer."""
    name = display_name(node)
    out: list[str] = []
    stack, seen = list(node.inputs), set()
    while stack:
        i = stack.pop(0)
        if i in seen or i not in graph:
            continue
        seen.add(i)
        if graph[i].op != "input" and display_name(graph[i]) == name:
            stack.extend(graph[i].inputs)
        else:
            out.append(i)
    return out


def _growth_findings(graph: DpuGraph, sens: SensitivityResult, noise: dict[str, float],
                     found: list[Finding]) -> list[Finding]:
    explained: dict[str, float] = {}
    for f in found:
        name = f.evidence.get("node", {}).get("value")
        share = f.evidence.get("share", {}).get("value")
        if name is not None and isinstance(share, (int, float)) and f.kind != "cpu_fallback":
            explained[name] = max(explained.get(name, 0.0), float(share))
        if f.kind == "alignment":  # the alignment explains the error of the branches it crushed
            for row in f.evidence["branches"]["value"]:
                explained[row["node"]] = max(explained.get(row["node"], 0.0), float(row["share"]))
    out = []
    for node in quantizing_nodes(graph):
        ins = [sens.accumulated[i] for i in _layer_inputs(graph, node)
               if i in sens.accumulated and sens.accumulated[i].n]
        if not ins or node.name not in sens.own:
            continue
        acc_in = _pack_sqnr(ins)
        acc_out = sens.accumulated[node.name].sqnr_db
        iso = sens.own[node.name].sqnr_db
        f = fnd.error_growth(display_name(node), acc_in, acc_out, iso, noise_frac=noise.get(node.name),
                             explained_share=explained.get(node.name, 0.0))
        if f is not None:
            out.append(_tag(f, node))
    return out
