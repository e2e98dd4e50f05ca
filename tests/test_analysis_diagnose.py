"""Diagnosis on models with one planted cause each: the planted layer and kind must come out first."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from analysis_fixtures import BUILDERS, ROOT_CAUSES, Plant

from qinspect.analysis.diagnose import diagnose
from qinspect.dpu.emulator import Emulator


@pytest.fixture(scope="session")
def plants(tmp_path_factory) -> dict[str, Plant]:
    folder = tmp_path_factory.mktemp("plants")
    return {kind: build(folder) for kind, build in BUILDERS.items()}


def _diagnose(plant: Plant, use_eval: bool = True):
    emu = Emulator.from_model(str(plant.path), calib_inputs=plant.calib, batch_size=8)
    name = emu.graph.inputs[0]
    if use_eval and plant.eval is not None:
        return emu, diagnose(emu.graph, {name: plant.eval}, {name: plant.calib}, data_label="evaluation")
    return emu, diagnose(emu.graph, {name: plant.calib})


@pytest.mark.tf
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_planted_cause_ranks_first(plants, kind):
    plant = plants[kind]
    _, d = _diagnose(plant)
    assert d.findings, f"nothing found for planted {kind}"
    top = d.findings[0]
    assert (top.layer, top.kind) == (plant.layer, plant.kind), [(f.layer, f.kind, f.severity_db) for f in d.findings]
    # Every evidence entry says how it was computed.
    assert all(isinstance(e, dict) and e.get("how") for e in top.evidence.values())
    assert top.advice and top.advice.endswith(".")
    json.dumps(d.to_dict(), allow_nan=False)  # strict JSON


@pytest.mark.tf
def test_clean_model_has_no_accuracy_finding(plants):
    # The coverage model measured on its own calibration data: nothing is wrong with it.
    _, d = _diagnose(plants["coverage"], use_eval=False)
    assert d.findings == [], [(f.layer, f.kind, f.severity_db) for f in d.findings]


@pytest.mark.tf
def test_evidence_of_planted_causes(plants):
    _, d = _diagnose(plants["channel_spread"])
    f = d.findings[0]
    # The 50x channel wastes nothing, every other one log2(50) +- the kernel's own spread.
    bits = f.evidence["bits_wasted"]["value"]
    assert bits[2] == 0.0 and min(b for i, b in enumerate(bits) if i != 2) > 3
    assert f.evidence["cle"]["value"].startswith("not applicable")
    _, d = _diagnose(plants["cpu_fallback"])
    f = d.findings[0]
    assert f.evidence["splits_model"]["value"] is True
    assert f.evidence["partitions"]["value"] == 2
    assert "0.2" in f.evidence["reason"]["value"]
    last = d.findings[-1]
    assert (last.layer, last.kind) == ("probs", "cpu_fallback")
    assert last.evidence["splits_model"]["value"] is False
    # a float softmax at the edge requantizes nothing: the quantizer before it is the previous layer's, so
    # no estimated cost is charged to it (it was the Dense output's, up to the 30 dB cap)
    assert last.severity_db == 0.0 and last.evidence["layer_noise_frac"]["value"] == 0.0
    _, d = _diagnose(plants["coverage"])
    f = d.findings[0]
    # position 7 covers [-1, 127/128]; inputs 2 * U[0, 0.9]: about 45% of them lie above 127/128.
    assert f.evidence["position"]["value"] == 7
    x = plants["coverage"].eval
    assert f.evidence["outside_int8_range_frac"]["value"] == pytest.approx(np.mean(x > 127 / 128))
    _, d = _diagnose(plants["alignment"])
    f = d.findings[0]
    assert f.evidence["severity_basis"]["value"] == "what-if"
    rows = f.evidence["branches"]["value"]
    assert [r["branch"] for r in rows] == ["relu_a"] and rows[0]["sqnr_loss_db"] > 20


@pytest.mark.tf
def test_sensitivity_points_at_the_planted_layer(plants):
    _, d = _diagnose(plants["outlier_range"])
    best = max(d.sensitivity, key=lambda s: s.keep_float_gain_db)
    assert best.layer == "relu_outlier" and best.keep_float_gain_db > 6
    # Only the spike layer's own tensor carries no error: its quantization is exact.
    spike = next(s for s in d.sensitivity if s.layer == "spike")
    assert spike.only_quantized_sqnr_db == math.inf and spike.only_noise_share == 0.0


def test_vitis_rich_refcase_alignment(refcases):
    """The real quantizer's concat alignment crushes the sigmoid branch (DPU_NUMERICS.md section 7)."""
    emu = Emulator.from_quantized(refcases / "rich" / "quantized.h5")
    x = np.load(refcases / "rich" / "calib.npy")
    d = diagnose(emu.graph, {emu.graph.inputs[0]: x})
    top = d.findings[0]
    assert (top.layer, top.kind) == ("cat10", "alignment")
    assert top.evidence["own_positions_inferred"]["value"] is True
    assert d.worst_by_layer()["cat10"] is top and d.for_layer("quant_cat10") == [top]
    assert all(len(d.for_layer(layer)) >= 1 for layer in d.worst_by_layer())
    rows = {r["branch"]: r for r in top.evidence["branches"]["value"]}
    worst = max(rows.values(), key=lambda r: r["sqnr_loss_db"])
    # The sigmoid branch: position 7 on its own (values in [0, 1]), 2 after the alignment.
    assert worst["branch"] == "up9c" and worst["own_position"] == 7 and worst["sqnr_loss_db"] > 25
    assert top.evidence["shared_position"]["value"] == 2
    assert top.severity_db > 1.0


