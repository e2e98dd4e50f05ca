"""Error propagation over the whole model: isolated and accumulated error along the layers.

x is the layer's place in topological order; y the chosen metric (SQNR in dB by default, MSE or
cosine). Lines follow the model's edges, from each layer to the layers that read it, so the branches
of a multi-branch model stay apart. *Isolated*: the layer fed the quantized float reference, so only
its own quantization counts. *Accumulated*: the whole int8 pipeline from the model input. A point
where the accumulated curve drops far more than the isolated one is where error grows. Clicking a
point selects the layer.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from qinspect.gui.session import metric_of, set_layer_ticks
from qinspect.report.figspec import graph_edges

METRICS = {"sqnr": "SQNR (dB)", "mse": "MSE", "cosine": "cosine similarity"}


class PropagationView(QWidget):
    """Per-layer isolated / accumulated error, in topological order."""

    layer_clicked = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.session = None
        self.layers: list[str] = []
        self.curves: list[str] = []  # the labels of the curves drawn
        self.segments: dict[str, list[tuple[str, str]]] = {}  # per curve, the edges its line draws
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Metric:"))
        self.metric_box = QComboBox()
        self.metric_box.setObjectName("metricCombo")
        for key, label in METRICS.items():
            self.metric_box.addItem(label, key)
        self.metric_box.currentIndexChanged.connect(self._on_metric_box)
        row.addWidget(self.metric_box)
        self.info = QLabel("")
        self.info.setStyleSheet("color: #555;")
        row.addWidget(self.info, 1)
        layout.addLayout(row)
        self.plot = pg.PlotWidget()
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.addLegend(offset=(-10, 10))
        self.plot.setLabel("bottom", "layer (topological order)")
        layout.addWidget(self.plot, 1)
        self._metric = "sqnr"
        self._selected: str | None = None
        self._stale = False  # results arrived while hidden: drawn when shown
        self.marker = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#999", width=1,
                                                                            style=pg.QtCore.Qt.PenStyle.DashLine))

    def set_session(self, session, metric: str) -> None:
        """A new document."""
        self.session = session
        session.trial_changed.connect(self.refresh)
        self.set_metric(metric)

    def set_metric(self, metric: str) -> None:
        """Choose the metric (also offered in View > Error metric)."""
        self._metric = metric
        idx = self.metric_box.findData(metric)
        if idx >= 0 and idx != self.metric_box.currentIndex():
            self.metric_box.blockSignals(True)
            self.metric_box.setCurrentIndex(idx)
            self.metric_box.blockSignals(False)
        self.refresh()

    def _on_metric_box(self, _index: int) -> None:
        metric = self.metric_box.currentData()
        window = self.window()
        if hasattr(window, "set_metric"):
            window.set_metric(metric)  # persists and updates the tree too
        else:
            self.set_metric(metric)

    def mark_layer(self, name: str | None) -> None:
        """Draw a vertical marker at the selected layer (if it has a point here)."""
        self._selected = name
        if name in self.layers:
            self.marker.setValue(self.layers.index(name))
            self.marker.setVisible(True)
        else:
            self.marker.setVisible(False)

    def series(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Layers with results, in topological order, and their isolated / accumulated metric."""
        if self.session is None or self.session.analysis is None:
            return [], np.zeros(0), np.zeros(0)
        iso = self.session.analysis.layer_stats(accumulated=False)
        acc = self.session.analysis.layer_stats(accumulated=True)
        names = [layer.name for layer in self.session.document.graph.leaves() if layer.name in acc or layer.name in iso]
        # Several float layers can map to one emulator node (conv + its folded BN): keep the last.
        seen: dict[int, str] = {}
        for n in names:
            seen[id(acc.get(n) or iso.get(n))] = n
        names = [n for n in names if seen[id(acc.get(n) or iso.get(n))] == n]

        return names, self._values(iso, names), self._values(acc, names)

    def _values(self, table: dict, names: list[str]) -> np.ndarray:
        return np.array([_finite(metric_of(table.get(n), self._metric)) for n in names], dtype=np.float64)

    def trial_series(self, names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Accumulated metric before and after the remedy tried in the Findings tab (None: none tried)."""
        trial = getattr(self.session, "trial", None) if self.session is not None else None
        if trial is None or self.session.analysis is None:
            return None
        nodes = {n: self.session.analysis.node(n) for n in names}
        before = {n: trial.before.get(node.name) for n, node in nodes.items() if node is not None}
        after = {n: trial.after.get(node.name) for n, node in nodes.items() if node is not None}
        return self._values(before, names), self._values(after, names)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        names = self.layers if hasattr(self, "layers") else getattr(self, "_names", [])
        if names:
            set_layer_ticks(self.plot, names)
        if self.marker not in self.plot.getPlotItem().items:
            self.plot.addItem(self.marker)
        self.mark_layer(self._selected)

    def refresh(self) -> None:
        """Redraw from the session's results (when the tab is shown: a hidden plot is drawn later)."""
        self.layers = self.series()[0]
        if not self.isVisible():
            self._stale = True
            return
        self._draw()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Draw the results that arrived while another tab was shown."""
        super().showEvent(event)
        if self._stale:
            self._draw()

    def _draw(self) -> None:
        self._stale = False
        self.plot.clear()
        if self.plot.plotItem.legend is not None:
            self.plot.plotItem.legend.clear()
        names, iso, acc = self.series()
        self.layers = names
        self.plot.setLabel("left", METRICS[self._metric])
        self.curves = []
        if not names:
            why = "" if self.session is None or self.session.analysis is None else self.session.analysis.summary()
            self.info.setText(why or "Runs once a capture is open and the int8 emulation has finished.")
            return
        x = np.arange(len(names))
        curves = [(iso, "#1f77b4", "isolated", None)]
        trial = self.trial_series(names)
        if trial is None:
            curves.append((acc, "#d62728", "accumulated", None))
        else:  # before and after on the same samples, so the two compare like for like
            n = self.session.trial.n_samples
            curves += [(trial[0], "#d62728", f"accumulated, as quantized ({n} samples)", None),
                       (trial[1], "#2ca02c", "accumulated with the remedy tried", pg.QtCore.Qt.PenStyle.DashLine)]
            acc = trial[1]
        self.curves = [c[2] for c in curves]
        self.segments = {}
        inbound = {layer.name: layer.inbound for layer in self.session.document.graph.leaves()}
        for y, colour, label, style in curves:
            ok = np.isfinite(y)
            pen = pg.mkPen(colour, width=2) if style is None else pg.mkPen(colour, width=2, style=style)
            edges = graph_edges(names, inbound, list(ok))
            self.segments[label] = [(names[j], names[i]) for j, i in edges]
            ends = np.array(edges, dtype=np.int64).reshape(-1)
            self.plot.plot(x[ends].astype(float), y[ends], pen=pen, name=label, connect="pairs")
            scatter = pg.ScatterPlotItem(x=x[ok], y=y[ok], data=[names[i] for i in np.flatnonzero(ok)], size=9,
                                         brush=pg.mkBrush(colour), pen=pg.mkPen("w"), hoverable=True,
                                         tip=lambda x, y, data: _tip(data, y))
            scatter.sigClicked.connect(self._on_click)
            self.plot.addItem(scatter)
        set_layer_ticks(self.plot, names)
        if self.marker not in self.plot.getPlotItem().items:
            self.plot.addItem(self.marker)
        self.mark_layer(self._selected)
        worst = int(np.nanargmin(acc)) if self._metric != "mse" and np.isfinite(acc).any() else None
        if self._metric == "mse" and np.isfinite(acc).any():
            worst = int(np.nanargmax(acc))
        extra = f"; worst accumulated: {names[worst]}" if worst is not None else ""
        exact = int(np.count_nonzero((iso == EXACT_DB) | (acc == EXACT_DB))) if self._metric != "mse" else 0
        if exact:
            extra += f"; {exact} layer{'s' if exact > 1 else ''} exact (∞ dB, no error) drawn at {EXACT_DB:.0f} dB"
        if trial is not None:
            extra += f". Remedy tried: {self.session.trial.action} (Undo in the Findings tab)"
        self.info.setText(f"{len(names)} layers{extra}. Click a point to inspect the layer.")
        self.info.setWordWrap(True)

    def _on_click(self, _item, points, _ev=None) -> None:
        if len(points):
            name = points[0].data()
            if name:
                self.layer_clicked.emit(str(name))


EXACT_DB = 120.0  # where an exact layer (+inf dB SQNR) is drawn: the top of the scale, said beside the plot


def _finite(v: float | None) -> float:
    if v is None:
        return math.nan
    if math.isinf(v):
        return EXACT_DB if v > 0 else -20.0
    return v


def _tip(name: str, y: float) -> str:
    """A point's tooltip: its layer and value (an exact layer's +inf, not the height it is drawn at)."""
    return f"{name}\nexact (∞ dB): no error" if y == EXACT_DB else f"{name}\n{y:.4g}"
