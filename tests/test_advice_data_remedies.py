"""A diagnosis' data remedies are advice rows too: its best measured fix (calibrate without outlier samples,
or on the data in use) was missing from the JSON ``advice`` a script reads, whose first row then named a
worse way to quantize."""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.analysis.advisor import calibration_text
from qinspect.analysis.diagnose import _advice
from qinspect.analysis.findings import Finding, ev
from qinspect.analysis.remedies import Fix
from qinspect.dpu.rewrites import graph_from_float
from tests.dpu_graph_fixtures import model, rng_weights


def _graph():
    s = [None, 4, 4, 2]
    w = rng_weights(np.random.default_rng(3), {"c": {"kernel": (1, 1, 2, 2), "bias": (2,)}})
    src = model([("x", "InputLayer", {}, [], s),
                 ("c", "Conv2D", {"filters": 2, "kernel_size": [1, 1], "activation": "linear"}, ["x"], s)], ["c"], w)
    return graph_from_float(src.graph, src)


def _recalibrated(kind: str, sqnr: float, evidence: dict, measured_on: str = "") -> Finding:
    f = Finding("x", kind, sqnr - 24.4, evidence, "")
    f.fix = Fix("recalibrate", "recalibrate", {("quant_x", "output"): 6})
    f.remedy = {"kind": "recalibrate", "action": "recalibrate", "measured_sqnr_db": sqnr, "measured_gain_db": 9.6,
                "top1_agreement": 1.0, **({"measured_on": measured_on} if measured_on else {})}
    return f


def test_recalibrations_are_quantize_model_calls_ranked_with_the_others():
    on = "the 46 measured samples other than the outlier samples 5, 17"
    outliers = _recalibrated("outlier_range", 34.0, {"outlier_samples": ev([5, 17], "")}, on)
    coverage = _recalibrated("coverage", 36.2, {})
    rows = _advice(_graph(), [outliers, coverage], 24.4, 1.0)
    assert [r["output_sqnr_db"] for r in rows] == [36.2, 34.0, 24.4]
    cov, out, base = rows
    assert cov["calib_data"] == "evaluation" and cov["calib_exclude"] == []
    assert cov["command"].endswith("quantize_model(calib_dataset=evaluation_data)")
    assert "upper bound" in cov["measured_on"]
    assert out["calib_exclude"] == [5, 17] and out["calib_data"] is None and out["measured_on"] == on
    assert out["command"].endswith("quantize_model(calib_dataset=np.delete(calib, [5, 17], axis=0))")
    assert base["command"].endswith("quantize_model(calib_dataset=calib)") and "measured_on" not in base
    assert (calibration_text(cov), calibration_text(out), calibration_text(base)) == \
        ("calibrated on the evaluation data", "calibrated without samples 5, 17", "")


def test_the_window_and_the_report_say_how_a_row_calibrates():
    from qinspect.gui.advice_view import options_text
    from qinspect.report.html import render_html
    from tests.report_fixtures import sample_report

    row = _advice(_graph(), [_recalibrated("outlier_range", 34.0, {"outlier_samples": ev([5], "")})], 24.4, 1.0)[0]
    assert options_text(row["options"], row["calib_samples"], row) == "calibrated without sample 5"
    assert options_text({}, None, {}) == "as calibrated"
    report = sample_report([])
    report.advice = [row]
    html = render_html(report, {})
    cell = html[html.index('<table class="advice">'):]
    assert "calibrated without sample 5" in cell and "as calibrated" not in cell
    assert "np.delete(calib, [5], axis=0)" in cell


def test_rows_carry_the_paired_spread_of_their_difference_from_the_top_row():
    """advise ranked rows 0.1-1 dB apart with no spread, where diagnose gave +-1.4 dB for such differences:
    each row now carries the jackknife standard error of its SQNR minus the top row's, over the same
    samples, and rows within twice that of the top are marked."""
    import math

    from qinspect.analysis.advisor import AdviceRow, _spread_against_top, within_noise

    rng = np.random.default_rng(1)
    top_noise = rng.uniform(0.5, 1.5, 16)
    other_noise = top_noise * rng.uniform(0.8, 1.5, 16)
    rows = [AdviceRow({}, [], 20.0, noise=top_noise), AdviceRow({}, ["a"], 19.5, noise=other_noise),
            AdviceRow({}, ["b"], 19.0, noise=None)]
    _spread_against_top(rows)
    # the leave-one-out jackknife of 10 log10(sum other / sum top), by hand
    loo = np.array([10 * math.log10((other_noise.sum() - o) / (top_noise.sum() - t))
                    for o, t in zip(other_noise, top_noise, strict=True)])
    want = math.sqrt(15 / 16 * ((loo - loo.mean()) ** 2).sum())
    assert rows[0].vs_best_se_db is None and rows[2].vs_best_se_db is None
    assert rows[1].vs_best_se_db == pytest.approx(want)
    top, second = rows[0].to_dict(), rows[1].to_dict()
    assert second["sqnr_vs_best_se_db"] == pytest.approx(want)
    assert within_noise(second, top) == (0.5 < 2 * want)
    assert not within_noise({**second, "sqnr_vs_best_se_db": 0.1}, top)  # 0.5 dB apart, spread 0.1: apart
