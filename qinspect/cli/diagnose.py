"""``qinspect diagnose MODEL_OR_CAPTURE [--eval CAPTURE2] [--positions QUANTIZED.h5|POSITIONS.json] [--json]``.

Ranks the layers that cost accuracy and says why: each finding has a ``layer``, a ``kind``
(saturation, outlier_range, channel_spread, coverage, error_growth, alignment, constraint,
cpu_fallback), a ``severity`` (output SQNR its remedy gains, dB, measured; estimated without a remedy),
``evidence`` (numbers, each with how it was computed) and one sentence of ``advice``. Also, per layer,
the sensitivity of the model output: the SQNR gained when that layer alone stays in float, and the SQNR
when only that layer is quantized.

Positions come from ``--positions`` (a Vitis quantized.h5, whose folded weights are then used too, or a
positions JSON) or from calibrating on the capture's inputs (``--batch-size``, ``--no-cle``). With
``--eval CAPTURE2`` the errors are measured on that capture's inputs (what the model sees in use) and
``coverage`` compares them with the calibration capture; it must be a capture of the same model.
``--no-sensitivity`` skips the per-layer what-if runs (the slow part on big models). Progress goes to
stderr (a bar on a terminal, a few lines otherwise).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from qinspect.analysis.decisions import agreement_text
from qinspect.io.same_model import check_same_model


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``diagnose`` sub-command."""
    p = subparsers.add_parser(
        "diagnose",
        help="rank the layers that cost int8 accuracy, with the cause, evidence and advice",
        description="Diagnose int8 quantization: findings ranked by the output SQNR their remedy gains, and "
        "per-layer sensitivity (output SQNR if a layer alone stays float / alone is quantized).",
    )
    from qinspect.cli._dpu_common import add_data_args, add_fail_below_arg, add_outputs_arg, add_positions_arg

    p.add_argument("model", metavar="MODEL_OR_CAPTURE",
                   help="qinspect capture, or a float Keras model (.h5 / .keras / SavedModel folder) with --inputs")
    p.add_argument("--eval", metavar="CAPTURE2", help="evaluation capture of the same model: measure on it and "
                   "check calibration coverage")
    add_positions_arg(p)
    add_data_args(p, "calibration inputs (.npy / .npz) when MODEL is not a capture",
                  "calibration batch size (default 32)",
                  samples_help="samples whose float tensors the findings examine (default 64)", samples_default=64)
    p.add_argument("--sens-samples", type=int, default=None, metavar="N",
                   help="samples for sensitivity and what-if runs (default: as many as a fixed amount of work "
                   "allows, 16 to 64: more on small models, whose figures are noisy on few samples; time grows "
                   "with it)")
    add_outputs_arg(p)
    p.add_argument("--labels", metavar="FILE.npy", help="the measured samples' classes (one index, or a one-hot "
                   "row, per sample): float and int8 top-1 accuracy (default: the class folders the images were "
                   "read from, if any)")
    p.add_argument("--no-sensitivity", action="store_true",
                   help="skip the per-layer sensitivity (what-if runs, the slow part on big models): no "
                   "sensitivity rows and no noise budget; remedies are still tried and measured")
    p.add_argument("--exact", action="store_true",
                   help="run the DPU integer pipeline instead of the (equal, faster) float32 simulation")
    p.add_argument("--top", type=int, default=20, metavar="K", help="findings to print (text output)")
    add_fail_below_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON: findings and per-layer sensitivity")
    return p


def open_eval_capture(path: str) -> Any:
    """The ``--eval`` capture; one-line error when the file is something else (a model, a folder) or its
    inputs hold NaN or Inf."""
    import h5py

    from qinspect.dpu.checks import check_finite_capture
    from qinspect.errors import QInspectError, UnsupportedFormatError
    from qinspect.io.capture_file import Capture, is_capture

    if not is_capture(path):
        if h5py.is_hdf5(path):
            try:  # a damaged or truncated capture is said so (it read as "not a capture")
                Capture.open(path).close()
            except UnsupportedFormatError:
                pass
        raise QInspectError("is not a qinspect capture: --eval needs a capture of the same model (qinspect "
                            "capture MODEL --inputs EVAL.npy -o EVAL.h5)", path)
    capture = Capture.open(path)
    try:
        check_finite_capture(capture)
    except BaseException:
        capture.close()
        raise
    return capture


