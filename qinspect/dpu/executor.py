"""Run a :class:`DpuGraph` on data: the DPU integer pipeline, the quantizer's float32 simulation, and
the float reference.

Three evaluators share one walk over the graph:

- ``"int"`` (the emulator's answer): every DPU node runs its integer operator from
  :mod:`qinspect.dpu.ops` on int8 codes. A conv whose output the quantizer leaves unquantized because
  an activation follows is fused: one rounding of the accumulator at the activation's position, as
  the DPU does. CPU nodes (softmax, other activations, unknown ops) compute in float32 on the
  dequantized input and quantize their output if the quantizer gave them a position.
- ``"sim"``: the quantizer's own fake-quant simulation (what ``dump_model`` writes): float32 layers
  on dequantized values with fake-quantized weights, each quantizer rounding the float tensor.
  Calibration runs this evaluator with a *position source* that picks every position from the batch.
- ``"float"``: no quantization at all, and the float model's own functions where the quantizer
  changed the function (true sigmoid instead of the hard sigmoid, the original LeakyReLU alpha, no
  average-pool rescale): the reference every error is measured against.

A node's result is a :class:`Value`: float32 values and, where quantized, int8 codes with their
position. Memory: values are dropped as soon as their last consumer ran (unless kept), so a batch
never holds more than the live frontier of the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qinspect.dpu import cpu_layers, float_ops, ops
from qinspect.dpu._conv_core import _pair
from qinspect.dpu.dpu_graph import CLE_OUT_SCALE, CONV_OPS, TRANSPARENT_OPS, DpuGraph, Node, Slot
from qinspect.dpu.fixed_point import Round, dequantize, quantize
from qinspect.errors import QInspectError

F32 = np.float32
_INT_ACTS = {"linear": None, "relu": "relu", "relu6": "relu6"}
# A batch may carry, beside the model inputs, the float output a capture recorded for a node that has
# no numpy implementation (an ``unsupported`` op), keyed CAPTURED + node name: that output stands in
# for the node in every mode (see qinspect.dpu.emulator).
CAPTURED = "captured:"


@dataclass
class Value:
    """A node's output: float32 values, and int8 codes at ``pos`` when it is quantized."""

    f: np.ndarray | None = None
    q: np.ndarray | None = None
    pos: int | None = None

    @property
    def quantized(self) -> bool:
        """True when the value has a position (codes are available)."""
        return self.pos is not None

    def float(self) -> np.ndarray:
        """float32 values (dequantized codes when only codes are known)."""
        if self.f is None:
            assert self.q is not None and self.pos is not None
            self.f = dequantize(self.q, self.pos)
        return self.f

    def codes(self) -> np.ndarray:
        """int8 codes (exact for a fake-quantized float: ``f * 2^pos`` is an integer)."""
        if self.q is None:
            assert self.f is not None and self.pos is not None
            self.q = np.clip(np.rint(self.f.astype(np.float64) * 2.0**self.pos), -128, 127).astype(np.int8)
        return self.q


# A position source: (slot, tensor to choose it from) -> position. Evaluation uses the graph's
# positions; calibration chooses one per batch.
PositionSource = Callable[[Slot, np.ndarray], int]


def _round(graph: DpuGraph, slot: Slot, default: Round) -> tuple[Round, bool]:
    spec = graph.slots.get(slot)
    if spec is None:
        return default, False
    return Round(spec.round_mode), bool(spec.narrow_range)


