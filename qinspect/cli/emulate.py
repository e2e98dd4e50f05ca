"""``qinspect emulate MODEL_OR_CAPTURE [--positions QUANTIZED.h5|POSITIONS.json] [--inputs X.npy] [--layer NAME]
[--labels Y.npy] [--json]``.

Runs the DPU int8 emulator and reports, per layer, the *isolated* error (the layer alone, fed with its
inputs' float reference quantized at the pipeline's positions) and the *accumulated* error (the whole
integer pipeline from the model input) against the float reference: SQNR (dB), MSE, cosine, max
|error|, RMSE over the quantization step, saturation at each end, share of the 256 codes used, and
whether the layer runs on the DPU or the CPU. Positions come from ``--positions`` (a Vitis
quantized.h5, whose folded/equalized weights are then used too, or a positions JSON), or else from
calibrating on the data (``--batch-size``). For classifier outputs it adds top-1 agreement between the
int8 and float models (with a note when the figure rests on near-tied float outputs) and, with
``--labels``, float and int8 accuracy. ``--json`` says how each number is computed.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

_METRICS = ("sqnr_db", "mse", "cosine", "max_abs", "rmse_lsb", "sat_lo_frac", "sat_hi_frac", "clip_lo_frac",
            "clip_hi_frac", "codes_used_frac")

HOW = {
    "sqnr_db": "10*log10(sum ref^2 / sum (test - ref)^2) in dB; sums over all elements (samples x positions x "
               "channels); +inf when bit-exact",
    "mse": "mean of (test - ref)^2 over all elements, squared float units",
    "cosine": "sum(ref*test) / sqrt(sum ref^2 * sum test^2) over all elements",
    "max_abs": "largest |test - ref| over all elements, float units",
    "rmse_lsb": "sqrt(mse) divided by the quantization step 2^-p of the layer's output position (rmse / scale, "
                "in LSB); null when the output has no position",
    "sat_lo_frac": "fraction of int8 output codes equal to the lowest code, -128 (-127 on a DPUCADF8H target: "
                   "saturated low)",
    "sat_hi_frac": "fraction of int8 output codes equal to 127 (saturated high)",
    "clip_lo_frac": "fraction of float reference values below -128 * 2^-p (-127 * 2^-p on a DPUCADF8H target; "
                    "clipped by the range)",
    "clip_hi_frac": "fraction of float reference values above 127 * 2^-p",
    "codes_used_frac": "distinct int8 codes seen at least once / the codes of the range (256; 255 on a DPUCADF8H "
                       "target)",
    "isolated": "the layer alone: its inputs are the float reference quantized at the positions the integer "
                "pipeline uses, then the layer's DPU operator (or CPU float op)",
    "accumulated": "the whole int8 pipeline from the model input to this layer",
    "shared_with": "the nodes (calls of one shared layer) whose weights and quantizers this node uses too: "
                   "each call runs on its own inputs, with one position per quantizer for all of them, "
                   "calibrated as the quantizer does (each batch keeps the position of the call Keras runs "
                   "last; docs/vitis-parity.md, shared layers)",
    "outputs": "per model output with several classes (last axis > 1): top1_agreement = share of decisions "
               "(samples x positions) where the int8 and float arg-max agree; near_tied = decisions whose float "
               "top-2 margin is at most 0.1% of their largest output magnitude (rounding picks their winner), "
               "decided_agreement = agreement over the others; accuracy (with --labels, first classifier output "
               "of shape [samples, classes]) = share of samples whose arg-max equals the label",
    "ref": "the float model: the quantizer's folded/equalized float weights, no quantization, and the original "
           "functions (true sigmoid, LeakyReLU alpha, no average-pool rescale)",
}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``emulate`` sub-command."""
    p = subparsers.add_parser(
        "emulate",
        help="run the DPU int8 emulator and report per-layer error against float",
        description="Emulate the DPU int8 pipeline layer by layer and report isolated and accumulated error "
        "against the float reference.",
    )
    from qinspect.cli._dpu_common import add_data_args, add_fail_below_arg, add_positions_arg

    p.add_argument("model", metavar="MODEL_OR_CAPTURE",
                   help="float Keras model (.h5 / .keras / SavedModel folder), qinspect capture, or quantized.h5")
    add_positions_arg(p)
    add_data_args(p, "inputs (.npy / .npz); default: the capture's inputs",
                  "batch size (calibration batch size when no --positions; also the streaming size; default 32)",
                  samples_help="measure on the first N samples (positions are calibrated on every one, as diagnose "
                  "and report calibrate them)")
    p.add_argument("--layer", action="append", metavar="NAME", help="report only this layer (repeatable)")
    p.add_argument("--labels", metavar="FILE.npy", help="the samples' classes (one index, or a one-hot row, per "
                   "sample): float and int8 top-1 accuracy (default: the class folders the images were read from, "
                   "if any)")
    add_fail_below_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON, with how each number is computed")
    return p


