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


def _full_walk(graph, data, float_nodes=(), only=None):
    """Every node of the graph walked from the inputs, with no reuse: ``float_nodes`` computed in float
    (the rest int8), or with ``only`` the one node quantized (the rest float)."""
    from qinspect.dpu.executor import Evaluator, Value

    fl, it = Evaluator(graph, "float"), Evaluator(graph, "sim")
    values = {}
    for node in graph.nodes:
        if node.op == "input":
            values[node.name] = Value(f=np.asarray(data[node.name], np.float32))
            continue
        ins = [values[i] for i in node.inputs]
        if only is None:
            quantized = node.name not in float_nodes
        else:
            quantized = node.name == only
            if quantized:
                ins = [it.quant_value(v.float(), graph.output_slot(i)) for v, i in zip(ins, node.inputs, strict=True)]
        values[node.name] = it.node(node, ins) if quantized else fl.node(node, [Value(f=v.float()) for v in ins])
    ref = Evaluator(graph, "float").run(data, keep=graph.outputs)
    stats = ErrorStats()
    for name in graph.outputs:
        stats.update(ref[name].float(), values[name].float())
    return stats


def test_partial_walks_equal_full_reruns_of_every_layer(rich, monkeypatch):
    """The fast path (reused prefix, walks stopped where a value comes out unchanged) gives exactly what
    a full re-run of the whole graph gives, for every layer's keep-float and only-quantized runs."""
    from qinspect.analysis import sensitivity as sens_mod

    emu, data = rich
    cut = []
    same = sens_mod._same
    monkeypatch.setattr(sens_mod, "_same", lambda a, b: cut.append(same(a, b)) or cut[-1])
    sens = sensitivity(emu.graph, data, batch_size=8)
    assert any(cut), "no partial walk was cut short: the test would not exercise the shortcut"
    full = sens.output.sqnr_db
    assert len(sens.layers) >= 20
    for s in sens.layers:
        kept = _full_walk(emu.graph, data, float_nodes={s.node}).sqnr_db
        assert s.keep_float_gain_db == (0.0 if full == math.inf else kept - full), s.node
        assert s.only_quantized_sqnr_db == _full_walk(emu.graph, data, only=s.node).sqnr_db, s.node


def test_no_whatifs_keeps_the_other_figures(rich):
    emu, data = rich
    a = sensitivity(emu.graph, data, batch_size=8)
    steps = []
    b = sensitivity(emu.graph, data, batch_size=8, whatifs=False, progress=lambda d, t: steps.append((d, t)))
    assert b.layers == [] and a.layers
    assert b.output.sqnr_db == a.output.sqnr_db
    for name in a.isolated:
        assert b.isolated[name].sqnr_db == a.isolated[name].sqnr_db
        assert b.own[name].sqnr_db == a.own[name].sqnr_db
    assert steps[-1][0] == steps[-1][1] and all(d1 <= d2 for (d1, _), (d2, _) in zip(steps, steps[1:], strict=False))


def test_row_names_are_unique_layer_names():
    from types import SimpleNamespace as N

    from qinspect.analysis.sensitivity import row_names

    nodes = [N(name="quant_sep_depthwise_conv", op="depthwise_conv2d", origin=["sep"]),
             N(name="quant_sep_pointwise_conv", op="conv2d", origin=["sep"]),
             N(name="quant_c1", op="conv2d", origin=["c1", "bn1"]),
             N(name="quant_t_1", op="conv2d", origin=["t"]), N(name="quant_t_2", op="conv2d", origin=["t"])]
    assert row_names(nodes) == {"quant_sep_depthwise_conv": "sep (depthwise)", "quant_sep_pointwise_conv":
                                "sep (pointwise)", "quant_c1": "bn1", "quant_t_1": "t (quant_t_1)",
                                "quant_t_2": "t (quant_t_2)"}


@pytest.mark.parametrize("mode", ["sim", "int"])
def test_partial_what_if_equals_a_full_what_if(rich, mode):
    """Positions changed (a fused activation's output, a conv weight, a late output) and a node kept float:
    the partial re-walk from the nodes reading them equals the full what-if run."""
    from qinspect.analysis.sensitivity import BatchRunner, _output_stats, top1_counts

    emu, data = rich
    g = emu.graph
    fused = next(n for n in g.nodes if n.op in ("conv2d", "add") and g.fused_activation(n) is not None)
    act = g.fused_activation(fused)
    conv = next(n for n in g.nodes if n.op == "conv2d" and "kernel" in n.weight_slots)
    late = [n for n in g.nodes if n.out_slot is not None][-3]
    cases = [({act.out_slot: g.pos(act.out_slot) - 2}, []),
             ({conv.weight_slots["kernel"]: g.pos(conv.weight_slots["kernel"]) - 1}, []),
             ({late.out_slot: g.pos(late.out_slot) + 1}, [conv.name])]
    run = BatchRunner(g, data, mode)
    for positions, floats in cases:
        fast = _output_stats(g, run.ref, run.what_if(positions, floats))
        full = what_if(g, data, positions=positions, float_nodes=floats, batch_size=8, mode=mode)
        assert fast.sqnr_db == full.sqnr_db and fast.sqnr_db != run_sqnr(g, run), (positions, floats)
    agree, total = top1_counts(g, run.ref, run.base)
    assert 0 <= agree <= total


def run_sqnr(g, run):
    from qinspect.analysis.sensitivity import _output_stats

    return _output_stats(g, run.ref, run.base).sqnr_db


def test_output_se_is_the_jackknife_of_the_per_sample_powers(rich):
    """Per-sample powers add up to the pass's own sums, and the standard error is the leave-one-out
    jackknife of the SQNR recomputed here by hand from the facade's outputs."""
    emu, data = rich
    # 8 samples over 3 batches: the pieces join in order
    sens = sensitivity(emu.graph, data, batch_size=3, mode="int", whatifs=False)
    assert sens.output_signal.shape == sens.output_noise.shape == (8,)
    assert sens.output_signal.sum() == pytest.approx(sens.output.sum_ref2, rel=1e-12)
    assert sens.output_noise.sum() == pytest.approx(sens.output.sum_d2, rel=1e-12)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    # the same batches as the pass: float32 BLAS rounds a batch of 8 and batches of 3 differently (2e-6 apart in
    # the standard error with numpy 2.4's OpenBLAS)
    emu.run(data[emu.graph.inputs[0]], layers=[], batch_size=3, on_output=lambda _n, f, q: seen.append((f, q)))
    ref = np.concatenate([f for f, _q in seen]).astype(np.float64)
    test = np.concatenate([q for _f, q in seen]).astype(np.float64)
    loo = [10 * np.log10(np.sum(np.delete(ref, i, 0) ** 2)
                         / np.sum((np.delete(test, i, 0) - np.delete(ref, i, 0)) ** 2)) for i in range(8)]
    assert sens.output_se_db == pytest.approx(np.sqrt(7 / 8 * np.sum((np.array(loo) - np.mean(loo)) ** 2)), rel=1e-9)
