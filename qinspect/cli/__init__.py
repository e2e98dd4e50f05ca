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
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from qinspect import __version__, memory_reuse
from qinspect.errors import QInspectError, one_line

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
    "demo": "demo",
    "gui": "gui",
}


def _command_modules() -> dict[str, object]:
    return {name: importlib.import_module(f"qinspect.cli.{module}") for name, module in COMMANDS.items()}


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (a wrong choice, a value that is not a number, a missing or
    unknown option) as every other user error, naming the help to read instead of printing the usage block.
    Sub-command parsers are of this class too (argparse makes them of their parent's)."""

    command = ""  # the sub-command the words name, for an error the top parser raises (an unknown option)

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse's
        words = self.prog.split()
        command = " ".join(words[1:]) or self.command
        where = f"qinspect {command} --help" if command else "qinspect --help"
        print(f"qinspect: error: {one_line(message)} (see {where})", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = OneLineParser(
        prog="qinspect",
        description="Inspect int8 (Xilinx/AMD DPU) quantization of a Keras model layer by layer. "
        "With no command, or with just a FILE, opens the inspector window.",
    )
    parser.add_argument("--version", action="version", version=f"qinspect {__version__}")
    desktop = parser.add_mutually_exclusive_group()
    desktop.add_argument("--install-desktop", action="store_true",
                         help="add qinspect to your desktop's applications, with its icon and file types (per user)")
    desktop.add_argument("--uninstall-desktop", action="store_true", help="remove what --install-desktop added")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules().items():
        sub = module.register(subparsers)
        sub.set_defaults(_run=module.run, command=name)
    return parser


def error(message: str) -> int:
    """Print a one-line user error and return the CLI's error exit code.

    Line breaks and other control characters are escaped (:func:`qinspect.errors.one_line`), so the
    message stays one line whatever a hostile file names itself.
    """
    print(f"qinspect: error: {one_line(message)}", file=sys.stderr)
    return 2


def _desktop(args: argparse.Namespace) -> int:
    """``--install-desktop`` / ``--uninstall-desktop`` (no sub-command may come with them)."""
    if getattr(args, "command", None):
        return error("--install-desktop and --uninstall-desktop take no command")
    from qinspect.desktop import install_desktop, uninstall_desktop

    try:
        (install_desktop if args.install_desktop else uninstall_desktop)()
    except OSError as exc:
        return error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
    return 0


_STOPPED_BY: list[int] = []  # the signal raise_interrupt turned into KeyboardInterrupt (none: Ctrl-C)
_WHOLE_PROCESS: list[bool] = []  # set by main when the process is qinspect's own (the console script)


def raise_interrupt(signum: int, frame: object) -> None:
    """Signal handler: turn the signal (Ctrl-C, SIGTERM) into KeyboardInterrupt, so it cleans up like
    Ctrl-C. In qinspect's own process, which is stopping, later signals are then ignored: a second Ctrl-C,
    or `timeout -s INT` signalling the process and then its group, would cut the cleanup short (a
    capture's temporary file stayed, a shutdown printed a traceback). Not in a caller's process: ignored
    signals are inherited by every process it starts later (a test run's helpers ignored SIGTERM and the
    run hung at exit)."""
    _STOPPED_BY.append(signum)
    if stopping():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def stopping() -> bool:
    """Whether qinspect's own process has been interrupted and is on its way out (signals ignored)."""
    return bool(_WHOLE_PROCESS and _STOPPED_BY)


def interrupted() -> int:
    """One line, and the exit status a shell gives a process stopped by a signal (128 + its number: 130
    for Ctrl-C, 143 for SIGTERM), so a CI script tells a runner's timeout from bad input (2)."""
    print("qinspect: error: interrupted", file=sys.stderr)
    return 128 + (_STOPPED_BY[-1] if _STOPPED_BY else signal.SIGINT)


def _dash_value(option: str, value: str) -> bool:
    """Whether ``value``, after ``option``, is its value though it starts with a dash: ``-1..1`` for
    --preprocess, ``-inf`` or ``-5`` for --fail-below."""
    if not value.startswith("-"):
        return False
    if option == "--preprocess":
        return value[1:2].isdigit()
    if option == "--fail-below":
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _joined_dash_values(argv: list[str]) -> list[str]:
    """``--preprocess -1..1`` as ``--preprocess=-1..1``, ``--fail-below -inf`` as ``--fail-below=-inf``:
    argparse reads a value starting with a dash (other than a plain negative number) as another option
    ("expected one argument"), though it is the documented spelling of a choice or a threshold."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if i + 1 < len(argv) and _dash_value(argv[i], argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _unknown_command(word: str) -> str:
    """The one line for a first word that is neither a command nor a file."""
    import difflib

    close = difflib.get_close_matches(word, list(COMMANDS), n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; the commands: {', '.join(COMMANDS)}"
    return f"unknown command {word!r}{hint}"


def _done(code: int, leave: bool) -> int:
    """``code``; in qinspect's own process with TensorFlow loaded, the process ends here with it.

    Every file is written and closed by now. TensorFlow's C++ teardown at a normal interpreter exit can
    abort the process after the work is done ("terminate called after throwing an instance of ''",
    exit 134, after a complete ``capture --keep``), which scripts and CI read as a failure."""
    if leave and "tensorflow" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qinspect`` console script."""
    whole_process = argv is None  # the console script or ``python -m qinspect``, not a caller in-process
    argv = list(sys.argv[1:] if argv is None else argv)
    # File names that are not valid UTF-8 arrive as surrogate escapes: print them back as the bytes they were.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    # `qinspect` and `qinspect FILE` open the GUI.
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        if len(argv) > 1 and not os.path.exists(argv[0]):
            return error(_unknown_command(argv[0]))  # `qinspect diagnoze cap.h5`: a typo, not a file
        argv = ["gui", *argv]
    parser = build_parser()
    parser.command = argv[0] if argv[0] in COMMANDS else ""
    args = parser.parse_args(_joined_dash_values(argv))
    if args.install_desktop or args.uninstall_desktop:
        return _desktop(args)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if whole_process:
        # numpy's overflow / invalid-value notes on absurd data (1e38 inputs, a negative variance) would print
        # a block above the one-line error the checks give; the checks say what is wrong
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"(qinspect|numpy)(\.|$)")
    if whole_process:
        _WHOLE_PROCESS.append(True)
    if whole_process and args.command != "gui":  # the window closes itself on SIGTERM
        # Tensors freed by one layer are reused by the next, not faulted in afresh (see memory_reuse).
        memory_reuse.keep_freed_memory()
        # SIGTERM cleans up like Ctrl-C: temporary files and folders go, destinations stay as they were.
        signal.signal(signal.SIGTERM, raise_interrupt)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started ignoring it
            signal.signal(signal.SIGINT, raise_interrupt)
    if args.command != "gui":
        from qinspect.cli._progress import check_progress_setting

        check_progress_setting()
    leave = whole_process and args.command != "gui"
    try:
        return _done(int(args._run(args) or 0), leave)
    except QInspectError as exc:
        return _done(error(str(exc)), leave)
    except KeyboardInterrupt:
        # Everything qinspect wrote is cleaned up by now. A batch may still be running on TensorFlow's
        # threads, and the C++ teardown of a normal exit would wait seconds for it: leave at once.
        return _done(interrupted(), leave)
    except BrokenPipeError:
        # `qinspect info x | head`: stop quietly, as other command line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
