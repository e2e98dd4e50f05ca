"""The Findings tab reads findings as sentences, hides the raw evidence behind a toggle, and tries a
remedy as a what-if whose before/after curves the propagation view draws (Undo: back to one)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import main_window, stop_helpers, write_gui_capture  # noqa: E402
from label_fixtures import labelled_capture  # noqa: E402, F401 - a fixture (images from class folders)
from report_fixtures import small_capture  # noqa: E402, F401 - a fixture (a real capture with class logits)

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


@pytest.fixture(scope="module")
def capture_path(tmp_path_factory):
    return write_gui_capture(tmp_path_factory.mktemp("gui") / "calib.h5")


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window(qtbot, tmp_path)


def _diagnosed(qtbot, win, path):
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(path))
    qtbot.waitUntil(lambda: win.session.diagnosis is not None and not win.session.channels["findings"].busy,
                    timeout=120000)


def test_finding_reads_as_a_sentence_with_evidence_behind_the_toggle(qtbot, window, capture_path):
    from qinspect.report.wording import finding_sentence, remedy_sentence

    _diagnosed(qtbot, window, capture_path)
    view = window.findings
    assert view.table.rowCount() > 0
    window.tabs.setCurrentWidget(view)
    f = view.current_finding()
    detail = view.detail
    assert view.table.item(0, 3).text() == detail.sentence.text() == finding_sentence(f)
    assert detail.advice.text() == f"Advice: {f.advice}"  # whole, never cut
    assert detail.remedy.text() == remedy_sentence(f.remedy)
    assert not detail.details.isVisible()
    detail.details_button.click()
    assert detail.details.isVisible()
    evidence = detail.details.toPlainText()
    assert all(key in evidence for key in f.evidence)
    detail.details_button.click()
    assert not detail.details.isVisible()


def test_try_it_draws_before_and_after_and_undo_returns_to_one_curve(qtbot, window, capture_path):
    _diagnosed(qtbot, window, capture_path)
    view = window.findings
    rows = [r for r, f in enumerate(view.findings) if getattr(f, "fix", None) is not None]
    assert rows, [(f.kind, f.remedy) for f in view.findings]
    view.table.setCurrentCell(rows[0], 0)
    f = view.current_finding()
    assert view.detail.try_button.isEnabled()
    view.detail.try_button.click()
    qtbot.waitUntil(lambda: window.session.trial is not None, timeout=60000)
    trial = window.session.trial
    # the curve job walked the samples the diagnosis measured the remedy on, and measured what it measured
    assert trial.n_samples == window.session.diagnosis.n_samples
    assert trial.output_after.sqnr_db == pytest.approx(f.remedy["measured_sqnr_db"], abs=1e-3)
    assert trial.output_before.sqnr_db == pytest.approx(window.session.diagnosis.output_sqnr_db, abs=1e-3)
    assert "→" in view.detail.trial.text() and f"{trial.output_after.sqnr_db:.2f} dB" in view.detail.trial.text()
    assert "with the remedy tried" in window.quality_label.text()
    window.tabs.setCurrentWidget(window.propagation)
    qtbot.waitUntil(lambda: len(window.propagation.curves) == 3, timeout=5000)
    accumulated = [c for c in window.propagation.curves if c.startswith("accumulated")]
    assert len(accumulated) == 2 and any("remedy" in c for c in accumulated)
    window.tabs.setCurrentWidget(view)
    # from another finding's row, the applied remedy is named and Undo still reaches it
    other = next(r for r in range(len(view.findings)) if r != rows[0])
    view.table.setCurrentCell(other, 0)
    assert view.current_finding() is not f
    assert "another finding" in view.detail.trial.text() and f.layer in view.detail.trial.text()
    assert view.detail.undo_button.isEnabled()
    view.detail.undo_button.click()
    assert window.session.trial is None
    assert view.detail.trial.text() == "" and not view.detail.undo_button.isEnabled()
    assert window.status_label.text() == "Remedy undone: the model as quantized"  # not "Remedy tried: ..."
    window.tabs.setCurrentWidget(window.propagation)
    qtbot.waitUntil(lambda: window.propagation.curves == ["isolated", "accumulated"], timeout=5000)
    assert "remedy" not in window.quality_label.text() and "Output SQNR" in window.quality_label.text()
    # every model-wide figure says what it was computed under
    assert window.quality_label.text().endswith(" · batch size 32, default options")


def test_advice_table_fills_from_an_advisor_run(qtbot, window, capture_path):
    from PySide6.QtGui import QKeySequence
    from PySide6.QtWidgets import QApplication

    _diagnosed(qtbot, window, capture_path)
    view = window.advice
    window.tabs.setCurrentWidget(view)
    assert view.table.rowCount() == 0 and view.run_button.isEnabled()
    view.run_button.click()
    assert not view.run_button.isEnabled()
    qtbot.waitUntil(lambda: window.session.advice is not None, timeout=120000)
    rows = window.session.advice.rows
    assert view.table.rowCount() == len(rows) >= 2
    sqnr = [float(view.table.item(r, 0).text()) for r in range(len(rows))]
    assert sqnr == sorted(sqnr, reverse=True)
    # the rows beaten on top-1 by a lower row are marked as the CLI and the report mark them
    from qinspect.analysis.advisor import top1_outranked

    marks = top1_outranked([r["top1_agreement"] for r in rows], [not r["quantizer_stops"] for r in rows])
    assert [("↓" in view.table.item(r, 1).text()) for r in range(len(rows))] == marks
    assert ("↓: a row ranked lower" in view.info.text()) == any(marks)
    # The row as the window calibrated it (default options, every sample, nothing in float) measures
    # what the diagnosis measured on the same first samples, by another build of the int8 model.
    d = window.session.diagnosis
    base = next(r for r in rows if not r["keep_float"] and r["options"]["include_cle"]
                and r["calib_samples"] == window.document.n_samples
                and r["options"]["calib_batch_size"] == window.session.options.calib_batch_size
                and len(r["options"]) == 2)
    assert window.session.advice.n_samples == d.n_samples
    assert base["output_sqnr_db"] == pytest.approx(d.output_sqnr_db, abs=1e-3)
    # measured on the calibration data: the rows are in-sample, and the tab says so and how to do better
    n = window.document.n_samples
    half = f" and the calib_samples={n // 2} row on the first {n // 2} of them"  # named when it is listed
    assert ("In-sample: these rows are measured on the calibration data, so each was calibrated on samples it is "
            "measured on" + (half if any(r["calib_samples"] == n // 2 for r in rows) else ";")) in view.info.text()
    assert "compare with an evaluation capture (File menu)" in view.info.text()
    # the selected row's call shows under the table, inside the tab (no column off its right edge)
    assert view.table.currentRow() == 0
    assert view.call.toPlainText() == rows[0]["command"]
    assert rows[0]["command"].startswith("vitis_quantize.VitisQuantizer(model).quantize_model(")
    view.table.setCurrentCell(1, 2)
    assert view.call.toPlainText() == rows[1]["command"] and "row 2" in view.call_label.text()
    view.copy_button.click()
    assert QApplication.clipboard().text() == rows[1]["command"]
    QApplication.clipboard().clear()
    view.table.setFocus()
    qtbot.keySequence(view.table, QKeySequence.StandardKey.Copy)
    assert QApplication.clipboard().text() == rows[1]["command"]
    tab = view.rect()
    for widget in (view.copy_button, view.call):
        corner = widget.mapTo(view, widget.rect().bottomRight())
        assert tab.contains(corner), widget.objectName()
    assert view.table.horizontalHeader().length() <= view.table.viewport().width() + 1
    assert view.run_button.isEnabled()


def test_advisor_run_can_be_cancelled(qtbot, window, capture_path):
    _diagnosed(qtbot, window, capture_path)
    view = window.advice
    view.run_button.click()
    assert window.cancel_button.isVisible() or window.session.channels["advice"].busy
    window.session.cancel_background()  # the status bar's Cancel
    qtbot.waitUntil(lambda: not window.session.channels["advice"].busy, timeout=30000)
    assert window.session.advice is None and view.table.rowCount() == 0
    assert view.run_button.isEnabled()


@pytest.mark.tf
def test_labels_add_float_and_int8_accuracy_to_the_status_bar(qtbot, window, small_capture, tmp_path):  # noqa: F811
    import numpy as np

    from qinspect.io.capture_file import Capture

    with Capture.open(small_capture) as cap:  # the float model's logits, as captured by TensorFlow
        logits = cap.activation("fc")[:16]
    labels = np.argmax(logits, axis=-1)
    labels[:4] = (labels[:4] + 1) % logits.shape[-1]  # four wrong on purpose: float accuracy 12/16
    np.save(tmp_path / "labels.npy", labels)
    _diagnosed(qtbot, window, small_capture)
    first = window.session.diagnosis
    assert first.accuracy is None and "accuracy" not in window.quality_label.text()
    window.session.load_labels(str(tmp_path / "labels.npy"))
    qtbot.waitUntil(lambda: window.session.diagnosis is not first and window.session.diagnosis is not None,
                    timeout=120000)
    acc = window.session.diagnosis.accuracy
    assert acc["float"] == pytest.approx(12 / 16)
    # int8 accuracy follows from the int8 arg-max: where it agrees with float it is right iff float is
    agree = window.session.diagnosis.top1_agreement
    assert acc["int8"] <= 12 / 16 + (1 - agree) + 1e-9
    assert f"accuracy float {100 * 12 / 16:.1f}%, int8 {100 * acc['int8']:.1f}%" in window.quality_label.text()


@pytest.mark.tf
def test_a_capture_of_class_folders_shows_accuracy_saying_where_its_labels_come_from(
        qtbot, window, labelled_capture):  # noqa: F811
    _, _, _, cap, _ = labelled_capture
    _diagnosed(qtbot, window, cap)
    acc = window.session.diagnosis.accuracy
    assert acc["float"] == pytest.approx(6 / 7) and "3 class folders" in acc["labels"]
    assert "accuracy float 85.7%" in window.quality_label.text()
    assert "class-folder labels" in window.quality_label.text()
    assert "(labels: the 3 class folders of " in window.quality_label.toolTip()


def test_top1_resting_on_near_ties_is_said_in_the_status_bar(qtbot, window, capture_path):
    """A top-1 agreement decided by rounding between near-tied outputs is shown with that caveat beside it,
    the full sentence in the tooltip; a diagnosis without near ties shows the figure alone."""
    import dataclasses

    _diagnosed(qtbot, window, capture_path)
    warning = "top-1 agreement rests on 16 near-tied of 16 decisions: rounding picks the winner"
    tied = dataclasses.replace(window.session.diagnosis, top1_agreement=0.0, near_tie_warning=warning,
                               top1_rests_on_near_ties=True)
    window.session._on_findings(0, tied)
    assert "top-1 agreement 0.0% (" in window.quality_label.text()
    assert "near ties: says little" in window.quality_label.text()
    assert window.quality_label.toolTip() == f"Note: {warning}."
    # exact ties of the int8 output alone: the note stands, "says little" does not
    exact = "1 of the 2 disagreements are exact ties of the int8 output's top two classes"
    window.session._on_findings(0, dataclasses.replace(tied, near_tie_warning=exact, top1_rests_on_near_ties=False))
    assert "ties: see the tooltip" in window.quality_label.text()
    assert "says little" not in window.quality_label.text()
    window.session._on_findings(0, dataclasses.replace(tied, top1_agreement=1.0, near_tie_warning=None,
                                                       top1_rests_on_near_ties=False))
    assert "top-1 agreement 100.0%" in window.quality_label.text() and "near ties" not in window.quality_label.text()
    assert window.quality_label.toolTip() == ""


def test_the_diagnosis_job_keeps_the_near_tie_warning(monkeypatch):
    """The window's summary of a diagnosis carries the diagnosis' near-tie note (it used to drop it)."""
    import types

    import numpy as np

    import qinspect.analysis.diagnose as diagnose_module
    from qinspect.gui import emulation

    warning = "top-1 agreement rests on 4 near-tied of 4 decisions"
    diagnosis = types.SimpleNamespace(findings=[], output=types.SimpleNamespace(sqnr_db=90.0), top1_agreement=0.25,
                                      accuracy=None, explained=None, measured_on="calibration", n_sens_samples=4,
                                      advice=[], near_tie_warning=warning, top1_rests_on_near_ties=True,
                                      outputs=[], weighed_outputs=["y"],
                                      hidden_output_warning=None, notes=["a note"], explained_se=None)
    monkeypatch.setattr(emulation, "diagnosis_data", lambda *_: ({"x": np.zeros((4, 2), np.float32)}, None, None))
    monkeypatch.setattr(diagnose_module, "diagnose", lambda *_, **__: diagnosis)
    analysis = types.SimpleNamespace(available=True, graph=None, quantized_path=None, float_layer=lambda name: name,
                                     output_nodes=lambda outputs: None)
    token = types.SimpleNamespace(check=lambda: None, progress=lambda *_: None)
    summary = emulation.diagnose_job(token, None, analysis, None)
    assert summary.near_tie_warning == warning and summary.top1_agreement == 0.25
    assert summary.top1_rests_on_near_ties is True


def test_bad_labels_are_one_line_naming_the_file(tmp_path):
    import numpy as np

    from qinspect.errors import QInspectError
    from qinspect.io.labels import read_labels

    np.save(tmp_path / "few.npy", np.arange(3))
    with pytest.raises(QInspectError, match="cover the 16 measured samples") as err:
        read_labels(str(tmp_path / "few.npy"), 16)
    assert "few.npy" in str(err.value)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(QInspectError, match="is not a .npy array of labels"):
        read_labels(str(tmp_path / "junk.npy"), 1)


def test_an_evaluation_capture_moves_the_diagnosis_and_its_remedies_onto_it(qtbot, window, capture_path, tmp_path):
    """A remedy tried after an evaluation capture was loaded ran on the evaluation data while its finding
    had been measured on the calibration capture: +0.41 dB in the finding, -0.38 dB in the trial."""
    _diagnosed(qtbot, window, capture_path)
    session = window.session
    assert session.diagnosis.measured_on == "calibration"
    eval_path = write_gui_capture(tmp_path / "eval.h5", scale=1.3)
    session.load_eval_capture(str(eval_path))
    qtbot.waitUntil(lambda: session.diagnosis is not None and session.diagnosis.measured_on == "evaluation"
                    and not session.channels["findings"].busy, timeout=120000)
    rows = [r for r, f in enumerate(window.findings.findings) if getattr(f, "fix", None) is not None]
    assert rows
    window.findings.table.setCurrentCell(rows[0], 0)
    f = window.findings.current_finding()
    window.findings.detail.try_button.click()
    qtbot.waitUntil(lambda: session.trial is not None, timeout=60000)
    # the trial measures what the finding measured, on the same data
    assert session.trial.output_after.sqnr_db == pytest.approx(f.remedy["measured_sqnr_db"], abs=1e-3)
    assert session.trial.output_before.sqnr_db == pytest.approx(session.diagnosis.output_sqnr_db, abs=1e-3)
    # the status bar says which samples each output figure is of (three figures read as one contradiction)
    text = window.quality_label.text()
    d = session.diagnosis
    assert f"{d.output_sqnr_db:.1f} dB on the first {d.n_samples} evaluation samples" in text
    assert "calibration samples)" in text and f"({d.n_samples} evaluation samples)" in text


def test_labels_for_the_calibration_samples_are_not_scored_against_the_evaluation_ones(qtbot, window,
                                                                                       capture_path, tmp_path):
    # labels name the classes of the samples measured when they were loaded: once the diagnosis moves to an
    # evaluation capture they are dropped and the status bar says so (they gave an accuracy of other samples)
    import numpy as np

    _diagnosed(qtbot, window, capture_path)
    session = window.session
    np.save(tmp_path / "labels.npy", np.zeros(session.document.n_samples, np.int64))
    session.load_labels(str(tmp_path / "labels.npy"))
    qtbot.waitUntil(lambda: session.diagnosis is not None and not session.channels["findings"].busy, timeout=120000)
    assert session.labels_path
    statuses = []
    session.status.connect(statuses.append)
    session.load_eval_capture(str(write_gui_capture(tmp_path / "eval.h5", scale=1.3)))
    qtbot.waitUntil(lambda: session.diagnosis is not None and session.diagnosis.measured_on == "evaluation"
                    and not session.channels["findings"].busy, timeout=120000)
    assert session.labels_path is None and session.diagnosis.accuracy is None
    assert any("labels loaded were for the other samples" in text for text in statuses)
    assert "accuracy" not in window.quality_label.text()


def test_a_bad_labels_file_is_reported_once_and_the_diagnosis_comes_back_without_it(qtbot, window, capture_path,
                                                                                    tmp_path):
    import numpy as np

    _diagnosed(qtbot, window, capture_path)
    session = window.session
    np.save(tmp_path / "few.npy", np.arange(3))
    session.load_labels(str(tmp_path / "few.npy"))
    qtbot.waitUntil(lambda: session.labels_path is None and session.diagnosis is not None
                    and not session.channels["findings"].busy, timeout=120000)
    assert len(window.errors.history) == 1 and session.findings
    # a later option change no longer fails on the same file again
    window.set_quantizer_option("calib_batch_size", 4)
    qtbot.waitUntil(lambda: session.diagnosis is not None and not session.channels["findings"].busy
                    and not session.channels["emulate"].busy, timeout=120000)
    assert len(window.errors.history) == 1


def test_an_option_change_drops_the_findings_and_advice_measured_under_the_old_ones(qtbot, window, capture_path):
    import dataclasses

    _diagnosed(qtbot, window, capture_path)
    session = window.session
    assert session.findings
    session.advice = object()  # as if the advisor had run under the old options
    seen = []  # what is shown the moment the new emulation's figures land
    session.results_changed.connect(lambda: seen.append(
        (len(session.findings), session.diagnosis is None, window.findings.table.rowCount(),
         window.findings.detail.try_button.isEnabled())))
    session.set_options(dataclasses.replace(session.options, include_cle=not session.options.include_cle))
    assert session.advice is None
    qtbot.waitUntil(lambda: bool(seen), timeout=60000)
    assert seen[0] == (0, True, 0, False)  # the old findings stayed for the whole re-diagnosis
    qtbot.waitUntil(lambda: session.diagnosis is not None and not session.channels["findings"].busy, timeout=120000)


def test_the_findings_tab_lists_them_in_the_diagnosis_order_as_the_report_does(qtbot):
    """The tab sorted by severity alone, so a CPU layer at the model's edge (information, listed last by
    the CLI and the report) could come first in the window."""
    from types import SimpleNamespace

    from PySide6.QtCore import QObject, Signal

    from qinspect.gui.findings_view import FindingsView

    class FakeChannel(QObject):
        idle = Signal()
        busy = False

    class FakeSession(QObject):
        trial_changed = Signal()
        busy = Signal(object, str)

        def __init__(self, findings):
            super().__init__()
            self.findings, self.channels, self.diagnosis = findings, {"trial": FakeChannel()}, None
            self.trial, self.trial_finding = None, None

    def finding(layer, kind, sev):
        return SimpleNamespace(layer=layer, kind=kind, severity_db=sev, evidence={}, advice="", remedy=None, fix=None)

    ranked = [finding("c1", "saturation", 2.0), finding("c2", "accumulated_rounding", 0.5),
              finding("softmax", "cpu_fallback", 3.0)]
    view = FindingsView()
    qtbot.addWidget(view)
    view.set_session(FakeSession(ranked))
    assert [view.table.item(r, 1).text() for r in range(3)] == ["c1", "c2", "softmax"]


@pytest.mark.tf
def test_an_option_remedy_quantizes_with_the_option_and_the_new_diagnosis_confirms_its_figure(qtbot, window,
                                                                                             tmp_path):
    """The window measures quantizer options as remedies, as `qinspect diagnose` does; such a remedy is no
    what-if on the model as quantized (Try it is off), and Quantize with it sets the option: the model is
    recalibrated under it and its diagnosis gives the output SQNR the remedy promised."""
    import analysis_fixtures
    import numpy as np

    from tests.conftest import run_cli

    plant = analysis_fixtures.relu6_spread(tmp_path)
    np.save(tmp_path / "x.npy", plant.calib)
    r = run_cli("capture", str(plant.path), "--inputs", str(tmp_path / "x.npy"), "-o", str(tmp_path / "cap.h5"), "-q")
    assert r.returncode == 0, r.stderr
    _diagnosed(qtbot, window, tmp_path / "cap.h5")
    view = window.findings
    window.tabs.setCurrentWidget(view)
    rows = [i for i, f in enumerate(view.findings) if (f.remedy or {}).get("kind") == "quantizer_option"]
    assert rows, [(f.kind, f.remedy) for f in view.findings]
    view.table.setCurrentCell(rows[0], 0)
    f = view.current_finding()
    assert f.remedy["options"] == {"cle_to_relu6": True}
    detail = view.detail
    assert detail.option_button.isVisible() and not detail.try_button.isEnabled()
    assert "cle_to_relu6=True" in detail.option_button.toolTip()
    detail.option_button.click()
    assert window.settings.quantizer_options().cle_to_relu6 and window.option_actions["cle_to_relu6"].isChecked()
    session = window.session

    def rediagnosed() -> bool:
        a = session.analysis
        return (a is not None and a.graph is not None and a.graph.options.cle_to_relu6
                and session.diagnosis is not None and not session.channels["emulate"].busy
                and not session.channels["findings"].busy)

    qtbot.waitUntil(rediagnosed, timeout=120000)
    assert session.diagnosis.output_sqnr_db == pytest.approx(f.remedy["measured_sqnr_db"], abs=1e-6)
    assert not any((g.remedy or {}).get("kind") == "quantizer_option" for g in view.findings)


def test_badges_say_measured_gain_and_coverage_marks_what_if_positions(qtbot):
    """The tree's badge called a measured remedy gain an 'estimated cost'; the coverage tab gave tensors the
    int8 model never quantizes a min-MSE position with nothing beside it."""
    import types

    from PySide6.QtCore import QObject, Signal

    from qinspect.gui.compare_job import MIN_MSE_SOURCE, Coverage, CoverageRow
    from qinspect.gui.compare_view import CompareView
    from qinspect.gui.session import Session

    measured = types.SimpleNamespace(layer="a", kind="saturation", severity_db=2.0, remedy=object())
    guessed = types.SimpleNamespace(layer="b", kind="cpu_fallback", severity_db=0.5, remedy=None, affects=["c"])
    chained = types.SimpleNamespace(layer="d", kind="coverage", severity_db=0.3, remedy=None, affects=["e"])
    fake = types.SimpleNamespace(findings=[measured, guessed, chained])
    badges = Session.finding_badges(fake)
    assert badges["a"] == ("⚠", "Saturation: 2.0 dB gained at the output by its remedy (measured)")
    assert badges["b"][1].endswith("0.5 dB estimated cost (not measured)")
    # a group of CPU layers marks each of its layers; a cause's downstream layers are not where it is
    assert badges["c"] == badges["b"] and "e" not in badges

    class FakeSession(QObject):
        coverage_changed = Signal()

    session = FakeSession()
    session.coverage = Coverage("c.h5", "e.h5", 4, 4, rows=[
        CoverageRow("q", 5, "qinspect calibration", -4.0, 3.97, 0, 0, 0, 0.01, 1.0, 4.2),
        CoverageRow("folded", 7, MIN_MSE_SOURCE, -1.0, 0.99, 0, 0, 0, 0, 0.5, 0.6)])
    view = CompareView()
    qtbot.addWidget(view)
    view.set_session(session)
    assert view.table.item(0, 1).text() == "5" and view.table.item(1, 1).text() == "7 (what-if)"
    assert "does not quantize this tensor" in view.table.item(1, 1).toolTip()
    # the headline's worst is a tensor the int8 model quantizes, not a what-if row that clips more
    worse_whatif = Coverage("c.h5", "e.h5", 4, 4, rows=[
        CoverageRow("q", 5, "qinspect calibration", -4.0, 3.97, 0, 0, 0, 0.01, 1.0, 4.2),
        CoverageRow("softmax", 7, MIN_MSE_SOURCE, -1.0, 0.99, 0, 0, 0, 0.3, 0.5, 1.2)])
    assert "worst coverage at q, 1%" in worse_whatif.summary()
    only_whatif = Coverage("c.h5", "e.h5", 4, 4, rows=worse_whatif.rows[1:])
    assert "worst coverage at softmax (what-if" in only_whatif.summary()
    assert not view.plot.getPlotItem().getAxis("left").autoSIPrefix
    # in the plot too: a what-if row is a hollow point (its peak read as the worst layer beside the headline)
    import pyqtgraph as pg

    scatters = [item for item in view.plot.getPlotItem().items if isinstance(item, pg.ScatterPlotItem)]
    assert scatters
    for scatter in scatters:
        fills = [p.brush().color().name() for p in scatter.points()]
        assert fills[1] == "#ffffff" and fills[0] != "#ffffff"
    assert "Hollow points" in view.info.text()


def test_quantize_with_it_is_hidden_with_no_finding_selected(qtbot):
    """The option button stayed visible (and did nothing) under 'Select a finding to read it in full.'"""
    import types

    from qinspect.analysis.findings import ev
    from qinspect.gui.findings_view import FindingDetail

    view = FindingDetail()
    qtbot.addWidget(view)
    view.show()
    option = types.SimpleNamespace(kind="quantizer_option", layer="c0", severity_db=1.3, advice="", fix=None,
                                   evidence={"option": ev({"cle_to_relu6": True}, "")},
                                   remedy={"kind": "quantizer_option", "options": {"cle_to_relu6": True},
                                           "action": "quantize with cle_to_relu6=True", "measured_sqnr_db": 30.0,
                                           "measured_gain_db": 1.3})
    view.show_finding(option, None, False)
    assert view.option_button.isVisible()
    view.show_finding(None, None, False)
    assert not view.option_button.isVisible()



def test_a_finding_never_measured_shows_no_gain_and_the_notes_are_shown(qtbot):
    """NASNet: ten shared positions read "0.00" (measured: fixing gains nothing) beside "the worst branch loses
    40 dB" though they were never tried; the diagnosis' notes (the input's ceiling, rough figures) and the ± of
    the explained share appeared only on the command line (outside GUI audit)."""
    import types

    from qinspect.analysis.findings import Finding, ev
    from qinspect.gui.findings_view import FindingsView, gain_cell

    measured = Finding("c", "saturation", 1.234, {}, "", remedy={"measured_gain_db": 1.234, "action": "x"})
    estimated = Finding("m", "alignment", 0.05, {"severity_basis": ev("estimate", "")}, "")
    untried = Finding("n", "alignment", 0.0, {}, "")
    assert [gain_cell(f) for f in (measured, estimated, untried)] == ["1.23", "~0.05", "–"]
    view = FindingsView()
    qtbot.addWidget(view)
    diagnosis = types.SimpleNamespace(explained=0.5, explained_se=0.11, weighed_outputs=[], outputs=[],
                                      notes=["quantizing the model input x alone limits the output SQNR to 29.0 dB"])
    view.session = types.SimpleNamespace(findings=[measured, untried], diagnosis=diagnosis, trial_finding=None,
                                         trial=None, channels={"trial": types.SimpleNamespace(busy=False)})
    view.refresh()
    assert "explain 50% (± 11%)" in view.info.text()
    assert "each finding's own share is measured alone and fixes overlap" in view.info.text()  # not parts of 50%
    assert view.notes.toPlainText() == "Note: Quantizing the model input x alone limits the output SQNR to 29.0 dB."
    assert view.table.item(1, 0).text() == "–"


def test_the_window_advisor_measures_on_as_many_samples_as_its_diagnosis(tmp_path):
    """The Advice tab measured 16 samples where the diagnosis (the status bar, the Findings tab) measured 32:
    the advisor's row for the quantization in use read 22.2 dB beside a status bar saying 16.3 dB."""
    from qinspect.analysis.diagnose import default_sens_samples
    from qinspect.dpu.emulator import Emulator
    from qinspect.gui.advice_job import advise_capture
    from qinspect.io.capture_file import Capture

    path = write_gui_capture(tmp_path / "forty.h5", n=40)
    with Capture.open(path) as cap:
        wanted = default_sens_samples(Emulator.from_model(cap).graph, 40)
    assert wanted == 40  # a small model: every sample, more than the CLI advisor's 16
    assert advise_capture(str(path), None, None).n_samples == wanted
