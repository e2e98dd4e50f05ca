"""The selected layer: float activations against the int8 range, weights per channel, error, and what-if.

Selecting a layer hides the previous layer's data at once (it never shows the previous layer's numbers
under the new name), then a worker reads the layer's activations: a quick first pass over a few
samples draws the first plots, and the full pass replaces them. Moving the position or picking a
calibration method re-quantizes the loaded values in the worker ("what-if") and updates the clip
lines, saturation, SQNR and the error plots together.

Drawing is kept inside one frame per event-loop turn: plot items are made once and updated in place,
every plot is drawn in its own turn (:class:`~qinspect.gui.draw_steps.StepDrawer`), only while the
tab is visible, and every array a plot draws is capped in the worker at what the plot can show.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QGraphicsItem,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from qinspect.gui import compute_process
from qinspect.gui import layer_stats as ls
from qinspect.gui.background_hold import BackgroundHold
from qinspect.gui.draw_steps import StepDrawer
from qinspect.gui.elided_label import CutRichLabel, ElidedLabel
from qinspect.gui.stable_pages import Blank, StablePages, opaque
from qinspect.gui.worker import Cancelled, CancelToken, Channel

USED = "Position of the int8 model"
MANUAL = "Manual position (what-if)"  # shown once the spin box leaves every method's position
CLIP_PEN = pg.mkPen("#d62728", width=2)
METHOD_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
# Opaque fills (the colours a translucent fill would give on the white background): rasterising a
# translucent fill in software blends every pixel it covers, several times the cost of a plain fill.
BAR_BRUSH = pg.mkBrush(132, 158, 198)
BITS_BRUSH = pg.mkBrush(231, 128, 129)


def load_layer(token: CancelToken, document, name: str, position: int | None, source: str,
               weight_positions: dict[str, int], weight_source: str,
               raw_weights: dict | None = None, rid: int = 0,
               scale: np.ndarray | None = None, code_min: int = -128) -> tuple[ls.LayerData, ls.WhatIf | None]:
    """Worker: the layer's activations, then its weights' figures, both computed in the helper process
    (numpy in this process would hold the GIL the UI thread paints with); a quick partial first.
    ``scale``: the per-channel factor to the int8 model's equalized tensor (the values are shown as it);
    ``code_min``: the tensor's lowest code in the int8 model (-127 on a DPUCADF8H target)."""
    layer = document.graph[name]
    raw = raw_weights if raw_weights is not None else document.weights(name)  # an h5py read: here
    token.check()
    try:
        if not document.has_activations or name not in document.activation_layers:
            weights = compute_process.call(compute_process.weight_pass, rid, layer.class_name, raw,
                                           weight_positions, weight_source)
            data = ls.layer_data(name, layer.class_name, np.zeros(0, np.float32), 0, document.n_samples,
                                 position, source, weights, True)
            return data, None
        path = document.capture.path
        if compute_process.call(compute_process.needs_first_pass, path, name):
            # The first plots come before the weights' figures (those arrive with the full pass).
            data, whatif = compute_process.call(compute_process.load_pass, rid, path, name, layer.class_name,
                                                position, source, True, scale, code_min)
            token.partial((data, whatif))
        token.check()
        weights = compute_process.call(compute_process.weight_pass, rid, layer.class_name, raw, weight_positions,
                                       weight_source)
        token.check()
        data, whatif = compute_process.call(compute_process.load_pass, rid, path, name, layer.class_name,
                                            position, source, False, scale, code_min)
    except compute_process.Superseded:
        raise Cancelled() from None
    data.weights = weights
    return data, whatif


def what_if_job(token: CancelToken, data: ls.LayerData, position: int, method: str, rid: int = 0) -> ls.WhatIf:
    """Worker: re-quantize the loaded values at ``position`` (in the helper process)."""
    token.check()
    try:
        return compute_process.call(compute_process.what_if, rid, data, position, method)
    except compute_process.Superseded:
        raise Cancelled() from None


