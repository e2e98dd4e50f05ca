"""A model with several outputs in the window: each output's own figures beside the pooled ones, and
Quantizer > Diagnose for output, which the diagnosis, a remedy tried and an exported report follow."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import main_window, stop_helpers  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.tf]


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


@pytest.fixture(scope="module")
def heads_capture(tmp_path_factory):
    from analysis_fixtures import two_heads
    from conftest import run_cli

    folder = tmp_path_factory.mktemp("gui_heads")
    plant = two_heads(folder)
    np.save(folder / "calib.npy", plant.calib)
    path = folder / "heads.h5"
    r = run_cli("capture", str(plant.path), "--inputs", str(folder / "calib.npy"), "-o", str(path), "-q")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture()
def window(qtbot, tmp_path):
    yield from main_window(qtbot, tmp_path)


def _diagnosis_done(win) -> bool:
    return win.session.diagnosis is not None and not win.session.channels["findings"].busy


def test_each_output_and_the_choice_of_output(qtbot, window, heads_capture, tmp_path):
    win = window
    with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
        win.open_path(str(heads_capture))
    qtbot.waitUntil(lambda: _diagnosis_done(win), timeout=120000)
    session = win.session
    # The menu offers all outputs pooled (checked) and each output alone.
    assert win.outputs_menu.isEnabled()
    labels = [a.text() for a in win.outputs_group.actions()]
    assert labels == ["All 2 outputs, pooled by signal power", "seg", "cls"]
    assert [a.isChecked() for a in win.outputs_group.actions()] == [True, False, False]
    # Pooled: the status says so and that it hides cls; the tooltip gives each output's own figures.
    text, tip = win.quality_label.text(), win.quality_label.toolTip()
    assert "Output SQNR (2 outputs pooled)" in text and "hide a worse output" in text
    assert "(pooled over 2 outputs)" in text
    assert "Each output: seg " in tip and "cls alone is" in tip
    assert "gains measured at the model outputs (seg, cls, pooled)" in win.findings.info.text()
    # The propagation lines follow the model's edges: seg hangs off the image, not off the other branch.
    win.tabs.setCurrentWidget(win.propagation)
    qtbot.waitUntil(lambda: "accumulated" in win.propagation.segments, timeout=10000)
    edges = win.propagation.segments["accumulated"]
    assert ("img", "seg") in edges and ("gap", "cls") in edges and not any("seg" == a for a, _ in edges)
    pooled = session.diagnosis
    cls_alone = next(o for o in pooled.outputs if o["layer"] == "cls")
    # Diagnose for cls: every figure is cls's own.
    win.outputs_group.actions()[2].trigger()
    assert session.weighed_outputs == ["cls"] and session.diagnosis is None
    qtbot.waitUntil(lambda: _diagnosis_done(win), timeout=120000)
    d = session.diagnosis
    assert d.weighed_outputs == ["cls"] and d.hidden_output_warning is None
    assert d.output_sqnr_db == pytest.approx(cls_alone["sqnr_db"], abs=1e-9)
    assert [a.isChecked() for a in win.outputs_group.actions()] == [False, False, True]
    assert "gains measured at the output cls" in win.findings.info.text()
    stats = session.analysis.output_stats(["cls"])
    assert f"Output SQNR (cls) {stats.sqnr_db:.1f} dB" in win.quality_label.text()
    assert stats.sqnr_db < session.analysis.output_stats().sqnr_db - 3
    # The advisor's rows are measured on cls too, and say so.
    win.advice.run_button.click()
    qtbot.waitUntil(lambda: session.advice is not None, timeout=120000)
    assert session.advice.outputs == ["cls"] and "best output SQNR of cls first" in win.advice.info.text()
    as_is = [r["output_sqnr_db"] for r in session.advice.rows if not r["keep_float"]]
    assert max(as_is) < session.analysis.output_stats().sqnr_db - 5  # the pooled figure is seg's
    # A remedy tried is measured on cls too, on the finding's own samples: its figures are the finding's
    # (the remedy found first here drops outlier samples, and is measured on the others)
    finding = next(f for f in session.findings if getattr(f, "fix", None) is not None)
    with qtbot.waitSignal(session.trial_changed, timeout=120000):
        session.try_remedy(finding)
    qtbot.waitUntil(lambda: session.trial is not None, timeout=120000)
    trial = session.trial
    assert trial.output_after.sqnr_db == pytest.approx(finding.remedy["measured_sqnr_db"], abs=1e-3)
    assert trial.output_after.sqnr_db - trial.output_before.sqnr_db == pytest.approx(
        finding.remedy["measured_gain_db"], abs=1e-3)
    if finding.fix.exclude:
        assert trial.n_samples == d.n_samples - len(finding.fix.exclude) and trial.measured_on
    else:
        assert trial.output_before.sqnr_db == pytest.approx(d.output_sqnr_db, abs=1e-6)
    # The exported report follows the window: cls only, and the window's quantizer options.
    win.set_quantizer_option("include_cle", False)
    qtbot.waitUntil(lambda: session.analysis.graph.options.include_cle is False and _diagnosis_done(win),
                    timeout=120000)
    assert session.weighed_outputs == ["cls"]
    with qtbot.waitSignal(session.exported, timeout=180000):
        session.export_report(str(tmp_path / "report"), None)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["output"]["weighed"] == ["cls"]
    assert "include_cle=False" in report["settings"]["weights"]
    # Back to all outputs.
    win.outputs_group.actions()[0].trigger()
    assert session.weighed_outputs is None and session.trial is None
    qtbot.waitUntil(lambda: _diagnosis_done(win), timeout=120000)
    assert session.diagnosis.weighed_outputs == ["seg", "cls"]