def _arrays(source: Any, graph: Any, n: int | None) -> dict[str, Any]:
    """Model inputs of a capture or an InputSource as in-memory float32 arrays (first ``n`` samples)."""
    import numpy as np

    total = int(source.n_samples)
    stop = total if n is None else min(total, n)
    if hasattr(source, "batch"):
        return {k: np.asarray(v, np.float32) for k, v in source.batch(0, stop).items()}
    from qinspect.dpu.emulator import captured_stand_ins

    names = graph.inputs
    if len(names) == 1:
        arrays = {names[0]: source.inputs(None, slice(0, stop))}
    else:
        arrays = {name: source.inputs(name, slice(0, stop)) for name in names}
    return {**arrays, **captured_stand_ins(graph, source, slice(0, stop))}


def measured_labels(graph: Any, path: str | None, data: Any, n: int) -> tuple[Any, str | None]:
    """The labels of the ``n`` measured samples: the ``--labels`` file, else the measured data's class
    folders (:func:`qinspect.analysis.class_labels.choose_labels`), and why those are left unused."""
    from qinspect.analysis.class_labels import carried_labels, choose_labels
    from qinspect.cli._dpu_common import require_file

    if path:
        require_file(path, "--labels")
    return choose_labels(graph, path, carried_labels(data), n)


def run(args: argparse.Namespace) -> int:
    """Diagnose and print."""
    from qinspect.analysis.diagnose import default_sens_samples, diagnose
    from qinspect.cli import _dpu_common as common
    from qinspect.cli._progress import stderr_progress
    from qinspect.cli._sources import open_any
    from qinspect.dpu.emulator import calibration_data, recalibrator
    from qinspect.io.capture_file import Capture, is_capture, preprocess_mismatch

    common.require_file(args.model, "MODEL_OR_CAPTURE")
    common.check_counts(args, "--sens-samples", "--top")
    if args.eval is not None:
        common.require_file(args.eval, "--eval")
    source = None
    eval_cap = None
    try:
        # A capture opened as such serves both as the weight source and as the calibration data.
        source = Capture.open(args.model) if is_capture(args.model) else open_any(args.model)
        if args.eval:
            eval_cap = open_eval_capture(args.eval)
            check_same_model(source.graph, args.model, eval_cap.graph, args.eval)
        emu, positions_from = common.open_positions_emulator(source, args)
        positions_from_outside = bool(positions_from)
        # Every sample fed: a kept-subset capture's /all_inputs (diagnose recomputes tensors from inputs).
        calib_src = common.data_source(args.inputs, emu, source, args.model, preprocess=args.preprocess,
                                       every_sample=True)
        if not positions_from:
            emu.calibrate(calib_src, args.batch_size)
        # every calibration sample: the data-side remedies calibrate again on them (without outlier samples)
        calib = _arrays(calib_src, emu.graph, None)
        if not positions_from_outside:
            # as emulate says it: how many samples, then from which file
            n_calib = len(next(iter(calib.values())))
            positions_from = common.calibrated_here(f"{n_calib} samples of {args.inputs or args.model}", args)
        if eval_cap is not None:
            data = _arrays(calibration_data(emu.graph, eval_cap)[0], emu.graph, args.samples)
            label = f"evaluation ({args.eval})"
        else:
            data, label = calib, "calibration"
        # accuracy is measured on the sensitivity samples: labels for those are enough
        n_data = min(len(next(iter(data.values()))), args.samples)
        n_acc = min(n_data, args.sens_samples or default_sens_samples(emu.graph, n_data))
        labels, unused = measured_labels(emu.graph, args.labels, eval_cap or calib_src, n_acc)
        # on every calibration sample, as the model as given: the remedy then measures the option alone
        rebuild = (None if positions_from_outside
                   else recalibrator(source, calib_src, common.quantizer_options(args)))
        outputs = common.chosen_outputs(emu.graph, args.outputs, args.model)
        with stderr_progress("diagnose") as step:
            result = diagnose(emu.graph, data, calib if eval_cap is not None else None, data_label=label,
                              max_samples=args.samples, sens_samples=args.sens_samples,
                              mode="int" if args.exact else "sim", step=step,
                              external_positions=bool(args.positions), with_sensitivity=not args.no_sensitivity,
                              labels=labels, rebuild=rebuild, outputs=outputs)
        n_total = len(next(iter(data.values())))
        mismatch = preprocess_mismatch(source, eval_cap) if eval_cap is not None and isinstance(source, Capture) \
            else None
        if mismatch:
            result.notes.insert(0, f"WARNING: {mismatch}")
        if unused:
            result.notes.append(unused)
    finally:
        if source is not None:
            source.close()
        if eval_cap is not None:
            eval_cap.close()
    if args.json:
        out = {"model": args.model, "eval": args.eval, "positions_from": positions_from,
               "weights_from": emu.graph.weights_from, **result.to_dict(),
               "samples_used": result.n_samples, "samples_total": n_total}
        common.print_json(out)
        return common.quality_gate(result.output.sqnr_db, args.fail_below, result.constant_output)
    _print_text(result, positions_from, args.top)
    return common.quality_gate(result.output.sqnr_db, args.fail_below, result.constant_output)


