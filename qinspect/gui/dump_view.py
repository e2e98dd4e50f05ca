"""Vitis dump vs emulator: per tensor, where the emulator and a dump differ.

The dump is the quantizer's ``dump_results`` (what it simulated) or the DPU runtime's board dump (what
the board computed). The headline names the first diverging layer; selecting a row selects its layer in
the tree and draws that tensor's histogram of code differences in LSB (int8 tensors).
"""

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

BAR_BRUSH = pg.mkBrush(214, 39, 40, 170)
MAX_COLUMN_PX = 300  # every column but the note (which stretches); the cell's tooltip holds it whole
INSTRUCTIONS = ("Import the quantized.h5 a Vitis run produced (File > Import Vitis quantized.h5), then its "
                "dump_results folder or a board dump (the dump/ folder XLNX_ENABLE_DUMP=1 writes), to see every "
                "tensor where the emulator and the dump differ.")


def _where(fm: dict | None) -> str:
    """A first mismatch in words: (sample, h, w, c) for a board tensor, the flat index for a dump file."""
    if not fm:
        return ""
    if "board" in fm:
        return (f"sample {fm['sample']} (h {fm['h']}, w {fm['w']}, c {fm['c']}): board {fm['board']}, "
                f"emulator {fm['emulator']}")
    from qinspect.dpu.emulator import where_in_dump

    return where_in_dump(fm)


def _difference(t) -> str:
    """The largest difference: in LSB, or absolute for a float file of a tensor without a position."""
    lsb = float(getattr(t, "max_lsb", 0.0))
    return f"{getattr(t, 'max_abs', 0.0):.4g} (absolute)" if np.isnan(lsb) else f"{lsb:g}"


