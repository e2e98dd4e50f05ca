"""The emulator's public face, used by the CLI, the GUI and the analysis layer.

>>> emu = Emulator.from_model("float.h5", calib_inputs=x, batch_size=4)   # predict what vai_q chooses
>>> emu = Emulator.from_quantized("quantized.h5")                         # or take Vitis's own
>>> emu.positions["c1"]["c1/kernel:0"]
>>> results = emu.run(capture_or_array, stats_factory=ErrorStats)

``run`` streams the data in batches. For every node it evaluates, side by side and node by node (so
only the live frontier of the graph is in memory), three values: the float reference, the
*accumulated* integer pipeline from the model input, and the *isolated* integer result of the node
fed with its inputs' float reference quantized at the positions the pipeline uses. Error statistics
are accumulated with a caller-given factory (``qinspect.analysis.metrics.ErrorStats``: the dpu layer
may not import the analysis layer), so any object with ``update(ref, test, q=None, clip_lo=, clip_hi=)``
works.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.dpu.calibrate import CalibrationResult, calibrate
from qinspect.dpu.checks import check_node_weights, checked_position, finite_batches, naming_file
from qinspect.dpu.dpu_graph import CONV_OPS, TRANSPARENT_OPS, Adjustment, DpuGraph, Node, Rewrite, quantizes_model_input
from qinspect.dpu.dump_checks import refuse_short_inputs
from qinspect.dpu.executor import (
    CAPTURED,
    Evaluator,
    Value,
    _FusedValue,
    batch_inputs,
    check_input_shape,
    same_size_codes,
)
from qinspect.dpu.fixed_point import Round, quantize
from qinspect.dpu.mismatch_cause import EDITED, mismatch_cause
from qinspect.dpu.options import DEFAULT_CALIB_BATCH, QuantizerOptions
from qinspect.dpu.reference import ReferenceWalk
from qinspect.errors import QInspectError, first_line
from qinspect.io.vitis import MAX_POSITION, PositionsTable, is_position, read_positions_json

DEFAULT_BATCH = DEFAULT_CALIB_BATCH


@dataclass
class LayerResult:
    """What the emulator found for one node over all samples run."""

    name: str
    op: str
    device: str
    cpu_reason: str
    origin: list[str]
    position: int | None
    weight_positions: dict[str, int | None]
    fused_into: str | None = None
    # True when ``position`` is of the node's input (a softmax or sigmoid quantized before it, its own
    # output left float), not of its output
    position_of_input: bool = False
    isolated: Any = None  # stats object (or None without a stats factory)
    accumulated: Any = None
    int8: np.ndarray | None = None  # accumulated codes, all samples (on request)
    float_ref: np.ndarray | None = None  # float reference, all samples (on request)
    chunks_q: list[np.ndarray] = field(default_factory=list, repr=False)
    chunks_f: list[np.ndarray] = field(default_factory=list, repr=False)


def _data_batches(graph: DpuGraph, data: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of model inputs (see :func:`_source_batches`), refused at the first NaN or Inf
    (:func:`qinspect.dpu.checks.finite_batches` says why)."""
    return finite_batches(_source_batches(graph, data, batch_size), getattr(data, "path", None) or None)


