"""A DPU board dump (VART, ``XLNX_ENABLE_DUMP=1``) against the emulator, tensor by tensor.

Each board tensor is mapped to the emulator node whose int8 codes it holds: by name first (the node's
quantized and float layer names passed through the same rule VART applies, :func:`board_name`, found
as a whole ``_``-separated run inside the tensor name, so the compiler's usual additions such as a
``subgraph_`` or model-name prefix and a ``_fix`` / ``_BiasAdd`` suffix are allowed; the longest such
name wins), then by size where names tie. A conv or add whose activation the DPU fuses has no codes of
its own: its tensor is compared with the activation's output, where the DPU rounds. An override map
(board tensor -> layer) takes precedence.

Engine ``e`` of the dump is sample ``e`` of the inputs. The emulator's integer (DPU) pipeline is
compared code by code; where it differs, the quantizer's float32 simulation is run too: if it
reproduces the board, the emulator's integer arithmetic is what is wrong; if it does not, the board
computes differently from both. A differing layer whose inputs are in the dump is also recomputed from
the board's own input codes (the isolated check), which tells a layer that computes differently from
one that only inherited an earlier difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.dpu.dpu_graph import DpuGraph, Node, quantizes_model_input
from qinspect.dpu.executor import Evaluator, Value, _FusedValue, batch_inputs, check_input_shape, same_size_codes
from qinspect.dpu.mismatch_cause import INPUT_ROUNDING, mismatch_cause
from qinspect.errors import QInspectError
from qinspect.io.board_dump import BoardDump, BoardTensor, board_name

MAX_CANDIDATES = 8  # candidates listed for an unmapped tensor
RESHAPES = ("flatten", "reshape", "identity")  # ops that keep every code, in order, at its position
# Rank of a tensor kind among the rows of one layer: where the DPU writes it (inside a subgraph, or as
# a subgraph's output) before where the next subgraph reads it back as an input.
PRODUCED_FIRST = ("internal", "output", "input")


def _row_key(m: BoardMatch) -> tuple[int, int, str]:
    return m.order, PRODUCED_FIRST.index(m.tensor.kind), m.tensor.subgraph


@dataclass
class BoardMatch:
    """One board tensor (all its engines) against the emulator node it maps to."""

    tensor: BoardTensor
    layer: str  # emulator node (the quantized model's layer name)
    float_layer: str  # the float model's layer it stands for
    order: int  # the node's index in topological order
    mapped_by: str  # "name", "name+size" or "map"
    total: int = 0
    matched: int = 0
    max_lsb: float = 0.0
    histogram: list[int] = field(default_factory=list)  # histogram[d]: codes that differ by d LSB
    first_mismatch: dict[str, Any] | None = None
    sim_matched: int | None = None  # codes the quantizer's float32 simulation gets equal to the board
    isolated_matched: int | None = None  # codes equal when the node is fed the board's own inputs
    note: str = ""
    cause: str = ""  # what the codes show (qinspect.dpu.mismatch_cause), part of the note too
    gating: bool = True  # every board tensor decides the exit status

    @property
    def name(self) -> str:
        """``subgraph/kind/tensor``."""
        return self.tensor.label

    @property
    def ok(self) -> bool:
        """True when every code matches."""
        return self.matched == self.total

    @property
    def sim_reproduces(self) -> bool | None:
        """Whether the float32 simulation gives every code the board gave (None: not run)."""
        return None if self.sim_matched is None else self.sim_matched == self.total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the dump_model row's keys plus ``subgraph``, ``kind``, ``engine``."""
        d: dict[str, Any] = {
            "name": self.name, "matched": self.matched, "total": self.total, "max_lsb": self.max_lsb,
            "layer": self.layer, "float_layer": self.float_layer, "tensor": self.tensor.name,
            "subgraph": self.tensor.subgraph, "kind": self.tensor.kind, "engine": self.tensor.engines,
            "dtype": "int8", "gating": True, "mapped_by": self.mapped_by, "first_mismatch": self.first_mismatch,
            "lsb_histogram": self.histogram, "files": [self.tensor.files[e] for e in self.tensor.engines],
        }
        if self.sim_matched is not None:
            d["sim_matched"] = self.sim_matched
            d["sim_reproduces"] = self.sim_reproduces
        if self.isolated_matched is not None:
            d["isolated_matched"] = self.isolated_matched
        if self.note:
            d["note"] = self.note
        if self.cause:
            d["cause"] = self.cause
        return d


