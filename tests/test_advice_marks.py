"""Rows ranked by output SQNR are marked where a lower-ranked row agrees with the float top-1 more often."""

from __future__ import annotations

from qinspect.analysis.advisor import top1_outranked


def test_a_row_is_marked_only_when_a_lower_row_beats_its_top1():
    # ranked by SQNR: 0.50 is beaten by the 0.75 two rows down; 0.75 by nothing below it; None is never
    # marked and never beats anything; equal agreement is not beaten
    assert top1_outranked([0.5, None, 0.75, 0.75, 0.25]) == [True, False, False, False, False]
    assert top1_outranked([0.9, 0.8, 0.7]) == [False, False, False]
    assert top1_outranked([0.1, 0.2, 0.3]) == [True, True, False]
    assert top1_outranked([None, 1.0]) == [False, False]
    assert top1_outranked([]) == []


def test_ways_the_quantizer_cannot_take_are_marked_and_ranked_last():
    # a conv -> ReLU -> grouped conv pair: vai_q_tensorflow2's CLE stops there, so every row with CLE on is
    # no real run: marked, and ranked below every row with CLE off whatever its figure
    from qinspect.analysis.advisor import advise, option_grid, quantizer_stops_note
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.options import QuantizerOptions
    from tests.test_dpu_quantizer_options import _grouped_pair, _x

    src, _ = _grouped_pair(1, 2)
    x = _x()

    def build(opts):
        n = opts.get("calib_samples", len(x))
        keywords = {k: v for k, v in opts.items() if k != "calib_samples"}
        return Emulator.from_model(src, x[:n], options=QuantizerOptions(**keywords)).graph

    rows = advise(build, {"x": x}, option_grid(4, len(x)))
    stops = [r.quantizer_stops is not None for r in rows]
    assert stops == [r.options.get("include_cle", True) for r in rows]  # exactly the CLE-on rows
    assert any(stops) and not all(stops)
    assert stops == sorted(stops)  # every runnable row first
    assert "include_cle=False" in quantizer_stops_note([r.quantizer_stops for r in rows])
    assert all(r.to_dict()["quantizer_stops"] == r.quantizer_stops for r in rows)
    # each option set the quantizer cannot run was tried again with CLE off
    option_rows = [r.options for r in rows if not r.keep_float]
    for opts in option_rows:
        if opts.get("include_cle", True):
            assert {**opts, "include_cle": False} in option_rows
