"""``--samples N`` means one thing in every command: positions are calibrated on every sample, the figures
measured on the first N. emulate calibrated on the first N (other positions, other SQNRs than report and
diagnose for the same flag), and the report's layer table ignored the flag."""

from __future__ import annotations

import json

from capture_fixtures import run_here, write_tiny


def _emulate(*args):
    done = run_here("emulate", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_emulate_and_report_agree_under_samples(tmp_path):
    cap = write_tiny(tmp_path / "tiny.h5")
    every = _emulate(str(cap))
    some = _emulate(str(cap), "--samples", "3")
    assert some["samples_used"] == 3 and "on 10 samples" in some["positions_from"]
    assert [r["position"] for r in some["layers"]] == [r["position"] for r in every["layers"]]
    done = run_here("report", str(cap), "--samples", "3", "-o", str(tmp_path / "rep"), "--no-findings")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["model"]["samples_used"] == 3
    emulated = {r["name"]: r["accumulated"]["sqnr_db"] for r in some["layers"]}
    compared = 0
    for layer in report["layers"]:
        acc = layer.get("accumulated") or {}
        if acc.get("sqnr_db") is not None and f"quant_{layer['name']}" in emulated:
            assert acc["sqnr_db"] == emulated[f"quant_{layer['name']}"]
            compared += 1
    assert compared >= 2
