"""``qinspect compare-dump`` on dump_model folders that are damaged, partial or odd: never a traceback, never
"matches" for what was not compared, and the file at fault named (cases from an outside audit)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # each case starts the CLI in a fresh interpreter


@pytest.fixture()
def small(refcases):
    return refcases / "small"


def _copy(small, tmp_path):
    dst = tmp_path / "dump_results"
    shutil.copytree(small / "dump_results", dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _run(cli, quantized, dump, inputs, *extra):
    return cli("compare-dump", str(quantized), str(dump), "--inputs", str(inputs), *extra)


def _one_line(r, *words):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_a_dangling_link_in_the_dump_is_named_not_a_traceback(cli, small, tmp_path):
    dump = _copy(small, tmp_path)
    f = dump / "dump_results_0" / "quant_pool1.bin"
    f.unlink()
    f.symlink_to(tmp_path / "nowhere.bin")
    _one_line(_run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy"), str(f), "dangling symbolic link")
    g = dump / "dump_results_0" / "input_float.bin"  # the file the sample count is read from
    g.unlink()
    g.symlink_to(tmp_path / "nowhere.bin")
    _one_line(_run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy"), str(g), "dangling symbolic link")


def test_no_activations_folder_is_never_a_match(cli, small, tmp_path):
    dump = _copy(small, tmp_path)
    shutil.rmtree(dump / "dump_results_0")
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy")
    # it said "every compared tensor matches bit for bit" with exit 0, having compared weights only
    _one_line(r, "no dump_results_0/ (the activations) folder")
    assert "matches bit for bit" not in r.stdout and "not a match" in r.stdout
    (dump / "dump_results_0").write_bytes(b"x")  # a file where the folder goes: called what it is
    _one_line(_run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy"), "dump_results_0", "is not a folder")
    # dump_model always writes dump_results_weights/ too: without it no int8 weight is compared, and the dump
    # is as incomplete as with one weight file missing (audit s34 F4: it was "matches bit for bit", exit 0)
    dump = _copy(small, tmp_path / "w")
    shutil.rmtree(dump / "dump_results_weights")
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy")
    _one_line(r, str(dump), "no dump_results_weights/ (the weights) folder")
    assert "matches bit for bit" not in r.stdout and "not a match" in r.stdout
    doc = json.loads(_run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json").stdout)
    assert doc["all_matched"] is False and doc["absent_folders"] == ["dump_results_weights"]
    assert not [t for t in doc["tensors"] if t["kind"] == "weight"]


def test_short_inputs_are_blamed_not_the_dump(cli, small, tmp_path):
    one = tmp_path / "one.npy"
    np.save(one, np.load(small / "dump_inputs.npy")[:1])
    _one_line(_run(cli, small / "quantized.h5", small / "dump_results", one), str(one),
              "holds 1 sample(s) but the dump holds 2")


def test_a_nan_in_a_float_file_is_a_nan_difference_not_zero(cli, small, tmp_path):
    dump = _copy(small, tmp_path)
    f = dump / "dump_results_0" / "quant_conv2_float.bin"
    values = np.fromfile(f, np.float32)
    values[3] = np.nan
    values.tofile(f)
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json")
    row = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}["quant_conv2_float"]
    assert row["matched"] == row["total"] - 1 and row["max_abs"] == "inf"
    assert "1 NaN value(s) in the dump" in row["note"]
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy")
    line = next(x for x in r.stdout.splitlines() if x.startswith("quant_conv2_float "))
    assert " NaN " in line and "dump nan" in line


def test_another_models_dump_is_called_that_before_any_file_is_read(cli, refcases, small):
    # the small dump against MobileNetV3Small's quantized.h5: it was "quant_flatten_float.bin holds 65536 bytes
    # but ... needs 40", a damaged file, though almost no file of it belongs to that model
    m = refcases / "mbv3small"
    _one_line(_run(cli, m / "quantized.h5", small / "dump_results", m / "dump_inputs.npy"), "a dump of another model?")


def test_a_dump_made_at_another_position_is_named_as_such(cli, small, tmp_path):
    """A dump whose pool1 was written one position higher (int8 and its float copy alike, as another
    quantization would): the row names the position, not just "5834 of 8192 differ"."""
    dump = _copy(small, tmp_path)
    acts = dump / "dump_results_0"
    codes = np.clip(np.fromfile(acts / "quant_pool1.bin", np.int8).astype(int) * 2, -128, 127).astype(np.int8)
    codes.tofile(acts / "quant_pool1.bin")
    (codes.astype(np.float32) / 2**7).tofile(acts / "quant_pool1_float.bin")
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json")
    assert r.returncode == 1, r.stderr
    first = json.loads(r.stdout)["first_divergence"]
    assert first["layer"] == "quant_pool1"
    assert first["cause"].startswith("the dump's codes are the emulator's times 2")
    assert "fix position 7 where the quantized model has 6" in first["cause"]
    # only the int8 file changed (its float copy still dump_model's): the file was edited, whatever its pattern
    shutil.copy(small / "dump_results" / "dump_results_0" / "quant_pool1_float.bin", acts / "quant_pool1_float.bin")
    first = json.loads(_run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json").stdout)[
        "first_divergence"]
    assert "its int8 file does not: the int8 file was changed after dump_model wrote it" in first["cause"]


def test_a_difference_is_traced_to_the_layer_where_it_arises(cli, small, tmp_path):
    """Each differing activation is recomputed from the dump's own input codes: relu1 changed at one value
    arises there; pool1, max-pooled from that changed relu1 (as a real run would), only inherits it. The
    rows used to say "downstream of the first divergence" without checking."""
    dump = _copy(small, tmp_path)
    acts = dump / "dump_results_0"
    relu1 = np.fromfile(acts / "quant_relu1.bin", np.int8).reshape(2, 32, 32, 16).astype(int)
    i = np.unravel_index(np.argmax(relu1[0]), relu1[0].shape)
    relu1[0][i] = min(relu1[0][i] + 3, 127)  # the largest code of its 2x2 window: pool1 carries it on
    pool1 = relu1.reshape(2, 16, 2, 16, 2, 16).max(axis=(2, 4))
    for name, codes in (("quant_relu1", relu1), ("quant_pool1", pool1)):
        codes.astype(np.int8).tofile(acts / f"{name}.bin")
        (codes.astype(np.float32) / 2**6).tofile(acts / f"{name}_float.bin")
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json")
    rows = {t["name"]: t for t in json.loads(r.stdout)["tensors"]}
    assert rows["quant_relu1"]["isolated_matched"] < rows["quant_relu1"]["total"]
    # where, as the tensor's own index: sample 0 at (h, w, c), not only the flat index of the file
    fm = rows["quant_relu1"]["first_mismatch"]
    assert (fm["sample"], tuple(fm["at"])) == (0, tuple(int(x) for x in i)) and fm["index"] == np.ravel_multi_index(
        (0, *i), (2, 32, 32, 16))
    assert "the emulator still differs: it arises in this layer" in rows["quant_relu1"]["note"]
    assert rows["quant_pool1"]["isolated_matched"] == rows["quant_pool1"]["total"]
    assert rows["quant_pool1"]["note"].startswith("fed the dump's own input codes, the emulator gives the dump's "
                                                  "codes: inherited from upstream")


def test_a_float_copy_that_differs_is_said_beside_the_verdict(cli, small, tmp_path):
    """dump_model's float files are its own dequantized copies (identical to the emulator's in every real run): one
    changed while its int8 file matches read "every compared tensor matches" with nothing said."""
    dump = _copy(small, tmp_path)
    f = dump / "dump_results_0" / "quant_relu1_float.bin"
    values = np.fromfile(f, np.float32)
    values[100] += 1.0
    values.tofile(f)
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json")
    assert r.returncode == 0, r.stderr  # the int8 files decide
    (warning,) = json.loads(r.stdout)["warnings"]
    assert warning.startswith("1 float file(s) of the dump differ from the emulator (first quant_relu1_float: 1 of")
    assert "its int8 file matches, so the float copy was changed" in warning


def test_a_few_changed_codes_before_a_flatten_are_not_called_swapped_files(cli, small, tmp_path):
    """Audit s34 F1: four codes of relu2 changed (its float copy too) were "the file holds the codes of
    quant_flatten: the files of two tensors are swapped or misnamed"; quant_flatten only carries relu2's codes."""
    dump = _copy(small, tmp_path)
    acts = dump / "dump_results_0"
    codes = np.fromfile(acts / "quant_relu2.bin", np.int8).astype(int)
    at = [5, 100, 2000, 9000]
    codes[at] = np.minimum(codes[at] + 3, 127)
    codes.astype(np.int8).tofile(acts / "quant_relu2.bin")
    (codes.astype(np.float32) / 2**7).tofile(acts / "quant_relu2_float.bin")  # relu2 is at position 7
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json")
    assert r.returncode == 1, r.stderr
    first = json.loads(r.stdout)["first_divergence"]
    assert first["layer"] == "quant_relu2" and first["matched"] == first["total"] - 4
    assert "swapped or misnamed" not in first["note"] and "quant_flatten" not in first["note"]
    assert "the emulator still differs: it arises in this layer" in first["note"]


