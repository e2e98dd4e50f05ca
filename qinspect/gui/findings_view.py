"""Findings: the layers that cost accuracy and why, by the measured gain of their remedy; a click selects the layer."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QAbstractItemView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from qinspect.gui.session import severity


class FindingsView(QWidget):
    """The diagnosis of the open capture, worst first."""

    layer_clicked = Signal(str)
    finding_clicked = Signal(str, str)  # layer, kind: the window shows the view that proves the finding

    def __init__(self, window=None) -> None:
        super().__init__(window)
        self.session = None
        layout = QVBoxLayout(self)
        self.info = QLabel("Findings appear once the int8 emulation of a capture has finished.")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        self.table = QTableWidget(0, 5)
        self.table.setObjectName("findingsTable")
        self.table.setHorizontalHeaderLabels(["Cost (dB)", "Layer", "Kind", "Evidence", "Advice"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellClicked.connect(self._on_click)
        layout.addWidget(self.table, 1)

    def set_session(self, session) -> None:
        """A new document."""
        self.session = session
        self.refresh()

    def _on_click(self, row: int, _col: int) -> None:
        item = self.table.item(row, 1)
        kind = self.table.item(row, 2)
        if item is not None and item.text():
            self.finding_clicked.emit(item.text(), kind.text() if kind is not None else "")

    def refresh(self) -> None:
        """Show the session's findings, largest measured gain first."""
        findings = list(self.session.findings) if self.session is not None else []
        findings.sort(key=lambda f: -severity(f))
        self.table.setRowCount(len(findings))
        for i, f in enumerate(findings):
            evidence = getattr(f, "evidence", {}) or {}
            if isinstance(evidence, dict):
                evidence = ", ".join(f"{k}={_fmt(v.get('value') if isinstance(v, dict) else v)}"
                                     for k, v in evidence.items())
            advice = str(getattr(f, "advice", ""))
            remedy = getattr(f, "remedy", None)
            if remedy:  # the fix the diagnosis tried in the emulator, and what it measured
                advice += (f" Tried: {remedy['action']}: output {remedy['measured_sqnr_db']:.1f} dB "
                           f"({remedy['measured_gain_db']:+.2f} dB).")
            cells = [f"{severity(f):.2f}", str(getattr(f, "layer", "")),
                     str(getattr(f, "kind", "")), str(evidence), advice]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(i, j, item)
        for col, width in enumerate((70, 150, 110, 420)):
            self.table.setColumnWidth(col, width)
        self.table.resizeRowsToContents()
        if findings:
            noun = "finding" if len(findings) == 1 else "findings"
            self.info.setText(f"{len(findings)} {noun}, the largest measured gain at the model output first. "
                              "Click one to inspect its layer.")


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
