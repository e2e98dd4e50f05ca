"""The hardware-versus-simulation finding (qinspect.analysis.hw_vs_sim): hand-counted codes at risk, and
no finding where real quantizer runs matched the DPU bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qinspect.analysis.hw_vs_sim import EXACT_LIMIT, hw_vs_sim_finding, sim_vs_dpu
from tests.conftest import run_cli
from tests.dpu_graph_fixtures import refcase

K = 6000  # inputs of the planted Dense


@pytest.fixture(scope="module")
def wide_dense(tmp_path_factory):
    """Dense(K -> 64) with weights +-1 alternating (output j has 2j more +1s, so outputs are small and
    the DPU's shift limits leave the positions alone); inputs 1.0 (three samples) or 0.5 (five). Input and
    weights sit at position 6 (the test reads them back): codes 64 for 1.0, 32 for 0.5, +-64 for the
    weights. Each output's sum of |products| is 6000 * 64 * 64 = 24,576,000 > 2^24 for a sample of ones
    and 6000 * 32 * 64 = 12,288,000 < 2^24 for a sample of halves, whatever the final sum."""
    keras = pytest.importorskip("tf_keras")
    folder = tmp_path_factory.mktemp("hw_vs_sim")
    inp = keras.Input((K,), name="x")
    model = keras.Model(inp, keras.layers.Dense(64, name="wide")(inp))
    w = np.where((np.arange(K) % 2 == 0)[:, None], 1.0, -1.0).repeat(64, axis=1).astype(np.float32)
    for j in range(64):
        w[:2 * j, j] = 1.0
    model.get_layer("wide").set_weights([w, np.zeros(64, np.float32)])
    model.save(folder / "wide.h5")
    x = np.full((8, K), 0.5, np.float32)
    x[[1, 4, 6]] = 1.0  # three samples of ones
    np.save(folder / "x.npy", x)
    return folder


def test_codes_at_risk_are_counted_by_hand(wide_dense):
    from qinspect.dpu.emulator import Emulator

    x = np.load(wide_dense / "x.npy")
    emu = Emulator.from_model(str(wide_dense / "wide.h5"), x, 8)
    res = sim_vs_dpu(emu.graph, [x])
    (row,) = [r for r in res.layers if r.op == "dense"]
    node = emu.graph[row.node]
    pw = emu.graph.pos(node.weight_slots["kernel"])
    pi = emu.graph.pos(emu.graph[node.inputs[0]].out_slot)
    assert (pi, pw) == (6, 6)
    one = K * 2**pi * 2**pw  # every input 1.0 -> code 2^pi, every weight 1.0 -> code 2^pw
    assert row.at_risk == 3 * 64  # the outputs of the three samples of ones, no other
    assert row.abs_sum_max == one and row.abs_sum_max > EXACT_LIMIT
    assert row.total == 8 * 64 and row.cause == "float32 partial sums"
    f = hw_vs_sim_finding(res, {n.name: n.name for n in emu.graph.nodes})
    assert f is not None and f.kind == "hw_vs_sim" and f.origin == row.node and f.affects == []
    assert f.evidence["codes_at_risk"]["value"] == 192
    assert "192 codes at 1 layer(s)" in f.advice and "1.46x 2^24" in f.advice
    # Halves only: every sum stays at 12,288,000, float32 adds exactly in any order: no finding.
    halves = np.full((8, K), 0.5, np.float32)
    res = sim_vs_dpu(emu.graph, [halves])
    assert res.codes_at_risk == 0 and res.codes_differ == 0
    assert hw_vs_sim_finding(res, {}) is None


@pytest.mark.parametrize("case", ["small", "rich", "mbv3small"])
def test_no_finding_where_the_quantizers_dump_matched_the_dpu(case):
    """Every dumped tensor of these runs equals the integer pipeline: the simulation cannot have differed."""
    from qinspect.dpu.emulator import Emulator

    root = refcase(case)
    emu = Emulator.from_quantized(str(root / "quantized.h5"))
    res = sim_vs_dpu(emu.graph, [np.load(root / "dump_inputs.npy")])
    assert res.codes_differ == 0 and res.codes_at_risk == 0 and res.layers


def test_diagnose_reports_it(wide_dense):
    r = run_cli("diagnose", str(wide_dense / "wide.h5"), "--inputs", str(wide_dense / "x.npy"), "--json",
                "--no-sensitivity", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    (f,) = [f for f in json.loads(r.stdout)["findings"] if f["kind"] == "hw_vs_sim"]
    assert f["layer"] == "wide" and f["origin"] == "wide"
    assert f["evidence"]["codes_at_risk"]["value"] == 192