def test_memory_budget_reduces_samples_and_says_so(refcases):
    emu = Emulator.from_quantized(refcases / "rich" / "quantized.h5")
    x = np.load(refcases / "rich" / "calib.npy")
    d = diagnose(emu.graph, {emu.graph.inputs[0]: x}, memory_budget=200_000)
    assert d.n_samples < 32
    assert any("must fit in" in note for note in d.notes)
    assert d.to_dict()["samples"] == d.n_samples


def _first_of_kind(d, kind):
    return next(f for f in d.findings if f.kind == kind)


@pytest.mark.tf
@pytest.mark.parametrize("name", list(ROOT_CAUSES))
def test_root_cause_is_found_at_its_origin_with_a_measured_remedy(tmp_path, name):
    build, affected = ROOT_CAUSES[name]
    plant = build(tmp_path)
    _, d = _diagnose(plant)
    f = _first_of_kind(d, plant.kind)
    assert (f.layer, f.origin) == (plant.layer, plant.layer), [(g.layer, g.kind, g.origin) for g in d.findings]
    assert set(affected) <= set(f.affects), f.affects
    # A calibration-side cause is measured where it lives; its remedy is tried on the evaluation data.
    if plant.kind == "outlier_range":
        assert f.evidence["data"]["value"] == "calibration data (outliers absent in use)"
    assert f.remedy["kind"] == "recalibrate" and f.remedy["measured_gain_db"] > 1.0
    assert f.severity_db == f.remedy["measured_gain_db"]
    assert f.remedy["measured_sqnr_db"] == pytest.approx(d.output.sqnr_db + f.remedy["measured_gain_db"])
    assert 0 < f.noise_share <= 1 and d.explained >= f.noise_share
    # Only one finding of the kind: the downstream ones are folded into the origin's.
    assert sum(g.kind == plant.kind for g in d.findings) == 1


@pytest.mark.tf
@pytest.mark.parametrize("kind", [k for k in BUILDERS if k != "cpu_fallback"])
def test_every_planted_cause_carries_a_positive_measured_remedy(plants, kind):
    plant = plants[kind]
    _, d = _diagnose(plant)
    f = d.findings[0]
    assert f.remedy is not None and f.remedy["measured_gain_db"] > 0
    assert f.origin == f.layer and f.noise_share > 0
    assert all(g.remedy is not None and g.remedy["measured_gain_db"] >= 0.1 for g in d.findings
               if g.kind not in ("cpu_fallback", "alignment"))
    data = d.to_dict()
    assert {"sqnr_db", "sqnr_se_db", "top1_agreement"} <= set(data["output"]) and "explained" in data
    assert {"kind", "action", "measured_sqnr_db", "measured_gain_db", "top1_agreement"} <= set(
        data["findings"][0]["remedy"])
    # measured on the sensitivity samples (one batch here), so each gain carries its spread over them
    assert data["output"]["sqnr_se_db"] >= 0 and data["findings"][0]["remedy"]["measured_gain_se_db"] >= 0


@pytest.mark.tf
def test_a_root_cause_is_not_also_reported_as_error_growth(tmp_path):
    plant = ROOT_CAUSES["calib_outliers"][0](tmp_path)
    _, d = _diagnose(plant)
    assert [f.kind for f in d.findings if f.layer == "img"] == ["outlier_range"]


