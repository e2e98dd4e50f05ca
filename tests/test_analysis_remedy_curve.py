"""Try it: a finding's fix applied as a what-if, with the accumulated error before and after it."""

from __future__ import annotations

import math

import pytest
from analysis_fixtures import ROOT_CAUSES

from qinspect.analysis.diagnose import diagnose
from qinspect.analysis.remedy_curve import remedy_curves
from qinspect.dpu.emulator import Emulator


@pytest.mark.tf
def test_the_fix_of_a_dim_calibration_reproduces_the_measured_remedy_and_lifts_the_curve(tmp_path):
    plant = ROOT_CAUSES["dim_calibration"][0](tmp_path)
    emu = Emulator.from_model(str(plant.path), calib_inputs=plant.calib, batch_size=8)
    name = emu.graph.inputs[0]
    d = diagnose(emu.graph, {name: plant.eval}, {name: plant.calib}, data_label="evaluation")
    f = next(g for g in d.findings if g.kind == plant.kind)
    assert f.fix is not None and f.fix.positions  # the recalibration's positions travel with the finding
    head = {name: plant.eval[: d.n_sens_samples]}  # the samples the diagnosis measured its remedies on
    curves = remedy_curves(emu.graph, head, f.fix.positions, f.fix.float_nodes, f.remedy["action"], batch_size=5)
    # Measured in other batches by another walk, the same numbers the diagnosis measured:
    assert curves.output_before.sqnr_db == pytest.approx(d.output.sqnr_db, abs=1e-3)
    assert curves.output_after.sqnr_db == pytest.approx(f.remedy["measured_sqnr_db"], abs=1e-3)
    assert curves.gain_db == pytest.approx(f.remedy["measured_gain_db"], abs=1e-3)
    assert curves.top1_after == pytest.approx(f.remedy["top1_agreement"])
    assert curves.n_samples == d.n_sens_samples
    # The input, where the cause starts, gains at once; nothing gets worse downstream.
    node = f.evidence["node"]["value"]
    assert curves.after[node].sqnr_db > curves.before[node].sqnr_db + 1.0
    for n in emu.graph.nodes:
        b, a = curves.before[n.name].sqnr_db, curves.after[n.name].sqnr_db
        assert not (math.isfinite(b) and math.isfinite(a)) or a >= b - 0.5, n.name
