"""Board dumps (VART ``XLNX_ENABLE_DUMP=1``): names, layout, mapping and comparison with the emulator."""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.dpu.board_compare import compare_board
from qinspect.dpu.emulator import Emulator
from qinspect.dpu.executor import Evaluator, batch_inputs
from qinspect.errors import QInspectError
from qinspect.io.board_dump import board_name, dump_folder_kind, open_board_dump, remove_xfix
from tests.board_fixtures import SMALL_LAYOUT, quantizer_codes, small_board_from_quantizer, write_board


# --- names -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("conv1", "conv1"),
    ("conv1(TransferMatMulToConv2d)", "conv1"),  # a suffix
    ("(fused)conv1", "conv1"),  # a prefix
    ("x(a)y(b)", "xy"),  # two groups, the second found after the first is gone
    ("a(b(c)d)e", "ae"),  # nested: inner first, then the outer
    ("(a)(b)c", "(b)c"),  # XIR's quirk: after the stack empties the scan restarts after position 0
    ("a(b", "a(b"),  # no closing delimiter: left alone
])
def test_remove_xfix_follows_xir(raw, expected):
    assert remove_xfix(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("functional_1/quant_conv1/BiasAdd:0(TransferMatMulToConv2d)", "functional_1_quant_conv1_BiasAdd_0"),
    ("subgraph_quant_conv1", "subgraph_quant_conv1"),
    ("(a)(b)c", "_b_c"),
    ("dense-1.out", "dense_1_out"),
])
def test_board_name_replaces_every_other_character(raw, expected):
    assert board_name(raw) == expected


# --- layout ----------------------------------------------------------------------------------------
def test_folder_kind_is_recognised(tmp_path, refcases):
    board = small_board_from_quantizer(refcases / "small", tmp_path / "b")
    assert dump_folder_kind(board) == "board"
    assert dump_folder_kind(board / "dump") == "board"
    assert dump_folder_kind(refcases / "small" / "dump_results") == "dump_model"
    assert dump_folder_kind(refcases / "small" / "dump_results" / "dump_results_0") == "dump_model"
    assert dump_folder_kind(tmp_path) is None
    dump = open_board_dump(board)
    assert dump.engines == 2 and dump.subgraphs == ["subgraph_quant_conv1", "subgraph_quant_conv2"]
    assert "board dump: 2 subgraph(s), 6 tensor(s), 2 engine(s)" in dump.describe()


@pytest.mark.parametrize("damage, words", [("missing", "not engine 1"), ("truncated", "holds 4089 bytes")])
def test_missing_or_truncated_engine_file_is_named(tmp_path, refcases, damage, words):
    board = small_board_from_quantizer(refcases / "small", tmp_path)
    f = board / "dump" / "subgraph_quant_conv1" / "output" / "1.quant_pool1_fix.bin"
    if damage == "missing":
        f.unlink()
    else:
        f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(QInspectError) as err:
        open_board_dump(board)
    assert err.value.path == str(f) and words in err.value.message


def test_file_not_named_engine_dot_tensor_is_named(tmp_path, refcases):
    board = small_board_from_quantizer(refcases / "small", tmp_path)
    odd = board / "dump" / "subgraph_quant_conv1" / "output" / "quant_pool1.bin"
    odd.write_bytes(b"\0" * 4096)
    with pytest.raises(QInspectError) as err:
        open_board_dump(board)
    assert err.value.path == str(odd)


# --- comparison ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_emu(refcases):
    return Emulator.from_quantized(refcases / "small" / "quantized.h5")


@pytest.fixture(scope="module")
def rich_emu(refcases):
    return Emulator.from_quantized(refcases / "rich" / "quantized.h5")


def test_quantizer_dump_renamed_and_split_in_two_subgraphs_matches(tmp_path, refcases, small_emu):
    board = small_board_from_quantizer(refcases / "small", tmp_path)
    res = compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy"))
    assert not res.unmapped and res.samples == 2
    got = {(m.tensor.subgraph, m.tensor.kind, m.tensor.name): m.layer for m in res.tensors}
    assert got == {(s, k, t): layer for s, k, t, layer in SMALL_LAYOUT}
    # conv1's tensor is compared where the DPU rounds it: after the fused ReLU.
    assert all(m.ok for m in res.tensors) and res.first_divergence is None
    assert sum(m.total for m in res.tensors) == 2 * (32 * 32 * 3 + 32 * 32 * 16 + 2 * 16 * 16 * 16 + 16 * 16 * 32 + 10)


