"""Causes in the calibration data: outlier samples and coverage, their remedies proved by calibrating again.

The reference for every remedy is an independent run of the public path: an emulator calibrated from
scratch (``Emulator.from_model``) on the cleaned or representative data, then run over the measured
samples. The diagnosis must reach the same positions and the same output SQNR.
"""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.analysis.diagnose import diagnose
from qinspect.analysis.metrics import ErrorStats
from qinspect.analysis.recalibration import Recalibration, outlier_samples
from qinspect.dpu.emulator import Emulator
from tests.analysis_fixtures import _conv_relu_model, _inputs

BATCH = 8


def test_outlier_samples_by_hand():
    # median 1.0: 4x is 4.0; 10 lies beyond, 3.9 does not
    m = np.array([1.0, 1.1, 0.9, 3.9, 10.0, 1.0, 0.95, 1.05])
    assert outlier_samples(m).tolist() == [4]
    # a third of the samples far out is the data's own spread, not outliers
    assert outlier_samples(np.array([1.0, 1.0, 1.0, 1.0, 9.0, 9.0])).size == 0
    assert outlier_samples(np.array([0.0, 0.0, 0.0, 0.0, 5.0])).size == 0  # no scale to compare with
    assert outlier_samples(np.array([1.0, 50.0])).size == 0  # too few samples to say


def _output_sqnr(emu: Emulator, x: np.ndarray) -> float:
    out = emu.graph.outputs[0]
    return emu.run(x, layers=[out], batch_size=BATCH, stats_factory=ErrorStats)[out].accumulated.sqnr_db


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(_conv_relu_model(tmp_path_factory.mktemp("data_remedies") / "m.h5"))


def _with_outlier(n: int, at: int, seed: int = 21) -> np.ndarray:
    x = _inputs(seed, n)
    x[at] *= 50.0
    return x


def test_recalibration_without_a_sample_is_a_calibration_from_scratch_on_the_rest(model):
    x = _with_outlier(24, 5)
    # two batches: the outlier's votes for another position, ties, and wins as the first seen
    emu = Emulator.from_model(model, calib_inputs=x, batch_size=12)
    recal = Recalibration(emu.graph, {emu.graph.inputs[0]: x})
    assert recal.baseline == {s: emu.graph.pos(s) for s in recal.baseline}  # calibrated here: as given
    changes = recal.without(np.array([5]))
    clean = Emulator.from_model(model, calib_inputs=np.delete(x, 5, axis=0), batch_size=12).graph
    assert changes  # the outlier moved positions ...
    for slot, p in recal.baseline.items():  # ... and calibrating again reaches the clean run's every one
        assert changes.get(slot, p) == clean.pos(slot), slot
    quant = next(n.name for n in emu.graph.nodes if n.op == "quantize")
    maxima = recal.maxima()[quant]
    assert maxima.shape == (24,) and maxima[5] == pytest.approx(np.abs(x[5]).max())


def test_an_outlier_sample_beyond_the_examined_ones_is_found_and_dropping_it_is_measured(model):
    """Sample 40 of 48, x50: the findings examine the first 32 samples, the positions come from all 48.
    With one batch of 48 the outlier's vote decides every position."""
    x = _with_outlier(48, 40)
    emu = Emulator.from_model(model, calib_inputs=x, batch_size=48)
    name = emu.graph.inputs[0]
    d = diagnose(emu.graph, {name: x}, max_samples=32)
    f = next(f for f in d.findings if f.kind == "outlier_range")
    assert f.layer == "img" and f.evidence["outlier_samples"]["value"] == [40]
    assert f.remedy["kind"] == "recalibrate" and "sample 40" in f.remedy["action"]
    assert "measured_on" not in f.remedy  # sample 40 is not among the measured ones
    clean = Emulator.from_model(model, calib_inputs=np.delete(x, 40, axis=0), batch_size=48)
    measured = x[:d.n_sens_samples]
    assert f.remedy["measured_sqnr_db"] == pytest.approx(_output_sqnr(clean, measured), abs=0.01)
    assert d.output.sqnr_db == pytest.approx(_output_sqnr(emu, measured), abs=0.01)
    assert f.remedy["measured_gain_db"] > 10


def test_an_outlier_among_the_measured_samples_is_left_out_of_its_remedys_measurement(model):
    x = _with_outlier(32, 5)
    emu = Emulator.from_model(model, calib_inputs=x, batch_size=32)
    d = diagnose(emu.graph, {emu.graph.inputs[0]: x})
    f = next(f for f in d.findings if f.kind == "outlier_range")
    assert f.remedy["measured_on"] == "the 31 measured samples other than the outlier sample 5"
    rest = np.delete(x, 5, axis=0)
    clean = Emulator.from_model(model, calib_inputs=rest, batch_size=32)
    assert f.remedy["measured_sqnr_db"] == pytest.approx(_output_sqnr(clean, rest), abs=0.01)
    # its gain is over the same 31 samples as calibrated with the outlier
    assert f.remedy["measured_gain_db"] == pytest.approx(_output_sqnr(clean, rest) - _output_sqnr(emu, rest),
                                                         abs=0.01)
    # and the notes say what the output SQNR is without it
    note = next(n for n in d.notes if n.startswith("the outlier calibration sample 5 is among"))
    assert f"over the other 31 is {_output_sqnr(emu, rest):.1f} dB" in note
    # the window's Try it curve walks the same samples as the finding (it walked all 32, the outlier too)
    from qinspect.analysis.remedies import without_samples
    from qinspect.analysis.remedy_curve import remedy_curves

    data = without_samples({emu.graph.inputs[0]: x}, f.fix.exclude)
    assert np.array_equal(data[emu.graph.inputs[0]], rest)
    curves = remedy_curves(emu.graph, data, f.fix.positions, f.fix.float_nodes, f.remedy["action"])
    assert curves.n_samples == 31
    assert curves.output_after.sqnr_db == pytest.approx(f.remedy["measured_sqnr_db"], abs=0.01)


