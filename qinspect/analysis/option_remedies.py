"""Quantizer options as remedies: what a user can change in the ``quantize_model`` call, tried in the
emulator before it is advised.

A per-tensor weight position cannot serve a depthwise kernel whose channels span many bits; the
quantizer's cure is cross-layer equalization (CLE), but by default it skips every pair joined by a
ReLU6 (``cle_to_relu6=False``), which is every pair of MobileNet-class models. The remedies a user can
act on are then options: ``include_cle=True`` when CLE was off, ``cle_to_relu6=True`` or
``convert_relu6_to_relu=True`` on a model with ReLU6. Each is measured by rebuilding the graph under the
option, recalibrating it on the same calibration data (the caller's ``rebuild``) and running it on the
diagnosis' samples against the float model's own function (both ReLU6 options change the quantized
model's function; the reference keeps the float one, :mod:`qinspect.dpu.reference`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from qinspect.analysis.advisor import command
from qinspect.analysis.findings import Finding, ev
from qinspect.analysis.metrics import ratio_se_db
from qinspect.analysis.remedies import Remedy, attach
from qinspect.analysis.sensitivity import sensitivity
from qinspect.dpu.dpu_graph import CLE_GROUPED_TAIL, DpuGraph
from qinspect.dpu.options import DEFAULT_CALIB_BATCH, option_text

Rebuild = Callable[[dict[str, Any]], DpuGraph]
QUANTIZER_STOPS = "quantizer_stops"  # evidence of the finding whose option is the run the quantizer can make


def has_relu6(graph: DpuGraph) -> bool:
    """True when a ReLU6 (a ReLU capped at 6, standalone or fused into a conv) is in the graph."""
    return any((n.op == "relu" and n.params.get("max_value") == 6.0) or n.params.get("act") == "relu6"
               for n in graph.nodes)


def candidate_options(graph: DpuGraph, f: Finding) -> list[dict[str, Any]]:
    """The option changes that could cure finding ``f`` (a ``channel_spread`` that CLE did not reach)."""
    if f.kind != "channel_spread":
        return []
    state = str(f.evidence.get("cle", {}).get("value", ""))
    if state.startswith(("applied", "unknown")):
        return []
    opts = graph.options
    out: list[dict[str, Any]] = []
    if opts is not None and not opts.include_cle:
        out.append({"include_cle": True})
    if has_relu6(graph) and (opts is None or opts.include_cle):
        if opts is None or not opts.cle_to_relu6:
            out.append({"cle_to_relu6": True})
        if opts is None or not opts.convert_relu6_to_relu:
            out.append({"convert_relu6_to_relu": True})
    return out


def model_option_changes(graph: DpuGraph) -> list[dict[str, Any]]:
    """Option changes worth trying on the whole model, whatever a single layer shows: CLE when it was
    off, and, with CLE on, ``cle_to_relu6`` on a model with ReLU6 (every pair joined by one is skipped
    by default). ``convert_relu6_to_relu`` changes the model's function, so it is left to ``advise``.
    And a larger ``calib_batch_size`` when the calibration's batches chose different positions for some
    tensors: the quantizer keeps the most common one, and small batches vote noisily."""
    opts = graph.options
    out: list[dict[str, Any]] = []
    if graph.quantizer_stop_note():
        out.append({"include_cle": False})  # the quantizer stops in CLE: the call it can run
    elif opts is not None and not opts.include_cle:
        out.append({"include_cle": True})
    elif has_relu6(graph) and (opts is None or not opts.cle_to_relu6):
        out.append({"cle_to_relu6": True})
    bigger = larger_calib_batch(graph)
    if bigger is not None:
        out.append({"calib_batch_size": bigger})
    return out


def larger_calib_batch(graph: DpuGraph) -> int | None:
    """The calibration batch size worth trying when votes split (4x, at least the quantizer's default,
    at most every calibration sample), or None."""
    opts = graph.options
    if opts is None or not graph.split_votes or graph.calib_samples <= opts.calib_batch_size:
        return None
    return min(graph.calib_samples, max(4 * opts.calib_batch_size, DEFAULT_CALIB_BATCH))


def changed_nodes(base: DpuGraph, other: DpuGraph) -> list[str]:
    """The nodes of ``base`` whose weights or positions differ in ``other`` (another build of the same
    model), in graph order: what an option changed."""
    out = []
    for node in base.nodes:
        if node.name not in other:
            continue
        theirs = other[node.name].weights
        slots = {*node.weight_slots.values(), node.out_slot, node.pre_slot} - {None}
        moved = any(base.pos(slot) != other.pos(slot) for slot in slots if slot in other.slots)
        if moved or (node.weights and any(k not in theirs or theirs[k].shape != w.shape
                                          or not np.array_equal(theirs[k], w) for k, w in node.weights.items())):
            out.append(node.name)
    return out


class OptionTrials:
    """Option remedies, each option set built and measured once however many findings it serves."""

    def __init__(self, rebuild: Rebuild, sample: dict[str, np.ndarray], base_sqnr_db: float, mode: str,
                 base_noise: np.ndarray | None = None) -> None:
        self.rebuild = rebuild
        self.sample = sample
        self.base = base_sqnr_db
        self.mode = mode
        self.base_noise = base_noise  # per-sample output error power as given (gains' spread, paired)
        self._done: dict[tuple, Remedy] = {}
        self._graphs: dict[tuple, DpuGraph] = {}

    def remedies(self, graph: DpuGraph, f: Finding) -> list[Remedy]:
        """The measured option remedies of ``f`` (none when no option applies, or when the quantizer
        cannot run the model under it)."""
        return [self._measure(graph, change) for change in candidate_options(graph, f) if self._runs(change)]

    def _runs(self, change: dict[str, Any]) -> bool:
        """Whether vai_q_tensorflow2 can quantize the model under ``change`` (CLE stops on a grouped tail)."""
        return self.rebuilt(change).quantizer_stop_note() is None

    def rebuilt(self, change: dict[str, Any]) -> DpuGraph:
        """The graph rebuilt and recalibrated under ``change`` (once per change)."""
        key = self._key(change)
        if key not in self._graphs:
            self._graphs[key] = self.rebuild(change)
        return self._graphs[key]

    def model_findings(self, graph: DpuGraph, names: dict[str, str], tried: set[str]) -> list[Finding]:
        """One finding per model-wide option change (:func:`model_option_changes`) not already among
        ``tried`` (remedy actions), measured: its origin is the first layer the option changes, its
        ``affects`` the others (``names``: node -> layer name)."""
        out = []
        stop = graph.quantizer_stop_note()
        for change in model_option_changes(graph):
            if not self._runs(change):
                continue
            remedy = self._measure(graph, change)
            if remedy.action in tried:
                continue
            nodes = changed_nodes(graph, self.rebuilt(change))
            if stop and change.get("include_cle") is False:
                # at the first grouped conv the quantizer's CLE stops on (the layer the sentence names)
                tail = next(rw.layers[1] for rw in graph.rewrites if rw.kind == CLE_GROUPED_TAIL)
                f = Finding(tail, "quantizer_option", 0.0, {
                    "option": ev(change, "the quantize_model option changed (the rest as given)"),
                    "layers_changed": ev(len(nodes), "layers whose weights or positions the option changes"),
                    "why": ev(stop, "why the options as given are no run the quantizer can make"),
                    QUANTIZER_STOPS: ev(True, "the options as given stop the quantizer: listed first, whatever "
                                              "its gain"),
                }, f"{stop}. The remedy below is that run, recalibrated and measured here.", origin=tail)
                attach(f, remedy)
                out.append(f)
                continue
            if not nodes:
                continue
            layers = list(dict.fromkeys(names.get(n, n) for n in nodes))
            what = option_text(change)
            if "calib_batch_size" in change:
                b = graph.options.calib_batch_size if graph.options is not None else "?"
                skipped = (f"calibration batches of {b} chose different positions for {len(graph.split_votes)} "
                           "tensor(s), and the quantizer keeps the most common one (the first seen on a tie)")
            else:
                skipped = "CLE is off" if "include_cle" in change else (
                    "CLE skips every conv pair joined by a ReLU6 (cle_to_relu6=False, the default)")
            evidence = {
                "node": ev(nodes[0], "the emulator node (quantized model's layer name)"),
                "option": ev(change, "the quantize_model option changed (the rest as given)"),
                "layers_changed": ev(len(nodes), "layers whose weights or positions the option changes"),
                "why": ev(skipped, "what the options as given leave undone"),
                "cure": ev("steadies the vote" if "calib_batch_size" in change else "equalizes their channel ranges",
                           "what the option does to those layers"),
            }
            consequence = ("so small batches vote noisily" if "calib_batch_size" in change
                           else f"so {len(nodes)} layer(s) keep unequal channel ranges")
            advice = (f"{skipped}, {consequence}: quantize with {what} (the remedy below, recalibrated and "
                      "measured here).")
            f = Finding(layers[0], "quantizer_option", 0.0, evidence, advice, origin=layers[0], affects=layers[1:])
            attach(f, remedy)
            out.append(f)
        return out

    @staticmethod
    def _key(change: dict[str, Any]) -> tuple:
        return tuple(sorted(change.items()))

    def _measure(self, graph: DpuGraph, change: dict[str, Any]) -> Remedy:
        key = self._key(change)
        if key not in self._done:
            trial = self.rebuilt(change)
            n = len(next(iter(self.sample.values())))
            sens = sensitivity(trial, self.sample, batch_size=max(n, 1), whatifs=False, mode=self.mode)
            agree, total = sens.top1
            sqnr = sens.output.sqnr_db
            base = graph.options.to_dict() if graph.options is not None else {}
            kept = {k: base[k] for k in ("calib_batch_size",) if k in base}  # what the run was calibrated with
            call = command({**kept, **change}, [])
            what = option_text(change)
            se = None if self.base_noise is None else ratio_se_db(self.base_noise, sens.output_noise)
            self._done[key] = Remedy("quantizer_option", f"quantize with {what} (recalibrated and measured "
                                     f"here): {call}", sqnr, sqnr - self.base, agree / total if total else None,
                                     None, None if se is None or not math.isfinite(se) else se, dict(change))
        return self._done[key]
