"""Bridge from the GUI to the int8 emulator (``qinspect.dpu``), the diagnosis and the report writer.

Worker functions here take a :class:`~qinspect.gui.worker.CancelToken` first and run off the UI
thread. :class:`Analysis` maps the emulator's nodes (named like the quantized model's layers,
``quant_conv1``) back to the float model's layers the tree shows (``conv1``, ``bn1``), so every view
can ask by the name the user clicked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from qinspect.dpu.dpu_graph import computing_node, cpu_part, read_through_note, split_note
from qinspect.dpu.fixed_point import code_min
from qinspect.gui.document import Document, open_document

if TYPE_CHECKING:  # the helper process imports this module and must not need Qt
    from qinspect.gui.worker import CancelToken

_TRANSPARENT = frozenset({"zero_pad", "flatten", "reshape", "permute", "identity"})


@dataclass
class Analysis:
    """What the emulator computed for the open capture, indexed by float-model layer name."""

    available: bool
    reason: str = ""  # why not available
    graph: Any = None  # qinspect.dpu.dpu_graph.DpuGraph
    results: dict[str, Any] = field(default_factory=dict)  # node name -> per-layer result
    quantized_path: str | None = None
    positions_source: str = ""
    emulator: Any = None
    _node_of: dict[str, Any] = field(default_factory=dict)
    _built_from: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.graph is not None:
            for node in self.graph.nodes:
                for layer in getattr(node, "origin", []) or [node.name]:
                    # The last node built from a layer is the one whose output stands for it.
                    self._node_of[layer] = node
                    self._built_from.setdefault(layer, []).append(node)

    def summary(self) -> str:
        """One line for the status bar."""
        if not self.available:
            return f"Float statistics only: {self.reason}"
        n = len(self.results)
        # operators: the model inputs are where data comes in, not something the CPU computes
        cpu = sum(1 for node in self.graph.nodes if getattr(node, "device", "DPU") == "CPU" and node.op != "input")
        if not n:
            return (f"int8 model built: {len(self.graph.nodes)} operators, {cpu} on the CPU, "
                    f"{len(self.graph.rewrites)} rewrites; capture activations to emulate it")
        return f"Emulated {n} operators ({cpu} on the CPU); positions: {self.positions_source}"

    def output_names(self) -> list[str]:
        """The model outputs, as float-model layer names (the names the tree shows)."""
        if self.graph is None:
            return []
        from qinspect.analysis.outputs import output_layer

        return [output_layer(self.graph, o) for o in self.graph.outputs]

    def output_nodes(self, outputs: list[str] | None) -> list[str] | None:
        """Output node names for layer names (None: all outputs)."""
        if outputs is None or self.graph is None:
            return None
        from qinspect.analysis.outputs import resolve_outputs

        return resolve_outputs(self.graph, outputs)

    def output_stats(self, outputs: list[str] | None = None) -> Any:
        """Accumulated error over the model outputs (``outputs``: those layers only; None before an
        emulation over data)."""
        from qinspect.analysis.metrics import ErrorStats

        if self.graph is None or not self.results:
            return None
        stats = ErrorStats()
        for name in self.output_nodes(outputs) or self.graph.outputs:
            acc = getattr(self.results.get(name), "accumulated", None)
            if acc is None:
                return None
            stats.merge(acc)
        return stats if stats.n else None

    def float_layer(self, name: str) -> str:
        """The float-model layer a node name stands for (the name itself if it is one)."""
        if self.graph is None or name in self._node_of or name not in self.graph:
            return name
        origin = getattr(self.graph[name], "origin", None) or []
        return origin[-1] if origin else name

    def node(self, layer: str) -> Any:
        """The emulator node standing for a float layer's output (None if none)."""
        return self._node_of.get(layer)

    def runs_as(self, layer: str) -> Any:
        """The node that computes ``layer``: unlike :meth:`node`, not the input quantizer that stands for
        its tensor (:func:`qinspect.dpu.dpu_graph.computing_node`)."""
        node = self._node_of.get(layer)
        return None if node is None else computing_node(node, self._built_from[layer])

    def _split(self, layer: str) -> list[Any]:
        return cpu_part(self._built_from.get(layer, []))

    def placement(self) -> dict[str, str]:
        """Float layer -> "DPU", "CPU", or "DPU+CPU" for a layer split between them: where it runs."""
        return {layer: "DPU+CPU" if self._split(layer) else getattr(self.runs_as(layer), "device", "")
                for layer in self._node_of}

    def placement_notes(self) -> dict[str, str]:
        """Float layer -> why it (or the part of it that does) runs on the CPU."""
        out = {}
        for layer, node in self._node_of.items():
            split = self._split(layer)
            if split:
                out[layer] = split_note(split)
                continue
            own = self.runs_as(layer)
            why = getattr(own, "cpu_reason", "")
            if why and own is not node:
                why += "; " + read_through_note(node)
            if why:
                out[layer] = why
        return out

    def folded_into(self, layer: str) -> str | None:
        """The float layer whose int8 tensor holds ``layer``'s work when ``layer`` has none of its own (a conv
        folded with its BatchNorm: the BatchNorm's), else None."""
        node = self.node(layer)
        if node is None:
            return None
        origin = getattr(node, "origin", None) or [node.name]
        return origin[-1] if layer != node.name and origin[-1] != layer else None

    def rounded_at(self, layer: str) -> str | None:
        """The activation node that rounds ``layer``'s output when the DPU fuses it there (a conv + BN
        before its ReLU): the int8 model holds no tensor for ``layer``, and its emulated figures are those
        of the value before that rounding. None otherwise."""
        node = self.node(layer)
        if node is None or self.graph is None or node.out_slot is not None or node.op in _TRANSPARENT:
            return None
        fused = self.graph.rounding_activation(node)
        return fused.name if fused is not None else None

    def activation_position(self, layer: str) -> tuple[int | None, str]:
        """Position of ``layer``'s float output in the int8 model, or None and why it has none.

        Only a tensor the int8 model really holds has a position: a layer folded into the next
        (conv before its BatchNormalization) or an output fused into its activation (the DPU rounds
        once, after the activation) is not quantized on its own.
        """
        node = self.node(layer)
        if node is None or self.graph is None:
            return None, "not part of the int8 model"
        origin = getattr(node, "origin", None) or [node.name]
        if self.folded_into(layer) is not None:
            return None, f"not a tensor of the int8 model: folded into {node.name} with {', '.join(origin[1:])}"
        fused = self.rounded_at(layer)
        if fused is not None:
            return None, f"not quantized: fused into {fused}, which rounds once after the activation"
        slot = self.graph.output_slot(node.name) if hasattr(self.graph, "output_slot") else node.out_slot
        pos = self.graph.pos(slot)
        if pos is None:
            return None, "no quantizer (float on the CPU)" if getattr(node, "device", "") == "CPU" else \
                "no position for this tensor"
        return int(pos), f"{self.positions_source} ({slot[0]}:{slot[1]})"

    def activation_code_min(self, layer: str) -> int:
        """The lowest int8 code of ``layer``'s output in the int8 model: -127 when its quantizer codes in
        [-127, 127] (a DPUCADF8H target, or a quantized.h5 saying narrow_range), else -128. A tensor the
        model does not quantize takes the range of the model's activations (its what-ifs use it)."""
        graph = self.graph
        if graph is None or not hasattr(graph, "code_min"):
            return -128
        node = self.node(layer)
        if node is not None and graph.output_slot(node.name) is not None:
            return graph.output_code_min(node.name)
        options = getattr(graph, "options", None)
        return code_min(options is not None and options.narrow_activations)

    def channel_scale(self, layer: str) -> Any:
        """The per-channel factor between ``layer``'s captured tensor and the int8 model's (cross-layer
        equalization, :meth:`DpuGraph.channel_scale`), or None when the captured values are the int8
        model's float values."""
        node = self.node(layer)
        if node is None or self.graph is None or not hasattr(self.graph, "channel_scale"):
            return None
        return self.graph.channel_scale(node.name)

    def _weighted(self, layer: str) -> list[tuple[str, Any, Any]]:
        """(short weight name, weights, position slot) of every operator the int8 model built from
        ``layer`` that owns weights: a conv whose activation was split off (the activation stands for the
        layer's output, the conv holds its weights), both halves of a separable conv. A name two
        operators share is suffixed with the operator's."""
        out: list[tuple[str, Any, Any]] = []
        seen: set[str] = set()
        for node in self._built_from.get(layer, []):
            origin = getattr(node, "origin", None) or [node.name]
            if not getattr(node, "weights", None) or origin[0] != layer:
                continue
            for key, value in node.weights.items():
                name = key if key not in seen else f"{key} ({node.name})"
                seen.add(name)
                out.append((name, value, node.weight_slots.get(key)))
        return out

    def layer_weights(self, layer: str) -> tuple[dict[str, Any], str]:
        """The weights the int8 model quantizes for ``layer`` (after BN folding and equalization), if the
        layer owns weighted operators; else empty."""
        weights = {name: value for name, value, _ in self._weighted(layer)}
        if not weights:
            return {}, ""
        return weights, getattr(self.graph, "weights_from", "") or "after the quantizer's rewrites"

    def weight_positions(self, layer: str) -> tuple[dict[str, int], str]:
        """Positions of the layer's weights by short weight name (as :meth:`layer_weights` names them)."""
        if self.graph is None:
            return {}, ""
        out = {}
        for name, _, slot in self._weighted(layer):
            pos = self.graph.pos(slot)
            if pos is not None:
                out[name] = int(pos)
        return out, self.positions_source

    def notes(self, layer: str) -> list[str]:
        """Rewrites and constraint adjustments touching ``layer`` (or its node), in words."""
        if self.graph is None:
            return []
        node = self.node(layer)
        names = {layer} | ({node.name, node.key} if node is not None else set())
        out = [f"Rewrite: {r.text}" for r in self.graph.rewrites if names & set(r.layers)]
        for adj in self.graph.adjustments:
            if adj.layer in names or adj.slot[0] in names:
                out.append(f"Constraint {adj.constraint}: {adj.text}")
        own = self.runs_as(layer)
        if own is not None and getattr(own, "device", "") == "CPU":
            out.append(f"Runs on the CPU in float: {own.cpu_reason or 'not a DPU operator'}")
            if own is not node:
                out.append(f"Its output is quantized by {node.name}, the input quantizer the quantizer puts "
                           "before the DPU layer that reads it: the int8 figures shown are that tensor's")
        shared = self.graph.shared_note(node.name) if node is not None else ""
        if shared:
            out.append(shared[0].upper() + shared[1:])
        return out

    def inner_steps(self, layer: str) -> list[Any]:
        """Quantized tensors inside ``layer`` that stand for no layer (a separable conv's depthwise half, a
        conv's output before a float activation): the int8 model rounds them, and only here can the window
        show their figures."""
        standing = self._node_of.get(layer)
        return [n for n in self._built_from.get(layer, []) if n is not standing and n.op != "quantize"
                and getattr(n, "out_slot", None) is not None and (n.origin or [n.name])[-1] == layer]

    def result(self, layer: str) -> Any:
        """The emulator's result for the node standing for ``layer`` (None for a layer folded into another:
        that node's output is the other layer's tensor, and its figures are shown there)."""
        node = self.node(layer)
        if node is None or self.folded_into(layer) is not None:
            return None
        return self.results.get(node.name)

    def layer_stats(self, accumulated: bool) -> dict[str, Any]:
        """Float layer -> ErrorStats (accumulated or isolated) of its node."""
        out = {}
        for layer, node in self._node_of.items():
            if self.folded_into(layer) is not None:
                continue  # its node's output is the layer it was folded into; the report leaves it out too
            res = self.results.get(node.name)
            stats = getattr(res, "accumulated" if accumulated else "isolated", None) if res is not None else None
            if stats is not None:
                out[layer] = stats
        return out