@pytest.mark.tf
def test_diagnosis_json_lists_the_measured_advice(plants):
    _, d = _diagnose(plants["error_growth"])
    data = d.to_dict()
    rows = data["advice"]
    assert rows[0]["output_sqnr_db"] >= rows[-1]["output_sqnr_db"]
    as_is = next(r for r in rows if not r["keep_float"])
    assert as_is["output_sqnr_db"] == data["output"]["sqnr_db"]
    assert any(r["keep_float"] == ["conv_growth"] and "ignore_layers=['conv_growth']" in r["command"] for r in rows)


@pytest.mark.tf
def test_explained_is_the_joint_fix_measured_by_a_full_walk(tmp_path):
    """``explained`` must be what applying the budget's fixes together removes, re-measured here with a full
    emulator walk (not the diagnosis' partial walks)."""
    from qinspect.analysis.remedies import noise_share
    from qinspect.analysis.sensitivity import what_if

    plant = ROOT_CAUSES["calib_outliers"][0](tmp_path)
    emu, d = _diagnose(plant)
    graph = emu.graph
    budget = [f for f in d.findings if f.evidence.get("budget_share", {}).get("value")]
    assert budget and d.explained is not None
    positions, floats = {}, []
    for f in budget:
        positions.update(f.fix.positions)
        floats += [n for n in f.fix.float_nodes if n not in floats]
    sample = {graph.inputs[0]: plant.eval[: d.n_sens_samples]}
    after = what_if(graph, sample, positions, tuple(floats), d.n_sens_samples, d.mode)
    assert d.explained == pytest.approx(noise_share(after.sqnr_db - d.output.sqnr_db), abs=1e-6)
    assert sum(f.evidence["budget_share"]["value"] for f in budget) == pytest.approx(d.explained, abs=1e-6)
    # its spread over the samples, carried over from the set's gain: a share's error, not a dB figure
    assert d.explained_se is not None and 0 < d.explained_se < 0.5
    assert d.to_dict()["explained_se"] == d.explained_se


@pytest.mark.tf
def test_default_what_if_samples_follow_the_work_they_cost(plants, monkeypatch):
    """By default the what-if runs take as many samples as SENS_WORK_BUDGET of per-layer walks allows,
    16 to 64 and no more than there are: a small model gets more (its figures are noisy on few samples)."""
    from qinspect.analysis import diagnose as dg
    from qinspect.analysis.sensitivity import work_per_sample

    plant = plants["coverage"]
    emu = Emulator.from_model(str(plant.path), calib_inputs=plant.calib, batch_size=8)
    graph = emu.graph
    work = work_per_sample(graph)
    assert work > 0
    assert dg.default_sens_samples(graph, 1000) == 64 and dg.default_sens_samples(graph, 40) == 40
    monkeypatch.setattr(dg, "SENS_WORK_BUDGET", 20.5 * work)  # room for 20 samples' walks
    assert dg.default_sens_samples(graph, 1000) == 20
    monkeypatch.setattr(dg, "SENS_WORK_BUDGET", 3 * work)  # a big model: never below 16
    assert dg.default_sens_samples(graph, 1000) == 16 and dg.default_sens_samples(graph, 5) == 5
    n = len(plant.eval)
    d = diagnose(graph, {graph.inputs[0]: plant.eval}, data_label="evaluation", with_sensitivity=False)
    assert d.n_sens_samples == min(n, 16)
    # memory bounds it too: every sample's float, int8 and one partial walk as float32
    values = sum(math.prod(int(d) for d in (x.output_shape or [])[1:] if d) for x in graph.nodes)
    monkeypatch.setattr(dg, "SENS_WORK_BUDGET", 1e18)
    monkeypatch.setattr(dg, "SENS_MEMORY_BUDGET", 30 * 12 * values)
    assert dg.default_sens_samples(graph, 1000) == 30


@pytest.mark.tf
@pytest.mark.parametrize("use_eval", [True, False])
def test_outliers_at_the_model_input_are_never_remedied_by_keeping_the_input_float(tmp_path, use_eval):
    """The DPU reads its input in int8: 'keep img in float' (ignore_layers=['img']) was advised for
    outliers in the inputs, and 'clip the activation and retrain' for values no layer makes."""
    plant = ROOT_CAUSES["calib_outliers"][0](tmp_path)
    _, d = _diagnose(plant, use_eval=use_eval)
    assert not any((f.remedy or {}).get("kind") == "keep_float" and f.layer == "img" for f in d.findings)
    assert not any("'img'" in row["command"] for row in d.advice)
    if use_eval:  # outliers absent in use: recalibrating without them is the measured remedy
        f = _first_of_kind(d, "outlier_range")
        assert f.layer == "img" and f.remedy["kind"] == "recalibrate" and f.remedy["measured_gain_db"] > 0
        # the samples holding the outliers, named and dropped: a data fix, never a float input or a retrain
        assert "calibrate without them" in f.advice and "retrain" not in f.advice and "float" not in f.advice
        assert f.evidence["outlier_samples"]["value"] and "calibrate without the outlier samples" in f.remedy["action"]


