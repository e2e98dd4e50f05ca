"""``qinspect compare-dump QUANTIZED.h5 DUMP_DIR --inputs INPUTS.npy [--map MAP.json] [--json]``.

DUMP_DIR is either the quantizer's ``dump_model`` folder or the DPU runtime's board dump
(``XLNX_ENABLE_DUMP=1``: ``dump/<subgraph>/{input,internal,output}/<engine>.<tensor>.bin``); the
command says which it found. A board dump is handled by :mod:`qinspect.cli._board`.

For a dump_model folder: emulates the Vitis quantized model (positions and folded weights read from the
file, no quantizer needed) on the inputs given to ``dump_model`` and compares every int8 tensor of the
dump, weights and activations, with the emulator's. Per tensor: match fraction, max |difference| in LSB, first mismatch;
where the emulator's integer (DPU) result differs, whether the quantizer's float32 simulation
reproduces the dump (a simulation-versus-DPU gap, DPU_NUMERICS.md 4b). ``_float`` files are reported
too; they decide the result only for pre-quantized activations (softmax), whose int8 file means
nothing. With ``--json``: ``format`` (``dump_model`` or ``board``), ``first_divergence`` and a
``tensors`` list of ``name``, ``matched``, ``total``, ``max_lsb`` (and more).

Exit status: 0 when every tensor matches; 1 when some differ; 2 for bad input, including dump files
that map to no tensor of the model (listed as unmapped), files the model says Vitis writes but
that are missing, and a missing ``dump_results_0/`` or ``dump_results_weights/`` folder (an incomplete
dump is never a match). Only the ``.bin`` files are read: the ``.txt`` copies dump_model writes beside
them are never compared (a ``.bin`` present only as its ``.txt`` is missing, and said so).
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare-dump`` sub-command."""
    p = subparsers.add_parser(
        "compare-dump",
        help="compare a Vitis dump_model folder or a DPU board dump with the emulator, tensor by tensor",
        description="Emulate a Vitis quantized.h5 on the dump inputs and compare every dumped int8 tensor "
        "(weights and activations of a dump_model folder; the tensors a DPU board wrote with XLNX_ENABLE_DUMP=1) "
        "with the emulator's, headed by the first diverging layer. Exit 0 only when all match.",
    )
    p.add_argument("quantized", metavar="QUANTIZED.h5", help="the quantizer's saved quantized model")
    p.add_argument("dump", metavar="DUMP_DIR", help="dump_results folder (or its dump_results_0 sub-folder), or "
                   "a DPU runtime board dump (the dump/ folder XLNX_ENABLE_DUMP=1 writes, or its parent)")
    p.add_argument("--inputs", required=True, metavar="INPUTS",
                   help="the inputs given to dump_model or to the board (.npy/.npz); board engine e is row e")
    p.add_argument("--map", metavar="MAP.json", help='board dumps: a JSON object {"board tensor": "layer"} that '
                   "overrides the name mapping")
    p.add_argument("--json", action="store_true", help="print JSON (format, first_divergence, a tensors list)")
    from qinspect.cli._dpu_common import add_target_arg

    add_target_arg(p)
    return p


LISTED = 10  # unmapped or missing files named in the text output (--json has them all)


