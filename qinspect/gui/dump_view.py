"""Vitis dump vs emulator: per tensor, where the emulator and the quantizer's dump_results differ."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


class DumpView(QWidget):
    """A table of dumped tensors: matched values, max difference in LSB, first mismatch."""

    layer_clicked = Signal(str)

    def __init__(self, window=None) -> None:
        super().__init__(window)
        self.session = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.info = QLabel("Import the quantized.h5 a Vitis run produced (File > Import Vitis quantized.h5), then "
                           "its dump_results folder, to see every tensor where the emulator and the dump differ.")
        self.info.setWordWrap(True)
        row.addWidget(self.info, 1)
        for text, slot in (("Import quantized.h5…", "import_quantized_dialog"),
                           ("Import dump_results…", "import_dump_dialog")):
            button = QPushButton(text)
            if window is not None:
                button.clicked.connect(getattr(window, slot))
            row.addWidget(button)
        layout.addLayout(row)
        self.table = QTableWidget(0, 5)
        self.table.setObjectName("dumpTable")
        self.table.setHorizontalHeaderLabels(["Tensor", "Layer", "Matched", "Max |diff| (LSB)", "First mismatch"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        layout.addWidget(self.table, 1)

    def set_session(self, session) -> None:
        """A new document."""
        self.session = session
        session.dump_changed.connect(self.refresh)
        self.refresh()

    def _on_double_click(self, row: int, _col: int) -> None:
        item = self.table.item(row, 1)
        if item is not None and item.text():
            self.layer_clicked.emit(item.text())

    def refresh(self) -> None:
        """Show the session's dump comparison (mismatches first)."""
        self.table.setRowCount(0)
        dump = self.session.dump if self.session is not None else None
        if dump is None:
            return
        rows = sorted(getattr(dump, "tensors", []), key=lambda t: (t.matched == t.total, t.name))
        self.table.setRowCount(len(rows))
        for i, t in enumerate(rows):
            layer = getattr(t, "layer", "") or ""
            first = getattr(t, "first_mismatch", None)
            cells = [t.name, layer, f"{t.matched}/{t.total}", str(getattr(t, "max_lsb", "")),
                     "" if first is None else str(first)]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.info.setText(dump.summary() if hasattr(dump, "summary") else f"{len(rows)} tensors compared")
