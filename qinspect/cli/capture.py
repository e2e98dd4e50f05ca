"""``qinspect capture MODEL --inputs INPUTS -o CAPTURE.h5``: run the float model, save every layer's output.

Prints the disk space the capture needs before it starts, then progress (samples/s, ETA) on stderr.
The capture is written to a temporary file beside CAPTURE.h5 and renamed into place at the end:
Ctrl-C, SIGTERM or an error leave nothing at CAPTURE.h5. An existing CAPTURE.h5 is never replaced
unless ``--force`` is given (and even then only once the new capture is complete).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
from typing import Any

from qinspect.capture.tf_logs import quiet_tensorflow_logs
from qinspect.cli._dpu_common import add_preprocess_arg
from qinspect.errors import QInspectError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``capture`` sub-command."""
    parser = subparsers.add_parser(
        "capture",
        help="run a float model and save every layer's output and statistics (needs TensorFlow)",
        description="Run the float model over INPUTS and write a capture file: the graph, the weights, the "
        "float output of every layer (or those matching --layers) for the samples that fit --budget (or "
        "--keep), and for every sample its inputs and each layer's statistics (per calibration batch and "
        "channel min/max, a fine histogram). Everything later commands and the inspector need, without "
        "TensorFlow or the model file.",
    )
    parser.add_argument("model", metavar="MODEL", help="Keras-2 .h5, Keras 3 .keras or a SavedModel folder")
    parser.add_argument(
        "--inputs",
        required=True,
        metavar="INPUTS",
        help=".npy (N, ...) or .npz (one array per input name), already preprocessed; or a folder of images "
        "(needs --preprocess), or a folder of class folders (read class by class in turn; the folders become "
        "the labels). Non-image files in a folder are skipped with a warning; a damaged image fails.",
    )
    parser.add_argument("-o", "--output", required=True, metavar="CAPTURE.h5", help="capture file to write")
    parser.add_argument("--samples", type=int, metavar="N", help="use the first N samples (default: all)")
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help="samples per model run (default: up to 32, as 512 MiB of activations allows)",
    )
    parser.add_argument(
        "--layers",
        metavar="PATTERN",
        help="capture only layers whose name matches (fnmatch, e.g. 'conv*'; comma-separated for several; "
        "nested layers match on 'outer/inner' or on their own name)",
    )
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep", type=int, metavar="K",
                      help="keep full tensors of the first K samples (every sample's inputs and statistics are kept)")
    keep.add_argument("--budget", type=parse_bytes, metavar="SIZE",
                      help="keep full tensors of as many samples as fit SIZE bytes (e.g. 2GiB, 500MB; default "
                      "2GiB) beside every sample's inputs and statistics")
    parser.add_argument("--calib-batch-size", type=int, metavar="B",
                        help="calibration batch the per-batch statistics are grouped by (default 32, the "
                        "quantizer's calib_batch_size default)")
    add_preprocess_arg(parser)
    parser.add_argument(
        "--compression",
        choices=("none", "lzf", "gzip"),
        default="none",
        help="HDF5 compression of activations (default none: float activations shrink by 6-23%% and "
        "writing takes about 2x as long with lzf, 3-8x with gzip; see docs/capture-format.md)",
    )
    parser.add_argument("--force", action="store_true", help="replace CAPTURE.h5 if it exists")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress display and no plan line: stderr holds warnings and errors only")
    return parser


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"2GiB"`` -> 2147483648, ``"500MB"`` -> 500000000, ``"1.5g"``, ``"4096"`` (argparse type)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 2GiB, 500MB or a number of bytes)")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise argparse.ArgumentTypeError(f"a budget must be at least 1 byte (got {text!r})")
    return value


def _kept_note(plan: Any) -> str:
    """`` (K kept with full tensors)`` when the capture keeps fewer samples than it feeds."""
    shapes = plan.activation_shapes()
    if shapes is None:
        return ""
    kept = plan.kept_samples(shapes)
    return "" if kept == plan.n_samples else f" ({kept} kept with full tensors)"


def _warn(message: str) -> None:
    print(f"qinspect: warning: {message}", file=sys.stderr)


def _check_space(path: str, needed: int | None, compression: str | None) -> str:
    """A line about the disk space needed; raise if it surely does not fit."""
    from qinspect.capture.runner import human_bytes

    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free if os.path.isdir(folder) else None
    if needed is None:
        return "disk space needed: known after the first batch"
    line = f"disk space needed: {human_bytes(needed)}" + (" at most (compressed)" if compression else "")
    if free is not None:
        line += f"; {human_bytes(free)} free in {folder}"
        if needed > free:
            if compression is None:
                raise QInspectError(
                    f"the capture needs {human_bytes(needed)} and only {human_bytes(free)} is free", path
                )
            _warn(f"{path}: the capture may need {human_bytes(needed)}, only {human_bytes(free)} is free")
    return line


