"""A dump_model comparison read as a whole (qinspect.dpu.dump_checks): refused when it would blame the
wrong thing (another model's dump, other inputs), and never read as matching when incomplete."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.dpu_graph_fixtures import refcase


def _copy_dump(tmp_path, case="small"):
    dst = tmp_path / "dump_results"
    shutil.copytree(refcase(case) / "dump_results", dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def _compare(quantized, dump, inputs, *extra):
    return run_cli("compare-dump", str(quantized), str(dump), "--inputs", str(inputs), *extra)


def test_a_dump_made_from_other_inputs_is_refused_naming_its_input_copy(tmp_path):
    """dump_model keeps the inputs it ran on (input_float.bin): other inputs made every later tensor differ,
    and the rows blamed the simulation ('the float32 simulation differs too') with exit 1."""
    root = refcase("small")
    np.save(tmp_path / "other.npy", np.load(root / "calib.npy")[5:7])
    r = _compare(root / "quantized.h5", root / "dump_results", tmp_path / "other.npy")
    assert r.returncode == 2 and r.stdout == ""
    assert "the dump was made from other inputs than" in r.stderr and "(input_float.bin)" in r.stderr
    assert r.stderr.count("\n") == 1


def test_another_models_dump_is_refused_before_any_table(tmp_path):
    small, rich = refcase("small"), refcase("rich")
    r = _compare(rich / "quantized.h5", small / "dump_results", small / "dump_inputs.npy")
    assert r.returncode == 2 and r.stdout == ""
    assert "a dump of another model?" in r.stderr


def test_float_files_give_lsb_only_where_the_tensor_has_a_position(tmp_path):
    """A float weight file's difference is in units of the weight's position; a float file of a tensor
    without one has no LSB figure (it printed the raw difference labelled LSB), only max_abs."""
    root = refcase("rich")
    dump = _copy_dump(tmp_path, "rich")
    f = dump / "dump_results_weights" / "quant_fc14_kernel_float.bin"
    w = np.fromfile(f, np.float32)
    w[3] += np.float32(0.000161216)
    w.tofile(f)
    r = _compare(root / "quantized.h5", dump, root / "dump_inputs.npy", "--json")
    assert r.returncode == 0, r.stderr  # float weight files do not gate
    out = json.loads(r.stdout)
    (row,) = [t for t in out["tensors"] if t["name"] == "quant_fc14_kernel_float"]
    pos = json.loads((root / "positions.json").read_text())
    pos = pos.get("positions", pos)
    p = pos["fc14"]["fc14/kernel:0"]
    assert row["max_abs"] == pytest.approx(1.6e-4, rel=0.05)
    assert row["max_lsb"] == pytest.approx(row["max_abs"] * 2.0**p)
    # its int8 file still matches: the float copy was changed afterwards (audit s34 F8: "the dump came from other
    # weights" beside "every compared tensor matches bit for bit")
    (warning,) = [w for w in out["warnings"] if "float weight file" in w]
    assert warning.endswith("its int8 file matches, so the float copy was changed after dump_model wrote it")
    assert "other weights" not in warning
    no_position = [t for t in out["tensors"] if t["dtype"] == "float32" and t["max_lsb"] is None]
    assert no_position, "a float file of a fused output (no position of its own) has no LSB figure"
    text = _compare(root / "quantized.h5", dump, root / "dump_inputs.npy").stdout
    assert "warning: 1 float weight file(s) of the dump differ" in text


def test_differing_tensors_after_the_first_divergence_are_marked_downstream(tmp_path):
    """A quantized.h5 whose relu1 position differs from the run's: relu1 diverges first, and the layers
    after it differ because they read it; each of those rows says so."""
    import h5py

    root = refcase("small")
    q = tmp_path / "q.h5"
    shutil.copy(root / "quantized.h5", q)
    q.chmod(0o644)
    with h5py.File(q, "r+") as f:
        f["model_weights/quant_relu1/quant_relu1/output_0_pos:0"][...] = 5.0
    r = _compare(q, root / "dump_results", root / "dump_inputs.npy", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["first_divergence"]["layer"] == "quant_relu1"
    later = [t for t in out["tensors"] if t["gating"] and t["matched"] != t["total"] and t["layer"] != "quant_relu1"]
    assert later and all("downstream of the first divergence" in t["note"] for t in later)
    assert "downstream" not in out["first_divergence"].get("note", "")


@pytest.mark.parametrize("change", ["delete", "stray"])
def test_an_incomplete_dump_is_never_all_matched(tmp_path, change):
    """The exit code said 2, but --json said all_matched: true and the text 'every compared tensor matches':
    a script reading the JSON passed a dump lacking the very layer it should check."""
    root = refcase("small")
    dump = _copy_dump(tmp_path)
    if change == "delete":
        (dump / "dump_results_0" / "quant_relu2.bin").unlink()
    else:
        shutil.copy(dump / "dump_results_0" / "quant_relu2.bin", dump / "dump_results_0" / "quant_bogus.bin")
    r = _compare(root / "quantized.h5", dump, root / "dump_inputs.npy", "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout)["all_matched"] is False
    text = _compare(root / "quantized.h5", dump, root / "dump_inputs.npy")
    assert "every compared tensor matches" not in text.stdout and "the dump is incomplete" in text.stdout


def test_an_empty_or_fifo_input_copy_is_one_line(tmp_path):
    """A 0-byte input_float.bin made the comparison slice the inputs to 0 rows and fail in a reshape (a
    traceback); a FIFO in its place read as size 0 the same way instead of being refused by its kind."""
    import os

    root = refcase("small")
    dump = _copy_dump(tmp_path)
    (copy,) = list(dump.rglob("input_float.bin")) or list(dump.rglob("*input*float*.bin"))[:1]
    copy.write_bytes(b"")
    r = _compare(root / "quantized.h5", dump, root / "dump_inputs.npy")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "holds 0 bytes" in r.stderr, r.stderr
    if hasattr(os, "mkfifo"):
        copy.unlink()
        os.mkfifo(copy)
        r = _compare(root / "quantized.h5", dump, root / "dump_inputs.npy")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is a FIFO" in r.stderr, r.stderr


def test_a_float_weight_copy_says_other_weights_only_where_its_int8_file_differs_too(tmp_path):
    """The dump came from other weights only when the weight's int8 codes differ as well (then it is no match)."""
    root = refcase("small")
    dump = _copy_dump(tmp_path)
    weights = dump / "dump_results_weights"
    w = np.fromfile(weights / "quant_fc_kernel_float.bin", np.float32)
    codes = np.fromfile(weights / "quant_fc_kernel.bin", np.int8)
    codes[11] = codes[11] + 5 if codes[11] < 100 else codes[11] - 5
    pos = json.loads((root / "positions.json").read_text())
    pos = pos.get("positions", pos)["fc"]["fc/kernel:0"]
    w[11] = codes[11] / 2.0**pos  # another weight, its int8 code and float copy alike
    w.tofile(weights / "quant_fc_kernel_float.bin")
    codes.tofile(weights / "quant_fc_kernel.bin")
    r = _compare(root / "quantized.h5", dump, root / "dump_inputs.npy", "--json")
    assert r.returncode == 1, r.stderr
    (warning,) = [w for w in json.loads(r.stdout)["warnings"] if "float weight file" in w]
    assert "(first quant_fc_kernel_float, 1 of" in warning
    assert warning.endswith("the dump came from other weights than this quantized.h5")