def emulate_capture(token: CancelToken, document: Document, quantized: str | None,
                    options: dict[str, Any] | None = None) -> Analysis:
    """Calibrate on the capture (or take a Vitis quantized.h5's graph, weights and positions) and run the
    emulator over it, under the quantizer options ``options`` (``QuantizerOptions.to_dict()``; the
    quantizer's defaults when None). With a quantized.h5 the errors are measured against the float model."""
    from qinspect.analysis.metrics import ErrorStats
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.options import QuantizerOptions

    capture = document.capture
    opts = QuantizerOptions.from_dict(options)
    token.progress(0, capture.n_samples, "calibrating")
    if quantized:
        from qinspect.report.layer_map import refuse_foreign

        emulator = Emulator.from_quantized(quantized, narrow_activations=opts.narrow_activations)
        refuse_foreign([layer.name for layer in capture.graph.leaves()], emulator.graph, capture.path, quantized)
        emulator.use_float_reference(capture, opts)
        source = f"Vitis {os.path.basename(quantized)}; float reference: {emulator.reference_note}"
    else:
        emulator = Emulator.from_model(capture, calib_inputs=capture, options=opts)
        source = (f"qinspect calibration on the capture (predicts vai_q pof2s; batch size {opts.calib_batch_size}, "
                  f"{opts.describe()})")
    token.check()
    results = emulator.run(capture, stats_factory=ErrorStats,
                           progress=lambda done: token.progress(done, capture.n_samples, "emulating"))
    return Analysis(True, graph=emulator.graph, results=dict(results), quantized_path=quantized,
                    positions_source=source, emulator=emulator)


