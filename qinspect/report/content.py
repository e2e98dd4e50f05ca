"""What a report holds, as plain data: the model, its layers, their numbers and the figures to draw.

A :class:`Report` is built by :mod:`qinspect.report.collect` from the emulator's and the analysis'
results and written by :mod:`qinspect.report.writer` as HTML, JSON and CSV. Nothing here computes a
metric: every number is copied from the analysis objects that computed it, so the three exports and
the GUI show the same values. Figures are *specifications* (:class:`FigureSpec`): data and labels,
drawn to PNG by a renderer the caller passes in (the GUI's :mod:`qinspect.gui.figures`), because the
report package does not import Qt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# One error view's numbers, in the order tables show them. Keys follow ErrorStats.to_dict().
METRIC_KEYS = ("sqnr_db", "mse", "cosine", "max_abs", "rmse_over_scale")
METRIC_TITLES = {
    "sqnr_db": "SQNR (dB)",
    "mse": "MSE",
    "cosine": "cosine",
    "max_abs": "max |error|",
    "rmse_over_scale": "RMSE / scale",
}
# The quantized tensors of a layer, in the order a reader expects them.
POSITION_KEYS = ("input", "weights", "bias", "output")


@dataclass
class Series:
    """One drawn data set of a figure.

    ``style``: ``"step"`` (a histogram: ``x`` are the ``len(y) + 1`` bin edges), ``"line"``,
    ``"points"``, ``"segments"`` (points 0-1, 2-3, ... joined in pairs, each point marked), or
    ``"range"`` (one vertical bar per ``x`` from ``y`` to ``y2``).
    """

    label: str
    x: list[float]
    y: list[float]
    style: str = "line"
    color: str = "#1f5fa8"
    y2: list[float] | None = None


@dataclass
class Marker:
    """A labelled straight line across a figure: ``axis="x"`` is vertical at ``value``."""

    value: float
    label: str
    axis: str = "x"
    color: str = "#c0392b"
    dashed: bool = False


@dataclass
class FigureSpec:
    """A figure as data; ``id`` is unique in a report and names its PNG file."""

    id: str
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    log_y: bool = False
    caption: str = ""
    width: int = 560
    height: int = 280
    integer_x: bool = False  # x counts things (layers): ticks at whole numbers only


@dataclass
class LayerSection:
    """Everything a report says about one layer. ``None`` means "not available", never zero."""

    name: str
    class_name: str
    placement: str  # "DPU", "CPU", or "DPU+CPU" for a layer split between them (a Dense(softmax))
    placement_note: str = ""
    index: int | None = None  # position in the model's topological order of leaf layers
    # "input" is a list (one position per input tensor); the others an int or None.
    positions: dict[str, Any] = field(default_factory=dict)
    positions_source: str = ""
    code_min: int = -128  # the output's lowest int8 code (-127 on a DPUCADF8H target)
    # The emulator node of the layer's built-in activation (Conv2D(..., activation="relu")) fused into it:
    # "input"/"weights"/"bias" are then the conv's positions and "output" the activation's. "" when none.
    fused_activation: str = ""
    isolated: dict[str, float | None] | None = None
    accumulated: dict[str, float | None] | None = None
    saturation_low: float | None = None
    saturation_high: float | None = None
    codes_used: float | None = None
    activation: dict[str, Any] | None = None  # float range, clip thresholds, histogram
    weights: dict[str, Any] | None = None  # range, position, histogram, per-channel ranges
    error_histogram: dict[str, Any] | None = None
    rewrites: list[str] = field(default_factory=list)
    adjustments: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    # keep_float_gain_db, only_quantized_sqnr_db, only_noise_share (qinspect.analysis.sensitivity)
    sensitivity: dict[str, Any] | None = None
    # a layer the quantizer split (a conv and its fused ReLU, a dense and its CPU softmax): the other steps'
    # figures, each labelled with its step ('c1 (conv)')
    sensitivity_steps: list[dict[str, Any]] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The HTML id of this layer's section (stable, derived from the name only)."""
        return layer_anchor(self.name)


@dataclass
class Report:
    """A model report (all layers) or a layer report (``selected_layer`` set, one section)."""

    model_name: str
    source: str
    source_format: str
    samples: int | None
    positions_source: str
    layers: list[LayerSection]
    how: dict[str, str] = field(default_factory=dict)
    # None: the diagnosis was not run (the report says so); []: it ran and found nothing.
    findings: list[dict[str, Any]] | None = None
    findings_missing: str = ""  # why there is no diagnosis, when findings is None
    # a layer report: the model's findings at other layers (its own are ``findings``)
    elsewhere: list[dict[str, Any]] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)  # model-level figures
    selected_layer: str | None = None
    eval_source: str | None = None
    coverage: dict[str, float | None] | None = None  # layer -> fraction of eval values outside range
    settings: dict[str, Any] = field(default_factory=dict)  # batch size, CLE, target range, ...
    # False when the weights are a quantized.h5's: Vitis made the rewrites, which are not re-derived, so
    # the layers list none
    rewrites_listed: bool = True
    summary: dict[str, Any] = field(default_factory=dict)  # model-level figures (output SQNR, ...)
    warnings: list[str] = field(default_factory=list)  # what could not be computed, and why
    notes: list[str] = field(default_factory=list)  # how parts were measured (from the diagnosis, ...)
    # The first page: the model output block (sqnr_db, top1_agreement, accuracy, samples, measured_on),
    # the noise budget's explained share, and measured ways to quantize (AdviceRow dicts) and their source.
    output: dict[str, Any] | None = None
    explained: float | None = None
    advice: list[dict[str, Any]] = field(default_factory=list)
    advice_source: str = ""
    generated: str = ""  # ISO 8601 UTC time the report was made
    qinspect_version: str = ""
    # every sample a kept-subset capture was fed (positions, ranges, the diagnosis); ``samples``: the kept ones
    samples_total: int | None = None

    @property
    def scope(self) -> str:
        """``"layer"`` for a single-layer report, else ``"model"``."""
        return "layer" if self.selected_layer else "model"

    def all_figures(self) -> list[FigureSpec]:
        """Model figures then each layer's, in document order."""
        figs = list(self.figures)
        for layer in self.layers:
            figs.extend(layer.figures)
        return figs


def layer_anchor(name: str) -> str:
    """An HTML id for a layer name, one to one: characters outside ``[0-9A-Za-z_.]`` become ``-hex-``.

    ``block/conv`` gives ``layer-block-2f-conv``; distinct names always give distinct ids.
    """
    return "layer-" + re.sub(r"[^0-9A-Za-z_.]", lambda m: f"-{ord(m.group()):x}-", name)
