"""Findings in words (qinspect.report.wording): each kind's sentence holds its key numbers, read from the
evidence the diagnosis really writes (the findings are made by qinspect.analysis.findings' own functions)."""

from __future__ import annotations

import numpy as np

from qinspect.analysis import findings as F  # noqa: N812 - as the findings tests name it
from qinspect.dpu.fixed_point import Round, pos_min_mse, pos_non_overflow
from qinspect.report import wording as W  # noqa: N812


def test_saturation_sentence_holds_clipped_share_range_and_position():
    rng = np.random.default_rng(0)
    x = rng.normal(size=100_000).astype(np.float32)
    f = F.saturation("conv1", x, 7)
    clipped = float(np.mean(x < -1.0) + np.mean(x > 127 / 128))  # ~32%, computed here independently
    s = W.finding_sentence(f)
    assert f"{100 * clipped:.0f}% of conv1's output values" in s
    assert "[-1, 0.9922]" in s and "position 7" in s


def test_outlier_sentence_holds_max_ratio_and_bulk_codes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200_000).astype(np.float32)
    x[rng.choice(x.size, 10, replace=False)] = 1000.0
    p = pos_non_overflow(float(x.min()), float(x.max()))
    f = F.outlier_range("act", x, p)
    ratio = 1000.0 / W.evidence_value(f, "bulk_threshold")
    s = W.finding_sentence(f)
    assert "the largest 1000 " in s and f"({ratio:.0f}x the bulk)" in s and f"position {p}" in s
    codes = W.evidence_value(f, "codes_used_by_bulk")
    assert f"{codes} int8 code{'' if codes == 1 else 's'}." in s
    # the share given is of the far outliers (10 values), not the 0.1% above the bulk's own percentile
    assert "(0.005% of the values lie beyond 4x the bulk)" in s


def test_spread_coverage_growth_constraint_cpu_sentences():
    rng = np.random.default_rng(3)
    w = rng.normal(scale=0.1, size=(3, 3, 8, 4)).astype(np.float32)
    w[..., 2] *= 50
    f = F.channel_spread("dw", "Conv2D", w, pos_min_mse(w, Round.HALF_TO_EVEN), cle="disabled")
    s = W.finding_sentence(f)
    assert f"{W.evidence_value(f, 'spread_bits'):.1f} bits apart" in s
    assert f"{len(W.evidence_value(f, 'handful_channels'))} of 4 channels" in s

    calib = rng.uniform(0, 0.9, size=50_000).astype(np.float32)
    ev_x = 2 * rng.uniform(0, 0.9, size=50_000).astype(np.float32)
    c = F.coverage("inp", ev_x, 7, (float(calib.min()), float(calib.max())))
    s = W.finding_sentence(c)
    outside = float(np.mean(ev_x > 127 / 128))  # about 45%
    assert f"{100 * outside:.0f}% of inp's evaluation values" in s and "position 7" in s and "choose 6" in s

    s = W.finding_sentence(F.error_growth("sep1", 40.0, 20.0, 20.5))
    assert "drops 20.0 dB across sep1 (40.0 dB in, 20.0 dB out" in s and "20.5 dB" in s

    w1 = rng.normal(scale=0.2, size=4000).astype(np.float32)
    p = pos_min_mse(w1, Round.HALF_TO_EVEN)
    k = F.constraint("c", "shift_cut", "c/kernel:0", p, p - 2, w1, Round.HALF_TO_EVEN)
    s = W.finding_sentence(k)
    assert f"shift_cut constraint moved c/kernel:0 from position {p} to {p - 2}" in s

    cpu = F.cpu_fallback("soft", "Softmax", "not a DPU operator", 2, True)
    s = W.finding_sentence(cpu)
    assert "soft (Softmax) runs on the CPU in float: not a DPU operator" in s and "2 DPU subgraphs" in s


