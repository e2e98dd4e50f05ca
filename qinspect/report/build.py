"""One call from a file to a report folder, shared by ``qinspect report`` and the window's export.

The report package never imports Qt: figures are drawn by the ``render_figures`` callable the caller
passes (``qinspect.gui.figures.render_figures``, which must run on the Qt GUI thread), or left out
with a note in the HTML when there is none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qinspect.dpu.options import QuantizerOptions
from qinspect.report.collect import Opener, Progress, build_report
from qinspect.report.content import Report
from qinspect.report.writer import FigureRenderer, check_destination, write_report


def build_and_write(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    layer: str | None = None,
    positions: str | os.PathLike[str] | None = None,
    eval_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    render_figures: FigureRenderer | None = None,
    batch_size: int = 32,
    options: QuantizerOptions | None = None,
    max_samples: int | None = None,
    progress: Progress | None = None,
    diagnose: bool = True,
    opener: Opener | None = None,
    inputs: str | os.PathLike[str] | None = None,
    preprocess: str | None = None,
    sensitivity: bool = True,
    labels: str | os.PathLike[str] | None = None,
    outputs: Sequence[str] | None = None,
) -> Path:
    """Build the report of ``source`` and write it to ``out_dir`` (atomically). Returns the folder.

    The destination is checked before any work, so a refused folder costs nothing. ``opener`` opens a
    source that is not a capture (see :func:`qinspect.report.collect.build_report`).
    """
    check_destination(out_dir, force)
    report: Report = build_report(source, positions=positions, layer=layer, eval_path=eval_path,
                                  max_samples=max_samples, progress=progress, batch_size=batch_size, options=options,
                                  diagnose=diagnose, opener=opener, inputs=inputs,
                                  preprocess=preprocess, sensitivity=sensitivity, labels=labels,
                                  outputs=outputs)
    if progress:
        progress(0, 1, "drawing figures and writing")
    return write_report(report, out_dir, render_figures=render_figures, force=force)
