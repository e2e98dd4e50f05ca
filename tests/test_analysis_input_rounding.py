"""A model input's own int8 rounding is no remedy to offer: the DPU always reads its input in int8.

A hand-built model (no TensorFlow) fed 8-bit images as x / 255, which the input position (7) rounds.
Neither the accumulated-rounding finding nor the advisor (whose keep-float candidates here are every
quantizing node) may tell the user to keep the input in float; the finding says what its rounding costs.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qinspect.analysis.advisor import advise
from qinspect.analysis.diagnose import diagnose
from qinspect.analysis.remedies import rounding_finding
from qinspect.analysis.sensitivity import LayerSensitivity
from qinspect.dpu.dpu_graph import quantizes_model_input
from qinspect.dpu.emulator import Emulator
from tests.dpu_graph_fixtures import model, rng_weights


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(11)
    w = rng_weights(rng, {"c1": {"kernel": (3, 3, 3, 8), "bias": (8,)}, "c2": {"kernel": (1, 1, 8, 8), "bias": (8,)},
                          "fc": {"kernel": (8, 4), "bias": (4,)}}, scale=0.5)
    src = model([
        ("x", "InputLayer", {}, [], [None, 8, 8, 3]),
        ("c1", "Conv2D", {"filters": 8, "kernel_size": [3, 3], "padding": "same", "activation": "relu"}, ["x"],
         [None, 8, 8, 8]),
        ("c2", "Conv2D", {"filters": 8, "kernel_size": [1, 1], "activation": "linear"}, ["c1"], [None, 8, 8, 8]),
        ("gap", "GlobalAveragePooling2D", {}, ["c2"], [None, 8]),
        ("fc", "Dense", {"units": 4, "activation": "linear"}, ["gap"], [None, 4]),
    ], ["fc"], w)
    # zero-sum filters on flat images with faint texture: the first conv sees differences of a few grey
    # levels, of the size of the input's rounding step
    w["c1"]["kernel"] -= w["c1"]["kernel"].mean(axis=(0, 1, 2), keepdims=True)
    flat = rng.integers(40, 200, (32, 1, 1, 1))
    x = ((flat + rng.integers(-3, 4, (32, 8, 8, 3))) / 255.0).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=32)
    return emu.graph, {"x": x}


def test_the_rounding_finding_names_no_model_input_and_says_what_it_costs(case):
    # sensitivity figures as the demo model's (a face model fed x / 255): the input quantizer gains most
    graph, _ = case
    layers = [LayerSensitivity("quant_x", "x", 2.5, 29.0, 0.16), LayerSensitivity("quant_c2", "c2", 1.6, 34.6, 0.05),
              LayerSensitivity("quant_fc", "fc", 0.9, 37.6, 0.02)]
    sens = SimpleNamespace(layers=layers, own={}, accumulated={}, output=SimpleNamespace(sqnr_db=20.0))
    f = rounding_finding(graph, sens, 0.2, {}, top=3)
    assert f is not None and f.affects == ["c2", "fc"] and f.layer == "c2"
    assert f.evidence["input_rounding_db"]["value"] == 2.5
    assert "Quantizing the model input to int8 alone costs 2.5 dB" in f.advice
    layers[0] = LayerSensitivity("quant_x", "x", 0.4, 45.0, 0.01)  # cheap: no sentence
    assert "model input" not in rounding_finding(graph, sens, 0.2, {}, top=3).advice


def test_no_diagnosis_remedy_keeps_the_model_input_in_float(case):
    graph, data = case
    d = diagnose(graph, data, batch_size=32)
    inputs = {n.name for n in graph.nodes if quantizes_model_input(graph, n)}
    assert inputs == {"quant_x"}
    for f in d.findings:
        assert f.fix is None or not inputs & set(f.fix.float_nodes), f.kind
        assert "x" not in f.affects
    for row in d.advice:
        assert "x" not in row["keep_float"]


def test_the_advisor_does_not_keep_the_input_in_float(case):
    graph, data = case
    rows = advise(lambda opts: graph, data, [{}])
    assert len(rows) > 1 and all("x" not in r.keep_float for r in rows)


def test_layers_that_each_lose_the_output_alone_are_named_and_kept_float_together(case):
    """A two-head model at 0.8 dB had no finding: three layers each gave 0.8 dB quantized alone, so keeping
    any one float gained ~0 dB and the rounding finding (by keep-float gain) never named them all."""
    from qinspect.report.wording import finding_sentence

    graph, _ = case
    layers = [LayerSensitivity("quant_c1", "c1", 0.02, 0.8, 0.99), LayerSensitivity("quant_c2", "c2", 0.0, 0.9, 0.99),
              LayerSensitivity("quant_fc", "fc", 0.01, 2.2, 0.7), LayerSensitivity("quant_gap", "gap", 0.0, 69.7, 0.0)]
    sens = SimpleNamespace(layers=layers, own={}, accumulated={}, output=SimpleNamespace(sqnr_db=0.8))
    f = rounding_finding(graph, sens, 0.0, {}, top=12)
    assert f.affects[:3] == ["c1", "c2", "fc"]  # first, so the budget's "worst k together" keeps all three
    assert f.evidence["each_alone_loses_output"]["value"] == ["c1", "c2", "fc"]
    assert "c1, c2, fc each lose the output on their own" in f.advice
    assert finding_sentence(f).startswith("100% of the output error comes from layers that each lose the output")


def test_each_advised_float_set_is_one_row_and_holds_every_node_of_its_layers(case):
    """c1 = Conv2D(activation='relu') is split into a conv node and a relu node; tried apart they gave two
    rows with the same ignore_layers=['c1'] and two different figures."""
    graph, data = case
    split = [n.name for n in graph.nodes if n.origin == ["c1"] or n.name == "quant_c1"]
    assert len(split) >= 2, [(n.name, n.origin) for n in graph.nodes]
    rows = advise(lambda opts: graph, data, [{}])
    commands = [r.command for r in rows]
    assert len(commands) == len(set(commands)), commands
    (c1,) = [r for r in rows if r.keep_float == ["c1"]]
    assert c1.cpu_layers_added == len(split)


def test_the_noise_budget_takes_the_causes_before_the_rounding_they_leave():
    """A coverage cause saturating conv1 and every layer after it: its recalibration gains 26.4 dB, while
    keeping all nine layers float removes any error (34.5 dB). In one pool the all-float set was taken
    first, and an accumulated-rounding finding claimed 100% of the error the coverage cause made."""
    from qinspect.analysis.diagnose import _noise_budget
    from qinspect.analysis.findings import Finding
    from qinspect.analysis.remedies import Fix, Remedy

    nodes = [f"n{i}" for i in range(9)]
    cause = Finding("conv1", "coverage", 26.4, {}, "", origin="conv1", affects=["conv2", "conv3"])
    cause.fix = Fix("recalibrate", "recalibrate", {("conv1", "output"): 5})
    rounding = Finding("n0", "accumulated_rounding", 0.0, {"adders": {"value": [], "how": ""},
                                                           "amplifiers": {"value": [], "how": ""}}, "",
                       affects=list(nodes))

    class Trial:
        def run(self, fix):
            gain = 34.5 if len(fix.float_nodes) == len(nodes) else 26.4 if fix.positions else 0.2
            if fix.positions and fix.float_nodes:
                gain = 34.6
            return Remedy(fix.kind, fix.action, 6.3 + gain, gain, None, fix, 0.1)

    sens = SimpleNamespace(layers=[LayerSensitivity(n, n, 0.2, 6.5, 0.8) for n in nodes])
    explained, _ = _noise_budget([cause], rounding, sens, Trial(), {}, 0.0)
    assert cause.evidence["budget_share"]["value"] == pytest.approx(1 - 10 ** (-2.64))
    assert explained == pytest.approx(1 - 10 ** (-2.64)) and rounding.remedy is None


def test_the_rounding_finding_names_a_layer_that_gains_nothing_alone_apart():
    """Two adders whose errors cancel: keeping `a` float alone gains 1.5 dB, `b` alone loses 0.4 dB, both
    together gain 6 dB. The budget takes the pair; the advice must not list `b` among the layers that
    "added most" (with its negative gain) but say it counts only with the other."""
    from qinspect.analysis.diagnose import _noise_budget
    from qinspect.analysis.findings import Finding
    from qinspect.analysis.remedies import Remedy

    rounding = Finding("a", "accumulated_rounding", 0.0, {"adders": {"value": [], "how": ""},
                                                          "amplifiers": {"value": [], "how": ""}}, "",
                       affects=["a", "b"])
    gains = {frozenset({"a"}): 1.5, frozenset({"b"}): -0.4, frozenset({"a", "b"}): 6.0}

    class Trial:
        def run(self, fix):
            gain = gains[frozenset(fix.float_nodes)]
            return Remedy(fix.kind, fix.action, 20.0 + gain, gain, None, fix, 0.1)

    sens = SimpleNamespace(layers=[LayerSensitivity("a", "a", 1.5, 30.0, 0.3),
                                   LayerSensitivity("b", "b", -0.4, 35.0, 0.1)])
    explained, _ = _noise_budget([], rounding, sens, Trial(), {}, 0.0)
    assert explained == pytest.approx(1 - 10 ** -0.6)
    assert rounding.affects == ["a", "b"] and rounding.severity_db == pytest.approx(6.0)
    assert "added most by a, and by b (nothing gained kept float alone" in rounding.advice
    assert "-0.4" not in rounding.advice and "added most by a, b" not in rounding.advice


def test_the_noise_budget_measures_a_recalibration_without_the_samples_it_drops():
    """Recalibrating without outlier samples 5 and 17 gains 9.85 dB measured on the other samples, but
    clips those two hard (-6.6 dB on every sample). The joint set dropped the fix's excluded samples, so
    the budget never picked it and said 28% explained (a keep-float set's) beside a 90% finding."""
    from qinspect.analysis.diagnose import _noise_budget
    from qinspect.analysis.findings import Finding
    from qinspect.analysis.remedies import Fix, Remedy

    nodes = [f"n{i}" for i in range(4)]
    cause = Finding("inp", "outlier_range", 9.85, {}, "", origin="inp")
    cause.fix = Fix("recalibrate", "calibrate without the outlier samples 5, 17", {("inp", "output"): 6},
                    exclude=(5, 17), measured_on="the 46 measured samples other than the outlier samples 5, 17")
    rounding = Finding("n0", "accumulated_rounding", 0.0, {"adders": {"value": [], "how": ""},
                                                           "amplifiers": {"value": [], "how": ""}}, "",
                       affects=list(nodes))

    class Trial:
        def run(self, fix):
            if fix.positions:
                gain = 9.85 if set(fix.exclude) == {5, 17} else -6.6
            else:
                gain = 1.44  # the keep-float set of the rounding adders, on every sample
            return Remedy(fix.kind, fix.action, 24.1 + gain, gain, None, fix, 0.1)

    sens = SimpleNamespace(layers=[LayerSensitivity(n, n, 0.3, 30.0, 0.2) for n in nodes])
    notes: list[str] = []
    explained, _ = _noise_budget([cause], rounding, sens, Trial(), {}, 0.0, None, notes)
    assert explained == pytest.approx(1 - 10 ** -0.985)
    assert cause.evidence["budget_share"]["value"] == pytest.approx(1 - 10 ** -0.985)
    assert any("measured on the 46 measured samples other than the outlier samples 5, 17" in n for n in notes)


def test_the_input_ceiling_is_the_calibrated_positions_when_a_finding_moves_it():
    """Outlier samples set the input's position to 1: its rounding alone then limits the output to 25.7 dB,
    which the note called "a ceiling no remedy here passes" beside a recalibration reaching 34 dB (it moves
    that very position). The rounding advice then blamed the input's int8 rounding and advised retraining."""
    from qinspect.analysis.data_remedies import input_ceiling_notes
    from qinspect.analysis.diagnose import _inputs_moved
    from qinspect.analysis.findings import Finding
    from qinspect.analysis.remedies import Fix
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model as graph_model

    s = [None, 4, 4, 2]
    w = rng_weights(np.random.default_rng(3), {"c": {"kernel": (1, 1, 2, 2), "bias": (2,)}})
    src = graph_model([("x", "InputLayer", {}, [], s),
                       ("c", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["x"], s)],
                      ["c"], w)
    g = graph_from_float(src.graph, src)
    g.set_pos(g["quant_x"].out_slot, 1)
    sample = {"x": np.random.default_rng(0).uniform(-1, 1, (4, 4, 4, 2)).astype(np.float32)}
    rows = [LayerSensitivity("quant_x", "x", 5.1, 25.7, 0.75)]
    label = lambda n: n.name.removeprefix("quant_")  # noqa: E731
    (plain,) = input_ceiling_notes(g, rows, sample, label)
    assert "a ceiling no remedy here passes" in plain
    cause = Finding("x", "outlier_range", 9.85, {}, "")
    cause.fix = Fix("recalibrate", "calibrate without the outlier samples 5, 17", {g["quant_x"].out_slot: 6})
    cause.remedy = {"kind": "recalibrate"}
    moved = _inputs_moved(g, [cause])
    assert moved == {"quant_x": "the outlier range finding at x"}
    (note,) = input_ceiling_notes(g, rows, sample, label, moved)
    assert "no remedy here passes" not in note
    assert "at the position it is calibrated to, which the remedy of the outlier range finding at x moves" in note
    assert _inputs_moved(g, [Finding("c", "saturation", 1.0, {}, "")]) == {}  # no fix: nothing moved
    # a remedy that passes the "ceiling" another way (a rebuilt model): said, not "no remedy here passes"
    (past,) = input_ceiling_notes(g, rows, sample, label, {}, ("the quantizer option finding at c", 30.2))
    assert "no remedy here passes" not in past and "reaches 30.2 dB, past it" in past
    (below,) = input_ceiling_notes(g, rows, sample, label, {}, ("the quantizer option finding at c", 20.0))
    assert "a ceiling no remedy here passes" in below
    # 0.6 dB past it with a ± 1.4 dB standard error is the measurement's noise (the demo's note read "reaches
    # 22.7 dB, past it" beside a 22.1 dB ceiling): said as an estimate, not as a remedy that beats it
    (noisy,) = input_ceiling_notes(g, rows, sample, label, {}, ("the quantizer option finding at c", 26.3), 1.4)
    assert "past it" not in noisy
    assert "25.7 dB, an estimate on these samples (± 1.4 dB): the remedy of the quantizer option finding at c " \
           "reads 26.3 dB, within that noise of it" in noisy
    (clear,) = input_ceiling_notes(g, rows, sample, label, {}, ("the quantizer option finding at c", 30.2), 1.4)
    assert "reaches 30.2 dB, past it" in clear
