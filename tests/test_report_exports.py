"""JSON and CSV exports: strict JSON, documented structure, numbers copied exactly, stable CSV columns."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from report_fixtures import sample_report

from qinspect.report.content import layer_anchor
from qinspect.report.exports import CSV_COLUMNS, jsonable, report_to_csv, report_to_json


def _strict_loads(text: str):
    def bad(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=bad)


def test_json_is_strict_and_has_the_documented_top_level_keys():
    data = _strict_loads(report_to_json(sample_report()))
    assert data["format"] == "qinspect-report" and data["version"] == 1
    assert set(data) >= {"scope", "model", "how", "findings", "layers", "figures", "csv_columns", "settings"}
    assert data["scope"] == "model"
    assert data["findings"] is None  # diagnosis not run: null, not an empty list
    assert [c["name"] for c in data["csv_columns"]] == [n for n, _ in CSV_COLUMNS]


def test_json_numbers_equal_the_report_numbers_bit_for_bit():
    report = sample_report()
    conv = report.layers[0]
    data = _strict_loads(report_to_json(report))
    layer = data["layers"][0]
    assert layer["isolated"]["mse"] == conv.isolated["mse"]  # repr round-trip: exact
    assert layer["isolated"]["sqnr_db"] == conv.isolated["sqnr_db"]
    assert layer["accumulated"]["sqnr_db"] == "inf"  # +inf is a string in strict JSON
    assert layer["positions"] == {"input": [6], "weights": 9, "bias": 10, "output": 5}
    assert layer["saturation"] == {"low": 0.0, "high": 0.00125}
    assert layer["anchor"] == layer_anchor("block/conv<1>")
    assert data["layers"][1]["isolated"] is None and data["layers"][1]["placement"] == "CPU"


def test_json_lists_figure_files_only_when_rendered():
    report = sample_report()
    without = _strict_loads(report_to_json(report))
    assert without["layers"][0]["figures"] == []
    with_files = _strict_loads(report_to_json(report, {"L1-activation": "figures/L1-activation.png"}))
    assert with_files["layers"][0]["figures"] == [
        {"id": "L1-activation", "title": "Activation histogram: block/conv<1>", "file": "figures/L1-activation.png"}
    ]


def test_jsonable_converts_numpy_and_nonfinite_values():
    value = {"a": np.float32(0.5), "b": np.arange(3, dtype=np.int64), "c": [math.nan, -math.inf], 4: np.bool_(True)}
    assert jsonable(value) == {"a": 0.5, "b": [0, 1, 2], "c": ["nan", "-inf"], "4": True}
    with pytest.raises(TypeError):
        jsonable({"x": object()})


def test_csv_has_the_documented_columns_and_one_row_per_layer():
    report = sample_report()
    rows = list(csv.DictReader(io.StringIO(report_to_csv(report))))
    assert list(rows[0]) == [n for n, _ in CSV_COLUMNS]
    assert [r["layer"] for r in rows] == ["block/conv<1>", "softmax"]
    conv = rows[0]
    assert float(conv["iso_mse"]) == report.layers[0].isolated["mse"]
    assert conv["acc_sqnr_db"] == "inf"
    assert conv["pos_input"] == "6" and conv["pos_weights"] == "9" and conv["pos_output"] == "5"
    assert conv["rewrites"] == "BatchNormalization bn1 folded into block/conv<1>"
    assert conv["index"] == "1"
    soft = rows[1]
    assert soft["iso_sqnr_db"] == "" and soft["pos_weights"] == "" and soft["placement"] == "CPU"


def test_a_node_the_quantizer_made_has_no_index_so_no_two_rows_share_one():
    # a separable conv's depthwise step sits between two layers of the float model: it is none of them,
    # and numbering it by its row gave it the index of the layer after it
    from dataclasses import replace

    from qinspect.report.exports import report_to_dict

    report = sample_report()
    step = replace(report.layers[0], name="quant_sep_depthwise_conv", index=None)
    report.layers.insert(1, step)
    rows = list(csv.DictReader(io.StringIO(report_to_csv(report))))
    assert [r["index"] for r in rows] == ["1", "", "2"]
    assert [layer["index"] for layer in report_to_dict(report, {})["layers"]] == [1, None, 2]


def test_csv_worst_finding_is_the_most_severe_one():
    findings = [
        {"layer": "block/conv<1>", "kind": "saturation", "severity": 2.5, "evidence": {}, "advice": "a"},
        {"layer": "block/conv<1>", "kind": "outlier_range", "severity": 7.0, "evidence": {}, "advice": "b"},
    ]
    rows = list(csv.DictReader(io.StringIO(report_to_csv(sample_report(findings)))))
    assert rows[0]["worst_finding"] == "outlier_range" and float(rows[0]["worst_severity_db"]) == 7.0
    assert rows[1]["worst_finding"] == ""


def test_layer_anchors_are_distinct_for_names_that_differ_only_in_punctuation():
    names = ["a/b", "a-b", "a_b", "a.b", "a b", "a-2f-b"]
    anchors = [layer_anchor(n) for n in names]
    assert len(set(anchors)) == len(names)
    assert all(a.startswith("layer-") and " " not in a for a in anchors)


def test_a_split_layers_sensitivity_says_which_step_it_is_of():
    """The CSV's keep-float gain of a conv split into conv + relu was one step's figure, unnamed."""
    from types import SimpleNamespace

    from qinspect.report.exports import _sensitivity_of

    assert _sensitivity_of(SimpleNamespace(name="conv2d_1", sensitivity={"layer": "conv2d_1 (relu)"})) == \
        "conv2d_1 (relu)"
    assert _sensitivity_of(SimpleNamespace(name="add", sensitivity={"layer": "add"})) is None
    assert _sensitivity_of(SimpleNamespace(name="add", sensitivity=None)) is None