class Evaluator:
    """One walk over the graph in one mode (``"int"``, ``"sim"`` or ``"float"``)."""

    def __init__(self, graph: DpuGraph, mode: str = "int", position_source: PositionSource | None = None):
        if mode not in ("int", "sim", "float"):
            raise ValueError(f"mode must be int, sim or float, got {mode!r}")
        self.g = graph
        self.mode = mode
        self.position_source = position_source
        self._wcache: dict[tuple[str, str, int], np.ndarray] = {}
        # per weight (node, name, position): the kernel's exactness bound (ops.weight_bound)
        self._bcache: dict[tuple[str, str, int], int] = {}
        # per weight (node, name, position): its fake-quantized float32 values (the simulation's weights)
        self._fcache: dict[tuple[str, str, int], np.ndarray] = {}
        self._fused_producer: dict[str, str] = {}
        self.captured: dict[str, np.ndarray] = {}  # node name -> captured float output, this batch
        for n in graph.nodes:
            act = graph.fused_activation(n) if n.op in CONV_OPS + ("add",) else None
            if act is not None:
                self._fused_producer[act.name] = n.name

    # -- positions and quantization ------------------------------------------------------
    def pos(self, slot: Slot | None, tensor: np.ndarray | None = None) -> int | None:
        """The position of ``slot`` (chosen from ``tensor`` when a position source is set)."""
        if slot is None:
            return None
        if self.position_source is not None and tensor is not None:
            return int(self.position_source(slot, tensor))
        p = self.g.pos(slot)
        if p is None:
            raise QInspectError(f"no position for {slot[0]}:{slot[1]} (calibrate first or give positions)")
        return p

    def quant_value(self, x: np.ndarray, slot: Slot | None, default: Round = Round.HALF_UP) -> Value:
        """Quantize a float tensor with a slot's position and rounding (pass-through when no slot)."""
        if slot is None or self.mode == "float":
            return Value(f=np.asarray(x, dtype=F32))
        p = self.pos(slot, x)
        assert p is not None
        mode, narrow = _round(self.g, slot, default)
        return Value(q=quantize(x, p, mode, narrow), pos=p)

    def weight(self, node: Node, name: str) -> tuple[np.ndarray | None, int | None]:
        """int8 codes of a weight and its position (float32 values and None in float mode)."""
        w = node.weights.get(name)
        if w is None:
            return None, None
        slot = node.weight_slots.get(name)
        if self.mode == "float" or slot is None:
            return np.asarray(w, F32), None
        p = self.pos(slot, w)
        assert p is not None
        key = (node.name, name, p)
        if key not in self._wcache:
            mode, narrow = _round(self.g, slot, Round.HALF_TO_EVEN)
            codes = np.array(quantize(w, p, mode, narrow))  # an array of its own ...
            codes.flags.writeable = False  # ... read-only: the kernels cache forms prepared from it
            self._wcache[key] = codes
        return self._wcache[key], p

    def weight_bound(self, node: Node, name: str, wq: np.ndarray, pw: int) -> int:
        """The exactness bound of a conv kernel's codes (ops.weight_bound), computed once per weight."""
        key = (node.name, name, pw)
        if key not in self._bcache:
            self._bcache[key] = ops.weight_bound(node.op, wq)
        return self._bcache[key]

    def weight_float(self, node: Node, name: str) -> np.ndarray | None:
        """Weight values as the simulation uses them (fake-quantized unless in float mode)."""
        q, p = self.weight(node, name)
        if q is None or p is None:
            return q
        key = (node.name, name, p)
        if key not in self._fcache:
            w = dequantize(q, p)
            w.flags.writeable = False  # read-only: the conv kernels cache their GEMM layouts of it
            self._fcache[key] = w
        return self._fcache[key]

    # -- the walk ---------------------------------------------------------------------------
    def run(self, inputs: dict[str, np.ndarray], keep: Iterable[str] | None = None,
            on_value: Callable[[Node, Value], None] | None = None) -> dict[str, Value]:
        """Evaluate the graph on one batch. ``inputs`` maps input node names to float arrays.

        ``keep``: node names whose values are returned (all when None). ``on_value`` is called with
        each node's value as soon as it is computed (before it may be dropped).
        """
        keep_set = None if keep is None else set(keep)
        self.use_captured(inputs)
        remaining = {n.name: len(self.g.consumers(n.name)) for n in self.g.nodes}
        values: dict[str, Value] = {}
        outs: dict[str, Value] = {}
        for node in self.g.nodes:
            if node.op == "input":
                if node.name not in inputs:
                    raise QInspectError(f"no data for model input {node.name}")
                v = Value(f=np.asarray(inputs[node.name], dtype=F32))
            else:
                v = self.node(node, [values[i] for i in node.inputs])
            values[node.name] = v
            if on_value is not None:
                on_value(node, v)
            if keep_set is None or node.name in keep_set:
                outs[node.name] = v
            for i in node.inputs:
                remaining[i] -= 1
                if remaining[i] <= 0 and i in values:
                    del values[i]
            if remaining[node.name] <= 0 and node.name in values:
                del values[node.name]
        return outs

    def use_captured(self, batch: dict[str, np.ndarray]) -> None:
        """Take the captured stand-in outputs a batch carries (keys CAPTURED + node name)."""
        self.captured = {k[len(CAPTURED):]: v for k, v in batch.items() if k.startswith(CAPTURED)}

    # -- one node -----------------------------------------------------------------------------
    def node(self, node: Node, ins: list[Value]) -> Value:
        """Evaluate one node from its input values."""
        if self.mode == "int" and node.device == "DPU" and all(v.quantized for v in ins) and ins:
            res = self._int(node, ins)
            if res is not None:
                return self._narrowed(node, res)
        return self._float_path(node, ins)

    def _narrowed(self, node: Node, res: Value) -> Value:
        """Codes of a narrow-range quantizer (a DPUCADF8H target) held at -127: the operators clip at -128
        and the lower clip then exact (clip(R(a), -128, 127) then max(., -127) is clip(R(a), -127, 127))."""
        if res.q is None or not res.q.size:
            return res
        lo = self.g.output_code_min(node.name)
        if lo > -128 and res.q.min() < lo:
            res.q = np.maximum(res.q, np.int8(lo))
            res.f = None  # dequantized again from the held codes
        return res

    # ---- integer (DPU) operators
    def _fused_out(self, node: Node) -> tuple[Slot | None, str | None, Node | None]:
        """Output slot and integer activation of a conv / add, counting a fused activation node."""
        if node.out_slot is not None:
            a = node.params.get("act", "linear")
            return node.out_slot, _INT_ACTS.get(a, "unsupported"), None
        act = self.g.fused_activation(node)
        if act is None or act.device != "DPU":
            return None, None, act
        if act.op == "relu":
            iact = "relu6" if act.params.get("max_value") == 6.0 else "relu"
        elif act.op == "leaky_relu":
            iact = "leaky"
        elif act.op == "activation" and act.params.get("name") == "linear":
            iact = None
        else:
            return None, None, act
        return act.out_slot, iact, act

    def _int(self, node: Node, ins: list[Value]) -> Value | None:
        op, p = node.op, node.params
        if op in CONV_OPS:
            if node.pre_slot is not None:
                return None  # a pre-quantized activation inside the layer (tanh, ...): CPU, simulated
            wname = "depthwise_kernel" if op == "depthwise_conv2d" else "kernel"
            wq, pw = self.weight(node, wname)
            bq, pb = self.weight(node, "bias")
            if wq is None or pw is None:
                return None
            x = ins[0]
            xq, pi = x.codes(), x.pos
            assert pi is not None
            chunked = op in ("conv2d", "depthwise_conv2d", "dense")  # the fused chunked kernels
            bound = self.weight_bound(node, wname, wq, pw) if chunked else None

            def accumulate(xq=xq, wq=wq, p=p) -> np.ndarray:  # conv2d_transpose (the others are chunked)
                return ops.conv2d_transpose_acc(xq, wq, p["strides"], p["padding"], p.get("dilation", (1, 1)),
                                                p.get("output_padding"))

            oslot, iact, act_node = self._fused_out(node)
            if iact == "unsupported" or (oslot is None and act_node is None and node.out_slot is None
                                         and p.get("act", "linear") != "linear"):
                return None
            pb_eff = pb if bq is not None else pi + pw

            def exact_float(pi=pi, pw=pw, pb=pb_eff, bq=bq) -> np.ndarray:
                # The exact accumulator value: what the simulation's float32 conv gives when it is exact.
                if chunked:  # one fused pass (same single rounding as below)
                    return _fused_kernel(op, p, xq, wq, bq, pi, pw, pb, None, None, bound)
                a = accumulate().astype(np.float64)
                if bq is not None:
                    a = a + bq.astype(np.float64) * 2.0 ** (pi + pw - pb)
                return (a * 2.0 ** -(pi + pw)).astype(F32)

            if oslot is None:
                # Unquantized output (a CPU activation follows, or nothing quantizes it).
                f = exact_float()
                if p.get("act", "linear") != "linear":
                    f = float_ops.activation(p["act"], f)
                return Value(f=f)
            po = self.pos(oslot)
            assert po is not None
            # The operators fuse the output stage into the accumulation (one HALF_UP rounding).
            if chunked:
                q = _fused_kernel(op, p, xq, wq, bq, pi, pw, pb_eff, po, iact, bound)
            else:
                q = ops.conv2d_transpose(xq, wq, bq, pi, pw, pb_eff, po, p["strides"], p["padding"], iact,
                                         p.get("dilation", (1, 1)), p.get("output_padding"))
            if act_node is not None:
                # The conv's own (unquantized) value, for reports and dump comparison: recomputed only
                # when asked.
                return _FusedValue(q=q, pos=po, pre=exact_float)
            return Value(q=q, pos=po)
        if op in ("relu", "leaky_relu", "activation") and node.name in self._fused_producer:
            src = ins[0]
            if isinstance(src, _FusedValue):
                return Value(q=src.q, pos=src.pos)
            return None
        if op == "quantize":
            return None  # input is float by construction
        oslot = node.out_slot
        if op in TRANSPARENT_OPS:
            return self._transparent(node, ins[0])
        if op == "add":
            oslot, iact, act_node = self._fused_out(node)
            if oslot is None or iact in ("leaky", "unsupported"):
                return None
            po = self.pos(oslot)
            q = ops.add([(v.codes(), v.pos) for v in ins], po, iact)
            if act_node is None:
                return Value(q=q, pos=po)
            def pre_add(ins=ins) -> np.ndarray:
                return np.asarray(sum(v.codes().astype(np.float64) * 2.0 ** -v.pos for v in ins), dtype=F32)

            return _FusedValue(q=q, pos=po, pre=pre_add)
        if oslot is None:
            return None
        po = self.pos(oslot)
        assert po is not None
        x = ins[0]
        xq, pi = x.codes(), x.pos
        if op == "relu":
            act = "relu6" if p.get("max_value") == 6.0 else "relu"
            return Value(q=ops.requantize(xq, pi, po, act), pos=po)
        if op == "leaky_relu":
            return Value(q=ops.leaky_relu(xq, pi, po), pos=po)
        if op == "activation" and p.get("name") == "linear":
            return Value(q=ops.requantize(xq, pi, po), pos=po)
        if op == "prelu":
            aq, pa = self.weight(node, "alpha")
            if aq is None or pa is None:
                return None
            return Value(q=ops.prelu(xq, pi, aq, pa, po), pos=po)
        if op == "hard_sigmoid":
            return Value(q=ops.hard_sigmoid(xq, pi, po), pos=po)
        if op == "multiply":
            if len(ins) != 2:
                return None
            return Value(q=ops.multiply((ins[0].codes(), ins[0].pos), (ins[1].codes(), ins[1].pos), po), pos=po)
        if op == "concat":
            return Value(q=ops.concat([(v.codes(), v.pos) for v in ins], po, p.get("axis", -1)), pos=po)
        if op == "max_pool":
            return Value(q=ops.max_pool(xq, pi, po, p["pool"], p["strides"], p["padding"]), pos=po)
        if op == "avg_pool":
            if _global_like_rescale(p, xq.shape[1], xq.shape[2]) is not None:
                return None  # a rectangle pooled whole (the quantizer's lcm rule): simulated in float
            # the node's factor (qinspect.dpu.layer_map, from ops.avgpool_rescale) is the one the float
            # path's "rescale" simulates
            return Value(q=ops.avg_pool(xq, pi, po, p["pool"], p["strides"], p["padding"],
                                        factor=p.get("dpu_factor")), pos=po)
        if op == "global_avg_pool":
            h, w = xq.shape[1], xq.shape[2]
            if h != w:
                return None  # a rectangle (the quantizer's lcm rule): simulated in float
            return Value(q=ops.global_avg_pool(xq, pi, po, p.get("keepdims", False)), pos=po)
        if op == "upsample":
            return Value(q=ops.upsample_nearest(xq, pi, po, p["size"]), pos=po)
        return None

    def _transparent(self, node: Node, x: Value) -> Value:
        if x.quantized and (self.mode != "float"):
            q = _shape_op(node, x.codes(), 0)
            return Value(q=q, pos=x.pos)
        return Value(f=_shape_op(node, x.float(), 0.0))

    # ---- float32 (simulation, CPU layers, float reference)
    def _float_rescaled(self, node: Node, ins: list[Value]) -> Value:
        """The float model's function of an activation that cross-layer equalization scaled across
        (``cle_to_relu6``): its input is the float model's times the head's per-channel scale, so it is
        ``out_scale * f(x / in_scale)`` (a gate feeding a Multiply keeps no output scale)."""
        p = node.params
        plain = Node(node.name, node.op, node.inputs, {k: v for k, v in p.items()
                                                       if k not in ("float_in_scale", "float_out_scale")})
        x = ins[0].float()
        if "float_in_scale" in p:
            x = x / np.asarray(p["float_in_scale"], F32)
        y = self._float_path(plain, [Value(f=np.asarray(x, F32))]).float()
        if "float_out_scale" in p:
            y = y * np.asarray(p["float_out_scale"], F32)
        return Value(f=np.asarray(y, F32))

    def _float_path(self, node: Node, ins: list[Value]) -> Value:
        op, p = node.op, node.params
        fmode = self.mode == "float"
        xs = [v.float() for v in ins]
        x = xs[0] if xs else None
        if op == "quantize":
            return self.quant_value(x, node.out_slot)
        if fmode and ("float_in_scale" in p or "float_out_scale" in p):
            return self._float_rescaled(node, ins)
        if op in TRANSPARENT_OPS:
            return self._transparent(node, ins[0])
        if op in CONV_OPS:
            wname = "depthwise_kernel" if op == "depthwise_conv2d" else "kernel"
            w = self.weight_float(node, wname)
            b = self.weight_float(node, "bias")
            if op == "conv2d":
                y = float_ops.conv2d(x, w, b, p["strides"], p["padding"], p["dilation"])
            elif op == "depthwise_conv2d":
                y = float_ops.depthwise_conv2d(x, w, b, p["strides"], p["padding"], p["dilation"])
            elif op == "conv2d_transpose":
                y = float_ops.conv2d_transpose(x, w, b, p["strides"], p["padding"], p.get("dilation", (1, 1)),
                                               p.get("output_padding"))
            else:
                y = float_ops.dense(x, w, b)
            y = np.asarray(y, F32)
            if fmode and "float_post_act" in p:
                y = _float_post_act(y, p)
            act = p.get("act", "linear")
            if act != "linear":
                if node.pre_slot is not None and not fmode:
                    y = self.quant_value(y, node.pre_slot).float()
                if fmode and "float_act_scale" in p:
                    # a head equalized across its own activation (cle_to_relu6): the float model's s * f(y / s)
                    s = np.asarray(p["float_act_scale"], F32)
                    y = s * float_ops.activation(act, y / s)
                else:
                    y = float_ops.activation(act, y)
            return self.quant_value(y, node.out_slot)
        if op == "relu":
            y = x
            if p.get("threshold"):
                thr = F32(p["threshold"])
                y = np.where(y >= thr, y, F32(p.get("negative_slope", 0.0)) * (y - thr)).astype(F32)
            elif p.get("negative_slope"):
                y = np.where(y >= 0, y, F32(p["negative_slope"]) * y).astype(F32)
            else:
                y = np.maximum(y, F32(0))
            # The float reference keeps the float model's cap where an option changed it (ReLU6 -> ReLU,
            # or a ReLU6 between a pair equalized by cle_to_relu6: the cap times each channel's scale).
            cap = p.get("float_max_value", p.get("max_value")) if fmode else p.get("max_value")
            if cap is not None:
                y = np.minimum(y, np.asarray(cap, F32), out=y if y is not x else None)
            return self.quant_value(y, node.out_slot)
        if op == "leaky_relu":
            alpha = p.get("float_alpha", p["alpha"]) if fmode else p["alpha"]
            return self.quant_value(float_ops.leaky_relu(x, alpha), node.out_slot)
        if op == "prelu":
            a = self.weight_float(node, "alpha")
            y = np.where(x >= 0, x, a * x).astype(F32)
            return self.quant_value(y, node.out_slot)
        if op in ("activation", "softmax"):
            if node.pre_slot is not None and not fmode:
                x = self.quant_value(x, node.pre_slot).float()
            if op == "softmax":
                y = float_ops.softmax(x, p.get("axis", -1))
            else:
                y = float_ops.activation(p["name"], x)
            return self.quant_value(np.asarray(y, F32), node.out_slot)
        if op == "hard_sigmoid":
            fn = p.get("float_fn", "hard_sigmoid_dpu") if fmode else "hard_sigmoid_dpu"
            return self.quant_value(float_ops.activation(fn, x), node.out_slot)
        if op == "add":
            y = xs[0]
            for t in xs[1:]:
                y = y + t
            return self.quant_value(np.asarray(y, F32), node.out_slot)
        if op == "multiply":
            y = xs[0]
            for t in xs[1:]:
                y = y * t
            return self.quant_value(np.asarray(y, F32), node.out_slot)
        if op == "concat":
            return self.quant_value(np.concatenate(xs, axis=p.get("axis", -1)), node.out_slot)
        if op == "max_pool":
            return self.quant_value(float_ops.max_pool(x, p["pool"], p["strides"], p["padding"]), node.out_slot)
        if op == "avg_pool":
            y = float_ops.avg_pool(x, p["pool"], p["strides"], p["padding"])
            rescale = _global_like_rescale(p, x.shape[1], x.shape[2]) or p.get("rescale", 1.0)
            if not fmode and rescale != 1.0:
                y = y * F32(rescale)
            return self.quant_value(np.asarray(y, F32), node.out_slot)
        if op == "global_avg_pool":
            y = float_ops.global_avg_pool(x, p.get("keepdims", False))
            if not fmode:
                r = _gap_rescale(x.shape[1], x.shape[2])
                if r != 1.0:
                    y = y * F32(r)
            return self.quant_value(np.asarray(y, F32), node.out_slot)
        if op == "scalar":
            fn = p["fn"]
            if fn == "affine":  # Keras Rescaling: x * scale + offset
                r = x * np.asarray(p["scale"], F32) + np.asarray(p["offset"], F32)
            else:
                y = F32(p["y"])
                r = x + y if fn == "add" else x * y if fn == "mul" else x - y if fn == "sub" else x / y
            return self.quant_value(np.asarray(r, F32), node.out_slot)
        if op == "elementwise":
            fn = p["fn"]
            if fn == "subtract":
                r = xs[0] - xs[1]
            elif fn == "maximum":
                r = np.maximum.reduce(xs)
            elif fn == "minimum":
                r = np.minimum.reduce(xs)
            else:
                r = sum(xs[1:], xs[0]) / F32(len(xs))
            return self.quant_value(np.asarray(r, F32), node.out_slot)
        if op == "split":
            return self.quant_value(_split_part(x, p), node.out_slot)
        if op == "batchnorm":
            w = node.weights
            y = float_ops.batchnorm(x, w.get("gamma"), w.get("beta"), w["moving_mean"], w["moving_variance"],
                                    p.get("epsilon", 1e-3))
            return self.quant_value(np.asarray(y, F32), node.out_slot)
        if op == "global_max_pool":
            return self.quant_value(np.max(x, axis=(1, 2), keepdims=p.get("keepdims", False)), node.out_slot)
        if op == "crop":
            (t, b), (left, r) = p["cropping"]
            return self.quant_value(x[:, t:x.shape[1] - b, left:x.shape[2] - r, :], node.out_slot)
        if op == "upsample":
            how = p.get("interpolation", "nearest")
            if how == "bilinear":  # a CPU layer: float32 on the dequantized input, then its output position
                sh, sw = _pair(p["size"])
                y = float_ops.resize_bilinear(x, x.shape[1] * sh, x.shape[2] * sw)
                return self.quant_value(y, node.out_slot)
            if how != "nearest":
                raise QInspectError(f"{node.name}: UpSampling2D interpolation '{how}' is not emulated")
            return self.quant_value(float_ops.upsample_nearest(x, p["size"]), node.out_slot)
        if op == "cpu_layer":  # a Keras layer the DPU cannot run: float32 on the CPU, float weights
            return self.quant_value(cpu_layers.run(p, xs, node.weights), node.out_slot)
        if node.name in self.captured:  # no implementation: the float output Keras computed stands in
            return self.quant_value(np.asarray(self.captured[node.name], F32), node.out_slot)
        raise QInspectError(f"{node.name}: operator {p.get('class_name', op)} has no float or integer "
                            "implementation; emulate a capture of the model (qinspect capture) and its "
                            "recorded float output stands in for it")