def test_the_rounding_finding_names_one_list_in_one_order():
    """Its sentence listed the adders by keep-float gain, its advice in the order the noise budget picked
    them (another set too), and it was anchored to the third of them. A chain of 24 random Dense layers
    loses about 20 dB to rounding spread over many of them."""
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model

    rng = np.random.default_rng(0)
    layers, weights, prev = [("x", "InputLayer", {}, [], [None, 16])], {}, "x"
    for i in range(24):
        weights[f"d{i}"] = {"kernel": (rng.normal(size=(16, 16)) / 4).astype("f4"), "bias": np.zeros(16, "f4")}
        layers.append((f"d{i}", "Dense", {"units": 16, "activation": "linear"}, [prev], [None, 16]))
        prev = f"d{i}"
    src = model(layers, [prev], weights)
    emu = Emulator(graph_from_float(src.graph, src))
    x = {"x": rng.normal(size=(64, 16)).astype("f4")}
    emu.calibrate(x, 32)
    d = diagnose(emu.graph, x)
    f = next(f for f in d.findings if f.kind == "accumulated_rounding")
    adders = [a["layer"] for a in f.evidence["adders"]["value"]]
    gains = [a["keep_float_gain_db"] for a in f.evidence["adders"]["value"]]
    assert len(adders) >= 2 and gains == sorted(gains, reverse=True)
    assert f.layer == adders[0] and f.affects == adders
    assert f"added most by {', '.join(adders)}" in f.advice


def test_a_rescaling_after_the_input_is_no_round_trip():
    """The input's own quantizer counted as a DPU subgraph: a Rescaling right after the input read as a
    CPU round trip splitting the model into '2 DPU subgraphs' (every family doing its own preprocessing)."""
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model

    rng = np.random.default_rng(7)
    w = {"c": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype("f4"), "bias": np.zeros(4, "f4")}}
    src = model([("x", "InputLayer", {}, [], [None, 6, 6, 3]),
                 ("scale", "Rescaling", {"scale": 1 / 255, "offset": 0.0}, ["x"], [None, 6, 6, 3]),
                 ("c", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "relu"},
                  ["scale"], [None, 6, 6, 4])], ["c"], w)
    emu = Emulator(graph_from_float(src.graph, src))
    x = {"x": rng.uniform(0, 255, size=(8, 6, 6, 3)).astype("f4")}
    emu.calibrate(x, 8)
    assert emu.graph["scale"].device == "CPU"
    d = diagnose(emu.graph, x, with_sensitivity=False)
    f = next(f for f in d.findings if f.kind == "cpu_fallback" and f.layer == "scale")
    assert f.evidence["splits_model"]["value"] is False and f.evidence["partitions"]["value"] == 1
    assert "at the edge of the model" in f.advice


