"""DPU position constraints applied after calibration, in the quantizer's order (DPU_NUMERICS.md s5).

The order is the one of the quantizer's refine stage (``adjust_quantize_info``): hard sigmoid,
shift_read, shift_write, shift_swish, shift_cut, shift_bias, shift_bias before a LeakyReLU, concat
alignment, pool alignment. Each pass walks the layers in model order and may move a position that
an earlier pass already fixed (a later pass can break an earlier constraint: that is reproduced, and
every move is logged as an :class:`Adjustment` with its before and after).
"""

from __future__ import annotations

from qinspect.dpu.dpu_graph import CONV_OPS, Adjustment, DpuGraph, Node, Slot

ORDER = (
    "hard_sigmoid", "shift_read", "shift_write", "shift_swish", "shift_cut", "shift_bias",
    "shift_bias_leakyrelu", "align_concat", "align_pool",
)


class _Refiner:
    def __init__(self, graph: DpuGraph) -> None:
        self.g = graph
        self.log: list[Adjustment] = []

    # -- helpers mirroring the quantizer's QuantPosManager ----------------------------------
    def ipos(self, node: Node, i: int = 0) -> tuple[int | None, Slot | None]:
        slot = self.g.input_slot(node, i)
        return self.g.pos(slot), slot

    def opos(self, node: Node) -> tuple[int | None, Slot | None]:
        slot = self.g.output_slot(node.name) if node.out_slot is None else node.out_slot
        if slot is None:
            act = self.g.fused_activation(node)
            slot = (act.out_slot or act.pre_slot) if act is not None else None
        return self.g.pos(slot), slot

    def wpos(self, node: Node) -> tuple[int | None, Slot | None]:
        for k in ("kernel", "depthwise_kernel"):
            if k in node.weight_slots:
                s = node.weight_slots[k]
                return self.g.pos(s), s
        return None, None

    def bpos(self, node: Node) -> tuple[int | None, Slot | None]:
        s = node.weight_slots.get("bias")
        return self.g.pos(s), s

    def move(self, constraint: str, node: Node, slot: Slot, before: int, after: int, why: str) -> None:
        if before == after:
            return
        self.g.set_pos(slot, after)
        self.log.append(Adjustment(constraint, node.name, slot, int(before), int(after),
                                   f"{constraint} at {node.name}: {why}; {slot[0]}:{slot[1]} "
                                   f"{before} -> {after}"))

    # -- the passes --------------------------------------------------------------------------
    def hard_sigmoid(self) -> None:
        for n in self.g.nodes:
            if n.op != "hard_sigmoid" or n.out_slot is None:
                continue
            ip, islot = self.ipos(n)
            op, oslot = self.opos(n)
            if ip is None or op is None or islot is None or oslot is None:
                continue
            new_ip = min(max(ip, 0), 15)
            new_op = max(op, 7)
            if 14 + new_ip - new_op <= 0:
                new_op = 14 + new_ip
            self.move("hard_sigmoid", n, islot, ip, new_ip, "input position must be in [0, 15]")
            self.move("hard_sigmoid", n, oslot, op, new_op,
                      "output position must be >= 7 and 14 + p_in - p_out > 0")

    def _in_positions(self, n: Node) -> list[tuple[int | None, Slot | None]]:
        return [self.ipos(n, i) for i in range(len(n.inputs))]

    def shift_read(self) -> None:
        for n in self.g.nodes:
            if n.op not in ("add", "multiply"):
                continue
            ins = self._in_positions(n)
            if any(p is None for p, _ in ins):
                continue
            ps = [p for p, _ in ins]
            imax, imin = ps.index(max(ps)), ps.index(min(ps))
            if ps[imax] - ps[imin] > 15:
                slot = ins[imax][1]
                assert slot is not None
                self.move("shift_read", n, slot, ps[imax], ps[imin] + 15,
                          f"max(p_in) - min(p_in) = {ps[imax] - ps[imin]} > 15")

    def shift_write(self) -> None:
        for n in self.g.nodes:
            if n.op not in ("add", "multiply"):
                continue
            ins = self._in_positions(n)
            op, oslot = self.opos(n)
            if any(p is None for p, _ in ins) or op is None or oslot is None:
                continue
            pmin = min(p for p, _ in ins if p is not None)
            sw = pmin - op
            if sw > 15:
                self.move("shift_write", n, oslot, op, pmin - 15, f"min(p_in) - p_out = {sw} > 15")
            elif sw < -15:
                self.move("shift_write", n, oslot, op, pmin + 15, f"min(p_in) - p_out = {sw} < -15")

    def _is_swish_pair(self, a: Node, b: Node) -> bool:
        def sig(x: Node) -> bool:
            return x.op == "hard_sigmoid" and len(x.inputs) == 1

        if sig(a) and not sig(b):
            return a.inputs[0] == b.name
        if sig(b) and not sig(a):
            return b.inputs[0] == a.name
        return False

    def _src(self, slot: Slot | None) -> Node | None:
        if slot is None:
            return None
        for n in self.g.nodes:
            if n.out_slot == slot or n.pre_slot == slot:
                return n
        return None

    def shift_swish(self) -> None:
        for n in self.g.nodes:
            if n.op != "multiply" or len(n.inputs) != 2:
                continue
            p1, s1 = self.ipos(n, 1)
            p0, s0 = self.ipos(n, 0)
            if p0 is None or p1 is None:
                continue
            a, b = self._src(s0), self._src(s1)
            if a is None or b is None or not self._is_swish_pair(a, b):
                continue
            op, oslot = self.opos(n)
            if op is None or oslot is None:
                continue
            sh = p0 + p1 - op
            if sh < 0:
                self.move("shift_swish", n, oslot, op, p0 + p1, f"p_in0 + p_in1 - p_out = {sh} < 0")
            elif sh > 15:
                self.move("shift_swish", n, oslot, op, p0 + p1 - 15, f"p_in0 + p_in1 - p_out = {sh} > 15")

    def _conv_positions(self, n: Node) -> tuple[int | None, ...]:
        ip, _ = self.ipos(n)
        op, _ = self.opos(n)
        wp, _ = self.wpos(n)
        bp, _ = self.bpos(n)
        return ip, op, wp, bp

    def shift_cut(self) -> None:
        for n in self.g.nodes:
            if n.op not in CONV_OPS:
                continue
            ip, op, wp, _ = self._conv_positions(n)
            if ip is None or op is None or wp is None:
                continue
            sc = wp + ip - op
            new = 0 if sc < 0 else 16 if sc > 16 else None
            if new is not None:
                _, wslot = self.wpos(n)
                assert wslot is not None
                self.move("shift_cut", n, wslot, wp, new + op - ip,
                          f"shift_cut = p_w + p_in - p_out = {sc} outside [0, 16]")

    def shift_bias(self) -> None:
        for n in self.g.nodes:
            if n.op not in CONV_OPS:
                continue
            ip, op, wp, bp = self._conv_positions(n)
            if None in (ip, op, wp, bp):
                continue
            assert ip is not None and op is not None and wp is not None and bp is not None
            sc = wp + ip - op
            lo = min(0, -(24 - (8 + sc)))
            sb = wp + ip - bp
            new = lo if sb < lo else 16 if sb > 16 else None
            if new is not None:
                _, bslot = self.bpos(n)
                assert bslot is not None
                self.move("shift_bias", n, bslot, bp, wp + ip - new,
                          f"shift_bias = p_w + p_in - p_b = {sb} outside [{lo}, 16]")

    def shift_bias_leakyrelu(self) -> None:
        for act in self.g.nodes:
            if act.op != "leaky_relu" or act.out_slot is None or not act.inputs:
                continue
            n = self.g[act.inputs[0]]
            if n.op not in CONV_OPS:
                continue
            ip, op, wp, bp = self._conv_positions(n)
            if None in (ip, op, wp, bp):
                continue
            assert ip is not None and wp is not None and bp is not None
            sb = wp + ip - bp
            new = 0 if sb < 0 else 16 if sb > 16 else None
            if new is not None:
                _, bslot = self.bpos(n)
                assert bslot is not None
                self.move("shift_bias_leakyrelu", n, bslot, bp, wp + ip - new,
                          f"shift_bias before a LeakyReLU = {sb} outside [0, 16]")

    def align_concat(self) -> None:
        for n in self.g.nodes:
            if n.op != "concat":
                continue
            op, oslot = self.opos(n)
            if op is None or oslot is None:
                continue
            ins = self._in_positions(n)
            low = min([op] + [p for p, _ in ins if p is not None])
            self.move("align_concat", n, oslot, op, low, "concat output takes the minimum position")
            for i in range(len(n.inputs)):
                p, s = self.ipos(n, i)  # re-read: an earlier input may share the slot
                if p is not None and s is not None and p != low:
                    self.move("align_concat", n, s, p, low, f"concat input {i} takes the minimum position")

    def align_pool(self) -> None:
        for n in self.g.nodes:
            if n.op not in ("max_pool", "avg_pool"):
                continue
            op, oslot = self.opos(n)
            ip, islot = self.ipos(n)
            if ip is None or op is None or oslot is None or islot is None:
                continue
            if op > ip:
                self.move("align_pool", n, oslot, op, ip, "pool output takes its input's (lower) position")
            elif op < ip:
                self.move("align_pool", n, islot, ip, op, "pool input takes the output's (lower) position")


