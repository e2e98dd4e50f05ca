"""Findings: the layers that cost accuracy and why, in sentences, by the measured gain of their remedy.

The table lists the findings worst first; the pane below reads the selected one out whole: what it is
(:func:`qinspect.report.wording.finding_sentence`), the advice and the remedy the diagnosis tried, with
its measured result. **Try it** applies the remedy as a what-if (the error-propagation tab then shows the
curve before and after); **Undo** returns to the model as quantized. The raw evidence sits behind
**Show details**. A click on a row selects the layer.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from qinspect.analysis.decisions import agreement_text
from qinspect.dpu.options import option_text
from qinspect.gui.session import severity
from qinspect.report import wording

KIND_ROLE = Qt.ItemDataRole.UserRole


NO_EMULATION_YET = "Findings appear once the int8 emulation of a capture has finished."


def _wrapped(object_name: str) -> QLabel:
    label = QLabel("")
    label.setObjectName(object_name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


TRY_TIP = ("Apply this remedy in the emulator as a what-if; the Error propagation tab shows the accumulated "
           "error before and after it")
OPTION_TRY_TIP = "This remedy is a quantizer option: Quantize with it sets it"


def _option_change(finding) -> dict:
    """The quantize_model options a finding's remedy changes (empty unless it is a quantizer option)."""
    remedy = getattr(finding, "remedy", None) or {}
    options = remedy.get("options") if isinstance(remedy, dict) else None
    return dict(options) if isinstance(options, dict) else {}