def test_an_input_quantized_with_floor_is_named_from_the_dumps_own_input_copy(cli, small, tmp_path):
    """Audit s34 F6: the model input quantized with floor instead of the DPU's half up (its float copy
    consistent) got "the float32 simulation differs too"; input_float.bin shows the rounding."""
    dump = _copy(small, tmp_path)
    acts = dump / "dump_results_0"
    x = np.fromfile(acts / "input_float.bin", np.float32)
    floor = np.clip(np.floor(x * 64), -128, 127)  # the input quantizer's position is 6
    assert np.count_nonzero(floor != np.fromfile(acts / "quant_input.bin", np.int8)) > 100
    floor.astype(np.int8).tofile(acts / "quant_input.bin")
    (floor.astype(np.float32) / 64).tofile(acts / "quant_input_float.bin")
    first = json.loads(_run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy", "--json").stdout)[
        "first_divergence"]
    assert first["layer"] == "quant_input"
    assert "input_float.bin) times 2^6 rounded down (floor" in first["cause"]
    assert "quantized with another rounding" in first["cause"]


def test_a_weight_held_at_minus_127_is_said_to_be_a_weight(cli, small, tmp_path):
    """Audit s34 F2: a weight coded in [-127, 127] was reported as narrow-range activations, advising --target
    DPUCADF8H (which keeps weights in [-128, 127]). One fc kernel value is set to -128 LSB in the quantized
    model, and the dump holds it at -127."""
    import h5py

    q = tmp_path / "q.h5"
    shutil.copy(small / "quantized.h5", q)
    q.chmod(0o644)
    with h5py.File(q, "r+") as f:
        pos = int(f["model_weights/quant_fc/quant_fc/kernel_pos:0"][()])
        kernel = f["model_weights/quant_fc/quant_fc/kernel:0"]
        w = kernel[...]
        w.reshape(-1)[7] = -128 / 2**pos  # code -128 at the kernel's position
        kernel[...] = w
    dump = _copy(small, tmp_path)
    weights = dump / "dump_results_weights"
    codes = np.fromfile(weights / "quant_fc_kernel.bin", np.int8)
    codes[7] = -127
    codes.tofile(weights / "quant_fc_kernel.bin")
    w.reshape(-1).astype(np.float32).tofile(weights / "quant_fc_kernel_float.bin")
    doc = json.loads(_run(cli, q, dump, small / "dump_inputs.npy", "--json").stdout)
    row = {t["name"]: t for t in doc["tensors"]}["quant_fc_kernel"]
    assert row["matched"] == row["total"] - 1
    assert "the run coded this weight in [-127, 127]" in row["cause"]
    assert "activations" not in row["cause"] and "compare with --target" not in row["cause"]


