"""``qinspect calibrate MODEL --inputs CALIB.npy --batch-size B [--no-cle] [--cle-steps N] [--cle-to-relu6]
[--convert-relu6-to-relu] [--json]``.

Predicts the positions the Vitis AI quantizer (vai_q_tensorflow2, pof2s) chooses: the quantizer's
graph rewrites, batch-by-batch calibration through its float32 fake-quant simulation with per-batch
positions and voting, then the DPU constraints. ``--json`` prints an object whose ``positions`` is
keyed exactly like the quantizer's ``get_quantize_info`` (and the reference cases' positions.json),
with ``pre_refine_positions``, ``calib_batch_positions``, ``refine_changes``, ``rewrites``,
``adjustments`` and ``quantizer_options`` (the quantizer keywords the result was computed under).

On a capture (no ``--inputs``) the calibration runs over every sample the capture was fed: a capture
keeping full tensors for fewer samples holds all inputs in ``/all_inputs``, so the result equals
``calibrate MODEL --inputs`` on the same samples (docs/capture-format.md).
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
    from qinspect.cli._dpu_common import add_data_args

    p.add_argument("model", metavar="MODEL",
                   help="float Keras model (.h5 / .keras / SavedModel folder) or a qinspect capture")
    add_data_args(p, "calibration inputs (.npy / .npz); default: the capture's",
                  "calibration batch size (the quantizer's calib_batch_size; it changes the result; default 32)",
                  inputs_metavar="CALIB")
    p.add_argument("--json", action="store_true", help="print JSON (positions keyed like positions.json)")
    return p


def _kept_note(source: object, data: object, inputs: str | None) -> str:
    """`` (K kept)`` when calibrating on every input of a capture that keeps full tensors for K of them;
    a note when such a capture could only give its kept samples."""
    from qinspect.cli._sources import is_capture_source

    if inputs is not None or not is_capture_source(source):
        return ""
    capture = getattr(source, "capture", source)
    kept, total = int(capture.n_samples), int(getattr(capture, "n_total_samples", capture.n_samples))
    if total <= kept:
        return ""
    if int(getattr(data, "n_samples", 0)) > kept:
        return f" ({kept} kept)"
    return (f" (only the {kept} kept of {total}: layers without an implementation need their captured "
            "outputs, which exist for those only)")


def run(args: argparse.Namespace) -> int:
    """Calibrate and print."""
    from qinspect.cli import _dpu_common as common
    from qinspect.cli._sources import open_any
    from qinspect.errors import QInspectError

    common.require_file(args.model, "MODEL")
    common.check_counts(args)
    if common.is_vitis_quantized(args.model):
        raise QInspectError("is a Vitis quantized model: its positions are already chosen (use emulate "
                            "--positions or compare-dump)", args.model)
    with open_any(args.model) as source:
        emu, _ = common.open_positions_emulator(source, args)
        data = common.data_source(args.inputs, emu, source, args.model, args.samples,
                           need="calibration needs --inputs (a .npy / .npz of preprocessed samples)",
                                  preprocess=args.preprocess, every_sample=True)
        res = emu.calibrate(data, args.batch_size)
        kept = _kept_note(source, data, args.inputs)
        out = {
            "model": args.model,
            "quantize_strategy": "pof2s",
            "cle": not args.no_cle,
            "quantizer_options": emu.graph.options.to_dict() if emu.graph.options else None,
            **res.to_dict(),
            "rewrites": [r.to_dict() for r in emu.rewrites],
        }
    if args.json:
        common.print_json(out)
        return 0
    w = sys.stdout.write
    opts = emu.graph.options.describe() if emu.graph.options else "default options"
    batches = f"{res.batches} batch" + ("es" if res.batches != 1 else "")
    w(f"{args.model}: {res.samples} samples{kept} in {batches} of up to {args.batch_size} ({opts})\n")
    # Columns as wide as the longest name, so long quantizer names keep the table aligned.
    lw = max([34, *(len(layer) for layer in res.positions)])
    tw = max([40, *(len(key) for keys in res.positions.values() for key in keys)])
    w(f"{'layer':{lw}} {'tensor':{tw}} {'position':>8}  per-batch\n")
    for layer, keys in res.positions.items():
        for key, pos in keys.items():
            pb = res.batch_positions.get(layer, {}).get(key, [])
            varied = "" if len(set(pb)) <= 1 else "  " + ",".join(str(v) for v in pb)
            w(f"{layer:{lw}} {key:{tw}} {pos:>8}{varied}\n")
    if emu.rewrites:
        w("\nrewrites:\n")
        for r in emu.rewrites:
            w(f"  - {r.text}\n")
    w("\nconstraint adjustments:\n" if res.adjustments else "\nconstraint adjustments: none\n")
    for a in res.adjustments:
        w(f"  - {a.text}\n")
    return 0
