"""``qinspect gui [FILE]``: the inspector window (also what ``qinspect FILE`` and bare ``qinspect`` run)."""

from __future__ import annotations

import argparse
import os

from qinspect.errors import QInspectError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``gui`` sub-command."""
    parser = subparsers.add_parser(
        "gui",
        help="open the inspector window (the default with no command)",
        description="Open the inspector window, optionally on a capture, a Keras model or a Vitis "
        "quantized.h5. With no FILE the window opens empty, with the demo one click away.",
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="capture (.h5), Keras model (.h5/.keras)")
    parser.add_argument(
        "--settings", metavar="INI", help="use this settings file instead of the user's (for tests and CI)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Open the window and run until it is closed."""
    if args.file and not os.path.exists(args.file):
        raise QInspectError("no such file", args.file)
    try:
        from qinspect.gui.app import main
    except ImportError as exc:  # PySide6 / pyqtgraph missing: the core install has no GUI
        from qinspect.extras import missing_message

        raise QInspectError(missing_message("the inspector window", "gui", exc.name)) from None
    return main(args.file, settings_path=args.settings)