@dataclass
class Unmapped:
    """A board tensor that maps to no emulator node."""

    tensor: BoardTensor
    size: int
    candidates: list[str]  # nodes whose per-sample output has this size
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.tensor.label, "file": self.tensor.files[self.tensor.engines[0]], "size": self.size,
                "candidates": self.candidates, "reason": self.reason}


@dataclass
class BoardComparison:
    """Everything ``compare-dump`` reports for a board dump."""

    tensors: list[BoardMatch]
    unmapped: list[Unmapped]
    samples: int
    notes: list[str]

    @property
    def first_divergence(self) -> BoardMatch | None:
        """The differing tensor whose layer comes first in topological order (for one layer: where the
        DPU wrote it before where the next subgraph read it back)."""
        bad = [m for m in self.tensors if not m.ok]
        if not bad:
            return None
        return min(bad, key=_row_key)

    @property
    def own_divergences(self) -> list[BoardMatch]:
        """Differing tensors that still differ when their layer is fed the board's own inputs: each is a
        place where the board computes differently, not only a consequence of an earlier one."""
        return [m for m in self.tensors if m.isolated_matched is not None and m.isolated_matched < m.total]

    @property
    def all_matched(self) -> bool:
        """True when every tensor of the dump maps to a layer and matches bit for bit."""
        return all(m.ok for m in self.tensors) and not self.unmapped


def has_codes(node: Node, v: Value) -> bool:
    """True when the node's output is an int8 tensor the DPU writes (not a fused producer, not pre-quantized)."""
    if not v.quantized or node.op == "input":
        return False
    if isinstance(v, _FusedValue) and v.has_pre:
        return False
    return not (node.pre_slot is not None and node.out_slot is None)


def float_layer(node: Node) -> str:
    """The float model's layer a node stands for (an input quantizer stands for its model input)."""
    if node.op == "quantize" and node.inputs:
        return node.inputs[0]
    return node.origin[-1] if node.origin else node.name


class _Targets:
    """Emulator nodes a board tensor can map to, with their names and per-sample sizes."""

    def __init__(self, g: DpuGraph, values: dict[str, Value]) -> None:
        self.g = g
        self.order = {n.name: i for i, n in enumerate(g.nodes)}
        self.size: dict[str, int] = {}
        self.names: dict[str, set[str]] = {}  # target node -> normalised names that stand for it
        for n in g.nodes:
            v = values.get(n.name)
            if v is None:
                continue
            target = self.target(n, v)
            if target is None:
                continue
            tv = values[target.name]
            self.size[target.name] = int(np.prod(tv.codes().shape[1:]))
            self.names.setdefault(target.name, set()).update(board_name(x) for x in (n.name, *n.origin, float_layer(n)))

    def target(self, n: Node, v: Value) -> Node | None:
        """The node whose codes hold ``n``'s output on the DPU (its fused activation for a fused conv)."""
        if isinstance(v, _FusedValue) and v.has_pre:
            return self.g.fused_activation(n)
        return n if has_codes(n, v) else None

    def resolve(self, layer: str) -> str | None:
        """A node name, float layer name or normalised name given by the user -> target node."""
        for target, names in self.names.items():
            if layer == target or board_name(layer) in names:
                return target
        return None

    def by_name(self, tensor: str) -> list[str]:
        """Targets whose best name match inside ``tensor`` is the longest found."""
        best: dict[str, int] = {}
        for target, names in self.names.items():
            for c in names:
                if _contains_run(tensor, c):
                    best[target] = max(best.get(target, 0), len(c))
        if not best:
            return []
        top = max(best.values())
        return sorted(t for t, s in best.items() if s == top)

    def of_size(self, size: int) -> list[str]:
        """Targets whose per-sample output holds ``size`` codes, in topological order."""
        return sorted((t for t, s in self.size.items() if s == size), key=self.order.__getitem__)


