"""The ``qinspect`` command: one sub-command per module in this package, the GUI when none is given.

Each sub-command module defines ``register(subparsers) -> argparse.ArgumentParser`` and
``run(args) -> int``. Modules import their heavy dependencies (TensorFlow, Qt) inside ``run`` so that
``qinspect --help`` and the core commands start fast and work without them.

Errors meant for users are :class:`qinspect.errors.QInspectError`: printed on one line as
``qinspect: error: FILE: what is wrong`` with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from qinspect import __version__
from qinspect.errors import QInspectError

# Sub-command name -> module in qinspect.cli. Listed, not discovered, so the order of --help is fixed.
COMMANDS = {
    "info": "info",
    "capture": "capture",
    "calibrate": "calibrate",
    "emulate": "emulate",
    "compare-dump": "compare_dump",
    "diagnose": "diagnose",
    "advise": "advise",
    "report": "report",
    "gui": "gui",
}


def _command_modules() -> dict[str, object]:
    return {name: importlib.import_module(f"qinspect.cli.{module}") for name, module in COMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="qinspect",
        description="Inspect int8 (Xilinx/AMD DPU) quantization of a Keras model layer by layer. "
        "With no command, or with just a FILE, opens the inspector window.",
    )
    parser.add_argument("--version", action="version", version=f"qinspect {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules().items():
        sub = module.register(subparsers)
        sub.set_defaults(_run=module.run, command=name)
    return parser


def error(message: str) -> int:
    """Print a one-line user error and return the CLI's error exit code."""
    print(f"qinspect: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qinspect`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `qinspect` and `qinspect FILE` open the GUI.
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        argv = ["gui", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except QInspectError as exc:
        return error(str(exc))
    except KeyboardInterrupt:
        return error("interrupted")
    except BrokenPipeError:
        # `qinspect info x | head`: stop quietly, as other command line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