class _FusedValue(Value):
    """The result of a conv / add whose activation is fused: codes at the activation's position
    (what the activation node outputs) and, for the conv / add's own unquantized output, a function
    computing it on demand (``pre``)."""

    def __init__(self, q: np.ndarray, pos: int, pre: Callable[[], np.ndarray] | None) -> None:
        super().__init__(f=None, q=q, pos=pos)
        self._pre = pre
        self._pre_value: np.ndarray | None = None

    @property
    def pre(self) -> np.ndarray | None:
        """The unquantized output of the fused producer (None when unknown)."""
        if self._pre is None:
            return None
        if self._pre_value is None:
            self._pre_value = self._pre()
        return self._pre_value

    @property
    def has_pre(self) -> bool:
        """True when the producer's own output can be computed."""
        return self._pre is not None

    def float(self) -> np.ndarray:  # what the quantizer's model shows at the conv's own output
        if self._pre is not None:
            return self.pre
        return super().float()


def _fused_kernel(op: str, p: dict[str, Any], xq: np.ndarray, wq: np.ndarray, bq: np.ndarray | None, pi: int,
                  pw: int, pb: int, po: int | None, act: str | None, bound: int) -> np.ndarray:
    """The fused integer kernel of a conv2d / depthwise_conv2d / dense node (codes at ``po``; the float32
    value when ``po`` is None), with the weight's cached exactness bound."""
    if op == "dense":
        return ops.dense(xq, wq, bq, pi, pw, pb, po, act, acc_bound=bound)
    fn = ops.conv2d if op == "conv2d" else ops.depthwise_conv2d
    return fn(xq, wq, bq, pi, pw, pb, po, p["strides"], p["padding"], p["dilation"], act, acc_bound=bound)


