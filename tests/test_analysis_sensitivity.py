"""Sensitivity pass against the emulator facade's own walk and against what-if runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.analysis.metrics import ErrorStats
from qinspect.analysis.sensitivity import sensitivity, what_if
from qinspect.dpu.emulator import Emulator


@pytest.fixture(scope="module")
def rich(refcases):
    emu = Emulator.from_quantized(refcases / "rich" / "quantized.h5")
    x = np.load(refcases / "rich" / "calib.npy")[:8]
    return emu, {emu.graph.inputs[0]: x}


def test_accumulated_and_isolated_match_the_facade(rich):
    emu, data = rich
    sens = sensitivity(emu.graph, data, batch_size=4, mode="int")
    facade = emu.run(data[emu.graph.inputs[0]], batch_size=4, stats_factory=ErrorStats)
    g = emu.graph
    # An activation fused into a conv: the facade isolates the fused pair as one DPU op, the sensitivity
    # pass the activation's own quantization (documented in qinspect.analysis.sensitivity).
    fused = {n.name for n in g.nodes for src in n.inputs[:1] if g.fused_activation(g[src]) is n}
    assert "quant_relu1" in fused
    checked = 0
    for name, r in facade.items():
        if r.accumulated is None or not r.accumulated.n:
            continue
        assert sens.accumulated[name].sqnr_db == pytest.approx(r.accumulated.sqnr_db, rel=1e-9), name
        if name in sens.isolated and r.isolated is not None and name not in fused:
            assert sens.isolated[name].sqnr_db == pytest.approx(r.isolated.sqnr_db, rel=1e-9), name
            checked += 1
    assert checked >= 20
    out = emu.graph.outputs[0]
    assert sens.output.sqnr_db == pytest.approx(facade[out].accumulated.sqnr_db, rel=1e-9)


def test_keep_float_gain_equals_a_what_if_run(rich):
    emu, data = rich
    sens = sensitivity(emu.graph, data, batch_size=8)
    by = sens.by_layer()
    for node in ("quant_up9c", "quant_fc14", "quant_img"):
        alone_float = what_if(emu.graph, data, float_nodes=[node], batch_size=8).sqnr_db
        assert by[node].keep_float_gain_db == pytest.approx(alone_float - sens.output.sqnr_db, abs=1e-9)
    # Everything float but one node: the only-quantized figure; the float model itself is exact.
    assert all(s.only_quantized_sqnr_db > sens.output.sqnr_db - 1e-9 or s.only_noise_share > 0.2
               for s in sens.layers)
    assert math.isfinite(sens.output.sqnr_db)
    # Noise shares are ratios of measured noise energies.
    s = by["quant_up9c"]
    assert s.only_noise_share == pytest.approx(10 ** ((sens.output.sqnr_db - s.only_quantized_sqnr_db) / 10),
                                               rel=1e-6)
