"""``qinspect report MODEL --inputs X``: a model file (no capture) calibrated and emulated on given inputs.

Checked against the other commands on the same model, inputs and batch size: the positions equal
``calibrate --json``'s, the accumulated error figures ``emulate --json``'s. No TensorFlow needed.
"""

from __future__ import annotations

import json

import pytest

from qinspect.cli import main


@pytest.fixture(scope="module")
def small(refcases):
    return refcases / "small" / "float.h5", refcases / "small" / "calib.npy"


def _json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def report(small, tmp_path_factory):
    model, x = small
    out = tmp_path_factory.mktemp("rep") / "r"
    assert main(["report", str(model), "--inputs", str(x), "--batch-size", "4", "-o", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def test_positions_are_those_calibrate_chooses(report, small, capsys):
    model, x = small
    cal = _json(capsys, "calibrate", model, "--inputs", x, "--batch-size", "4", "--json")["positions"]
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert layers["fc"]["positions"]["weights"] == cal["fc"]["fc/kernel:0"]
    assert layers["fc"]["positions"]["bias"] == cal["fc"]["fc/bias:0"]
    assert layers["fc"]["positions"]["output"] == cal["fc"]["linear"]
    assert layers["relu1"]["positions"]["output"] == cal["relu1"]["output_0"]
    assert report["model"]["samples"] == 16


def test_error_figures_are_those_emulate_measures(report, small, capsys):
    model, x = small
    emu = _json(capsys, "emulate", model, "--inputs", x, "--batch-size", "4", "--json")
    acc = {row["name"]: row["accumulated"] for row in emu["layers"]}
    layers = {layer["name"]: layer for layer in report["layers"]}
    for name in ("relu1", "pool1", "relu2", "fc"):
        assert layers[name]["accumulated"]["sqnr_db"] == pytest.approx(acc[f"quant_{name}"]["sqnr_db"], rel=1e-12)
    assert report["findings"] is not None  # the diagnosis ran on the inputs


def test_inputs_with_a_capture_is_refused(tmp_path, capsys):
    from capture_fixtures import write_tiny

    cap = write_tiny(tmp_path / "c.h5")
    code = main(["report", str(cap), "--inputs", str(cap), "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and f"{cap}: a capture holds its own inputs" in err
    assert not (tmp_path / "r").exists()
