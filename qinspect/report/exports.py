"""The JSON and CSV forms of a report (structure documented in ``docs/report-format.md``).

Numbers are the analysis' own float values, written at full precision (``repr``), so a JSON or CSV
value parses back to exactly the number the emulator and metrics computed. JSON has no infinity or
NaN: a non-finite value (an error-free layer has SQNR = +inf) is written as the string ``"inf"``,
``"-inf"`` or ``"nan"``, in CSV too. A missing value is ``null`` in JSON and an empty CSV cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qinspect.report.content import METRIC_KEYS, POSITION_KEYS, LayerSection, Report

FORMAT_NAME = "qinspect-report"
FORMAT_VERSION = 1

# (column, meaning): the CSV's columns in order. Stable: new columns are only ever appended.
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("index", "position of the layer in topological order, from 0; empty for a node or step the quantizer made"),
    ("layer", "layer name; layers of a nested model are outer/inner"),
    ("type", "Keras layer class"),
    ("placement", "DPU or CPU (layers the DPU cannot run are computed in float); DPU+CPU for a layer split "
                  "between them, such as a Dense(softmax): its softmax stays float on the CPU"),
    ("pos_input", "position of each input tensor, ';' between several inputs"),
    ("pos_weights", "position of the weights (kernel)"),
    ("pos_bias", "position of the bias"),
    ("pos_output", "position of the output"),
    ("positions_source", "where the positions came from"),
    *((f"iso_{k}", f"isolated error: {k}") for k in METRIC_KEYS),
    *((f"acc_{k}", f"accumulated error: {k}") for k in METRIC_KEYS),
    ("sat_low", "fraction of output values clipped at the low end (-128; -127 on a DPUCADF8H target)"),
    ("sat_high", "fraction of output values clipped at the high end (127)"),
    ("codes_used", "fraction of the 256 int8 codes the layer's float output takes when rounded alone at its "
                   "position (emulate's codes % counts the int8 pipeline's own output); needs a capture"),
    ("float_min", "smallest float output value"),
    ("float_max", "largest float output value"),
    ("clip_low", "lowest representable output value at its position (-128 * 2^-p; -127 * 2^-p on a DPUCADF8H "
                 "target)"),
    ("clip_high", "highest representable output value at its position (127 * 2^-p)"),
    ("rewrites", "graph rewrites that touched the layer, ' | ' between several"),
    ("adjustments", "position constraint adjustments on the layer, ' | ' between several"),
    ("worst_finding", "kind of the layer's most severe finding (empty: none, or not diagnosed)"),
    ("worst_severity_db", "that finding's cost: the output SQNR its remedy, tried in the emulator, gains (dB)"),
    ("eval_outside", "fraction of evaluation values outside the int8 range at the output position (with --eval)"),
    ("keep_float_gain_db", "output SQNR gained when this layer alone stays in float (diagnosis)"),
    ("only_quantized_sqnr_db", "output SQNR when only this layer is quantized (diagnosis)"),
    ("sensitivity_of", "the emulator step the two sensitivity figures are of, when the quantizer split the layer "
                       "into several (a conv and its activation: 'conv2d_1 (relu)'); empty: the layer itself"),
    ("fused_activation", "the layer's built-in activation fused into it (its position is pos_output; the "
                         "other positions are the conv's or dense's); empty when none"),
    ("errors_measured_on", "the data of the iso_, acc_, sat_, codes_used and float_ columns: the emulator's run "
                           "on the calibration data"),
    ("sensitivity_measured_on", "the data of keep_float_gain_db, only_quantized_sqnr_db and worst_severity_db: "
                                "what the diagnosis measured (with --eval, the evaluation capture); empty when not "
                                "diagnosed"),
)


def measured_on(report: Report) -> dict[str, str | None]:
    """Which data the per-layer figures come from: ``errors`` (the layer table's run) and ``sensitivity``
    (the diagnosis': the evaluation data with --eval). They differ with --eval, so the output layer's
    row reads another SQNR than the summary."""
    output = report.output or {}
    diagnosed, n = output.get("measured_on"), output.get("samples")
    sensitivity = None
    if diagnosed:
        sensitivity = diagnosed + (f": {n} samples" if n else "")
        if diagnosed == "evaluation" and report.eval_source:
            sensitivity += f" of {Path(report.eval_source).name}"
    return {"errors": f"calibration: {report.samples} samples" if report.samples else None,
            "sensitivity": sensitivity}


def _sensitivity_of(layer: Any) -> str | None:
    """The step of a split layer its sensitivity figures are of ('conv2d_1 (relu)'), or None."""
    label = (layer.sensitivity or {}).get("layer")
    return label if label and label != layer.name else None


def jsonable(value: Any) -> Any:
    """A deep copy of ``value`` that :func:`json.dumps` accepts with ``allow_nan=False``.

    numpy scalars and arrays become Python numbers and lists; non-finite floats become strings.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy array or scalar
        return jsonable(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _nonfinite(value)
    raise TypeError(f"cannot put {type(value).__name__} in a report")


def _nonfinite(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _figure_refs(layer_figs: list, files: dict[str, str]) -> list[dict[str, str]]:
    return [{"id": f.id, "title": f.title, "file": files[f.id]} for f in layer_figs if f.id in files]


def layer_to_dict(layer: LayerSection, figure_files: dict[str, str]) -> dict[str, Any]:
    """One entry of the JSON ``layers`` list."""
    return {
        # a node or step the quantizer made is no layer of the float model: no index (its figures are Q<row>-*)
        "index": layer.index,
        "name": layer.name,
        "anchor": layer.anchor,
        "type": layer.class_name,
        "placement": layer.placement,
        "placement_note": layer.placement_note,
        "positions": {k: layer.positions.get(k) for k in POSITION_KEYS},
        "positions_source": layer.positions_source,
        "fused_activation": layer.fused_activation or None,
        "isolated": layer.isolated,
        "accumulated": layer.accumulated,
        "saturation": {"low": layer.saturation_low, "high": layer.saturation_high},
        "codes_used": layer.codes_used,
        "activation": layer.activation,
        "weights": layer.weights,
        "error_histogram": layer.error_histogram,
        "rewrites": list(layer.rewrites),
        "adjustments": list(layer.adjustments),
        "findings": list(layer.findings),
        "sensitivity": layer.sensitivity,
        "sensitivity_steps": list(layer.sensitivity_steps),
        "notes": list(layer.notes),
        "figures": _figure_refs(layer.figures, figure_files),
    }


def report_to_dict(report: Report, figure_files: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole report as the documented JSON structure (JSON-ready: see :func:`jsonable`)."""
    files = figure_files or {}
    data = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "generated": report.generated,
        "qinspect_version": report.qinspect_version,
        "scope": report.scope,
        "selected_layer": report.selected_layer,
        "model": {
            "name": report.model_name,
            "source": report.source,
            "format": report.source_format,
            "samples": report.samples,
            "samples_used": report.samples,
            "samples_total": report.samples_total if report.samples_total is not None else report.samples,
            "positions_source": report.positions_source,
            "eval_source": report.eval_source,
        },
        "settings": report.settings,
        "rewrites_listed": report.rewrites_listed,
        "summary": report.summary,
        "output": report.output,
        "explained": report.explained,
        "advice": list(report.advice),
        "advice_source": report.advice_source,
        "warnings": list(report.warnings),
        "notes": list(report.notes),
        "how": dict(report.how),
        "findings": report.findings,
        "findings_missing": report.findings_missing,
        "coverage": report.coverage,
        "figures": _figure_refs(report.figures, files),
        "layers_measured_on": measured_on(report),
        "layers": [layer_to_dict(layer, files) for layer in report.layers],
        "csv_columns": [{"name": n, "meaning": m} for n, m in CSV_COLUMNS],
    }
    return jsonable(data)


def report_to_json(report: Report, figure_files: dict[str, str] | None = None) -> str:
    """:func:`report_to_dict` serialised (strict JSON: no NaN/Infinity literals)."""
    return json.dumps(report_to_dict(report, figure_files), indent=1, allow_nan=False) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else _nonfinite(value)
    if hasattr(value, "tolist"):
        return _cell(value.tolist())
    if isinstance(value, (list, tuple)):
        return ";".join(_cell(v) for v in value)
    return str(value)


def worst_finding(findings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finding with the highest numeric severity, or None."""
    scored = [f for f in findings if isinstance(f.get("severity"), (int, float))]
    return max(scored, key=lambda f: f["severity"]) if scored else None


def layer_row(layer: LayerSection, coverage: dict[str, Any] | None,
              measured: dict[str, str | None] | None = None) -> dict[str, str]:
    """One CSV row, keyed by the names in :data:`CSV_COLUMNS`; ``measured``: :func:`measured_on`."""
    iso = layer.isolated or {}
    acc = layer.accumulated or {}
    act = layer.activation or {}
    worst = worst_finding(layer.findings)
    row: dict[str, Any] = {
        "index": layer.index,
        "layer": layer.name,
        "type": layer.class_name,
        "placement": layer.placement,
        "pos_input": layer.positions.get("input"),
        "pos_weights": layer.positions.get("weights"),
        "pos_bias": layer.positions.get("bias"),
        "pos_output": layer.positions.get("output"),
        "positions_source": layer.positions_source,
        **{f"iso_{k}": iso.get(k) for k in METRIC_KEYS},
        **{f"acc_{k}": acc.get(k) for k in METRIC_KEYS},
        "sat_low": layer.saturation_low,
        "sat_high": layer.saturation_high,
        "codes_used": layer.codes_used,
        "float_min": act.get("float_min"),
        "float_max": act.get("float_max"),
        "clip_low": act.get("clip_low"),
        "clip_high": act.get("clip_high"),
        "rewrites": " | ".join(layer.rewrites),
        "adjustments": " | ".join(layer.adjustments),
        "worst_finding": worst["kind"] if worst else None,
        "worst_severity_db": worst["severity"] if worst else None,
        "eval_outside": (coverage or {}).get(layer.name),
        "keep_float_gain_db": (layer.sensitivity or {}).get("keep_float_gain_db"),
        "only_quantized_sqnr_db": (layer.sensitivity or {}).get("only_quantized_sqnr_db"),
        "sensitivity_of": _sensitivity_of(layer),
        "fused_activation": layer.fused_activation or None,
        "errors_measured_on": (measured or {}).get("errors"),
        "sensitivity_measured_on": (measured or {}).get("sensitivity"),
    }
    return {name: _cell(row[name]) for name, _ in CSV_COLUMNS}


def report_to_csv(report: Report) -> str:
    """One row per layer with the columns of :data:`CSV_COLUMNS` (a header row first)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[n for n, _ in CSV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    measured = measured_on(report)
    for layer in report.layers:
        writer.writerow(layer_row(layer, report.coverage, measured))
    return out.getvalue()


def figure_to_dict(fig: Any) -> dict[str, Any]:
    """A figure specification as JSON-ready data (used when a caller wants the plotted numbers)."""
    return jsonable(asdict(fig))