def rewrite_model(token: CancelToken, document: Document, options: dict[str, Any] | None = None) -> Analysis:
    """A model without activations: the quantizer's rewrites and the DPU/CPU partition (no positions)."""
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.options import QuantizerOptions

    token.check()
    emulator = Emulator.from_model(document.model, options=QuantizerOptions.from_dict(options))
    return Analysis(True, graph=emulator.graph, results={}, positions_source="none yet (capture to calibrate)",
                    emulator=emulator)


class DiagnosisData(NamedTuple):
    """What a diagnosis measures on, read from one opening of each capture."""

    inputs: dict  # the measured samples' model inputs (and captured stand-ins)
    calib: dict | None  # the calibration capture's, when the measured data is another capture's
    labels: Any  # the measured samples' class-folder labels (ClassLabels), or None


def diagnosis_data(document: Document, graph: Any, eval_path: str | None) -> DiagnosisData:
    """The data the diagnosis measures on (the evaluation capture's when one is compared, else the
    capture's), the calibration data when that is another capture (else None), and the measured
    samples' class-folder labels. ``graph``: the emulator's (captured stand-ins of nodes it cannot
    compute are added)."""
    from qinspect.dpu.emulator import calibration_data, captured_stand_ins

    # The diagnosis recomputes every tensor from the inputs: a kept-subset capture gives all it was fed.
    capture, _ = calibration_data(graph, document.capture)
    inputs = {name: capture.inputs(name) for name in capture.input_names()}
    inputs.update(captured_stand_ins(graph, capture))
    if not eval_path:
        return DiagnosisData(inputs, None, getattr(document.capture, "class_labels", None))
    from qinspect.io.capture_file import Capture

    with Capture.open(eval_path) as opened:
        evaluation, _ = calibration_data(graph, opened)
        evaluated = {name: evaluation.inputs(name) for name in evaluation.input_names()}
        return DiagnosisData({**evaluated, **captured_stand_ins(graph, evaluation)}, inputs, opened.class_labels)


