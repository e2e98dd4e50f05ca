"""Figure specifications for the report's plots, built from numbers the analysis computed.

Each function takes arrays that already exist (histogram counts, clip thresholds, per-channel ranges,
per-layer SQNR) and only arranges them for drawing: titles, axis labels, colours, markers, captions.
Non-finite values (an SQNR of +inf for an error-free layer) are drawn as gaps and said in the caption.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from qinspect.report.content import FigureSpec, Marker, Series

BLUE = "#1f5fa8"
ORANGE = "#d9731a"
RED = "#c0392b"
GREEN = "#2e8b57"
GREY = "#7f8c8d"
PURPLE = "#7d3c98"


def _floats(values: Sequence[float] | None) -> list[float]:
    return [float(v) for v in (values if values is not None else [])]


def _finite_or_nan(values: Sequence[float | None]) -> tuple[list[float], int]:
    out, dropped = [], 0
    for v in values:
        if v is None or not math.isfinite(float(v)):
            out.append(float("nan"))
            dropped += 1
        else:
            out.append(float(v))
    return out, dropped


def wants_log(counts: Sequence[float]) -> bool:
    """A logarithmic count axis only pays when counts span more than two decades."""
    nz = sorted(float(c) for c in counts if c > 0)
    # Span of all counts, or one bin (exact zeros of a ReLU, say) towering over the typical bin.
    return bool(nz) and (nz[-1] / nz[0] > 100 or nz[-1] / nz[len(nz) // 2] > 20)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.3g}%"


def activation_figure(
    fig_id: str,
    layer: str,
    edges: Sequence[float],
    counts: Sequence[float],
    clip_low: float | None,
    clip_high: float | None,
    position: int | None,
    frac_low: float | None = None,
    frac_high: float | None = None,
    other_ranges: dict[str, tuple[float, float]] | None = None,
    log_y: bool | None = None,
    equalized: str = "",
) -> FigureSpec:
    """The float activation histogram with the int8 clip thresholds of the chosen position.

    ``other_ranges`` maps a calibration method's name to the (low, high) range it would choose;
    ``equalized`` (wording.equalized_note) says the values are the int8 model's equalized tensor.
    """
    markers = []
    if clip_low is not None:
        # the lowest code read off the threshold: -128, or -127 on a DPUCADF8H target
        low = f"{round(clip_low * 2.0**position)}·2^-{position}" if position is not None else "clip low"
        markers.append(Marker(clip_low, low, color=RED))
    if clip_high is not None:
        markers.append(Marker(clip_high, f"127·2^-{position}" if position is not None else "clip high", color=RED))
    for i, (name, (lo, hi)) in enumerate(sorted((other_ranges or {}).items())):
        colour = (PURPLE, GREEN, ORANGE, GREY)[i % 4]
        markers.append(Marker(lo, name, color=colour, dashed=True))
        markers.append(Marker(hi, name, color=colour, dashed=True))
    caption = f"Float output values of {layer} over the calibration samples" + (
        f" ({equalized})." if equalized else ".")
    if clip_low is not None and clip_high is not None:
        caption += (f" Red lines: the int8 range at position {position}; clipped below: {_pct(frac_low)}, "
                    f"above: {_pct(frac_high)}.")
    else:
        caption += " This output has no int8 position of its own (it is not quantized), so no clip range."
    if other_ranges:
        caption += " Dashed: the range other calibration methods would choose (what-if, not vai_q pof2s)."
    return _histogram(fig_id, f"Activation histogram: {layer}", "float value", "float values", edges, counts,
                      BLUE, markers, caption, log_y)


def _histogram(fig_id: str, title: str, x_label: str, name: str, edges: Sequence[float], counts: Sequence[float],
               color: str, markers: list[Marker], caption: str, log_y: bool | None = None) -> FigureSpec:
    """A step histogram of counts (log count axis when :func:`wants_log` says so, and said in the caption)."""
    if log_y is None:
        log_y = wants_log(counts)
    if log_y:
        caption += " Logarithmic count axis."
    return FigureSpec(
        id=fig_id,
        title=title,
        x_label=x_label,
        y_label="count",
        series=[Series(name, _floats(edges), _floats(counts), style="step", color=color)],
        markers=markers,
        log_y=log_y,
        caption=caption,
    )


def weights_figure(
    fig_id: str,
    layer: str,
    edges: Sequence[float],
    counts: Sequence[float],
    clip_low: float | None,
    clip_high: float | None,
    position: int | None,
) -> FigureSpec:
    """The histogram of a layer's (folded, equalized) float weights with the int8 range."""
    markers = []
    caption = f"All weights of {layer} as quantized (after folding and equalization)."
    if clip_low is not None and clip_high is not None:
        markers = [Marker(clip_low, "int8 min", color=RED), Marker(clip_high, "int8 max", color=RED)]
        caption += f" Red lines: the int8 range at position {position}."
    return _histogram(fig_id, f"Weights histogram: {layer}", "weight value", "weights", edges, counts, GREEN,
                      markers, caption)