def test_rich_quantizer_dump_as_a_board_dump_matches(tmp_path, refcases, rich_emu):
    case = refcases / "rich"
    x = np.load(case / "dump_inputs.npy")
    dumped = sorted(p.stem for p in (case / "dump_results" / "dump_results_0").glob("quant_*.bin")
                    if not p.stem.endswith("_float"))
    assert len(dumped) > 20
    layout = []
    for i, name in enumerate(dumped):  # every int8 activation the quantizer dumped, in two subgraphs
        sub = "subgraph_first" if i < len(dumped) // 2 else "subgraph_second"
        layout.append((sub, "internal", f"model_{name}_fix", quantizer_codes(case, name, len(x))))
    res = compare_board(rich_emu.graph, open_board_dump(write_board(tmp_path, layout)), x)
    assert not res.unmapped and len(res.tensors) == len(dumped)
    assert {m.layer for m in res.tensors} == set(dumped)
    assert res.all_matched


def _emulator_codes(emu, x):
    """The emulator's integer codes of every node with an int8 output, one row per sample."""
    from qinspect.dpu.board_compare import has_codes

    g = emu.graph
    vals = Evaluator(g, "int").run(batch_inputs(g, x))
    return {n.name: vals[n.name].codes() for n in g.nodes if has_codes(n, vals[n.name])}


def test_bytes_flipped_in_one_layer_make_it_the_first_and_only_divergence(tmp_path, refcases, rich_emu):
    x = np.load(refcases / "rich" / "dump_inputs.npy")
    codes = _emulator_codes(rich_emu, x)
    flipped = codes["quant_add5"].copy()
    assert flipped.ndim == 4
    h, w, c = 3, 5, 2
    flipped[1, h, w, c] = np.int8(int(flipped[1, h, w, c]) + (3 if flipped[1, h, w, c] < 100 else -3))
    layout = [("subgraph_a" if i < 8 else "subgraph_b", "output", f"{name}_fix",
               flipped if name == "quant_add5" else q) for i, (name, q) in enumerate(codes.items())]
    res = compare_board(rich_emu.graph, open_board_dump(write_board(tmp_path, layout)), x)
    bad = [m for m in res.tensors if not m.ok]
    assert [m.layer for m in bad] == ["quant_add5"]
    first = res.first_divergence
    assert first.layer == "quant_add5" and first.float_layer == "add5"
    assert first.first_mismatch["sample"] == 1 and (first.first_mismatch["h"], first.first_mismatch["w"],
                                                    first.first_mismatch["c"]) == (h, w, c)
    assert first.max_lsb == 3 and first.histogram == [first.total - 1, 0, 0, 1]
    assert first.total - first.matched == 1
    assert first.sim_reproduces is False and "board computes differently" in first.note


def test_float32_simulation_reproducing_the_board_blames_the_emulator(tmp_path, refcases, small_emu, monkeypatch):
    """The board holds what the quantizer computed; an integer pipeline off by one LSB at relu2 is
    then an emulator error, and the float32 simulation says so."""
    from qinspect.dpu import executor

    board = small_board_from_quantizer(refcases / "small", tmp_path)
    real_run = executor.Evaluator.run

    def off_by_one(self, inputs, *a, **k):
        vals = real_run(self, inputs, *a, **k)
        if self.mode == "int":
            v = vals["quant_relu2"]
            vals["quant_relu2"] = executor.Value(q=np.clip(v.codes().astype(int) + 1, -128, 127).astype(np.int8),
                                                 pos=v.pos)
        return vals

    monkeypatch.setattr(executor.Evaluator, "run", off_by_one)
    res = compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy"))
    first = res.first_divergence
    assert first.layer == "quant_relu2" and first.sim_reproduces is True and first.sim_matched == first.total
    assert "emulator's integer pipeline is what differs" in first.note