@dataclass
class DiagnosisSummary:
    """What the window shows of a diagnosis: its findings and the model-output block."""

    findings: list[Any] = field(default_factory=list)
    output_sqnr_db: float | None = None
    top1_agreement: float | None = None
    accuracy: dict[str, Any] | None = None
    explained: float | None = None
    measured_on: str = ""
    n_samples: int = 0  # the samples the output block and the remedies were measured on
    advice: list[dict[str, Any]] = field(default_factory=list)
    near_tie_warning: str | None = None  # when ties weigh on top1_agreement (float near ties, int8 exact ties)
    # several outputs: each one's own figures (OutputFigure.to_dict()), the ones weighed, and the note
    # when the pooled figures hide a worse one
    outputs: list[dict[str, Any]] = field(default_factory=list)
    weighed_outputs: list[str] = field(default_factory=list)
    hidden_output_warning: str | None = None
    labels_note: str | None = None  # why the samples' class folders are not the accuracy's labels
    notes: list[str] = field(default_factory=list)  # what the figures rest on, as the command line prints them
    explained_se: float | None = None  # the standard error of ``explained`` over the samples
    top1_rests_on_near_ties: bool = False  # float near ties are so many that top1_agreement says little


def diagnose_job(token: CancelToken, document: Document, analysis: Analysis,
                 eval_path: str | None, labels_path: str | None = None,
                 outputs: list[str] | None = None) -> DiagnosisSummary:
    """Findings for the findings panel (none when the emulator could not run), and the output block
    (with float and int8 accuracy when ``labels_path`` gives the measured samples' classes).
    ``outputs``: the output layers the diagnosis weighs (None: all)."""
    from qinspect.analysis.diagnose import default_sens_samples, diagnose

    if not analysis.available:
        return DiagnosisSummary()
    from qinspect.analysis.class_labels import choose_labels

    inputs, calib, carried = diagnosis_data(document, analysis.graph, eval_path)
    labels, unused = None, None
    if labels_path or carried is not None:
        labels, unused = choose_labels(analysis.graph, labels_path, carried,
                                       default_sens_samples(analysis.graph, len(next(iter(inputs.values())))))
    token.check()
    diagnosis = diagnose(analysis.graph, inputs, calib,
                         data_label="evaluation" if eval_path else "calibration",
                         progress=lambda msg: token.progress(0, 0, msg), labels=labels,
                         outputs=analysis.output_nodes(outputs), rebuild=_rebuild(document, analysis))
    for f in diagnosis.findings:
        f.layer = analysis.float_layer(f.layer)
        f.affects = [analysis.float_layer(a) for a in f.affects]
    return DiagnosisSummary(list(diagnosis.findings), diagnosis.output.sqnr_db, diagnosis.top1_agreement,
                            diagnosis.accuracy, diagnosis.explained, diagnosis.measured_on,
                            diagnosis.n_sens_samples, list(diagnosis.advice), diagnosis.near_tie_warning,
                            [f.to_dict() for f in diagnosis.outputs], list(diagnosis.weighed_outputs),
                            diagnosis.hidden_output_warning, unused, list(diagnosis.notes), diagnosis.explained_se,
                            diagnosis.top1_rests_on_near_ties)