def test_constraint_moves_that_cost_only_together_are_one_finding():
    """Two hard-sigmoid constraints move two tiny conv outputs to position 15, where they round to zero:
    putting one back leaves the other zeroing the signal, so each alone gained nothing and diagnose blamed
    accumulated rounding (a top-less EfficientNetB0 at 0.0 dB)."""
    from dataclasses import replace as dc_replace

    from qinspect.analysis.metrics import ErrorStats
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model

    rng = np.random.default_rng(8)
    layers, w, prev, cin = [("x", "InputLayer", {}, [], [None, 6, 6, 3])], {}, "x", 3
    for i in (1, 2):
        w[f"c{i}"] = {"kernel": (rng.normal(size=(1, 1, cin, 4)) * (1e-6 if i == 1 else 1.0)).astype("f4"),
                      "bias": np.zeros(4, "f4")}
        layers += [(f"c{i}", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "padding": "same",
                                        "activation": "linear"}, [prev], [None, 6, 6, 4]),
                   (f"g{i}", "Activation", {"activation": "sigmoid"}, [f"c{i}"], [None, 6, 6, 4]),
                   (f"m{i}", "Multiply", {}, [f"c{i}", f"g{i}"], [None, 6, 6, 4])]
        prev, cin = f"m{i}", 4
    layers += [("gap", "GlobalAveragePooling2D", {}, [prev], [None, 4]),
               ("fc", "Dense", {"units": 3, "activation": "linear"}, ["gap"], [None, 3])]
    w["fc"] = {"kernel": rng.normal(size=(4, 3)).astype("f4"), "bias": np.zeros(3, "f4")}
    src = model(layers, ["fc"], w)
    emu = Emulator(graph_from_float(src.graph, src))
    x = {"x": rng.normal(size=(16, 6, 6, 3)).astype("f4")}
    emu.calibrate(x, 16)
    moves = [a for a in emu.graph.adjustments if a.constraint == "hard_sigmoid"]
    assert [a.slot[0] for a in moves] == ["c1", "c2"] and all(a.after == 15 for a in moves)
    d = diagnose(emu.graph, x)
    f = next(f for f in d.findings if f.kind == "constraint")
    assert f.evidence["moved_together"]["value"] == ["c1", "c2"] and f.layer == "c1"
    # independently: the emulator run over a graph with both positions put back
    positions = {k: dict(v) for k, v in emu.graph.positions.items()}
    for a in moves:
        positions[a.slot[0]][a.slot[1]] = a.before
    back = Emulator(dc_replace(emu.graph, positions=positions))
    out = back.run(x, layers=["quant_fc"], stats_factory=ErrorStats)["quant_fc"].accumulated.sqnr_db
    assert f.remedy["measured_sqnr_db"] == pytest.approx(out, abs=0.01)
    assert f.remedy["measured_gain_db"] > 5 and d.output.sqnr_db < 1


def test_an_error_growth_within_its_spread_is_no_cause():
    from qinspect.analysis.diagnose import _stands_out
    from qinspect.analysis.findings import Finding

    def growth(gain, se, kind="error_growth"):
        return Finding("l", kind, gain, remedy={"measured_gain_db": gain, "measured_gain_se_db": se})

    assert not _stands_out(growth(1.25, 1.45))  # the healthy model's false alarm
    assert _stands_out(growth(1.01, 0.82)) and _stands_out(growth(2.0, None))
    assert not _stands_out(growth(0.05, 0.01))  # below the floor whatever the spread
    assert _stands_out(growth(1.25, 1.45, kind="saturation"))  # a cause with its own evidence stays


def test_an_infinite_remedy_figure_ranks_among_the_advice_rows():
    """A remedy's JSON form holds an infinite SQNR as "inf": the advice rows crashed sorting it (a
    Normalization-fronted and a two-input MobileNetV2 with collapsed outputs)."""
    from qinspect.analysis import remedies as rem
    from qinspect.analysis.diagnose import _advice
    from qinspect.analysis.findings import Finding
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model

    rng = np.random.default_rng(9)
    w = {"c": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype("f4"), "bias": np.zeros(4, "f4")}}
    src = model([("x", "InputLayer", {}, [], [None, 6, 6, 3]),
                 ("c", "Conv2D", {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "linear"},
                  ["x"], [None, 6, 6, 4])], ["c"], w)
    graph = graph_from_float(src.graph, src)
    conv = next(n.name for n in graph.nodes if n.op == "conv2d")
    f = Finding("c", "error_growth", 3.0, {})
    f.fix = rem.Fix("keep_float", "keep c in float", {}, (conv,))
    f.remedy = rem.Remedy("keep_float", "keep c in float", float("inf"), float("inf"), 1.0, f.fix).to_dict()
    assert f.remedy["measured_sqnr_db"] == "inf"
    rows = _advice(graph, [f], 20.0, 1.0)
    assert rows[0]["keep_float"] == ["c"] and len(rows) == 2


