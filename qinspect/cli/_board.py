"""``compare-dump`` on a DPU runtime (VART) board dump: the report and its exit status."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qinspect.errors import QInspectError


def read_map(path: str) -> dict[str, str | None]:
    """A ``--map`` file: a JSON object of board tensor (``name``, ``subgraph/name`` or
    ``subgraph/kind/name``) -> layer (the float model's or the quantized model's layer name), or
    ``null`` to leave the tensor out (one the compiler added that no layer stands for)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise QInspectError(f"cannot read the map file ({exc.strerror or exc})", path) from None
    except (ValueError, UnicodeDecodeError):
        raise QInspectError("the map file is not JSON", path) from None
    except RecursionError:
        raise QInspectError("the map file is not a map: its JSON is nested too deeply", path) from None
    if not isinstance(data, dict) or not all(isinstance(v, str | None) for v in data.values()):
        raise QInspectError('the map file must be a JSON object of "board tensor": "layer" (or null)', path)
    return data


def _where(fm: dict[str, Any] | None) -> str:
    if fm is None:
        return ""
    return (f"sample {fm['sample']} (h {fm['h']}, w {fm['w']}, c {fm['c']}): board {fm['board']} "
            f"emulator {fm['emulator']}")


def headline(first: Any) -> str:
    """The first diverging layer, in one line."""
    if first is None:
        return "first divergence: none, every compared tensor matches bit for bit"
    return (f"first divergence: layer {first.float_layer} ({first.layer}), tensor {first.name}: "
            f"{first.total - first.matched}/{first.total} codes differ, max {first.max_lsb:g} LSB, first at "
            f"{_where(first.first_mismatch)}; {first.note}")


def first_divergence_json(first: Any) -> dict[str, Any] | None:
    """``first_divergence`` of the JSON report."""
    if first is None:
        return None
    return {"layer": first.layer, "float_layer": first.float_layer, "tensor": first.name,
            "subgraph": first.tensor.subgraph, "kind": first.tensor.kind, "matched": first.matched,
            "total": first.total, "max_lsb": first.max_lsb, "first_mismatch": first.first_mismatch,
            "sim_matched": first.sim_matched, "sim_reproduces": first.sim_reproduces,
            "isolated_matched": first.isolated_matched, "note": first.note, "cause": first.cause or None}


def run_board(args: argparse.Namespace, emu: Any, inputs: dict[str, Any], n_inputs: int) -> int:
    """Compare a board dump with the emulator, print the report, return the exit status."""
    from qinspect.cli import error
    from qinspect.cli._dpu_common import print_json
    from qinspect.dpu.board_compare import compare_board
    from qinspect.io.board_dump import open_board_dump

    dump = open_board_dump(args.dump)
    overrides = read_map(args.map) if args.map else None
    res = compare_board(emu.graph, dump, inputs, overrides, args.map)
    first = res.first_divergence
    if args.json:
        print_json({
            "quantized": args.quantized, "dump": args.dump, "inputs": args.inputs, "format": "board",
            "found": dump.describe(), "samples": res.samples, "engines": dump.engines,
            "subgraphs": dump.subgraphs, "all_matched": res.all_matched,
            "first_divergence": first_divergence_json(first),
            "own_divergences": [m.name for m in res.own_divergences],
            "tensors": [m.to_dict() for m in res.tensors], "unmapped": [u.to_dict() for u in res.unmapped],
            "missing": [], "notes": res.notes,
        })
    else:
        w = sys.stdout.write
        w(f"found {dump.describe()} in {dump.root}; compared with {args.quantized} on input rows "
          f"0..{res.samples - 1} of {n_inputs}\n")
        w((headline(first) if first is not None or res.all_matched else
           f"first divergence: none among the mapped tensors, but {len(res.unmapped)} board tensor(s) map to no "
           "layer: not a match") + "\n")
        own = [m for m in res.own_divergences if m is not first]
        if own:
            w("also differ when fed the board's own inputs (more than one place computes differently): "
              + ", ".join(f"{m.float_layer} ({m.name})" for m in own) + "\n")
        w("\n")
        tw = max([len("tensor"), *(len(m.name) for m in res.tensors)])
        lw = max([len("layer"), *(len(m.float_layer) for m in res.tensors)])
        w(f"{'tensor':{tw}} {'layer':{lw}} {'matched':>15} {'max LSB':>8}  first mismatch\n")
        for m in res.tensors:
            frac = f"{m.matched}/{m.total}"
            note = f"  ({m.note})" if m.note else ""
            w(f"{m.name:{tw}} {m.float_layer:{lw}} {frac:>15} {m.max_lsb:>8g}  {_where(m.first_mismatch)}{note}\n")
        w(f"\n{sum(m.ok for m in res.tensors)}/{len(res.tensors)} board tensors match the emulator bit for bit"
          f" over {res.samples} engine(s)\n")
        for note in res.notes:
            w(f"note: {note}\n")
        for u in res.unmapped:
            cands = ", ".join(u.candidates) if u.candidates else "none"
            w(f"unmapped: {u.tensor.files[u.tensor.engines[0]]} ({u.size} bytes per engine; {u.reason}; "
              f"layers of that size: {cands})\n")
    if res.unmapped:
        u = res.unmapped[0]
        more = f" (and {len(res.unmapped) - 1} more unmapped)" if len(res.unmapped) > 1 else ""
        return error(f"{u.tensor.files[u.tensor.engines[0]]}: board tensor {u.tensor.label} maps to no layer of "
                     f"{args.quantized}: {u.reason}; give it with --map{more}")
    return 0 if res.all_matched else 1