def _source_batches(graph: DpuGraph, data: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of model inputs from an array, a dict of arrays, a capture or an iterable of batches."""
    if batch_size < 1:
        raise QInspectError(f"batch size must be at least 1, got {batch_size}")
    if getattr(data, "kind", "") == "capture" and hasattr(data, "capture"):  # open_model()'s capture source
        data = data.capture
    if hasattr(data, "batch") and hasattr(data, "n_samples") and hasattr(data, "names"):  # io.inputs source
        n = int(data.n_samples)
        for i in range(0, n, batch_size):
            b = data.batch(i, min(n, i + batch_size))
            if len(b) == 1 and len(graph.inputs) == 1:
                b = {graph.inputs[0]: next(iter(b.values()))}
            yield b
        return
    if hasattr(data, "inputs") and hasattr(data, "n_samples"):  # a capture
        names = graph.inputs
        n = int(data.n_samples)
        stand_ins = _captured_stand_ins(graph, data)
        for i in range(0, n, batch_size):
            sl = slice(i, min(n, i + batch_size))
            batch = {name: np.asarray(data.inputs(name if len(names) > 1 else None, sl), np.float32)
                     for name in names}
            for node, layer in stand_ins.items():
                batch[CAPTURED + node] = np.asarray(data.activation(layer, sl), np.float32)
            yield batch
        return
    if isinstance(data, np.ndarray) or isinstance(data, dict):
        arrays = batch_inputs(graph, data)
        for name, arr in arrays.items():
            if name.startswith(CAPTURED) and name[len(CAPTURED):] in graph:
                continue  # a capture's recorded output standing in for a node without an implementation
            if name not in graph:
                raise QInspectError(f"the model has no input named {name}")
            check_input_shape(graph, name, arr)
        n = len(next(iter(arrays.values())))
        for i in range(0, n, batch_size):
            yield {k: v[i:i + batch_size] for k, v in arrays.items()}
        return
    for b in data:
        yield batch_inputs(graph, b)


def _captured_stand_ins(graph: DpuGraph, capture: Any) -> dict[str, str]:
    """Nodes without an implementation whose Keras layer's float output the capture holds: node -> layer."""
    held = set(capture.layers_with_activations()) if hasattr(capture, "layers_with_activations") else set()
    return {n.name: n.origin[-1] for n in graph.nodes if n.op == "unsupported" and n.origin and n.origin[-1] in held}


def captured_stand_ins(graph: DpuGraph, capture: Any, samples: Any = None) -> dict[str, np.ndarray]:
    """Entries to add to a capture's input arrays so every evaluator can run the nodes that have no
    implementation (an ``unsupported`` op): their recorded float output, keyed ``CAPTURED + node``.
    Empty for anything but a capture. Batches sliced from these arrays carry them along."""
    capture = getattr(capture, "capture", capture)  # open_model()'s capture source
    return {CAPTURED + node: np.asarray(capture.activation(layer, samples), np.float32)
            for node, layer in _captured_stand_ins(graph, capture).items()}


def calibration_data(graph: DpuGraph, data: Any) -> tuple[Any, str]:
    """The data a calibration on ``data`` uses, and a note when it is not every sample fed.

    A capture that keeps full tensors for fewer samples than it was fed (format 1.2) calibrates on every
    input it holds (``/all_inputs``), as the quantizer would on the whole set; unless a node without an
    implementation needs its recorded output as a stand-in, which exists for the kept samples only."""
    capture = data.capture if getattr(data, "kind", "") == "capture" and hasattr(data, "capture") else data
    if not getattr(capture, "is_kept_subset", False):
        return data, ""
    stand_ins = _captured_stand_ins(graph, capture)
    if not stand_ins:
        return capture.every_input(), ""
    return data, (f"calibrated on the {capture.n_samples} kept samples of {capture.n_total_samples}: "
                  f"{next(iter(stand_ins.values()))} has no implementation and its recorded output exists "
                  "for the kept samples only")


class Emulator:
    """A DPU graph with positions, ready to run."""

    def __init__(self, graph: DpuGraph, calibration: CalibrationResult | None = None, source: str = "") -> None:
        self.graph = graph
        self.calibration = calibration
        self.source = source
        # The float model the errors are measured against when it is not this graph's own float function
        # (a quantized.h5's graph with the float model given: see use_float_reference).
        self.reference: DpuGraph | None = None
        self.reference_note = ""
        self.calibration_note = ""  # set when a calibration could not use every sample fed

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_model(cls, source: Any, calib_inputs: Any = None, batch_size: int | None = None,
                   options: QuantizerOptions | None = None, constraints: bool = True) -> Emulator:
        """Rewrite a float model as the quantizer does under ``options`` and, given calibration data,
        calibrate it.

        ``source``: a path (Keras .h5 / .keras / capture) or an opened model source. ``calib_inputs``:
        an array, a dict of arrays, a capture, or None (a capture source then calibrates on its own
        inputs; otherwise positions stay unknown until :meth:`load_positions`). ``batch_size`` is a
        shorthand for ``options.calib_batch_size``.
        """
        from qinspect.dpu.rewrites import graph_from_float

        path = ""
        if isinstance(source, str | os.PathLike):
            from qinspect.io.model_file import open_model

            path = str(source)
            source = open_model(path)
        else:
            path = getattr(source, "path", "")
        from qinspect.io.weight_check import check_has_weights

        check_has_weights(source, path)
        options = options or QuantizerOptions()
        if batch_size is not None:
            options = options.with_(calib_batch_size=batch_size)
        graph = graph_from_float(source.graph, source, options)
        check_node_weights(graph, path)
        _shapes_from(graph, source.graph)
        if calib_inputs is None and getattr(source, "kind", "") == "capture":
            calib_inputs = source
        emu = cls(graph, source=path)
        if calib_inputs is not None:
            emu.calibrate(calib_inputs, options.calib_batch_size, constraints)
        return emu

    @classmethod
    def from_quantized(cls, path: str | os.PathLike[str], narrow_activations: bool = False) -> Emulator:
        """Positions and folded/equalized weights from a Vitis ``quantized.h5`` (no quantizer needed).

        The file's quantizers say their own range (``narrow_range``): a file whose activation quantizers are
        narrow is emulated so as it is. ``narrow_activations`` (``--target DPUCADF8H``) asks for activations in
        [-127, 127]: a file whose activation quantizers are all full range is refused in one line (its
        positions were chosen for [-128, 127], as positions files of the other range are refused)."""
        from qinspect.dpu.from_quantized import graph_from_quantized
        from qinspect.io.vitis import load_quantized_model

        model = load_quantized_model(path)
        try:
            graph = graph_from_quantized(model)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # A weight of the wrong shape, a missing quantizer field: not what vai_q writes.
            raise QInspectError(f"damaged Vitis quantized model ({type(exc).__name__}: {first_line(exc)})",
                                str(path)) from None
        check_node_weights(graph, str(path))
        if narrow_activations:
            refuse_full_range(graph, str(path))
            graph.narrow_activations()
        for layer in model.layers:
            if layer.class_name == "InputLayer" and layer.name in graph:
                shape = layer.config.get("batch_input_shape") or layer.config.get("batch_shape")
                if shape:
                    graph[layer.name].output_shape = list(shape)
        emu = cls(graph, source=str(path))
        emu.quantized_model = model
        # until use_float_reference() gives the float model, errors are against this graph run in float
        emu.reference_note = (f"{os.path.basename(path)}'s own graph in float32 (its folded weights, no rounding): "
                              "the error of the int8 arithmetic alone; a function the quantizer changed (ReLU6 -> "
                              "ReLU, sigmoid -> hard sigmoid) does not show; give the float model with --positions "
                              "for that")
        return emu

    def use_float_reference(self, source: Any, options: QuantizerOptions | None = None) -> str:
        """Measure errors against the float model ``source`` (rewritten under ``options``, every rewritten
        layer keeping the float function) instead of this graph's own float function: with a quantized.h5's
        graph, an option that changed the function (ReLU6 -> ReLU, CLE across ReLU6) then shows as error.
        Returns, and keeps in ``reference_note``, what the reference is and whether its weights match."""
        from qinspect.dpu.reference import adopt_float_functions, compare_weights, describe
        from qinspect.dpu.rewrites import graph_from_float

        options = options or QuantizerOptions()
        reference = graph_from_float(source.graph, source, options)
        compared, differ = compare_weights(self.graph, reference)
        if not differ:
            # The same graph under the float model's functions: analyses that evaluate this graph's
            # float path (diagnose, what-ifs) then measure against the float model as well.
            adopt_float_functions(self.graph, reference)
        self.reference = reference
        self.reference_note = describe(options, str(getattr(source, "path", "") or "given"), compared, differ)
        return self.reference_note

    def calibrate(self, data: Any, batch_size: int = DEFAULT_BATCH, constraints: bool = True) -> CalibrationResult:
        """Calibrate (batch by batch, voting, then the DPU constraints); sets the positions.

        A kept-subset capture calibrates on every sample fed (:func:`calibration_data`; when it cannot,
        ``calibration_note`` says so)."""
        data, self.calibration_note = calibration_data(self.graph, data)
        batches = _data_batches(self.graph, data, batch_size)
        with naming_file(self.source):
            self.calibration = calibrate(self.graph, batches, batch_size, constraints)
            for layer, keys in self.graph.positions.items():
                for key, value in keys.items():
                    if value is not None and not is_position(int(value)):
                        # the positions JSON reader refuses these too: no int8 model holds such a scale
                        raise QInspectError(f"calibration puts {layer}:{key} at position {value}, beyond "
                                            f"-{MAX_POSITION}..{MAX_POSITION}: values of about 2^{-int(value) + 7} "
                                            "reach it; check the scale of the calibration inputs")
        return self.calibration

    def load_positions(self, positions: Any) -> list[str]:
        """Use positions from a positions.json-like dict, a JSON file (``calibrate --json`` output or a
        reference case's positions.json), one already read (:class:`qinspect.io.vitis.PositionsTable`)
        or a Vitis ``quantized.h5``. Returns slots that got none."""
        positions_file = str(positions) if isinstance(positions, str | os.PathLike) else None
        recorded = positions.get("quantizer_options") if isinstance(positions, dict) else None
        if isinstance(positions, str | os.PathLike):
            p = str(positions)
            if not os.path.exists(p):
                raise QInspectError("no such file or folder", p)
            with open(p, "rb") as fh:
                head = fh.read(8)
            if head.startswith(b"\x89HDF"):
                from qinspect.io.vitis import load_quantized_model

                positions = load_quantized_model(p).positions()
            else:
                positions = read_positions_json(p)
        if isinstance(positions, PositionsTable):
            positions_file, recorded, positions = positions.path or positions_file, positions.options, positions.table
        self.check_options_of(recorded, positions_file)
        if isinstance(positions, dict) and isinstance(positions.get("positions"), dict):
            positions = positions["positions"]
        if not isinstance(positions, dict):
            raise QInspectError("positions must be an object keyed by layer, then tensor")
        missing = []
        for slot in self.graph.slots:
            v = positions.get(slot[0], {}).get(slot[1]) if isinstance(positions.get(slot[0]), dict) else None
            if v is None:
                missing.append(f"{slot[0]}:{slot[1]}")
            else:
                self.graph.set_pos(slot, checked_position(slot, v, positions_file))
        if not missing:
            from qinspect.dpu.constraints import check_constraints

            broken = check_constraints(self.graph)
            if broken:
                # Out of these limits the integer pipeline's shifts leave int64 (an add read 58 bits apart wrapped
                # to 0), and no DPU runs such positions anyway: there is no board result to emulate.
                raise QInspectError(f"{len(broken)} position constraint(s) of the DPU broken, first {broken[0]}: "
                                    "no DPU runs these positions (the quantizer and its compiler keep them within "
                                    "the shift limits), so there is nothing to emulate; calibrate gives positions "
                                    "that hold", positions_file)
        return missing

    def check_options_of(self, recorded: Any, path: str | None) -> None:
        """Refuse positions recorded under other weight-changing quantizer options than this graph's
        (``recorded``: the ``quantizer_options`` a ``calibrate --json`` file holds): positions of other
        weights (CLE on against off) would be read against these as if they were theirs."""
        if not isinstance(recorded, dict) or self.graph.options is None:
            return
        try:
            theirs = QuantizerOptions.from_dict(recorded)
        except (ValueError, TypeError) as exc:
            raise QInspectError(f"its quantizer_options are not readable ({first_line(exc)})", path) from None
        differ = self.graph.options.weight_differences(theirs)
        if differ:
            raise QInspectError(f"these positions were calibrated with {', '.join(differ)}, but the model is "
                                f"rewritten here with {self.graph.options.describe()}: they belong to other "
                                "weights; give the same quantizer options (--no-cle, --cle-steps, --cle-to-relu6, "
                                "--convert-relu6-to-relu) as the calibrate run", path)
        if theirs.narrow_activations != self.graph.options.narrow_activations:
            def said(o: QuantizerOptions) -> str:
                return ("--target DPUCADF8H (activations in [-127, 127])" if o.narrow_activations else
                        f"--target {o.target}" if o.target else "no --target (activations in [-128, 127])")

            raise QInspectError(f"these positions were calibrated with {said(theirs)}, but this run has "
                                f"{said(self.graph.options)}: positions are chosen for one activation range; "
                                "give the calibrate run's --target, or calibrate again", path)

    # -- what the GUI and reports show ----------------------------------------------------------
    @property
    def positions(self) -> dict[str, dict[str, int]]:
        """Current positions keyed like positions.json."""
        return self.graph.positions_json()

    @property
    def rewrites(self) -> list[Rewrite]:
        """The graph rewrites, in words, with the layers they touched."""
        return list(self.graph.rewrites)

    @property
    def adjustments(self) -> list[Adjustment]:
        """DPU constraint adjustments (before/after) made after calibration."""
        return list(self.graph.adjustments)

    def rewrites_for(self, layer: str) -> list[Rewrite]:
        """Rewrites that touched a layer (float-model or node name)."""
        node = self.graph[layer] if layer in self.graph else None
        names = {layer, *(node.origin if node else [])}
        return [r for r in self.graph.rewrites if names & set(r.layers)]

    def node_for(self, float_layer: str) -> Node | None:
        """The node whose output corresponds to a float-model layer (last node with it in ``origin``)."""
        found = None
        for n in self.graph.nodes:
            if float_layer in n.origin or n.name == float_layer:
                found = n
        return found

    # -- running ---------------------------------------------------------------------------------
    def run(self, data: Any, layers: Iterable[str] | None = None, batch_size: int = DEFAULT_BATCH,
            stats_factory: Callable[[], Any] | None = None, keep_int8: bool = False, keep_float: bool = False,
            isolated: bool = True, progress: Callable[[int], None] | None = None,
            on_output: Callable[[str, np.ndarray, np.ndarray], None] | None = None,
            max_samples: int | None = None) -> dict[str, LayerResult]:
        """Run the emulator over ``data`` (array, dict, capture or iterable of batches); only its first
        ``max_samples`` samples when given.

        ``layers``: node names (or float-model layer names) to report; all nodes when None.
        ``on_output(name, float_ref, int8_as_float)`` sees every model output of every batch, whatever
        ``layers`` holds (task-level figures such as top-1 agreement).
        """
        g = self.graph
        for slot in g.slots:
            if g.pos(slot) is None:
                raise QInspectError(f"no position for {slot[0]}:{slot[1]}: calibrate or load positions first")
        wanted = self._resolve(layers)
        results = {n.name: self._result(n) for n in g.nodes if n.name in wanted}
        fev, iev, isoev = Evaluator(g, "float"), Evaluator(g, "int"), Evaluator(g, "int")
        done = 0
        with naming_file(self.source):
            for inputs in _data_batches(g, data, batch_size):
                if max_samples is not None:
                    if done >= max_samples:
                        break
                    inputs = {k: v[:max_samples - done] for k, v in inputs.items()}
                for ev in (fev, iev, isoev):
                    ev.use_captured(inputs)
                self._walk(inputs, fev, iev, isoev, results, stats_factory, keep_int8, keep_float, isolated,
                           on_output)
                done += len(next(iter(inputs.values())))
                if progress is not None:
                    progress(done)
        for r in results.values():
            if r.chunks_q:
                r.int8 = np.concatenate(r.chunks_q)
                r.chunks_q = []
            if r.chunks_f:
                r.float_ref = np.concatenate(r.chunks_f)
                r.chunks_f = []
        return results

    def _resolve(self, layers: Iterable[str] | None) -> set[str]:
        if layers is None:
            return {n.name for n in self.graph.nodes}
        out = set()
        for name in layers:
            if name in self.graph:
                out.add(name)
                continue
            node = self.node_for(name)
            if node is None and f"quant_{name}" in self.graph:
                node = self.graph[f"quant_{name}"]
            if node is None:
                raise QInspectError(f"no layer named {name} in the model")
            out.add(node.name)
        return out

    def _result(self, n: Node) -> LayerResult:
        g = self.graph
        act = g.fused_activation(n) if n.op in CONV_OPS + ("add",) else None
        slot = n.out_slot or n.pre_slot
        if slot is None and n.op in TRANSPARENT_OPS and n.device == "DPU":
            # a pad, flatten or reshape on the DPU moves its input's codes: they are at that position
            slot = g.output_slot(n.name)
        return LayerResult(n.name, n.op, n.device, n.cpu_reason, list(n.origin), g.pos(slot),
                           {k: g.pos(s) for k, s in n.weight_slots.items()},
                           fused_into=act.name if act is not None and act.out_slot is not None else None,
                           position_of_input=n.out_slot is None and n.pre_slot is not None)

    def _walk(self, inputs: dict[str, np.ndarray], fev: Evaluator, iev: Evaluator, isoev: Evaluator,
              results: dict[str, LayerResult], stats_factory: Callable[[], Any] | None, keep_int8: bool,
              keep_float: bool, isolated: bool,
              on_output: Callable[[str, np.ndarray, np.ndarray], None] | None = None) -> None:
        g = self.graph
        outputs = set(g.outputs) if on_output is not None else set()
        remaining = {n.name: len(g.consumers(n.name)) for n in g.nodes}
        walk = None if self.reference is None else ReferenceWalk(
            self.reference, inputs, {n.name for n in g.nodes if n.op != "input"})
        ref: dict[str, Value] = {}
        acc: dict[str, Value] = {}
        iso_fused: dict[str, Value] = {}
        # Isolated values are needed only for reported nodes (and the fused producer of a reported
        # activation, whose isolated result the activation forwards).
        need_iso = set(results)
        for name in results:
            for i in g[name].inputs:
                if g.fused_activation(g[i]) is g[name]:
                    need_iso.add(i)
        for node in g.nodes:
            if node.op == "input":
                if node.name not in inputs:
                    raise QInspectError(f"no data for model input {node.name}")
                v = Value(f=np.asarray(inputs[node.name], np.float32))
                ref[node.name] = acc[node.name] = v
                iv: Value | None = v
            else:
                if walk is not None and walk.has(node.name):
                    ref[node.name] = walk.get(node.name)
                else:
                    ref[node.name] = fev.node(node, [ref[i] for i in node.inputs])
                acc[node.name] = iev.node(node, [acc[i] for i in node.inputs])
                iv = None
                if isolated and node.name in need_iso:
                    iins = []
                    for i in node.inputs:
                        if i in iso_fused:
                            iins.append(iso_fused.pop(i))
                            continue
                        a = acc[i]
                        if a.quantized and not isinstance(a, _FusedValue):
                            narrow = g.output_code_min(i) > -128
                            iins.append(Value(q=quantize(ref[i].float(), a.pos, Round.HALF_UP, narrow), pos=a.pos))
                        else:
                            iins.append(Value(f=ref[i].float()))
                    iv = isoev.node(node, iins)
                    if isinstance(iv, _FusedValue):
                        iso_fused[node.name] = iv
            if node.name in outputs:
                on_output(node.name, ref[node.name].float(), acc[node.name].float())
            r = results.get(node.name)
            if r is not None:
                self._update(node, r, ref[node.name], acc[node.name], iv, stats_factory, keep_int8, keep_float,
                             g.output_code_min(node.name))
            for i in node.inputs:
                remaining[i] -= 1
                if remaining[i] <= 0:
                    ref.pop(i, None)
                    acc.pop(i, None)

    @staticmethod
    def _update(node: Node, r: LayerResult, ref: Value, acc: Value, iso: Value | None,
                stats_factory: Callable[[], Any] | None, keep_int8: bool, keep_float: bool,
                code_min: int = -128) -> None:
        rf = ref.float()
        fused = isinstance(acc, _FusedValue) and acc.has_pre
        if stats_factory is not None:
            for attr, v in (("accumulated", acc), ("isolated", iso)):
                if v is None:
                    continue
                if getattr(r, attr) is None:
                    setattr(r, attr, stats_factory())
                st = getattr(r, attr)
                quant = v.quantized and not (isinstance(v, _FusedValue) and v.has_pre)
                if quant:  # code_min: -127 for a narrow-range quantizer (DPUCADF8H)
                    lo, hi = code_min * 2.0 ** -v.pos, 127 * 2.0 ** -v.pos
                    st.update(rf, v.float(), q=v.codes(), qmin=code_min, clip_lo=lo, clip_hi=hi)
                else:
                    st.update(rf, v.float())
        if keep_int8 and acc.quantized and not fused:
            r.chunks_q.append(acc.codes().copy())
        if keep_float:
            r.chunks_f.append(rf.copy())


def recalibrator(source: Any, calib: Any, options: QuantizerOptions) -> Callable[[dict[str, Any]], DpuGraph]:
    """``rebuild(change)``: the model of ``source`` rewritten under ``options`` with ``change`` applied
    (``{"cle_to_relu6": True}``) and recalibrated on ``calib``, which must be what the model as given was
    calibrated on, every sample of it: a remedy measured on the rebuilt graph is then the option's alone
    (how diagnose measures quantizer options as remedies)."""

    def rebuild(change: dict[str, Any]) -> DpuGraph:
        return Emulator.from_model(source, calib, options=options.with_(**change)).graph

    return rebuild


def _shapes_from(graph: DpuGraph, mgraph: Any) -> None:
    for layer in mgraph.leaves():
        if layer.class_name == "InputLayer" and layer.name in graph:
            graph[layer.name].output_shape = layer.output_shape


def refuse_full_range(graph: DpuGraph, path: str) -> None:
    """Refuse narrow activations (a DPUCADF8H target) for a quantized model none of whose input or activation
    quantizers says ``narrow_range``: its positions were chosen for [-128, 127] (as a positions file calibrated
    without the target is refused for it)."""
    acts = [spec for spec in graph.slots.values() if spec.kind != "weight"]
    if acts and not any(spec.narrow_range for spec in acts):
        raise QInspectError(f"its quantizers code activations in [-128, 127] (no narrow_range, first "
                            f"{acts[0].layer}:{acts[0].key}), but the target is DPUCADF8H (activations in "
                            "[-127, 127]): positions are chosen for one activation range; choose another target "
                            "(--target, or the window's Quantizer > Target DPU), or give the quantized.h5 of a "
                            "DPUCADF8H (narrow_range) quantization", path)


# ------------------------------------------------------------------------------------------------
# Comparing with a Vitis dump_model folder


@dataclass
class TensorMatch:
    """One dumped tensor against the emulator."""

    name: str  # file name without folder and extension
    layer: str
    tensor: str
    kind: str  # "activation" or "weight"
    dtype: str  # "int8" or "float32"
    total: int
    matched: int
    max_lsb: float  # int8: max |code difference|; float32: max |difference| in units of the position (NaN: none)
    max_abs: float
    gating: bool  # counts for the exit code
    first_mismatch: dict[str, Any] | None = None
    sim_matched: int | None = None  # int8 mismatches: how many the float32 simulation gets right
    note: str = ""
    histogram: list[int] = field(default_factory=list)  # int8: histogram[d] values that differ by d LSB
    cause: str = ""  # what the codes show (qinspect.dpu.mismatch_cause), part of the note too
    isolated_matched: int | None = None  # codes equal when the layer is fed the dump's own input codes

    @property
    def ok(self) -> bool:
        """True when every value matches."""
        return self.matched == self.total

    @property
    def difference(self) -> str:
        """The largest difference in words: in LSB where the tensor has a position, else absolute (a
        float file of a tensor without one: an LSB figure there would be a raw difference mislabelled)."""
        if math.isinf(self.max_abs):
            return "NaN"
        if math.isnan(self.max_lsb):
            return f"{self.max_abs:.4g} (absolute, no position)"
        return f"{self.max_lsb:g} LSB"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``name``, ``matched``, ``total``, ``max_lsb`` first; ``max_lsb`` null for a
        float file of a tensor without a position: ``max_abs`` holds its difference)."""
        d = {"name": self.name, "matched": self.matched, "total": self.total,
             "max_lsb": None if math.isnan(self.max_lsb) else self.max_lsb,
             "layer": self.layer, "tensor": self.tensor, "kind": self.kind, "dtype": self.dtype,
             "max_abs": self.max_abs, "gating": self.gating, "first_mismatch": self.first_mismatch}
        if self.sim_matched is not None:
            d["sim_matched"] = self.sim_matched
        if self.histogram:
            d["lsb_histogram"] = self.histogram
        if self.note:
            d["note"] = self.note
        if self.cause:
            d["cause"] = self.cause
        if self.isolated_matched is not None:
            d["isolated_matched"] = self.isolated_matched
        return d


# Tolerance for float files of pre-quantized activations (softmax): the quantizer's TF softmax and
# numpy's differ in the last float32 bits.
SOFTMAX_ATOL = 2e-6


def compare_dump(emu: Emulator, dump: Any, inputs: np.ndarray | dict[str, np.ndarray]) -> list[TensorMatch]:
    """Emulate the dump inputs (one batch, as ``dump_model`` does) and compare every dumped tensor.

    int8 files must match exactly. A pre-quantized activation (softmax) keeps a meaningless int8 file
    (probabilities times 2^p, truncated): its ``_float`` file is compared instead, within
    :data:`SOFTMAX_ATOL`. Other ``_float`` files are reported (not gating): they show where the
    simulation's float values and the emulator's agree.
    """
    g = emu.graph
    arrays = batch_inputs(g, inputs)
    for name, arr in arrays.items():
        check_input_shape(g, name, arr)
    n = len(next(iter(arrays.values())))
    n_dump = dumped_samples(g, dump)
    # (the commands refuse it first, naming their inputs file: dump_checks.check_samples)
    refuse_short_inputs(n_dump, n, "the inputs given")
    if n_dump is not None and n_dump < n:
        # dump_model runs predict(dataset, steps=1): with more inputs than one batch, only the first
        # batch is dumped. Compare that many samples.
        dump.notes.append(f"the dump holds {n_dump} samples (dump_model predicts one batch): compared the first "
                          f"{n_dump} of the {n} inputs")
        arrays = {k: v[:n_dump] for k, v in arrays.items()}
        n = n_dump
    int_vals = Evaluator(g, "int").run(arrays)
    sim_vals: dict[str, Value] | None = None
    out: list[TensorMatch] = []
    dumped: dict[str, dict[str, np.ndarray]] = {}  # node -> {"dump": its int8 codes, a row per sample}
    for e in dump.entries:
        if e.path is None:
            continue
        base = os.path.basename(e.path)[: -len(".bin")]
        if e.layer not in g:
            out.append(TensorMatch(base, e.layer, e.tensor, e.kind, e.dtype, 0, 0, 0.0, 0.0, True,
                                   note="layer not in the emulated graph"))
            continue
        node = g[e.layer]
        if e.kind == "weight":
            w = node.weights.get(e.tensor)
            slot = node.weight_slots.get(e.tensor)
            if w is None:
                out.append(TensorMatch(base, e.layer, e.tensor, e.kind, e.dtype, 0, 0, 0.0, 0.0, True,
                                       note="weight not in the emulated graph"))
                continue
            got = w.reshape(-1).astype(np.float32)
            if e.dtype == "int8":
                p = g.pos(slot)
                if p is None:
                    continue
                spec = g.slots[slot]
                got_q = quantize(w, p, Round(spec.round_mode), spec.narrow_range).reshape(-1)
                ref = dump.read(e, got_q.size)
                m = _match_int(base, e, ref, got_q, gating=True)
                if not m.ok:
                    m.note = m.cause = mismatch_cause(ref, got_q, pos=p, weight=True) or ""
                    _locate(m, w.shape, samples=False)
                out.append(m)
            else:
                ref = dump.read(e, got.size)
                out.append(_match_float(base, e, ref, got, g.pos(slot) if slot is not None else None, gating=False))
            continue
        v = int_vals[e.layer]
        is_pre = node.pre_slot is not None and node.out_slot is None
        vf = v.float()
        count = int(np.prod(vf.shape))
        if count % max(n, 1) != 0:
            raise QInspectError(f"layer {e.layer} output does not split into {n} samples")
        if e.dtype == "int8":
            ref = dump.read(e, count)
            if is_pre:
                t = TensorMatch(base, e.layer, e.tensor, e.kind, e.dtype, int(ref.size), int(ref.size), 0.0, 0.0,
                                False, note="pre-quantized activation (softmax-like): the int8 file is the "
                                "float output times 2^p truncated and means nothing; its _float file is compared")
                out.append(t)
                continue
            m = _match_int(base, e, ref, v.codes().reshape(-1), gating=True)
            _locate(m, vf.shape, samples=True)
            dumped[e.layer] = {"dump": ref.reshape(n, -1)}
            if not m.ok:
                if sim_vals is None:
                    sim_vals = Evaluator(g, "sim").run(arrays)
                sq = sim_vals[e.layer].codes().reshape(-1)
                m.sim_matched = int(np.count_nonzero(sq == ref))
                source, source_name = _input_copy(g, dump, node, count)
                m.cause = "" if m.sim_matched == m.total else mismatch_cause(
                    ref, v.codes(), n, pos=v.pos, float_copy=_float_copy(dump, e, count),
                    others=same_size_codes(int_vals, e.layer, count), code_min=g.output_code_min(e.layer),
                    source=source, source_name=source_name) or ""
                m.note = ("the quantizer's float32 simulation reproduces the dump here: the difference is a "
                          "simulation-versus-DPU gap (DPU_NUMERICS.md 4b)" if m.sim_matched == m.total else
                          m.cause or "the float32 simulation differs too")
            out.append(m)
        else:
            ref = dump.read(e, count)
            got = vf.reshape(-1)
            pos = v.pos if v.quantized and not isinstance(v, _FusedValue) else None
            out.append(_locate(_match_float(base, e, ref, got, pos, gating=is_pre,
                                            atol=SOFTMAX_ATOL if is_pre else 0.0), vf.shape, samples=True))
    _isolate(g, int_vals, dumped, out)
    return out


def _isolate(g: DpuGraph, int_vals: dict[str, Value], dumped: dict[str, dict[str, np.ndarray]],
             rows: list[TensorMatch]) -> None:
    """Recompute each differing activation from the dump's own input codes: equal, it only inherits an
    earlier difference (said instead of any other sentence); still different, the difference arises there."""
    from qinspect.dpu.board_compare import recompute_from_codes

    ev = Evaluator(g, "int")
    for m in rows:
        if m.ok or m.kind != "activation" or m.dtype != "int8" or not m.gating or m.layer not in dumped:
            continue
        iso = recompute_from_codes(g, ev, int_vals, m.layer, "dump", dumped)
        if iso is None:
            continue
        m.isolated_matched = int(np.count_nonzero(iso.reshape(-1) == dumped[m.layer]["dump"].reshape(-1)))
        if m.isolated_matched == m.total:
            inherited = "fed the dump's own input codes, the emulator gives the dump's codes: inherited from upstream"
            m.note = f"{m.note}; {inherited}" if m.sim_matched == m.total else inherited
        elif EDITED not in m.cause:  # an edited file arises nowhere in the model: said already
            m.note += "; fed the dump's own input codes, the emulator still differs: " + (
                "the difference arises at this tensor" if m.cause else "it arises in this layer")


def _locate(m: TensorMatch, shape: tuple[int, ...], samples: bool) -> TensorMatch:
    """Add where the first mismatch is, as the tensor's own index (``sample`` and ``at``: the index within the
    sample, (h, w, c) for an image), beside the flat file ``index``."""
    fm = m.first_mismatch
    if fm is not None and int(np.prod(shape)) == m.total:
        idx = [int(i) for i in np.unravel_index(fm["index"], shape)]
        if samples:
            fm["sample"], idx = idx[0], idx[1:]
        fm["at"] = idx
    return m


def where_in_dump(fm: dict[str, Any]) -> str:
    """A dump_model row's first mismatch in words: the flat index, then the sample and the index within it."""
    at = fm.get("at")
    where = ("" if at is None else f" (sample {fm['sample']}, at {tuple(at)})" if "sample" in fm
             else f" (at {tuple(at)})")
    return f"[{fm['index']}]{where} dump {fm['expected']} emulator {fm['got']}"


