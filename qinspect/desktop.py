"""Desktop integration for one user (XDG): ``qinspect --install-desktop`` and ``--uninstall-desktop``.

Installs, under ``$XDG_DATA_HOME`` (default ~/.local/share):

- ``applications/APP_ID.desktop``: the launcher, its ``Exec`` pointing at this installation's qinspect;
- ``metainfo/APP_ID.metainfo.xml``: the AppStream description software centres show;
- ``mime/packages/APP_ID.xml``: the MIME types ``application/x-qinspect-capture`` (an HDF5 file whose
  root attribute ``format`` is ``qinspect-capture``, recognised by content) and ``application/x-keras``;
- ``icons/hicolor/NxN/apps/APP_ID.png`` at the standard sizes and ``icons/hicolor/scalable/apps/APP_ID.svg``.

Then it refreshes the MIME, desktop and icon caches when their tools exist. Uninstalling removes only
files that are byte for byte what qinspect installed; a file someone changed stays, and is named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from qinspect.userdirs import data_home

APP_ID = "io.github.qinspect.qinspect"
RESOURCES = Path(__file__).resolve().parent / "resources"
DESKTOP_SOURCES = RESOURCES / "desktop"
ICON_SOURCES = RESOURCES / "icons"


def launch_command() -> list[str]:
    """The command that starts this installation of qinspect (the frozen app, the venv's script, or python -m)."""
    if getattr(sys, "frozen", False):
        return [os.path.abspath(sys.executable)]
    script = Path(sys.executable).parent / "qinspect"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [os.path.abspath(sys.executable), "-m", "qinspect"]


def _exec_quote(word: str) -> str:
    """One argument of a desktop file's Exec key, quoted as the Desktop Entry spec asks."""
    if not any(ch in word for ch in ' \t\n"\'\\><~|&;$*?#()`'):
        return word
    escaped = "".join("\\" + ch if ch in '"`$\\' else ch for ch in word)
    # The key's value is itself a string in which a backslash is written as two.
    return '"' + escaped.replace("\\", "\\\\") + '"'


def desktop_entry(command: list[str]) -> str:
    """The packaged .desktop file with its Exec key running ``command`` on the opened file."""
    lines = []
    for line in (DESKTOP_SOURCES / f"{APP_ID}.desktop").read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(_exec_quote(word) for word in command) + " %f"
        lines.append(line)
    return "\n".join(lines) + "\n"


def planned_files(root: Path | None = None, command: list[str] | None = None) -> dict[Path, bytes]:
    """Every file the install writes (destination -> content) under ``root`` (default: the XDG data home)."""
    root = root or data_home()
    files = {
        root / "applications" / f"{APP_ID}.desktop": desktop_entry(command or launch_command()).encode(),
        root / "metainfo" / f"{APP_ID}.metainfo.xml": (DESKTOP_SOURCES / f"{APP_ID}.metainfo.xml").read_bytes(),
        root / "mime" / "packages" / f"{APP_ID}.xml": (DESKTOP_SOURCES / f"{APP_ID}.mime.xml").read_bytes(),
        root / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg": (RESOURCES / "qinspect.svg").read_bytes(),
    }
    for png in sorted(ICON_SOURCES.glob("*x*.png")):
        files[root / "icons" / "hicolor" / png.stem / "apps" / f"{APP_ID}.png"] = png.read_bytes()
    return files


def _write_atomically(path: Path, data: bytes) -> None:
    # said in the user's terms, not as "File exists" or an error naming the temporary file beside it
    for folder in (path.parent, *path.parent.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise OSError(f"{folder}: is a file, not a folder (qinspect installs {path.name} inside it)")
            break
    if path.is_dir():
        raise OSError(f"{path}: is a folder where qinspect installs a file; it is left as it is")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def refresh_caches(root: Path, say: Callable[[str], None]) -> None:
    """Run the MIME, desktop-file and icon cache tools on ``root`` where they are installed."""
    steps = [(tool, args) for tool, args, folder in (
        ("update-mime-database", [str(root / "mime")], root / "mime" / "packages"),
        ("update-desktop-database", ["-q", str(root / "applications")], root / "applications"),
    ) if folder.is_dir()]  # a tool run on a folder that is not there only warns about it
    hicolor = root / "icons" / "hicolor"
    if hicolor.is_dir():
        os.utime(hicolor)  # icon theme caches compare the theme folder's time: a new icon shows without a re-login
    if (hicolor / "index.theme").is_file():
        steps.append(("gtk-update-icon-cache", ["-q", "-t", "-f", str(hicolor)]))
    for tool, args in steps:
        exe = shutil.which(tool)
        if exe is None:
            continue
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            say(f"warning: {tool} failed: {(done.stderr or done.stdout).strip().splitlines()[:1]}")


def install_desktop(root: Path | None = None, say: Callable[[str], None] = print) -> list[Path]:
    """Install the launcher, metadata, MIME types and icons for this user; return what was written."""
    root = root or data_home()
    written, kept = [], []
    for path, data in planned_files(root).items():
        if os.path.lexists(path) and not _ours(path, data):
            kept.append(path)  # the user's own file (or an edited one): never replaced
            continue
        _write_atomically(path, data)
        written.append(path)
    refresh_caches(root, say)
    launcher = next(iter(planned_files(root)))
    say(f"installed {len(written)} files under {root}" + (f" (launcher: {launcher})" if launcher in written else ""))
    for path in kept:
        say(f"kept {path}: it is not a file qinspect installed (changed since?); remove it and install again to "
            "replace it")
    return written


def _ours(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds what qinspect installs there (``data``), or its launcher from another
    installation: only such a file is replaced or removed."""
    if path.is_symlink() or not path.is_file():
        return False
    current = path.read_bytes()
    return current == data or (path.suffix == ".desktop" and _is_our_desktop_entry(current))


def uninstall_desktop(root: Path | None = None, say: Callable[[str], None] = print) -> list[Path]:
    """Remove what :func:`install_desktop` wrote, and only that; return what was removed."""
    root = root or data_home()
    removed, kept = [], []
    for path, data in planned_files(root).items():
        if not path.is_file():
            continue
        if _ours(path, data):
            path.unlink()
            removed.append(path)
        else:
            kept.append(path)
    refresh_caches(root, say)
    say(f"removed {len(removed)} files under {root}")
    for path in kept:
        say(f"kept {path}: it is not the file qinspect installed (changed since?)")
    return removed


def _is_our_desktop_entry(content: bytes) -> bool:
    """The launcher qinspect wrote, from another installation (its Exec differs, nothing else does)."""
    def without_exec(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("Exec=")]

    try:
        return without_exec(content.decode("utf-8")) == without_exec(desktop_entry(["qinspect"]))
    except UnicodeDecodeError:
        return False
