"""Advice: ways to quantize the model (quantizer options, layers kept in float), each measured in the
emulator, ranked by output SQNR, with the ``quantize_model`` call that reproduces it.

The advisor (:mod:`qinspect.analysis.advisor`, as ``qinspect advise``) runs on demand in a process of its
own: its progress and Cancel are in the status bar, like every long job of the window.
"""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from qinspect.analysis.advisor import TOP1_OUTRANKED_NOTE, row_marks
from qinspect.analysis.decisions import agreement_text

COLUMNS = ["Output SQNR (dB)", "Top-1 agreement", "CPU layers added", "Options", "Keep float", "",
           "quantize_model call"]
COPY_COLUMN, CALL_COLUMN = 5, 6
WIDTHS = (110, 110, 110, 240, 220, 56)  # the call takes the rest, wrapped


def options_text(options: dict, calib_samples: int | None = None) -> str:
    """Quantizer options as ``key=value`` pairs, and the calibration samples when known."""
    text = ", ".join(f"{k}={v}" for k, v in options.items()) or "as calibrated"
    return text + (f"; {calib_samples} calibration samples" if calib_samples else "")


class AdviceView(QWidget):
    """The advisor's ranked rows."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.session = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run the advisor")
        self.run_button.setObjectName("runAdvisor")
        self.run_button.setToolTip("Try the quantizer options that change pof2s results and the small sets of "
                                   "layers worth keeping in float, each in the emulator (minutes on a big model)")
        self.run_button.clicked.connect(self._on_run)
        row.addWidget(self.run_button)
        self.info = QLabel("Ranks ways to quantize this model, each measured in the emulator.")
        self.info.setWordWrap(True)
        row.addWidget(self.info, 1)
        layout.addLayout(row)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("adviceTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table, 1)

    def set_session(self, session) -> None:
        """A new document."""
        self.session = session
        session.advice_changed.connect(self.refresh)
        # idle: finished, failed or cancelled (a cancelled helper may still be stopping: that is no reason
        # to keep the button off)
        session.channels["advice"].idle.connect(lambda: self._update_button(running=False))
        self.refresh()

    def _on_run(self) -> None:
        if self.session is not None:
            self.session.run_advice()
            self._update_button()

    def _update_button(self, running: bool | None = None) -> None:
        session = self.session
        ok = session is not None and session.document.has_activations
        busy = ok and (session.channels["advice"].busy if running is None else running)
        self.run_button.setEnabled(bool(ok and not busy))
        if busy:
            self.info.setText("Trying quantizer options in the emulator… (progress and Cancel in the status bar)")
        elif session is not None and not ok:
            self.info.setText("The advisor needs a capture: capture activations first.")
        elif ok and session.advice is None:
            self.info.setText("Ranks ways to quantize this model, each measured in the emulator.")

    def refresh(self) -> None:
        """Show the session's advisor rows, best first."""
        result = getattr(self.session, "advice", None)
        rows = result.rows if result is not None else []
        self.table.setRowCount(len(rows))
        outranked, stops = row_marks(rows)
        for i, (r, down) in enumerate(zip(rows, outranked, strict=True)):
            top1 = r.get("top1_agreement")
            sqnr = r.get("output_sqnr_db")
            cells = [f"{sqnr:.2f}" if isinstance(sqnr, float) else str(sqnr),
                     ("n/a" if top1 is None else agreement_text(top1)) + (" ↓" if down else ""),
                     str(r.get("cpu_layers_added", 0)),
                     ("✗ " if r.get("quantizer_stops") else "")
                     + options_text(r.get("options") or {}, r.get("calib_samples")),
                     ", ".join(r.get("keep_float") or []) or "none", "", str(r.get("command", ""))]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(i, j, item)
            copy = QToolButton()
            copy.setText("Copy")
            copy.setToolTip("Copy this quantize_model call to the clipboard")
            copy.clicked.connect(lambda _=False, text=cells[CALL_COLUMN]: QGuiApplication.clipboard().setText(text))
            self.table.setCellWidget(i, COPY_COLUMN, copy)
        for col, width in enumerate(WIDTHS):
            self.table.setColumnWidth(col, width)
        self.table.resizeRowsToContents()
        if result is not None:
            of = "" if not result.outputs else f" of {', '.join(result.outputs)}"
            self.info.setText(f"{len(rows)} ways to quantize, best output SQNR{of} first; measured on "
                              f"{result.n_samples} {result.measured_on} samples (top-1: agreement with the "
                              "float model's arg-max)." + (" " + TOP1_OUTRANKED_NOTE if any(outranked) else "")
                              + (" " + stops if stops else ""))
        self._update_button()