def _float_copy(dump: Any, e: Any, count: int) -> np.ndarray | None:
    """The dump's float32 file of the same tensor as int8 entry ``e`` (its dequantized codes), if readable."""
    twin = next((f for f in dump.entries if f.path and f.dtype == "float32" and f.kind == e.kind
                 and f.layer == e.layer and f.tensor == e.tensor), None)
    try:
        return None if twin is None else dump.read(twin, count)
    except QInspectError:
        return None  # its own row says what is wrong with it


def _input_copy(g: DpuGraph, dump: Any, node: Any, count: int) -> tuple[np.ndarray | None, str]:
    """For the quantizer of a model input: the dump's own float copy of that input (what the quantizer
    rounded) and its file name in words; ``(None, "")`` for any other node or an unreadable copy."""
    if not quantizes_model_input(g, node) or len(node.inputs) != 1:
        return None, ""
    entry = next((f for f in dump.entries if f.path and f.dtype == "float32" and f.kind == "activation"
                  and f.layer == node.inputs[0]), None)
    try:
        x = None if entry is None else dump.read(entry, count)
    except QInspectError:
        return None, ""  # its own row (or the sample check) says what is wrong with it
    return x, f"the dump's own float copy of the input ({os.path.basename(entry.path)})" if entry else ""