TEXT_WIDTH = 110  # findings' sentences wrap here


def _num(v: Any, fmt: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    text = format(v, fmt)
    return text.lstrip("-") if float(text) == 0 else text  # no "-0.00"


def _print_text(result: Any, positions_from: str, top: int) -> None:
    import textwrap

    from qinspect.report import wording

    w = sys.stdout.write
    w(f"positions: {positions_from}\n")
    top1 = "" if result.top1_agreement is None else (
        f"; top-1 agreement with float {agreement_text(result.top1_agreement)}"
        + wording.pooled_top1_suffix(result.outputs))
    w(f"measured on: {result.measured_on}; output SQNR {_num(result.output.sqnr_db, '.1f')} dB{top1}\n")
    if result.near_tie_warning:
        w(f"  note: {result.near_tie_warning}\n")
    if result.outputs:
        w(f"  each output: {wording.per_output_line(result.outputs)}\n")
    if result.hidden_output_warning:
        w(f"  note: {result.hidden_output_warning} (--outputs NAME diagnoses for one output alone)\n")
    if result.accuracy is not None:
        w(wording.accuracy_line(result.accuracy) + "\n")
    if result.explained is not None and any(f.remedy for f in result.findings):
        w(f"explained: the findings' fixes remove {wording.explained_text(result.explained, result.explained_se)} "
          f"of the output's error power ({wording.EXPLAINED_TOGETHER})\n")
    for note in result.notes:
        w(f"note: {note}\n")
    order = wording.findings_order(result.findings)
    w(f"\n{len(result.findings)} finding(s), {order} (gains measured at the output):\n")
    # The same words as the window's Findings tab and the report (qinspect.report.wording).
    for i, f in enumerate(result.findings[:top], 1):
        w(f"\n{i:>2}. {wording.finding_title(f)}\n")
        for text in (wording.finding_sentence(f), f"Advice: {f.advice}" if f.advice else "",
                     wording.remedy_sentence(f.remedy)):
            if text:
                w(textwrap.fill(text, TEXT_WIDTH, initial_indent="    ", subsequent_indent="    ") + "\n")
    if len(result.findings) > top:
        w(f"... {len(result.findings) - top} more (--top, or --json for all)\n")
    if not result.sensitivity:
        return
    w("\nsensitivity (output SQNR): gain if the layer alone stays float / SQNR if only it is quantized\n")
    rows = sorted(result.sensitivity, key=lambda s: -(s.keep_float_gain_db if math.isfinite(s.keep_float_gain_db)
                                                        else 1e9))
    width = max([5, *(len(s.layer) for s in rows[:top])])  # whole names: the user looks them up in the tree
    w(f"{'layer':{width}} {'gain dB':>8} {'only dB':>8} {'noise %':>8}\n")
    for s in rows[:top]:
        w(f"{s.layer:{width}} {_num(s.keep_float_gain_db):>8} {_num(s.only_quantized_sqnr_db, '.1f'):>8} "
          f"{_num(100 * s.only_noise_share, '.1f'):>8}\n")
