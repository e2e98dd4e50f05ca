"""``qinspect info MODEL_OR_CAPTURE [--json]``: every layer of a model in topological order.

Columns: layer (indented by nesting), class, output shape, parameter count, inbound layers. Layers
that qinspect will not run (Lambda, custom classes) are marked with ``!`` and explained below the
table. Every call of a shared layer is its own row (``conv@2``), its parameters in brackets: they are
its first call's, counted once in the total. ``--json`` prints :meth:`ModelGraph.to_dict`
(documented in ``docs/info-json.md``).

Keras ``.h5``/``.keras`` files and captures are read without TensorFlow; only a SavedModel folder
loads it (through ``qinspect.capture.savedmodel``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qinspect.io.graph import Layer, ModelGraph

INDENT = "  "


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``info`` sub-command."""
    parser = subparsers.add_parser(
        "info",
        help="list a model's or capture's layers (topological order, shapes, parameters, edges)",
        description="Print every layer of a Keras model (.h5, .keras, SavedModel folder) or a qinspect "
        "capture in topological order: name, class, output shape, parameter count and inbound layers, "
        "with the layers of nested models indented under them. Keras files and captures are read "
        "without TensorFlow.",
    )
    parser.add_argument("model", metavar="MODEL_OR_CAPTURE", help="Keras .h5/.keras, SavedModel folder or capture")
    parser.add_argument("--json", action="store_true", help="print the graph as JSON (see docs/info-json.md)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the graph of ``args.model``."""
    from qinspect.analysis.metrics import json_safe
    from qinspect.cli._sources import open_any

    with open_any(args.model) as source:
        graph = source.graph
        if args.json:
            # strict JSON: a config value qinspect does not read may still be NaN (a string here, as elsewhere)
            data = {**graph.to_dict(), **capture_samples(getattr(source, "capture", source))}
            json.dump(json_safe(data), sys.stdout, indent=1, default=_json_default, allow_nan=False)
            sys.stdout.write("\n")
        elif sys.stdout.isatty():
            _print_rich(graph)
        else:
            sys.stdout.write(format_plain(graph))
        if not args.json:
            sys.stdout.write(capture_samples_line(getattr(source, "capture", source)))
    return 0


def capture_samples(capture: Any) -> dict[str, Any]:
    """What a capture holds of its samples, for ``--json`` (nothing for a model): the samples fed, those kept
    with full tensors and the calibration batch size."""
    total = getattr(capture, "n_total_samples", None)
    if total is None:
        return {}
    return {"samples": int(total), "samples_kept": int(capture.n_samples),
            "calib_batch_size": getattr(capture, "calib_batch_size", None)}


def capture_samples_line(capture: Any) -> str:
    """What a capture holds of its samples (a line, :func:`capture_samples` said), or '' for a model."""
    held = capture_samples(capture)
    if not held:
        return ""
    total, kept = held["samples"], held["samples_kept"]
    if kept < total:
        return (f"\nsamples: {total} fed, full tensors kept for {kept}; statistics and inputs of all {total} "
                f"(calibration batch {held['calib_batch_size']})\n")
    return f"\nsamples: {total}, every tensor kept\n"


def _json_default(value: Any) -> Any:
    # Configs come from JSON, but a SavedModel's may carry numpy scalars.
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def format_shape(shape: list[int | None] | None) -> str:
    """``[None, 32, 32, 3]`` -> ``(None, 32, 32, 3)``; unknown -> ``?``."""
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _row(layer: Layer) -> list[str]:
    label = INDENT * layer.depth + layer.short_name + ("/" if layer.is_container else "")
    cls = layer.class_name + ("" if layer.runnable else " !")
    if layer.class_name in ("TFOpLambda", "KerasOp") and layer.config.get("function"):
        cls += f" {layer.config['function']}"
    params = f"({layer.params:,})" if layer.shares else f"{layer.params:,}"
    return [label, cls, format_shape(layer.output_shape), params, ", ".join(layer.inbound)]


HEADER = ["Layer", "Class", "Output shape", "Params", "Inbound"]


def _summary(graph: ModelGraph) -> str:
    leaves = graph.leaves()
    later = sum(1 for layer in leaves if layer.shares)
    count = f"{len(leaves)} layers" if not later else \
        f"{len(leaves)} nodes ({len(leaves) - later} layers, {later} later calls or extra outputs of them)"
    return (
        f"{graph.name} ({graph.source_format}): {count}, {graph.total_params:,} parameters; "
        f"inputs {', '.join(graph.inputs)}; outputs {', '.join(graph.outputs)}"
    )


def _notes(graph: ModelGraph) -> list[str]:
    lines = [f"! {layer.name}: {layer.note}" for layer in graph if not layer.runnable]
    shared = [layer for layer in graph if layer.shares and not layer.is_container and not layer.output_index]
    if shared:
        lines.append(
            f"shared: {len(shared)} later call(s) of shared layers ({', '.join(x.name for x in shared[:4])}"
            f"{', ...' if len(shared) > 4 else ''}) use their first call's weights and quantizers; "
            "parameters in brackets are not counted again"
        )
    lines += [f"warning: {w}" for w in graph.warnings]
    return lines


def format_plain(graph: ModelGraph) -> str:
    """The table as aligned plain text (what a pipe or a file gets)."""
    rows = [HEADER] + [_row(layer) for layer in graph]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    out = [_summary(graph), ""]
    for r in rows:
        cells = [r[i].ljust(widths[i]) if i != 3 else r[i].rjust(widths[i]) for i in range(len(widths))]
        out.append("  ".join([*cells, r[-1]]).rstrip())
    notes = _notes(graph)
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def _print_rich(graph: ModelGraph) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=_summary(graph), title_justify="left", header_style="bold")
    for i, head in enumerate(HEADER):
        table.add_column(head, justify="right" if i == 3 else "left", overflow="fold")
    for layer in graph:
        style = "bold" if layer.is_container else ("yellow" if not layer.runnable else None)
        table.add_row(*_row(layer), style=style)
    console.print(table)
    for line in _notes(graph):
        console.print(line, markup=False, highlight=False)
