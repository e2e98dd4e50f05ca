"""Progress of a long command on stderr: a rich progress bar on a terminal, a few plain lines otherwise.

The callback takes ``(text, done, total)``: a new ``text`` starts a stage; ``total`` 0 means the stage has
no measurable amount of work (only its name and elapsed time are shown). stdout is never touched, so
``--json`` output stays clean. Without a terminal (logs, pipes) lines start only once the command has run
``LINES_AFTER_S`` seconds, so a quick run, or a bad input refused at once, prints nothing but its result
or its one-line error. ``QINSPECT_PROGRESS=lines`` (or ``bar``, ``off``) overrides the choice.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Step = Callable[[str, int, int], None]

# Without a terminal: one line when a stage starts and each time another quarter of its work is done,
# once the command has run this long.
_LINE_STEPS = 4
LINES_AFTER_S = 5.0


@contextmanager
def stderr_progress(command: str, enabled: bool = True) -> Iterator[Step]:
    """A ``(text, done, total)`` callback that shows progress on stderr for the duration of the block."""
    if not enabled:
        yield lambda _text, _done, _total: None
        return
    lines = line_progress(command)
    if lines is None:
        with _rich_progress() as step:
            yield step
        return
    yield lines


PROGRESS_CHOICES = ("", "lines", "bar", "off")


def check_progress_setting() -> None:
    """Warn once, on stderr, when ``QINSPECT_PROGRESS`` holds none of its values (it is then ignored: a typo
    such as ``of`` would otherwise pass unseen in a CI log)."""
    how = os.environ.get("QINSPECT_PROGRESS", "")
    if how not in PROGRESS_CHOICES:
        print(f"qinspect: warning: QINSPECT_PROGRESS={how!r} is none of {', '.join(PROGRESS_CHOICES[1:])}; "
              "ignored", file=sys.stderr)


def line_progress(command: str) -> Step | None:
    """The plain-lines printer when progress goes to a log or a pipe (or ``QINSPECT_PROGRESS=lines``), None
    when a bar suits (a terminal) or progress is off (``QINSPECT_PROGRESS=off`` gives a silent printer)."""
    how = os.environ.get("QINSPECT_PROGRESS", "")
    if how == "off":
        return lambda _text, _done, _total: None
    if how == "bar" or (sys.stderr.isatty() and how != "lines"):
        return None
    return _LinePrinter(command, 0.0 if how == "lines" else LINES_AFTER_S)


@contextmanager
def _rich_progress() -> Iterator[Step]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    tasks: dict[str, Any] = {}

    def step(text: str, done: int, total: int) -> None:
        if text not in tasks:
            for other in tasks.values():  # a new stage ends the previous ones
                bar.update(other, visible=False)
            tasks[text] = bar.add_task(text, total=total or None)
        bar.update(tasks[text], completed=done, total=total or None)

    with bar:
        yield step


class _LinePrinter:
    """Plain progress lines (logs, pipes): a stage's start and each quarter of its work, with elapsed time."""

    def __init__(self, command: str, after_s: float) -> None:
        self.command = command
        self.t0 = time.perf_counter()
        self.after_s = after_s
        self.text = ""
        self.shown = -1

    def __call__(self, text: str, done: int, total: int) -> None:
        if time.perf_counter() - self.t0 < self.after_s:
            return
        if text != self.text:
            self.text, self.shown = text, -1
        quarter = _LINE_STEPS * done // total if total else 0
        if quarter <= self.shown:
            return
        self.shown = quarter
        pct = f" {100 * done // total}%" if total else ""
        print(f"qinspect {self.command}: {text}{pct} ({time.perf_counter() - self.t0:.0f} s)", file=sys.stderr,
              flush=True)
