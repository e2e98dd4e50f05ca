"""Top-1 agreement, accuracy and near ties (qinspect.analysis.decisions), on hand-worked outputs and on a
real quantizer run's dump."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qinspect.analysis.decisions import NEAR_TIE_REL, Top1Tally, decision_kind, decision_scores
from tests.conftest import run_cli
from tests.dpu_graph_fixtures import refcase


def test_agreement_accuracy_and_near_ties_by_hand():
    ref = np.array([[0.7, 0.2, 0.1],      # clear: class 0
                    [0.1, 0.6, 0.3],      # clear: class 1
                    [0.4, 0.4, 0.2],      # exact tie
                    [0.3, 0.4 - 1e-5, 0.4]], np.float32)  # 0.4 vs 0.39999: margin 2.5e-5 of the top
    test = np.array([[0.6, 0.3, 0.1],     # agrees
                     [0.1, 0.3, 0.6],     # flips to 2
                     [0.39, 0.41, 0.2],   # tie broken the other way
                     [0.3, 0.3, 0.4]], np.float32)  # agrees (class 2)
    t = Top1Tally(output="out")
    t.update(ref[:2], test[:2], labels=np.array([0, 2, 1, 2]))  # batches line up with the labels
    t.update(ref[2:], test[2:], labels=np.array([0, 2, 1, 2]))
    assert (t.agree, t.total) == (2, 4)
    assert t.near_tied == 2  # the exact tie and the 2.5e-5 one; the flip at sample 1 is a real loss
    assert t.agree_decided == 1 and t.decided_agreement == pytest.approx(0.5)
    d = t.to_dict()
    # float picks 0, 1, 0 (first of the tie), 2; int8 picks 0, 2, 1, 2; labels 0, 2, 1, 2
    assert d["accuracy"] == {"float": 0.5, "int8": 1.0, "samples": 4}
    assert d["top1_agreement"] == pytest.approx(0.5) and d["decisions"] == 4 and d["near_tied"] == 2
    assert "2 near-tied of 4 decisions" in t.warning and "on the other 2 it is 50.0%" in t.warning


def test_a_trained_looking_output_gets_no_warning_and_one_hot_labels_work():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 5)) * 3
    ref = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    t = Top1Tally()
    t.update(ref, ref + rng.normal(scale=1e-3, size=ref.shape), labels=np.eye(5)[np.argmax(ref, -1)])
    assert t.warning is None and t.near_tied <= 1
    assert t.to_dict()["accuracy"]["float"] == 1.0


def test_an_int8_output_whose_top_two_are_equal_is_a_tie_said_beside_the_agreement():
    # coarse int8 outputs tie exactly; arg-max takes the lower class, which alone makes the flip
    ref = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]], np.float32)  # clear decisions
    test = np.array([[0.5, 0.0, 0.5],   # tie 0/2 -> 0: a flip only the tie-break makes
                     [0.5, 0.5, 0.0],   # tie 0/1 -> 0: agrees by the same rule
                     [0.0, 0.9, 0.1]], np.float32)
    t = Top1Tally()
    t.update(ref, test)
    assert (t.agree, t.total, t.near_tied) == (2, 3, 0)
    assert (t.int8_tied, t.int8_tied_flips) == (2, 1)
    assert "1 of the 1 disagreements is an exact tie" in t.warning
    assert t.to_dict()["int8_tied_flips"] == 1
    # the float decisions are clear: the agreement does not rest on near ties (the report said it did)
    assert not t.rests_on_near_ties


def test_near_tie_threshold_is_relative_to_the_largest_output():
    big = np.array([[1000.0, 1000.0 - 0.9 * NEAR_TIE_REL * 1000, 0.0]])
    small = np.array([[1.0, 1.0 - 2 * NEAR_TIE_REL, 0.0]])
    t = Top1Tally()
    t.update(big, big)
    t.update(small, small)
    assert t.near_tied == 1 and t.agreement == 1.0


def _heads():
    """One model, five heads: softmax, logits, sigmoid (one unit and three), a pooled embedding, a feature map."""
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model, rng_weights

    s4 = [None, 4, 4, 3]
    w = rng_weights(np.random.default_rng(1), {k: {"kernel": (3, u), "bias": (u,)} for k, u in
                                                (("soft", 5), ("logit", 5), ("bin", 1), ("multi", 3),
                                                 ("lin_logit", 5))})
    w["fm"] = {"kernel": np.ones((1, 1, 3, 6), np.float32), "bias": np.zeros(6, np.float32)}
    dense = {"units": 5, "activation": "linear"}
    src = model([
        ("x", "InputLayer", {}, [], s4),
        ("fm", "Conv2D", {"filters": 6, "kernel_size": [1, 1], "activation": "relu"}, ["x"], [None, 4, 4, 6]),
        ("gap", "GlobalAveragePooling2D", {}, ["x"], [None, 3]),
        ("soft", "Dense", {**dense, "activation": "softmax"}, ["gap"], [None, 5]),
        ("logit", "Dense", dense, ["gap"], [None, 5]),
        ("bin", "Dense", {"units": 1, "activation": "sigmoid"}, ["gap"], [None, 1]),
        ("multi", "Dense", {"units": 3, "activation": "sigmoid"}, ["gap"], [None, 3]),
        # tf_keras's MobileNetV3(classifier_activation=None): logits, then Activation("linear")
        ("lin_logit", "Dense", dense, ["gap"], [None, 5]),
        ("lin", "Activation", {"activation": "linear"}, ["lin_logit"], [None, 5]),
    ], ["soft", "logit", "bin", "multi", "gap", "fm", "lin"], w)
    g = graph_from_float(src.graph, src)
    from qinspect.analysis.outputs import output_layer

    return g, {output_layer(g, o): o for o in g.outputs}


def test_only_outputs_that_decide_have_a_top1_figure():
    # Feature maps and pooled embeddings (include_top=False) got an arg-max over their channels, shown as
    # "top-1 agreement 0.0%", which reads as "int8 destroys accuracy".
    g, node = _heads()
    kinds = {layer: decision_kind(g, n) for layer, n in node.items()}
    assert kinds == {"soft": "classes", "logit": "logits", "bin": "labels", "multi": "labels", "gap": None,
                     "fm": None, "lin": "logits"}


def test_a_sigmoid_unit_decides_at_one_half():
    p = np.array([[0.2], [0.7], [0.50002]], np.float32)
    two = decision_scores("labels", p)
    assert two.shape == (3, 2) and list(np.argmax(two, -1)) == [0, 1, 1]
    t = Top1Tally()
    t.update(two, decision_scores("labels", np.array([[0.3], [0.4], [0.49998]], np.float32)), np.array([0, 1, 1]))
    assert (t.agree, t.total, t.near_tied) == (1, 3, 1)  # 0.50002 against 0.49998: a margin of 4e-5
    assert (t.float_correct, t.int8_correct) == (3, 1)
    multi = decision_scores("labels", np.array([[0.1, 0.9, 0.6]], np.float32))
    assert multi.shape == (1, 3, 2) and list(np.argmax(multi, -1)[0]) == [0, 1, 1]
    assert decision_scores(None, np.ones((2, 4))) is None
    assert decision_scores("logits", np.ones((2, 1))) is None  # one linear unit: a value, not a choice


def test_outputs_that_decide_are_the_ones_with_per_output_top1():
    from qinspect.analysis.outputs import measure_outputs

    g, node = _heads()
    x = np.random.default_rng(3).uniform(-1, 1, (16, 4, 4, 3)).astype(np.float32)
    from qinspect.dpu.emulator import Emulator

    emu = Emulator(g)
    emu.calibrate(x, 16)
    figs = {f.layer: f for f in measure_outputs(emu.graph, {g.inputs[0]: x}, "sim")}
    assert {k for k, f in figs.items() if f.top1 is not None} == {"soft", "logit", "bin", "multi", "lin"}
    assert figs["bin"].top1.total == 16 and figs["multi"].top1.total == 48


def test_emulate_top1_equals_the_quantizers_own_dump():
    """The agreement emulate prints is the one of the real quantized model's output (its dump) against
    float: the emulator is bit-exact there, so the figures must be equal."""
    root = refcase("small")
    dump = root / "dump_results" / "dump_results_0"
    n = len(np.load(root / "dump_inputs.npy"))
    codes = np.fromfile(dump / "quant_fc.bin", np.int8).reshape(n, -1)
    flt = np.fromfile(dump / "quant_fc_float.bin", np.float32).reshape(n, -1)
    want = float(np.mean(np.argmax(codes, -1) == np.argmax(flt, -1)))
    r = run_cli("emulate", str(root / "float.h5"), "--positions", str(root / "quantized.h5"), "--inputs",
                str(root / "dump_inputs.npy"), "--json")
    assert r.returncode == 0, r.stderr
    (out,) = json.loads(r.stdout)["outputs"]
    assert out["output"] == "quant_fc" and out["decisions"] == n
    assert out["top1_agreement"] == pytest.approx(want)


def test_emulate_labels_give_float_and_int8_accuracy(tmp_path):
    root = refcase("small")
    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(16) % 10)
    r = run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", "4",
                "--labels", str(labels), "--json")
    assert r.returncode == 0, r.stderr
    (out,) = json.loads(r.stdout)["outputs"]
    acc = out["accuracy"]
    assert acc["samples"] == 16 and 0 <= acc["float"] <= 1 and 0 <= acc["int8"] <= 1
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.models.load_model(root / "float.h5", compile=False)
    pred = np.argmax(model.predict(np.load(root / "calib.npy"), verbose=0), -1)
    assert acc["float"] == pytest.approx(float(np.mean(pred == np.arange(16) % 10)))
    r = run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", "4",
                "--labels", str(labels))
    assert "accuracy on 16 labelled samples: float" in r.stdout and "top-1 agreement int8 vs float" in r.stdout
    np.save(labels, np.arange(3))
    r = run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--labels", str(labels))
    assert r.returncode == 2 and "labels.npy" in r.stderr and "16 measured samples" in r.stderr


def test_an_agreement_short_of_all_never_reads_100_percent():
    from qinspect.analysis.decisions import agreement_text

    assert agreement_text(9997 / 10000) == ">99.9%"  # 3 flips in 10,000: "100.0%" hid them
    assert agreement_text(9997 / 10000, 2) == "99.97%"
    assert agreement_text(1.0) == "100.0%" and agreement_text(0.0) == "0.0%"
    assert agreement_text(3 / 10000) == "<0.1%"
    assert agreement_text(0.906) == "90.6%"


def test_the_report_shows_no_negative_zero_and_no_rounded_up_share():
    from qinspect.report.html import fmt_number

    assert fmt_number(-0.04, "db") == "0.0" and fmt_number(-0.06, "db") == "-0.1"
    assert fmt_number(0.99999, "pct") == ">99.99%" and fmt_number(1.0, "pct") == "100.00%"
