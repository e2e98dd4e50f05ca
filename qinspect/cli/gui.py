"""``qinspect gui [FILE]``: the inspector window (also what ``qinspect FILE`` and bare ``qinspect`` run)."""

from __future__ import annotations

import argparse
import os
import sys

from qinspect.errors import QInspectError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``gui`` sub-command."""
    parser = subparsers.add_parser(
        "gui",
        help="open the inspector window (the default with no command)",
        description="Open the inspector window, optionally on a capture or a Keras model (.h5, .keras or a "
        "SavedModel folder). A Vitis quantized.h5 or dump folder is imported from the File menu once the float "
        "model's capture is open. With no FILE the window opens empty, with the demo one click away.",
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="capture (.h5), Keras model (.h5/.keras)")
    parser.add_argument(
        "--settings", metavar="INI", help="use this settings file instead of the user's (for tests and CI)"
    )
    return parser


def no_display() -> bool:
    """True on Linux with no display to open a window on (no X, no Wayland, no Qt platform chosen): Qt
    would abort the process (SIGABRT, seven lines of plugin errors) instead of saying so."""
    if not sys.platform.startswith("linux"):
        return False
    return not any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def run(args: argparse.Namespace) -> int:
    """Open the window and run until it is closed."""
    if args.file and not os.path.exists(args.file):
        raise QInspectError("no such file or folder", args.file)
    settings = args.settings or os.environ.get("QINSPECT_SETTINGS")
    if settings:
        from qinspect.io.paths import check_settings_file

        check_settings_file(settings)  # QSettings writes the whole file on exit, whatever was there
    if no_display():
        from qinspect.cli import COMMANDS

        raise QInspectError("no display to open the inspector window on (DISPLAY and WAYLAND_DISPLAY are unset); "
                            f"without one, use a command: qinspect {'|'.join(c for c in COMMANDS if c != 'gui')} "
                            "(qinspect --help)")
    try:
        from qinspect.gui.app import main
    except ImportError as exc:  # PySide6 / pyqtgraph missing: the core install has no GUI
        from qinspect.extras import missing_message

        raise QInspectError(missing_message("the inspector window", "gui", exc.name)) from None
    return main(args.file, settings_path=args.settings)