def _rebuild(document: Document, analysis: Analysis) -> Any:
    """Quantizer options as remedies, as ``qinspect diagnose`` measures them: the model rebuilt under an
    option and recalibrated on the whole capture, as the window calibrated it. None with a Vitis
    quantized.h5, whose positions a rebuild would not reproduce."""
    from qinspect.dpu.emulator import recalibrator

    graph = analysis.graph
    if analysis.quantized_path or graph is None or graph.options is None or document.capture is None:
        return None
    return recalibrator(document.capture, document.capture, graph.options)


def trial_job(token: CancelToken, document: Document, analysis: Analysis, eval_path: str | None,
              fix: Any, n_samples: int, outputs: list[str] | None = None) -> Any:
    """A finding's fix as a what-if on the first ``n_samples`` of the diagnosis' data (those it measured
    the remedy on, so the numbers are the finding's): the accumulated error of every node before and
    after it (:class:`qinspect.analysis.remedy_curve.RemedyCurves`, keyed by emulator node); its output
    figures are those of the diagnosis' ``outputs`` (None: all)."""
    from qinspect.analysis.remedies import without_samples
    from qinspect.analysis.remedy_curve import remedy_curves

    data = diagnosis_data(document, analysis.graph, eval_path).inputs
    data = {k: v[:n_samples] for k, v in data.items()}
    if getattr(fix, "exclude", ()):  # the remedy was measured without these samples (its outliers): so is its curve
        data = without_samples(data, fix.exclude)
    token.check()
    curves = remedy_curves(analysis.graph, data, fix.positions, fix.float_nodes, fix.action,
                           progress=lambda done, total: token.progress(done, total, "trying the remedy"),
                           outputs=analysis.output_nodes(outputs))
    curves.measured_on = getattr(fix, "measured_on", "") or ""
    return curves