def first_dump_divergence(g: DpuGraph, matches: list[TensorMatch]) -> TensorMatch | None:
    """The differing gating tensor whose layer comes first in topological order (a weight before its
    layer's output); None when every gating tensor matches. The differing activations after it are marked
    "downstream of the first divergence" in their note: they may only inherit it."""
    order = {n.name: i for i, n in enumerate(g.nodes)}
    bad = [m for m in matches if m.gating and not m.ok]
    if not bad:
        return None
    first = min(bad, key=lambda m: (order.get(m.layer, len(order)), m.kind != "weight"))
    start = order.get(first.layer, len(order))
    for m in bad:
        if m is not first and m.kind == "activation" and order.get(m.layer, -1) > start and \
                "downstream of the first divergence" not in m.note:
            m.note = (m.note + "; " if m.note else "") + "downstream of the first divergence"
    return first


def dumped_samples(g: DpuGraph, dump: Any) -> int | None:
    """How many samples the dump holds, from the model input's float file (None if unknown)."""
    for e in dump.entries:
        if e.kind == "activation" and e.dtype == "float32" and e.layer in g.inputs and e.path:
            shape = g[e.layer].output_shape
            if not shape or any(d is None for d in shape[1:]):
                return None
            per = int(np.prod(shape[1:])) * 4
            from qinspect.io.paths import data_file_size

            size = data_file_size(e.path, "the dump has the model input's .bin file")
            if size == 0:
                raise QInspectError("holds 0 bytes: the dump's copy of the model input is empty (an interrupted "
                                    "dump?)", e.path)
            return size // per if per and size % per == 0 else None
    return None


