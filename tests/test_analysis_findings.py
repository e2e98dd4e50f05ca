"""Each finding function on synthetic tensors where the cause is planted (and absent)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.analysis import findings as F  # noqa: N812
from qinspect.dpu.fixed_point import Round, pos_min_mse, pos_non_overflow


def val(finding, key):
    return finding.evidence[key]["value"]


def test_output_cost_hand_values():
    # the layer holds half the output noise: removing all of it halves the noise (+3.01 dB).
    assert F.output_cost_db(1.0, 0.5) == pytest.approx(10 * math.log10(2))
    assert F.output_cost_db(0.5, 0.5) == pytest.approx(10 * math.log10(4 / 3))
    assert F.output_cost_db(0.7, -1.0) == 0.0
    assert F.output_cost_db(0.0, 1.0) == 0.0
    assert F.output_cost_db(0.5, 7.0) == pytest.approx(10 * math.log10(2))  # fraction capped at 1
    assert F.output_cost_db(1.0, 1.0) == pytest.approx(F.MAX_SEVERITY_DB)  # capped


def test_saturation_planted_and_absent():
    rng = np.random.default_rng(0)
    x = rng.normal(size=100_000).astype(np.float32)
    # position 7: representable range [-1, 127/128]; a standard normal clips ~32% of its values.
    f = F.saturation("L", x, 7)
    assert f is not None and f.kind == "saturation"
    assert val(f, "clipped_lo_frac") == pytest.approx(np.mean(x < -1.0))
    assert val(f, "clipped_hi_frac") == pytest.approx(np.mean(x > 127 / 128))
    assert val(f, "share") > 0.9
    assert val(f, "representable_range") == [-1.0, 127 / 128]
    assert val(f, "severity_basis") == "local"
    assert val(f, "non_overflow_position") == pos_non_overflow(float(x.min()), float(x.max()))
    # the advice gives each end its own share, the larger first (it gave the sum as the bottom's)
    x2 = np.concatenate([np.zeros(9_990), np.full(8, -5.0), np.full(2, 5.0)]).astype(np.float32)
    assert F.saturation("L", x2, 7).advice.startswith(
        "0.08% of values clip at the bottom of the range and 0.02% at the top:")
    assert F.saturation("L", np.concatenate([x2[:9_990], np.full(10, 5.0, np.float32)]), 7).advice.startswith(
        "0.1% of values clip at the top of the range:")
    # Non-overflow position: nothing clips.
    assert F.saturation("L", x, pos_non_overflow(float(x.min()), float(x.max()))) is None
    # With sensitivity the severity follows the output-noise formula.
    g = F.saturation("L", x, 7, noise_frac=0.6)
    assert g.severity_db == pytest.approx(-10 * math.log10(1 - val(g, "share") * 0.6))


def test_outlier_range_planted_and_absent():
    rng = np.random.default_rng(1)
    bulk = rng.normal(size=200_000).astype(np.float32)
    x = bulk.copy()
    x[rng.choice(x.size, 10, replace=False)] = 1000.0
    p = pos_non_overflow(float(x.min()), float(x.max()))
    f = F.outlier_range("L", x, p)
    assert f is not None and f.kind == "outlier_range"
    assert val(f, "max_abs") == 1000.0
    assert val(f, "bits_wasted") == pytest.approx(math.log2(1000.0 / val(f, "bulk_threshold")))
    assert val(f, "bits_wasted") > 7
    # At scale 2^3 = 8 the whole normal bulk takes only a few codes.
    assert p == -3 and val(f, "codes_used_by_bulk") <= 3
    assert val(f, "far_outlier_frac") == 10 / x.size
    assert val(f, "tail_frac") == pytest.approx(1e-4, rel=0.01)
    assert F.outlier_range("L", bulk, pos_min_mse(bulk, Round.HALF_UP)) is None


def test_outlier_range_too_few_values_says_so():
    rng = np.random.default_rng(2)
    x = rng.normal(size=500).astype(np.float32)
    x[0] = 1000.0
    evidence, t, pct = F.tail_threshold(np.abs(x))
    assert t is None and pct is None
    assert all(e["value"] is None and "have 500" in e["how"] for e in evidence.values())
    assert F.outlier_range("L", x, -3) is None
    evidence, t, pct = F.tail_threshold(np.abs(rng.normal(size=5000)))
    assert evidence["p99.99_abs"]["value"] is None and evidence["p99.9_abs"]["value"] is None
    assert pct == 99.0 and t == pytest.approx(evidence["p99_abs"]["value"])


def test_channel_spread_planted_and_absent():
    rng = np.random.default_rng(3)
    w = rng.normal(scale=0.1, size=(3, 3, 8, 4)).astype(np.float32)
    clean_pos = pos_min_mse(w, Round.HALF_TO_EVEN)
    assert F.channel_spread("c", "Conv2D", w, clean_pos) is None
    w[..., 2] *= 50
    p = pos_min_mse(w, Round.HALF_TO_EVEN)
    f = F.channel_spread("c", "Conv2D", w, p, cle="disabled")
    assert f is not None and f.kind == "channel_spread"
    assert val(f, "spread_bits") > 5
    assert val(f, "bits_wasted")[2] == 0.0
    assert set(val(f, "handful_channels")) <= {0, 1, 3} and val(f, "handful_channels")
    assert val(f, "equalization_gain_db") > 20
    # its local cost is what the layer's output regains, as every kind's: -10 log10(1 - share)
    assert val(f, "local_cost_db") == pytest.approx(-10 * np.log10(1 - val(f, "share")))
    assert "Enable cross-layer equalization" in f.advice
    # a 3x3 depthwise channel has 9 weights: "a handful of codes" means half of them at most (under the
    # flat bound of 8, any channel where two weights shared a code counted)
    dw = rng.normal(scale=0.1, size=(3, 3, 4, 1)).astype(np.float32)
    dw[..., 1, 0] *= 60
    fd = F.channel_spread("d", "DepthwiseConv2D", dw, pos_min_mse(dw, Round.HALF_TO_EVEN), cle="disabled")
    assert fd is not None
    codes, few = val(fd, "channel_codes"), val(fd, "handful_channels")
    assert all(codes[c] <= 4 for c in few) and "half of a channel's 9 weights" in fd.evidence["handful_channels"]["how"]


def test_coverage_planted_and_absent():
    rng = np.random.default_rng(4)
    calib = rng.uniform(0, 0.9, size=50_000).astype(np.float32)
    p = pos_non_overflow(float(calib.min()), float(calib.max()))
    rng_c = (float(calib.min()), float(calib.max()))
    assert p == 7  # range [-1, 127/128]
    assert F.coverage("L", rng.uniform(0, 0.9, size=50_000), p, rng_c) is None
    ev_x = 2 * rng.uniform(0, 0.9, size=50_000).astype(np.float32)
    f = F.coverage("L", ev_x, p, rng_c)
    assert f is not None and f.kind == "coverage"
    hi = 127 * 2.0**-p
    assert val(f, "outside_int8_range_frac") == pytest.approx(np.mean(ev_x > hi))
    assert val(f, "eval_position") == p - 1
    # Evaluation data a little beyond the calibration min/max but inside the int8 range costs nothing,
    # and narrower evaluation data is no coverage problem either.
    assert F.coverage("L", np.full(1000, 0.95, np.float32), p, rng_c) is None
    assert F.coverage("L", 0.1 * ev_x, p, rng_c) is None


def test_coverage_of_an_input_quantizer_reads_the_position_its_non_overflow_method_picks():
    # a model input (method 0) recalibrated on the data in use gets its non-overflow position: here
    # 5, where min-MSE (an activation's method) would clip the three largest values and pick 6
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(0, 1.8, 200_000), np.full(3, 3.9)]).astype(np.float32)
    calibrated = (0.0, 0.99)  # position 7
    assert pos_non_overflow(float(x.min()), float(x.max())) == 5
    f0 = F.coverage("L", x, 7, calibrated, method=0)
    f1 = F.coverage("L", x, 7, calibrated, method=1)
    assert val(f0, "eval_position") == 5 and "non-overflow" in f0.evidence["eval_position"]["how"]
    assert val(f1, "eval_position") == 6


def test_error_growth():
    f = F.error_growth("L", 40.0, 20.0, 20.5)
    assert f is not None and val(f, "drop_db") == 20.0
    assert val(f, "own_share") == pytest.approx(10 ** (-0.05))
    assert val(f, "mechanism") == "own error"
    assert F.error_growth("L", 40.0, 37.0, 38.0) is None  # small drop
    assert F.error_growth("L", 50.0, 40.0, 41.0) is None  # still precise
    amp = F.error_growth("L", 30.0, 10.0, 35.0)
    assert val(amp, "mechanism") == "amplifies inherited error"
    half = F.error_growth("L", 40.0, 20.0, 20.0, explained_share=0.5)
    assert val(half, "share") == pytest.approx(0.5)


def test_alignment_planted():
    rng = np.random.default_rng(5)
    small = rng.normal(scale=0.01, size=20_000).astype(np.float32)
    big = rng.normal(scale=10.0, size=20_000).astype(np.float32)
    ps, pb = pos_min_mse(small, Round.HALF_UP), pos_min_mse(big, Round.HALF_UP)
    shared = min(ps, pb)
    f = F.alignment("cat", [F.Branch("a", small, ps, 0.5), F.Branch("b", big, pb, 0.5)], shared)
    assert f is not None and f.kind == "alignment"
    rows = val(f, "branches")
    assert [r["branch"] for r in rows] == ["a"]  # b already sits at the shared position
    assert rows[0]["sqnr_loss_db"] > 30
    assert val(f, "severity_basis") == "output"
    assert f.severity_db == pytest.approx(-10 * math.log10(1 - rows[0]["share"] * 0.5))
    m = F.alignment("cat", [F.Branch("a", small, ps), F.Branch("b", big, pb)], shared, measured_gain_db=4.5)
    assert m.severity_db == 4.5 and val(m, "severity_basis") == "what-if"
    similar = rng.normal(scale=8.0, size=20_000).astype(np.float32)
    pm = pos_min_mse(similar, Round.HALF_UP)
    assert F.alignment("cat", [F.Branch("a", similar, pm), F.Branch("b", big, pb)], min(pm, pb)) is None


def test_constraint():
    rng = np.random.default_rng(6)
    w = rng.normal(scale=0.2, size=4000).astype(np.float32)
    p = pos_min_mse(w, Round.HALF_TO_EVEN)
    f = F.constraint("c", "shift_cut", "c/kernel:0", p, p - 2, w, Round.HALF_TO_EVEN)
    assert f is not None
    assert val(f, "sqnr_loss_db") == pytest.approx(12.0, abs=1.5)  # two bits ~ 12 dB
    assert F.constraint("c", "shift_cut", "k", p, p, w, Round.HALF_TO_EVEN) is None


def test_partitions_and_cpu_fallback():
    order = ["in", "a", "b", "c", "d"]
    inbound = {"a": ["in"], "b": ["a"], "c": ["b"], "d": ["c"]}
    assert F.count_partitions(order, inbound, {"in": "DPU", "a": "DPU", "b": "CPU", "c": "DPU", "d": "DPU"}) == 2
    assert F.count_partitions(order, inbound, {n: "DPU" for n in order}) == 1
    assert F.count_partitions(order, inbound, {"in": "DPU", "a": "DPU", "b": "DPU", "c": "DPU", "d": "CPU"}) == 1
    f = F.cpu_fallback("b", "LeakyReLU", "alpha 0.2 is not 0.1", 2, True)
    assert f.kind == "cpu_fallback" and f.severity_db == 0.0
    assert "alpha 0.1" in f.advice
    d = f.to_dict()
    assert set(d) == {"layer", "kind", "severity", "origin", "affects", "noise_share", "remedy", "evidence", "advice"}
    # a softmax at the edge has no output quantizer: its placement explains none of its error, and the
    # noise figure says it is the requantization's, not the layer's sensitivity row
    edge = F.cpu_fallback("sm", "Activation", "softmax", 1, False, noise_frac=0.0, requantized=False)
    assert val(edge, "share") == 0.0 and edge.severity_db == 0.0
    assert "requantization" in edge.evidence["layer_noise_frac"]["how"]
    mid = F.cpu_fallback("b", "LeakyReLU", "alpha 0.2 is not 0.1", 2, True, noise_frac=0.2)
    assert val(mid, "share") == 1.0 and mid.severity_db == pytest.approx(-10 * np.log10(0.8))


def test_a_run_of_cpu_layers_between_dpu_layers_is_a_round_trip():
    """conv -> bilinear up-sampling (CPU) -> GroupNormalization (CPU) -> conv: neither CPU layer has a DPU
    layer on both sides of it, but the run does, so both are round trips, and both name their Keras class
    (not the emulator's internal op)."""
    from qinspect.analysis.diagnose import _cpu_findings
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model, rng_weights

    s = [None, 8, 8, 4]
    w = rng_weights(np.random.default_rng(2), {"c1": {"kernel": (1, 1, 4, 4), "bias": (4,)},
                                               "c2": {"kernel": (1, 1, 4, 4), "bias": (4,)},
                                               "gn": {"gamma": (4,), "beta": (4,)}})
    src = model([
        ("x", "InputLayer", {}, [], s),
        ("c1", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["x"], s),
        ("up", "UpSampling2D", {"size": [2, 2], "interpolation": "bilinear"}, ["c1"], [None, 16, 16, 4]),
        ("gn", "GroupNormalization", {"groups": 2, "epsilon": 1e-3, "axis": -1}, ["up"], [None, 16, 16, 4]),
        ("c2", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["gn"], [None, 16, 16, 4]),
    ], ["c2"], w)
    g = graph_from_float(src.graph, src)
    found = {f.layer: f for f in _cpu_findings(g, {})}
    assert set(found) == {"up", "gn"}
    for name, cls in (("up", "UpSampling2D"), ("gn", "GroupNormalization")):
        f = found[name]
        assert f.evidence["splits_model"]["value"] is True, name
        assert f.evidence["class"]["value"] == cls
        assert "edge of the model" not in f.advice and f.advice.startswith(f"{name} runs on the CPU")


def test_cpu_layers_of_one_class_and_reason_are_one_finding():
    """Three gelu round trips in a conv chain: one finding naming all three (a ConvNeXt's 97 CPU layers
    read as 97 identical findings), with each layer's own cost in its evidence and the costliest as its
    severity; its sentence and title count them."""
    from qinspect.analysis.diagnose import _cpu_findings
    from qinspect.dpu.rewrites import graph_from_float
    from qinspect.report import wording
    from tests.dpu_graph_fixtures import model, rng_weights

    s = [None, 8, 8, 4]
    convs = [f"c{i}" for i in range(4)]
    w = rng_weights(np.random.default_rng(3), {c: {"kernel": (1, 1, 4, 4), "bias": (4,)} for c in convs})
    layers = [("x", "InputLayer", {}, [], s)]
    prev = "x"
    for i, c in enumerate(convs):
        layers.append((c, "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, [prev], s))
        prev = c
        if i < 3:
            layers.append((f"g{i}", "Activation", {"activation": "gelu"}, [c], s))
            prev = f"g{i}"
    src = model(layers, [prev], w)
    g = graph_from_float(src.graph, src)
    (f,) = _cpu_findings(g, {"g0": 0.01, "g1": 0.2, "g2": 0.05})
    assert (f.layer, f.affects) == ("g0", ["g1", "g2"])
    assert f.evidence["count"]["value"] == 3
    # a gelu has no output quantizer (the next conv's input quantizer requantizes it): no cost of its own
    assert [(r["layer"], r["layer_noise_frac"]) for r in f.evidence["layers"]["value"]] == \
        [("g0", 0.0), ("g1", 0.0), ("g2", 0.0)]
    assert f.advice.startswith("These 3 Activation layers split the model. Instead: Activation('swish')")
    assert wording.finding_sentence(f).startswith("3 Activation layers (g0, g1, g2) run on the CPU in float")
    assert "downstream" not in wording.finding_sentence(f)
    assert wording.finding_title(f) == "CPU layer at g0 and 2 more"
    # another reason is another finding; a single layer keeps its own wording
    layers[2] = ("g0", "Activation", {"activation": "selu"}, ["c0"], s)
    g = graph_from_float(model(layers, [prev], w).graph, src)
    found = {f.layer: f for f in _cpu_findings(g, {})}
    assert set(found) == {"g0", "g1"} and found["g1"].affects == ["g2"]
    assert found["g0"].advice.startswith("g0 runs on the CPU") and "count" not in found["g0"].evidence
    # requantized members: the group's severity is its costliest member's, measured alone (not a sum)
    members = [F.cpu_fallback(n, "LeakyReLU", "alpha 0.2 is not 0.1", 3, True, noise_frac=x)
               for n, x in (("a", 0.01), ("b", 0.2), ("c", 0.05))]
    (grouped,) = F.group_cpu_fallbacks(members)
    assert grouped.severity_db == pytest.approx(-10 * np.log10(1 - 0.2))
    assert grouped.evidence["layer_noise_frac"]["value"] == 0.2 and "alpha 0.1" in grouped.advice


def test_a_linear_activation_on_the_cpu_is_called_a_no_op_not_a_layer_to_replace():
    """ConvNeXt's 18 Activation('linear') layers read float tensors and stay float: the advice told users to
    "replace them with a DPU-supported equivalent", of a layer that computes nothing."""
    from qinspect.analysis.diagnose import _cpu_findings
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model, rng_weights

    s = [None, 8, 8, 4]
    w = rng_weights(np.random.default_rng(3), {c: {"kernel": (1, 1, 4, 4), "bias": (4,)} for c in ("c0", "c1")})
    layers = [("x", "InputLayer", {}, [], s),
              ("c0", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["x"], s),
              ("g", "Activation", {"activation": "gelu"}, ["c0"], s),
              ("id0", "Activation", {"activation": "linear"}, ["g"], s),
              ("c1", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "activation": "linear"}, ["id0"], s)]
    g = graph_from_float(model(layers, ["c1"], w).graph, model(layers, ["c1"], w))
    found = {f.layer: f for f in _cpu_findings(g, {})}
    assert set(found) == {"g", "id0"}
    assert found["id0"].evidence["identity"]["value"] is True
    assert "computes nothing" in found["id0"].advice and "replace" not in found["id0"].advice
    assert "identity" not in found["g"].evidence and "Instead: Activation('swish')" in found["g"].advice


def test_a_keras3_operation_is_named_as_info_names_it():
    """Keras 3's `x + y` (KerasOp numpy.add) is rewritten to its tf_keras form for the quantizer's rules; its
    CPU finding called it "TFOpLambda", a class the user's model does not have (`info` says KerasOp)."""
    from qinspect.analysis.diagnose import _cpu_findings
    from qinspect.dpu.rewrites import graph_from_float
    from tests.dpu_graph_fixtures import model, rng_weights

    s = [None, 4, 4, 2]
    w = rng_weights(np.random.default_rng(3), {c: {"kernel": (1, 1, 2, 2), "bias": (2,)} for c in ("c", "d")})
    src = model([("x", "InputLayer", {}, [], s),
                 ("c", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["x"], s),
                 ("g", "Activation", {"activation": "gelu"}, ["c"], s),
                 ("add", "KerasOp", {"function": "numpy.add"}, ["g", "c"], s),
                 ("d", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["add"], s)], ["d"], w)
    g = graph_from_float(src.graph, src)
    found = {f.layer: f for f in _cpu_findings(g, {})}
    assert found["add"].evidence["class"]["value"] == "KerasOp numpy.add"
    # the reason it stays float names it as the file does too (emulate said "(TFOpLambda)", audit s34)
    reason = next(n.cpu_reason for n in g.nodes if n.name == "add")
    assert "a Keras 3 operation written on tensors (KerasOp numpy.add; vai_q_tensorflow2 reads Keras 2 models, " \
           "where the same code is a TFOpLambda)" in reason