class FindingDetail(QWidget):
    """One finding read out whole: sentence, advice, tried remedy, Try it / Undo and the raw evidence."""

    try_requested = Signal(object)
    undo_requested = Signal()
    option_requested = Signal(object)  # a quantizer-option remedy's change, e.g. {"cle_to_relu6": True}

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.title = _wrapped("findingTitle")
        self.title.setStyleSheet("font-weight: bold;")
        self.sentence = _wrapped("findingSentence")
        self.advice = _wrapped("findingAdvice")
        self.remedy = _wrapped("findingRemedy")
        self.trial = _wrapped("findingTrial")
        for w in (self.title, self.sentence, self.advice, self.remedy, self.trial):
            layout.addWidget(w)
        row = QHBoxLayout()
        self.try_button = QPushButton("Try it")
        self.try_button.setObjectName("tryRemedy")
        self.try_button.setToolTip(TRY_TIP)
        self.try_button.clicked.connect(lambda: self.try_requested.emit(self.finding))
        self.undo_button = QPushButton("Undo")
        self.undo_button.setObjectName("undoRemedy")
        self.undo_button.setToolTip("Back to the model as quantized")
        self.undo_button.clicked.connect(self.undo_requested.emit)
        # A quantizer option is no what-if on the model as quantized: the window quantizes with it instead
        # (every view then shows the model under the option; the Quantizer menu sets it back).
        self.option_button = QPushButton("Quantize with it")
        self.option_button.setObjectName("useOptionRemedy")
        self.option_button.clicked.connect(lambda: self.option_requested.emit(_option_change(self.finding)))
        self.details_button = QToolButton()
        self.details_button.setObjectName("findingDetailsToggle")
        self.details_button.setText("Show details")
        self.details_button.setCheckable(True)
        self.details_button.toggled.connect(self._on_details)
        for b in (self.try_button, self.option_button, self.undo_button, self.details_button):
            row.addWidget(b)
        row.addStretch(1)
        layout.addLayout(row)
        self.details = QPlainTextEdit()
        self.details.setObjectName("findingEvidence")
        self.details.setReadOnly(True)
        self.details.setVisible(False)
        layout.addWidget(self.details, 1)
        layout.addStretch(0)
        self.finding = None
        self.show_finding(None, None, False)

    def _on_details(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.details_button.setText("Hide details" if shown else "Show details")

    def show_finding(self, finding, trial, busy: bool, elsewhere=None) -> None:
        """Read out ``finding`` (None: nothing selected); ``trial``: the what-if result if it is this
        finding's remedy; ``busy``: a what-if is running; ``elsewhere``: the finding whose remedy is
        applied (tried or being tried) when it is another one, so Undo still reaches it from here."""
        self.finding = finding
        if finding is None:
            for w in (self.title, self.sentence, self.advice, self.remedy, self.trial):
                w.setText("")
            self.title.setText("Select a finding to read it in full.")
            self.details.setPlainText("")
            self.try_button.setEnabled(False)
            self.undo_button.setEnabled(False)
            self.option_button.setVisible(False)  # no finding, no option to quantize with
            return
        self.title.setText(wording.finding_title(finding))
        self.sentence.setText(wording.finding_sentence(finding))
        advice = str(getattr(finding, "advice", "") or "")
        self.advice.setText(f"Advice: {advice}" if advice else "")
        remedy = getattr(finding, "remedy", None)
        self.remedy.setText(wording.remedy_sentence(remedy))
        # the whole list of layers a remedy keeps float, where the sentence above names the first few
        whole = wording.remedy_sentence(remedy, shown=None)
        self.remedy.setToolTip(whole if whole != self.remedy.text() else "")
        self.details.setPlainText("\n".join(wording.evidence_lines(finding)
                                            + ([whole] if whole != self.remedy.text() else [])))
        can_try = getattr(finding, "fix", None) is not None
        change = _option_change(finding)
        self.try_button.setEnabled(can_try and not busy)
        self.try_button.setToolTip(TRY_TIP if can_try else OPTION_TRY_TIP if change else
                                   "This finding has no remedy the emulator can apply")
        self.option_button.setVisible(bool(change))
        if change:
            self.option_button.setToolTip(f"Quantize the model with {option_text(change)}: it is recalibrated "
                                          "under the option and every view shows it (the Quantizer menu sets it "
                                          "back)")
        self.undo_button.setEnabled(trial is not None or busy or elsewhere is not None)
        self.trial.setText(trial_text(trial) if trial is not None else
                           "Trying the remedy in the emulator…" if busy else
                           elsewhere_text(elsewhere) if elsewhere is not None else "")


def elsewhere_text(finding) -> str:
    """Says that another finding's remedy is what every view shows now, and how to leave it."""
    title = wording.finding_title(finding)
    return (f"Every view shows the remedy of another finding ({title}) applied. Undo returns to the model "
            "as quantized; Try it applies this finding's remedy instead.")


def trial_text(trial) -> str:
    """Before and after of a remedy tried as a what-if, with the samples it rests on."""
    text = (f"Tried here, on the {trial.n_samples} samples the diagnosis measured: output SQNR "
            f"{trial.output_before.sqnr_db:.2f} dB → {trial.output_after.sqnr_db:.2f} dB ({trial.gain_db:+.2f} dB)")
    if trial.top1_before is not None and trial.top1_after is not None:
        text += f"; top-1 agreement {agreement_text(trial.top1_before)} → {agreement_text(trial.top1_after)}"
    return text + ". The Error propagation tab shows both curves."


def gain_cell(finding) -> str:
    """The Gain column: the remedy's measured gain; an estimate marked "~" (not measured, as the command line
    says); a dash when there is neither (a finding never tried read "0.00" beside "loses 40 dB")."""
    remedy = getattr(finding, "remedy", None)
    gain = remedy.get("measured_gain_db") if isinstance(remedy, dict) else None
    if isinstance(gain, (int, float)):
        return f"{float(gain) + 0.0:.2f}".replace("-0.00", "0.00")
    value = severity(finding)
    return f"~{value:.2f}" if value > 0.0 else "–"


class FindingsView(QWidget):
    """The diagnosis of the open capture, worst first, and the selected finding in full."""

    layer_clicked = Signal(str)
    finding_clicked = Signal(str, str)  # layer, kind: the window shows the view that proves the finding
    option_requested = Signal(object)  # quantize with a remedy's options ({"cle_to_relu6": True})

    def __init__(self, window=None) -> None:
        super().__init__(window)
        self.session = None
        self.findings: list = []
        layout = QVBoxLayout(self)
        self.info = QLabel(NO_EMULATION_YET)
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        self.table = QTableWidget(0, 4)
        self.table.setObjectName("findingsTable")
        self.table.setHorizontalHeaderLabels(["Gain (dB)", "Layer", "Kind", "Finding"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellClicked.connect(self._on_click)
        self.table.currentCellChanged.connect(lambda *_: self._show_current())
        self.detail = FindingDetail(self)
        self.detail.try_requested.connect(self._on_try)
        self.detail.option_requested.connect(self.option_requested.emit)
        self.detail.undo_requested.connect(self._on_undo)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout.addWidget(split, 1)
        # What the figures rest on (the diagnosis' notes, as the command line prints them): a ceiling the input's
        # quantization sets, rough figures, causes not tried. Scrolls past a few lines.
        self.notes = QPlainTextEdit()
        self.notes.setObjectName("findingsNotes")
        self.notes.setReadOnly(True)
        self.notes.setMaximumHeight(5 * self.notes.fontMetrics().lineSpacing() + 12)
        self.notes.setVisible(False)
        layout.addWidget(self.notes)

    def set_session(self, session) -> None:
        """A new document."""
        self.session = session
        session.trial_changed.connect(self._show_current)
        session.channels["trial"].idle.connect(self._show_current)
        session.busy.connect(self._on_busy)
        self.refresh()

    def _on_busy(self, channel: object, _text: str) -> None:
        # Sent as a job starts (before its channel counts as busy) and when the jobs end.
        if not self.findings and self.session is not None:
            self.info.setText(self._empty_text(diagnosing=channel is self.session.channels["findings"]))

    def _empty_text(self, diagnosing: bool | None = None) -> str:
        """What the empty table means now (``diagnosing``: whether a diagnosis runs, if known)."""
        session = self.session
        if session is None:
            return NO_EMULATION_YET
        analysis = getattr(session, "analysis", None)
        if analysis is not None and not analysis.available:
            return f"No findings: there is no int8 emulation here ({analysis.reason})."
        running = session.channels["findings"].busy if diagnosing is None else diagnosing
        if running:
            return "Diagnosing the int8 model: its findings appear here when it ends (its stage is in the status bar)."
        if session.diagnosis is not None:
            return ("No findings: the diagnosis found no cause whose remedy measurably gains output SQNR "
                    "(the Error propagation tab shows each layer's SQNR).")
        return NO_EMULATION_YET

    def _on_click(self, row: int, _col: int) -> None:
        item = self.table.item(row, 1)
        kind = self.table.item(row, 2)
        if item is not None and item.text():
            self.finding_clicked.emit(item.text(), kind.data(KIND_ROLE) if kind is not None else "")

    def _on_try(self, finding) -> None:
        if self.session is not None and finding is not None:
            self.session.try_remedy(finding)
            self._show_current()

    def _on_undo(self) -> None:
        if self.session is not None:
            self.session.undo_trial()
            self._show_current()

    def current_finding(self):
        """The selected finding (None when none is)."""
        row = self.table.currentRow()
        return self.findings[row] if 0 <= row < len(self.findings) else None

    def _show_current(self, *_args) -> None:
        finding = self.current_finding()
        session = self.session
        trial = busy = elsewhere = None
        if session is not None and finding is not None:
            if session.trial_finding is finding:
                trial, busy = session.trial, session.channels["trial"].busy
            elif session.trial_finding is not None:
                elsewhere = session.trial_finding
        self.detail.show_finding(finding, trial, bool(busy), elsewhere)

    def refresh(self) -> None:
        """Show the session's findings in the diagnosis' order, as the CLI and the report list them: the
        causes by measured gain, then the accumulated-rounding residual, then CPU layers costing no measured
        accuracy (information, however large their estimate)."""
        findings = list(self.session.findings) if self.session is not None else []
        self.findings = findings
        self.table.setRowCount(len(findings))
        for i, f in enumerate(findings):
            kind = str(getattr(f, "kind", ""))
            sentence = wording.finding_sentence(f)
            cells = [gain_cell(f), str(getattr(f, "layer", "")), wording.kind_title(kind), sentence]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if j == 2:
                    item.setData(KIND_ROLE, kind)
                self.table.setItem(i, j, item)
        for col, width in enumerate((70, 150, 170)):
            self.table.setColumnWidth(col, width)
        self.table.resizeRowsToContents()
        if findings:
            noun = "finding" if len(findings) == 1 else "findings"
            d = getattr(self.session, "diagnosis", None)
            explained, se = getattr(d, "explained", None), getattr(d, "explained_se", None)
            spread = f" (± {100 * se:.0f}%)" if isinstance(se, float) and se == se else ""
            budget = (f" Together their remedies explain {100 * explained:.0f}%{spread} of the output's error power "
                      f"({wording.EXPLAINED_TOGETHER})." if isinstance(explained, float) else "")
            weighed = list(getattr(d, "weighed_outputs", None) or [])
            several = len(getattr(d, "outputs", None) or []) > 1
            where = (f"at the output {weighed[0]}" if several and len(weighed) == 1
                     else f"at the model outputs ({', '.join(weighed)}, pooled)" if several else "at the model output")
            self.info.setText(f"{len(findings)} {noun} ({wording.findings_order(findings)}; gains measured {where})."
                              f"{budget} Click one to inspect its layer and read it in full below.")
            if self.table.currentRow() < 0:
                self.table.setCurrentCell(0, 0)
        else:
            self.info.setText(self._empty_text())
        notes = list(getattr(getattr(self.session, "diagnosis", None), "notes", None) or [])
        self.notes.setPlainText("\n".join(f"Note: {n[:1].upper()}{n[1:]}." for n in notes))
        self.notes.setVisible(bool(notes))
        self._show_current()