def test_an_outlier_the_batch_vote_outvoted_is_no_cause(model):
    """One x50 sample in the first of four batches: its batch votes for another position, the other
    three win. Calibrating without it changes nothing, so no remedy and no finding claim it."""
    x = _with_outlier(32, 3)
    emu = Emulator.from_model(model, calib_inputs=x, batch_size=BATCH)
    recal = Recalibration(emu.graph, {emu.graph.inputs[0]: x})
    assert recal.without(np.array([3])) == {}
    d = diagnose(emu.graph, {emu.graph.inputs[0]: x})
    assert not any(f.kind == "outlier_range" and (f.remedy or {}).get("kind") == "recalibrate" for f in d.findings)
    assert any("sample 3 is an outlier at img" in n and "sets no position" in n for n in d.notes)


def test_coverage_recalibrates_on_the_data_in_use_as_the_calibrator_would(model):
    calib, use = 0.25 * _inputs(31, 32), _inputs(32, 32)
    emu = Emulator.from_model(model, calib_inputs=calib, batch_size=BATCH)
    name = emu.graph.inputs[0]
    d = diagnose(emu.graph, {name: use}, {name: calib}, data_label="evaluation")
    f = next(f for f in d.findings if f.kind == "coverage")
    on_use = Emulator.from_model(model, calib_inputs=use, batch_size=BATCH)
    quant = next(n for n in emu.graph.nodes if n.op == "quantize")
    assert f.evidence["eval_position"]["value"] == on_use.graph.pos(quant.out_slot)
    assert f.remedy["kind"] == "recalibrate" and "an upper bound" in f.remedy["action"]
    assert f.remedy["measured_sqnr_db"] == pytest.approx(_output_sqnr(on_use, use[:d.n_sens_samples]), abs=0.01)


def test_an_input_whose_quantization_alone_caps_the_output_is_said_with_its_offset():
    """Inputs 6 + 0.02 u, the offset taken out by the first layer: the int8 input keeps two codes of its
    variation and caps the output whatever else is fixed; nothing said so."""
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model

    rng = np.random.default_rng(5)
    kernel = np.eye(4, 2, dtype="f4") * 50.0
    w = {"d": {"kernel": kernel, "bias": np.full(2, -300.0, "f4")}}
    src = model([("x", "InputLayer", {}, [], [None, 4]),
                 ("d", "Dense", {"units": 2, "activation": "linear"}, ["x"], [None, 2])], ["d"], w)
    emu = Emulator(graph_from_float(src.graph, src))
    x = (6.0 + 0.02 * rng.uniform(size=(32, 4))).astype("f4")
    emu.calibrate({"x": x}, 32)
    d = diagnose(emu.graph, {"x": x})
    note = next(n for n in d.notes if n.startswith("quantizing the model input x alone"))
    quant = next(n for n in emu.graph.nodes if n.op == "quantize")
    row = next(s for s in d.sensitivity if s.node == quant.name)
    assert f"limits the output SQNR to {row.only_quantized_sqnr_db:.1f} dB" in note and row.only_quantized_sqnr_db < 30
    pos = emu.graph.pos(quant.out_slot)
    from qinspect.dpu.fixed_point import Round, quantize

    codes = np.unique(quantize(x, pos, Round.HALF_UP)).size
    assert f"at position {pos} its values take {codes} of the 256 codes" in note
    assert "an offset" in note and "subtracting it in preprocessing" in note
    # without sensitivity the same ceiling is measured by one run of its own (it was left out)
    quick = diagnose(emu.graph, {"x": x}, with_sensitivity=False)
    assert note in quick.notes and not quick.sensitivity


def test_a_sample_that_alone_stretches_a_flagged_range_is_named_below_the_4x_rule():
    """The audit's hid.h5: one sample's spike, scaled down by CLE, reaches 3x the median sample's largest value
    at act2 (below the 4x outlier-sample rule) and 2.4x every other sample's. Keeping act2 float (+0.28 dB)
    was proposed; calibrating without that sample gains +0.38 dB and was never tried."""
    from qinspect.analysis.data_remedies import dominant_samples

    rng = np.random.default_rng(0)
    maxima = rng.uniform(0.12, 0.16, 48)
    maxima[9] = 0.40
    assert dominant_samples(maxima).tolist() == [9]
    maxima[30] = 0.39  # two samples alike, both far above the rest
    assert dominant_samples(maxima).tolist() == [9, 30]
    maxima[30] = 0.25  # a second sample in between: the top one is not 2x every other
    assert dominant_samples(maxima).tolist() == []
    assert dominant_samples(rng.uniform(0.1, 0.2, 48)).tolist() == []  # the data's own spread
    assert dominant_samples(np.array([1.0, 0.1, 0.1, 0.1])).tolist() == []  # too few samples to tell