def test_cpu_layers_costing_no_accuracy_come_after_the_rounding_the_causes_leave():
    # RegNetY: 39 mid-model CPU layers at -0.00 dB came before the largest finding (accumulated rounding)
    from qinspect.analysis.diagnose import _rank_key
    from qinspect.analysis.findings import Finding, ev

    mid = Finding("tf.math.multiply", "cpu_fallback", 0.0, {"splits_model": ev(True, "")}, "")
    costly_mid = Finding("mish", "cpu_fallback", 2.0, {"splits_model": ev(True, "")}, "")
    edge = Finding("probs", "cpu_fallback", 0.0, {"splits_model": ev(False, "")}, "")
    rounding = Finding("conv", "accumulated_rounding", 2.17, {}, "")
    cause = Finding("add", "saturation", 0.13, {}, "")
    ranked = sorted([edge, mid, rounding, cause, costly_mid], key=_rank_key)
    assert [f.layer for f in ranked] == ["mish", "add", "conv", "tf.math.multiply", "probs"]
    # shared positions that cost nothing measurable come after a mid-model CPU layer (InceptionResNetV2: 20 of
    # them hid its 40 CustomScaleLayers, cut into 41 DPU subgraphs, past the default --top)
    shared = Finding("block35_1_mixed", "alignment", 0.05, {}, "")
    ranked = sorted([shared, edge, mid], key=_rank_key)
    assert [f.layer for f in ranked] == ["tf.math.multiply", "block35_1_mixed", "probs"]


def test_an_error_growth_measures_across_the_layer_the_user_sees():
    # rich's c9c: a conv and its fused hard sigmoid, two nodes of one float layer. "27.6 dB in" was the
    # conv's own output, inside c9c; the layer's input (mp9c) is at 33.3 dB, as the tree shows
    from qinspect.analysis.diagnose import _layer_inputs
    from qinspect.dpu.dpu_graph import DpuGraph, Node

    nodes = [Node("x", "input"), Node("quant_x", "quantize", ["x"], origin=["x"]),
             Node("quant_mp", "max_pool", ["quant_x"], origin=["mp"]),
             Node("quant_c", "conv2d", ["quant_mp"], origin=["c"]),
             Node("quant_c_sigmoid", "hard_sigmoid", ["quant_c"], origin=["c"]),
             Node("quant_m", "multiply", ["quant_c_sigmoid", "quant_mp"], origin=["m"])]
    g = DpuGraph(nodes=nodes, inputs=["x"], outputs=["quant_m"])
    assert _layer_inputs(g, g["quant_c_sigmoid"]) == ["quant_mp"]
    assert _layer_inputs(g, g["quant_c"]) == ["quant_mp"]
    assert _layer_inputs(g, g["quant_m"]) == ["quant_c_sigmoid", "quant_mp"]


def test_one_remedy_found_at_two_nodes_of_a_split_layer_is_one_finding():
    """EfficientNet's swish is a hard sigmoid and a multiply after the quantizer's rewrite: each node gave an
    "Error growth at stem_activation" finding with the same remedy and gain (13% of the output error each, counted
    twice) and contradictory figures (outside audit). One is kept, a cause before a growth symptom."""
    from qinspect.analysis.diagnose import _same_remedy_twice
    from qinspect.analysis.findings import Finding, ev
    from qinspect.report import wording

    def finding(kind, node, action, sev):
        return Finding("stem_activation", kind, sev, {"node": ev(node, "")}, "", remedy={"action": action})

    grow_sig = finding("error_growth", "quant_stem_activation", "keep stem_activation in float", 0.6)
    grow_mul = finding("error_growth", "quant_stem_activation_mul", "keep stem_activation in float", 0.6)
    sat = finding("saturation", "quant_excite", "keep excite in float", 1.35)
    grow_excite = finding("error_growth", "quant_excite_sigmoid", "keep excite in float", 1.35)
    other = finding("error_growth", "quant_block1", "keep block1 in float", 0.6)
    drop = _same_remedy_twice([grow_sig, grow_mul, grow_excite, sat, other])
    assert drop == {id(grow_mul), id(grow_excite)}
    assert sat.evidence["also_at"]["value"] == [{"node": "quant_excite_sigmoid", "kind": "error_growth"}]
    # the header promises the accumulated rounding only where such a finding is listed (no sensitivity: none)
    assert "accumulated rounding" not in wording.findings_order([sat, other])
    assert "accumulated rounding" in wording.findings_order([sat, Finding("x", "accumulated_rounding", 0.0, {}, "")])


def test_a_finding_whose_gain_is_undefined_is_not_listed_as_a_cause():
    """MobileNet alpha 0.25 with random weights (a constant output: inf - inf): a quantizer option's "n/a" gain
    ranked first (outside audit)."""
    from qinspect.analysis.diagnose import _stands_out
    from qinspect.analysis.findings import Finding

    assert not _stands_out(Finding("conv1_bn", "quantizer_option", math.nan, {}, ""))
    assert _stands_out(Finding("conv1_bn", "quantizer_option", math.inf, {}, ""))
    assert _stands_out(Finding("conv1_bn", "quantizer_option", 1.0, {}, ""))
