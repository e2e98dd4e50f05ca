"""The quantizer options on the command line (named like vai_q_tensorflow2's keywords), on the real `rich`
quantizer run: dw3 -> ReLU6 relu6_3 -> sep4's depthwise is a pair the default options leave alone."""

from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.dpu_graph_fixtures import refcase


def _calibrate(root, *flags):
    r = run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", "4",
                "--json", *flags)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _pairs(out):
    return [x["layers"] for x in out["rewrites"] if x["kind"] == "cross_layer_equalization" and x["layers"]]


def test_options_reach_the_rewrites_and_are_reported():
    root = refcase("rich")
    default = _calibrate(root)
    assert default["quantizer_options"] == {"include_cle": True, "cle_steps": 10, "cle_to_relu6": False,
                                            "convert_relu6_to_relu": False, "calib_batch_size": 4, "target": ""}
    assert ["dw3", "sep4_depthwise_conv"] not in _pairs(default)
    converted = _calibrate(root, "--convert-relu6-to-relu")
    assert converted["quantizer_options"]["convert_relu6_to_relu"] is True
    assert any(x["kind"] == "convert_relu6_to_relu" and x["layers"] == ["relu6_3"] for x in converted["rewrites"])
    assert ["dw3", "sep4_depthwise_conv"] in _pairs(converted)  # the uncapped ReLU matches ConvReLUConv
    cle6 = _calibrate(root, "--cle-to-relu6", "--cle-steps", "3")
    assert cle6["quantizer_options"]["cle_to_relu6"] is True and cle6["quantizer_options"]["cle_steps"] == 3
    assert ["dw3", "sep4_depthwise_conv"] in _pairs(cle6)
    assert any(x["kind"] == "cle_across_cap" for x in cle6["rewrites"])
    # the equalization moved weight positions of the pair: a different result, as in the quantizer
    assert cle6["positions"]["dw3"] != default["positions"]["dw3"]


def test_emulate_with_quantized_h5_measures_against_the_float_model_and_checks_the_options():
    root = refcase("rich")
    args = ("emulate", str(root / "float.h5"), "--positions", str(root / "quantized.h5"), "--inputs",
            str(root / "dump_inputs.npy"), "--json")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)["reference"]
    assert "rewritten under default options" in ref and "equal the quantized model's" in ref
    r = run_cli(*args, "--cle-to-relu6")  # not how this quantized.h5 was made
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)["reference"]
    assert "WARNING: 3 of 12 weighted layers differ" in ref and "(first quant_dw3)" in ref
    text = run_cli(*args[:-1])
    assert "float reference: the float model" in text.stdout


def test_a_count_below_one_is_a_one_line_error():
    root = refcase("small")
    r = run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--cle-steps", "0")
    assert r.returncode == 2 and "--cle-steps must be at least 1" in r.stderr and "Traceback" not in r.stderr


def test_a_step_count_that_would_run_for_hours_is_a_one_line_error():
    root = refcase("small")
    r = run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--cle-steps", "100000000")
    assert r.returncode == 2 and "--cle-steps must be at most 1000" in r.stderr and "Traceback" not in r.stderr


def test_positions_calibrated_under_other_options_are_refused_not_read_against_other_weights(tmp_path):
    """calibrate --no-cle --json, then emulate --positions without --no-cle: the CLE weights were emulated
    with the no-CLE positions (an output SQNR of 1.1 dB where the options agreed on 16.0)."""
    root = refcase("rich")
    out = _calibrate(root, "--no-cle")
    assert out["quantizer_options"]["include_cle"] is False
    pos = tmp_path / "pos.json"
    pos.write_text(json.dumps(out))
    base = ["emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--positions", str(pos)]
    r = run_cli(*base)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "calibrated with include_cle=False" in r.stderr and str(pos) in r.stderr
    r = run_cli(*base, "--no-cle")
    assert r.returncode == 0, r.stderr
