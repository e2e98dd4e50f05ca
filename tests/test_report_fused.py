"""Report rows of layers with a built-in activation (``Conv2D(..., activation="relu")``).

The quantizer splits such a layer into the conv and its activation and fuses them on the DPU: the conv
has weight and bias quantizers, the activation the output one. The report row must show both, checked
against the real quantizer's positions.json of the ``rich`` refcase (c7, c9a, fc13 have
``activation="relu"``). No TensorFlow: positions need no activations.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from qinspect.report.collect import build_report
from qinspect.report.exports import report_to_csv, report_to_dict
from qinspect.report.html import render_html

INPUT_OF = {"c7": "add5", "c9a": "ap8", "fc13": "gap12"}  # whose output position the layer reads


@pytest.fixture(scope="module")
def rich(refcases):
    folder = refcases / "rich"
    positions = json.loads((folder / "positions.json").read_text())["positions"]
    report = build_report(folder / "float.h5", positions=folder / "positions.json", diagnose=False)
    return report, positions


@pytest.mark.parametrize("name", sorted(INPUT_OF))
def test_fused_row_has_conv_and_activation_positions(rich, name):
    report, vitis = rich
    layer = {x["name"]: x for x in report_to_dict(report)["layers"]}[name]
    pos = layer["positions"]
    assert pos["weights"] == vitis[name][f"{name}/kernel:0"]
    assert pos["bias"] == vitis[name][f"{name}/bias:0"]
    assert pos["output"] == vitis[f"{name}_relu"]["relu"]
    assert pos["input"] == [vitis[INPUT_OF[name]]["output_0"]]
    assert layer["fused_activation"] == f"{name}_relu"
    assert layer["placement_note"].startswith("fused:")


def test_unfused_layers_say_no_fused_activation(rich):
    report, vitis = rich
    layers = {x["name"]: x for x in report_to_dict(report)["layers"]}
    assert layers["c9b"]["fused_activation"] is None  # linear conv: its own output quantizer
    assert layers["c9b"]["positions"]["output"] == vitis["c9b"]["linear"]
    assert layers["relu1"]["fused_activation"] is None  # a separate ReLU layer keeps its own row


def test_csv_and_html_show_the_fused_positions(rich):
    report, vitis = rich
    rows = {r["layer"]: r for r in csv.DictReader(io.StringIO(report_to_csv(report)))}
    c9a = rows["c9a"]
    assert (c9a["pos_weights"], c9a["pos_bias"], c9a["pos_output"]) == (
        str(vitis["c9a"]["c9a/kernel:0"]), str(vitis["c9a"]["c9a/bias:0"]), str(vitis["c9a_relu"]["relu"]))
    assert c9a["fused_activation"] == "c9a_relu"
    assert rows["c9b"]["fused_activation"] == ""
    html = render_html(report, {})
    row = html[html.index('href="#layer-c9a"'):]
    row = row[:row.index("</tr>")]
    assert "5 / 8 / 10 / 2" in row and "(fused)" in row


def test_a_split_layer_gives_every_steps_sensitivity(refcases):
    """A conv with a built-in ReLU is two steps in the int8 model, each with its own sensitivity: the report
    gave only the activation's (the rounding), not the conv's (its weights)."""
    from conftest import run_cli

    folder = refcases / "rich"
    report = build_report(folder / "float.h5", positions=folder / "quantized.h5", inputs=folder / "calib.npy",
                          max_samples=8, sensitivity=True)
    layers = {x["name"]: x for x in report_to_dict(report)["layers"]}
    # the diagnosis of the same model, positions and samples, as `qinspect diagnose` gives it
    result = run_cli("diagnose", str(folder / "float.h5"), "--inputs", str(folder / "calib.npy"), "--positions",
                     str(folder / "quantized.h5"), "--samples", "8", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    expected = {s["node"]: s for s in json.loads(result.stdout)["sensitivity"]}
    c7 = layers["c7"]
    assert c7["sensitivity"]["node"] == "quant_c7_relu"
    assert [s["node"] for s in c7["sensitivity_steps"]] == ["quant_c7"]
    step = c7["sensitivity_steps"][0]  # the CLI ran in another process: equal to float32 noise
    assert step["keep_float_gain_db"] == pytest.approx(expected["quant_c7"]["keep_float_gain_db"], rel=1e-4)
    assert abs(c7["sensitivity"]["keep_float_gain_db"] - step["keep_float_gain_db"]) > 0.01  # another figure
    assert step["layer"].startswith("c7 (")
    html = render_html(report, {})
    assert f"its other step, {step['layer']}" in html
