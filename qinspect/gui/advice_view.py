"""Advice: ways to quantize the model (quantizer options, layers kept in float), each measured in the
emulator, ranked by output SQNR; the selected row's ``quantize_model`` call is shown under the table,
ready to copy (a column of its own ran off the right edge of the tab at any usual window width).

The advisor (:mod:`qinspect.analysis.advisor`, as ``qinspect advise``) runs on demand in a process of its
own: its progress and Cancel are in the status bar, like every long job of the window.
"""

from __future__ import annotations

from PySide6.QtGui import QFontDatabase, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from qinspect.analysis.advisor import (
    SIMPLEST_NOTE,
    TOP1_OUTRANKED_NOTE,
    WITHIN_NOISE_NOTE,
    calibration_text,
    in_sample_note,
    row_marks,
    within_noise,
)
from qinspect.analysis.decisions import agreement_text

COLUMNS = ["Output SQNR (dB)", "Top-1 agreement", "Ops moved to CPU", "Options", "Keep float"]
WIDTHS = (100, 100, 100, 200)  # the kept-float layers take the rest, wrapped
IN_SAMPLE_HOW = "compare with an evaluation capture (File menu)"


def options_text(options: dict, calib_samples: int | None = None, row: dict | None = None) -> str:
    """Quantizer options as ``key=value`` pairs, and the calibration samples when known; ``row``: an advice
    row, whose own calibration data (the evaluation data, outlier samples left out) is said."""
    row = row or {}
    data = calibration_text(row)
    text = ", ".join(f"{k}={v}" for k, v in options.items()) or ("" if data else "as calibrated")
    text = "; ".join(t for t in (text, data) if t)
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
        self.table.currentCellChanged.connect(lambda row, *_: self._show_call(row))
        layout.addWidget(self.table, 1)
        call_row = QHBoxLayout()
        self.call_label = QLabel("quantize_model call of the selected row:")
        call_row.addWidget(self.call_label, 1)
        self.copy_button = QPushButton("Copy call")
        self.copy_button.setObjectName("copyAdviceCall")
        self.copy_button.setToolTip("Copy the selected row's quantize_model call to the clipboard (Ctrl+C in "
                                    "the table)")
        self.copy_button.clicked.connect(self.copy_call)
        call_row.addWidget(self.copy_button)
        layout.addLayout(call_row)
        self.call = QPlainTextEdit()
        self.call.setObjectName("adviceCall")
        self.call.setReadOnly(True)
        self.call.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        lines = self.call.fontMetrics().lineSpacing()
        self.call.setFixedHeight(4 * lines + 12)  # a fixed height: selecting a row never moves the table
        layout.addWidget(self.call)
        QShortcut(QKeySequence.StandardKey.Copy, self.table, self.copy_call)
        self._show_call(-1)

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

    def call_of(self, row: int) -> str:
        """The ``quantize_model`` call of table row ``row`` ('' when there is no such row)."""
        rows = getattr(self.session.advice, "rows", []) if self.session is not None else []
        return str(rows[row].get("command", "")) if 0 <= row < len(rows) else ""

    def _show_call(self, row: int) -> None:
        text = self.call_of(row)
        self.call.setPlainText(text)
        self.call_label.setText(f"quantize_model call of row {row + 1}:" if text
                                else "Select a row to see its quantize_model call.")
        self.copy_button.setEnabled(bool(text))

    def copy_call(self) -> None:
        """Put the selected row's ``quantize_model`` call on the clipboard."""
        text = self.call_of(self.table.currentRow())
        if text:
            QGuiApplication.clipboard().setText(text)

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
            cells = [(f"{sqnr:.2f}" if isinstance(sqnr, float) else str(sqnr))
                     + ("=" if r.get("simplest_within_noise") else "≈" if rows and within_noise(r, rows[0]) else ""),
                     ("n/a" if top1 is None else agreement_text(top1)) + (" ↓" if down else ""),
                     str(r.get("cpu_layers_added", 0)),
                     ("✗ " if r.get("quantizer_stops") else "")
                     + options_text(r.get("options") or {}, r.get("calib_samples"), r),
                     ", ".join(r.get("keep_float") or []) or "none"]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(i, j, item)
        header = self.table.horizontalHeader()
        for col, width in enumerate(WIDTHS):  # never narrower than the column's title
            self.table.setColumnWidth(col, max(width, header.sectionSizeFromContents(col).width()))
        self.table.resizeRowsToContents()
        self.table.setCurrentCell(0 if rows else -1, 0)
        self._show_call(self.table.currentRow())
        if result is not None:
            of = "" if not result.outputs else f" of {', '.join(result.outputs)}"
            self.info.setText(f"{len(rows)} ways to quantize, best output SQNR{of} first; measured on "
                              f"{result.n_samples} {result.measured_on} samples (top-1: agreement with the "
                              "float model's arg-max)."
                              + (" " + SIMPLEST_NOTE if rows and rows[0].get("simplest_within_noise") else "")
                              + (" " + WITHIN_NOISE_NOTE if any(within_noise(r, rows[0]) for r in rows) else "")
                              + (" " + TOP1_OUTRANKED_NOTE if any(outranked) else "")
                              + (" " + stops if stops else "")
                              + (" " + in_sample_note(result.n_calib, IN_SAMPLE_HOW, rows)
                                 if result.measured_on == "calibration" else ""))
        self._update_button()