def test_fewer_engines_than_inputs_compares_those_rows(tmp_path, refcases, small_emu):
    case = refcases / "small"
    layout = [(s, k, t, quantizer_codes(case, f, 2)[:1]) for s, k, t, f in SMALL_LAYOUT]
    x = np.load(case / "dump_inputs.npy")
    res = compare_board(small_emu.graph, open_board_dump(write_board(tmp_path, layout)), x)
    assert res.samples == 1 and res.all_matched and any("rows 0..0 of 2" in n for n in res.notes)
    # Engine 1 alone would be sample 1: compared against input row 1, not row 0.
    layout = [(s, k, t, quantizer_codes(case, f, 2)[::-1]) for s, k, t, f in SMALL_LAYOUT]
    res = compare_board(small_emu.graph, open_board_dump(write_board(tmp_path / "swapped", layout)),
                        np.load(case / "dump_inputs.npy"))
    assert res.first_divergence.layer == "quant_input"


def test_more_engines_than_inputs_is_an_error(tmp_path, refcases, small_emu):
    board = small_board_from_quantizer(refcases / "small", tmp_path)
    with pytest.raises(QInspectError, match="2 engines"):
        compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy")[:1])


def test_unmappable_tensor_is_listed_with_candidates_of_its_size(tmp_path, refcases, small_emu):
    board = small_board_from_quantizer(refcases / "small", tmp_path)
    pool = board / "dump" / "subgraph_quant_conv1" / "output"
    for p in pool.glob("*.quant_pool1_fix.bin"):
        p.rename(p.with_name(p.name.replace("quant_pool1_fix", "mystery_7")))
    res = compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy"))
    assert [u.tensor.name for u in res.unmapped] == ["mystery_7"]
    u = res.unmapped[0]
    assert u.size == 16 * 16 * 16 and u.candidates == ["quant_pool1"]
    # --map pairs it by hand, with a float layer name or the emulator's.
    for wanted in ("pool1", "quant_pool1"):
        res = compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy"),
                            overrides={"subgraph_quant_conv1/mystery_7": wanted})
        assert not res.unmapped and res.all_matched
        assert [m.mapped_by for m in res.tensors if m.tensor.name == "mystery_7"] == ["map"]
    # null leaves it out on purpose.
    res = compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy"),
                        overrides={"mystery_7": None})
    assert not res.unmapped and "mystery_7" not in {m.tensor.name for m in res.tensors}
    assert any("left out by the map: subgraph_quant_conv1/output/mystery_7" in n for n in res.notes)
    with pytest.raises(QInspectError, match="no DPU layer"):
        compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy"),
                      overrides={"mystery_7": "nonesuch"}, map_path="map.json")
    with pytest.raises(QInspectError, match="no tensor of the board dump") as err:
        compare_board(small_emu.graph, open_board_dump(board), np.load(refcases / "small" / "dump_inputs.npy"),
                      overrides={"mystery_8": "pool1"}, map_path="map.json")
    assert err.value.path == "map.json"


def test_name_tie_is_settled_by_size(tmp_path, refcases, small_emu):
    case = refcases / "small"
    # Both quant_relu1 and quant_pool1 (11 characters each) are in this name; only pool1 has its size.
    board = write_board(tmp_path, [("sg", "output", "quant_relu1_quant_pool1_fix",
                                    quantizer_codes(case, "quant_pool1", 2))])
    res = compare_board(small_emu.graph, open_board_dump(board), np.load(case / "dump_inputs.npy"))
    assert [(m.layer, m.mapped_by) for m in res.tensors] == [("quant_pool1", "name+size")] and res.all_matched


def test_name_matching_a_layer_of_another_size_is_an_error_naming_the_file(tmp_path, refcases, small_emu):
    case = refcases / "small"
    board = write_board(tmp_path, [("sg", "output", "quant_relu2_fix", quantizer_codes(case, "quant_pool1", 2))])
    with pytest.raises(QInspectError) as err:
        compare_board(small_emu.graph, open_board_dump(board), np.load(case / "dump_inputs.npy"))
    assert err.value.path.endswith("0.quant_relu2_fix.bin") and "quant_relu2" in err.value.message


