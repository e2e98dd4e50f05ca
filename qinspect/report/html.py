"""The self-contained HTML form of a report: one file, figures embedded as PNG data URIs.

The page needs no network: no external stylesheet, script, font or image. The Jinja2 template is
``templates/report.html.j2``; autoescaping is on, so layer names and texts from model files cannot
inject markup.
"""

from __future__ import annotations

import base64
import math
import os
from typing import Any

import jinja2

from qinspect.analysis.advisor import (
    SIMPLEST_NOTE,
    TOP1_OUTRANKED_NOTE,
    WITHIN_NOISE_NOTE,
    calibration_text,
    row_marks,
    within_noise,
)
from qinspect.analysis.decisions import agreement_text
from qinspect.report import wording
from qinspect.report.content import METRIC_KEYS, METRIC_TITLES, POSITION_KEYS, Report
from qinspect.report.exports import CSV_COLUMNS, worst_finding

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes (refuses anything that is not a PNG)."""
    if not png.startswith(PNG_MAGIC):
        raise ValueError("figure is not PNG data")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fmt_number(value: Any, kind: str = "") -> str:
    """A number as a reader wants it: ``kind`` is ``db``, ``pct``, ``int``, ``cos`` or general."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt_number(v, kind)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_number(v, kind) for v in value) + "]"
    if hasattr(value, "tolist"):  # numpy scalar or array
        return fmt_number(value.tolist(), kind)
    if not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) and kind != "pct":
        return str(value)
    v = float(value)
    if math.isnan(v):  # undefined (the cosine of an all-zero output): shown as emulate shows it
        return "-"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if kind == "db":
        text = f"{v:.1f}"
        return "0.0" if text == "-0.0" else text  # a gain of -0.04 dB is no loss to show in red
    if kind == "pct":
        if v == 0:
            return "0%"
        pct = 100 * v
        return f"{pct:.3g}%" if pct < 0.1 else agreement_text(v, 2)
    if kind == "cos":
        return f"{v:.6f}"
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.3e}"


def fmt_positions(value: Any) -> str:
    """A position cell: one int, a list of input positions, or n/a."""
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return ", ".join("–" if v is None else str(v) for v in value) or "–"
    return str(value)


def sqnr_class(value: Any) -> str:
    """A CSS class grading an SQNR in dB (the colour scale of the tables)."""
    if value is None or isinstance(value, str):
        return "na"
    v = float(value)
    if math.isnan(v):
        return "na"
    if v >= 30:
        return "good"
    if v >= 20:
        return "fair"
    if v >= 10:
        return "poor"
    return "bad"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qinspect.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_number
    # a share of decisions as emulate and diagnose print it (87.5%, >99.9%), not rounded to 88%
    env.filters["agreement"] = lambda x: "n/a" if x is None else agreement_text(x)
    env.filters["pos"] = fmt_positions
    env.filters["sqnr_class"] = sqnr_class
    env.filters["finding_sentence"] = wording.finding_sentence
    env.filters["pooled_top1"] = wording.pooled_top1_suffix
    env.filters["remedy_sentence"] = wording.remedy_sentence
    env.filters["kind_title"] = wording.kind_title
    env.filters["row_marks"] = row_marks
    env.filters["calibration_text"] = calibration_text
    env.filters["within_noise"] = within_noise
    env.tests["within_noise"] = within_noise
    env.globals["TOP1_OUTRANKED_NOTE"] = TOP1_OUTRANKED_NOTE
    env.globals["WITHIN_NOISE_NOTE"] = WITHIN_NOISE_NOTE
    env.globals["SIMPLEST_NOTE"] = SIMPLEST_NOTE
    env.filters["basename"] = lambda path: os.path.basename(str(path or ""))
    return env


INLINE_BYTES = 8 << 20  # figures embedded in the page, at most; past it they are linked
FIGURES_DIR = "figures"  # the folder beside the page that holds every figure (the writer writes it)


def render_html(report: Report, figures_png: dict[str, bytes], inline_bytes: int = INLINE_BYTES) -> str:
    """The report page. ``figures_png`` maps figure ids to PNG bytes; a figure without one is left out
    with a visible note (for example when no renderer was available). Figures are embedded, so the page
    stands alone, up to ``inline_bytes`` of PNG (model figures first); the rest are linked to
    ``figures/ID.png`` beside the page, which the report writer writes, and the page says so (a
    770-layer model's page was 81 MB)."""
    uris: dict[str, str] = {}
    used = 0
    model_first = sorted(figures_png, key=lambda fid: fid not in {f.id for f in report.figures})
    for fid in model_first:
        png = figures_png[fid]
        if used + len(png) <= inline_bytes:
            uris[fid] = png_data_uri(png)
            used += len(png)
        else:
            uris[fid] = f"{FIGURES_DIR}/{fid}.png"
    linked = sum(1 for uri in uris.values() if not uri.startswith("data:"))
    template = _environment().get_template("report.html.j2")
    return template.render(
        r=report,
        uris=uris,
        linked_figures=linked,
        metric_keys=METRIC_KEYS,
        metric_titles=METRIC_TITLES,
        position_keys=POSITION_KEYS,
        csv_columns=CSV_COLUMNS,
        anchors={layer.name: layer.anchor for layer in report.layers},
        worst={layer.name: worst_finding(layer.findings) for layer in report.layers},
        has_sensitivity=any(layer.sensitivity for layer in report.layers),
    )