@dataclass
class DumpComparison:
    """Every dumped tensor (a dump_model file or a board tensor) against the emulator."""

    folder: str
    tensors: list[Any]
    kind: str = "dump_model"  # or "board"
    first: Any = None  # the first diverging row in topological order (None: all match)
    found: str = ""  # what the folder was recognised as
    unmapped: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # what the dump lacks or holds beyond the model, and a dump made from other weights: said in the
    # headline, so an incomplete dump never reads as matching
    incomplete: list[str] = field(default_factory=list)
    warning: str | None = None

    def summary(self) -> str:
        """One line for the status bar: what was found and how many tensors differ."""
        # the int8 tensors decide, as compare-dump counts them; dump_model's float copies are listed beside
        deciding = [t for t in self.tensors if getattr(t, "gating", True)]
        copies = [t for t in self.tensors if not getattr(t, "gating", True)]
        bad = [t for t in deciding if t.matched != t.total]
        text = (f"{self.folder}: {self.found or self.kind}; {len(deciding)} tensors compared, "
                + ("all match" if not bad else f"{len(bad)} differ"))
        if copies:
            off = sum(t.matched != t.total for t in copies)
            text += (f" ({len(copies)} float copies beside them, which do not decide"
                     + (f"; {off} of them differ)" if off else ")"))
        if self.unmapped and self.kind == "board":
            text += f"; {len(self.unmapped)} board tensor(s) map to no layer, first {self.unmapped[0].tensor.label}"
        if self.incomplete:
            text += "; the dump is incomplete"
        return text

    def headline(self, layer_of: Callable[[Any], str] | None = None) -> str:
        """The first diverging layer in topological order, in one sentence; then what the dump lacks.
        ``layer_of`` names a row's layer as the window's tree does (relu2, not the quantizer's quant_relu2)."""
        t = self.first
        if t is None:
            text = ("No divergence: every compared tensor matches the emulator bit for bit." if not self.incomplete
                    else "No divergence among the tensors compared, but the dump is incomplete.")
        else:
            layer = (layer_of(t) if layer_of is not None else "") or getattr(t, "float_layer", "") or t.layer
            tensor = f" ({t.name})" if t.name != layer else ""
            difference = getattr(t, "difference", None) or f"{t.max_lsb:g} LSB"
            text = (f"First divergence: layer {layer}{tensor}, {t.total - t.matched} of {t.total} codes differ, "
                    f"max {difference}" + (f". {t.note[:1].upper()}{t.note[1:]}." if t.note else "."))
        extra = [*self.incomplete, *([self.warning] if self.warning else [])]
        return " ".join([text, *(f"{x[:1].upper()}{x[1:]}." for x in extra)])


def find_dump_inputs(folder: str) -> str | None:
    """The ``dump_inputs*.npy`` a Vitis run keeps beside (or in) its dump folder, if any."""
    for base in (folder, os.path.dirname(os.path.abspath(folder))):
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for name in names:
            if name.startswith("dump_inputs") and name.endswith(".npy"):
                return os.path.join(base, name)
    return None