def _contains_run(tensor: str, name: str) -> bool:
    """``name`` appears in ``tensor`` as a whole run of ``_``-separated words."""
    if not name:
        return False
    return (tensor == name or tensor.startswith(name + "_") or tensor.endswith("_" + name)
            or f"_{name}_" in tensor)


_NOT_GIVEN = object()


def _override(overrides: dict[str, str | None], t: BoardTensor) -> object:
    for key in (t.label, f"{t.subgraph}/{t.name}", t.name):
        if key in overrides:
            return overrides[key]
    return _NOT_GIVEN


def map_tensors(targets: _Targets, dump: BoardDump, overrides: dict[str, str | None] | None = None,
                map_path: str | None = None
                ) -> tuple[list[tuple[BoardTensor, str, str]], list[Unmapped], list[BoardTensor]]:
    """Board tensor -> (tensor, target node, how); the rest as :class:`Unmapped`; and the tensors the
    overrides map to ``None`` (left out on purpose).

    A tensor whose name maps to layers none of which has its size is an error naming the file (a
    truncated or foreign file), as is an override naming a layer that does not exist or has another size.
    """
    overrides = overrides or {}
    keys = {k for t in dump.tensors for k in (t.label, f"{t.subgraph}/{t.name}", t.name)}
    unknown = sorted(set(overrides) - keys)
    if unknown:
        raise QInspectError(f"names '{unknown[0]}', which is no tensor of the board dump (give name, subgraph/name "
                            "or subgraph/kind/name as in the dump's file names)", map_path)
    mapped: list[tuple[BoardTensor, str, str]] = []
    unmapped: list[Unmapped] = []
    ignored: list[BoardTensor] = []
    for t in dump.tensors:
        size = t.size
        wanted = _override(overrides, t)
        if wanted is None:
            ignored.append(t)
            continue
        if isinstance(wanted, str):
            target = targets.resolve(wanted)
            if target is None:
                raise QInspectError(f"maps {t.label} to '{wanted}', which is no DPU layer of the model", map_path)
            _check_size(targets, t, target, size)
            mapped.append((t, target, "map"))
            continue
        named = targets.by_name(t.name)
        if not named:
            unmapped.append(Unmapped(t, size, targets.of_size(size)[:MAX_CANDIDATES],
                                     "no layer of the model has this name"))
            continue
        fitting = [n for n in named if targets.size[n] == size]
        if not fitting:
            _check_size(targets, t, named[0], size)
        if len(fitting) > 1:
            unmapped.append(Unmapped(t, size, fitting[:MAX_CANDIDATES],
                                     "its name and size fit several layers equally (use --map)"))
            continue
        mapped.append((t, fitting[0], "name" if len(named) == 1 else "name+size"))
    return mapped, unmapped, ignored


def _check_size(targets: _Targets, t: BoardTensor, target: str, size: int) -> None:
    need = targets.size[target]
    if size != need:
        raise QInspectError(f"holds {size} bytes but layer {target}, which tensor {t.label} maps to, has "
                            f"{need} int8 values per sample (truncated, or a different model?)",
                            t.files[t.engines[0]])


def _first_mismatch(board: np.ndarray, emu: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any] | None:
    bad = np.flatnonzero(board != emu)
    if bad.size == 0:
        return None
    sample, flat = divmod(int(bad[0]), board.shape[1])
    idx = (0, 0, 0, *np.unravel_index(flat, shape))[-3:] if shape else (0, 0, flat)
    h, w, c = (int(i) for i in idx)
    return {"sample": sample, "h": h, "w": w, "c": c,
            "board": int(board.reshape(-1)[bad[0]]), "emulator": int(emu.reshape(-1)[bad[0]])}


