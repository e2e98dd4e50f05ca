"""``qinspect compare-dump`` on board dumps, run as a user would: what it says, its JSON and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.board_fixtures import small_board_from_quantizer

pytestmark = pytest.mark.slow  # each case starts the CLI in a fresh interpreter


@pytest.fixture()
def small(refcases):
    return refcases / "small"


def _run(cli, small, board, *extra):
    return cli("compare-dump", str(small / "quantized.h5"), str(board), "--inputs", str(small / "dump_inputs.npy"),
               *extra)


def test_board_dump_matches_and_says_what_it_found(cli, small, tmp_path):
    board = small_board_from_quantizer(small, tmp_path)
    r = _run(cli, small, board)
    assert r.returncode == 0, r.stderr
    assert "found a DPU runtime (VART) board dump: 2 subgraph(s), 6 tensor(s), 2 engine(s)" in r.stdout
    assert "first divergence: none" in r.stdout
    r = _run(cli, small, board / "dump", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "board" and doc["first_divergence"] is None and doc["all_matched"]
    row = {t["name"]: t for t in doc["tensors"]}["subgraph_quant_conv2/internal/quant_relu2_aquant"]
    assert (row["subgraph"], row["kind"], row["engine"], row["layer"]) == (
        "subgraph_quant_conv2", "internal", [0, 1], "quant_relu2")
    assert row["matched"] == row["total"] == 2 * 16 * 16 * 32 and row["max_lsb"] == 0


def test_flipped_byte_is_the_headline_and_exit_1(cli, small, tmp_path):
    board = small_board_from_quantizer(small, tmp_path)
    f = board / "dump" / "subgraph_quant_conv1" / "output" / "0.quant_pool1_fix.bin"
    codes = np.fromfile(f, np.int8)
    i = ((2 * 16) + 7) * 16 + 9  # h 2, w 7, c 9 of a 16x16x16 map
    codes[i] = codes[i] - 2 if codes[i] > -100 else codes[i] + 2
    codes.tofile(f)
    r = _run(cli, small, board, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    first = doc["first_divergence"]
    assert first["layer"] == "quant_pool1" and first["kind"] == "output"
    assert first["subgraph"] == "subgraph_quant_conv1"
    assert {k: first["first_mismatch"][k] for k in ("sample", "h", "w", "c")} == {"sample": 0, "h": 2, "w": 7, "c": 9}
    assert first["max_lsb"] == 2 and first["sim_reproduces"] is False
    assert [t["layer"] for t in doc["tensors"] if t["matched"] != t["total"]] == ["quant_pool1"]
    r = _run(cli, small, board)
    assert r.returncode == 1 and "first divergence: layer pool1 (quant_pool1)" in r.stdout


@pytest.mark.parametrize("damage", ["missing", "truncated", "unmappable", "dangling", "folder"])
def test_damaged_board_dump_exits_2_naming_the_file(cli, small, tmp_path, damage):
    board = small_board_from_quantizer(small, tmp_path)
    f = board / "dump" / "subgraph_quant_conv2" / "internal" / "1.quant_relu2_aquant.bin"
    if damage == "missing":
        f.unlink()
    elif damage == "dangling":  # a link to nothing: was a FileNotFoundError traceback
        f.unlink()
        f.symlink_to(tmp_path / "gone.bin")
    elif damage == "folder":  # a folder of the tensor's file name: was an IsADirectoryError traceback
        f.unlink()
        f.mkdir()
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[:1000])
    else:
        for p in f.parent.glob("*.bin"):
            p.rename(p.with_name(p.name.replace("quant_relu2_aquant", "tensor_42")))
        f = f.with_name("0.tensor_42.bin")
    r = _run(cli, small, board)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "Traceback" not in r.stderr
    if damage in ("dangling", "folder"):
        assert ("dangling symbolic link" if damage == "dangling" else "is a folder") in err[0]
    if damage == "unmappable":
        assert f"unmapped: {f} (8192 bytes per engine" in r.stdout and "layers of that size: quant_relu2" in r.stdout
        mapping = tmp_path / "map.json"
        mapping.write_text(json.dumps({"tensor_42": "relu2"}))
        r = _run(cli, small, board, "--map", str(mapping))
        assert r.returncode == 0, r.stdout + r.stderr
        mapping.write_text("{not json")
        r = _run(cli, small, board, "--map", str(mapping))
        assert r.returncode == 2 and str(mapping) in r.stderr and "not JSON" in r.stderr
        mapping.write_text('{"a":' * 50000 + "1" + "}" * 50000)  # valid JSON, nested past Python's recursion
        r = _run(cli, small, board, "--map", str(mapping))
        assert r.returncode == 2 and "nested too deeply" in r.stderr and "Traceback" not in r.stderr


def test_dump_model_json_says_its_format(cli, small):
    r = _run(cli, small, small / "dump_results", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "dump_model" and doc["first_divergence"] is None


def test_folder_of_neither_kind_is_named(cli, small, tmp_path):
    (tmp_path / "stuff").mkdir()
    r = _run(cli, small, tmp_path / "stuff")
    assert r.returncode == 2 and "neither a quantizer dump_model folder" in r.stderr
    assert str(tmp_path / "stuff") in r.stderr


def test_input_codes_that_differ_are_said_to_be_other_inputs_not_the_board(cli, small, tmp_path):
    """A board run on other inputs (or another preprocessing) differs from the model input on: that is no
    DPU arithmetic, and the first divergence says so instead of 'the board computes differently'."""
    board = small_board_from_quantizer(small, tmp_path)
    x = np.load(small / "dump_inputs.npy")
    np.save(tmp_path / "reversed.npy", x[::-1].copy())  # the board ran on the rows in the other order
    r = cli("compare-dump", str(small / "quantized.h5"), str(board), "--inputs", str(tmp_path / "reversed.npy"),
            "--json")
    assert r.returncode == 1, r.stderr
    first = json.loads(r.stdout)["first_divergence"]
    assert first["layer"] == "quant_input"
    assert "ran on other inputs, or another preprocessing" in first["note"]
    assert "computes differently" not in first["note"]


def test_a_truncated_engine_file_is_named_when_two_engines_disagree(cli, small, tmp_path):
    """Two engines, one cut short: the sizes tie, and the short one is the damaged file."""
    board = small_board_from_quantizer(small, tmp_path)
    f = board / "dump" / "subgraph_quant_conv2" / "internal" / "0.quant_relu2_aquant.bin"
    f.write_bytes(f.read_bytes()[:4000])
    r = _run(cli, small, board)
    assert r.returncode == 2
    assert "0.quant_relu2_aquant.bin: holds 4000 bytes but the other engines" in r.stderr


def test_a_board_dump_of_another_model_is_refused_before_any_table(cli, refcases, small, tmp_path):
    board = small_board_from_quantizer(small, tmp_path)
    rich = refcases / "rich"
    r = cli("compare-dump", str(rich / "quantized.h5"), str(board), "--inputs", str(rich / "dump_inputs.npy"))
    assert r.returncode == 2 and r.stdout == ""
    assert "maps to a layer of the quantized model" in r.stderr and "a dump of another model?" in r.stderr


def test_causes_inherited_rows_and_a_copy_changed_between_subgraphs(cli, small, tmp_path):
    """Audit cases: an inherited row also said "the board computes differently"; a copy read back by the second
    subgraph that differs from the matching copy the first wrote was blamed on a computation; no cause was named."""
    board = small_board_from_quantizer(small, tmp_path)
    dump = board / "dump"
    # the second subgraph reads pool1 back with one code changed; the first subgraph's own copy is intact
    f = dump / "subgraph_quant_conv2" / "input" / "0.quant_pool1_fix.bin"
    codes = np.fromfile(f, np.int8)
    codes[100] = codes[100] + 1 if codes[100] < 127 else codes[100] - 1
    codes.tofile(f)
    doc = json.loads(_run(cli, small, board, "--json").stdout)
    rows = {t["name"]: t for t in doc["tensors"]}
    readback = rows["subgraph_quant_conv2/input/quant_pool1_fix"]
    assert readback["note"].startswith("the copy subgraph subgraph_quant_conv2 read back differs from the one "
                                       "subgraph subgraph_quant_conv1 wrote, which matches")
    assert "computes differently" not in readback["note"]
    # relu2, computed from the changed copy, inherits it: said once, without "the board computes differently"
    relu2 = rows["subgraph_quant_conv2/internal/quant_relu2_aquant"]
    if relu2["matched"] != relu2["total"]:
        assert "comes from upstream" in relu2["note"] and "computes differently" not in relu2["note"]
    # the first subgraph's pool1 at a position one higher (codes doubled, as a board compiled from another
    # quantization would write them): the cause is named, in the note and in its own JSON key
    board = small_board_from_quantizer(small, tmp_path / "x2")
    for e in (0, 1):
        for sub, kind in (("subgraph_quant_conv1", "output"), ("subgraph_quant_conv2", "input")):
            g = board / "dump" / sub / kind / f"{e}.quant_pool1_fix.bin"
            np.clip(np.fromfile(g, np.int8).astype(int) * 2, -128, 127).astype(np.int8).tofile(g)
    r = _run(cli, small, board, "--json")
    assert r.returncode == 1
    first = json.loads(r.stdout)["first_divergence"]
    assert first["layer"] == "quant_pool1" and "the emulator's times 2" in first["cause"]
    assert "the dump was made at fix position" in first["note"]


def test_a_few_changed_codes_before_a_flatten_are_not_called_swapped_files(cli, small, tmp_path):
    """Audit s34 F1: on a board (no float copy) every sparse difference upstream of a Flatten read "the file holds
    the codes of quant_flatten: the files of two tensors are swapped or misnamed"."""
    board = small_board_from_quantizer(small, tmp_path)
    f = board / "dump" / "subgraph_quant_conv2" / "internal" / "1.quant_relu2_aquant.bin"
    codes = np.fromfile(f, np.int8)
    codes[[3, 50, 700]] = np.minimum(codes[[3, 50, 700]].astype(int) + 2, 127)
    codes.tofile(f)
    first = json.loads(_run(cli, small, board, "--json").stdout)["first_divergence"]
    assert first["layer"] == "quant_relu2" and first["total"] - first["matched"] == 3
    assert first["cause"] is None and "swapped or misnamed" not in first["note"]
    assert "fed the board's own inputs, the emulator still differs: this layer computes differently" in first["note"]


