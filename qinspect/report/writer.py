"""Write a report folder atomically: ``report.html``, ``report.json``, ``layers.csv``, ``figures/*.png``.

Everything is written into a temporary folder beside the destination and renamed into place at the
end, so an interrupted run leaves either the old folder or the complete new one, never half a report.
An existing non-empty destination is replaced only when it is a report qinspect wrote and the caller says
so (``force``); any other folder is refused, with or without ``force``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from qinspect.errors import QInspectError
from qinspect.io.paths import check_writable_here, temp_prefix
from qinspect.report.content import FigureSpec, Report
from qinspect.report.exports import FORMAT_NAME as REPORT_FORMAT
from qinspect.report.exports import report_to_csv, report_to_json
from qinspect.report.html import FIGURES_DIR, PNG_MAGIC, render_html

# Draws figure specifications to PNG bytes keyed by figure id (qinspect.gui.figures.render_figures).
FigureRenderer = Callable[[Sequence[FigureSpec]], dict[str, bytes]]

HTML_NAME = "report.html"
JSON_NAME = "report.json"
CSV_NAME = "layers.csv"


# What a report folder holds (see write_report): --force replaces only a folder made of exactly these.
_REPORT_FILES = frozenset({HTML_NAME, JSON_NAME, CSV_NAME})
# The figure files a report writes (figure ids: collect.py names a layer's figures after its row); a
# file named otherwise in figures/ is someone else's, and --force never deletes it.
_FIGURE_NAME = re.compile(r"(propagation|[LQ]\d+-(activation|error|weights|channels))\.png")
# A report.json larger than this is not one qinspect wrote (the biggest models give a few MB).
_MAX_REPORT_JSON = 256 << 20


def not_a_report_reason(folder: str | Path) -> str | None:
    """Why ``folder`` is not a report folder qinspect wrote, or None when it is one.

    A report folder holds ``report.json`` whose ``format`` is ``"qinspect-report"``, and nothing but
    ``report.html``, ``report.json``, ``layers.csv`` and the figures a report names (``figures/propagation.png``,
    ``figures/L12-activation.png``, ...; regular files, no links).
    Anything else in it means someone else's data is there, and qinspect never deletes that.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        return f"cannot list it ({exc.strerror or exc})"
    for entry in entries:
        if entry.name == FIGURES_DIR and entry.is_dir(follow_symlinks=False):
            try:
                figures = list(os.scandir(entry.path))
            except OSError as exc:
                return f"cannot list {FIGURES_DIR}/ ({exc.strerror or exc})"
            odd = [f.name for f in figures if not _is_figure(f)]
            if odd:
                return f"it holds {FIGURES_DIR}/{odd[0]}, which a report does not write"
        elif entry.name not in _REPORT_FILES or not entry.is_file(follow_symlinks=False):
            return f"it holds {entry.name}, which a report does not write"
    marker = folder / JSON_NAME
    if not marker.is_file() or marker.is_symlink():
        return f"it has no {JSON_NAME}"
    try:
        if marker.stat().st_size > _MAX_REPORT_JSON:
            return f"its {JSON_NAME} is not a qinspect report's"
        data = json.loads(marker.read_bytes())
    except (OSError, ValueError, RecursionError):
        return f"its {JSON_NAME} is not a qinspect report's"
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        return f"its {JSON_NAME} is not a qinspect report's"
    return None


def _is_figure(entry: os.DirEntry) -> bool:
    return _FIGURE_NAME.fullmatch(entry.name) is not None and entry.is_file(follow_symlinks=False)


def _parts_before_dotdot(path: str) -> list[str]:
    """The prefixes of ``path`` a ".." steps back out of (normpath folds them lexically, which is wrong
    where one is a link: those are refused instead)."""
    parts, out, prefix = path.split(os.sep), [], ""
    for i, part in enumerate(parts):
        prefix = os.path.join(prefix, part) if prefix or part else os.sep
        if i + 1 < len(parts) and parts[i + 1] == "..":
            out.append(prefix)
    return out