class LayerPanel(StablePages):
    """Per-layer plots and the what-if control.

    Its content sits on one page of a :class:`StablePages`: new text in a label, or the weight plots
    giving way to a message, re-lays out that page only. Reaching the tab widget, every such request
    repainted the whole tab (QTabWidget repaints itself on each layout request), on every selection.
    """

    first_plot = Signal(str)  # a layer's first plot was drawn (benchmark hook)
    shown = Signal(str)  # a layer's complete data is shown

    def __init__(self, window=None) -> None:
        super().__init__(window)
        self.window_ = window
        self.session = None
        self.current: str | None = None
        self.data: ls.LayerData | None = None
        self.whatif: ls.WhatIf | None = None
        self._override: int | None = None
        self._method_for_override = ""
        self.load_channel = Channel("layer", self)
        self.load_channel.partial.connect(lambda _rid, res: self._on_loaded(res, partial=True))
        self.load_channel.finished.connect(lambda _rid, res: self._on_loaded(res, partial=False))
        self.load_channel.failed.connect(self._on_failed)
        self.whatif_channel = Channel("what-if", self)
        self.whatif_channel.finished.connect(lambda _rid, res: self._on_whatif(res))
        self.whatif_channel.failed.connect(self._on_failed)
        self._rid = 0
        self._shown_due: str | None = None  # the layer whose full data is drawing (shown() once drawn)
        self._weights_drawn = False
        compute_process.start()
        # From a selection until its plots are drawn, the window's background jobs wait (see
        # background_hold: beside them, drawing is 2 to 4 times slower).
        self.background = BackgroundHold(self)
        self.drawer = StepDrawer(self)
        self.drawer.finished.connect(self._on_drawn)
        self._build()
        self._clear()

    # --- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget()
        body.setObjectName("layerPanelBody")
        self.addWidget(body)
        outer = QVBoxLayout(body)
        outer.setContentsMargins(6, 6, 6, 6)
        # Header text never re-lays out the panel (see ElidedLabel): the two share the row 3:2.
        self.title = ElidedLabel("")
        self.title.setObjectName("layerTitle")
        self.title.setStyleSheet("font-size: 13pt; font-weight: 600;")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.state = ElidedLabel("")
        self.state.setObjectName("layerState")
        self.state.setStyleSheet("color: #666;")
        # the title has the row to itself (a long layer name and shape were cut off beside the statistics)
        outer.addWidget(self.title)
        outer.addWidget(self.state)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Position p (scale 2^-p):"))
        self.position = QSpinBox()
        self.position.setObjectName("positionSpin")
        self.position.setRange(-32, 64)
        self.position.setKeyboardTracking(False)
        self.position.setToolTip("Int8 codes represent [-128, 127] × 2^-p ([-127, 127] on a DPUCADF8H target). "
                                 "Raise p for finer steps and a "
                                 "narrower range; lower it for a wider range.")
        self.position.valueChanged.connect(self._on_position_changed)
        controls.addWidget(self.position)
        controls.addWidget(QLabel("Method:"))
        self.method = QComboBox()
        self.method.setObjectName("methodCombo")
        self.method.addItem(USED)
        for label in ls.METHODS:
            self.method.addItem(label)
        self.method.addItem(MANUAL)
        self.method.setToolTip("Where each calibration method puts the range. Percentile and KL are what-ifs: "
                               "vai_q pof2s uses min-MSE (activations) and non-overflow (inputs).")
        self.method.currentTextChanged.connect(self._on_method_changed)
        controls.addWidget(self.method)
        self.reset = QPushButton("Reset")
        self.reset.setToolTip("Back to the position the int8 model uses")
        self.reset.clicked.connect(lambda: self.method.setCurrentText(USED) if self.method.currentText() != USED
                                   else self._apply_method(USED))
        controls.addWidget(self.reset)
        self.log_counts = QCheckBox("Log counts")
        self.log_counts.setChecked(True)
        self.log_counts.toggled.connect(lambda _=False: self._redraw_histograms())
        controls.addWidget(self.log_counts)
        controls.addStretch(1)
        outer.addLayout(controls)

        figures = QGridLayout()
        figures.setHorizontalSpacing(14)
        # New text must not re-layout the panel (a relayout resizes and repaints all six plots): the lines
        # take the width they are given, and a line cut at it is whole in its tooltip
        self.clip_label = CutRichLabel()
        self.clip_label.setObjectName("clipLabel")
        self.sqnr_label = CutRichLabel()
        self.sqnr_label.setObjectName("sqnrLabel")
        self.range_label = CutRichLabel()
        self.range_label.setObjectName("rangeLabel")
        self.emulated_label = CutRichLabel()
        self.emulated_label.setObjectName("emulatedLabel")
        for i, label in enumerate((self.range_label, self.clip_label, self.sqnr_label, self.emulated_label)):
            figures.addWidget(label, i, 0)
        outer.addLayout(figures)

        grid = QGridLayout()
        grid.setSpacing(4)
        self.act_plot = self._plot("Float activations vs the int8 range", "value", "count")
        self.err_plot = self._plot("Quantization error", "error (LSB)", "count")
        self.scatter_plot = self._plot("Float vs dequantized", "float", "dequantized int8")
        self.w_plot = self._plot("Weights", "value", "count")
        self.ch_plot = self._plot("Channel ranges", "output channel", "value")
        self.bits_plot = self._plot("Bits wasted per channel", "output channel", "bits")
        grid.addWidget(self.act_plot, 0, 0, 1, 2)
        grid.addWidget(self.err_plot, 0, 2)
        grid.addWidget(self.scatter_plot, 1, 0)
        grid.addWidget(self._weights_area(), 1, 1, 2, 2)
        self.notes = QTextBrowser()
        self.notes.setObjectName("layerNotes")
        self.notes.setOpenExternalLinks(False)
        self.notes.setMaximumHeight(220)
        grid.addWidget(self.notes, 2, 0)
        for r in range(3):
            grid.setRowStretch(r, 1)
        for c in range(3):
            grid.setColumnStretch(c, 1)
        outer.addLayout(grid, 1)
        for plot in (self.act_plot, self.err_plot, self.w_plot):
            plot.setLabel("left", "log10(count + 1)")
        self._make_items()

    def _weights_area(self) -> StablePages:
        """The three weight plots, or in their place one message for a layer without a kernel.

        Switching between them, or new text in the message, stops at this widget: nothing else in the
        window is laid out or repainted again (see StablePages)."""
        self.weights_stack = StablePages(cover=True)
        self.weights_stack.setObjectName("weightsStack")
        page = QWidget()
        box = QGridLayout(page)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(4)
        box.addWidget(self.w_plot, 0, 0, 2, 1)
        box.addWidget(self.ch_plot, 0, 1)
        box.addWidget(self.bits_plot, 1, 1)
        self.weights_message = QLabel("")
        self.weights_message.setObjectName("weightsMessage")
        self.weights_message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.weights_message.setWordWrap(True)
        # Colours from the palette, not a style sheet: a style-sheet background is not opaque to Qt, so
        # the plots it covers would still be painted under it.
        opaque(self.weights_message)
        palette = self.weights_message.palette()
        palette.setColor(QPalette.ColorRole.WindowText, QColor("#666"))
        self.weights_message.setPalette(palette)
        self.weights_message.setFrameShape(QFrame.Shape.Box)
        self.weights_stack.addWidget(page)
        self.weights_stack.addWidget(self.weights_message)
        self.weights_page = page
        # The channel plots wait under blanks of their own when the page is uncovered (with the weight
        # histogram, in its step), and are shown in theirs: one plot painted per turn, never three.
        self.ch_blank = Blank(self.ch_plot)
        self.bits_blank = Blank(self.bits_plot)
        return self.weights_stack

    def _plot(self, title: str, x: str, y: str) -> pg.PlotWidget:
        w = pg.PlotWidget()
        w.setTitle(title, size="9pt")
        w.setLabel("bottom", x)
        w.setLabel("left", y)
        # No grid: grid lines are drawn by the axes across the whole plot with alpha blending, which
        # costs more paint time than everything else in a histogram; the clip lines carry the meaning.
        w.setMenuEnabled(True)
        w.setMinimumHeight(150)
        for side in ("top", "right"):
            # Hidden, but linked to the view: with the prefix on, each new range set their label anew.
            w.getAxis(side).enableAutoSIPrefix(False)
        for side in ("bottom", "left"):
            axis = w.getAxis(side)
            # Values are read in their own units (LSB, codes, bits): no "(x0.001)" rescaling.
            axis.enableAutoSIPrefix(False)
            # Replaying an axis's text picture is most of a plot's paint time: keep it as a pixmap
            # until its ticks change.
            axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # The tick labels' width only grows: a narrower label on the next layer would shrink the axis,
        # re-lay out the plot and paint it a second time, whole.
        w.getAxis("left").setStyle(autoReduceTextSpace=False)
        return w

    def _next_rid(self, slot: int = compute_process.LOAD) -> int:
        """A new id for the helper process; publishing it stops every older request of that kind."""
        self._rid += 1
        compute_process.set_latest(self._rid, slot)
        return self._rid

    # --- public ------------------------------------------------------------------------------------
    def set_session(self, session) -> None:
        """A new document: forget the current layer."""
        self.session = session
        self.current = None
        self.load_channel.cancel()
        self.whatif_channel.cancel()
        self._clear()
        self.background.release()

    def show_layer(self, name: str, keep_what_if: bool = False) -> None:
        """Show ``name``: hide the previous layer's data at once, then load in the background (the
        latest selection wins).

        ``keep_what_if``: keep a position the user chose (a reload of the same layer, say when the
        emulation's positions arrive, must not undo the what-if)."""
        if self.session is None:
            return
        self.preview_layer(name)
        if not keep_what_if:
            self._override = None
        doc = self.session.document
        pos, source = self.session.activation_position(name)
        wpos, wsource = self.session.weight_positions(name)
        weights, self._weights_note = self.session.layer_weights(name, read_file=False)
        scale = self.session.activation_scale(name) if pos is not None else None
        rid = self._next_rid()
        self.load_channel.submit(load_layer, doc, name, pos, source, wpos, wsource, weights, rid, scale,
                                 self.session.activation_code_min(name))

    def preview_layer(self, name: str) -> None:
        """Name ``name`` as the layer shown and hide everything drawn for another layer, without loading
        it (a held arrow key passes over layers: only the one it stops at is loaded and drawn)."""
        if self.session is None:
            return
        if name != self.current:
            self.current = name
            layer = self.session.document.graph[name]
            from qinspect.gui.graph_model import format_shape

            self.title.setText(f"{name}   ·   {layer.class_name}   ·   {format_shape(layer.output_shape)}")
        self.load_channel.cancel()
        self.whatif_channel.cancel()
        self._clear()
        self.state.setText("Loading…")
        if self.isVisible():  # hidden, nothing is drawn until the tab is shown (showEvent)
            self.background.hold()

    def refresh(self) -> None:
        """Positions changed (emulation finished, Vitis import): reload the current layer."""
        if self.current is not None:
            self.show_layer(self.current, keep_what_if=True)

    def refresh_emulated(self) -> None:
        """Emulator results arrived: update the emulated figures of the current layer."""
        self._show_emulated()

    def shutdown(self) -> None:
        """Cancel the panel's background work."""
        self.load_channel.cancel()
        self.whatif_channel.cancel()
        self.drawer.cancel()
        self.background.release()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Draw what waited while another tab was shown."""
        super().showEvent(event)
        if self.drawer.pending or (self.data is None and self.current is not None):
            self.background.hold()
        self.drawer.resume()

    # --- loading -----------------------------------------------------------------------------------
    def _clear(self) -> None:
        """Forget the data and hide what was drawn for it (hiding items keeps the axes as they are:
        no relayout, no axis text to redraw, so it costs far less than drawing empty plots)."""
        self.data = None
        self.whatif = None
        self._shown_due = None
        self._weights_drawn = False
        self.drawer.cancel()
        # The weight plots are covered first (covered, they are not painted): each step shows its
        # plot once it holds this layer's data (the histogram's lifts the message, leaving the channel
        # plots under their blanks).
        self._show_weights_message("")
        self.ch_blank.cover()
        self.bits_blank.cover()
        _hide(*self._weight_items())()
        # The other plots are emptied one per turn, as they are drawn: emptied all at once, their three
        # paints made the selection's own turn the longest of a click. The layer's data, when it comes
        # before, takes the place of these steps (same names) and draws over them.
        # Hidden, the panel paints nothing: emptied at once, it never shows the old plots when shown.
        # The histogram and its lines go in one step (one paint of an empty plot; hidden one after the
        # other, the first paint still drew every line and label).
        lines = (*self.clip_lines, *(line for pair in self.method_lines for line in pair))
        for name, step, plot in (("act", _hide(self.act_curve, *lines), self.act_plot),
                                 ("err", _hide(self.err_curve), self.err_plot),
                                 ("scatter", _hide(self.scatter, self.diagonal, *self.scatter_clip),
                                  self.scatter_plot)):
            if self.isVisible():
                self.drawer.add(name, step, plot)
            else:
                step()
        for label in (self.clip_label, self.sqnr_label, self.range_label, self.emulated_label):
            if label.text():
                label.setText("")
        if self.notes.toPlainText():
            self.notes.setHtml("")
        if self.current is None:
            self.title.setText("Select a layer in the tree")
        self.state.setText("")

    def _on_failed(self, _rid: int, exc: BaseException, tb: str) -> None:
        self.background.release()
        self.state.setText("Failed (see the message)")
        if self.window_ is not None:
            self.window_.errors.report(exc, tb, f"Layer {self.current}")

    def _on_loaded(self, result: tuple[ls.LayerData, ls.WhatIf | None], partial: bool) -> None:
        data, whatif = result
        if data.name != self.current:  # belt and braces: the channel already drops stale requests
            return
        first = self.data is None
        self.data = data
        if self._override is not None and self._override != data.position:
            whatif = None
            self.whatif_channel.submit(what_if_job, data, self._override, self._method_for_override,
                                       self._next_rid(compute_process.WHAT_IF))
        self.whatif = whatif
        if data.has_activations:
            share = self._share(data)
            self.state.setText(f"First pass: {share}…" if partial else f"Statistics over {share}")
        else:
            self.state.setText("No activations captured for this layer")
        self._sync_position_spin()
        self._set_whatif_labels()
        if first:
            self._show_emulated()
        # One plot per step, the most telling first; the weights (the same in both passes) once, the
        # error plots with the full pass.
        self.drawer.add("act", self._draw_activation_histogram, self.act_plot)
        self.drawer.add("act_lines", self._draw_activation_lines, self.act_plot)
        if whatif is not None and not partial:
            self.drawer.add("err", self._draw_error_histogram, self.err_plot)
            self.drawer.add("scatter", self._draw_scatter, self.scatter_plot)
        if not self._weights_drawn and not partial:  # the weights' figures come with the full pass
            self._weights_drawn = True
            self.drawer.add("weights", self._draw_weight_histogram, self.w_plot)
            self.drawer.add("channels", self._draw_channel_ranges, self.ch_plot)
            self.drawer.add("bits", self._draw_bits_wasted, self.bits_plot)
        self.drawer.add("notes", self._show_notes, self.notes)
        if not partial:
            self._shown_due = data.name

    def _on_drawn(self) -> None:
        """Every queued step is drawn: the full pass of the current layer is on screen."""
        data = self.data
        if self._shown_due is not None and data is not None and data.name == self._shown_due:
            self._shown_due = None
            self.shown.emit(data.name)
        if data is not None and data.complete and not self.whatif_channel.busy:
            self.background.release()  # what the user asked for is on screen

    def _sync_position_spin(self) -> None:
        pos = self._override if self._override is not None else (self.data.position if self.data else None)
        self.position.blockSignals(True)
        self.position.setEnabled(pos is not None)
        if pos is not None:
            self.position.setValue(int(pos))
        self.position.blockSignals(False)
        if self._override is None and self.method.currentText() != USED:  # a new layer shows its own position
            self._name_method(USED)

    def _name_method(self, text: str) -> None:
        """Show ``text`` in the method box without applying it (the position shown is already set)."""
        self.method.blockSignals(True)
        self.method.setCurrentText(text)
        self.method.blockSignals(False)

    # --- what-if -----------------------------------------------------------------------------------
    def set_position(self, position: int, method: str = "manual") -> None:
        """What-if: quantize the current layer at ``position``."""
        self._override = int(position)
        self._method_for_override = method
        if self.data is not None and self.data.has_activations:
            self.state.setText(f"Quantizing at p = {position}…")
            if self.isVisible():
                self.background.hold()
            self.whatif_channel.submit(what_if_job, self.data, int(position), method,
                                       self._next_rid(compute_process.WHAT_IF))

    def _on_position_changed(self, value: int) -> None:
        current = self.method.currentText()
        pos = None
        if self.data is not None:
            pos = self.data.position if current == USED else self.data.method_positions.get(current)
        if pos != value and current != MANUAL:  # the box no longer names the position shown
            self._name_method(MANUAL)
        self.set_position(value, "manual")

    def _on_method_changed(self, method: str) -> None:
        self._apply_method(method)

    def _apply_method(self, method: str) -> None:
        if self.data is None:
            return
        if method == USED:
            pos = self.data.position
        else:
            pos = self.data.method_positions.get(method)
        if pos is None:
            return
        self.position.blockSignals(True)
        self.position.setValue(int(pos))
        self.position.blockSignals(False)
        self.set_position(int(pos), method)

    def _share(self, data: ls.LayerData) -> str:
        """'N values from U of K samples', and how many were fed when the capture keeps only K of them."""
        tally = data.tally
        if tally is not None and tally.n > data.values.size:
            # range and clipping count every value read; histograms, SQNR and codes use a draw of them
            text = (f"{tally.n:,} values from {data.n_samples_used} of {data.n_samples_total} samples (plots, "
                    f"SQNR and codes on a random draw of {data.values.size:,})")
        else:
            text = f"{data.values.size:,} values from {data.n_samples_used} of {data.n_samples_total} samples"
        capture = self.session.document.capture if self.session is not None else None
        fed = int(getattr(capture, "n_total_samples", 0) or 0)
        if fed > data.n_samples_total:
            text += f" kept with full tensors, of {fed} fed"
        return text

    def _on_whatif(self, whatif: ls.WhatIf) -> None:
        if self.data is None or whatif.layer != self.current:
            return
        self.whatif = whatif
        self.state.setText(f"Statistics over {self._share(self.data)}")
        self._set_whatif_labels()
        self.drawer.add("clip", self._draw_clip_lines, self.act_plot)
        self.drawer.add("err", self._draw_error_histogram, self.err_plot)
        self.drawer.add("scatter", self._draw_scatter, self.scatter_plot)

    # --- drawing (each step reads the current data when it runs: never a superseded layer's) ---------
    def _counts(self, counts: np.ndarray) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        return np.log10(counts + 1.0) if self.log_counts.isChecked() else counts

    def _redraw_histograms(self) -> None:
        label = "log10(count + 1)" if self.log_counts.isChecked() else "count"
        for plot in (self.act_plot, self.err_plot, self.w_plot):
            plot.setLabel("left", label)
        self.drawer.add("act", self._draw_activation_histogram, self.act_plot)
        self.drawer.add("err", self._draw_error_histogram, self.err_plot)
        self.drawer.add("weights", self._draw_weight_histogram, self.w_plot)

    def _make_items(self) -> None:
        """Create every plot item once; drawing a layer only updates their data (creating pyqtgraph
        items costs milliseconds each, which a fast click-through would feel)."""
        vline = dict(angle=90, movable=False)
        dash = Qt.PenStyle.DashLine
        self.act_curve = pg.PlotDataItem(stepMode="center", fillLevel=0, brush=BAR_BRUSH, pen=pg.mkPen("#34598f"))
        self.act_plot.addItem(self.act_curve)
        # Where the other calibration methods put the range: one labelled dashed pair per distinct position.
        self.method_lines: list[tuple[pg.InfiniteLine, pg.InfiniteLine]] = []
        for i, colour in enumerate(METHOD_COLOURS):
            pen = pg.mkPen(colour, width=1, style=dash)
            # The label sits on the side of its line nearer the middle of the view (right of a line in
            # the left part), so a line near an edge never pushes its label out of sight.
            opts = {"position": 0.80 - 0.14 * i, "color": colour, "fill": (255, 255, 255, 210),
                    "anchors": [(0, 0.5), (1, 0.5)]}
            hi = _labelled_line(pg.InfiniteLine(pen=pen, **vline), opts)
            lo = pg.InfiniteLine(pen=pen, **vline)
            for line in (hi, lo):
                self.act_plot.addItem(line)
            self.method_lines.append((lo, hi))
        label = {"position": 0.95, "color": "#d62728", "fill": (255, 255, 255, 220)}
        self.clip_lines = [_labelled_line(pg.InfiniteLine(pen=CLIP_PEN, **vline), label) for _ in range(2)]
        for line in self.clip_lines:
            self.act_plot.addItem(line)
        # the labels are stacked a text line apart in pixels, whatever the plot's height (fixed fractions of
        # it overlapped in a small window); again when the plot is resized
        self.act_plot.getPlotItem().getViewBox().sigResized.connect(self._stack_line_labels)
        self.err_curve = pg.PlotDataItem(stepMode="center", fillLevel=0, brush=BAR_BRUSH, pen=pg.mkPen("#34598f"))
        self.err_plot.addItem(self.err_curve)
        for x in (-0.5, 0.5):
            self.err_plot.addItem(pg.InfiniteLine(pos=x, pen=pg.mkPen("#888", style=Qt.PenStyle.DotLine), **vline))
        # One ScatterPlotItem with a shared brush and pixel-mode symbols: the cheapest way to draw points.
        self.scatter = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush(52, 89, 143, 140), pxMode=True,
                                          useCache=True, antialias=False)
        self.diagonal = pg.PlotDataItem(pen=pg.mkPen("#999", style=dash))
        self.scatter_clip = [pg.InfiniteLine(angle=0, pen=CLIP_PEN, movable=False) for _ in range(2)]
        for item in (self.scatter, self.diagonal, *self.scatter_clip):
            self.scatter_plot.addItem(item)
        # the points over the clip lines: the saturated ones lie flat on them, and were hidden under them
        self.scatter.setZValue(10)
        self.w_curve = pg.PlotDataItem(stepMode="center", fillLevel=0, brush=BAR_BRUSH, pen=pg.mkPen("#34598f"))
        self.w_clip = [pg.InfiniteLine(pen=CLIP_PEN, **vline) for _ in range(2)]
        for item in (self.w_curve, *self.w_clip):
            self.w_plot.addItem(item)
        self.ch_bars = pg.BarGraphItem(x=[], y0=[], height=[], width=0.8, brush=BAR_BRUSH, pen=pg.mkPen(None))
        self.ch_lines = [pg.InfiniteLine(angle=0, pen=pg.mkPen("#ff7f0e", width=2), movable=False) for _ in range(2)]
        for item in (self.ch_bars, *self.ch_lines):
            self.ch_plot.addItem(item)
        self.bits_bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=BITS_BRUSH, pen=pg.mkPen(None))
        self.bits_plot.addItem(self.bits_bars)
        self.bits_plot.setToolTip("log2(per-tensor max|w| / channel max|w|): the bits of the int8 code a "
                                  "channel never uses because one position serves the whole tensor.")

    @staticmethod
    def _set_view(plot: pg.PlotWidget, x: tuple[float, float] | None, y: tuple[float, float]) -> None:
        """Set the view range from the data's known extent. pyqtgraph's autorange runs inside the paint
        and changes the range there, which paints the plot a second time: ranges are set here instead."""
        ranges = {"yRange": _padded(*y)}
        if x is not None:
            ranges["xRange"] = _padded(*x)
        plot.getPlotItem().getViewBox().setRange(**ranges, padding=0)

    def _draw_activation_histogram(self) -> None:
        """The histogram and the view's ranges (the lines follow in a step of their own)."""
        data = self.data
        if data is None or not data.has_activations:
            self.act_curve.setVisible(False)
            self._draw_activation_lines()
            return
        h = data.float_hist
        self.act_curve.setData(h.edges, self._counts(h.counts))
        self.act_curve.setVisible(True)
        self._fit_activation_x((0.0, float(self._counts(h.counts).max(initial=0.0))))
        self.first_plot.emit(data.name)

    def _draw_activation_lines(self) -> None:
        """Where each calibration method and the position in use put the range: labelled lines.

        A step apart from the histogram: moving and relabelling ten lines (their labels are text items
        laid out again) costs as much as the histogram itself, and together they made the longest turn
        of a click."""
        data = self.data
        if data is None or not data.has_activations:
            for pair in self.method_lines:
                for line in pair:
                    line.setVisible(False)
            self._draw_clip_lines()
            return
        by_pos: dict[int, list[str]] = {}
        for label, pos in data.method_positions.items():
            by_pos.setdefault(pos, []).append(label.split(" (")[0])
        items = sorted(by_pos.items())
        for i, (lo_line, hi_line) in enumerate(self.method_lines):
            if i < len(items):
                pos, labels = items[i]
                hi_line.setValue(127 * 2.0**-pos)
                lo_line.setValue(data.code_min * 2.0**-pos)
                hi_line.setVisible(True)
                lo_line.setVisible(data.vmin < 0)
                _set_label(hi_line, f"{', '.join(labels)}: p={pos}")
            else:
                hi_line.setVisible(False)
                lo_line.setVisible(False)
        self._draw_clip_lines()

    def _stack_line_labels(self, *_args) -> None:
        """Put the clip labels one text line below the plot's top and each shown method label a line below
        the one before, in pixels; a label with no room left above the axis is hidden (the notes below the
        plots give every method's position)."""
        height = self.act_plot.getPlotItem().getViewBox().height()
        if height <= 0:
            return
        rows = [list(self.clip_lines)] + [[hi] for _lo, hi in self.method_lines if hi.isVisible() and hi.label.format]
        # a label's box is its text's height (its own font's): one row each, a pixel apart
        step = max(line.label.boundingRect().height() for row in rows for line in row) + 1
        for k, row in enumerate(rows):
            centre = step / 2 + 1 + step * k
            fits = centre + step / 2 <= height
            position = 1.0 - centre / height
            for line in row:
                shown = line.label.isVisible()
                if shown != fits:
                    line.label.setVisible(fits)
                if fits and abs(line.label.orthoPos - position) > 1e-3:
                    line.label.setPosition(position)  # places it
                elif fits and not shown:
                    line.label.updatePosition()  # it did not follow the view while hidden

    def _fit_activation_x(self, y: tuple[float, float] | None = None) -> None:
        """Show the data and the clip thresholds of the position in use (a wasted range is visible); with
        ``y``, the counts' extent too (one new range, not two: each asks the axes for new ticks)."""
        data, w = self.data, self.whatif
        if data is None or not data.has_activations:
            return
        lo, hi = min(data.vmin, 0.0), max(data.vmax, 0.0)
        if w is not None:
            hi = max(hi, w.hi)
            if data.vmin < 0:
                lo = min(lo, w.lo)
        # Another method's line near the view widens it (its label was cut at the plot's edge); one far
        # beyond would squash the histogram: its label goes, and the notes below still give its position.
        span = hi - lo or 1.0
        shown = [line for pair in self.method_lines for line in pair if line.isVisible()]
        for line in shown:
            if lo - span <= line.value() <= hi + span:
                lo, hi = min(lo, line.value()), max(hi, line.value())
        pad = 0.04 * (hi - lo or 1.0)
        ranges = {"xRange": (lo - pad, hi + pad)}
        if y is not None:
            ranges["yRange"] = _padded(*y)
        self.act_plot.getPlotItem().getViewBox().setRange(**ranges, padding=0)
        for line in shown:
            if not lo - pad <= line.value() <= hi + pad:
                _set_label(line, "")
        self._stack_line_labels()

    def _draw_clip_lines(self) -> None:
        w = self.whatif
        if w is None or self.data is None or not self.data.has_activations:
            for line in self.clip_lines:
                line.setVisible(False)
            return
        for line, x in zip(self.clip_lines, (w.lo, w.hi), strict=True):
            line.setValue(x)
            # A non-negative tensor never reaches the lower threshold: do not stretch the axis for it.
            line.setVisible(not (x < 0 and self.data.vmin >= 0))
            _set_label(line, f"clip {x:.4g}")
        self._fit_activation_x()

    def _set_whatif_labels(self) -> None:
        """The position, clipping and SQNR lines under the title (text only: cheap, drawn at once)."""
        w, data = self.whatif, self.data
        if w is None or data is None:
            for label in (self.range_label, self.clip_label, self.sqnr_label):
                label.setText("")
            return
        st = w.stats
        # a tensor the int8 model does not quantize (folded into the next layer, float on the CPU) has no
        # position in use: what is shown is a what-if, and says so
        used = "what-if: the int8 model does not quantize this tensor" if data.whatif_only else "in use"
        self.range_label.setText(
            f"<b>p = {w.position}</b> ({w.method or used}): int8 range [{w.lo:.5g}, {w.hi:.5g}], "
            f"step {2.0 ** -w.position:.4g}"
        )
        self.clip_label.setText(
            f"Clipped below: <b>{ls.fmt_frac(w.clip_lo_frac)}</b> · above: <b>{ls.fmt_frac(w.clip_hi_frac)}</b> · "
            f"codes used: {st.codes_used}/{st.qmax - st.qmin + 1} · the "
            f"{(data.tally.n if data.tally else data.values.size):,} float "
            f"values read lie in [{data.vmin:.5g}, {data.vmax:.5g}]"
            + (" (equalized: see the notes)" if data.values_note else "")
        )
        alone = "This tensor quantized alone" + (" (what-if)" if data.whatif_only else "")
        self.sqnr_label.setText(
            f"{alone}: SQNR <b>{ls.fmt_db(w.sqnr_db)}</b>, MSE {st.mse:.3g}, max |error| {st.max_abs_d:.3g}"
        )

    def _draw_error_histogram(self) -> None:
        w = self.whatif
        if w is None or self.data is None:
            self.err_curve.setVisible(False)
            return
        h = w.err_hist
        self.err_curve.setData(h.edges, self._counts(h.counts))
        self.err_curve.setVisible(True)
        self._set_view(self.err_plot, (float(h.edges[0]), float(h.edges[-1])),
                       (0.0, float(self._counts(h.counts).max(initial=0.0))))

    def _draw_scatter(self) -> None:
        w = self.whatif
        if w is None or self.data is None:
            for item in (self.scatter, self.diagonal, *self.scatter_clip):
                item.setVisible(False)
            return
        self.scatter.setData(w.scatter_x, w.scatter_y)
        lo, hi = w.scatter_lo, w.scatter_hi
        self.diagonal.setData([lo, hi], [lo, hi])
        self.scatter.setVisible(True)
        self.diagonal.setVisible(True)
        for line, y in zip(self.scatter_clip, (w.lo, w.hi), strict=True):
            line.setValue(y)
            line.setVisible(lo <= y <= hi)
        self._set_view(self.scatter_plot, (lo, hi), (lo, hi))

    def _kernel(self) -> ls.WeightInfo | None:
        data = self.data
        return next((w for w in data.weights if w.channel_max is not None), None) if data is not None else None

    def _weight_items(self) -> tuple:
        return (self.w_curve, *self.w_clip, self.ch_bars, *self.ch_lines, self.bits_bars)

    def _show_weights_message(self, text: str) -> None:
        if self.weights_message.text() != text:
            self.weights_message.setText(text)
        if self.weights_stack.currentWidget() is not self.weights_message:
            self.weights_stack.setCurrentWidget(self.weights_message)

    def _draw_weight_histogram(self) -> None:
        k = self._kernel()
        if k is None:
            data = self.data
            self._show_weights_message(
                "" if data is None else f"No weight plots: this {data.class_name} layer has no kernel of its own"
                + (" (see the notes for its other weights)" if data.weights else "") + ".")
            return
        # Short titles: a pyqtgraph title wider than its plot pushes the plot out of view.
        _set_title(self.w_plot, f"Weights: {k.name}, p={k.position}")
        self.w_curve.setData(k.hist.edges, self._counts(k.hist.counts))
        clip = (-128 * 2.0**-k.position, 127 * 2.0**-k.position)
        for line, x in zip(self.w_clip, clip, strict=True):
            line.setValue(x)
        for item in (self.w_curve, *self.w_clip):
            item.setVisible(True)
        self._set_view(self.w_plot, (min(float(k.hist.edges[0]), clip[0]), max(float(k.hist.edges[-1]), clip[1])),
                       (0.0, float(self._counts(k.hist.counts).max(initial=0.0))))
        if self.weights_stack.currentWidget() is not self.weights_page:
            self.weights_stack.setCurrentWidget(self.weights_page)

    def _draw_channel_ranges(self) -> None:
        k = self._kernel()
        if k is None:
            return
        bars = k.bars
        self.ch_bars.setOpts(x=bars.x, y0=bars.lo, height=bars.hi - bars.lo, width=0.8 * bars.per_bar)
        t = k.tensor_absmax
        for line, y in zip(self.ch_lines, (-t, t), strict=True):
            line.setValue(y)
        for item in (self.ch_bars, *self.ch_lines):
            item.setVisible(True)
        grouped = f" ({bars.per_bar} channels per bar: their lowest min to highest max)" if bars.per_bar > 1 else ""
        _set_title(self.ch_plot, "Channel ranges" + (f", {bars.per_bar} per bar" if bars.per_bar > 1 else ""))
        self.ch_plot.setToolTip(f"Bars: each output channel's [min, max]{grouped}. Orange: the per-tensor "
                                f"range ±{t:.4g} that one position must cover.")
        self.ch_plot.getPlotItem().getViewBox().setRange(
            xRange=(-0.6, bars.n_channels - 0.4), padding=0,
            yRange=_padded(min(float(bars.lo.min(initial=0.0)), -t), max(float(bars.hi.max(initial=0.0)), t)))
        self.ch_blank.lift()

    def _draw_bits_wasted(self) -> None:
        k = self._kernel()
        if k is None:
            return
        bars = k.bars
        # Past 8 bits a channel has no code left: it quantizes to zero. Drawn at 8 and said.
        self.bits_bars.setOpts(x=bars.x, height=bars.wasted, width=0.8 * bars.per_bar)
        self.bits_bars.setVisible(True)
        grouped = f"Each bar: the worst of {bars.per_bar} channels. " if bars.per_bar > 1 else ""
        # no bar at all reads as a plot that failed to draw: say that no channel wastes a bit
        none = not bool(np.any(bars.wasted > 0.05))
        _set_title(self.bits_plot, "Bits wasted per channel" + (f", worst of {bars.per_bar}" if bars.per_bar > 1
                                                                 else "") + (": none" if none else ""))
        self.bits_plot.setToolTip((f"{bars.dead} channel(s) quantize to all zeros (drawn at 8 bits). "
                                   if bars.dead else "") + grouped
                                  + "log2(per-tensor max|w| / channel max|w|): the bits of the int8 code a "
                                  "channel never uses because one position serves the whole tensor.")
        self.bits_plot.getPlotItem().getViewBox().setRange(
            xRange=(-0.6, bars.n_channels - 0.4), padding=0,
            yRange=_padded(0.0, max(float(bars.wasted.max(initial=0.0)), 0.5)))
        self.bits_blank.lift()

    def _show_notes(self) -> None:
        data = self.data
        if data is None or self.session is None:
            return
        layer = self.session.document.graph[data.name]
        lines = []
        if data.position is not None:
            head = "Default what-if position" if data.whatif_only else "Position in use"
            lines.append(f"<b>{head}:</b> p = {data.position}, from {data.position_source}.")
        if data.values_note:
            lines.append(f"<b>Values</b> shown: {_html(data.values_note)}.")
        other = ", ".join(f"{k.split(' (')[0]} p={v}" for k, v in data.method_positions.items())
        if other:
            lines.append(f"<b>Other methods</b> on these samples: {other} (percentile and KL are what-ifs; "
                         "vai_q pof2s does not offer them).")
        if data.weights:
            lines.append(f"<b>Weights</b> {_html(getattr(self, '_weights_note', ''))}:")
        for w in data.weights:
            lines.append(f"<b>{w.name}</b> {'×'.join(map(str, w.shape))}: p = {w.position} ({w.position_source}), "
                         f"whole-tensor SQNR {ls.fmt_db(w.sqnr_db)}.")
            if w.bits_wasted is not None and w.bits_wasted.size:
                wasted = np.minimum(np.where(np.isfinite(w.bits_wasted), w.bits_wasted, 8.0), 8.0)
                dead = int(np.count_nonzero(wasted >= 8.0))
                lines.append(f"&nbsp;&nbsp;{w.bits_wasted.size} output channels against one per-tensor range: "
                             f"median {np.median(wasted):.1f} bits wasted, worst {wasted.max():.1f}"
                             + (f"; {dead} channel(s) quantize to all zeros" if dead else "") + ".")
        notes = self.session.layer_notes(data.name)
        if notes:
            lines.append("<b>What the quantizer did to this layer:</b><ul>"
                         + "".join(f"<li>{_html(n)}</li>" for n in notes) + "</ul>")
        elif self.session.analysis is None:
            lines.append("<i>Rewrites and constraint adjustments appear once the int8 emulation has run.</i>")
        else:
            lines.append("No rewrite or constraint adjustment touched this layer.")
        if not layer.runnable:
            lines.append(f"<b>Not runnable:</b> {_html(layer.note)}")
        self.notes.setHtml("<br>".join(lines))

    def _show_emulated(self) -> None:
        if self.current is None or self.session is None:
            return
        analysis = self.session.analysis
        if analysis is None:
            self.emulated_label.setText("Emulated int8 model: <i>running…</i>" if self.session.document.has_activations
                                        else "Emulated int8 model: <i>needs a capture</i>")
            return
        if not analysis.available:
            self.emulated_label.setText(f"Emulated int8 model: <i>{_html(analysis.reason)}</i>")
            return
        res = self.session.layer_result(self.current)
        if res is None and not analysis.results:
            self.emulated_label.setText("Emulated int8 model: <i>capture activations to emulate it</i>")
            return
        steps = self._inner_steps_text(analysis)
        into = analysis.folded_into(self.current) if res is None else None
        if into is not None:
            self.emulated_label.setText(f"Emulated int8 model: no int8 tensor of its own (folded with {_html(into)}; "
                                        "its figures are that layer's)" + steps)
            return
        if res is None:
            self.emulated_label.setText("Emulated int8 model: no int8 tensor stands for this layer" + steps)
            return
        iso = getattr(res, "isolated", None)
        acc = getattr(res, "accumulated", None)
        parts = []
        if iso is not None:
            parts.append(f"isolated <b>{ls.fmt_db(iso.sqnr_db)}</b>")
        if acc is not None:
            parts.append(f"accumulated <b>{ls.fmt_db(acc.sqnr_db)}</b>")
        fused = analysis.rounded_at(self.current)
        # a conv + BN fused into its activation: no int8 tensor here, the figures are of the value before the
        # activation's rounding (the audit read them as the SQNR of a tensor the panel calls not quantized)
        head = ("Emulated int8 model SQNR: " if fused is None else
                f"Emulated, before the rounding at {_html(fused)} (the int8 model holds no tensor here): ")
        self.emulated_label.setText(head + ", ".join(parts) + steps)

    def _inner_steps_text(self, analysis) -> str:
        """The figures of the quantized steps inside the current layer (a separable conv's depthwise half)."""
        out = []
        for node in analysis.inner_steps(self.current):
            res = analysis.results.get(node.name)
            if res is None:
                continue
            iso, acc = getattr(res, "isolated", None), getattr(res, "accumulated", None)
            figs = ", ".join(f"{k} <b>{ls.fmt_db(s.sqnr_db)}</b>" for k, s in (("isolated", iso), ("accumulated", acc))
                             if s is not None)
            # on the same line: a second line pushed every plot down on such layers only (the layout jumped)
            out.append(f" · its quantized {_html(node.op)} step {_html(node.name)}: {figs}")
        return "".join(out)


