"""``qinspect demo``: build the demo captures (the real fer mini-Xception on real LFW faces) for this user.

They go to the user's data folder (``$XDG_DATA_HOME/qinspect/demo``, default ~/.local/share/qinspect/demo),
where the window's start page finds them. Needs the ``capture`` and ``demo`` extras and fer's model file;
when any is missing, the command says exactly what to install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qinspect.errors import QInspectError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="build the demo captures (a real pretrained model on real faces) into your data folder",
        description="Build demo_capture.h5 (calibration, 64 faces) and demo_eval.h5 (32 held-out images) by "
        "running the fer package's pretrained mini-Xception on scikit-image's LFW face crops. Needs TensorFlow.",
    )
    parser.add_argument("-o", "--output", type=Path, metavar="FOLDER",
                        help="where to write them (default: the per-user data folder)")
    parser.add_argument("--force", action="store_true", help="build again even if the demo capture exists")
    parser.add_argument("--progress-lines", action="store_true",
                        help="print progress as 'progress DONE TOTAL' lines on stdout (for the window)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the demo captures unless they are there already; print where they are."""
    from qinspect.capture.demo import (
        CAPTURE_NAME,
        build_demo,
        check_destinations,
        missing_message,
        missing_packages,
    )
    from qinspect.capture.tf_logs import quiet_tensorflow_logs
    from qinspect.io.capture_file import is_capture
    from qinspect.userdirs import demo_folder

    folder = (args.output or demo_folder()).resolve()
    existing = folder / CAPTURE_NAME
    if is_capture(existing) and not args.force:  # a file of that name that is no capture is refused below
        print(f"{existing}: already built (--force builds it again); open it with: qinspect {existing}")
        return 0
    if folder.is_dir():  # a user's file of either name is refused before anything else is looked at
        check_destinations(folder)
    missing = missing_packages()
    if missing:
        raise QInspectError(missing_message(missing))
    quiet_tensorflow_logs()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QInspectError(f"cannot create the folder ({exc.strerror})", folder) from None
    progress = _line_progress if args.progress_lines else _bar_progress()
    path = build_demo(folder, progress, say=lambda line: print(line, flush=True))
    print(f"open it with: qinspect {path}")
    return 0


def _line_progress(done: int, total: int) -> None:
    print(f"progress {done} {total}", flush=True)


def _bar_progress():
    """A progress callback drawing on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        print(f"\rbuilding the demo: {done}/{total} samples", end="" if done < total else "\n",
              file=sys.stderr, flush=True)

    return show
