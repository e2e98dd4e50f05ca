"""The emulator's commands as a user runs them: calibrate, compare-dump, emulate, and their bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.dpu_graph_fixtures import positions_json, refcase


def _one_line_error(r, *words):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qinspect: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0]


@pytest.mark.parametrize("case", ["small", "rich"])
def test_calibrate_json_equals_vitis_positions(case):
    root = refcase(case)
    r = run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", "4",
                "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ref = positions_json(root)
    assert out["positions"] == ref["positions"]
    assert out["pre_refine_positions"] == ref["pre_refine_positions"]
    assert out["calib_batch_positions"] == ref["calib_batch_positions"]
    key = lambda d: (d["layer"], d["tensor"])  # noqa: E731
    assert sorted(out["refine_changes"], key=key) == sorted(ref["refine_changes"], key=key)
    assert isinstance(out["rewrites"], list) and isinstance(out["adjustments"], list)
    assert all({"kind", "text", "layers"} <= set(x) for x in out["rewrites"])


def test_calibrate_text_counts_its_batches_in_words_that_hold():
    # "8 samples in 1 batches of 32" (audit s34): one batch, holding 8 samples, not 32
    root = refcase("small")
    n = len(np.load(root / "calib.npy"))
    one = run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", str(2 * n))
    assert f"{n} samples in 1 batch of up to {2 * n} (" in one.stdout.splitlines()[0]
    four = run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", "4")
    assert f"{n} samples in {-(-n // 4)} batches of up to 4 (" in four.stdout.splitlines()[0]


@pytest.mark.parametrize("case", ["small", "rich"])
def test_compare_dump_is_bit_exact(case):
    root = refcase(case)
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(root / "dump_results"), "--inputs",
                str(root / "dump_inputs.npy"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    gating = [t for t in out["tensors"] if t["gating"]]
    assert gating and all(t["matched"] == t["total"] and t["max_lsb"] == 0 for t in gating)
    assert all({"name", "matched", "total", "max_lsb"} <= set(t) for t in out["tensors"])
    assert out["unmapped"] == [] and out["missing"] == []
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(root / "dump_results"), "--inputs",
                str(root / "dump_inputs.npy"))
    assert r.returncode == 0 and "match bit for bit" in r.stdout


def test_compare_dump_mismatch_exits_1(tmp_path):
    root = refcase("small")
    dst = tmp_path / "d"
    shutil.copytree(root / "dump_results", dst)
    f = dst / "dump_results_0" / "quant_fc.bin"
    f.chmod(0o644)
    a = np.fromfile(f, np.int8)
    a[0] = np.int8(-a[0] - 1)
    a.tofile(f)
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(dst), "--inputs", str(root / "dump_inputs.npy"))
    assert r.returncode == 1
    assert "quant_fc" in r.stdout and "[0] (sample 0, at (0,)) dump" in r.stdout


def test_compare_dump_bad_inputs(tmp_path):
    root = refcase("small")
    args = [str(root / "dump_results"), "--inputs", str(root / "dump_inputs.npy")]
    _one_line_error(run_cli("compare-dump", str(root / "float.h5"), *args), "not a Vitis quantized model")
    # a zero-byte or cut quantized.h5 is said to be what it is (it was "not a readable HDF5 file (OSError)")
    (tmp_path / "zero.h5").write_bytes(b"")
    _one_line_error(run_cli("compare-dump", str(tmp_path / "zero.h5"), *args), "zero.h5", "empty file")
    data = (root / "quantized.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    _one_line_error(run_cli("compare-dump", str(tmp_path / "cut.h5"), *args), "cut.h5", "damaged or truncated")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 16, 16, 3), np.float32))
    _one_line_error(run_cli("compare-dump", str(root / "quantized.h5"), str(root / "dump_results"), "--inputs",
                            str(bad)), "bad.npy", "shape")
    one = tmp_path / "one.npy"
    np.save(one, np.load(root / "dump_inputs.npy")[:1])
    _one_line_error(run_cli("compare-dump", str(root / "quantized.h5"), str(root / "dump_results"), "--inputs",
                            str(one)), "one.npy", "holds 1 sample(s) but the dump holds 2")
    dst = tmp_path / "d"
    shutil.copytree(root / "dump_results", dst)
    (dst / "dump_results_0").chmod(0o755)
    (dst / "dump_results_0" / "quant_extra.bin").write_bytes(b"\0")
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(dst), "--inputs", str(root / "dump_inputs.npy"))
    _one_line_error(r, "quant_extra.bin", "maps to no tensor")
    assert "unmapped:" in r.stdout
    (dst / "dump_results_0" / "quant_extra.bin").unlink()
    (dst / "dump_results_0" / "quant_relu1.bin").chmod(0o644)
    (dst / "dump_results_0" / "quant_relu1.bin").unlink()
    _one_line_error(run_cli("compare-dump", str(root / "quantized.h5"), str(dst), "--inputs",
                            str(root / "dump_inputs.npy")), "missing", "quant_relu1.bin")
    _one_line_error(run_cli("compare-dump", str(root / "quantized.h5"), str(tmp_path / "nope"), "--inputs",
                            str(root / "dump_inputs.npy")), "no such file")


def test_emulate_json_per_layer_with_how():
    root = refcase("small")
    r = run_cli("emulate", str(root / "float.h5"), "--positions", str(root / "quantized.h5"), "--inputs",
                str(root / "calib.npy"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"sqnr_db", "mse", "cosine", "max_abs", "rmse_lsb", "sat_lo_frac", "codes_used_frac", "isolated",
            "accumulated"} <= set(out["how"])
    rows = {x["name"]: x for x in out["layers"]}
    assert rows["quant_fc"]["device"] == "DPU" and rows["quant_fc"]["position"] == 5
    acc = rows["quant_fc"]["accumulated"]
    assert 10 < acc["sqnr_db"] < 80 and 0.99 < acc["cosine"] <= 1.0 and 0 < acc["codes_used_frac"] <= 1
    assert rows["quant_relu1"]["isolated"]["sqnr_db"] >= rows["quant_relu2"]["accumulated"]["sqnr_db"] - 20
    r = run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", "4",
                "--layer", "relu2", "--json")
    out2 = json.loads(r.stdout)
    assert [x["name"] for x in out2["layers"]] == ["quant_relu2"]
    assert "calibrated here" in out2["positions_from"]


def test_emulate_with_positions_json_matches_quantized_h5(tmp_path):
    root = refcase("rich")
    common = ["--inputs", str(root / "dump_inputs.npy"), "--json", "--layer", "fc14"]
    a = json.loads(run_cli("emulate", str(root / "float.h5"), "--positions", str(root / "positions.json"),
                           *common).stdout)
    b = json.loads(run_cli("emulate", str(root / "quantized.h5"), *common).stdout)
    # Same positions and same folded weights: the same int8 codes (the float references differ: from
    # quantized.h5 the original sigmoid / leaky alpha are unknown, so the DPU functions stand in).
    la, lb = a["layers"][0], b["layers"][0]
    assert la["position"] == lb["position"] == 5
    for k in ("codes_used_frac", "sat_lo_frac", "sat_hi_frac"):
        assert la["accumulated"][k] == lb["accumulated"][k]
    assert "positions file" in a["positions_from"] and "quantized model" in b["positions_from"]
    # what the errors of quantized.h5 alone are measured against is said (the text had no such line)
    assert b["reference"].startswith("quantized.h5's own graph in float32 (its folded weights, no rounding)")
    text = run_cli("emulate", str(root / "quantized.h5"), *common[:2], "--layer", "fc14").stdout
    assert "float reference: quantized.h5's own graph in float32" in text and "--positions" in text


def test_emulate_and_calibrate_bad_inputs(tmp_path):
    root = refcase("small")
    _one_line_error(run_cli("emulate", str(root / "float.h5")), "needs --inputs")
    _one_line_error(run_cli("calibrate", str(root / "quantized.h5"), "--inputs", str(root / "calib.npy")),
                    "Vitis quantized model")
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((3, 32, 32, 1), np.float32))
    _one_line_error(run_cli("calibrate", str(root / "float.h5"), "--inputs", str(bad)), "x.npy", "shape")
    _one_line_error(run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"),
                            "--batch-size", "0"), "batch-size")
    pj = tmp_path / "p.json"
    pj.write_text(json.dumps({"positions": {"conv1": {"conv1/kernel:0": 9}}}))
    _one_line_error(run_cli("emulate", str(root / "float.h5"), "--positions", str(pj), "--inputs",
                            str(root / "calib.npy")), "p.json", "no position")
    _one_line_error(run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--layer",
                            "nosuch"), "nosuch")


def test_calibrate_and_emulate_a_capture(tmp_path):
    """A capture holds graph, weights and inputs: calibration needs nothing else."""
    from qinspect.io.capture_file import CaptureWriter
    from qinspect.io.model_file import open_model

    root = refcase("small")
    x = np.load(root / "calib.npy")
    cap = tmp_path / "cap.h5"
    with open_model(root / "float.h5") as src, CaptureWriter(cap, src.graph, len(x), {}, {"input": x.shape[1:]}) as w:
        w.write_weights(src, [layer.name for layer in src.graph.leaves()])
        w.write_batch(0, {"input": x}, {})
    r = run_cli("calibrate", str(cap), "--batch-size", "4", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["positions"] == positions_json(root)["positions"]
    r = run_cli("emulate", str(cap), "--batch-size", "4", "--layer", "fc")
    assert r.returncode == 0, r.stderr
    assert "quant_fc" in r.stdout and "calibrated here" in r.stdout
    r = run_cli("emulate", str(cap), "--positions", str(root / "quantized.h5"), "--layer", "fc", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["samples"] == len(x) and out["layers"][0]["position"] == 5


def test_compare_dump_with_more_inputs_than_dumped_compares_the_dumped_batch():
    root = refcase("small")  # dump_inputs.npy == calib.npy[:2]
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(root / "dump_results"), "--inputs",
                str(root / "calib.npy"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["samples"] == 2 and any("first 2 of the 16" in n for n in out["notes"])


def test_compare_dump_names_at_most_ten_stray_files_in_its_text(tmp_path):
    # A dump of another model listed 126 "missing:" lines above its one-line error.
    root = refcase("small")
    dst = tmp_path / "d"
    shutil.copytree(root / "dump_results", dst)
    for i in range(15):
        np.zeros(4, np.int8).tofile(dst / "dump_results_0" / f"stray_{i}.bin")
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(dst), "--inputs", str(root / "dump_inputs.npy"))
    assert r.returncode == 2 and "stray_0.bin: dump file maps to no tensor" in r.stderr
    assert r.stdout.count("unmapped: ") == 10 and "(15 unmapped and 0 missing in all" in r.stdout
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(dst), "--inputs", str(root / "dump_inputs.npy"),
                "--json")
    assert len(json.loads(r.stdout)["unmapped"]) == 15


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_dump_file_that_is_a_folder_or_a_fifo_is_named_as_such(tmp_path, kind):
    import os

    root = refcase("small")
    dst = tmp_path / "d"
    shutil.copytree(root / "dump_results", dst)
    f = dst / "dump_results_0" / "quant_fc.bin"
    f.unlink()
    f.mkdir() if kind == "folder" else os.mkfifo(f)
    r = run_cli("compare-dump", str(root / "quantized.h5"), str(dst), "--inputs", str(root / "dump_inputs.npy"),
                timeout=60)
    want = "is a folder where the dump has a tensor's .bin file" if kind == "folder" else "is a FIFO (named pipe)"
    assert r.returncode == 2 and want in r.stderr and "quant_fc.bin" in r.stderr and "Traceback" not in r.stderr


def test_a_softmax_quantized_at_its_input_has_no_rmse_in_lsb_of_that_position():
    # the CPU softmax's position is its input's: an LSB of the logits says nothing of the probabilities
    from qinspect.analysis.metrics import ErrorStats
    from qinspect.cli.emulate import layer_row
    from qinspect.dpu.emulator import LayerResult

    ref = np.array([0.1, 0.7, 0.2], np.float32)
    stats = ErrorStats().update(ref, ref + 0.01)
    soft = LayerResult("predictions", "softmax", "CPU", "", ["predictions"], 3, {}, position_of_input=True,
                       isolated=stats, accumulated=stats)
    row = layer_row(soft, [])
    assert row["position_of"] == "input" and row["isolated"]["rmse_lsb"] is None
    assert row["accumulated"]["rmse_lsb"] is None and row["isolated"]["sqnr_db"] == stats.sqnr_db
    conv = LayerResult("quant_c", "conv2d", "DPU", "", ["c"], 3, {}, isolated=stats, accumulated=stats)
    assert layer_row(conv, [])["isolated"]["rmse_lsb"] == stats.rmse_over_scale(2.0**-3)