def test_alignment_and_rounding_sentences():
    rng = np.random.default_rng(5)
    small = rng.normal(scale=0.01, size=20_000).astype(np.float32)
    big = rng.normal(scale=10.0, size=20_000).astype(np.float32)
    ps, pb = pos_min_mse(small, Round.HALF_UP), pos_min_mse(big, Round.HALF_UP)
    f = F.alignment("cat", [F.Branch("a", small, ps, 0.5), F.Branch("b", big, pb, 0.5)], min(ps, pb))
    s = W.finding_sentence(f)
    assert f"position {min(ps, pb)}" in s and f"loses {W.evidence_value(f, 'worst_loss_db'):.1f} dB" in s
    r = F.Finding("sep1", "accumulated_rounding", 0.5, {
        "share": F.ev(0.35, ""), "adders": F.ev([{"layer": "sep1", "keep_float_gain_db": 1.25}], ""),
        "amplifiers": F.ev([{"layer": "add3", "noise_gain_db": 4.5}], "")}, noise_share=0.35)
    r.remedy = {"kind": "keep_float", "action": "keep sep1 in float", "measured_sqnr_db": 20.0,
                "measured_gain_db": 1.2, "top1_agreement": None}
    s = W.finding_sentence(r)
    assert s.startswith("35% of the output error is rounding") and "sep1 (+1.2 dB in float)" in s
    # its noise share is the unexplained rest, not what keeping sep1 in float removes
    assert s.endswith("Fixing it gains 1.20 dB of output SQNR (the remedy below).")
    assert "add3 (noise gain 4.5 dB)" in s
    # a layer that gains nothing kept float alone is named apart, not as "added most by ... (-0.6 dB)"
    r.evidence["adders"] = F.ev([{"layer": "sep1", "keep_float_gain_db": 1.25},
                                 {"layer": "bn5", "keep_float_gain_db": -0.6}], "")
    s = W.finding_sentence(r)
    assert "added most by sep1 (+1.2 dB in float), and by bn5 (nothing gained kept float alone" in s
    assert "-0.6" not in s


def test_unknown_kind_gets_a_generic_sentence_and_dict_form_reads_the_same():
    f = F.Finding("conv9", "thermal_drift", 1.5, {"codes_differing": F.ev(37, "how"), "node": F.ev("q9", "")},
                  remedy={"kind": "option", "action": "run on the board", "measured_sqnr_db": 31.0,
                          "measured_gain_db": 1.5, "top1_agreement": 0.97}, noise_share=0.29)
    s = W.finding_sentence(f)
    assert s.startswith("Thermal drift at conv9: codes differing 37.") and "q9" not in s
    assert "gains 1.50 dB of output SQNR, 29% of the output's error power" in s
    assert W.finding_sentence(f.to_dict()) == s
    r = W.remedy_sentence(f.remedy)
    assert r == ("Tried in the emulator: run on the board. Output SQNR 31.0 dB (+1.50 dB), "
                 "top-1 agreement with float 97.0%.")
    assert W.evidence_lines(f)[0] == "codes_differing = 37  (how)"


def test_missing_evidence_falls_back_instead_of_printing_none():
    f = F.Finding("x", "saturation", 0.0, {"position": F.ev(3, "")})
    s = W.finding_sentence(f)
    assert "None" not in s and s.startswith("Saturation at x: position 3.")


def test_hw_vs_sim_sentence_holds_counts_and_the_bound():
    from qinspect.analysis.hw_vs_sim import LayerDisagreement, SimVsDpu, hw_vs_sim_finding

    res = SimVsDpu([LayerDisagreement("quant_wide", "dense", "float32 partial sums", differ=2, total=512,
                                      max_lsb=1, at_risk=192, abs_sum_max=24_576_000)], samples=8)
    f = hw_vs_sim_finding(res, {"quant_wide": "wide"})
    text = W.finding_sentence(f)
    assert "wide" in text and "2 of 512 codes differ" in text and "192 codes" in text and "1.46x 2^24" in text


def test_a_gain_carries_its_spread_and_a_caveat_within_noise():
    remedy = {"kind": "keep_float", "action": "keep conv2 in float", "measured_sqnr_db": 16.5,
              "measured_gain_db": 0.2, "measured_gain_se_db": 0.4, "top1_agreement": None}
    f = F.Finding("conv2", "thermal_drift", 0.2, {}, remedy=remedy, noise_share=0.05)
    s = W.finding_sentence(f)
    assert "gains 0.20 ± 0.40 dB of output SQNR" in s and "within the spread over the measured samples" in s
    assert W.remedy_sentence(remedy) == ("Tried in the emulator: keep conv2 in float. Output SQNR 16.5 dB "
                                         "(+0.20 ± 0.40 dB).")
    firm = {**remedy, "measured_gain_db": 2.0}
    assert "within the spread" not in W.finding_sentence(F.Finding("conv2", "thermal_drift", 2.0, {}, remedy=firm))