class _Progress:
    """Rich progress on stderr: samples done, samples/s, ETA; without a terminal (a CI log), a plain line
    per quarter of the samples, as every other command prints (``QINSPECT_PROGRESS`` overrides)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from qinspect.cli._progress import line_progress

        self.total = total
        self._progress: Any = None
        self._task: Any = None
        self._started = False
        self._lines = None if quiet else line_progress("capture")
        if quiet or self._lines is not None:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("capturing"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("samples"),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task("capture", total=total, rate="loading the model")

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._lines is not None:
            self._lines("capturing samples", done, total)
            return
        if self._progress is None:
            return
        if not self._started:
            # Rates and ETA count from the first batch, not from the model's (slow) loading.
            self._started = True
            self._progress.reset(self._task, total=total, completed=done, rate=f"{'':>17}")
            return
        self._progress.update(self._task, completed=done)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:7.1f} samples/s" if speed else f"{'':>17}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _require_tensorflow(model: str) -> None:
    """Fail in one line, with the install command, before planning when the capture packages are missing."""
    from qinspect.extras import first_missing, missing_message

    # TensorFlow runs every model; tf_keras loads Keras-2 .h5 and SavedModels, Keras 3 loads .keras.
    missing = first_missing(("tensorflow", "keras" if model.endswith(".keras") else "tf_keras"))
    if missing:
        raise QInspectError(missing_message("capturing", "capture", missing), model)


def run(args: argparse.Namespace) -> int:
    """Plan (no TensorFlow), report the space needed, then run and write the capture atomically."""
    from qinspect.capture.runner import human_bytes, plan_capture, run_capture
    from qinspect.cli import raise_interrupt, stopping
    from qinspect.io.capture_file import check_capture_destination
    from qinspect.io.paths import check_writable_here

    check_capture_destination(args.output, args.force, (args.model, args.inputs))
    check_writable_here(args.output, "the capture")  # before TensorFlow and the model load, not after
    output = os.path.abspath(args.output)
    _require_tensorflow(args.model)
    quiet_tensorflow_logs()
    compression = None if args.compression == "none" else args.compression
    plan = plan_capture(
        args.model,
        args.inputs,
        samples=args.samples,
        batch_size=args.batch_size,
        layers=args.layers,
        preprocess=args.preprocess,
        keep=args.keep,
        budget=args.budget,
        calib_batch_size=args.calib_batch_size,
    )
    # SIGTERM cleans up like Ctrl-C: the temporary file goes, the destination stays as it was.
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        for warning in plan.warnings:
            _warn(warning)
        for note in plan.source.notes:
            print(f"qinspect: note: {note}", file=sys.stderr)
        # the plan line is the progress display's first line: -q leaves stderr to warnings and errors (the space
        # check itself still refuses a capture that cannot fit)
        space = _check_space(output, plan.bytes_needed(), compression)
        if not args.quiet:
            print(f"{plan.n_samples} samples{_kept_note(plan)}, {len(plan.layers)} layers, batch size "
                  f"{plan.batch_size}; {space}", file=sys.stderr)
        with _Progress(plan.n_samples, args.quiet) as progress:
            on_start = None
            if plan.bytes_needed() is None:
                def on_start(needed: int) -> None:
                    space = _check_space(output, needed, compression)  # refuses what cannot fit, quiet or not
                    if not args.quiet:
                        print(space, file=sys.stderr)

            result = run_capture(
                plan, output, overwrite=args.force, compression=compression, progress=progress, warn=_warn,
                on_start=on_start,
            )
    finally:
        if not stopping():  # once qinspect's own process is interrupted, further signals stay ignored
            signal.signal(signal.SIGTERM, previous)
        plan.close()
    running = result.seconds - result.load_seconds
    rate = result.n_samples / running if running > 0 else 0.0
    kept = "" if result.kept == result.n_samples else f" ({result.kept} kept with full tensors)"
    print(
        f"wrote {result.path}: {result.n_samples} samples{kept} x {len(result.layers)} layers, "
        f"{human_bytes(result.bytes_written)} in {result.seconds:.1f} s "
        f"({result.load_seconds:.1f} s loading the model, then {rate:.1f} samples/s)"
    )
    return 0
