"""``qinspect calibrate MODEL --inputs CALIB.npy --batch-size B [--no-cle] [--json]``.

Predicts the positions the Vitis AI quantizer (vai_q_tensorflow2, pof2s) chooses: the quantizer's
graph rewrites, batch-by-batch calibration through its float32 fake-quant simulation with per-batch
positions and voting, then the DPU constraints. ``--json`` prints an object whose ``positions`` is
keyed exactly like the quantizer's ``get_quantize_info`` (and the reference cases' positions.json),
with ``pre_refine_positions``, ``calib_batch_positions``, ``refine_changes``, ``rewrites`` and
``adjustments``.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``calibrate`` sub-command."""
    p = subparsers.add_parser(
        "calibrate",
        help="predict the positions the Vitis quantizer (pof2s) chooses for a float model",
        description="Rewrite a float Keras model as the Vitis AI quantizer does (BN folding, activation "
        "fusion, cross-layer equalization, ...), calibrate it batch by batch as vai_q_tensorflow2 pof2s "
        "does, apply the DPU constraints, and print the positions.",
    )
    p.add_argument("model", metavar="MODEL", help="float Keras model (.h5 / .keras) or a qinspect capture")
    p.add_argument("--inputs", metavar="CALIB", help="calibration inputs (.npy / .npz); default: the capture's")
    p.add_argument("--batch-size", type=int, default=32, metavar="B",
                   help="calibration batch size (the quantizer's calib_batch_size; it changes the result)")
    p.add_argument("--no-cle", action="store_true", help="switch cross-layer equalization off")
    p.add_argument("--samples", type=int, default=None, help="use only the first N samples")
    p.add_argument("--json", action="store_true", help="print JSON (positions keyed like positions.json)")
    return p


def run(args: argparse.Namespace) -> int:
    """Calibrate and print."""
    from qinspect.cli._dpu_common import is_vitis_quantized, open_data, print_json, require_file
    from qinspect.dpu.emulator import Emulator
    from qinspect.errors import QInspectError
    from qinspect.io.model_file import open_model

    require_file(args.model)
    if args.batch_size < 1:
        raise QInspectError(f"--batch-size must be at least 1 (got {args.batch_size})")
    if is_vitis_quantized(args.model):
        raise QInspectError("is a Vitis quantized model: its positions are already chosen (use emulate "
                            "--positions or compare-dump)", args.model)
    with open_model(args.model) as source:
        emu = Emulator.from_model(source, None, args.batch_size, cle=not args.no_cle)
        if args.inputs:
            data = open_data(args.inputs, emu.graph, args.samples)
        elif getattr(source, "kind", "") == "capture":
            data = source
        else:
            raise QInspectError("calibration needs --inputs (a .npy / .npz of preprocessed samples)", args.model)
        res = emu.calibrate(data, args.batch_size)
        out = {
            "model": args.model,
            "quantize_strategy": "pof2s",
            "cle": not args.no_cle,
            **res.to_dict(),
            "rewrites": [r.to_dict() for r in emu.rewrites],
        }
    if args.json:
        print_json(out)
        return 0
    w = sys.stdout.write
    w(f"{args.model}: {res.samples} samples in {res.batches} batches of {args.batch_size}\n")
    w(f"{'layer':34} {'tensor':40} {'position':>8}  per-batch\n")
    for layer, keys in res.positions.items():
        for key, pos in keys.items():
            pb = res.batch_positions.get(layer, {}).get(key, [])
            varied = "" if len(set(pb)) <= 1 else "  " + ",".join(str(v) for v in pb)
            w(f"{layer:34} {key:40} {pos:>8}{varied}\n")
    if emu.rewrites:
        w("\nrewrites:\n")
        for r in emu.rewrites:
            w(f"  - {r.text}\n")
    w("\nconstraint adjustments:\n" if res.adjustments else "\nconstraint adjustments: none\n")
    for a in res.adjustments:
        w(f"  - {a.text}\n")
    return 0