def run(args: argparse.Namespace) -> int:
    """Compare and print."""
    from qinspect.cli import error
    from qinspect.cli._dpu_common import print_json, require_file
    from qinspect.dpu.dump_checks import (
        check_comparable,
        check_same_model,
        check_samples,
        dump_inputs,
        float_file_note,
        weight_copy_note,
    )
    from qinspect.dpu.emulator import Emulator, compare_dump, dumped_samples, first_dump_divergence, where_in_dump
    from qinspect.dpu.options import QuantizerOptions
    from qinspect.io.board_dump import dump_folder_kind
    from qinspect.io.vitis import open_dump

    require_file(args.quantized)
    require_file(args.dump)
    if args.map:
        require_file(args.map)
    narrow = QuantizerOptions(target=args.target or "").narrow_activations
    emu = Emulator.from_quantized(args.quantized, narrow_activations=narrow)
    kind = dump_folder_kind(args.dump)
    inputs, n_samples, said = dump_inputs(args.inputs, emu.graph)
    for line in said:
        print(f"qinspect: note: {line}", file=sys.stderr)
    if kind == "board":
        from qinspect.cli._board import run_board

        return run_board(args, emu, inputs, n_samples)
    if kind is None and not os.path.isdir(args.dump):
        return error(f"{args.dump}: not a folder (expected a dump_results folder from dump_model or a board dump)")
    if kind is None:
        return error(f"{args.dump}: neither a quantizer dump_model folder (dump_results_0/, dump_results_weights/) "
                     "nor a DPU board dump (dump/<subgraph>/{input,internal,output}/<engine>.<tensor>.bin)")
    if args.map:
        return error(f"{args.map}: --map applies to board dumps only; {args.dump} is not one")
    dump = open_dump(args.dump, emu.quantized_model)
    check_same_model(dump, args.quantized)
    check_samples(emu.graph, dump, n_samples, args.inputs)
    matches = compare_dump(emu, dump, inputs)
    n_dump = dumped_samples(emu.graph, dump)
    gating = [m for m in matches if m.gating]
    missing = [e.path or e.filename for e in dump.missing]
    # a dump lacking files (or holding some of no tensor) is never a match, whatever the rest compares
    all_ok = all(m.ok for m in gating) and not missing and not dump.unmapped and not dump.absent
    # another model's dump, or one made from other inputs: refused before any row blames the DPU
    check_comparable(emu.graph, dump, matches, args.quantized, args.inputs)
    warnings = [w for w in (weight_copy_note(matches), float_file_note(emu.graph, matches)) if w]
    first = first_dump_divergence(emu.graph, matches)
    if args.json:
        print_json({
            "quantized": args.quantized, "dump": args.dump, "inputs": args.inputs, "format": "dump_model",
            "found": "a quantizer dump_model folder",
            "first_divergence": None if first is None else first.to_dict(),
            "samples": min(n_samples, n_dump or n_samples),
            "all_matched": all_ok, "tensors": [m.to_dict() for m in matches],
            "unmapped": dump.unmapped, "missing": [e.filename for e in dump.missing],
            "absent_folders": dump.absent, "notes": dump.notes,
            "warnings": warnings,
        })
    else:
        w = sys.stdout.write
        w(f"found a quantizer dump_model folder in {args.dump}\n")
        w(("first divergence: none, every compared tensor matches bit for bit\n\n" if all_ok else
           "first divergence: none among the compared tensors, but the dump is incomplete ("
           + ", ".join([*(f"no {f}" for f in dump.absent_described), f"{len(missing)} missing",
                        f"{len(dump.unmapped)} unmapped"]) + "): not a match\n\n") if first is None else
          f"first divergence: layer {first.layer}, tensor {first.name}: {first.total - first.matched}/"
          f"{first.total} values differ, max {first.difference}{'; ' + first.note if first.note else ''}\n\n")
        for warning in warnings:
            w(f"warning: {warning}\n")
        if warnings:
            w("\n")
        w(f"{'tensor':44} {'kind':10} {'dtype':7} {'matched':>15} {'max diff':>8}  first mismatch\n")
        for m in matches:
            if not m.gating and m.ok:
                continue
            fm = "" if m.first_mismatch is None else where_in_dump(m.first_mismatch)
            frac = f"{m.matched}/{m.total}"
            note = "  " + m.note if m.note else ""
            w(f"{m.name:44} {m.kind:10} {m.dtype:7} {frac:>15} {m.difference:>8}  {fm}{note}\n")
        n_float = sum(1 for m in matches if not m.gating)
        n_float_ok = sum(1 for m in matches if not m.gating and m.ok)
        w(f"\n{sum(m.ok for m in gating)}/{len(gating)} compared tensors match bit for bit"
          f" ({n_float_ok}/{n_float} informative float files identical)\n")
        for note in dump.notes:
            w(f"note: {note}\n")
        for u in dump.unmapped[:LISTED]:
            w(f"unmapped: {u} (no tensor of the model has this file name)\n")
        for mi in missing[:LISTED]:
            w(f"missing: {mi}\n")
        if len(dump.unmapped) > LISTED or len(missing) > LISTED:
            w(f"({len(dump.unmapped)} unmapped and {len(missing)} missing in all: --json lists every one)\n")
    if dump.unmapped:
        return error(f"{dump.unmapped[0]}: dump file maps to no tensor of {args.quantized}"
                     + (f" (and {len(dump.unmapped) - 1} more unmapped)" if len(dump.unmapped) > 1 else ""))
    if dump.absent:
        return error(f"{args.dump}: no {dump.absent_described[0]} folder, which dump_model writes: those tensors "
                     "are not compared")
    if missing:
        txt = (f" ({len(dump.text_only)} of them only as .txt copies, which are not read: the .bin files are "
               "compared)" if dump.text_only else "")
        return error(f"{args.dump}: {len(missing)} file(s) Vitis writes for this model are missing, first "
                     f"{missing[0]}{txt}")
    return 0 if all_ok else 1