def _metrics(st: Any, pos: int | None) -> dict[str, Any] | None:
    if st is None or not st.n:
        return None
    return {
        "sqnr_db": st.sqnr_db, "mse": st.mse, "cosine": st.cosine, "max_abs": st.max_abs,
        "rmse_lsb": st.rmse_over_scale(2.0 ** -pos) if pos is not None else None,
        "sat_lo_frac": st.sat_lo_frac if st.n_codes else None, "sat_hi_frac": st.sat_hi_frac if st.n_codes else None,
        "clip_lo_frac": st.clip_lo_frac if st.n_clip_checked else None,
        "clip_hi_frac": st.clip_hi_frac if st.n_clip_checked else None,
        "codes_used_frac": st.codes_used_frac if st.n_codes else None,
    }


def layer_row(r: Any, shared_with: list[str]) -> dict[str, Any]:
    """One entry of ``emulate --json``'s ``layers`` from an emulator :class:`LayerResult`."""
    # an input quantizer's position (a CPU softmax's) is no LSB of the output: no rmse_lsb there
    out_pos = None if r.position_of_input else r.position
    return {
        "name": r.name, "op": r.op, "device": r.device, "cpu_reason": r.cpu_reason, "origin": r.origin,
        "position": r.position, "position_of": "input" if r.position_of_input else "output",
        "weight_positions": r.weight_positions, "fused_into": r.fused_into, "shared_with": shared_with,
        "isolated": _metrics(r.isolated, out_pos), "accumulated": _metrics(r.accumulated, out_pos),
    }


def _output_tallies(graph: Any, labels: Any) -> tuple[dict[str, Any], Any]:
    """Top-1 tallies of the model's outputs that decide (analysis.decisions.decision_kind), and the
    emulator callback that fills them; ``labels`` (:class:`qinspect.io.labels.ClassLabels`) add accuracy."""
    from qinspect.analysis.decisions import Top1Tally, decision_kind, decision_pair

    tallies: dict[str, Top1Tally] = {}

    kinds = {name: decision_kind(graph, name) for name in graph.outputs}

    def on_output(name: str, ref: Any, test: Any) -> None:
        pair = decision_pair(kinds.get(name), ref, test)
        if pair is None:
            return
        r, t = pair
        # Labels name the classes of the model's first classifier output.
        first = not tallies or next(iter(tallies)) == name
        tallies.setdefault(name, Top1Tally(output=name, kind=kinds[name] or "",
                                           labels_origin=labels.origin if labels is not None else "")).update(
            r, t, labels.values if first and labels is not None else None)

    return tallies, on_output


def _task_line(t: Any) -> str:
    """``output: top-1 agreement ...`` with accuracy and the near-tie warning when they apply."""
    from qinspect.analysis.decisions import agreement_text, decision_note

    line = f"{t.output}: top-1 agreement int8 vs float {agreement_text(t.agreement)} ({t.agree}/{t.total})"
    if decision_note(t.kind):
        line += f" ({decision_note(t.kind)})"
    d = t.to_dict()
    if "accuracy" in d:
        from qinspect.report.wording import accuracy_line

        line += "; " + accuracy_line(d["accuracy"])
    if t.warning:
        line += f"\n  note: {t.warning}"
    return line