@pytest.mark.parametrize(("written", "said"), [
    ("float32", "(4x the size: float32 (or int32) values written where dump_model writes int8?)"),
    ("int16", "(2x the size: int16 (or float16) values written where dump_model writes int8?)"),
    ("cut", "(truncated?)"),
])
def test_a_file_of_another_size_says_its_likely_cause(cli, small, tmp_path, written, said):
    """Audit s34 F13: the size message named the file and the sizes only."""
    dump = _copy(small, tmp_path)
    f = dump / "dump_results_0" / "quant_pool1.bin"
    codes = np.fromfile(f, np.int8)
    if written == "cut":
        f.write_bytes(codes.tobytes()[:1000])
    else:
        codes.astype(written).tofile(f)
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy")
    _one_line(r, str(f), f"holds {f.stat().st_size} bytes", said)


def test_missing_bin_files_with_txt_copies_say_the_txt_is_not_read(cli, small, tmp_path):
    """Audit s34 F14: a dump holding only the .txt copies of some tensors said "missing" without a word that
    the .txt files are there and never read."""
    dump = _copy(small, tmp_path)
    for name in ("quant_relu2.bin", "quant_relu2_float.bin"):
        (dump / "dump_results_0" / name).unlink()
    assert (dump / "dump_results_0" / "quant_relu2.txt").is_file()
    r = _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy")
    _one_line(r, "2 file(s) Vitis writes for this model are missing",
              "(2 of them only as .txt copies, which are not read")
    assert "note: 2 missing .bin file(s) have a .txt copy in the dump (first quant_relu2_float.txt)" in r.stdout
    # a .txt copy edited beside an untouched .bin changes nothing: the .bin files decide
    dump = _copy(small, tmp_path / "edited")
    (dump / "dump_results_0" / "quant_relu2.txt").write_text("1\n2\n3\n")
    assert _run(cli, small / "quantized.h5", dump, small / "dump_inputs.npy").returncode == 0
