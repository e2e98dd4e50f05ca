"""The one error type users see: a one-line message that names the file and what is wrong."""

from __future__ import annotations

from pathlib import Path


class QInspectError(Exception):
    """A user-facing error. The CLI prints it on one line and exits 2; the GUI shows it in a message.

    ``path`` is the file the problem is in (if any); ``message`` says what is wrong with it.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class UnsupportedFormatError(QInspectError):
    """The file is not of a kind qinspect reads, or a newer version of one."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its class name when empty), to quote inside a one-line message."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``): a file or layer may be
    named with them, and a refusal must stay one line. Bytes of a name that is not UTF-8 (surrogate
    escapes) are kept as they are."""
    return "".join(c if c.isprintable() or "\udc80" <= c <= "\udcff" else repr(c)[1:-1] for c in text)