def run(args: argparse.Namespace) -> int:
    """Emulate and print."""
    from qinspect.analysis.metrics import ErrorStats
    from qinspect.analysis.outputs import OutputSpread, output_layer
    from qinspect.cli import _dpu_common as common
    from qinspect.cli._sources import open_any
    from qinspect.dpu.emulator import Emulator
    from qinspect.errors import QInspectError

    common.require_file(args.model, "MODEL_OR_CAPTURE")
    common.check_counts(args)
    source = None
    try:
        if common.is_vitis_quantized(args.model):
            if args.positions is not None:
                raise QInspectError(f"is a Vitis quantized model with its own positions: --positions {args.positions} "
                                    "is for a float model or capture", args.model)
            emu = Emulator.from_quantized(args.model,
                                          narrow_activations=common.quantizer_options(args).narrow_activations)
            positions_from = f"{args.model} (quantized model)"
        else:
            source = open_any(args.model)
            emu, positions_from = common.open_positions_emulator(source, args)
        layers = common.check_layers(emu, args.layer, args.model)
        data = common.data_source(args.inputs, emu, source, args.model, args.samples,
                                  preprocess=args.preprocess)
        if not positions_from:
            # Positions come from every sample fed (a kept-subset capture's /all_inputs), errors from the kept
            # ones (the first --samples of them): the positions diagnose and report calibrate.
            calib = common.data_source(args.inputs, emu, source, args.model, None,
                                       preprocess=args.preprocess, every_sample=True, quiet=True)
            emu.calibrate(calib, args.batch_size)
            n_calib = getattr(getattr(calib, "capture", calib), "n_samples", None)
            positions_from = common.calibrated_here(f"{n_calib} samples", args)
        n = getattr(getattr(data, "capture", data), "n_samples", None)
        if n is None and hasattr(data, "__len__"):
            n = len(data)
        from qinspect.cli.diagnose import measured_labels

        labels, unused = measured_labels(emu.graph, args.labels, data, n or 0)
        tallies, on_tally = _output_tallies(emu.graph, labels)
        pooled = ErrorStats()  # every model output's error, pooled by signal power (what --fail-below gates)
        spreads = {name: OutputSpread() for name in emu.graph.outputs}  # a dead or constant output is no measure

        def on_output(name: str, ref: Any, test: Any) -> None:
            pooled.update(ref, test)
            on_tally(name, ref, test)
            spreads[name].update(ref)

        results = emu.run(data, layers=layers, batch_size=args.batch_size, stats_factory=ErrorStats,
                          on_output=on_output)
        n_total = common.samples_total(source, args.inputs, n)
    finally:
        if source is not None:
            source.close()
    shared = emu.graph.shared_groups()
    rows = [layer_row(r, shared.get(r.name, [])) for r in results.values()]
    notes = emu.graph.caveats() + ([unused] if unused else [])  # why the data's own labels give no accuracy
    constant = [text for name, spread in spreads.items() if (text := spread.note(output_layer(emu.graph, name)))]
    notes += constant
    if args.fail_below is not None and n is not None and n_total is not None and n < n_total:
        # diagnose gates the same capture on all of its samples (it runs them from their inputs): the two
        # verdicts can differ, and the one printed must say which samples it rests on
        print(f"qinspect: note: --fail-below gates the output SQNR of the {n} of {n_total} samples measured here "
              f"(the capture keeps full tensors for {n}, or --samples); diagnose --fail-below runs its samples from "
              "their inputs, up to 64 of them (its 'measured on' line says how many), so its verdict can differ",
              file=sys.stderr)
    output = {"sqnr_db": pooled.sqnr_db if pooled.n else None, "outputs": list(emu.graph.outputs),
              "how": "the int8 pipeline's model output(s) against the float reference over the measured samples, "
                     "pooled by signal power (the output nodes' accumulated SQNR)"}
    if args.json:
        common.print_json({"model": args.model, "positions_from": positions_from, "output": output,
                           "weights_from": emu.graph.weights_from, "samples": n, "samples_used": n,
                           "samples_total": n_total, "how": HOW, "layers": rows,
                           "outputs": [t.to_dict() for t in tallies.values()],
                           "reference": emu.reference_note or "this graph's own float function",
                           "quantizer_options": emu.graph.options.to_dict() if emu.graph.options else None,
                           "rewrites": [x.to_dict() for x in emu.rewrites],
                           "notes": notes,
                           "adjustments": [a.to_dict() for a in emu.adjustments]})
        return common.quality_gate(output["sqnr_db"], args.fail_below, constant[0] if constant else None)
    w = sys.stdout.write
    w(f"positions: {positions_from}\nweights: {emu.graph.weights_from}\n")
    if n is not None and n_total is not None and n < n_total:
        w(f"errors: on {n} of {n_total} samples\n")
    if emu.reference_note:
        w(f"float reference: {emu.reference_note}\n")
    for note in notes:
        w(f"WARNING: {note}\n")
    # Columns as wide as the longest name, so long quantizer names keep the table aligned.
    lw = max([34, *(len(row["name"]) for row in rows)])
    ow = max([16, *(len(row["op"]) for row in rows)])
    w(f"{'layer':{lw}} {'op':{ow}} {'dev':3} {'pos':>4} {'iso dB':>7} {'acc dB':>7} {'cos':>7} {'sat lo/hi %':>12}"
      f" {'codes %':>7}\n")
    for row in rows:
        acc, iso = row["accumulated"] or {}, row["isolated"] or {}

        def f(v: Any, fmt: str) -> str:
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

        sat = "-" if acc.get("sat_lo_frac") is None else \
            f"{100 * acc['sat_lo_frac']:.2f}/{100 * acc['sat_hi_frac']:.2f}"
        pos = f(row["position"], "d") + ("*" if row["shared_with"] else "") + \
            ("^" if row["position_of"] == "input" and row["position"] is not None else "")
        w(f"{row['name']:{lw}} {row['op']:{ow}} {row['device']:3} {pos:>4} "
          f"{f(iso.get('sqnr_db'), '.1f'):>7} {f(acc.get('sqnr_db'), '.1f'):>7} {f(acc.get('cosine'), '.4f'):>7} "
          f"{sat:>12} {f(None if acc.get('codes_used_frac') is None else 100 * acc['codes_used_frac'], '.0f'):>7}\n")
    cpu = [row for row in rows if row["device"] == "CPU" and row["op"] != "input"]
    if cpu:
        w("\nCPU layers (computed in float32, as the partition would run them):\n")
        for row in cpu:
            w(f"  {row['name']}: {row['cpu_reason']}\n")
    if any(row["position_of"] == "input" and row["position"] is not None for row in rows):
        w("\n^ the position of the layer's input: the quantizer quantizes what enters it (a softmax, a sigmoid) "
          "and leaves its output float\n")
    groups = {tuple(row["shared_with"]) for row in rows if row["shared_with"]}
    if groups:
        w("\n* shared layer: these nodes are calls of one layer, each on its own inputs, with one set of weights "
          "and positions (the quantizer wraps a layer once; each calibration batch keeps the position of the call "
          "Keras runs last):\n")
        for group in sorted(groups):
            w(f"  {', '.join(group)}\n")
    for t in tallies.values():
        w(f"\n{_task_line(t)}\n")
    if output["sqnr_db"] is not None:
        w(f"\noutput SQNR {output['sqnr_db']:.1f} dB" + (" (outputs pooled by signal power)"
                                                      if len(output["outputs"]) > 1 else "") + "\n")
    w("\niso: the layer alone on quantized float-reference inputs; acc: the whole int8 pipeline; dB = SQNR "
      "against the float reference; cos: the accumulated cosine; sat: the share of the pipeline's int8 codes at "
      "-128 / 127 (the report's saturation counts float values beyond the range; --json has both, and says "
      "how each figure is computed)\n")
    return common.quality_gate(output["sqnr_db"], args.fail_below, constant[0] if constant else None)
