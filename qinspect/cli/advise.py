"""``qinspect advise MODEL_OR_CAPTURE [--eval CAPTURE2] [--inputs X] [--batch-size B] [--json]``.

Tries, in the emulator, the quantizer options that change pof2s results (``include_cle``,
``cle_to_relu6`` and ``convert_relu6_to_relu`` where the model has ReLU6, the calibration batch size and
the number of calibration samples) and, on the best of them, the small sets of
layers worth keeping in float. Prints a ranked table (output SQNR, top-1 agreement with the float model,
DPU operations moved to the CPU) with the ``vai_q_tensorflow2`` call that reproduces each row. Measured on ``--eval``'s
inputs when given, else on the calibration samples.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``advise`` sub-command."""
    p = subparsers.add_parser(
        "advise",
        help="try quantizer options and float layers in the emulator; rank them by output SQNR",
        description="Rank ways to quantize the model (vai_q_tensorflow2 options, layers kept in float), each "
        "measured in the emulator, with the quantize_model call that reproduces it.",
    )
    from qinspect.cli._dpu_common import add_data_args, add_outputs_arg

    p.add_argument("model", metavar="MODEL_OR_CAPTURE",
                   help="qinspect capture, or a float Keras model (.h5 / .keras / SavedModel folder) with --inputs")
    p.add_argument("--eval", metavar="CAPTURE2", help="evaluation capture of the same model: measure on it")
    add_data_args(p, "calibration inputs (.npy / .npz) when MODEL is not a capture",
                  "calibration batch size to start from (default 32)",
                  samples_help="samples each row is measured on (default: as many as qinspect diagnose's sensitivity "
                  "pass uses on this model, 16 to 64; time grows with it)")
    add_outputs_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON: the ranked rows")
    return p


