"""The layer panel's numbers without widgets: sample spreading, what-if figures, weight channels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qinspect.gui import layer_stats as ls

pytestmark = pytest.mark.gui


class FakeCapture:
    """Per sample i, every value equals i: which samples were read shows in the values."""

    def __init__(self, n: int, size: int) -> None:
        self.data = np.repeat(np.arange(n, dtype=np.float32)[:, None], size, axis=1)

    def activation(self, layer: str, samples):
        return self.data[samples]


def test_spread_plan_reads_samples_across_the_capture():
    ids, keep = ls.spread_plan(1000, 100, max_values=5000, read_values=20_000)
    assert len(ids) == 200 and ids[0] == 0 and ids[-1] == 999  # 20_000 / 100 samples, first to last
    assert keep == 25  # 5000 kept values over 200 samples
    ids, keep = ls.spread_plan(10, 100)
    assert list(ids) == list(range(10)) and keep == 100  # small layers are read whole


def test_read_spread_keeps_values_of_the_chosen_samples():
    cap = FakeCapture(50, 40)
    ids = np.array([0, 10, 49])
    x = ls.read_spread(cap, "l", ids, 7, lambda: None)
    assert x.size == 21
    assert sorted(set(x.tolist())) == [0.0, 10.0, 49.0]
    np.testing.assert_array_equal(ls.read_spread(cap, "l", ids, 40, lambda: None), np.repeat([0, 10, 49], 40))


def test_what_if_counts_clipping_and_sqnr_by_hand():
    # Values 0, 0.5, ..., 9.5 at p = 3: range [-16, 15.875], all exact -> infinite SQNR, nothing clipped.
    x = np.arange(20, dtype=np.float32) / 2
    data = ls.layer_data("l", "ReLU", x, 1, 1, 3, "test", [], True)
    w = ls.what_if(data, 3)
    assert w.clip_lo_frac == 0 and w.clip_hi_frac == 0 and math.isinf(w.sqnr_db)
    # p = 4: range [-8, 7.9375]: 8.0 .. 9.5 (4 of 20 values) clip to 7.9375.
    w = ls.what_if(data, 4)
    assert w.clip_hi_frac == pytest.approx(4 / 20) and w.hi == 127 / 16
    noise = sum((v - 127 / 16) ** 2 for v in (8.0, 8.5, 9.0, 9.5))
    assert w.sqnr_db == pytest.approx(10 * math.log10(float(np.sum(x.astype(np.float64) ** 2)) / noise))
    assert w.stats.codes_used == 17  # 0..7.5 give codes 0, 8, ..., 120 (16 codes), plus the clipped 127


def test_weight_channels_against_the_tensor_range():
    k = np.zeros((1, 1, 2, 3), np.float32)
    k[..., 0], k[..., 1], k[..., 2] = 1.0, 0.25, 0.0
    (info,) = [w for w in ls.weight_infos("Conv2D", {"kernel": k}, {"kernel": 7}, "test") if w.name == "kernel"]
    assert info.position == 7 and info.position_source == "test"
    np.testing.assert_allclose(info.bits_wasted[:2], [0.0, 2.0])
    assert math.isinf(info.bits_wasted[2])  # an all-zero channel has no code at all
    assert list(info.codes_used) == [1, 1, 1]


def test_channel_bars_group_adjacent_channels_past_the_cap():
    # 10 channels, at most 4 bars: groups of 3 (0-2, 3-5, 6-8, 9), each the envelope of its channels.
    cmin = -np.arange(10, dtype=np.float32)
    cmax = np.arange(10, dtype=np.float32) / 2
    wasted = np.array([0, 1, 9, 2, 0, 0, np.inf, 1, 1, 3], dtype=np.float64)
    bars = ls.channel_bars(cmin, cmax, wasted, max_bars=4)
    assert bars.per_bar == 3 and bars.n_channels == 10
    np.testing.assert_allclose(bars.x, [1, 4, 7, 9])
    np.testing.assert_allclose(bars.lo, [-2, -5, -8, -9])
    np.testing.assert_allclose(bars.hi, [1, 2.5, 4, 4.5])
    np.testing.assert_allclose(bars.wasted, [8, 2, 8, 3])  # the worst of each group, capped at 8
    assert bars.dead == 2  # 9 bits and an all-zero channel
    one = ls.channel_bars(cmin, cmax, wasted, max_bars=10)
    assert one.per_bar == 1
    np.testing.assert_allclose(one.x, np.arange(10))
    np.testing.assert_allclose(one.hi, cmax)


def test_scatter_sample_keeps_the_extremes_and_one_point_per_cell():
    rng = np.random.default_rng(1)
    x = rng.normal(size=100_000).astype(np.float32)
    y = np.round(x * 4) / 4  # a quantizer with step 1/4: few distinct y
    sx, sy = ls.scatter_sample(x, y, n=1500, grid=50)
    assert sx.size <= 1500
    assert sx.min() == x.min() and sx.max() == x.max()  # the clipped tails always show
    # Never two points in one cell of the 50 x 50 raster of their extent.
    cx = np.minimum(((sx - sx.min()) / (sx.max() - sx.min()) * 50).astype(int), 49)
    cy = np.minimum(((sy - sy.min()) / (sy.max() - sy.min()) * 50).astype(int), 49)
    assert len(set(zip(cx.tolist(), cy.tolist(), strict=True))) == sx.size
    assert sx.size < 1500 // 2  # y has only a few values: most sampled points shared a cell
    i = np.searchsorted(np.sort(x), sx)  # every point is one of the input pairs
    assert np.all(np.sort(x)[np.minimum(i, x.size - 1)] == sx)


def test_a_tensor_without_a_position_is_shown_as_a_what_if_not_in_use(qtbot):
    """A conv folded into its BatchNorm, or a softmax on the CPU, has no position in the int8 model: the
    panel showed min-MSE's as "p = N (in use)" with clip and SQNR figures read as the model's."""
    from qinspect.gui.layer_panel import LayerPanel

    x = np.linspace(-3, 3, 200, dtype=np.float32)
    folded = ls.layer_data("c", "Conv2D", x, 1, 1, None, "not a tensor of the int8 model: folded", [], True)
    kept = ls.layer_data("r", "ReLU", x, 1, 1, 5, "calibration", [], True)
    assert folded.whatif_only and folded.position is not None and not kept.whatif_only
    panel = LayerPanel()
    qtbot.addWidget(panel)
    for data, want in ((folded, "what-if: the int8 model does not quantize this tensor"), (kept, "(in use)")):
        panel.data, panel.whatif = data, ls.what_if(data, data.position)
        panel._set_whatif_labels()
        assert want in panel.range_label.text()
        assert ("(what-if)" in panel.sqnr_label.text()) == data.whatif_only


def test_range_tally_counts_every_value_read_exactly_at_any_position():
    """Brute force: the shares below and above [-128, 127] * 2^-p, values on a bound not clipped."""
    from qinspect.analysis.metrics import representable_range
    from qinspect.gui.layer_stats import RangeTally

    rng = np.random.default_rng(3)
    x = (rng.standard_t(2, size=6000) * 30).astype(np.float32)
    lo, hi = representable_range(2)
    x[:4] = [lo, hi, np.nextafter(np.float32(hi), np.float32(1e9)), np.nextafter(np.float32(lo), np.float32(-1e9))]
    tally = RangeTally()
    for part in np.array_split(x, 5):
        tally.add(part)
    assert (tally.n, tally.vmin, tally.vmax) == (x.size, float(x.min()), float(x.max()))
    for p in range(-12, 20):
        lo, hi = representable_range(p)
        assert tally.clip_fracs(p) == (np.count_nonzero(x < lo) / x.size, np.count_nonzero(x > hi) / x.size)
    # a narrow range (DPUCADF8H): below -127 * 2^-p, with values on and just beyond that bound too
    x[4:6] = [-127 * 2.0**-2, np.nextafter(np.float32(-127 * 2.0**-2), np.float32(-1e9))]
    tally = RangeTally()
    tally.add(x)
    for p in range(-12, 20):
        lo, hi = representable_range(p, qmin=-127)
        assert tally.clip_fracs(p, -127) == (np.count_nonzero(x < lo) / x.size, np.count_nonzero(x > hi) / x.size)


def test_a_narrow_tensor_is_quantized_and_positioned_for_minus_127():
    from qinspect.dpu.fixed_point import pos_min_mse
    from qinspect.gui import layer_stats as ls

    # -1.0 at p = 7 is code -128 on a full range; coded in [-127, 127] it clips to -127/128
    x = np.asarray([-1.0, -0.5, 0.25, 0.5] * 64, np.float32)
    full = ls.layer_data("a", "ReLU", x, 1, 1, 7, "test", [], True)
    narrow = ls.layer_data("a", "ReLU", x, 1, 1, 7, "test", [], True, code_min=-127)
    assert full.method_positions["non-overflow"] == 7 and narrow.method_positions["non-overflow"] == 6
    assert narrow.method_positions["min-MSE (vai_q pof2s default)"] == pos_min_mse(x, ls.Round.HALF_UP, True)
    wf, wn = ls.what_if(full, 7), ls.what_if(narrow, 7)
    assert (wf.lo, wf.clip_lo_frac) == (-1.0, 0.0)
    assert (wn.lo, wn.clip_lo_frac) == (-127 / 128, 0.25)
    assert wn.stats.qmin == -127 and wn.stats.q_lo_count == 64


def test_a_draw_that_misses_the_extremes_still_shows_the_exact_range_and_clipping():
    """The panel drew 2^18 values of a larger tensor and read its range, its non-overflow position and its
    clipped shares off the draw: a minimum of -8.02 read as -7.14, p = 4 instead of 3, 0% clipped."""
    from qinspect.dpu.fixed_point import pos_non_overflow
    from qinspect.gui import layer_stats as ls

    class Capture:
        def __init__(self, x):
            self.x = x

        def activation(self, layer, i):
            return self.x[i]

    x = np.random.default_rng(4).uniform(-1, 1, size=(4, 10000)).astype(np.float32)
    x[2, 17] = -9.5  # one value: a draw of 100 per sample almost surely misses it
    tally = ls.RangeTally()
    drawn = ls.read_spread(Capture(x), "l", np.arange(4), 100, lambda: None, tally=tally)
    assert drawn.size == 400 and drawn.min() > -9.5
    data = ls.layer_data("l", "ReLU", drawn, 4, 4, 3, "test", [], True, tally=tally)
    assert data.vmin == -9.5 and data.method_positions["non-overflow"] == pos_non_overflow(-9.5, float(x.max()))
    whatif = ls.what_if(data, 4)  # [-8, 7.94]: the one value clips
    assert whatif.clip_lo_frac == 1 / x.size and whatif.clip_hi_frac == 0.0


def test_the_panel_says_the_exact_clipped_share_not_the_draws(qtbot):
    """The clip line read the draw's ErrorStats: 0% where one value in 40,000 clips."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qinspect.gui.layer_panel import LayerPanel

    x = np.random.default_rng(4).uniform(-1, 1, size=(4, 10000)).astype(np.float32)
    x[2, 17] = -9.5

    class Capture:
        def activation(self, layer, i):
            return x[i]

    tally = ls.RangeTally()
    drawn = ls.read_spread(Capture(), "l", np.arange(4), 100, lambda: None, tally=tally)
    data = ls.layer_data("l", "ReLU", drawn, 4, 4, 4, "test", [], True, tally=tally)
    panel = LayerPanel()
    qtbot.addWidget(panel)
    panel.data, panel.whatif = data, ls.what_if(data, 4)
    panel._set_whatif_labels()
    assert f"Clipped below: <b>{ls.fmt_frac(1 / x.size)}</b>" in panel.clip_label.text()
    assert "the 40,000 float values read lie in [-9.5," in panel.clip_label.text()