def _global_like_rescale(p: dict[str, Any], h: int, w: int) -> float | None:
    """The rescale the quantizer gives a non-square AveragePooling2D that pools its whole input (its output
    is 1 x 1): the factor of the lcm square when that is at most 8, as for a global pool
    (``VitisAveragePooling2D.build``); None for any other pool (its factor is the node's own)."""
    from qinspect.dpu._conv_core import pads_1d
    from qinspect.dpu.layer_map import gap_kernel

    (kh, kw), (sh, sw) = p["pool"], p["strides"]
    if kh == kw or pads_1d(h, kh, sh, 1, p["padding"])[2] != 1 or pads_1d(w, kw, sw, 1, p["padding"])[2] != 1:
        return None
    lh, lw = gap_kernel(kh, kw)
    return _gap_rescale(kh, kw) if lh == lw else None


def _gap_rescale(h: int, w: int) -> float:
    from qinspect.dpu.layer_map import avgpool_scale, gap_kernel

    kh, kw = gap_kernel(h, w)
    r, _ = avgpool_scale(kh, kw)
    return r


def _split_part(x: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Output ``p["output_index"]`` of ``tf.split`` (``p["sizes"]``: a count or a list of sizes, one
    of them may be -1; or ``p["indices"]``, numpy's cut points) or ``tf.unstack`` along ``p["axis"]``."""
    axis, index = int(p.get("axis", 0)), int(p.get("output_index", 0))
    if p.get("fn") == "unstack":
        return np.take(x, index, axis=axis)
    if p.get("indices") is not None:  # numpy's cut points (Keras 3 ops.split with a list)
        return np.split(x, p["indices"], axis=axis)[index]
    sizes = p.get("sizes")
    if isinstance(sizes, int):
        return np.split(x, sizes, axis=axis)[index]
    if not isinstance(sizes, (list, tuple)):
        raise QInspectError(f"tf.split with num_or_size_splits={sizes!r} cannot be emulated")
    sizes = [int(s) for s in sizes]
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)[index]


def _shape_op(node: Node, x: np.ndarray, fill: Any) -> np.ndarray:
    op, p = node.op, node.params
    if op == "identity":
        return x
    if op == "zero_pad":
        (t, b), (left, r) = p["padding"]
        return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=fill)
    if op == "flatten":
        return x.reshape(x.shape[0], -1)
    if op == "reshape":
        return x.reshape((x.shape[0], *p["target_shape"]))
    if op == "permute":
        return np.transpose(x, (0, *[int(d) for d in p["dims"]]))
    raise ValueError(op)


