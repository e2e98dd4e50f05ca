"""Advice rows: the ↓ mark of rows a lower one beats on top-1, and the ways vai_q_tensorflow2 cannot
quantize a model (CLE stopping on a grouped Conv2D): marked, ranked last, the call it can run first."""

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
    # a row the quantizer cannot run (✗) neither beats a row above it nor is marked itself
    assert top1_outranked([0.5, 0.6, 0.9], [True, False, False]) == [False, False, False]
    assert top1_outranked([0.5, 0.9, 0.6], [True, True, False]) == [True, False, False]


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


def test_a_model_the_quantizer_cannot_run_with_cle_leads_with_the_run_it_can():
    # diagnose's first finding is the call vai_q_tensorflow2 can run (CLE off), measured as an independent
    # emulation under it measures; with CLE off, CLE is never offered back as a cure
    import pytest

    from qinspect.analysis.diagnose import diagnose
    from qinspect.analysis.metrics import ErrorStats
    from qinspect.analysis.option_remedies import QUANTIZER_STOPS
    from qinspect.dpu.emulator import Emulator, recalibrator
    from qinspect.dpu.options import QuantizerOptions
    from tests.test_dpu_quantizer_options import _grouped_pair, _x

    src, _ = _grouped_pair(1, 2)
    x = _x()
    opts = QuantizerOptions(calib_batch_size=4)
    emu = Emulator.from_model(src, x, options=opts)
    d = diagnose(emu.graph, {emu.graph.inputs[0]: x}, rebuild=recalibrator(src, x, opts), with_sensitivity=False)
    top = d.findings[0]
    assert QUANTIZER_STOPS in top.evidence and top.remedy["options"] == {"include_cle": False}
    off = Emulator.from_model(src, x, options=opts.with_(include_cle=False))
    out = off.graph.outputs[0]
    want = off.run(x, layers=[out], stats_factory=ErrorStats)[out].accumulated.sqnr_db
    assert top.remedy["measured_sqnr_db"] == pytest.approx(want, abs=0.05)
    # at the grouped conv the quantizer stops on; its cost reads as the real run's figure, not as a "gain"
    from qinspect.report.wording import finding_sentence

    sentence = finding_sentence(top)
    assert top.layer == "b" and "Fixing it gains" not in sentence
    assert f"The run it can make measures {top.remedy['measured_sqnr_db']:.1f} dB at the output" in sentence
    d_off = diagnose(off.graph, {off.graph.inputs[0]: x}, with_sensitivity=False,
                     rebuild=recalibrator(src, x, opts.with_(include_cle=False)))
    assert not any((f.remedy or {}).get("options", {}).get("include_cle") for f in d_off.findings)
    assert not any(QUANTIZER_STOPS in f.evidence for f in d_off.findings)


def test_the_simplest_row_within_the_noise_of_the_best_ranks_first():
    """EfficientNetV2B0 (outside audit): every row scored 0.26 dB and the first one added five CPU layers for a
    third-decimal lead. Within the paired noise of the best, the row with the fewest changes now leads."""
    import numpy as np

    from qinspect.analysis.advisor import AdviceRow, _spread_against_top, prefer_simplest

    rng = np.random.default_rng(0)
    base = {"include_cle": True, "calib_batch_size": 8}
    noise = rng.uniform(1.0, 2.0, 8)
    heavy = AdviceRow(dict(base), ["a", "b"], 0.262, cpu_layers_added=5, noise=noise * 0.999)
    plain = AdviceRow(dict(base), [], 0.258, noise=noise * rng.uniform(0.95, 1.05, 8))
    other = AdviceRow({**base, "include_cle": False}, [], 0.259, noise=noise * rng.uniform(0.95, 1.05, 8))
    rows = [heavy, other, plain]
    _spread_against_top(rows)
    assert prefer_simplest(rows, base)
    assert rows[0] is plain and plain.simplest_within_noise and plain.to_dict()["simplest_within_noise"]
    # a lead far outside the noise stands: the same rows, the heavy one clearly better on every sample
    heavy = AdviceRow(dict(base), ["a", "b"], 6.0, cpu_layers_added=5, noise=noise * 0.25)
    plain = AdviceRow(dict(base), [], 0.258, noise=noise)
    rows = [heavy, plain]
    _spread_against_top(rows)
    assert not prefer_simplest(rows, base) and rows[0] is heavy


def test_options_that_calibrate_to_the_same_int8_model_get_one_row():
    # half the samples choosing what all of them chose is the same int8 model: advise listed it as another
    # way to quantize, with the very same figures (the demo's calib_samples=32 beside calib_samples=64)
    import numpy as np

    from qinspect.analysis.advisor import advise
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.options import QuantizerOptions
    from tests.test_dpu_quantizer_options import _grouped_pair, _x

    src, _ = _grouped_pair(1, 2)
    x = _x()
    doubled = np.concatenate([x, x])  # its first half holds every value the whole does, as often

    def build(opts):
        n = opts.get("calib_samples", len(doubled))
        keywords = {k: v for k, v in opts.items() if k != "calib_samples"}
        return Emulator.from_model(src, doubled[:n], options=QuantizerOptions(**keywords)).graph

    base = {"include_cle": False, "calib_batch_size": 16, "calib_samples": 16}
    half = {**base, "calib_samples": 8}
    graphs = [build(base), build(half)]
    assert {s: graphs[0].pos(s) for s in graphs[0].slots} == {s: graphs[1].pos(s) for s in graphs[1].slots}
    same: list[str] = []
    rows = advise(build, {"x": x}, [base, half], same=same)
    assert [r.options for r in rows if not r.keep_float] == [base]
    assert same == ["include_cle=False, calib_batch_size=16, calib_samples=8 calibrates to the positions of "
                    "include_cle=False, calib_batch_size=16, calib_samples=16: the same int8 model, not listed again"]
    # another batch size that moves a position is another model: listed
    other = {**base, "calib_batch_size": 2}
    moved = any(build(other).pos(s) != graphs[0].pos(s) for s in graphs[0].slots)
    same.clear()
    rows = advise(build, {"x": x}, [base, other], same=same)
    assert (len([r for r in rows if not r.keep_float]), same == []) == ((2, True) if moved else (1, False))


def test_the_in_sample_note_names_the_half_calibration_row_only_when_it_is_listed():
    from qinspect.analysis.advisor import in_sample_note

    listed = in_sample_note(32, rows=[{"calib_samples": 32}, {"calib_samples": 16}])
    assert "and the calib_samples=16 row on the first 16 of them;" in listed
    assert "give an evaluation capture (--eval) to rank the rows" in listed
    alone = in_sample_note(32, "compare with an evaluation capture (File menu)", rows=[{"calib_samples": 32}])
    assert "calib_samples=16" not in alone and alone.startswith("In-sample: these rows are measured on the "
                                                                 "calibration data, so each was calibrated on samples "
                                                                 "it is measured on; a row calibrated on fewer")
    assert "compare with an evaluation capture (File menu) to rank" in alone