def test_quantizer_option_sentence_names_why_how_many_and_the_option():
    f = F.Finding("c0", "quantizer_option", 1.3, {
        "option": F.ev({"cle_to_relu6": True}, ""), "layers_changed": F.ev(12, ""),
        "why": F.ev("CLE skips every conv pair joined by a ReLU6 (cle_to_relu6=False, the default)", "")})
    s = W.finding_sentence(f)
    assert s.startswith("CLE skips every conv pair joined by a ReLU6 (cle_to_relu6=False, the default): 12 layer(s) "
                        "from c0 on keep their unequal channel ranges, and cle_to_relu6=True would equalize them.")
    assert W.kind_title("quantizer_option") == "Quantizer option"
    # a larger calibration batch steadies a vote; it equalizes nothing
    batch = F.Finding("r2", "quantizer_option", 2.3, {
        "option": F.ev({"calib_batch_size": 64}, ""), "layers_changed": F.ev(2, ""),
        "why": F.ev("calibration batches of 32 chose different positions for 2 tensor(s), and the quantizer keeps "
                    "the most common one (the first seen on a tie)", "")})
    s = W.finding_sentence(batch)
    assert "2 layer(s) from r2 on take positions a close vote decided, and calib_batch_size=64 would steady it." in s
    assert "equalize" not in s


def test_a_round_trip_inside_one_dpu_subgraph_is_not_called_one_subgraph_with_round_trips():
    f = F.Finding("relu3", "cpu_fallback", 0.0, {
        "class": F.ev("ReLU", ""), "reason": F.ev("left unquantized by the quantizer (runs in float)", ""),
        "partitions": F.ev(1, ""), "splits_model": F.ev(True, "")})
    s = W.finding_sentence(f)
    assert "1 DPU subgraphs" not in s and "DPU layers sit on both sides of it" in s
    f.evidence["partitions"] = F.ev(3, "")
    assert "the model runs as 3 DPU subgraphs with round trips through the CPU" in W.finding_sentence(f)



def test_a_long_keep_float_action_is_cut_for_one_line_summaries():
    names = [f"l{i}" for i in range(57)]
    action = f"keep {', '.join(names)} in float (CPU layers)"
    assert W.short_action(action) == "keep l0, l1, l2, l3, l4, l5, l6, l7 and 49 more in float (CPU layers)"
    assert W.short_action("keep a, b in float (CPU layers)") == "keep a, b in float (CPU layers)"
    assert W.short_action("position 5 at conv1") == "position 5 at conv1"


def test_outlier_samples_say_the_largest_magnitude_not_that_each_reaches_it():
    """Samples 5 and 17 spike to 60 and -55: "samples 5, 17 reach 60" said both reach +60."""
    f = F.Finding("inp", "outlier_range", 9.85, {
        "outlier_samples": F.ev([5, 17], ""), "outlier_sample_max": F.ev(60.0, ""),
        "median_sample_max": F.ev(1.2, ""), "position": F.ev(1, "")})
    assert W.finding_sentence(f).startswith("Calibration samples 5, 17 reach |x| up to 60 at inp, 50x")
    f.evidence["outlier_samples"] = F.ev([5], "")
    assert W.finding_sentence(f).startswith("Calibration sample 5 reaches |x| = 60 at inp")


def test_a_long_keep_float_list_does_not_hide_what_the_remedy_measured():
    """A remedy keeping 71 layers float named all 71 before its figures: the window's findings pane cut the
    sentence before "Output SQNR 61.1 dB (+7.10 dB)". The first names and a count, the whole list on asking."""
    names = [f"block{i}_activation" for i in range(71)]
    remedy = {"kind": "keep_float", "action": f"keep {', '.join(names)} in float", "measured_sqnr_db": 61.1,
              "measured_gain_db": 7.1, "measured_gain_se_db": None, "top1_agreement": None}
    assert W.remedy_sentence(remedy) == ("Tried in the emulator: keep " + ", ".join(names[:8]) + " and 63 more in "
                                         "float. Output SQNR 61.1 dB (+7.10 dB).")
    assert W.remedy_sentence(remedy, shown=None).startswith(f"Tried in the emulator: keep {', '.join(names)} in float")
    short = {**remedy, "action": "keep conv2 in float"}
    assert W.remedy_sentence(short) == W.remedy_sentence(short, shown=None)