def dump_job(token: CancelToken, folder: str, quantized: str | None, inputs: str,
             narrow_activations: bool = False) -> DumpComparison:
    """Worker: emulate the dump's inputs with the quantized.h5 and compare every dumped tensor (a
    dump_model folder or a VART board dump); ``narrow_activations``: the window's target codes
    activations in [-127, 127] (Quantizer ▸ Target DPU), as the command line's --target."""
    from qinspect.dpu.board_compare import compare_board
    from qinspect.dpu.dump_checks import (
        check_comparable,
        check_same_model,
        check_samples,
        dump_inputs,
        float_file_note,
        incomplete,
        weight_copy_note,
    )
    from qinspect.dpu.emulator import Emulator, compare_dump, first_dump_divergence
    from qinspect.errors import QInspectError
    from qinspect.io.board_dump import dump_folder_kind, open_board_dump
    from qinspect.io.vitis import open_dump

    if not quantized:
        raise QInspectError("import the quantized.h5 this dump came from first (File > Import Vitis "
                            "quantized.h5): the dump holds no positions", folder)
    emulator = Emulator.from_quantized(quantized, narrow_activations=narrow_activations)
    token.check()
    kind = dump_folder_kind(folder)
    board = open_board_dump(folder) if kind == "board" else None
    dump = None if board is not None else open_dump(folder, emulator.quantized_model)
    if dump is not None:
        check_same_model(dump, quantized)
    x, n_samples, said = dump_inputs(inputs, emulator.graph)
    if dump is not None:
        check_samples(emulator.graph, dump, n_samples, inputs)
    token.check()
    if board is not None:
        res = compare_board(emulator.graph, board, x)
        # a tensor that maps to no layer leaves the comparison incomplete (the command line's exit 2)
        lacks = [f"{len(res.unmapped)} board tensor(s) map to no layer of the model, first "
                 f"{res.unmapped[0].tensor.label}: not a match"] if res.unmapped else []
        return DumpComparison(folder, res.tensors, "board", res.first_divergence, board.describe(),
                              res.unmapped, [*said, *res.notes], lacks)
    rows = list(compare_dump(emulator, dump, x))
    # another model's dump, or one made from other inputs: refused before any row blames the DPU
    check_comparable(emulator.graph, dump, rows, quantized, inputs)
    return DumpComparison(folder, rows, "dump_model", first_dump_divergence(emulator.graph, rows),
                          "a quantizer dump_model folder", list(dump.unmapped), [*said, *dump.notes],
                          incomplete(dump), "; ".join(w for w in (weight_copy_note(rows),
                                                                  float_file_note(emulator.graph, rows)) if w) or None)


def build_report_in_helper(path: str, quantized: str | None, layer: str | None, eval_path: str | None,
                           advice_rows: Any, labels_path: str | None, options: dict[str, Any] | None = None,
                           outputs: list[str] | None = None) -> Any:
    """In a helper process of its own: gather the report's numbers with the report package, under the
    window's quantizer ``options`` and choice of ``outputs``; progress to
    :func:`qinspect.gui.compute_process.report_progress` (which also stops a cancelled job)."""
    from qinspect.dpu.options import QuantizerOptions
    from qinspect.gui.compute_process import report_progress
    from qinspect.report.collect import build_report

    return build_report(path, positions=quantized, layer=layer, eval_path=eval_path, advice=advice_rows,
                        labels=labels_path, options=QuantizerOptions.from_dict(options), outputs=outputs,
                        progress=lambda done, total, text: report_progress(done, total, text))


def export_job(token: CancelToken, document: Document, analysis: Analysis | None, layer: str | None,
               eval_path: str | None, advice: Any = None, labels_path: str | None = None,
               options: dict[str, Any] | None = None, outputs: list[str] | None = None) -> Any:
    """Worker: gather the report's numbers in a helper process of its own, so the diagnosis and
    sensitivity numpy behind them never holds the window's GIL (figures are drawn by ``write_job``).
    ``advice``: the Advice tab's advisor result, put on the report's first page when there is one."""
    from qinspect.gui.worker import in_own_process

    quantized = analysis.quantized_path if analysis is not None else None
    rows = None
    if advice is not None and advice.rows:
        rows = (advice.rows, f"the options advisor run in the window ({advice.n_samples} {advice.measured_on} "
                             "samples)")
    return in_own_process(token, build_report_in_helper, document.path, quantized, layer, eval_path, rows,
                          labels_path, options, outputs)


def write_job(token: CancelToken, report: Any, folder: str) -> str:
    """Worker: draw the report's figures (in helper processes when there are many, else one at a time on
    the UI thread) and write the report folder atomically (HTML with the figures inline, JSON, CSV, PNGs)."""
    from qinspect.gui.figures import render_figures
    from qinspect.report.writer import write_report

    pngs = render_figures(report.all_figures(),
                          progress=lambda done, total: token.progress(done, total, "report figures"))
    token.check()
    return str(write_report(report, folder, figures_png=pngs, force=True))