def check_destination(out_dir: str | Path, force: bool = False) -> Path:
    """Refuse a destination qinspect may not write; return it as a Path.

    An absent or empty folder is written. An existing report folder (:func:`not_a_report_reason`) is
    replaced only with ``force``. Anything else (a file, a link, a folder holding anything but a
    report) is refused whatever ``force`` says.
    """
    raw = os.fspath(out_dir)
    if os.path.islink(raw.rstrip("/" + (os.altsep or ""))) or any(
            os.path.islink(p) for p in _parts_before_dotdot(raw)):
        raise QInspectError("is a symbolic link: give the report folder itself (qinspect never replaces a link)", raw)
    # "rep/figures/.." names rep: folded here, or the report would be renamed onto "rep/figures/.."
    out = Path(os.path.normpath(raw))
    if out.is_symlink():
        raise QInspectError("is a symbolic link: give the report folder itself (qinspect never replaces a link)", out)
    if out.exists() and not out.is_dir():
        raise QInspectError("exists and is not a folder", out)
    if out.is_dir():
        # even empty: the report is swapped in by renaming the folder, which the working folder refuses
        here, target = Path.cwd().resolve(), out.resolve()
        if target == here or target in here.parents or target == Path.home().resolve():
            raise QInspectError("is the working, home or a parent folder: a report needs a folder of its own "
                                "(even --force does not replace this one)", out)
        if any(out.iterdir()):
            reason = not_a_report_reason(out)
            if reason is not None:
                raise QInspectError(f"folder exists and is not a qinspect report ({reason}): qinspect replaces "
                                    "only a report it wrote, even with --force; choose a new folder", out)
            if not force:
                raise QInspectError("holds a qinspect report (use --force to replace it)", out)
    parent = out.absolute().parent
    if not parent.is_dir():
        raise QInspectError("parent folder does not exist" if not parent.exists() else
                            f"{parent.name} is a file, not a folder", out)
    check_writable_here(out, "a report")  # a folder we cannot write in is refused now, before any work
    return out


def render_all(report: Report, render_figures: FigureRenderer | None) -> dict[str, bytes]:
    """Run the renderer once over every figure of the report and check that it returned PNGs."""
    specs = report.all_figures()
    if render_figures is None or not specs:
        return {}
    pngs = dict(render_figures(specs))
    for fid, data in pngs.items():
        if not isinstance(data, bytes) or not data.startswith(PNG_MAGIC):
            raise ValueError(f"figure renderer returned something other than PNG for {fid!r}")
    return pngs


def write_report(
    report: Report,
    out_dir: str | Path,
    render_figures: FigureRenderer | None = None,
    figures_png: dict[str, bytes] | None = None,
    force: bool = False,
) -> Path:
    """Write the report folder and return its path.

    Figures come from ``figures_png`` (id -> PNG bytes) or are drawn by ``render_figures``; without
    either the HTML says that each figure was not rendered, and the numbers are all still there.
    """
    out = check_destination(out_dir, force)
    pngs = dict(figures_png) if figures_png is not None else render_all(report, render_figures)
    parent = out.absolute().parent  # out is normalized by check_destination: "rep/figures/.." is rep
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=parent))
    try:
        files: dict[str, str] = {}
        if pngs:
            (tmp / FIGURES_DIR).mkdir()
            for fid, data in pngs.items():
                if _FIGURE_NAME.fullmatch(f"{fid}.png") is None:  # a later --force must recognise it as ours
                    raise ValueError(f"figure id {fid!r} is not one a report names")
                rel = f"{FIGURES_DIR}/{fid}.png"
                (tmp / rel).write_bytes(data)
                files[fid] = rel
        # A file name that is not valid UTF-8 reaches here with surrogate escapes: written as \udcff text.
        (tmp / JSON_NAME).write_text(report_to_json(report, files), encoding="utf-8", errors="backslashreplace")
        (tmp / CSV_NAME).write_text(report_to_csv(report), encoding="utf-8", errors="backslashreplace", newline="")
        (tmp / HTML_NAME).write_text(render_html(report, pngs), encoding="utf-8", errors="backslashreplace")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a report folder is for sharing
        _swap_into_place(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # disk full, permissions changed under us: one line, nothing left behind
            raise QInspectError(f"cannot write the report ({exc.strerror or exc})", out) from None
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".old", dir=out.absolute().parent))
    os.rmdir(old)
    # Checked again just before the move: the folder may have changed while the report was computed.
    reason = not_a_report_reason(out) if any(out.iterdir()) else None
    if reason is not None:
        raise QInspectError(f"folder changed while the report was computed and is no longer a qinspect report "
                            f"({reason}); left as it is", out)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the previous report back
        raise
    _remove_report_folder(old)


def _remove_report_folder(folder: Path) -> None:
    """Delete a previous report: only the files a report writes, then the folders if they are empty.

    Not ``rmtree``: anything else that appeared in the folder is left where it is.
    """
    for name in _REPORT_FILES:
        _unlink_quietly(folder / name)
    figures = folder / FIGURES_DIR
    if figures.is_dir() and not figures.is_symlink():
        for entry in os.scandir(figures):
            if _is_figure(entry):
                _unlink_quietly(Path(entry.path))
    for path in (figures, folder):
        try:
            os.rmdir(path)
        except OSError:
            pass
    if folder.exists():  # something in it could not be removed (or appeared there): said, not silently left
        import sys

        print(f"qinspect: warning: the previous report was moved aside to {folder} and could not be removed "
              "completely; delete it when done", file=sys.stderr)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