def run(args: argparse.Namespace) -> int:
    """Try the options and print the ranked table."""
    from qinspect.analysis.advisor import (
        SIMPLEST_NOTE,
        TOP1_OUTRANKED_NOTE,
        WITHIN_NOISE_NOTE,
        advise,
        in_sample_note,
        option_grid,
        quantizer_stops_note,
        top1_outranked,
        within_noise,
    )
    from qinspect.analysis.decisions import agreement_text
    from qinspect.analysis.diagnose import default_sens_samples
    from qinspect.analysis.outputs import focused, output_layer
    from qinspect.cli import _dpu_common as common
    from qinspect.cli._progress import stderr_progress
    from qinspect.cli._sources import open_any
    from qinspect.cli.diagnose import _arrays, open_eval_capture
    from qinspect.dpu.emulator import Emulator, calibration_data
    from qinspect.io.capture_file import Capture, is_capture
    from qinspect.io.same_model import check_same_model

    common.require_file(args.model, "MODEL_OR_CAPTURE")
    common.check_counts(args)
    if args.eval is not None:
        common.require_file(args.eval, "--eval")
    source = eval_cap = None
    try:
        source = Capture.open(args.model) if is_capture(args.model) else open_any(args.model)
        if args.eval:
            eval_cap = open_eval_capture(args.eval)
            check_same_model(source.graph, args.model, eval_cap.graph, args.eval)
        base_options = common.quantizer_options(args)
        emu = Emulator.from_model(source, options=base_options)
        # every sample fed (a kept-subset capture's /all_inputs): the quantizer calibrates on all of them
        calib = _arrays(common.data_source(args.inputs, emu, source, args.model, preprocess=args.preprocess,
                                           every_sample=True), emu.graph, None)
        every = _arrays(calibration_data(emu.graph, eval_cap)[0], emu.graph, None) if eval_cap is not None else calib
        available = len(next(iter(every.values())))
        # the same samples as diagnose and the window's Advice tab, so the as-calibrated row reads as theirs
        n_measured = min(available, args.samples or default_sens_samples(emu.graph, available))
        if args.samples is not None and args.samples > available:
            print(f"qinspect: warning: asked for {args.samples} samples, the data holds {available}; using all",
                  file=sys.stderr)
        data = {k: v[:n_measured] for k, v in every.items()}
        n_calib = len(next(iter(calib.values())))
        outputs = common.chosen_outputs(emu.graph, args.outputs, args.model)
        weighed = [output_layer(emu.graph, o) for o in outputs or emu.graph.outputs]

        def build(opts: dict[str, Any]) -> Any:
            n = opts.get("calib_samples", n_calib)
            keywords = {k: v for k, v in opts.items() if k != "calib_samples"}
            # calibrated whole (the quantizer sees the whole model), measured on the chosen outputs
            return focused(Emulator.from_model(source, {k: v[:n] for k, v in calib.items()},
                                               options=base_options.with_(**keywords)).graph, outputs)

        warnings: list[str] = []
        same: list[str] = []
        with stderr_progress("advise", not args.json) as step:
            rows = advise(build, data, option_grid(base_options.calib_batch_size, n_calib, _has_relu6(source.graph)),
                          step=step, notes=warnings, same=same)
    finally:
        for f in (source, eval_cap):
            if f is not None:
                f.close()
    measured_on = f"evaluation ({args.eval})" if args.eval else "calibration"
    dicts = [r.to_dict() for r in rows]
    in_sample = None if args.eval else in_sample_note(n_calib, rows=dicts)
    if args.json:
        common.print_json({"model": args.model, "eval": args.eval, "measured_on": measured_on,
                           "samples": n_measured, "samples_available": available, "calib_samples": n_calib,
                           "weighed_outputs": weighed, "warnings": warnings, "in_sample": in_sample,
                           "same_model": same, "advice": dicts})
        return 0
    w = sys.stdout.write
    for warning in warnings:
        w(f"warning: {warning}\n")
    for line in same:
        w(f"note: {line}\n")
    w(f"measured on: {measured_on}, {_count(n_measured, available)}; calibrated on {n_calib}; best first\n")
    if len(weighed) > 1 or outputs is not None:
        w(f"output SQNR of: {', '.join(weighed)}" + (" (pooled by signal power)" if len(weighed) > 1 else "") + "\n")
    w(f"{'#':>3} {'SQNR dB':>8} {'top-1':>7} {'CPU+':>4}  options / float layers\n")
    outranked = top1_outranked([r.top1_agreement for r in rows], [r.quantizer_stops is None for r in rows])
    top = dicts[0]
    close = [within_noise(r.to_dict(), top) for r in rows]
    for i, (r, down) in enumerate(zip(rows, outranked, strict=True), 1):
        top1 = ("-" if r.top1_agreement is None else agreement_text(r.top1_agreement)) + ("↓" if down else "")
        opts = ", ".join(f"{k}={v}" for k, v in r.options.items())
        sqnr = f"{r.output_sqnr_db:.2f}" + ("=" if r.simplest_within_noise else "≈" if close[i - 1] else "")
        w(f"{i:>3} {sqnr:>8} {top1:>7} {r.cpu_layers_added:>4}  " + ("✗ " if r.quantizer_stops else "")
          + opts + (f"; float: {', '.join(r.keep_float)}" if r.keep_float else "") + "\n")
        w(f"{'':>26}{r.command}\n")
    if rows[0].simplest_within_noise:
        w("\n" + SIMPLEST_NOTE)
    if any(close):
        w("\n" + WITHIN_NOISE_NOTE)
    if any(outranked):
        w("\n" + TOP1_OUTRANKED_NOTE)
    if stops := quantizer_stops_note([r.quantizer_stops for r in rows]):
        w("\n" + stops)
    if in_sample:
        w("\n" + in_sample + "\n")
    # what this table cannot show: a calibration set that does not cover use is cured by other data
    w("\nThese rows change quantizer options and float layers on the same calibration data. Data remedies "
      "(calibrating on data representative of use, without outliers) and position changes are measured by "
      "qinspect diagnose" + (" (give it the same --eval)" if args.eval else "") + ".\n")
    return 0


def _count(n: int, available: int) -> str:
    """``16 samples``, or ``the first 16 of 32 samples`` when more were there (a subset may not be
    representative: the rest of the data is not in these figures)."""
    return f"{n} samples" if n >= available else f"the first {n} of {available} samples (--samples to change)"


def _has_relu6(graph: Any) -> bool:
    """Whether the float model caps an activation at 6 (the ReLU6 options change something then)."""
    from qinspect.analysis.advisor import has_relu6

    return has_relu6(graph.layers)