def apply_constraints(graph: DpuGraph, enabled: tuple[str, ...] = ORDER) -> list[Adjustment]:
    """Apply the DPU constraints to ``graph.positions`` in place; return (and record) every change."""
    r = _Refiner(graph)
    for name in ORDER:
        if name in enabled:
            getattr(r, name)()
    graph.adjustments.extend(r.log)
    return r.log


def check_constraints(graph: DpuGraph) -> list[str]:
    """The constraints the current positions break (empty when all hold); for reports."""
    r = _Refiner(graph)
    broken: list[str] = []
    for n in graph.nodes:
        if n.op in CONV_OPS:
            ip, op, wp, bp = r._conv_positions(n)
            if None not in (ip, op, wp):
                assert ip is not None and op is not None and wp is not None
                sc = wp + ip - op
                if not 0 <= sc <= 16:
                    broken.append(f"{n.name}: shift_cut {sc} outside [0, 16]")
                if bp is not None:
                    sb = wp + ip - bp
                    lo = min(0, -(24 - (8 + sc)))
                    if not lo <= sb <= 16:
                        broken.append(f"{n.name}: shift_bias {sb} outside [{lo}, 16]")
        elif n.op == "hard_sigmoid":
            ip, _ = r.ipos(n)
            op, _ = r.opos(n)
            if ip is not None and op is not None and (not 0 <= ip <= 15 or op < 7 or 14 + ip - op <= 0):
                broken.append(f"{n.name}: hard sigmoid positions in={ip} out={op}")
        elif n.op in ("add", "multiply"):
            ps = [p for p, _ in r._in_positions(n)]
            op, _ = r.opos(n)
            if None not in ps and ps:
                vals = [p for p in ps if p is not None]
                if max(vals) - min(vals) > 15:
                    broken.append(f"{n.name}: shift_read {max(vals) - min(vals)} > 15")
                if op is not None and not -15 <= min(vals) - op <= 15:
                    broken.append(f"{n.name}: shift_write {min(vals) - op} outside [-15, 15]")
        elif n.op == "concat":
            op, _ = r.opos(n)
            ps = [p for p, _ in r._in_positions(n)]
            if any(p is not None and p != op for p in ps):
                broken.append(f"{n.name}: concat inputs {ps} not aligned with output {op}")
        elif n.op in ("max_pool", "avg_pool"):
            ip, _ = r.ipos(n)
            op, _ = r.opos(n)
            if ip is not None and op is not None and ip != op:
                broken.append(f"{n.name}: pool input {ip} != output {op}")
    return broken