def test_a_layer_fused_into_its_activation_says_its_figures_are_before_that_rounding(qtbot, tmp_path):
    """Dense ``hand`` -> ReLU ``chain_0``: the DPU rounds once, after the ReLU. The panel called the tensor
    not quantized, then gave it an "Emulated int8 model SQNR" (an outside audit read it as a contradiction):
    the figures are the value before the activation's rounding, and say so."""
    from gui_fixtures import stop_helpers, window_on, write_gui_capture

    win = window_on(qtbot, tmp_path, write_gui_capture(tmp_path / "c.h5"))
    try:
        panel = win.layer_panel
        for layer, fused in (("hand", True), ("chain_0", False)):
            with qtbot.waitSignal(panel.shown, timeout=30000):
                win.select_layer(layer) if win.current_layer() != layer else panel.show_layer(layer)
            text = panel.emulated_label.text()
            assert ("before the rounding at quant_chain_0" in text) == fused
            assert ("Emulated int8 model SQNR" in text) == (not fused) and "dB" in text
    finally:
        win.shutdown()
        stop_helpers()


def test_the_coverage_of_a_dpucadf8h_target_counts_below_minus_127(tmp_path):
    from gui_fixtures import write_gui_capture

    from qinspect.dpu.options import QuantizerOptions
    from qinspect.gui.compare_job import coverage_job
    from qinspect.gui.document import open_document
    from qinspect.gui.emulation import emulate_capture
    from qinspect.gui.worker import CancelToken

    path = write_gui_capture(tmp_path / "c.h5")
    doc = open_document(path)
    narrow = QuantizerOptions(target="DPUCADF8H").to_dict()
    for options, code_min in ((None, -128), (narrow, -127)):
        analysis = emulate_capture(CancelToken(1), doc, None, options)
        rows = coverage_job(CancelToken(2), doc, str(path), analysis).rows
        assert rows and all(r.lo == code_min * 2.0**-r.position for r in rows)
