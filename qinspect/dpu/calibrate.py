"""Calibration as the Vitis quantizer runs it: batch by batch through its float32 fake-quant simulation.

For every calibration batch the whole model runs once with every quantizer choosing its position
from that batch's tensor (method and rounding per tensor type, DPU_NUMERICS.md section 2), and the
next layers see outputs quantized with *that batch's* positions. A shared layer's calls share its
quantizers, as the quantizer's one wrapper per layer does: each call quantizes its own tensor with the
position chosen from it, and assigns it to the shared variable, so the position recorded for the
batch is the one of the call Keras ran last (:mod:`qinspect.io.call_order`). Weights and biases get theirs once,
from the folded, equalized float values. After the last batch each quantizer takes the most common
position over batches (a tie goes to the value seen first), then the DPU constraints
(:mod:`qinspect.dpu.constraints`) adjust them. The batch size therefore changes the result; it is a
parameter here as it is for the quantizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.dpu.constraints import apply_constraints
from qinspect.dpu.dpu_graph import Adjustment, DpuGraph, Slot
from qinspect.dpu.executor import Evaluator, batch_inputs
from qinspect.dpu.fixed_point import Round, choose_position, vote
from qinspect.errors import QInspectError


@dataclass
class CalibrationResult:
    """Everything calibration decided, keyed like the quantizer's positions.json."""

    batch_size: int
    batches: int
    samples: int
    batch_positions: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    pre_refine: dict[str, dict[str, int]] = field(default_factory=dict)
    positions: dict[str, dict[str, int]] = field(default_factory=dict)
    refine_changes: list[dict[str, Any]] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the keys of the reference cases' positions.json where they exist)."""
        return {
            "calib_batch_size": self.batch_size,
            "calib_batches": self.batches,
            "calib_samples": self.samples,
            "positions": self.positions,
            "pre_refine_positions": self.pre_refine,
            "calib_batch_positions": self.batch_positions,
            "refine_changes": self.refine_changes,
            "adjustments": [a.to_dict() for a in self.adjustments],
        }


def iter_batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive batches of ``batch_size`` samples (the last one may be smaller)."""
    if batch_size < 1:
        raise QInspectError(f"batch size must be at least 1, got {batch_size}")
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]


def calibrate(graph: DpuGraph, batches: Iterable[np.ndarray | dict[str, np.ndarray]], batch_size: int = 0,
              constraints: bool = True) -> CalibrationResult:
    """Choose every position of ``graph`` from calibration batches; sets ``graph.positions``.

    ``batches`` yields one array per batch (or a dict for multi-input models). ``batch_size`` is only
    recorded (the batches define it).
    """
    per_batch: dict[Slot, list[int]] = {}
    weight_pos: dict[Slot, int] = {}
    chosen: list[tuple[Slot, int]] = []  # positions chosen while the current node runs
    batch: dict[Slot, tuple[int, int]] = {}  # slot -> (call rank, position) of the call that ran last
    order = {n.name: i for i, n in enumerate(graph.nodes)}

    def position(slot: Slot, tensor: np.ndarray) -> int:
        spec = graph.slots[slot]
        try:
            return choose_position(tensor, spec.method, Round(spec.round_mode), spec.narrow_range)
        except (ValueError, OverflowError):  # NaN or Inf: the inputs were checked, so the model made them
            if np.isfinite(tensor).all():
                raise
            why = ("the model's weights are damaged" if spec.kind == "weight"
                   else "the float model overflows there on finite inputs")
            raise QInspectError(f"{slot[0]}: its {spec.kind} tensor {slot[1]!r} holds NaN or Inf ({why}): no "
                                "position can be chosen") from None

    def source(slot: Slot, tensor: np.ndarray) -> int:
        spec = graph.slots[slot]
        if spec.kind == "weight":
            if slot not in weight_pos:
                weight_pos[slot] = position(slot, tensor)
            p = weight_pos[slot]
        else:
            p = position(slot, tensor)
        chosen.append((slot, int(p)))
        return p

    def assign(node: Any, _value: Any) -> None:
        # The shared variable keeps the value of the call that runs last in Keras' order.
        rank = graph.call_rank.get(node.name, order[node.name])
        for slot, p in chosen:
            if slot not in batch or rank >= batch[slot][0]:
                batch[slot] = (rank, p)
        chosen.clear()

    ev = Evaluator(graph, "sim", position_source=source)
    n_batches = 0
    n_samples = 0
    for b in batches:
        inputs = batch_inputs(graph, b)
        n = len(next(iter(inputs.values())))
        if n == 0:
            continue
        batch.clear()
        ev.run(inputs, keep=(), on_value=assign)
        for slot, (_, p) in batch.items():
            per_batch.setdefault(slot, []).append(p)
        n_batches += 1
        n_samples += n
    if n_batches == 0:
        raise QInspectError("no calibration samples")
    res = CalibrationResult(batch_size=batch_size, batches=n_batches, samples=n_samples)
    # Vote, in slot registration order (the graph's layer order).
    for slot in graph.slots:
        if slot not in per_batch:
            continue
        ps = per_batch[slot]
        graph.set_pos(slot, vote(ps))
        res.batch_positions.setdefault(slot[0], {})[slot[1]] = ps
    graph.calib_samples = n_samples
    graph.split_votes = [slot for slot, ps in per_batch.items() if len(set(ps)) > 1]
    res.pre_refine = graph.positions_json()
    if constraints:
        res.adjustments = apply_constraints(graph)
    res.positions = graph.positions_json()
    for layer, keys in res.pre_refine.items():
        for key, before in keys.items():
            after = res.positions.get(layer, {}).get(key)
            if after is not None and after != before:
                res.refine_changes.append({"layer": layer, "tensor": key, "before": before, "after": after})
    return res