def test_a_constant_offset_and_an_input_rounded_down_are_named(cli, small, tmp_path):
    """Audit s34 F6: fc codes all +1 LSB got "the board computes differently"; input codes rounded down
    (floor instead of half up) were only "other inputs or another preprocessing"."""
    board = small_board_from_quantizer(small, tmp_path)
    for e in (0, 1):
        f = board / "dump" / "subgraph_quant_conv2" / "output" / f"{e}.functional_1_quant_fc_BiasAdd_0_fix.bin"
        (np.fromfile(f, np.int8).astype(int) + 1).clip(-128, 127).astype(np.int8).tofile(f)
    first = json.loads(_run(cli, small, board, "--json").stdout)["first_divergence"]
    assert first["layer"] == "quant_fc" and first["matched"] == 0
    assert "the emulator's +1 LSB, and every code differs but those at the limit: a constant offset" in first["cause"]
    board = small_board_from_quantizer(small, tmp_path / "floor")
    x = np.load(small / "dump_inputs.npy")
    for e in (0, 1):
        f = board / "dump" / "subgraph_quant_conv1" / "input" / f"{e}.quant_input.bin"
        np.clip(np.floor(x[e] * 64), -128, 127).astype(np.int8).tofile(f)  # the input quantizer's position: 6
    first = json.loads(_run(cli, small, board, "--json").stdout)["first_divergence"]
    assert first["layer"] == "quant_input"
    assert first["note"].startswith("every code of the dump is the inputs given times 2^6 rounded down")
    assert "ran on other inputs" not in first["note"]
