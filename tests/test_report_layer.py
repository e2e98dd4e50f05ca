"""A layer's report section: saturation and code use of the output at its position (hand-worked),
metrics copied from the statistics unchanged, figures present for what is known and only for that."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.analysis.metrics import ErrorStats
from qinspect.report.how import how_texts
from qinspect.report.layer import LayerInputs, error_metrics, layer_section, summarize_float


def _inputs(**kw):
    base = dict(name="c", class_name="Conv2D", positions={"input": [6], "weights": 7, "bias": 8, "output": 5})
    base.update(kw)
    return LayerInputs(**base)


def test_saturation_and_codes_used_are_hand_worked():
    # position 5: step 1/32, range [-4, 3.96875]. Codes: -3 -> -96, -1 -> -32, 0.3*32 = 9.6 -> 10,
    # 2 -> 64, 5 -> 160 clipped to 127, -4.5 -> -144 clipped to -128, 0.3 again -> 10.
    x = np.array([-3.0, -1.0, 0.3, 2.0, 5.0, -4.5, 0.3], dtype=np.float32)
    sec = layer_section(_inputs(float_out=x), "L0")
    assert sec.saturation_high == pytest.approx(1 / 7, abs=0) and sec.saturation_low == 1 / 7
    assert sec.codes_used == 6 / 256  # -128, -96, -32, 10, 64, 127
    act = sec.activation
    assert (act["clip_low"], act["clip_high"]) == (-4.0, 3.96875)
    assert (act["float_min"], act["float_max"]) == (-4.5, 5.0)
    assert sum(act["histogram"]["counts"]) == 7


def test_value_exactly_at_the_range_end_is_not_clipped():
    x = np.array([3.96875, -4.0, 0.0], dtype=np.float32)
    sec = layer_section(_inputs(float_out=x), "L0")
    assert sec.saturation_low == 0.0 and sec.saturation_high == 0.0


def test_error_metrics_are_copied_from_the_stats():
    ref = np.array([1.0, -2.0, 0.5, 0.25])
    test = np.array([1.0, -1.9375, 0.5, 0.28125])  # errors 0, 1/16, 0, 1/32
    stats = ErrorStats().update(ref, test)
    m = error_metrics(stats, 5)
    sum_d2 = (1 / 16) ** 2 + (1 / 32) ** 2
    assert m["mse"] == sum_d2 / 4
    assert m["sqnr_db"] == pytest.approx(10 * math.log10((1 + 4 + 0.25 + 0.0625) / sum_d2), rel=1e-12)
    assert m["max_abs"] == 1 / 16
    assert m["rmse_over_scale"] == pytest.approx(math.sqrt(sum_d2 / 4) * 32, rel=1e-12)
    assert error_metrics(stats, None)["rmse_over_scale"] is None
    assert error_metrics(ErrorStats(), 5) is None  # nothing seen: not available, not zero


def test_section_carries_isolated_and_accumulated_views():
    ref = np.linspace(-1, 1, 64)
    iso = ErrorStats().update(ref, ref + 1 / 64)
    acc = ErrorStats().update(ref, ref + 1 / 16)
    sec = layer_section(
        _inputs(float_out=ref, isolated=iso, accumulated=acc, isolated_error=np.full(64, 1 / 64)), "L3"
    )
    assert sec.isolated["sqnr_db"] == iso.sqnr_db and sec.accumulated["sqnr_db"] == acc.sqnr_db
    assert sec.accumulated["sqnr_db"] < sec.isolated["sqnr_db"]
    assert sec.error_histogram["view"] == "isolated"
    assert {f.id for f in sec.figures} == {"L3-activation", "L3-error"}


def test_without_emulator_output_the_error_histogram_is_the_output_rounding():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    sec = layer_section(_inputs(float_out=x), "L0")
    assert sec.isolated is None and sec.accumulated is None
    eh = sec.error_histogram
    assert eh["view"] == "output rounding"
    # rounding at position 5 never errs by more than half a step
    assert eh["edges"][0] >= -1 / 64 - 1e-12 and eh["edges"][-1] <= 1 / 64 + 1e-12


def test_weights_histogram_and_per_channel_ranges():
    w = np.zeros((1, 1, 2, 3), dtype=np.float32)
    w[..., 0] = [0.5, -0.25]
    w[..., 1] = [0.01, 0.02]
    w[..., 2] = [-1.0, 0.75]
    sec = layer_section(_inputs(weights={"kernel": w, "bias": np.zeros(3, np.float32)}), "L0")
    ch = sec.weights["channels"]
    assert ch["min"] == pytest.approx([-0.25, 0.01, -1.0]) and ch["max"] == pytest.approx([0.5, 0.02, 0.75])
    assert ch["bits_wasted"] == pytest.approx([1.0, math.log2(1 / 0.02), 0.0])
    assert (sec.weights["clip_low"], sec.weights["clip_high"]) == (-1.0, 127 / 128)
    assert {f.id for f in sec.figures} == {"L0-weights", "L0-channels"}


def test_layer_without_anything_has_no_figures_and_no_numbers():
    sec = layer_section(_inputs(class_name="Softmax", positions={}, placement="CPU"), "L0")
    assert sec.figures == [] and sec.activation is None and sec.saturation_low is None


def test_how_texts_come_from_the_metrics_code():
    how = how_texts()
    stats_how = ErrorStats().to_dict()
    assert how["sqnr_db"] == stats_how["sqnr_db"]["how"]
    assert how["max_abs"] == stats_how["max_abs_d"]["how"]
    assert {"isolated", "accumulated", "rmse_over_scale", "positions", "histograms"} <= set(how)


def test_streaming_summary_equals_the_one_batch_summary():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(3000) * 2).astype(np.float32)
    whole = summarize_float(lambda: [x], 5)
    parts = summarize_float(lambda: np.array_split(x, 7), 5)
    assert whole.count == parts.count == 3000
    assert np.array_equal(whole.hist.counts, parts.hist.counts)
    assert np.array_equal(whole.rounding_error.counts, parts.rounding_error.counts)
    assert whole.output_stats.clip_hi_count == parts.output_stats.clip_hi_count == int(np.sum(x > 3.96875))
    assert whole.output_stats.clip_lo_count == int(np.sum(x < -4.0))
    # the error of the largest clipped value (3.96875 - max) lies inside the error histogram
    assert parts.rounding_error.below == parts.rounding_error.above == 0
    assert parts.rounding_error.edges[0] <= 3.96875 - float(x.max())


def test_without_a_capture_the_float_range_is_the_emulators_reference():
    """A model file with --inputs gave saturation (from the emulator's float reference) but no float range or
    int8 range, though the same reference holds them (outside audit, s32 report 1.4)."""
    ref = np.asarray([-1.5, -0.5, 0.25, 0.9], np.float32)
    iso = ErrorStats().update(ref, ref, clip_lo=-1.0, clip_hi=127 / 128)
    sec = layer_section(LayerInputs("r", "ReLU", positions={"output": 7}, isolated=iso), "L0")
    assert sec.saturation_low == 0.25 and sec.codes_used is None  # codes used still need a capture
    assert sec.activation["float_min"] == -1.5 and sec.activation["float_max"] == pytest.approx(0.9)
    assert (sec.activation["clip_low"], sec.activation["clip_high"]) == (-1.0, 127 / 128)
    assert sec.activation["histogram"] is None and "float reference" in sec.activation["values_from"]
