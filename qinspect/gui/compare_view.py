"""Calibration vs evaluation capture: per layer, the fraction of values outside the calibrated range."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from qinspect.gui.layer_stats import fmt_frac
from qinspect.gui.session import set_layer_ticks


class CompareView(QWidget):
    """Both captures' out-of-range fractions on one plot, and a table of the numbers."""

    layer_clicked = Signal(str)

    def __init__(self, window=None) -> None:
        super().__init__(window)
        self.window_ = window
        self.session = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.info = QLabel("Open an evaluation capture of the same model to see where the calibration data "
                           "did not reach.")
        self.info.setWordWrap(True)
        row.addWidget(self.info, 1)
        self.open_button = QPushButton("Open evaluation capture…")
        self.open_button.clicked.connect(lambda: window.open_eval_dialog() if window is not None else None)
        row.addWidget(self.open_button)
        layout.addLayout(row)
        split = QSplitter(Qt.Orientation.Vertical)
        self.plot = pg.PlotWidget()
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.addLegend(offset=(-10, 10))
        self.plot.setLabel("left", "values outside the calibrated int8 range (%)")
        self.plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)  # a percentage takes no "(x0.001)"
        self.plot.setLabel("bottom", "layer (topological order)")
        split.addWidget(self.plot)
        self.table = QTableWidget(0, 7)
        self.table.setObjectName("coverageTable")
        self.table.setHorizontalHeaderLabels(["Layer", "p", "Range", "Calibration outside", "Evaluation outside",
                                              "Calib max|x|", "Eval max|x|"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.cellDoubleClicked.connect(lambda r, _c: self.layer_clicked.emit(self.table.item(r, 0).text()))
        split.addWidget(self.table)
        layout.addWidget(split, 1)
        # nothing to show before an evaluation capture: an empty plot with 0.1 .. 0.9 ticks read as data
        self.split = split
        split.hide()
        layout.addStretch(0)

    def set_session(self, session) -> None:
        """A new document: forget the previous comparison."""
        self.session = session
        session.coverage_changed.connect(self.refresh)
        self.refresh()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        names = self.layers if hasattr(self, "layers") else getattr(self, "_names", [])
        if names:
            set_layer_ticks(self.plot, names)

    def refresh(self) -> None:
        """Draw the session's coverage."""
        self.plot.clear()
        if self.plot.plotItem.legend is not None:
            self.plot.plotItem.legend.clear()
        cov = self.session.coverage if self.session is not None else None
        self.table.setRowCount(0)
        self.split.setVisible(cov is not None)
        if cov is None:
            return
        rows = cov.rows
        kept = " Fractions outside are of the kept samples' values; |max| of every sample." \
            if max(cov.calib_total - cov.calib_samples, cov.eval_total - cov.eval_samples) > 0 else ""
        self.info.setText(f"Calibration: {cov.calib_path} ({cov.samples_text('calib')}) · evaluation: "
                          f"{cov.eval_path} ({cov.samples_text('eval')}). {cov.summary()}.{kept}"
                          + (f" Warning: {cov.warning}." if getattr(cov, "warning", None) else ""))
        x = np.arange(len(rows))
        names = [r.layer for r in rows]
        # a tensor the int8 model does not quantize is measured at a what-if position: a hollow point, as
        # the headline leaves it out (its peak read as the worst layer)
        whatif = [bool(r.whatif) for r in rows]
        if any(whatif):
            self.info.setText(self.info.text() + " Hollow points: tensors the int8 model does not quantize, at "
                              "the position min-MSE would pick (what-ifs, left out of the headline).")
        for values, colour, label in (([r.calib_outside for r in rows], "#1f77b4", "calibration capture"),
                                      ([r.eval_outside for r in rows], "#d62728", "evaluation capture")):
            y = 100.0 * np.asarray(values, dtype=np.float64)
            self.plot.plot(x, y, pen=pg.mkPen(colour, width=2), name=label)
            brushes = [pg.mkBrush("#ffffff") if w else pg.mkBrush(colour) for w in whatif]
            tips = {name: " (what-if: not a tensor of the int8 model)" if w else "" for name, w in zip(names, whatif,
                                                                                                        strict=True)}
            scatter = pg.ScatterPlotItem(x=x, y=y, data=names, size=8, brush=brushes, pen=pg.mkPen(colour, width=1.5),
                                         hoverable=True, tip=lambda x, y, data, t=tips: f"{data}{t[data]}\n{y:.4g}%")
            scatter.sigClicked.connect(lambda _i, pts, _e=None: pts and self.layer_clicked.emit(pts[0].data()))
            self.plot.addItem(scatter)
        self._names = names
        set_layer_ticks(self.plot, names)
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            # a tensor the int8 model does not quantize gets a min-MSE what-if position: said in the cell
            what_if = r.whatif
            cells = [r.layer, f"{r.position} (what-if)" if what_if else str(r.position), f"[{r.lo:.4g}, {r.hi:.4g}]",
                     fmt_frac(r.calib_outside),
                     fmt_frac(r.eval_outside), f"{r.calib_absmax:.4g}", f"{r.eval_absmax:.4g}"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 1:
                    item.setToolTip(f"position from {r.position_source}" + (
                        ": the int8 model does not quantize this tensor (folded, fused or float on the CPU); "
                        "the figures say what its values would do at the position min-MSE picks" if what_if else ""))
                if j == 4 and r.eval_outside > max(2 * r.calib_outside, 1e-4):
                    item.setForeground(pg.mkColor("#c00"))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