def _float_post_act(y: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """The float model's activation that the quantizer's SeparableConv split dropped, put back: the node
    computes y = s * (m * z + c) (z the float model's pre-activation, m and c a BatchNorm folded after it,
    s its CLE output scale); the float model computes s * (m * act(z) + c)."""
    s = np.asarray(p.get(CLE_OUT_SCALE, 1.0), F32)
    m, c = (np.asarray(v, F32) for v in p.get("float_affine", (1.0, 0.0)))
    inner = y / s - c
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(m != 0, inner / np.where(m != 0, m, 1), 0).astype(F32)
    return (s * (m * float_ops.activation(p["float_post_act"], z) + c)).astype(F32)


def batch_inputs(graph: DpuGraph, x: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map a single array (one-input models) or a dict to the graph's input names."""
    if isinstance(x, dict):
        return {k: np.asarray(v, F32) for k, v in x.items()}
    if len(graph.inputs) != 1:
        raise QInspectError(f"the model has {len(graph.inputs)} inputs; give a dict of arrays")
    return {graph.inputs[0]: np.asarray(x, F32)}


def check_input_shape(graph: DpuGraph, name: str, arr: np.ndarray, path: str | None = None) -> None:
    """Raise a one-line error when an input array does not fit the model's input shape."""
    node = graph[name]
    shape = node.output_shape
    if shape is None:
        return
    want = list(shape[1:])
    got = list(arr.shape[1:])
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got, strict=False)):
        raise QInspectError(
            f"inputs of shape {list(arr.shape)} do not fit model input {name} of shape "
            f"[N, {', '.join('?' if w is None else str(w) for w in want)}]",
            path,
        )


def same_size_codes(values: dict[str, Value], layer: str, count: int) -> dict[str, np.ndarray]:
    """The int8 codes of every quantized tensor but ``layer``'s that holds ``count`` values, by node name (what
    a swapped or misnamed dump file could hold). A fused conv / add is left out: its codes are its
    activation's, which stands under its own name. So is every tensor holding exactly ``layer``'s own codes
    (a Flatten or Reshape of it carries them on): a file cannot be "another tensor's" when that tensor holds
    the same values."""
    own = values.get(layer)
    mine = own.codes().reshape(-1) if own is not None and own.quantized else None
    out = {}
    for name, v in values.items():
        held = v.q if v.q is not None else v.f
        if name != layer and v.quantized and not isinstance(v, _FusedValue) and held is not None \
                and held.size == count:
            codes = v.codes().reshape(-1)
            if mine is None or not np.array_equal(codes, mine):
                out[name] = codes
    return out
