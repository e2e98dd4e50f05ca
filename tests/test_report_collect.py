"""Reports built from a real capture of the Vitis ``small`` reference model.

Positions are checked against the real quantizer's positions.json; error figures against a separate
emulator run; saturation and coverage against counts made here with numpy on the capture's values.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from report_fixtures import pillow_renderer, small_capture, small_eval_capture  # noqa: F401

from qinspect.analysis.metrics import ErrorStats
from qinspect.dpu.emulator import Emulator
from qinspect.errors import QInspectError
from qinspect.io.capture_file import Capture
from qinspect.report.collect import build_report
from qinspect.report.exports import report_to_dict
from qinspect.report.writer import write_report

pytestmark = pytest.mark.tf  # the capture fixture runs the float model with TensorFlow


@pytest.fixture(scope="module")
def vitis_report(small_capture, refcases):  # noqa: F811
    return build_report(small_capture, positions=refcases / "small" / "quantized.h5", diagnose=False)


@pytest.fixture(scope="module")
def calibrated_report(small_capture):  # noqa: F811
    return build_report(small_capture, batch_size=4)


def _layers(report):
    return {layer["name"]: layer for layer in report_to_dict(report)["layers"]}


def test_positions_from_quantized_h5_are_the_vitis_positions(vitis_report, refcases):
    vitis = json.loads((refcases / "small" / "positions.json").read_text())["positions"]
    layers = _layers(vitis_report)
    assert layers["input"]["positions"]["output"] == vitis["quant_input"]["input"]
    # the quantized.h5 folded each BatchNorm into its conv: the BatchNorm's row stands for the folded conv's
    # output and errors, as in a calibrated report (the conv's own captured tensor is before the BatchNorm);
    # the kernel and bias are on the conv's row, where the Vitis run keys them too (conv1/kernel:0)
    for conv in ("conv1", "conv2", "fc"):
        assert layers[conv]["positions"]["weights"] == vitis[conv][f"{conv}/kernel:0"]
        assert layers[conv]["positions"]["bias"] == vitis[conv][f"{conv}/bias:0"]
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        assert layers[conv]["placement"] == "DPU" and "merged into" in layers[conv]["placement_note"]
        assert f"folded with {bn}; the output and its errors are on {bn}'s row" in layers[conv]["placement_note"]
        assert layers[conv]["weights"]["position"] == vitis[conv][f"{conv}/kernel:0"]
        assert layers[bn]["positions"]["weights"] is None and layers[bn]["weights"] is None
        assert f"folded into {conv}'s weights and bias, shown on {conv}'s row" in layers[bn]["placement_note"]
    for act in ("relu1", "pool1", "relu2"):
        assert layers[act]["positions"]["output"] == vitis[act]["output_0"]
    assert layers["fc"]["positions"]["output"] == vitis["fc"]["linear"]
    assert layers["pool1"]["positions"]["input"] == [vitis["relu1"]["output_0"]]
    # a conv whose ReLU is fused into it has no output quantizer of its own
    assert layers["bn1"]["positions"]["output"] is None
    assert "fused" in layers["bn1"]["placement_note"]
    # a flatten moves codes, not the position: its output has relu2's (it read "-", and its clip and RMSE-in-LSB
    # figures were empty, where emulate gives them: outside report audit)
    assert layers["flatten"]["positions"]["output"] == vitis["relu2"]["output_0"]


def test_error_figures_equal_a_separate_emulator_run(vitis_report, small_capture, refcases):  # noqa: F811
    emu = Emulator.from_quantized(refcases / "small" / "quantized.h5")
    with Capture.open(small_capture) as cap:
        results = emu.run(cap, stats_factory=ErrorStats)
    layers = _layers(vitis_report)
    checked = 0
    for name, node in (("relu1", "quant_relu1"), ("pool1", "quant_pool1"), ("relu2", "quant_relu2"),
                       ("fc", "quant_fc"), ("bn2", "quant_conv2")):  # bn2: the conv it is folded into
        for view in ("isolated", "accumulated"):
            stats = getattr(results[node], view)
            got = layers[name][view]
            assert got["mse"] == stats.mse and got["cosine"] == stats.cosine
            assert got["sqnr_db"] == (stats.sqnr_db if math.isfinite(stats.sqnr_db) else "inf")
            checked += 1
    assert checked == 10


def test_a_report_on_a_quantized_h5_does_not_claim_that_nothing_was_rewritten(vitis_report, calibrated_report):
    from qinspect.report.html import render_html

    assert not vitis_report.rewrites_listed and calibrated_report.rewrites_listed
    assert report_to_dict(vitis_report)["rewrites_listed"] is False
    page = render_html(vitis_report, {})
    assert "No graph rewrite" not in page and "they are not derived again here" in page
    assert any(layer.rewrites for layer in calibrated_report.layers)  # qinspect's own rewrites are listed


def test_saturation_and_codes_used_match_counts_on_the_capture(vitis_report, small_capture):  # noqa: F811
    layers = _layers(vitis_report)
    with Capture.open(small_capture) as cap:
        for name in ("input", "relu1", "relu2", "fc"):
            x = cap.activation(name).astype(np.float64).reshape(-1)
            p = layers[name]["positions"]["output"]
            lo, hi = -128 * 2.0**-p, 127 * 2.0**-p
            assert layers[name]["saturation"] == {"low": np.sum(x < lo) / x.size, "high": np.sum(x > hi) / x.size}
            codes = np.clip(np.floor(x * 2.0**p + 0.5), -128, 127)  # HALF_UP, as the DPU rounds activations
            assert layers[name]["codes_used"] == len(np.unique(codes)) / 256
            assert layers[name]["activation"]["float_max"] == pytest.approx(x.max(), rel=1e-7)
            assert sum(layers[name]["activation"]["histogram"]["counts"]) == x.size


def test_a_model_file_report_counts_saturation_on_the_emulators_float_reference(vitis_report, refcases):
    # no capture: the saturation is still the float values beyond the int8 range (same counts as on the
    # capture of the same model and data, up to float rounding at the range's ends); codes used needs one
    small = refcases / "small"
    report = build_report(small / "float.h5", positions=small / "quantized.h5", inputs=small / "calib.npy",
                          diagnose=False)
    from_file, from_capture = _layers(report), _layers(vitis_report)
    for name in ("relu1", "relu2", "fc"):
        for end in ("low", "high"):
            assert from_file[name]["saturation"][end] == pytest.approx(from_capture[name]["saturation"][end], abs=1e-4)
        assert from_file[name]["codes_used"] is None
        assert any("saturation and float range: the emulator's float reference" in n for n in from_file[name]["notes"])
        # the float and int8 ranges come from the same reference: the capture's (outside audit s32 report 1.4)
        for key in ("float_min", "float_max", "clip_low", "clip_high"):
            assert from_file[name]["activation"][key] == pytest.approx(from_capture[name]["activation"][key],
                                                                       rel=1e-6, abs=1e-7)
    assert all(from_file[name]["saturation"]["high"] is not None for name in ("relu1", "relu2", "fc"))  # not n/a


def test_calibrated_report_maps_float_layers_to_int8_nodes(calibrated_report):
    layers = _layers(calibrated_report)
    # BatchNorm folded into the conv: the conv node stands for bn1's output; conv1 has no int8 output, and
    # holds the folded kernel (where the window and the channel findings put it)
    assert layers["conv1"]["positions"]["weights"] is not None and layers["bn1"]["positions"]["weights"] is None
    assert layers["conv1"]["positions"]["output"] is None and layers["bn1"]["isolated"] is not None
    assert "merged into" in layers["conv1"]["placement_note"]
    assert any("bn1 folded" in t for t in layers["bn1"]["rewrites"])
    assert all(layers[n]["placement"] == "DPU" for n in ("relu1", "pool1", "relu2", "fc"))
    assert calibrated_report.positions_source.startswith("qinspect calibration")


def test_findings_and_sensitivity_come_from_the_diagnosis(calibrated_report, small_capture):  # noqa: F811
    from qinspect.analysis.diagnose import diagnose

    with Capture.open(small_capture) as cap:
        emu = Emulator.from_model(cap, calib_inputs=cap, batch_size=4)
        data = {"input": np.asarray(cap.inputs(), np.float32)}
    expected = diagnose(emu.graph, data).to_dict()
    assert calibrated_report.findings is not None
    assert [(f["kind"], f["severity"]) for f in calibrated_report.findings] == [
        (f["kind"], f["severity"]) for f in expected["findings"]
    ]
    sens = {s["node"]: s for s in expected["sensitivity"]}
    layers = _layers(calibrated_report)
    assert layers["fc"]["sensitivity"]["keep_float_gain_db"] == sens["quant_fc"]["keep_float_gain_db"]
    assert calibrated_report.summary["model output SQNR (dB)"] == expected["output_sqnr_db"]["value"]
    # the first page: the output block, the noise budget and the measured ways to quantize
    assert calibrated_report.output["sqnr_db"] == expected["output"]["sqnr_db"]
    assert calibrated_report.output["samples"] == expected["sensitivity_samples"]
    assert calibrated_report.explained == expected["explained"]
    assert calibrated_report.advice == expected["advice"] and calibrated_report.advice_source


def test_layer_report_has_one_section_and_its_findings_only(small_capture, refcases):  # noqa: F811
    report = build_report(small_capture, positions=refcases / "small" / "quantized.h5", layer="relu2")
    assert report.findings is not None
    assert report.scope == "layer" and [s.name for s in report.layers] == ["relu2"]
    assert all(f["layer"] == "relu2" for f in report.findings or [])
    assert report.figures == []  # no propagation plot for one layer


def test_a_layer_report_of_a_folded_conv_has_the_row_it_was_merged_into(small_capture, refcases):  # noqa: F811
    # conv2 has no int8 tensor of its own: the quantizer merged it with bn2, whose row holds its output's
    # errors; conv2's row holds the folded kernel
    report = build_report(small_capture, positions=refcases / "small" / "quantized.h5", layer="conv2",
                          diagnose=False)
    assert [s.name for s in report.layers] == ["conv2", "bn2"]
    conv2, bn2 = report.layers
    assert conv2.positions["weights"] == 9 and bn2.positions["output"] is None and bn2.isolated is not None


def test_a_layer_report_lists_the_findings_that_name_it_among_the_affected_layers():
    from qinspect.report.collect import concerns

    rounding = {"layer": "a", "kind": "accumulated_rounding", "affects": ["a", "b"]}
    assert concerns(rounding, "b") and concerns(rounding, "a") and not concerns(rounding, "c")
    assert concerns({"layer": "c", "kind": "saturation"}, "c")


def test_unknown_layer_is_a_one_line_error_with_a_hint(small_capture):  # noqa: F811
    with pytest.raises(QInspectError, match="no layer named 'relu' .*did you mean"):
        build_report(small_capture, layer="relu", diagnose=False)


def test_eval_coverage_counts_values_outside_the_int8_range(vitis_report, small_capture, small_eval_capture,  # noqa: F811
                                                            refcases):
    report = build_report(small_capture, positions=refcases / "small" / "quantized.h5", eval_path=small_eval_capture,
                          diagnose=False)
    layers = _layers(vitis_report)
    with Capture.open(small_eval_capture) as ev:
        x = ev.activation("input").astype(np.float64).reshape(-1)
    p = layers["input"]["positions"]["output"]
    expected = (np.sum(x < -128 * 2.0**-p) + np.sum(x > 127 * 2.0**-p)) / x.size
    assert expected > 0.1  # inputs scaled by 3 leave the range the calibration chose
    assert report.coverage["input"] == expected
    assert report.coverage["conv1"] is None  # no int8 output of its own: nothing to compare


def test_eval_capture_of_another_model_names_both_files(small_capture, tmp_path):  # noqa: F811
    from capture_fixtures import write_tiny

    other = write_tiny(tmp_path / "tiny.h5")
    with pytest.raises(QInspectError) as info:
        build_report(small_capture, eval_path=other, diagnose=False)
    assert str(other) in str(info.value) and str(small_capture) in str(info.value)


def test_written_report_round_trips_the_numbers(vitis_report, tmp_path):
    out = write_report(vitis_report, tmp_path / "rep", render_figures=pillow_renderer)
    data = json.loads((out / "report.json").read_text())
    files = {fig.id: f"figures/{fig.id}.png" for fig in vitis_report.all_figures()}
    assert data == json.loads(json.dumps(report_to_dict(vitis_report, files)))
    for layer in data["layers"]:
        for ref in layer["figures"]:
            assert (out / ref["file"]).is_file()


def test_a_failing_diagnosis_leaves_the_rest_of_the_report(small_capture, refcases, monkeypatch):  # noqa: F811
    import qinspect.analysis.diagnose as diag

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(diag, "diagnose", broken)
    report = build_report(small_capture, positions=refcases / "small" / "quantized.h5", layer="fc")
    assert report.findings is None and "diagnosis failed (RuntimeError: boom)" in report.findings_missing
    assert any("boom" in w for w in report.warnings)
    assert report.layers[0].accumulated is not None  # the emulator's numbers are all there


def test_skipped_diagnosis_says_so(vitis_report):
    assert vitis_report.findings is None
    assert "not asked for" in vitis_report.findings_missing


def test_error_histogram_counts_the_isolated_errors_of_the_emulator_run(vitis_report):
    from qinspect.report.collect import ERROR_SAMPLE

    layers = _layers(vitis_report)
    fc = layers["fc"]
    n = 16 * 10  # samples x logits: all kept
    assert fc["error_histogram"]["view"] == "isolated" and sum(fc["error_histogram"]["counts"]) == n
    assert fc["error_histogram"]["what"].endswith(f"all {n} values")
    relu1 = layers["relu1"]["error_histogram"]
    assert sum(relu1["counts"]) == ERROR_SAMPLE and "the first" in relu1["what"]
    # the figure's caption says the histogram is of a part of the values, as the JSON does
    captions = {f.id: f.caption for sec in vitis_report.layers for f in sec.figures}
    relu1_caption = next(c for fid, c in captions.items() if fid.endswith("-error") and "relu1's" in c)
    assert f"the first {ERROR_SAMPLE} of " in relu1_caption
    assert next(c for fid, c in captions.items() if fid.endswith("-error") and "fc's" in c).startswith(
        f"Isolated error of {n} values of fc's output.")


def test_first_page_has_the_noise_budget_and_the_best_remedy():
    from qinspect.report.collect import _budget_summary

    data = {"output": {"top1_agreement": 0.9375}, "explained": 0.44,
            "findings": [{"remedy": {"action": "keep a in float", "measured_sqnr_db": 23.3, "measured_gain_db": 1.08}},
                         {"remedy": {"action": "recalibrate", "measured_sqnr_db": 25.0, "measured_gain_db": 2.5}},
                         {"remedy": None}]}
    s = _budget_summary(data)
    assert s["top-1 agreement with the float model"] == "93.8%"
    assert s["output error explained by the findings"].startswith("44%")
    assert s["best remedy, tried in the emulator"] == "recalibrate: output 25.0 dB (+2.50 dB)"


def test_labels_put_float_and_int8_accuracy_on_the_first_page(small_capture, tmp_path):  # noqa: F811
    from qinspect.report.html import render_html

    with Capture.open(small_capture) as cap:  # the float model's logits, as TensorFlow computed them
        logits = cap.activation("fc")[:16]
    labels = np.argmax(logits, axis=-1)
    labels[:3] = (labels[:3] + 1) % logits.shape[-1]  # three wrong on purpose: float accuracy 13/16
    np.save(tmp_path / "labels.npy", labels)
    report = build_report(small_capture, batch_size=4, labels=tmp_path / "labels.npy")
    acc = report.output["accuracy"]
    assert acc["float"] == pytest.approx(13 / 16) and acc["samples"] == 16
    html = render_html(report, {})
    first = html[html.index('<section id="summary">'):html.index('<section id="findings">')]
    assert "accuracy float / int8" in first and "81.25% /" in first and "accuracy needs labels" not in first


def test_labels_that_do_not_cover_the_samples_are_one_line(small_capture, tmp_path):  # noqa: F811
    from conftest import run_cli

    np.save(tmp_path / "few.npy", np.arange(3))
    result = run_cli("report", str(small_capture), "--labels", str(tmp_path / "few.npy"), "--no-sensitivity",
                     "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "few.npy" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert not (tmp_path / "out").exists()


def test_the_options_calibration_batch_size_is_the_reports(small_capture, calibrated_report):  # noqa: F811
    """The window passes its Quantizer settings as options: their batch size was dropped for 32, so an
    exported report described another calibration than the one on screen."""
    from qinspect.dpu.options import QuantizerOptions

    from_options = build_report(small_capture, options=QuantizerOptions(calib_batch_size=4))
    assert "batch size 4" in from_options.positions_source
    assert _layers(from_options) == _layers(calibrated_report)  # = build_report(batch_size=4)


def test_with_eval_each_row_says_which_data_its_errors_and_its_sensitivity_come_from(  # noqa: F811
        small_capture, small_eval_capture):  # noqa: F811
    # the audit read 21.2 dB in the output row of layers.csv against 16.3 dB in the summary, with a note at
    # the top saying the errors were the evaluation data's: the rows are the calibration capture's run
    import csv
    import io

    from qinspect.report.exports import report_to_csv, report_to_dict

    report = build_report(small_capture, eval_path=small_eval_capture)
    with Capture.open(small_capture) as cal, Capture.open(small_eval_capture) as ev:
        n_cal, n_eval = cal.n_samples, ev.n_samples
    rows = list(csv.DictReader(io.StringIO(report_to_csv(report))))
    assert {r["errors_measured_on"] for r in rows} == {f"calibration: {n_cal} samples"}
    diagnosed = {r["sensitivity_measured_on"] for r in rows}
    assert len(diagnosed) == 1 and diagnosed.pop().startswith("evaluation: ")
    assert report.output["samples"] <= n_eval
    assert report_to_dict(report, {})["layers_measured_on"] == {
        "errors": f"calibration: {n_cal} samples",
        "sensitivity": f"evaluation: {report.output['samples']} samples of {small_eval_capture.name}"}
    assert report.notes[0].startswith("The layer table's errors, saturation and ranges (layers.csv, report.json's "
                                      "layers) are the emulator's run on the calibration data")
    # without --eval both are the calibration data, and no note sets them apart
    alone = build_report(small_capture)
    assert report_to_dict(alone, {})["layers_measured_on"]["sensitivity"].startswith("calibration: ")
    assert not any(n.startswith("The layer table's errors") for n in alone.notes)


def test_a_report_without_the_diagnosis_keeps_the_output_sqnr(small_capture):  # noqa: F811
    """--no-findings left the summary empty and no output SQNR anywhere: the figure a CI reader looks for first.
    It is the layer table's run, as `qinspect emulate` gives it on the same capture."""
    from conftest import run_cli

    report = build_report(small_capture, diagnose=False)
    result = run_cli("emulate", str(small_capture), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    expected = json.loads(result.stdout)["output"]["sqnr_db"]
    # another process: its float32 sums may be split over other BLAS threads (1.6e-7 apart in the full suite)
    assert report.summary["model output SQNR (dB)"] == pytest.approx(expected, rel=1e-5)
    assert "no diagnosis" in report.summary["output SQNR measured on"]
    assert report.findings is None and report.output is None


def test_a_misspelled_layer_is_refused_before_any_work(small_capture):  # noqa: F811
    """`report --layer nosuch` calibrated and emulated the whole model before saying the name was wrong."""
    steps: list[str] = []
    with pytest.raises(QInspectError, match="no layer named 'relu3' in the model; did you mean relu2"):
        build_report(small_capture, layer="relu3", progress=lambda _d, _t, what="": steps.append(what))
    assert steps == []