def test_one_subgraph_folder_and_the_float_input_name(tmp_path, refcases, small_emu):
    case = refcases / "small"
    x = np.load(case / "dump_inputs.npy")
    board = write_board(tmp_path, [
        ("subgraph_quant_conv1", "input", "input_0", quantizer_codes(case, "quant_input", 2)),
        ("subgraph_quant_conv1", "output", "quant_pool1", quantizer_codes(case, "quant_pool1", 2))])
    sub = board / "dump" / "subgraph_quant_conv1"
    assert dump_folder_kind(sub) == "board"
    res = compare_board(small_emu.graph, open_board_dump(sub), x)
    assert [(m.tensor.name, m.layer, m.float_layer) for m in res.tensors] == [
        ("input_0", "quant_input", "input"), ("quant_pool1", "quant_pool1", "pool1")]
    assert res.all_matched


def test_a_layer_that_differs_only_because_its_input_did_is_told_apart(tmp_path, refcases, small_emu):
    """A board whose pool1 computes a block of codes differently, every later layer computed (by the integer
    kernels) from the board's own pool1: only pool1 differs on its own inputs."""
    from qinspect.dpu.executor import Value

    g = small_emu.graph
    x = np.load(refcases / "small" / "dump_inputs.npy")
    ev = Evaluator(g, "int")
    vals = ev.run(batch_inputs(g, x))
    pool = vals["quant_pool1"]
    q = pool.codes().copy()
    q[0, :8, :8, :] = np.clip(q[0, :8, :8, :].astype(int) + 40, -128, 127)
    changed = int(np.count_nonzero(q != pool.codes()))
    vals["quant_pool1"] = Value(q=q, pos=pool.pos)
    for name in ("quant_conv2", "quant_relu2", "quant_flatten", "quant_fc"):
        vals[name] = ev.node(g[name], [vals[i] for i in g[name].inputs])
    layout = [("sg", "internal", f"{name}_fix", vals[name].codes())
              for name in ("quant_input", "quant_relu1", "quant_pool1", "quant_relu2", "quant_fc")]
    res = compare_board(g, open_board_dump(write_board(tmp_path, layout)), x)
    rows = {m.layer: m for m in res.tensors}
    assert res.first_divergence.layer == "quant_pool1"
    assert rows["quant_pool1"].isolated_matched == rows["quant_pool1"].total - changed > 0
    assert "this layer computes differently" in rows["quant_pool1"].note
    for later in ("quant_relu2", "quant_fc"):  # fc reads pool1's descendants through flatten
        assert not rows[later].ok and rows[later].isolated_matched == rows[later].total
        assert "comes from upstream" in rows[later].note and "downstream of the first divergence" in rows[later].note
    assert rows["quant_relu1"].ok and rows["quant_relu1"].isolated_matched is None
    assert [m.layer for m in res.own_divergences] == ["quant_pool1"]


def test_isolation_reads_the_copy_the_subgraph_read(tmp_path, refcases, small_emu):
    """pool1 leaves subgraph 1 intact but reaches subgraph 2 altered (say, by the CPU code between):
    relu2, computed from what subgraph 2 read, differs only because of that."""
    from qinspect.dpu.executor import Value

    g = small_emu.graph
    x = np.load(refcases / "small" / "dump_inputs.npy")
    ev = Evaluator(g, "int")
    vals = ev.run(batch_inputs(g, x))
    good = {name: vals[name].codes() for name in ("quant_input", "quant_relu1", "quant_pool1")}
    q = good["quant_pool1"].copy()
    q[1, 2:6, 2:6, :] = np.clip(q[1, 2:6, 2:6, :].astype(int) - 30, -128, 127)
    vals["quant_pool1"] = Value(q=q, pos=vals["quant_pool1"].pos)
    for name in ("quant_conv2", "quant_relu2"):
        vals[name] = ev.node(g[name], [vals[i] for i in g[name].inputs])
    layout = [("sg1", "input", "quant_input", good["quant_input"]),
              ("sg1", "internal", "quant_relu1", good["quant_relu1"]),
              ("sg1", "output", "quant_pool1", good["quant_pool1"]), ("sg2", "input", "quant_pool1", q),
              ("sg2", "output", "quant_relu2", vals["quant_relu2"].codes())]
    res = compare_board(g, open_board_dump(write_board(tmp_path, layout)), x)
    first = res.first_divergence
    assert (first.layer, first.tensor.subgraph, first.tensor.kind) == ("quant_pool1", "sg2", "input")
    relu2 = next(m for m in res.tensors if m.layer == "quant_relu2")
    assert not relu2.ok and relu2.isolated_matched == relu2.total
