"""Gather a :class:`Report` from a capture (or model), the emulator, the diagnosis and an evaluation capture.

Every number comes from the code that owns it: positions, placement, rewrites and adjustments from
the emulator's graph; isolated and accumulated :class:`ErrorStats` from the emulator run; findings from
:mod:`qinspect.analysis.diagnose`; histograms and the output tensor's clipping from the capture's float
values through :mod:`qinspect.analysis`. Parts that cannot run leave their numbers out (``None``) with a
warning in the report, never a made-up value.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect import __version__
from qinspect.analysis import diagnose as diagnosis
from qinspect.analysis.class_labels import carried_labels, choose_labels
from qinspect.analysis.coverage import activation_batches, range_shares
from qinspect.analysis.decisions import agreement_text
from qinspect.analysis.metrics import ErrorStats, representable_range
from qinspect.analysis.option_remedies import QUANTIZER_STOPS
from qinspect.analysis.outputs import resolve_outputs
from qinspect.dpu.checks import check_finite_capture
from qinspect.dpu.dpu_graph import TRANSPARENT_OPS, computing_node, cpu_part, read_through_note, split_note
from qinspect.dpu.emulator import Emulator, calibration_data, captured_stand_ins, recalibrator
from qinspect.dpu.options import QuantizerOptions
from qinspect.errors import QInspectError
from qinspect.io.capture_file import Capture, is_capture, preprocess_mismatch
from qinspect.io.graph import Layer, ModelGraph
from qinspect.io.model_file import ModelSource, open_model
from qinspect.io.same_model import check_same_model
from qinspect.io.vitis import PositionsTable, read_positions_json
from qinspect.report import figspec, wording
from qinspect.report.content import LayerSection, Report
from qinspect.report.how import how_texts
from qinspect.report.layer import KERNEL_KEYS, LayerInputs, layer_section, summarize_float
from qinspect.report.layer_map import LayerMap, map_layers, refuse_foreign
from qinspect.report.wording import equalized_note, pooled_top1_suffix

Progress = Callable[[int, int, str], None]
VITIS_WEIGHTS = "folded, equalized weights stored in the quantized.h5"  # the rewrites are Vitis' own
AdviceRows = tuple[list[dict[str, Any]], str]  # advisor rows and a phrase saying where they come from
DIAGNOSIS_ADVICE = ("the diagnosis: the model as calibrated, and each quantizer-option and keep-float remedy it "
                    "measured (qinspect advise, or the window's Advice tab, tries more options)")
# Opens a model-like path as a ModelSource (the CLI passes one that also reads SavedModel folders).
Opener = Callable[[str], ModelSource]

# Samples read per batch when streaming a layer's activations (bounded memory per layer).
READ_BYTES = 32 << 20


@dataclass
class Emulation:
    """What the emulator gave: its graph, per-node results, where positions came from."""

    graph: Any = None  # qinspect.dpu.dpu_graph.DpuGraph
    results: dict[str, Any] = field(default_factory=dict)  # node name -> result (.isolated/.accumulated)
    positions_source: str = ""
    json_positions: PositionsTable | None = None  # positions.json without a graph
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    data: Any = None  # the --inputs source (qinspect.io.inputs.InputSource) a model file was run on
    # the model rebuilt under other quantizer options and recalibrated as it was (diagnose's option
    # remedies); None when the positions came from outside, which a rebuild would not reproduce
    rebuild: Any = None


# Error values kept per node for the error histogram (the first ones seen; float32, 256 KiB per node).
ERROR_SAMPLE = 1 << 16


@dataclass
class SampledErrorStats(ErrorStats):
    """:class:`ErrorStats` that also keeps the first :data:`ERROR_SAMPLE` element errors ``test - ref``.

    The sums, and so every metric, are exactly those of ErrorStats; the kept errors only draw the error
    histogram (whose caption says it covers the first values).
    """

    errors: list[np.ndarray] = field(default_factory=list, repr=False)
    kept: int = 0

    def update(self, ref: np.ndarray, test: np.ndarray, *args: Any, **kwargs: Any) -> SampledErrorStats:
        super().update(ref, test, *args, **kwargs)
        room = ERROR_SAMPLE - self.kept
        if room > 0:
            d = (np.asarray(test, np.float64).reshape(-1)[:room] - np.asarray(ref, np.float64).reshape(-1)[:room])
            self.errors.append(d.astype(np.float32))
            self.kept += d.size
        return self

    def error_sample(self) -> np.ndarray:
        """The kept errors, concatenated."""
        return np.concatenate(self.errors) if self.errors else np.zeros(0, np.float32)


# ------------------------------------------------------------------------------------------ sources


def open_source(path: str | os.PathLike[str], opener: Opener | None = None) -> Any:
    """A capture (with activations) or a model (weights and graph only), the latter through ``opener``
    (default :func:`qinspect.io.model_file.open_model`)."""
    path = str(path)
    if not os.path.exists(path):
        raise QInspectError("no such file or folder", path)
    if os.path.isfile(path) and is_capture(path):
        return Capture.open(path)
    return (opener or open_model)(path)


def _is_json(path: str) -> bool:
    """A positions file is a quantized.h5 (HDF5) or else JSON; a capture is refused here."""
    with open(path, "rb") as f:
        if not f.read(8).startswith(b"\x89HDF"):
            return True
    if is_capture(path):
        raise QInspectError("is a qinspect capture, not positions: --positions needs a Vitis quantized.h5 or a "
                            "positions JSON (calibrate --json, or a Vitis run's positions.json)", path)
    return False


def emulate(source: Any, positions: str | None, progress: Progress | None = None, batch_size: int = 32,
            options: QuantizerOptions | None = None, inputs: str | None = None,
            preprocess: str | None = None, max_samples: int | None = None) -> Emulation:
    """Run the emulator (calibrating, or with imported positions) over ``source`` if it can run.

    ``options``: the quantizer options the model is rewritten and calibrated under (``batch_size`` is
    the calibration and streaming batch size). Positions are calibrated on every sample; the errors are
    measured on the first ``max_samples`` (all when None), as ``qinspect emulate --samples`` does.

    ``inputs`` (a .npy / .npz / image folder path) gives a model file samples to calibrate and run on;
    a capture holds its own; ``preprocess`` scales an image folder's pixels (see qinspect.io.inputs).
    """
    em = Emulation()
    if positions is not None:
        if os.path.isdir(positions):
            raise QInspectError("is a folder; --positions needs a quantized.h5 or a positions JSON file", positions)
        if not os.path.isfile(positions):
            raise QInspectError("no such file or folder", positions)
        is_json = _is_json(positions)
        kind = "positions.json" if is_json else "quantized.h5"
        em.positions_source = f"Vitis {kind} ({os.path.abspath(positions)})"
        if is_json:
            em.json_positions = read_positions_json(positions)
    else:
        em.positions_source = f"qinspect calibration (predicts vai_q pof2s; batch size {batch_size}, " \
            f"{options.describe() if options else 'default options'})"
    if inputs is not None and isinstance(source, Capture):
        raise QInspectError("a capture holds its own inputs: --inputs is for a model file", inputs)
    options = (options or QuantizerOptions()).with_(calib_batch_size=batch_size)
    return _run_emulator(source, positions, em, progress, options, inputs, preprocess, max_samples)


def _open_inputs(path: str, graph: Any, preprocess: str | None, warnings: list[str]) -> Any:
    """``--inputs`` for a model file; what reading leaves out or stretches joins ``warnings``."""
    from qinspect.io.inputs import open_inputs

    shapes = {name: list(graph[name].output_shape[1:]) if graph[name].output_shape else None
              for name in graph.inputs}
    source = open_inputs(path, shapes, preprocess=preprocess)
    warnings.extend(source.warnings)
    return source


def _run_emulator(source: Any, positions: str | None, em: Emulation, progress: Progress | None,
                  options: QuantizerOptions, inputs: str | None = None,
                  preprocess: str | None = None, max_samples: int | None = None) -> Emulation:
    cls = Emulator
    batch_size = options.calib_batch_size
    has_acts = isinstance(source, Capture)
    em.settings["emulator"] = "qinspect.dpu: integer DPU operators, float reference computed alongside"
    if positions is not None and em.json_positions is None:
        emulator = cls.from_quantized(positions, narrow_activations=options.narrow_activations)
        refuse_foreign([lay.name for lay in source.graph.leaves()], emulator.graph,
                       getattr(source, "path", "the model"), positions)
        em.settings["weights"] = VITIS_WEIGHTS
        # The emulated graph is the quantized model's; the errors are measured against the float model.
        em.settings["float reference"] = emulator.use_float_reference(source, options)
        if "WARNING" in em.settings["float reference"]:
            em.warnings.append(em.settings["float reference"])
        if inputs is not None:
            em.data = _open_inputs(inputs, emulator.graph, preprocess, em.warnings)
    else:
        if progress:
            progress(0, 1, "calibrating" if positions is None and has_acts else "rewriting the graph")
        emulator = cls.from_model(source, calib_inputs=source if has_acts and positions is None else None,
                                  options=options)
        em.settings["weights"] = f"the model's weights after qinspect's rewrites ({options.describe()})"
        if positions is None:
            em.settings["calibration batch size"] = batch_size
        if inputs is not None:
            em.data = _open_inputs(inputs, emulator.graph, preprocess, em.warnings)
            if positions is None:
                if progress:
                    progress(0, 1, "calibrating")
                emulator.calibrate(em.data, batch_size)
                em.positions_source += f"; calibrated on {os.path.abspath(inputs)}"
        if em.json_positions is not None:
            missing = emulator.load_positions(em.json_positions)  # read once, above
            if missing:
                raise QInspectError(f"no position for {len(missing)} quantizer(s) of this model, e.g. "
                                    f"{', '.join(missing[:3])}: a positions.json of another model?", positions)
        elif not has_acts and em.data is None:
            em.positions_source = "none (a model file holds no calibration data)"
            em.warnings.append("a model file holds no calibration data: positions need a capture "
                               "(qinspect capture), --inputs or --positions")
    if emulator.calibration_note:
        em.warnings.append(emulator.calibration_note)
    em.graph = emulator.graph
    em.warnings += em.graph.caveats()
    data = source if has_acts else em.data
    if positions is None and data is not None:
        em.rebuild = recalibrator(source, data, options)
    if data is not None and all(emulator.graph.pos(s) is not None for s in emulator.graph.slots):
        if progress:
            progress(0, 1, "emulating")
        em.results = dict(emulator.run(data, batch_size=batch_size, stats_factory=SampledErrorStats,
                                       max_samples=max_samples))
    if not has_acts:
        em.warnings.append("a model file holds no activations: capture it (qinspect capture) for activation "
                           "histograms" + ("" if em.data is not None else " and error figures"))
    return em


# ------------------------------------------------------------------------------------------ rows


@dataclass
class Row:
    """One report row: a float layer (with its standing node, if any) or a node the quantizer made."""

    name: str
    class_name: str
    layer: Layer | None
    node: Any = None
    merged_into: list[Any] = field(default_factory=list)
    owner: str | None = None  # a quantized step inside a layer: that layer


def _rows(graph: ModelGraph, lmap: LayerMap | None) -> list[Row]:
    """The float model's layers in their own (topological) order, the table's index; a node the
    quantizer made goes right after the row of the layer feeding it, and a quantized tensor inside a
    layer (a separable conv's depthwise half) right after that layer's row."""
    leaves = graph.leaves()
    rows = [Row(layer.name, layer.class_name, layer, lmap.standing.get(layer.name) if lmap else None,
                lmap.merged_into.get(layer.name, []) if lmap else []) for layer in leaves]
    if lmap is None or not (lmap.unowned or lmap.intermediate):
        return rows
    after: dict[str | None, list[Row]] = {}
    for node in lmap.intermediate:
        owner = lmap.owner_of.get(node.name)
        after.setdefault(owner, []).append(Row(node.name, f"{node.op} (a quantized step inside {owner})", None, node,
                                               owner=owner))
    for node in lmap.unowned:
        feeding = lmap.owner_of.get(node.inputs[0]) if node.inputs else None
        after.setdefault(feeding, []).append(Row(node.name, f"{node.op} (made by the quantizer)", None, node))
    out = list(after.pop(None, []))
    for row in rows:
        out += [row, *after.pop(row.name, [])]
    return out + [r for made in after.values() for r in made]


def _node_positions(dpu: Any, node: Any) -> dict[str, Any]:
    def pos(slot: Any) -> int | None:
        p = dpu.pos(slot)
        return None if p is None else int(p)

    kernel = next((s for k, s in node.weight_slots.items() if k in KERNEL_KEYS), None)
    inputs = [pos(dpu.output_slot(i)) for i in node.inputs] if node.op != "input" else []
    out_slot = node.out_slot if node.op != "input" else None
    if out_slot is None and node.op in TRANSPARENT_OPS:
        # a flatten / reshape / pad moves codes, not the position: its output has its input's (as emulate says)
        out_slot = dpu.output_slot(node.name)
    return {
        "input": inputs or None,
        "weights": pos(kernel),
        "bias": pos(node.weight_slots.get("bias")),
        "output": pos(out_slot),
    }


def _json_row_positions(table: dict[str, dict[str, int]], name: str) -> dict[str, Any]:
    """Positions of one layer read straight from positions.json (no emulator graph to place them)."""
    keys = table.get(name)
    if keys is None:
        keys = table.get(f"quant_{name}", {})
    out: dict[str, Any] = {"input": None, "weights": None, "bias": None, "output": None}
    for key, value in keys.items():
        if key.endswith(("/kernel:0", "/depthwise_kernel:0", "/pointwise_kernel:0")):
            out["weights"] = value
        elif key.endswith("/bias:0"):
            out["bias"] = value
        elif "/" not in key:  # output_0, input, or an activation's name: the layer's output quantizer
            out["output"] = value
    return out


def kernel_owners(graph: ModelGraph) -> frozenset[str]:
    """The float layers that own a kernel (a shared layer's later calls through its first call's weights)."""
    def shapes(lay: Layer) -> dict:
        return lay.weight_shapes or (graph[lay.owner].weight_shapes if lay.owner in graph else {})

    return frozenset(lay.name for lay in graph.leaves() if set(shapes(lay)) & set(KERNEL_KEYS))


def _kernel_owner(node: Any, kernel_layers: frozenset[str]) -> str | None:
    """The float layer whose kernel a node holds: the first of its origins that has one (the conv of a
    pad + conv + BatchNorm), else None."""
    if not any(k in KERNEL_KEYS for k in getattr(node, "weight_slots", {})):
        return None
    return next((o for o in node.origin or [] if o in kernel_layers), None)


def _kernel_node(row: Row, lmap: LayerMap | None, kernel_layers: frozenset[str]) -> Any:
    """The int8 node holding ``row``'s own kernel when the layer has no int8 output of its own (a conv whose
    BatchNorm was folded into it): the last such node, not a quantized step with a row of its own (a separable
    conv's depthwise half)."""
    if lmap is None or row.node is not None or row.layer is None:
        return None
    steps = {n.name for n in lmap.intermediate}
    return next((n for n in reversed(row.merged_into)
                 if n.name not in steps and _kernel_owner(n, kernel_layers) == row.name), None)


def _kernel_elsewhere(row: Row, lmap: LayerMap | None, kernel_layers: frozenset[str]) -> str:
    """The float layer whose row shows the kernel of ``row``'s node instead (conv1 for the BatchNorm folded into
    it: the window and the channel findings name the conv too), else ''."""
    node = row.node
    if lmap is None or node is None or row.layer is None or row.owner is not None:
        return ""
    owner = _kernel_owner(node, kernel_layers)
    if owner and owner != row.name and lmap.standing.get(owner) is None and node in lmap.merged_into.get(owner, []):
        return owner
    return ""


def _fused_producer(dpu: Any, row: Row, node: Any) -> Any:
    """The node of ``row`` whose built-in activation ``node`` is (``Conv2D(..., activation="relu")`` becomes
    a conv without an output quantizer and a relu holding it), else None."""
    for other in row.merged_into:
        if other is not node and other.out_slot is None and dpu.fused_activation(other) is node:
            return other
    return None


def _fused_note(producer: Any, act: Any, pre_position: int | None = None) -> str:
    if getattr(act, "device", "DPU") == "CPU":
        # a pre-quantized activation the DPU cannot run (softmax): the DPU rounds the accumulator at the
        # activation's input quantizer, the CPU applies the activation to that in float. The layer's own
        # (post-activation) output is never int8, so the row has no output position to measure it against.
        at = f" p = {pre_position}" if pre_position is not None else ""
        return (f"split: the {producer.op} ({producer.name}) runs on the DPU and its accumulator is rounded once, at "
                f"the input quantizer{at} of the built-in activation ({act.op}, {act.name}), which then runs in "
                f"float on the CPU; input, weight and bias positions are the {producer.op}'s, and the layer's "
                "output (after the activation) is float")
    return (f"fused: the layer's built-in activation ({act.op}, {act.name}) runs in the same DPU step as its "
            f"{producer.op} ({producer.name}); input, weight and bias positions are the {producer.op}'s, the "
            "output position is the activation's (one rounding of the accumulator)")


def _node_texts(dpu: Any, names: set[str]) -> tuple[list[str], list[str]]:
    rewrites = [r.text for r in getattr(dpu, "rewrites", []) if names & set(r.layers) and r.kind != "source"]
    adjustments = []
    for adj in getattr(dpu, "adjustments", []):
        if adj.layer in names or adj.slot[0] in names:
            adjustments.append(adj.text)
    return rewrites, adjustments


def _placement(row: Row, dpu: Any) -> tuple[str, str]:
    node = row.node
    if node is None:
        if row.merged_into:
            into = ", ".join(n.name for n in row.merged_into)
            return "", f"no int8 output of its own: merged into {into} by the quantizer"
        if dpu is not None:
            return "", "no int8 tensor of its own in the quantized model (removed or replaced by the quantizer)"
        return "", ""
    # The layer runs where its own node does, even when an input quantizer stands for its tensor.
    own = computing_node(node, row.merged_into)
    note = getattr(own, "cpu_reason", "") or ""
    device = getattr(own, "device", "DPU")
    split = cpu_part(row.merged_into)
    if split:  # a Dense(softmax): the matmul on the DPU, the softmax on the CPU
        device, note = "DPU+CPU", split_note(split)
    if own is not node:
        note = (note + "; " if note else "") + read_through_note(node)
    if node.out_slot is None and node.op not in ("input",):
        act = dpu.rounding_activation(node) if hasattr(dpu, "rounding_activation") else None
        if act is not None:
            note = (note + "; " if note else "") + f"output not quantized: {act.name} is fused into it (one " \
                "rounding of the accumulator at the activation's position)"
    if node.name != row.name:
        note = (note + "; " if note else "") + f"emulator node: {node.name}"
    shared = dpu.shared_note(node.name) if hasattr(dpu, "shared_note") else ""
    if shared:
        note = (note + "; " if note else "") + shared
    return device, note


def _batches(capture: Capture, layer: str, max_samples: int | None,
             scale: np.ndarray | None = None) -> Callable[[], Iterator[np.ndarray]]:
    """The layer's captured tensor in batches, readable again and again; times ``scale`` per channel (the
    int8 model's equalized tensor, :meth:`DpuGraph.channel_scale`) when given."""
    return lambda: activation_batches(capture, layer, max_samples, scale, READ_BYTES)


def _equalized(dpu: Any, node: Any) -> np.ndarray | None:
    """The per-channel factor between the captured tensor and the int8 model's (cross-layer equalization),
    or None."""
    if dpu is None or node is None or not hasattr(dpu, "channel_scale"):
        return None
    return dpu.channel_scale(node.name)


def _error_sample(stats: ErrorStats | None) -> np.ndarray | None:
    return stats.error_sample() if isinstance(stats, SampledErrorStats) else None


def _stats(result: Any, which: str) -> ErrorStats | None:
    if result is None:
        return None
    value = result.get(which) if isinstance(result, dict) else getattr(result, which, None)
    return value if isinstance(value, ErrorStats) else None


# ------------------------------------------------------------------------------------------ report


def _check_layer_early(graph: ModelGraph, layer: str | None, path: str) -> None:
    """A --layer that names no layer of the model is refused before calibrating and emulating (a typo heard of
    after minutes on a big model). A quantizer's own node (``quant_...``) is known only after the rewrites:
    :func:`_select` checks those."""
    if layer is None or layer.startswith("quant_"):
        return
    names = [lay.name for lay in graph.leaves()]
    if layer not in names:
        raise _no_such_layer(layer, names, path)


def _no_such_layer(layer: str, names: list[str], path: str) -> QInspectError:
    """The error for a --layer the model lacks, with the closest names."""
    close = difflib.get_close_matches(layer, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return QInspectError(f"no layer named {layer!r} in the model{hint}", path)


def _select(rows: list[Row], layer: str | None, path: str) -> list[Row]:
    """A layer report's rows: the layer's own, its quantized steps (a separable conv's depthwise half) and
    the rows of the int8 nodes it was merged into (a conv folded with the BatchNorm after it), where its
    positions and errors are."""
    if layer is None:
        return rows
    chosen = [r for r in rows if r.name == layer]
    if not chosen:
        raise _no_such_layer(layer, [r.name for r in rows], path)
    merged = {n.name for n in chosen[0].merged_into}
    return [r for r in rows if r.name == layer or r.owner == layer
            or (r.node is not None and r.node.name in merged and r.owner is None)]


def concerns(finding: dict[str, Any], layer: str) -> bool:
    """Whether a finding concerns a layer: found at it, or naming it among the layers it affects (the
    accumulated-rounding finding's adders, whose remedy keeps them float)."""
    return finding.get("layer") == layer or layer in (finding.get("affects") or [])


def _coverage(eval_cap: Capture, sections: list[LayerSection], max_samples: int | None,
              scales: dict[str, np.ndarray]) -> dict[str, float | None]:
    """Per layer, the share of evaluation values outside the int8 range of its position (on the int8
    model's equalized tensor where ``scales`` has the layer)."""
    out: dict[str, float | None] = {}
    have = set(eval_cap.layers_with_activations())
    for sec in sections:
        pos = sec.positions.get("output")
        if pos is None or sec.name not in have:
            out[sec.name] = None
            continue
        lo, hi = representable_range(pos, qmin=sec.code_min)
        out[sec.name] = range_shares(_batches(eval_cap, sec.name, max_samples, scales.get(sec.name))(),
                                     lo, hi).outside_share
    return out


@dataclass
class DiagnosisPart:
    """The diagnosis' findings and per-node sensitivity, as report data."""

    findings: list[dict[str, Any]] | None = None
    sensitivity: dict[str, dict[str, Any]] = field(default_factory=dict)  # node name -> figures
    summary: dict[str, Any] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing: str = ""  # why there are no findings
    output: dict[str, Any] | None = None  # the report's first-page output block
    explained: float | None = None
    advice: list[dict[str, Any]] = field(default_factory=list)


def _inputs_of(capture: Any, names: list[str], graph: Any = None) -> dict[str, np.ndarray]:
    """All model inputs of a capture or an ``--inputs`` source, as float32 arrays keyed by input name
    (a capture's also carry the recorded outputs of nodes that have no implementation)."""
    if not isinstance(capture, Capture):  # qinspect.io.inputs.InputSource
        batch = capture.batch(0, capture.n_samples)
        if len(names) == 1 and len(batch) == 1:
            return {names[0]: np.asarray(next(iter(batch.values())), np.float32)}
        return {name: np.asarray(batch[name], np.float32) for name in names}
    if graph is not None:  # a kept-subset capture: every sample fed, when no stand-in needs the kept ones
        capture, _ = calibration_data(graph, capture)
    single = len(names) == 1
    arrays = {name: np.asarray(capture.inputs(None if single else name), np.float32) for name in names}
    return {**arrays, **(captured_stand_ins(graph, capture) if graph is not None else {})}


def _diagnose(source: Any, em: Emulation, eval_cap: Capture | None, warnings: list[str],
              max_samples: int | None, progress: Progress | None, with_sensitivity: bool = True,
              labels: str | None = None, outputs: list[str] | None = None) -> DiagnosisPart:
    part = DiagnosisPart()
    if not isinstance(source, Capture):
        source = em.data  # a model file run on --inputs
    if source is None or em.graph is None or not em.results:
        part.missing = "the diagnosis needs a capture (or --inputs) and an emulator run over it"
        return part
    if progress:
        progress(0, 1, "diagnosing")
    names = list(em.graph.inputs)
    kwargs: dict[str, Any] = {"with_sensitivity": with_sensitivity}
    if progress:
        kwargs["step"] = lambda text, done, total: progress(done, total, f"diagnosing: {text}")
    if max_samples is not None:
        kwargs["max_samples"] = max_samples
    if outputs is not None:
        kwargs["outputs"] = outputs
    if em.rebuild is not None:
        kwargs["rebuild"] = em.rebuild
    measured = _inputs_of(eval_cap if eval_cap is not None else source, names, em.graph)
    # accuracy is measured on the sensitivity samples: labels for those are enough
    n = len(next(iter(measured.values())))
    n = min(n, max_samples or n)
    chosen, unused = choose_labels(em.graph, labels, carried_labels(eval_cap if eval_cap is not None else source),
                                   diagnosis.default_sens_samples(em.graph, n))
    if chosen is not None:
        kwargs["labels"] = chosen
    if eval_cap is not None:
        result = diagnosis.diagnose(em.graph, measured, _inputs_of(source, names, em.graph),
                                    data_label="evaluation", **kwargs)
    else:
        result = diagnosis.diagnose(em.graph, measured, **kwargs)
    data = result.to_dict()
    part.findings = list(data.get("findings", []))
    for sens in data.get("sensitivity", []):
        part.sensitivity[sens.get("node")] = sens
    out = data.get("output_sqnr_db")
    part.summary = {
        "model output SQNR (dB)": out.get("value") if isinstance(out, dict) else out,
        "diagnosis measured on": f"{data.get('samples')} {data.get('measured_on')} samples",
        **_budget_summary(data),
    }
    part.how = {f"sensitivity: {k}": v for k, v in (data.get("sensitivity_how") or {}).items()}
    if isinstance(out, dict) and out.get("how"):
        part.how["model output SQNR"] = out["how"]
    part.notes = [f"Diagnosis: {note}." for note in data.get("notes", []) + ([unused] if unused else [])]
    part.output = {**(data.get("output") or {}), "samples": data.get("sensitivity_samples"),
                   "measured_on": data.get("measured_on"),
                   "how": "the diagnosis' run: the quantizer's float32 simulation of the int8 model against the "
                          "float model; the layer table's accumulated figures are the DPU integer pipeline's, "
                          "which can differ in the last digits where a float32 sum rounds"}
    explained = data.get("explained")
    # (0 when no finding explains anything: the sum of no shares is an int)
    number = isinstance(explained, int | float) and not isinstance(explained, bool)
    part.explained = float(explained) if number else None
    part.advice = list(data.get("advice") or [])
    return part


def _emulation_summary(em: Emulation, samples: int | None) -> dict[str, Any]:
    """The model's output SQNR from the layer table's run, for a report without a diagnosis (--no-findings,
    or one that failed): the headline a CI gate reads, pooled over the outputs by signal power as emulate's."""
    graph = em.graph
    if graph is None or not getattr(graph, "outputs", None):
        return {}
    pooled = ErrorStats()
    for name in graph.outputs:
        stats = _stats(em.results.get(name), "accumulated")
        if stats is None:
            return {}  # an output the run did not measure: no pooled figure rather than a partial one
        pooled.merge(stats)
    if not pooled.n:
        return {}
    on = f"{samples} samples" if samples else "the samples"
    return {"model output SQNR (dB)": pooled.sqnr_db,
            "output SQNR measured on": f"the layer table's run, {on} (no diagnosis: no findings, no sensitivity)"}


def _budget_summary(data: dict[str, Any]) -> dict[str, Any]:
    """First-page figures of the diagnosis: top-1 agreement, the noise budget and the best measured remedy."""
    out: dict[str, Any] = {}
    output = data.get("output") or {}
    top1 = output.get("top1_agreement")
    if isinstance(top1, float):
        out["top-1 agreement with the float model"] = agreement_text(top1) + pooled_top1_suffix(
            output.get("per_output")) + (
            " (rests on near ties: says little about accuracy)" if output.get("top1_rests_on_near_ties")
             else " (some disagreements are ties: see the note)" if output.get("near_tie_warning") else "")
    explained = data.get("explained")
    if isinstance(explained, float):
        se = data.get("explained_se")
        out["output error explained by the findings"] = (
            wording.explained_text(explained, se if isinstance(se, float) else None)
            # the rounding finding's share is inside the figure: the rest is what no finding's fix removes
            + f" (the rest: error no finding's fix removes; {wording.EXPLAINED_TOGETHER})")
    findings = data.get("findings") or []
    # where the quantizer cannot run the model as given, every other remedy was measured on that model: the
    # one run it can make is the finding marked so
    stops = [f for f in findings if QUANTIZER_STOPS in (f.get("evidence") or {})]
    best = max((f for f in findings if f.get("remedy")), default=None,
               key=lambda f: f["remedy"]["measured_gain_db"] if isinstance(f["remedy"]["measured_gain_db"], float)
               else 0.0)
    if best is not None:
        r = best["remedy"]
        se = r.get("measured_gain_se_db")
        spread = f" ± {se:.2f}" if isinstance(se, float) else ""
        caveat = "" if not stops or best in stops else (
            "; measured on the model as given, which vai_q_tensorflow2 cannot quantize (see the first finding)")
        out["best remedy, tried in the emulator"] = (f"{wording.short_action(r['action'])}: output "
                                                     f"{_fmt_db(r['measured_sqnr_db'])} dB "
                                                     f"({_fmt_db(r['measured_gain_db'], True)}{spread} dB){caveat}")
    return out


def _fmt_db(v: Any, signed: bool = False) -> str:
    """A dB figure for a sentence (non-finite values as JSON writes them)."""
    return f"{v:+.2f}" if signed and isinstance(v, float) else f"{v:.1f}" if isinstance(v, float) else str(v)


def _finding_row(f: dict[str, Any], rows: list[Row]) -> str | None:
    """The report row a finding belongs to: its layer when that is a row, else the row of its node."""
    names = {r.name for r in rows}
    if f.get("layer") in names:
        return f["layer"]
    node = f.get("evidence", {}).get("node")
    node = node.get("value") if isinstance(node, dict) else node
    for r in rows:
        if r.node is not None and r.node.name == node:
            return r.name
    return f.get("layer")


def build_report(
    source_path: str | os.PathLike[str],
    positions: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    eval_path: str | os.PathLike[str] | None = None,
    max_samples: int | None = None,
    progress: Progress | None = None,
    batch_size: int | None = None,
    options: QuantizerOptions | None = None,
    diagnose: bool = True,
    opener: Opener | None = None,
    inputs: str | os.PathLike[str] | None = None,
    preprocess: str | None = None,
    sensitivity: bool = True,
    advice: AdviceRows | None = None,
    labels: str | os.PathLike[str] | None = None,
    outputs: Sequence[str] | None = None,
) -> Report:
    """The report for a capture or model file (``layer``: only that layer's section).

    ``advice``: rows of an options-advisor run over the same data (``AdviceRow.to_dict()`` list) and where
    they come from, to put on the first page instead of the diagnosis' own measured rows. ``labels``: a
    .npy of the measured samples' classes, for float and int8 accuracy on the first page. ``outputs``:
    the model outputs (layer names) the diagnosis weighs, for a model with several (default: all).

    ``diagnose=False`` skips the diagnosis (findings and sensitivity), the slowest part on big models;
    ``sensitivity=False`` keeps the findings but skips the per-layer sensitivity (no noise budget).
    ``opener`` opens a path that is not a capture (default :func:`qinspect.io.model_file.open_model`).
    ``inputs`` (.npy / .npz) gives a model file samples to calibrate and emulate on (no float histograms:
    only a capture holds the float activations).
    """
    path = str(source_path)
    source = open_source(path, opener)
    eval_cap = None
    mismatch = None
    try:
        graph: ModelGraph = source.graph
        _check_layer_early(graph, layer, path)
        if eval_path is not None:
            if not isinstance(source, Capture):
                raise QInspectError("--eval compares two captures: the first file is a model, not a capture",
                                    path)
            eval_cap = Capture.open(str(eval_path))
            check_same_model(source.graph, source.path, eval_cap.graph, eval_cap.path)
            mismatch = preprocess_mismatch(source, eval_cap)
            check_finite_capture(eval_cap)
        # the options' calibration batch size unless one is given (the window's travels in its options)
        batch_size = batch_size or (options.calib_batch_size if options is not None else 32)
        em = emulate(source, None if positions is None else str(positions), progress, batch_size, options,
                     None if inputs is None else str(inputs), preprocess, max_samples)
        report = _assemble(path, source, graph, em, layer, eval_cap, max_samples, progress, diagnose, sensitivity,
                           None if labels is None else str(labels), outputs)
        if advice is not None and advice[0]:
            report.advice, report.advice_source = list(advice[0]), advice[1]
        if mismatch:
            report.warnings.insert(0, mismatch)
        return report
    finally:
        for f in (source, eval_cap):
            if f is not None:
                f.close()


def _assemble(path: str, source: Any, graph: ModelGraph, em: Emulation, layer: str | None,
              eval_cap: Capture | None, max_samples: int | None, progress: Progress | None,
              diagnose: bool = True, sensitivity: bool = True, labels: str | None = None,
              outputs: Sequence[str] | None = None) -> Report:
    dpu = em.graph
    lmap = map_layers([lay.name for lay in graph.leaves()], dpu) if dpu is not None else None
    all_rows = _rows(graph, lmap)
    rows = _select(all_rows, layer, path)
    has_acts = isinstance(source, Capture)
    captured = set(source.layers_with_activations()) if has_acts else set()
    warnings = list(em.warnings)
    # checked even without a diagnosis: a wrong name is a typo
    chosen = resolve_outputs(dpu, outputs, path) if outputs is not None and dpu is not None else None
    if diagnose:
        try:
            diag = _diagnose(source, em, eval_cap, warnings, max_samples, progress, sensitivity, labels, chosen)
        except QInspectError:
            raise
        except Exception as exc:  # the findings are optional: report everything else, say what failed
            diag = DiagnosisPart(missing=f"the diagnosis failed ({type(exc).__name__}: {exc})")
            warnings.append(f"{diag.missing}; the report has no findings and no sensitivity figures")
    else:
        diag = DiagnosisPart(missing="it was not asked for (--no-findings)")
    findings = diag.findings
    if findings is not None:
        findings = [{**f, "layer": _finding_row(f, all_rows)} for f in findings]
    leaf_index = {lay.name: i for i, lay in enumerate(graph.leaves())}
    # per row, the factor from its captured tensor to the int8 model's (histograms and coverage alike)
    scales = {row.name: s for row in rows if (s := _equalized(dpu, row.node)) is not None}
    # the layers that own a kernel: a folded conv's row shows the kernel its int8 node holds
    kernel_layers = kernel_owners(graph)
    sections = []
    for i, row in enumerate(rows):
        if progress:
            progress(i, len(rows), "layer sections")
        sec = _section(row, i, leaf_index, source, em, lmap, captured, findings, max_samples, scales.get(row.name),
                       kernel_layers)
        if row.node is not None and row.node.name in diag.sensitivity:
            sec.sensitivity = diag.sensitivity[row.node.name]
            # the layer's other steps (the conv under its fused ReLU): their figures differ, and a user keeping
            # the layer float keeps every step float (ignore_layers)
            sec.sensitivity_steps = [diag.sensitivity[n.name] for n in row.merged_into
                                     if n is not row.node and n.name in diag.sensitivity]
        sections.append(sec)
    coverage = _coverage(eval_cap, sections, max_samples, scales) if eval_cap is not None else None
    if eval_cap is not None and eval_cap.is_kept_subset:
        diag.notes.append(f"coverage (evaluation values outside the int8 range) measured on the {eval_cap.n_samples} "
                          f"of {eval_cap.n_total_samples} evaluation samples kept with full tensors")
    held = source.n_samples if has_acts else (em.data.n_samples if em.data is not None else None)
    if eval_cap is not None and diag.output is not None:
        # the two data sets read different output SQNRs: say which figure is whose where the notes start
        diag.notes.insert(0, "The layer table's errors, saturation and ranges (layers.csv, report.json's layers) are "
                             "the emulator's run on the calibration data; the Summary, the findings and the "
                             "keep-float gain are measured on the evaluation data (columns errors_measured_on "
                             "and sensitivity_measured_on say so per row).")
    report = Report(
        model_name=graph.name,
        source=os.path.abspath(path),
        source_format=getattr(source, "kind", None) or graph.source_format or "",
        samples=held if held is None or max_samples is None else min(held, max_samples),
        samples_total=source.n_total_samples if has_acts else None,
        positions_source=em.positions_source,
        layers=sections,
        how={**how_texts(), **diag.how},
        summary=diag.summary or _emulation_summary(em, held if held is None or max_samples is None
                                                   else min(held, max_samples)),
        findings=None if findings is None else [f for f in findings if layer is None or concerns(f, layer)],
        elsewhere=[f for f in findings or [] if layer is not None and not concerns(f, layer)],
        selected_layer=layer,
        eval_source=os.path.abspath(eval_cap.path) if eval_cap is not None else None,
        coverage=coverage,
        settings=dict(em.settings),
        rewrites_listed=em.settings.get("weights") != VITIS_WEIGHTS,
        warnings=warnings,
        notes=diag.notes,
        findings_missing=diag.missing if findings is None else "",
        output=diag.output,
        explained=diag.explained,
        advice=diag.advice,
        advice_source=DIAGNOSIS_ADVICE if diag.advice else "",
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        qinspect_version=__version__,
    )
    drawable = [v for s in sections for v in ((s.isolated or {}).get("sqnr_db"), (s.accumulated or {}).get("sqnr_db"))
                if isinstance(v, float) and math.isfinite(v)]
    if layer is None and drawable:
        report.figures.append(figspec.propagation_figure(
            "propagation", [s.name for s in sections],
            [(s.isolated or {}).get("sqnr_db") for s in sections],
            [(s.accumulated or {}).get("sqnr_db") for s in sections],
            inbound={lay.name: lay.inbound for lay in graph.leaves()},
            x=_table_x(sections),
        ))
    return report


def _table_x(sections: list[LayerSection]) -> list[float]:
    """Each row's x in a per-layer figure: its index in the table; a node the quantizer made sits half
    a step after the row before it."""
    xs: list[float] = []
    for sec in sections:
        xs.append(float(sec.index) if sec.index is not None else (xs[-1] if xs else -1.0) + 0.5)
    return xs


def _section(row: Row, i: int, leaf_index: dict[str, int], source: Any, em: Emulation, lmap: LayerMap | None,
             captured: set[str], findings: list[dict] | None, max_samples: int | None,
             scale: np.ndarray | None = None, kernel_layers: frozenset[str] = frozenset()) -> LayerSection:
    dpu = em.graph
    node = row.node
    placement, note = _placement(row, dpu)
    fused_activation = ""
    if node is not None:
        positions = _node_positions(dpu, node)
        names = {row.name, node.name, getattr(node, "key", "")} | {n.name for n in row.merged_into}
        rewrites, adjustments = _node_texts(dpu, names)
        weights = dict(node.weights)
        producer = _fused_producer(dpu, row, node)
        if producer is not None:
            positions = {**_node_positions(dpu, producer), "output": positions["output"]}
            weights = dict(producer.weights)
            if getattr(node, "device", "DPU") != "CPU":  # a CPU activation is split off, not fused
                fused_activation = getattr(node, "key", "") or node.name
            note = _fused_note(producer, node, dpu.pos(node.pre_slot)) + ("; " + note if note else "")
        result = em.results.get(node.name)
        kernel_owner = _kernel_elsewhere(row, lmap, kernel_layers)
        if kernel_owner:
            # the folded kernel is shown where a user looks for it, on the conv's row; this row keeps the
            # node's output and errors
            positions = {**positions, "weights": None, "bias": None}
            weights = {}
            note = (note + "; " if note else "") + f"its scale and shift are folded into {kernel_owner}'s weights " \
                f"and bias, shown on {kernel_owner}'s row"
    else:
        positions = _json_row_positions(em.json_positions.table, row.name) if em.json_positions else {}
        rewrites, adjustments = _node_texts(dpu, {row.name} | {n.name for n in row.merged_into}) if dpu else ([], [])
        weights = source.weights(row.name) if row.layer is not None and not row.merged_into else {}
        result = None
        holder = _kernel_node(row, lmap, kernel_layers)
        if holder is not None and dpu is not None:
            # a conv whose BatchNorm was folded into it: its kernel and bias as the int8 model holds them
            kernel_positions = _node_positions(dpu, holder)
            # the input is the layer's only when the holder is its first node (not a separable conv's pointwise half)
            first = row.merged_into[0] is holder
            positions = {**positions, "input": kernel_positions["input"] if first else positions.get("input"),
                         "weights": kernel_positions["weights"], "bias": kernel_positions["bias"]}
            weights = dict(holder.weights)
            placement = getattr(holder, "device", "DPU")
            folded = list(holder.origin[1:])
            held = f"its kernel and bias as {holder.name} holds them"
            if folded:
                held += f" (folded with {', '.join(folded)}; the output and its errors are on {folded[-1]}'s row)"
            note = (note + "; " if note else "") + held
    inp = LayerInputs(
        name=row.name,
        class_name=row.class_name,
        index=leaf_index.get(row.name),
        placement=placement,
        placement_note=note,
        positions=positions,
        positions_source=em.positions_source if any(v is not None for v in positions.values()) else "",
        fused_activation=fused_activation,
        isolated=_stats(result, "isolated"),
        accumulated=_stats(result, "accumulated"),
        isolated_error=_error_sample(_stats(result, "isolated")),
        weights=weights,
        rewrites=rewrites,
        adjustments=adjustments,
        findings=[f for f in (findings or []) if f.get("layer") == row.name],
        code_min=dpu.output_code_min(node.name) if node is not None else -128,
    )
    if row.name in captured:
        inp.float_summary = summarize_float(_batches(source, row.name, max_samples, scale), positions.get("output"),
                                            code_min=inp.code_min)
        inp.equalized = equalized_note(scale) if scale is not None else ""
    # figures are named after the table's index, so L12-* belongs to the layer numbered 12
    return layer_section(inp, f"L{inp.index}" if inp.index is not None else f"Q{i}")