class _LineLabel(pg.InfLineLabel):
    """An infinite line's label that, hidden, does not follow the view: pyqtgraph places every label
    again on each new range of its plot (a bounding rect and a text layout each), shown or not, and
    most method lines are hidden. :func:`_set_label` places it when its line is shown."""

    def viewTransformChanged(self) -> None:  # noqa: N802 - pyqtgraph's name
        """Follow the view only when shown (the cached view is dropped either way)."""
        if self.isVisible():
            super().viewTransformChanged()
        else:
            pg.GraphicsItem.viewTransformChanged(self)


def _labelled_line(line: pg.InfiniteLine, opts: dict) -> pg.InfiniteLine:
    """``line`` with an empty :class:`_LineLabel` (what ``InfiniteLine(label="", labelOpts=opts)`` makes,
    with this class)."""
    line.label = _LineLabel(line, text="", **opts)
    # a tight box (Qt's text margin is 4 px a side): stacked labels take a text line each, not 22 px
    line.label.textItem.document().setDocumentMargin(1)
    return line


def _set_title(plot: pg.PlotWidget, title: str) -> None:
    """Give ``plot`` the title ``title`` (9 pt), unless it has it: a title set anew is laid out anew, and
    asks the plot for a new layout, though its text did not change."""
    if plot.getPlotItem().titleLabel.text != title:
        plot.setTitle(title, size="9pt")


def _set_label(line: pg.InfiniteLine, text: str) -> None:
    """Give ``line``'s label ``text``, shown or hidden. ``label.setFormat`` is ignored while the line is
    hidden, and showing the line does not refresh it: a label set that way could name another layer's
    position."""
    line.label.format = text
    line.label.setText(text)
    if line.isVisible():
        line.label.updatePosition()


def _hide(*items) -> Callable[[], bool]:
    """A drawing step that hides ``items``; it says whether any was shown (whether a paint comes)."""

    def step() -> bool:
        shown = [item for item in items if item.isVisible()]
        for item in shown:
            item.setVisible(False)
        return bool(shown)

    return step


def _padded(lo: float, hi: float, frac: float = 0.04) -> tuple[float, float]:
    """``[lo, hi]`` widened by ``frac`` of its span on each side (a zero span by one unit)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (0.0, 1.0)
    pad = frac * (hi - lo) if hi > lo else 0.5
    return (lo - pad, hi + pad)


def _html(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nan_to_none(v: float) -> float | None:
    """NaN as None (for labels)."""
    return None if v is None or math.isnan(v) else v
