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


def check_writable_here(path: str | os.PathLike[str], what: str) -> None:
    """Refuse, before any work, a destination whose folder cannot be written (read-only, no permission):
    a probe folder is made beside ``path`` and removed. ``what``: the thing to be written, for the message
    ("cannot write a report here")."""
    path = os.fspath(path)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{os.path.basename(path) or 'qinspect'}.", suffix=".probe",
                                  dir=os.path.dirname(os.path.abspath(path))))
    except OSError as exc:
        raise QInspectError(f"cannot write {what} here ({exc.strerror or exc})", path) from None
