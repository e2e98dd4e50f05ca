"""``qinspect report MODEL_OR_CAPTURE [--positions P] [--inputs X] [--layer NAME] [--eval CAPTURE2] -o DIR``.

Writes ``DIR/report.html`` (self-contained, figures embedded), ``report.json``, ``layers.csv`` and
``figures/*.png`` (see ``docs/report-format.md``). Needs no display: Qt runs offscreen to draw the
figures; without Qt installed the report is written without figures. The folder is written
atomically; an existing non-empty DIR is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="write an HTML + JSON + CSV report of a model's int8 quantization (no display needed)",
        description="Emulate the int8 model on a capture (qinspect's calibration, or the positions of a Vitis "
        "run) and write a report folder: report.html (self-contained, opens in any browser offline), "
        "report.json and layers.csv with the same numbers, and the figures as PNG files.",
    )
    from qinspect.cli._dpu_common import add_data_args, add_outputs_arg, add_positions_arg

    parser.add_argument("source", metavar="MODEL_OR_CAPTURE",
                        help="a capture (qinspect capture) or a Keras model (.h5 / .keras / SavedModel folder)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder to write")
    add_positions_arg(parser, "use a Vitis run's positions instead of qinspect's calibration")
    parser.add_argument("--layer", metavar="NAME", help="a layer report: only this layer's section")
    parser.add_argument("--eval", metavar="CAPTURE2", dest="eval_path",
                        help="an evaluation capture: per layer, the fraction of values outside the int8 range")
    add_data_args(parser, "inputs (.npy / .npz) to calibrate and emulate a model file on (a capture holds its own)",
                  "calibration and emulation batch size (default 32; calibration votes per batch)",
                  samples_help="measure on the first N samples (positions are calibrated on every one)")
    parser.add_argument("--labels", metavar="FILE.npy",
                        help="the measured samples' classes (one index, or a one-hot row, per sample): float and "
                             "int8 accuracy on the first page (default: the class folders the images were read "
                             "from, if any)")
    add_outputs_arg(parser)
    parser.add_argument("--no-findings", action="store_true",
                        help="skip the diagnosis (findings, sensitivity): faster on big models")
    parser.add_argument("--no-sensitivity", action="store_true",
                        help="keep the findings but skip the per-layer sensitivity (the slow part on big models)")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    return parser


def _renderer(progress: Any = None):
    """The Qt figure renderer, or None (with a note) when Qt cannot be loaded. ``progress(done, total,
    what)`` hears how many figures are drawn (a big model's report draws a couple of thousand)."""
    # No display is needed or used: the offscreen platform draws into memory.
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    try:
        from qinspect.gui.figures import render_figures
    except ImportError as exc:
        from qinspect.extras import missing_message

        print(f"qinspect: warning: no figures: {missing_message('drawing figures', 'gui', exc.name)}",
              file=sys.stderr)
        return None
    if progress is None:
        return render_figures
    return functools.partial(render_figures, progress=lambda done, total: progress(done, total, "figures"))


def _check_not_inside(out: str, *paths: str | None) -> None:
    """Refuse a destination that holds one of the files the report reads (--force would delete it)."""
    from pathlib import Path

    from qinspect.errors import QInspectError

    target = Path(out).resolve()
    for path in paths:
        if path and Path(path).exists() and target in Path(path).resolve().parents and any(target.iterdir()):
            raise QInspectError(f"holds {path}, which the report reads: write the report to a folder of its own",
                                out)


def run(args: argparse.Namespace) -> int:
    """Build and write the report."""
    from qinspect.cli._dpu_common import check_counts, require_file
    from qinspect.cli._progress import stderr_progress
    from qinspect.report.writer import check_destination

    check_counts(args)
    if args.labels is not None and args.no_findings:
        from qinspect.errors import QInspectError

        # the accuracy figures come from the findings pass: without it the labels would go unread
        raise QInspectError("--labels gives the accuracy the findings pass measures: it has no effect with "
                            "--no-findings (drop one of them)", args.labels)
    check_destination(args.output, args.force)
    _check_not_inside(args.output, args.source, args.positions, args.eval_path, args.inputs, args.labels)
    for what, path in (("MODEL_OR_CAPTURE", args.source), ("--positions", args.positions), ("--eval", args.eval_path),
                       ("--inputs", args.inputs), ("--labels", args.labels)):
        if path is not None:
            require_file(path, what)
    if args.inputs is None and args.positions is None:
        _require_data(args.source)

    with stderr_progress("report") as step:
        out = _build(args, lambda done, total, what: step(what, done, total if done or total > 1 else 0))
    print(f"wrote {os.path.join(str(out), 'report.html')} (+ report.json, layers.csv, figures/)")
    return 0


def _require_data(path: str) -> None:
    """A model file with neither --inputs nor --positions would give a report of "n/a" figures: refused, as
    emulate and diagnose refuse it (a file that is no model gets its own error from opening it)."""
    from qinspect.cli._sources import open_any
    from qinspect.errors import QInspectError
    from qinspect.io.capture_file import is_capture

    if is_capture(path):
        return
    with open_any(path):
        pass  # a file that is no model says so here
    raise QInspectError("a report of a model file needs --inputs (a .npy / .npz of preprocessed samples) or "
                        "--positions (a Vitis quantized.h5 or positions JSON), or give a capture", path)


def _build(args: argparse.Namespace, progress: Any) -> Any:
    from qinspect.cli._dpu_common import quantizer_options
    from qinspect.cli._sources import open_any
    from qinspect.report.build import build_and_write

    return build_and_write(
        args.source, args.output, layer=args.layer, positions=args.positions, eval_path=args.eval_path,
        force=args.force, render_figures=_renderer(progress), batch_size=args.batch_size,
        options=quantizer_options(args),
        max_samples=args.samples, progress=progress, diagnose=not args.no_findings, opener=open_any,
        inputs=args.inputs, preprocess=args.preprocess, sensitivity=not args.no_sensitivity, labels=args.labels,
        outputs=None if args.outputs is None else args.outputs.split(","),
    )
