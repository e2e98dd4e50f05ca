"""What a path names before anything opens it: qinspect reads regular files and folders only.

A FIFO blocks the first read until some other process writes to it (``qinspect info fifo`` hung
forever), and a device never ends (``/dev/zero``, ``/dev/urandom``): both are refused by their
``stat`` mode, which opening neither blocks nor reads.
"""

from __future__ import annotations

import os
import stat
import tempfile

from qinspect.errors import QInspectError


def check_not_special(path: str | os.PathLike[str]) -> None:
    """Refuse a path that exists and is neither a regular file nor a folder (links are followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the caller's own check says so, in its words
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise QInspectError(f"is {kind}: qinspect reads regular files and folders only", os.fspath(path))


def data_file_size(path: str | os.PathLike[str], what: str = "a data file") -> int:
    """The size of a file that holds data (a dump's .bin), refusing in one line what is no such file: a link
    to nothing, a folder, a FIFO or device (which would block or never end), a file that cannot be read."""
    check_not_special(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise QInspectError("is a link to a file that does not exist (a dangling symbolic link)" if os.path.islink(path)
                            else "does not exist", os.fspath(path)) from None
    except OSError as exc:
        raise QInspectError(f"cannot be read ({exc.strerror or exc})", os.fspath(path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise QInspectError(f"is a folder where {what} is expected", os.fspath(path))
    return st.st_size


def temp_prefix(name: str) -> str:
    """The prefix of a temporary file or folder made beside ``name``: its first characters only, so a legal
    long name (up to the 255 bytes a file name may have) still leaves room for the random part and suffix."""
    return f".{name[:64]}."


def check_writable_here(path: str | os.PathLike[str], what: str) -> None:
    """Refuse, before any work, a destination whose folder cannot be written (read-only, no permission):
    a probe folder is made beside ``path`` and removed. ``what``: the thing to be written, for the message
    ("cannot write a report here")."""
    path = os.fspath(path)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=temp_prefix(os.path.basename(path) or "qinspect"), suffix=".probe",
                                  dir=os.path.dirname(os.path.abspath(path))))
    except OSError as exc:
        raise QInspectError(f"cannot write {what} here ({exc.strerror or exc})", path) from None


SETTINGS_GROUPS = frozenset({"files", "quantizer", "view", "window", "general", "qinspect"})  # the window's own
SETTINGS_SAMPLE = 1 << 20  # a settings file is a few KiB; a larger one is someone else's file


def check_settings_file(path: str | os.PathLike[str]) -> None:
    """Refuse a settings path the window would write over a file it did not write: QSettings replaces the
    whole file on exit (``gui --settings cap.h5`` turned the capture opened into INI text). Accepted: a
    missing file in an existing folder, an empty file, or INI text whose sections are all the window's own
    (``[window]``, ``[files]``, ``[view]``, ``[quantizer]``, ``[qinspect]``)."""
    path = os.fspath(path)
    if os.path.islink(path):
        raise QInspectError("is a symbolic link: the settings file is written in place, so qinspect refuses to "
                            "follow a link to some other file", path)
    if not os.path.lexists(path):
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise QInspectError("the settings file's folder does not exist", path)
        return
    if not os.path.isfile(path):
        check_not_special(path)
        raise QInspectError("is a folder, not a settings file", path)
    if os.path.getsize(path) > SETTINGS_SAMPLE:
        raise QInspectError("is not a qinspect settings file (too large): the window writes its settings over "
                            "the whole file, so it uses only a file it wrote", path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    sections = set() if text is None else {line.strip()[1:-1].strip().lower() for line in text.splitlines()
                                           if line.strip().startswith("[") and line.strip().endswith("]")}
    lines = [] if text is None else [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(
        (";", "#"))]
    ours = text is not None and "\0" not in text and sections <= SETTINGS_GROUPS and \
        all(ln.strip().startswith("[") or "=" in ln for ln in lines) and (bool(sections) or not lines)
    if not ours:
        raise QInspectError("is not a qinspect settings file: the window writes its settings over the whole file, "
                            "so it uses only a missing or empty file, or one it wrote", path)