def _match(g: DpuGraph, t: BoardTensor, target: str, how: str, order: int, board: np.ndarray,
           codes: np.ndarray) -> BoardMatch:
    """One board tensor (rows = engines) against the emulator's codes of its node."""
    emu = codes.reshape(len(board), -1)
    diff = np.abs(board.astype(np.int16) - emu.astype(np.int16))
    return BoardMatch(t, target, float_layer(g[target]), order, how, total=int(board.size),
                      matched=int(np.count_nonzero(diff == 0)), max_lsb=float(diff.max()),
                      histogram=[int(x) for x in np.bincount(diff.reshape(-1))],
                      first_mismatch=_first_mismatch(board, emu, tuple(codes.shape[1:])))


def recompute_from_codes(g: DpuGraph, ev: Evaluator, int_vals: dict[str, Value], target: str, subgraph: str,
              board_of: dict[str, dict[str, np.ndarray]]) -> np.ndarray | None:
    """The target's codes computed by the integer pipeline from the dump's own input codes (a fused
    conv + activation as one DPU op), each input taken from ``subgraph``'s copy when it has one (what
    that subgraph read; ``board_of``: node -> subgraph -> codes, a row per sample); None when an input
    is not in the dump."""
    node = g[target]
    chain = [node]
    if len(node.inputs) == 1 and g.fused_activation(g[node.inputs[0]]) is node:
        chain = [g[node.inputs[0]], node]
    ins: list[Value] = []
    for i in chain[0].inputs:
        v = int_vals.get(i)
        src = i
        while src not in board_of and g[src].op in RESHAPES and len(g[src].inputs) == 1:
            src = g[src].inputs[0]  # a flatten / reshape moves no code: the board tensor before it stands
        if src not in board_of or v is None or not v.quantized:
            return None
        copies = board_of[src]
        codes = copies.get(subgraph, next(iter(copies.values())))
        ins.append(Value(q=codes.reshape(v.codes().shape), pos=v.pos))
    out = ev.node(chain[0], ins)
    for n in chain[1:]:
        out = ev.node(n, [out])
    return out.codes()


def _written_copy(rows: list[BoardMatch], m: BoardMatch) -> BoardMatch | None:
    """For a tensor a subgraph read back (an ``input`` row), the matching copy another subgraph wrote of
    the same layer, if there is one."""
    if m.tensor.kind != "input":
        return None
    return next((r for r in rows if r.layer == m.layer and r.tensor.kind != "input" and r.ok
                 and r.tensor.subgraph != m.tensor.subgraph), None)


INPUT_CODES_NOTE = ("the board's input codes differ from the emulator's: the board ran on other inputs, or another "
                    "preprocessing (scale, mean, channel order, resize, input position), than the inputs given; "
                    "every later difference may follow from it")


