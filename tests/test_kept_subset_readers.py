"""Readers of a kept-subset capture (format 1.2): statistics over every sample, tensors of the kept ones.

A sample past the kept ones holds an outlier; the references are a capture of the same model that
keeps every sample (its tensors, numpy over them, and commands run on it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from capture_fixtures import run_here

from qinspect.io.capture_file import Capture
from qinspect.io.capture_stats import LayerStats

pytestmark = pytest.mark.tf

N, KEEP, OUTLIER = 12, 4, 9


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """(kept-subset capture, capture of every sample) of one small model on the same inputs."""
    import tf_keras as tfk

    folder = tmp_path_factory.mktemp("kept_readers")
    tfk.utils.set_random_seed(7)
    inp = tfk.Input((6, 6, 2), name="image")
    x = tfk.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = tfk.layers.GlobalAveragePooling2D(name="gap")(x)
    tfk.Model(inp, tfk.layers.Dense(3, name="fc")(x)).save(folder / "m.h5")
    x = np.random.default_rng(8).normal(size=(N, 6, 6, 2)).astype(np.float32)
    x[OUTLIER] *= 40.0  # only a sample that is not kept reaches this far
    np.save(folder / "x.npy", x)
    out = {}
    for name, extra in (("kept", ["--keep", str(KEEP)]), ("full", [])):
        out[name] = str(folder / f"{name}.h5")
        done = run_here("capture", str(folder / "m.h5"), "--inputs", str(folder / "x.npy"), "-o", out[name], "-q",
                        "--calib-batch-size", "5", *extra)
        assert done.returncode in (0, None), done.stderr
    return out["kept"], out["full"]


def test_stats_cover_every_sample_and_old_captures_compute_them(captures):
    kept, full = captures
    with Capture.open(kept) as k, Capture.open(full) as f:
        assert (k.n_kept, k.n_total_samples, k.calib_batch_size) == (KEEP, N, 5)
        assert k.is_kept_subset and not f.is_kept_subset
        assert k.samples_note() == f"on {KEEP} of {N} samples" and f.samples_note() == ""
        for layer in ("conv", "fc"):
            every = f.activation(layer)
            s = k.stats(layer)
            assert s.n_samples == N
            assert s.max() == pytest.approx(float(every.max()), rel=1e-6)
            assert s.min() == pytest.approx(float(every.min()), rel=1e-6)
            # the outlier is outside the kept tensors: the kept samples alone see a smaller range
            assert float(np.abs(k.activation(layer)).max()) < 0.5 * s.abs_max()
            # a capture without /stats: computed from its tensors in its calibration batches
            ref = LayerStats.from_tensor(every, 5, name=layer)
            np.testing.assert_array_equal(f.stats(layer).batch_max, ref.batch_max)
            np.testing.assert_array_equal(s.batch_max, ref.batch_max)
            assert f.stats(layer) is f.stats(layer)  # cached


def _json(*args: str) -> dict:
    done = run_here(*args)
    assert done.returncode in (0, None), done.stderr
    return json.loads(done.stdout)


def test_emulate_calibrates_on_every_sample_and_states_the_kept_count(captures):
    kept, full = captures
    a = _json("emulate", kept, "--json")
    b = _json("emulate", full, "--json")
    assert (a["samples_used"], a["samples_total"]) == (KEEP, N)
    assert (b["samples_used"], b["samples_total"]) == (N, N)
    # positions from all N samples: the same as calibrating on the capture that keeps every tensor
    assert [r["position"] for r in a["layers"]] == [r["position"] for r in b["layers"]]
    text = run_here("emulate", kept).stdout
    assert f"errors: on {KEEP} of {N} samples" in text
    assert "errors: on" not in run_here("emulate", full).stdout


def test_diagnose_uses_every_input_of_a_kept_subset(captures):
    kept, full = captures
    a = _json("diagnose", kept, "--json", "--no-sensitivity")
    b = _json("diagnose", full, "--json", "--no-sensitivity")
    assert (a["samples_used"], a["samples_total"]) == (N, N)
    assert a["samples"] == b["samples"] == N
    assert a["findings"] == b["findings"]


def test_info_says_what_a_capture_keeps(captures):
    kept, full = captures
    assert run_here("info", kept).stdout.splitlines()[-1] == (
        f"samples: {N} fed, full tensors kept for {KEEP}; statistics and inputs of all {N} (calibration batch 5)")
    assert run_here("info", full).stdout.splitlines()[-1] == f"samples: {N}, every tensor kept"
    # a script reads the same from --json
    for path, kept_n in ((kept, KEEP), (full, N)):
        data = _json("info", path, "--json")
        assert (data["samples"], data["samples_kept"], data["calib_batch_size"]) == (N, kept_n, 5)


def test_emulate_says_its_gate_rests_on_the_kept_samples(captures):
    """On a kept subset, `emulate --fail-below` measured 4 of 12 samples and `diagnose --fail-below` all 12, and
    the two verdicts could differ without a word."""
    kept, full = captures
    note = f"--fail-below gates the output SQNR of the {KEEP} of {N} samples measured here"
    assert note in run_here("emulate", kept, "--fail-below", "-inf").stderr
    assert "--fail-below gates" not in run_here("emulate", full, "--fail-below", "-inf").stderr
    assert "--fail-below gates" not in run_here("emulate", kept).stderr


def test_advise_calibrates_on_every_sample_fed(captures):
    kept, full = captures
    a = _json("advise", kept, "--json")
    b = _json("advise", full, "--json")
    assert a["calib_samples"] == b["calib_samples"] == N
    assert [r["output_sqnr_db"] for r in a["advice"]] == [r["output_sqnr_db"] for r in b["advice"]]


def test_report_positions_and_diagnosis_on_every_sample_errors_on_the_kept(captures, tmp_path):
    from qinspect.dpu.emulator import Emulator

    kept, full = captures
    out = {}
    for name, path in (("kept", kept), ("full", full)):
        done = run_here("report", path, "-o", str(tmp_path / name))
        assert done.returncode in (0, None), done.stderr
        out[name] = json.loads((tmp_path / name / "report.json").read_text())
    a, b = out["kept"], out["full"]
    assert (a["model"]["samples_used"], a["model"]["samples_total"]) == (KEEP, N)
    assert (b["model"]["samples_used"], b["model"]["samples_total"]) == (N, N)
    positions = [layer["positions"] for layer in a["layers"]]
    assert positions == [layer["positions"] for layer in b["layers"]]
    assert a["summary"]["diagnosis measured on"] == b["summary"]["diagnosis measured on"] == f"{N} calibration samples"
    # the kept samples alone would have given other positions: the outlier sits in a sample not kept
    with Capture.open(full) as f:
        alone = Emulator.from_model(f, calib_inputs=f.inputs(None, slice(0, KEEP)))
        emu = Emulator.from_model(f)
    assert any(alone.graph.pos(s) != emu.graph.pos(s) for s in emu.graph.slots)
    html = (tmp_path / "kept" / "report.html").read_text()
    assert f"on the first {KEEP} (those kept with" in html


def test_window_jobs_on_a_kept_subset(captures):
    """The window's workers: positions from every sample, coverage's |max| from every sample, counts stated."""
    from qinspect.gui.compare_job import coverage_job
    from qinspect.gui.document import open_document
    from qinspect.gui.emulation import diagnose_job, emulate_capture
    from qinspect.gui.worker import CancelToken

    kept, full = captures
    dk, df = open_document(kept), open_document(full)
    try:
        assert f"full tensors of {KEEP} of {N} samples" in dk.summary()
        assert f"{N} samples" in df.summary() and "of" not in df.summary().split(",")[-1]
        ak, af = emulate_capture(CancelToken(1), dk, None), emulate_capture(CancelToken(2), df, None)
        assert {s: ak.graph.pos(s) for s in ak.graph.slots} == {s: af.graph.pos(s) for s in af.graph.slots}
        cov = coverage_job(CancelToken(3), dk, full, ak)
        assert cov.samples_text("calib") == f"{KEEP} of {N} samples" and cov.samples_text("eval") == f"{N} samples"
        with Capture.open(full) as f:
            for row in cov.rows:
                every = float(np.abs(f.activation(row.layer)).max())
                assert row.calib_absmax == pytest.approx(every, rel=1e-6)
                assert row.eval_absmax == pytest.approx(every, rel=1e-6)
        assert [f.to_dict() for f in diagnose_job(CancelToken(4), dk, ak, None).findings] == \
            [f.to_dict() for f in diagnose_job(CancelToken(5), df, af, None).findings]
    finally:
        dk.close()
        df.close()


@pytest.fixture
def window(qtbot, tmp_path):
    from gui_fixtures import main_window

    yield from main_window(qtbot, tmp_path)


def test_window_says_the_layer_statistics_are_of_the_kept_samples(qtbot, window, captures):
    kept, _ = captures
    with qtbot.waitSignal(window.open_channel.finished, timeout=10000):
        window.open_path(kept)
    qtbot.waitUntil(lambda: window.session.analysis is not None, timeout=60000)
    window.select_layer("conv")
    panel = window.layer_panel
    qtbot.waitUntil(lambda: panel.data is not None and panel.data.name == "conv" and panel.data.complete
                    and panel.whatif is not None, timeout=20000)
    assert f"from {KEEP} of {KEEP} samples kept with full tensors, of {N} fed" in panel.state.text()


def test_diagnose_coverage_sees_an_outlier_past_the_kept_samples(captures):
    """--eval: the calibration side's ranges come from every sample fed, the evaluation's too."""
    kept, full = captures
    a = _json("diagnose", full, "--eval", kept, "--json", "--no-sensitivity")
    b = _json("diagnose", full, "--eval", full, "--json", "--no-sensitivity")
    assert a["samples_used"] == b["samples_used"] == N
    assert a["findings"] == b["findings"]
    c = _json("diagnose", kept, "--eval", full, "--json", "--no-sensitivity")
    assert c["findings"] == b["findings"]
    assert "coverage" not in [f["kind"] for f in c["findings"]]


def test_calibrating_on_the_kept_samples_alone_would_miss_the_outlier(captures, tmp_path):
    """The guard for the test above: the same model calibrated on the kept inputs only has a coverage finding."""
    kept, full = captures
    folder = Path(kept).parent
    np.save(tmp_path / "first.npy", np.load(folder / "x.npy")[:KEEP])
    alone = _json("diagnose", str(folder / "m.h5"), "--inputs", str(tmp_path / "first.npy"), "--eval", full,
                  "--json", "--no-sensitivity")
    assert "coverage" in [f["kind"] for f in alone["findings"]]


def test_report_coverage_says_it_is_of_the_kept_evaluation_samples(captures, tmp_path):
    kept, full = captures
    done = run_here("report", full, "--eval", kept, "-o", str(tmp_path / "r"))
    assert done.returncode in (0, None), done.stderr
    notes = json.loads((tmp_path / "r" / "report.json").read_text())["notes"]
    assert f"coverage (evaluation values outside the int8 range) measured on the {KEEP} of {N} evaluation " \
           "samples kept with full tensors" in notes


def test_a_kept_subset_without_a_layers_statistics_is_refused_in_one_line(captures, tmp_path):
    import shutil

    import h5py

    from qinspect.errors import QInspectError
    from qinspect.io.capture_file import escape_name

    kept, _ = captures
    bad = tmp_path / "no_stats.h5"
    shutil.copy(kept, bad)
    with h5py.File(bad, "a") as h5:
        del h5["stats"][escape_name("conv")]
    with Capture.open(bad) as cap:
        assert cap.stats("fc").n_samples == N
        with pytest.raises(QInspectError, match=r"no /stats for 'conv' in a capture that keeps 4 of 12 samples"):
            cap.stats("conv")
