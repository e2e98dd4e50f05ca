"""The emulator against real Vitis AI quantizer runs (shared/refcases/vitis/{small,rich,mbv3small}): bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.analysis.metrics import ErrorStats
from qinspect.dpu.calibrate import calibrate, iter_batches
from qinspect.dpu.emulator import Emulator, compare_dump
from qinspect.dpu.executor import Evaluator, batch_inputs
from qinspect.dpu.from_quantized import load_graph
from qinspect.dpu.rewrites import graph_from_float
from qinspect.io.model_file import open_model
from qinspect.io.vitis import load_quantized_model, open_dump
from tests.dpu_graph_fixtures import positions_json, refcase

# mbv3small (a stock MobileNetV3Small, 96x96) takes a few seconds per test: marked slow.
CASES = ["small", "rich", pytest.param("mbv3small", marks=pytest.mark.slow)]
# Folded / equalized kernels and biases each case's float model yields.
WEIGHT_COUNTS = {"small": 6, "rich": 23, "mbv3small": 108}


def _key(d):
    return (d["layer"], d["tensor"], d["before"], d["after"])


@pytest.mark.parametrize("case", CASES)
def test_quantized_h5_positions_equal_positions_json(case):
    root = refcase(case)
    m = load_quantized_model(root / "quantized.h5")
    ref = positions_json(root)
    assert m.positions() == ref["positions"]
    assert m.tensor_types() == ref["tensor_types"]


@pytest.mark.parametrize("case", CASES)
def test_calibration_from_float_model_reproduces_vitis(case):
    root = refcase(case)
    ref = positions_json(root)
    with open_model(root / "float.h5") as src:
        g = graph_from_float(src.graph, src)
    res = calibrate(g, iter_batches(np.load(root / "calib.npy"), 4), 4)
    assert res.batches == ref["calib_batches"]
    assert res.batch_positions == ref["calib_batch_positions"]
    assert res.pre_refine == ref["pre_refine_positions"]
    assert res.positions == ref["positions"]
    assert sorted(map(_key, res.refine_changes)) == sorted(map(_key, ref["refine_changes"]))
    # Every refine change is explained by a logged adjustment with the same before/after.
    logged = {(a.slot[0], a.slot[1]): (a.before, a.after) for a in res.adjustments}
    for ch in ref["refine_changes"]:
        assert logged[(ch["layer"], ch["tensor"])][1] == ch["after"]


@pytest.mark.parametrize("case", CASES)
def test_folded_equalized_weights_equal_quantized_h5(case):
    """BN folding and CLE in float32 give the quantizer's stored weights exactly."""
    root = refcase(case)
    with open_model(root / "float.h5") as src:
        g = graph_from_float(src.graph, src)
    q = load_graph(root / "quantized.h5")
    compared = 0
    for n in g.nodes:
        for k, w in n.weights.items():
            np.testing.assert_array_equal(w, q[n.name].weights[k], err_msg=f"{n.name}/{k}")
            compared += 1
        assert n.weight_slots == q[n.name].weight_slots
        assert n.out_slot == q[n.name].out_slot
    assert compared == WEIGHT_COUNTS[case]


@pytest.mark.parametrize("case", CASES)
def test_dump_bit_exact_from_quantized_h5(case):
    root = refcase(case)
    emu = Emulator.from_quantized(root / "quantized.h5")
    dump = open_dump(root / "dump_results", emu.quantized_model)
    assert dump.unmapped == [] and dump.missing == []
    res = compare_dump(emu, dump, np.load(root / "dump_inputs.npy"))
    int8_files = [p for p in (root / "dump_results").rglob("*.bin") if not p.name.endswith("_float.bin")]
    float_files = [p for p in (root / "dump_results").rglob("*_float.bin")]
    gating = [m for m in res if m.gating]
    assert len(gating) == len(int8_files)
    assert len(res) == len(int8_files) + len(float_files)  # every file of the folder compared
    assert {m.kind for m in gating} == {"weight", "activation"}
    bad = [(m.name, m.matched, m.total, m.first_mismatch) for m in gating if not m.ok]
    assert bad == []
    # The informative float files agree exactly too (fake-quantized values and exact conv sums).
    assert all(m.ok for m in res if not m.gating)


@pytest.mark.parametrize("case", CASES)
def test_own_calibration_chain_reproduces_dump(case):
    """float.h5 + calib.npy -> our rewrites, calibration, constraints, integer pipeline == Vitis dump."""
    root = refcase(case)
    emu = Emulator.from_model(root / "float.h5", np.load(root / "calib.npy"), batch_size=4)
    dump = open_dump(root / "dump_results", load_quantized_model(root / "quantized.h5"))
    res = compare_dump(emu, dump, np.load(root / "dump_inputs.npy"))
    assert [m.name for m in res if m.gating and not m.ok] == []
    assert sum(m.total for m in res if m.gating) > 1000


@pytest.mark.parametrize("case", CASES)
def test_integer_pipeline_equals_float32_simulation(case):
    root = refcase(case)
    g = load_graph(root / "quantized.h5")
    x = batch_inputs(g, np.load(root / "calib.npy")[:8])
    iv = Evaluator(g, "int").run(x)
    sv = Evaluator(g, "sim").run(x)
    for n in g.nodes:
        a, b = iv[n.name], sv[n.name]
        np.testing.assert_array_equal(a.float(), b.float(), err_msg=n.name)


def test_batch_size_is_a_parameter():
    root = refcase("rich")
    with open_model(root / "float.h5") as src:
        g = graph_from_float(src.graph, src)
    res = calibrate(g, iter_batches(np.load(root / "calib.npy"), 8), 8)
    assert res.batches == 4
    assert all(len(v) == 4 for keys in res.batch_positions.values() for v in keys.values())


@pytest.mark.parametrize("case", CASES)
def test_quantized_h5_graph_with_the_float_reference_equals_the_own_graph(case):
    """Default options: the quantized model's graph measured against the float model gives the same
    figures, layer by layer, as the float model's own rewritten graph with the same positions."""
    root = refcase(case)
    x = np.load(root / "calib.npy")[:4]
    q = Emulator.from_quantized(root / "quantized.h5")
    with open_model(root / "float.h5") as src:
        note = q.use_float_reference(src)
        own = Emulator.from_model(src)
    assert "WARNING" not in note
    assert own.load_positions(positions_json(root)) == []
    rq = q.run(x, stats_factory=ErrorStats)
    ro = own.run(x, stats_factory=ErrorStats)
    assert set(rq) == set(ro)
    for name in ro:
        for attr in ("accumulated", "isolated"):
            a, b = getattr(rq[name], attr), getattr(ro[name], attr)
            assert (a is None) == (b is None), name
            if a is not None:
                assert a.mse == b.mse, (name, attr)