# --- model-wide jobs in the helper process (see compute_process.call_model) -------------------------
class _HelperToken:
    """In the helper nothing cancels a job (the GUI kills the helper instead); progress goes to the caller."""

    request_id = 0
    cancelled = False

    def check(self) -> None:
        """Never cancelled here."""

    def progress(self, done: int, total: int, text: str = "") -> None:
        """Handed to the window's worker thread (:func:`qinspect.gui.compute_process.call_model`); lost when
        the job runs in that thread itself (no helper), as before."""
        from qinspect.gui import compute_process

        if compute_process.in_model_helper():
            compute_process.report_progress(done, total, text)

    def partial(self, result: Any) -> None:
        """Not reported from the helper."""


_helper_docs: dict[tuple[str, float], Document] = {}


def _helper_document(path: str) -> Document:
    key = (path, os.path.getmtime(path))
    if key not in _helper_docs:
        for old in [k for k in _helper_docs if k[0] == path]:
            _helper_docs.pop(old).close()
        _helper_docs[key] = open_document(path)
    return _helper_docs[key]


def _emulate_in_helper(path: str, quantized: str | None, options: dict[str, Any] | None = None) -> Analysis:
    return emulate_capture(_HelperToken(), _helper_document(path), quantized, options)


def _diagnose_in_helper(path: str, analysis: Analysis, eval_path: str | None,
                        labels_path: str | None = None, outputs: list[str] | None = None) -> DiagnosisSummary:
    return diagnose_job(_HelperToken(), _helper_document(path), analysis, eval_path, labels_path, outputs)


def _trial_in_helper(path: str, analysis: Analysis, eval_path: str | None, fix: Any, n_samples: int,
                     outputs: list[str] | None = None) -> Any:
    return trial_job(_HelperToken(), _helper_document(path), analysis, eval_path, fix, n_samples, outputs)


def _rewrite_in_helper(path: str, options: dict[str, Any] | None = None) -> Analysis:
    return rewrite_model(_HelperToken(), _helper_document(path), options)


def _in_helper(token: CancelToken, fn: Any, *args: Any) -> Any:
    from qinspect.gui import compute_process
    from qinspect.gui.worker import Cancelled

    token.check()
    try:
        return compute_process.call_model(fn, *args, cancelled=lambda: token.cancelled, progress=token.progress)
    except compute_process.Superseded:
        raise Cancelled() from None


def emulate_job(token: CancelToken, document: Document, quantized: str | None,
                options: dict[str, Any] | None = None) -> Analysis:
    """Worker: :func:`emulate_capture` in the model helper process."""
    token.progress(0, 0, "emulating")
    return _in_helper(token, _emulate_in_helper, document.path, quantized, options)


def diagnose_bg_job(token: CancelToken, document: Document, analysis: Analysis,
                    eval_path: str | None, labels_path: str | None = None,
                    outputs: list[str] | None = None) -> DiagnosisSummary:
    """Worker: :func:`diagnose_job` in the model helper process."""
    if not analysis.available:
        return DiagnosisSummary()
    return _in_helper(token, _diagnose_in_helper, document.path, analysis, eval_path, labels_path, outputs)


def rewrite_job(token: CancelToken, document: Document, options: dict[str, Any] | None = None) -> Analysis:
    """Worker: :func:`rewrite_model` in the model helper process."""
    return _in_helper(token, _rewrite_in_helper, document.path, options)


def trial_bg_job(token: CancelToken, document: Document, analysis: Analysis, eval_path: str | None, fix: Any,
                 n_samples: int, outputs: list[str] | None = None) -> Any:
    """Worker: :func:`trial_job` in the model helper process."""
    token.progress(0, 0, "trying the remedy")
    return _in_helper(token, _trial_in_helper, document.path, analysis, eval_path, fix, n_samples, outputs)
