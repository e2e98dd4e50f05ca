"""Write a report folder atomically: ``report.html``, ``report.json``, ``layers.csv``, ``figures/*.png``.

Everything is written into a temporary folder beside the destination and renamed into place at the
end, so an interrupted run leaves either the old folder or the complete new one, never half a report.
An existing non-empty destination is replaced only when the caller says so (``force``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from qinspect.errors import QInspectError
from qinspect.report.content import FigureSpec, Report
from qinspect.report.exports import report_to_csv, report_to_json
from qinspect.report.html import PNG_MAGIC, render_html

# Draws figure specifications to PNG bytes keyed by figure id (qinspect.gui.figures.render_figures).
FigureRenderer = Callable[[Sequence[FigureSpec]], dict[str, bytes]]

HTML_NAME = "report.html"
JSON_NAME = "report.json"
CSV_NAME = "layers.csv"
FIGURES_DIR = "figures"


def check_destination(out_dir: str | Path, force: bool = False) -> Path:
    """Refuse a destination that is a file, or a non-empty folder unless ``force``; return it as a Path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QInspectError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise QInspectError("folder exists and is not empty (use --force to replace it)", out)
    if out.is_dir() and any(out.iterdir()):
        # --force replaces the folder: never the working folder, one holding it, the home folder or /
        here, target = Path.cwd().resolve(), out.resolve()
        if target == here or target in here.parents or target == Path.home().resolve():
            raise QInspectError("is the working, home or a parent folder: a report needs a folder of its own "
                                "(even --force does not replace this one)", out)
    if not out.absolute().parent.is_dir():
        raise QInspectError("parent folder does not exist", out)
    try:  # a folder we cannot write in is refused now, before any work
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".probe", dir=out.absolute().parent))
    except OSError as exc:
        raise QInspectError(f"cannot write a report here ({exc.strerror or exc})", out) from None
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
    parent = out.absolute().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        files: dict[str, str] = {}
        if pngs:
            (tmp / FIGURES_DIR).mkdir()
            for fid, data in pngs.items():
                rel = f"{FIGURES_DIR}/{fid}.png"
                (tmp / rel).write_bytes(data)
                files[fid] = rel
        (tmp / JSON_NAME).write_text(report_to_json(report, files), encoding="utf-8")
        (tmp / CSV_NAME).write_text(report_to_csv(report), encoding="utf-8", newline="")
        (tmp / HTML_NAME).write_text(render_html(report, pngs), encoding="utf-8")
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
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.absolute().parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the previous report back
        raise
    shutil.rmtree(old, ignore_errors=True)
