"""Progress of a long command on stderr: a rich progress bar on a terminal, a few plain lines otherwise.

The callback takes ``(text, done, total)``: a new ``text`` starts a stage; ``total`` 0 means the stage has
no measurable amount of work (only its name and elapsed time are shown). stdout is never touched, so
``--json`` output stays clean.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Step = Callable[[str, int, int], None]

# Without a terminal: one line when a stage starts and each time another quarter of its work is done.
_LINE_STEPS = 4


@contextmanager
def stderr_progress(command: str, enabled: bool = True) -> Iterator[Step]:
    """A ``(text, done, total)`` callback that shows progress on stderr for the duration of the block."""
    if not enabled:
        yield lambda _text, _done, _total: None
        return
    if sys.stderr.isatty():
        with _rich_progress() as step:
            yield step
        return
    yield _LinePrinter(command)


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

    def __init__(self, command: str) -> None:
        self.command = command
        self.t0 = time.perf_counter()
        self.text = ""
        self.shown = -1

    def __call__(self, text: str, done: int, total: int) -> None:
        if text != self.text:
            self.text, self.shown = text, -1
        quarter = _LINE_STEPS * done // total if total else 0
        if quarter <= self.shown:
            return
        self.shown = quarter
        pct = f" {100 * done // total}%" if total else ""
        print(f"qinspect {self.command}: {text}{pct} ({time.perf_counter() - self.t0:.0f} s)", file=sys.stderr,
              flush=True)