def channel_ranges_figure(
    fig_id: str,
    layer: str,
    channel_min: Sequence[float],
    channel_max: Sequence[float],
    clip_low: float | None,
    clip_high: float | None,
) -> FigureSpec:
    """Each output channel's weight range against the one per-tensor int8 range."""
    n = len(channel_min)
    markers = []
    if clip_low is not None and clip_high is not None:
        markers = [
            Marker(clip_low, "", axis="y", color=RED, dashed=True),
            Marker(clip_high, "", axis="y", color=RED, dashed=True),
        ]
    return FigureSpec(
        id=fig_id,
        title=f"Per-channel weight ranges: {layer}",
        x_label="output channel",
        y_label="weight value",
        series=[
            Series(
                "channel min..max",
                [float(i) for i in range(n)],
                _floats(channel_min),
                style="range",
                color=GREEN,
                y2=_floats(channel_max),
            )
        ],
        markers=markers,
        caption=f"One bar per output channel ({n}): its smallest to largest weight. pof2s quantizes the "
        "whole tensor with one position (red dashed lines: its int8 range), so a narrow channel uses few of "
        "the 256 codes.",
    )


def error_figure(
    fig_id: str, layer: str, edges: Sequence[float], counts: Sequence[float], view: str, lsb: float | None,
    subset: str | None = None,
) -> FigureSpec:
    """The histogram of (dequantized - float) output values; ``subset`` says which of them when not all
    ("the first 65536 of 262144 values")."""
    markers = []
    if lsb is not None:
        markers = [
            Marker(-lsb / 2, "-½ LSB", color=GREY, dashed=True),
            Marker(lsb / 2, "+½ LSB", color=GREY, dashed=True),
        ]
    total = int(sum(float(c) for c in counts))
    caption = f"{view.capitalize()} error of {subset or f'{total} values'} of {layer}'s output."
    if lsb is not None:
        caption += (" Dashed: half an output LSB, the rounding error alone; values beyond it come from clipping "
                    "or from error carried in.")
    return _histogram(fig_id, f"{view.capitalize()} error histogram: {layer}", "dequantized − float", "error",
                      edges, counts, ORANGE, markers, caption)


def graph_edges(layers: Sequence[str], inbound: Mapping[str, Sequence[str]],
                drawn: Sequence[bool]) -> list[tuple[int, int]]:
    """The model's edges between the drawn points of a per-layer plot, as ``(from, to)`` indexes into
    ``layers``: a line follows the data from each layer to the layers that read it, so branches stay
    apart instead of a line zig-zagging between them in topological order. A layer that is not drawn
    (no point, or not in ``layers``) is passed through: its readers join the drawn layers before it."""
    index = {name: i for i, name in enumerate(layers)}
    edges = []
    for i, name in enumerate(layers):
        if not drawn[i]:
            continue
        sources: set[int] = set()
        seen: set[str] = set()
        pending = list(inbound.get(name, ()))
        while pending:  # up the graph, through layers with no point, to the nearest drawn ones
            parent = pending.pop()
            if parent in seen:
                continue
            seen.add(parent)
            k = index.get(parent)
            if k is not None and drawn[k]:
                sources.add(k)
            else:
                pending.extend(inbound.get(parent, ()))
        edges += [(k, i) for k in sorted(sources)]
    return edges


def propagation_figure(
    fig_id: str,
    layers: Sequence[str],
    isolated: Sequence[float | None],
    accumulated: Sequence[float | None],
    metric: str = "SQNR (dB)",
    inbound: Mapping[str, Sequence[str]] | None = None,
    x: Sequence[float] | None = None,
) -> FigureSpec:
    """Isolated and accumulated error along the layers in topological order; with ``inbound`` (each
    layer's input layers) the accumulated line follows the model's edges (:func:`graph_edges`). ``x``:
    each layer's number in the table (0, 1, 2, ... when None)."""
    x = [float(v) for v in x] if x is not None else [float(i) for i in range(len(layers))]
    iso, iso_gaps = _finite_or_nan(isolated)
    acc, acc_gaps = _finite_or_nan(accumulated)
    acc_series = Series("accumulated", x, acc, style="line", color=RED)
    if inbound is not None:
        edges = graph_edges(layers, inbound, [math.isfinite(v) for v in acc])
        ends = [k for edge in edges for k in edge]
        acc_series = Series("accumulated", [x[k] for k in ends], [acc[k] for k in ends], style="segments",
                            color=RED)
    caption = (
        f"{metric} of every layer in topological order (x = the layer's number in the table below). "
        "Isolated: the layer alone, fed the quantized float reference input. Accumulated: the whole int8 "
        "pipeline from the model input up to that layer."
    )
    if inbound is not None:
        caption += " The accumulated line follows the model's edges, from each layer to the layers that read it."
    if iso_gaps or acc_gaps:
        caption += (" Layers without a finite value (no error: SQNR = ∞, or no int8 tensor of their own) have no "
                    "point; the accumulated line joins the layers on either side.")
    return FigureSpec(
        id=fig_id,
        title="Error propagation",
        x_label="layer (topological order)",
        y_label=metric,
        series=[
            Series("isolated", x, iso, style="points", color=BLUE),
            acc_series,
        ],
        caption=caption,
        width=1120,
        height=360,
        integer_x=True,
    )