def _first(ref: np.ndarray, got: np.ndarray) -> dict[str, Any] | None:
    bad = np.flatnonzero(ref != got)
    if bad.size == 0:
        return None
    i = int(bad[0])
    return {"index": i, "expected": ref[i].item(), "got": got[i].item()}


def _match_int(base: str, e: Any, ref: np.ndarray, got: np.ndarray, gating: bool) -> TensorMatch:
    d = np.abs(ref.astype(np.int32) - got.astype(np.int32))
    return TensorMatch(base, e.layer, e.tensor, e.kind, e.dtype, int(ref.size), int(np.count_nonzero(d == 0)),
                       float(d.max()) if d.size else 0.0, float(d.max()) if d.size else 0.0, gating,
                       _first(ref, got), histogram=[int(x) for x in np.bincount(d.reshape(-1))])


def _match_float(base: str, e: Any, ref: np.ndarray, got: np.ndarray, pos: int | None, gating: bool,
                 atol: float = 0.0) -> TensorMatch:
    with np.errstate(invalid="ignore"):
        d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    ok = d <= atol
    # a NaN differs from everything: its difference is infinite, never the 0 a NaN-skipping max would give
    mx = float(np.where(np.isnan(d), np.inf, d).max()) if d.size else 0.0
    lsb = mx * 2.0**pos if pos is not None else math.nan
    m = TensorMatch(base, e.layer, e.tensor, e.kind, e.dtype, int(ref.size), int(np.count_nonzero(ok)), lsb,
                    mx, gating, None if ok.all() else _first(ref, got))
    nan_dump, nan_emu = int(np.isnan(ref).sum()), int(np.isnan(got).sum())
    if nan_dump or nan_emu:
        m.note = "; ".join(f"{k} NaN value(s) in the {who}" for k, who in ((nan_dump, "dump"), (nan_emu, "emulator"))
                           if k)
    return m
