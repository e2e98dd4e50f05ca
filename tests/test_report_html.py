"""The HTML report is one self-contained file: no network reference, figures as PNG data URIs."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import pytest
from PIL import Image
from report_fixtures import SRC_RE, pillow_renderer, sample_report

from qinspect.report.html import fmt_number, png_data_uri, render_html


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key == "id":
                self.ids.add(value)


def _page(findings=None, with_figures=True):
    report = sample_report(findings)
    pngs = pillow_renderer(report.all_figures()) if with_figures else {}
    return report, render_html(report, pngs)


def test_page_references_nothing_outside_itself():
    _, page = _page()
    assert not re.search(r"https?://", page)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    refs = SRC_RE.findall(page)
    assert refs, "the page should have images and links"
    for ref in refs:
        assert ref.startswith(("data:image/png;base64,", "#")), ref


def test_every_image_is_a_png_data_uri_of_the_rendered_figure():
    report, page = _page()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == len(report.all_figures()) == 2
    for src in srcs:
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            assert img.format == "PNG"
            img.verify()


def test_missing_figures_are_said_not_silently_dropped():
    _, page = _page(with_figures=False)
    assert "<img" not in page
    assert page.count("was not rendered") == 2


def test_findings_link_to_their_layer_sections():
    findings = [
        {"layer": "block/conv<1>", "kind": "saturation", "severity": 9.04, "advice": "Use min-MSE.",
         "evidence": {"sat_high": 0.03}},
    ]
    _, page = _page(findings)
    parser = _Collect()
    parser.feed(page)
    links = re.findall(r'<a href="#([^"]+)">block/conv&lt;1&gt;</a>', page)
    assert links and all(target in parser.ids for target in links)
    assert "9.0 dB" in page and "Use min-MSE." in page
    # every internal link of the page lands somewhere
    for target in re.findall(r'href="#([^"]*)"', page):
        assert target in parser.ids, target


def test_no_diagnosis_and_empty_diagnosis_are_told_apart():
    report = sample_report(None)
    report.findings_missing = "it was not asked for (--no-findings)"
    none_page = render_html(report, {})
    _, empty_page = _page([])
    assert "No diagnosis in this report: it was not asked for (--no-findings)." in none_page
    assert "found no cause" in empty_page and "No diagnosis" not in empty_page
    # a layer report whose layer has no finding while the model has some says so, not "found no cause"
    layer = sample_report([])
    layer.selected_layer = "softmax"
    layer.elsewhere = [{"layer": "conv2", "kind": "saturation", "severity": 3.25, "remedy": {"kind": "position"}}]
    layer_page = render_html(layer, {})
    assert "found no cause" not in layer_page
    assert "No finding at softmax. The diagnosis found 1 elsewhere in the model" in layer_page
    assert "at conv2: 3.2 dB" in layer_page or "at conv2: 3.3 dB" in layer_page


def test_layer_names_are_escaped():
    _, page = _page()
    assert "block/conv<1>" not in page
    assert "block/conv&lt;1&gt;" in page


def test_how_section_is_present_with_the_given_texts():
    _, page = _page()
    assert 'id="how"' in page and "10*log10(sum ref^2 / sum d^2)" in page


def test_png_data_uri_refuses_non_png():
    with pytest.raises(ValueError):
        png_data_uri(b"GIF89a....")


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [(None, "", "n/a"), (float("inf"), "db", "∞"), (38.249, "db", "38.2"), (0.00125, "pct", "0.12%"),
     (0.0001, "pct", "0.01%"), (0, "pct", "0%"), (1.2345e-5, "", "1.234e-05"), (7, "", "7"),
     ([1, 2.5], "", "[1, 2.5]"), ({"a": 0.5}, "pct", "a: 50.00%"), ("inf", "db", "inf"),
     (float("nan"), "cos", "-")],  # undefined (an all-zero output's cosine): as emulate shows it
)
def test_number_formatting(value, kind, text):
    assert fmt_number(value, kind) == text


def test_evidence_entries_with_how_show_the_value_and_keep_the_how_as_tooltip():
    findings = [
        {"layer": "softmax", "kind": "cpu_fallback", "severity": 0.0, "advice": "x",
         "evidence": {"partitions": {"value": 2, "how": "DPU subgraphs after the split"}, "plain": 0.5}},
    ]
    _, page = _page(findings)
    assert '<span title="DPU subgraphs after the split">partitions = 2</span>' in page
    assert "plain = 0.5" in page


def test_first_page_shows_the_output_block_the_noise_budget_and_the_advice():
    from markupsafe import escape

    from qinspect.report.wording import finding_sentence

    growth = {"layer": "block/conv<1>", "kind": "error_growth", "severity": 1.08, "noise_share": 0.22,
              "evidence": {"drop_db": {"value": 8.7, "how": ""}, "acc_in_sqnr_db": {"value": 32.3, "how": ""},
                           "acc_out_sqnr_db": {"value": 23.6, "how": ""}},
              "advice": "keep the layers feeding it more precise",
              "remedy": {"kind": "keep_float", "action": "keep block/conv<1> in float", "measured_sqnr_db": 23.3,
                         "measured_gain_db": 1.08, "top1_agreement": 1.0}}
    rounding = {"layer": "softmax", "kind": "accumulated_rounding", "severity": 0.5, "noise_share": 0.56,
                "evidence": {"share": {"value": 0.56, "how": ""}}, "advice": "", "remedy": None}
    report = sample_report([growth, rounding])
    report.output = {"sqnr_db": 22.2, "top1_agreement": 0.9375, "samples": 16, "measured_on": "evaluation"}
    report.explained = 0.44
    report.advice = [{"options": {}, "keep_float": ["block/conv<1>"], "output_sqnr_db": 23.3, "top1_agreement": 1.0,
                      "cpu_layers_added": 1, "command": "vitis_quantize.VitisQuantizer(model).quantize_model("
                                                        "calib_dataset=calib, ignore_layers=['block/conv<1>'])"},
                     {"options": {"include_cle": False}, "keep_float": [], "output_sqnr_db": 21.0,
                      "top1_agreement": None, "cpu_layers_added": 0, "command": "q(include_cle=False)"},
                     {"options": {"calib_batch_size": 8}, "keep_float": [], "output_sqnr_db": 20.0,
                      "top1_agreement": 0.5, "cpu_layers_added": 0, "command": "q(calib_batch_size=8)"}]
    report.advice[0]["top1_agreement"] = 0.25  # beaten on top-1 by the last row: marked
    report.advice_source = "the options advisor"
    html = render_html(report, {})
    first = html[html.index('<section id="summary">'):html.index('<section id="findings">')]
    assert "22.2 dB" in first and "93.8%" in first and "first 16 evaluation samples" in first
    assert "accuracy needs labels" in first  # no labels: said, not left blank
    # the budget: the explained total and each finding's share as a bar of that width
    assert "44.00%" in first and 'style="width: 44.0%"' in first
    assert "22.00%" in first and 'style="width: 22.0%"' in first and 'class="fill rest" style="width: 56.0%"' in first
    # the advice rows in order, with their calls (escaped) and options
    assert first.index("23.3") < first.index("21.0")
    assert "ignore_layers=[&#39;block/conv&lt;1&gt;&#39;]" in first and "include_cle=False" in first
    assert "as calibrated" in first and "From the options advisor." in first
    # the count is of DPU operations, not of the names beside it (a conv and its folded BatchNorm: one and two)
    assert ">ops moved to CPU</th>" in first and "a conv with the BatchNorm folded into it is one" in first
    # a row that a lower-ranked row beats on top-1 is marked, and the mark explained; no other row is
    assert first.count("↓") == 2 and "25.0%&thinsp;↓" in first and "50.0%&thinsp;↓" not in first
    assert "↓: a row ranked lower agrees with the float model&#39;s top-1 more often" in first
    # the findings read as sentences
    findings = html[html.index('<section id="findings">'):]
    assert str(escape(finding_sentence(growth))) in findings
    assert "Tried in the emulator: keep block/conv&lt;1&gt; in float." in findings


def test_top1_resting_on_near_ties_is_said_beside_it():
    """A top-1 agreement decided by rounding between near-tied outputs says little: the first page says so
    under the figure, and the summary beside it (as `qinspect diagnose` does)."""
    from markupsafe import escape

    from qinspect.report.collect import _budget_summary

    warning = ("top-1 agreement rests on 16 near-tied of 16 decisions: the float model's top two outputs are "
               "within 0.1% of each other there")
    report = sample_report(None)
    report.output = {"sqnr_db": 111.9, "top1_agreement": 0.0, "samples": 16, "measured_on": "calibration",
                     "near_tie_warning": warning, "top1_rests_on_near_ties": True}
    first = render_html(report, {})
    first = first[first.index('<section id="summary">'):]
    assert '<div class="v">0.0%</div>' in first and str(escape(f"Note: {warning}.")) in first
    assert _budget_summary({"output": report.output})["top-1 agreement with the float model"] == (
        "0.0% (rests on near ties: says little about accuracy)")
    # exact ties of the int8 output alone (clear float decisions): a note, not "says little about accuracy"
    int8_ties = {**report.output, "top1_agreement": 0.75, "top1_rests_on_near_ties": False,
                 "near_tie_warning": "2 of the 2 disagreements are exact ties of the int8 output's top two classes"}
    assert _budget_summary({"output": int8_ties})["top-1 agreement with the float model"] == (
        "75.0% (some disagreements are ties: see the note)")
    report.output = {**report.output, "top1_agreement": 0.9375, "near_tie_warning": None,
                     "top1_rests_on_near_ties": False}
    assert "near-tied" not in render_html(report, {})
    assert _budget_summary({"output": report.output})["top-1 agreement with the float model"] == "93.8%"


def test_a_report_without_a_diagnosis_has_no_first_page_figures_to_show():
    html = render_html(sample_report(None), {})
    assert '<section id="summary">' not in html


def test_first_page_figures_carry_their_spread_over_the_samples():
    from qinspect.report.collect import _budget_summary

    data = {"output": {"top1_agreement": 0.9}, "explained": 0.83, "explained_se": 0.05,
            "findings": [{"remedy": {"action": "keep a in float", "measured_sqnr_db": 23.9, "measured_gain_db": 7.6,
                                     "measured_gain_se_db": 1.28}}]}
    out = _budget_summary(data)
    assert out["output error explained by the findings"].startswith("83% (± 5%)")
    # a spread larger than the share says the share is not measured well, not "50% (± 111%)"
    data["explained"], data["explained_se"] = 0.5, 1.11
    text = _budget_summary(data)["output error explained by the findings"]
    assert text.startswith("50% (not measured well on these samples: ± 111%") and "(± 111%)" not in text
    assert out["best remedy, tried in the emulator"].endswith("(+7.60 ± 1.28 dB)")
    # the rounding finding's share is inside "explained": the rest is not "accumulated rounding"
    assert "(the rest: error no finding's fix removes; every fix applied at once" in \
        out["output error explained by the findings"]
    # the findings' own shares are not parts of it: they overlap (an audit read 44% + 27% + 24% against 69%)
    assert out["output error explained by the findings"].endswith("so those shares do not add up to it)")
    # a best remedy measured on a model the quantizer cannot make says so
    data["findings"].append({"kind": "quantizer_option", "evidence": {"quantizer_stops": {"value": True}},
                             "remedy": {"action": "include_cle=False", "measured_sqnr_db": 18.0,
                                        "measured_gain_db": -5.9}})
    best = _budget_summary(data)["best remedy, tried in the emulator"]
    assert best.startswith("keep a in float") and best.endswith("which vai_q_tensorflow2 cannot quantize (see "
                                                                "the first finding)")


def test_the_layer_table_says_which_data_its_errors_come_from():
    # with --eval, the first page's output SQNR is the evaluation data's and the table's the calibration
    # capture's: the demo showed 16.3 dB above and 21.2 dB in the output row, unexplained
    from report_fixtures import sample_report

    from qinspect.report.html import render_html

    report = sample_report()
    report.samples, report.source = 64, "/data/calib.cap.h5"
    html = render_html(report, {})
    assert "run over 64 samples of calib.cap.h5." in html and "evaluation data" not in html
    # the report's saturation and codes used are the float output rounded alone, not the pipeline's codes
    assert "float output rounded alone at its position" in html
    report.eval_source = "/data/eval.cap.h5"
    report.output = {"samples": 32, "sqnr_db": 16.3}
    html = render_html(report, {})
    assert "64 samples of calib.cap.h5, the calibration capture" in html
    assert "measured on the evaluation data (32 samples of eval.cap.h5)" in html


def test_figures_past_the_inline_budget_are_linked_and_the_page_says_so():
    """A 770-layer model's page embedded 2237 PNGs: 81 MB of HTML."""
    report = sample_report([])
    figures = pillow_renderer(report.all_figures())
    model_ids = {f.id for f in report.figures}
    assert model_ids & set(figures) and set(figures) - model_ids
    budget = sum(len(figures[f]) for f in model_ids if f in figures)  # room for the model's figures alone
    page = render_html(report, figures, inline_bytes=budget)
    inlined = page.count("data:image/png;base64,")
    linked = re.findall(r'src="figures/([^"]+)\.png"', page)
    assert inlined >= len(model_ids & set(figures)) and linked and inlined + len(linked) == len(figures)
    assert not set(linked) & model_ids  # the model's own figures stay in the page
    assert f"{len(linked)} figure(s) are linked to the <code>figures/</code> folder beside this page" in page
    whole = render_html(report, figures)
    assert whole.count("data:image/png;base64,") == len(figures) and "are linked to the" not in whole