def compare_board(g: DpuGraph, dump: BoardDump, inputs: np.ndarray | dict[str, np.ndarray],
                  overrides: dict[str, str | None] | None = None, map_path: str | None = None
                  ) -> BoardComparison:
    """Emulate the first ``dump.engines`` input rows and compare every board tensor with its node's codes."""
    arrays = batch_inputs(g, inputs)
    for name, arr in arrays.items():
        check_input_shape(g, name, arr)
    n = len(next(iter(arrays.values())))
    notes: list[str] = []
    if dump.engines > n:
        raise QInspectError(f"the board dump holds {dump.engines} engines (samples) but the inputs have only "
                            f"{n} rows: engine e must be input row e", dump.root)
    if dump.engines < n:
        notes.append(f"the dump holds {dump.engines} engine(s): compared input rows 0..{dump.engines - 1} "
                     f"of {n}")
        arrays = {k: v[:dump.engines] for k, v in arrays.items()}
    b = dump.engines
    int_vals = Evaluator(g, "int").run(arrays)
    targets = _Targets(g, int_vals)
    mapped, unmapped, ignored = map_tensors(targets, dump, overrides, map_path)
    if unmapped and not mapped:  # nothing in common: no table would mean anything
        u = unmapped[0]
        raise QInspectError(f"none of the board dump's {len(unmapped)} tensor(s) maps to a layer of the quantized "
                            f"model (first {u.tensor.label}: {u.reason}): a dump of another model? (if its tensors "
                            "were renamed, qinspect compare-dump --map names each one's layer)", dump.root)
    if ignored:
        notes.append(f"{len(ignored)} tensor(s) left out by the map: " + ", ".join(t.label for t in ignored))
    sim_vals: dict[str, Value] | None = None
    rows: list[BoardMatch] = []
    board_of: dict[str, dict[str, np.ndarray]] = {}  # target -> subgraph -> the board's codes, a row per engine
    for t, target, how in sorted(mapped, key=lambda r: (targets.order[r[1]], PRODUCED_FIRST.index(r[0].kind))):
        board = t.read(t.engines)
        board_of.setdefault(target, {}).setdefault(t.subgraph, board)
        v = int_vals[target]
        m = _match(g, t, target, how, targets.order[target], board, v.codes())
        if not m.ok:
            if sim_vals is None:
                sim_vals = Evaluator(g, "sim").run(arrays)
            m.sim_matched = int(np.count_nonzero(sim_vals[target].codes().reshape(b, -1) == board))
            node = g[target]
            # a model input's quantizer: the inputs given are what the board's preprocessing rounded
            source = (arrays[node.inputs[0]] if quantizes_model_input(g, node) and len(node.inputs) == 1
                      and node.inputs[0] in arrays else None)
            m.cause = "" if m.sim_reproduces else mismatch_cause(
                board, v.codes(), b, pos=v.pos, others=same_size_codes(int_vals, target, board.size),
                code_min=g.output_code_min(target), source=source, source_name="the inputs given") or ""
            m.note = ("the quantizer's float32 simulation reproduces the board here: the emulator's integer "
                      "pipeline is what differs" if m.sim_reproduces else m.cause or
                      "the quantizer's float32 simulation differs from the board too: the board computes "
                      "differently")
        rows.append(m)
    rows.sort(key=_row_key)
    ev = Evaluator(g, "int")
    for m in rows:
        if m.ok:
            continue
        written = _written_copy(rows, m)
        if written is not None:
            # what the producing subgraph wrote matches; only what this one read back differs
            m.note = (f"the copy subgraph {m.tensor.subgraph} read back differs from the one subgraph "
                      f"{written.tensor.subgraph} wrote, which matches: the codes changed between the two subgraphs "
                      "(the transfer, memory, or a CPU step between them), not in a DPU computation")
            continue
        iso = recompute_from_codes(g, ev, int_vals, m.layer, m.tensor.subgraph, board_of)
        if iso is None:
            continue
        m.isolated_matched = int(np.count_nonzero(iso.reshape(b, -1) == board_of[m.layer][m.tensor.subgraph]))
        if m.isolated_matched == m.total:
            # inherited: a sentence about the board computing differently would contradict it (one about the
            # float32 simulation reproducing the board stays: it blames the emulator, wherever the gap began)
            inherited = "fed the board's own inputs, the emulator gives the board's codes: the difference comes " \
                        "from upstream"
            m.note = f"{m.note}; {inherited}" if m.sim_reproduces else inherited
        else:
            # with a cause named (another position, exchanged samples), "computes differently" would mislead
            m.note += "; " + ("fed the board's own inputs, the emulator still differs: the difference arises at "
                              "this tensor" if m.cause else "fed the board's own inputs, the emulator still differs: "
                              "this layer computes differently")
    first = min((m.order for m in rows if not m.ok), default=None)
    for m in rows:
        if not m.ok and (m.layer in g.inputs or quantizes_model_input(g, g[m.layer])):
            # No DPU arithmetic makes the input codes: the application's preprocessing and quantization do.
            m.note = m.cause if INPUT_ROUNDING in m.cause else INPUT_CODES_NOTE
        if first is not None and m.order > first and not m.ok:
            m.note = (m.note + "; " if m.note else "") + "downstream of the first divergence"
    dumped = {m.layer for m in rows}
    missing = [t for t in targets.size if t not in dumped and g[t].device == "DPU"]
    if missing:
        notes.append(f"{len(missing)} DPU layer(s) have no tensor in the dump (internal tensors are dumped only "
                     f"with XLNX_ENABLE_DEBUG_MODE=1), first {missing[0]}")
    return BoardComparison(rows, unmapped, b, notes)