class DumpView(QWidget):
    """A table of dumped tensors (matched codes, max difference in LSB, first mismatch) and the selected
    tensor's LSB difference histogram (int8 tensors)."""

    layer_clicked = Signal(str)  # double click: show the layer
    layer_selected = Signal(str)  # row selected: select the layer in the tree, stay on this tab

    def __init__(self, window=None) -> None:
        super().__init__(window)
        self.session = None
        self.rows: list = []
        self._following = False  # selecting a row for the tree's selection: not echoed back to the tree
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.info = QLabel(INSTRUCTIONS)
        self.info.setWordWrap(True)
        self.info.setObjectName("dumpInfo")
        self.info.setMinimumHeight(3 * self.info.fontMetrics().lineSpacing() + 4)
        row.addWidget(self.info, 1)
        for text, slot in (("Import quantized.h5…", "import_quantized_dialog"),
                           ("Import dump folder…", "import_dump_dialog")):
            button = QPushButton(text)
            if window is not None:
                button.clicked.connect(getattr(window, slot))
            row.addWidget(button)
        layout.addLayout(row)
        self.headline = QLabel("")
        self.headline.setObjectName("dumpHeadline")
        self.headline.setWordWrap(True)
        self.headline.setStyleSheet("font-weight: bold")
        # A word-wrapped label in a box layout gets one line's height: reserve three.
        self.headline.setMinimumHeight(3 * self.headline.fontMetrics().lineSpacing() + 4)
        layout.addWidget(self.headline)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, 6)
        self.table.setObjectName("dumpTable")
        self.table.setHorizontalHeaderLabels(["Tensor", "Layer", "Matched", "Max |diff| (LSB)", "First mismatch",
                                              "Note"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setStretchLastSection(True)
        # names differ at their end (..._Conv_1_kernel, ..._Conv_1_bias): cut them in the middle
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        # one line per tensor: a dump has hundreds of rows
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        self.table.currentCellChanged.connect(self._on_current)
        above = QWidget()
        column = QVBoxLayout(above)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.table, 1)
        # the selected row's note (the cause) and first mismatch, whole: the Note column is cut to the tab
        self.detail = QLabel("")
        self.detail.setObjectName("dumpDetail")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.detail)
        split.addWidget(above)
        self.hist = pg.PlotWidget()
        self.hist.setObjectName("dumpHistogram")
        self.hist.setLabel("bottom", "|dump - emulator| (LSB)")
        self.hist.setLabel("left", "codes")
        self.hist.setTitle("Select a tensor")
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=BAR_BRUSH, pen=pg.mkPen(None))
        self.hist.addItem(self.bars)
        # no bars to draw (every code equal, or a float row): said in the plot, not as empty 0..1 axes
        self.empty = pg.TextItem("", color="#555", anchor=(0.5, 0.5))
        self.empty.setPos(0.5, 0.5)
        self.hist.addItem(self.empty)
        split.addWidget(self.hist)
        split.setSizes([300, 160])
        layout.addWidget(split, 1)

    def set_session(self, session) -> None:
        """A new document."""
        self.session = session
        session.dump_changed.connect(self.refresh)
        self.refresh()

    def _layer_of(self, row: int) -> str:
        """The float model's layer of a row (the tree's names), else the emulator's."""
        if not 0 <= row < len(self.rows):
            return ""
        t = self.rows[row]
        if getattr(t, "kind", "") == "weight":
            # a folded conv's kernel is the conv's, not the BatchNorm's after it, whose output the node's
            # activation rows map to (that layer shows no kernel); quant_conv2 is the wrapper of conv2
            own = (getattr(t, "layer", "") or "").removeprefix("quant_")
            document = getattr(self.session, "document", None)
            if own and document is not None and own in document.graph:
                return own
        name = getattr(t, "float_layer", "") or getattr(t, "layer", "") or ""
        analysis = getattr(self.session, "analysis", None)
        if name and not getattr(t, "float_layer", "") and analysis is not None and hasattr(analysis, "float_layer"):
            name = analysis.float_layer(name)
        return name

    def _layer_of_tensor(self, tensor) -> str:
        """:meth:`_layer_of` for a row's tensor (by identity: the dataclasses hold arrays)."""
        return next((self._layer_of(i) for i, t in enumerate(self.rows) if t is tensor), "")

    def _on_double_click(self, row: int, _col: int) -> None:
        layer = self._layer_of(row)
        if layer:
            self.layer_clicked.emit(layer)

    def _on_current(self, row: int, _col: int, _prev_row: int, _prev_col: int) -> None:
        self.show_histogram(row)
        layer = self._layer_of(row)
        if layer and not self._following:
            self.layer_selected.emit(layer)

    def follow_layer(self, layer: str) -> None:
        """The tree selected ``layer``: select its row (its output's, else its first), or none, so the
        histogram never shows another layer's tensor beside it."""
        if not self.rows or self._layer_of(self.table.currentRow()) == layer:
            return
        mine = [i for i in range(len(self.rows)) if self._layer_of(i) == layer]
        # the int8 output first (it has the difference histogram), then a float copy, then a weight
        rank = {i: (getattr(self.rows[i], "kind", "") == "weight", not getattr(self.rows[i], "gating", True))
                for i in mine}
        row = min(mine, key=lambda i: rank[i]) if mine else -1
        self._following = True
        try:
            if row < 0:
                self.table.clearSelection()
                self.table.setCurrentCell(-1, -1)
                self.hist.setTitle(f"No dumped tensor of {layer}")
            else:
                self.table.setCurrentCell(row, 0)
                self.table.scrollToItem(self.table.item(row, 0))
        finally:
            self._following = False

    def show_histogram(self, row: int) -> None:
        """Draw the differences of one row: bars at 1, 2, ... LSB (the matching codes are in the title)."""
        self._show_detail(row)
        hist = list(getattr(self.rows[row], "histogram", []) or []) if 0 <= row < len(self.rows) else []
        counts = np.asarray(hist[1:], dtype=float)
        if not hist:
            self.hist.setTitle("No difference histogram for this row (int8 tensors only)" if 0 <= row < len(self.rows)
                               else "Select a tensor")
        else:
            t = self.rows[row]
            # the tree's name of the layer, not the tensor's path (a board tensor's runs past the plot's width)
            who = self._layer_of(row) or t.name
            self.hist.setTitle(f"{who}: {hist[0]} of {t.total} codes equal; {int(counts.sum())} differ")
        self._draw_bars(counts, "" if counts.any() else
                        ("Every code equal: no difference to draw" if hist else "Nothing to draw"))

    def _draw_bars(self, counts: np.ndarray, placeholder: str) -> None:
        """Bars at 1, 2, ... LSB, or, with nothing to draw, the placeholder alone without axes (an empty
        0..1 frame reads as data)."""
        drawn = not placeholder
        self.bars.setOpts(x=np.arange(1, counts.size + 1) if drawn else [], height=counts if drawn else [],
                          width=0.8)
        self.empty.setText(placeholder)
        self.empty.setVisible(not drawn)
        for side in ("left", "bottom"):
            self.hist.getPlotItem().showAxis(side, drawn)
        if drawn:
            self.hist.setXRange(0.4, counts.size + 0.6)
            self.hist.setYRange(0, float(counts.max()) * 1.05)
        else:
            self.hist.setXRange(0, 1)  # not the previous tensor's range: the placeholder sits at the centre
            self.hist.setYRange(0, 1)

    def _show_detail(self, row: int) -> None:
        if not 0 <= row < len(self.rows):
            self.detail.setText("")
            return
        t = self.rows[row]
        where = _where(getattr(t, "first_mismatch", None))
        parts = [f"{t.name}: {t.matched} of {t.total} equal"] + ([f"first mismatch at {where}"] if where else [])
        note = getattr(t, "note", "")
        self.detail.setText("; ".join(parts) + (f". {note[:1].upper()}{note[1:]}." if note else "."))

    def refresh(self) -> None:
        """Show the session's dump comparison: the headline, then the rows (a board dump's in topological order)."""
        self.table.setRowCount(0)
        self.rows = []
        dump = self.session.dump if self.session is not None else None
        self.show_histogram(-1)
        self.headline.setText("")
        if dump is None:
            self.info.setText(INSTRUCTIONS)
            error = getattr(self.session, "dump_error", None)
            dropped = getattr(self.session, "dump_dropped", None)
            if error:
                self.headline.setText(f"The dump import failed: {error}")
            elif dropped:
                self.headline.setText(f"The dump comparison was cleared: {dropped}. Import the dump folder again to "
                                      "compare it with what is in use now.")
            return
        self.rows = list(getattr(dump, "tensors", []))
        self.table.setRowCount(len(self.rows))
        first = getattr(dump, "first", None)
        for i, t in enumerate(self.rows):
            fm = getattr(t, "first_mismatch", None)
            # the Layer column speaks the tree's names (relu2, not the quantizer's quant_relu2)
            quantizer_name = getattr(t, "float_layer", "") or getattr(t, "layer", "") or ""
            layer = self._layer_of(i) or quantizer_name
            cells = [t.name, layer, f"{t.matched}/{t.total}", _difference(t), _where(fm), getattr(t, "note", "")]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)  # whole, where a capped column cuts it
                if j == 1 and quantizer_name and quantizer_name != layer:
                    item.setToolTip(f"{layer} (in the quantized model: {quantizer_name})")
                if t.matched != t.total:
                    item.setForeground(pg.mkColor(200, 30, 30) if t is first else pg.mkColor(150, 90, 20))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        # a long tensor name (a board dump's subgraph path) must not push the mismatch and note off-screen,
        # nor a long note (a cause) make the table scroll sideways: the line under the table shows it whole
        for j in range(self.table.columnCount()):
            self.table.setColumnWidth(j, min(self.table.columnWidth(j), MAX_COLUMN_PX))
        summary = dump.summary() if hasattr(dump, "summary") else f"{len(self.rows)} tensors compared"
        # what the comparison rests on (samples compared, weights checked only through activations)
        notes = [f"Note: {n[:1].upper()}{n[1:]}." for n in getattr(dump, "notes", [])]
        self.info.setText("\n".join([summary, *notes]))
        self.headline.setText(dump.headline(self._layer_of_tensor) if hasattr(dump, "headline")
                              else "")
        if first is not None and first in self.rows:
            row = self.rows.index(first)
            self.table.selectRow(row)
            # below the matching rows it was selected out of sight
            self.table.scrollToItem(self.table.item(row, 0), QAbstractItemView.ScrollHint.PositionAtCenter)
