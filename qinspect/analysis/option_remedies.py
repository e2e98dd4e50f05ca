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

from collections.abc import Callable
from typing import Any

import numpy as np

from qinspect.analysis.advisor import command
from qinspect.analysis.findings import Finding
from qinspect.analysis.remedies import Remedy
from qinspect.analysis.sensitivity import sensitivity
from qinspect.dpu.dpu_graph import DpuGraph

Rebuild = Callable[[dict[str, Any]], DpuGraph]


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


class OptionTrials:
    """Option remedies, each option set built and measured once however many findings it serves."""

    def __init__(self, rebuild: Rebuild, sample: dict[str, np.ndarray], base_sqnr_db: float, mode: str) -> None:
        self.rebuild = rebuild
        self.sample = sample
        self.base = base_sqnr_db
        self.mode = mode
        self._done: dict[tuple, Remedy] = {}

    def remedies(self, graph: DpuGraph, f: Finding) -> list[Remedy]:
        """The measured option remedies of ``f`` (none when no option applies)."""
        return [self._measure(graph, change) for change in candidate_options(graph, f)]

    def _measure(self, graph: DpuGraph, change: dict[str, Any]) -> Remedy:
        key = tuple(sorted(change.items()))
        if key not in self._done:
            trial = self.rebuild(change)
            n = len(next(iter(self.sample.values())))
            sens = sensitivity(trial, self.sample, batch_size=max(n, 1), whatifs=False, mode=self.mode)
            agree, total = sens.top1
            sqnr = sens.output.sqnr_db
            base = graph.options.to_dict() if graph.options is not None else {}
            kept = {k: base[k] for k in ("calib_batch_size",) if k in base}  # what the run was calibrated with
            call = command({**kept, **change}, [])
            what = ", ".join(f"{k}={v!r}" for k, v in change.items())
            self._done[key] = Remedy("quantizer_option", f"quantize with {what} (recalibrated and measured "
                                     f"here): {call}", sqnr, sqnr - self.base, agree / total if total else None)
        return self._done[key]
