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


@pytest.mark.parametrize("damage", ["missing", "truncated", "unmappable"])
def test_damaged_board_dump_exits_2_naming_the_file(cli, small, tmp_path, damage):
    board = small_board_from_quantizer(small, tmp_path)
    f = board / "dump" / "subgraph_quant_conv2" / "internal" / "1.quant_relu2_aquant.bin"
    if damage == "missing":
        f.unlink()
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
    if damage == "unmappable":
        assert f"unmapped: {f} (8192 bytes per engine" in r.stdout and "layers of that size: quant_relu2" in r.stdout
        mapping = tmp_path / "map.json"
        mapping.write_text(json.dumps({"tensor_42": "relu2"}))
        r = _run(cli, small, board, "--map", str(mapping))
        assert r.returncode == 0, r.stdout + r.stderr
        mapping.write_text("{not json")
        r = _run(cli, small, board, "--map", str(mapping))
        assert r.returncode == 2 and str(mapping) in r.stderr and "not JSON" in r.stderr


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
