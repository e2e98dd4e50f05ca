"""Reading Vitis artefacts without the quantizer: quantized.h5 checks, dump file mapping and its errors."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from qinspect.dpu.emulator import Emulator, compare_dump
from qinspect.errors import QInspectError
from qinspect.io.vitis import (
    QuantizedLayer,
    QuantizerSpec,
    VitisQuantizedModel,
    expected_dump_files,
    load_quantized_model,
    open_dump,
    strip_quant,
)
from tests.dpu_graph_fixtures import refcase


def test_strip_is_a_character_set_strip():
    assert strip_quant("quant_c1/kernel:0") == "c1/kernel:0"
    assert strip_quant("quant_a3_pw/kernel:0") == "3_pw/kernel:0"  # 'a' is in the set
    assert strip_quant("quant_tanh_conv/bias:0") == "h_conv/bias:0"


def test_mangled_weight_names_are_expected_missing_with_a_note():
    layer = QuantizedLayer("quant_a3_pw", "a3_pw", "QuantizeWrapper", "Conv2D", {}, [],
                           quantizers=[QuantizerSpec("3_pw/kernel:0", "weight", 1, 0, position=7, weight="kernel"),
                                       QuantizerSpec("linear", "post_activation", position=4)])
    entries, notes = expected_dump_files(VitisQuantizedModel("q.h5", "m", [layer], [], []))
    names = {e.filename for e in entries}
    assert "quant_a3_pw_kernel.bin" not in names and "quant_3_pw_kernel.bin" not in names
    assert names == {"quant_a3_pw_float.bin", "quant_a3_pw.bin"}
    assert len(notes) == 1 and "lstrip" in notes[0]


def test_float_model_is_not_a_vitis_quantized_model():
    root = refcase("small")
    with pytest.raises(QInspectError, match="not a Vitis quantized model"):
        load_quantized_model(root / "float.h5")


def test_foreign_and_incomplete_files(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"not hdf5 at all")
    with pytest.raises(QInspectError, match="not a model file: neither HDF5"):
        load_quantized_model(p)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["a"] = np.zeros(3)
    with pytest.raises(QInspectError, match="no model_config"):
        load_quantized_model(tmp_path / "w.h5")
    with pytest.raises(QInspectError, match="no such file"):
        load_quantized_model(tmp_path / "missing.h5")


@pytest.fixture()
def dump_copy(tmp_path):
    root = refcase("small")
    dst = tmp_path / "dump_results"
    shutil.copytree(root / "dump_results", dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return root, dst


def test_extra_and_renamed_files_are_unmapped_and_missing(dump_copy):
    root, dst = dump_copy
    model = load_quantized_model(root / "quantized.h5")
    (dst / "dump_results_0" / "quant_bogus.bin").write_bytes(b"\0" * 4)
    (dst / "dump_results_weights" / "quant_conv1_kernel.bin").rename(dst / "dump_results_weights" / "conv1_kernel.bin")
    d = open_dump(dst, model)
    assert [p.rsplit("/", 1)[-1] for p in d.unmapped] == ["quant_bogus.bin", "conv1_kernel.bin"]
    assert [e.filename for e in d.missing] == ["quant_conv1_kernel.bin"]


def test_size_mismatch_is_a_one_line_error_naming_the_file(dump_copy):
    root, dst = dump_copy
    f = dst / "dump_results_0" / "quant_relu1.bin"
    f.write_bytes(f.read_bytes()[:-5])
    emu = Emulator.from_quantized(root / "quantized.h5")
    d = open_dump(dst, emu.quantized_model)
    with pytest.raises(QInspectError) as exc:
        compare_dump(emu, d, np.load(root / "dump_inputs.npy"))
    msg = str(exc.value)
    assert "quant_relu1.bin" in msg and "bytes" in msg and "\n" not in msg


def test_a_changed_dump_value_is_found_with_its_first_mismatch(dump_copy):
    root, dst = dump_copy
    f = dst / "dump_results_0" / "quant_pool1.bin"
    a = np.fromfile(f, np.int8)
    a[10] = np.int8(a[10] + 3 if a[10] < 120 else a[10] - 3)
    a.tofile(f)
    emu = Emulator.from_quantized(root / "quantized.h5")
    res = {m.name: m for m in compare_dump(emu, open_dump(dst, emu.quantized_model), np.load(root / "dump_inputs.npy"))}
    m = res["quant_pool1"]
    assert (m.matched, m.total - m.matched, m.max_lsb) == (m.total - 1, 1, 3.0)
    assert m.first_mismatch["index"] == 10 and m.sim_matched == m.total - 1
    assert m.histogram == [m.total - 1, 0, 0, 1]
    assert sum(not x.ok for x in res.values() if x.gating) == 1


def test_dump_subfolder_is_accepted(dump_copy):
    root, dst = dump_copy
    d = open_dump(dst / "dump_results_0", load_quantized_model(root / "quantized.h5"))
    assert d.missing == [] and d.unmapped == []
    assert any(e.kind == "weight" for e in d.entries)


def _softmax_variant(tmp_path):
    """small/quantized.h5 with its last Dense given a softmax activation (a pre-activation quantizer), as
    the quantizer writes a Dense(activation='softmax') whose softmax it does not split out."""
    import json

    root = refcase("small")
    dst = tmp_path / "q_softmax.h5"
    shutil.copy(root / "quantized.h5", dst)
    dst.chmod(0o644)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        for lc in cfg["config"]["layers"]:
            if lc["name"] == "quant_fc":
                lc["config"]["layer"]["config"]["activation"]["config"]["activation"] = "softmax"
        f.attrs["model_config"] = json.dumps(cfg)
        g = f["model_weights/quant_fc/quant_fc"]
        g.move("post_activation_pos:0", "pre_activation_pos:0")
        names = [n.decode() if isinstance(n, bytes) else n for n in f["model_weights/quant_fc"].attrs["weight_names"]]
        f["model_weights/quant_fc"].attrs["weight_names"] = [
            n.replace("post_activation", "pre_activation").encode() for n in names]
    return root, dst


def test_softmax_is_compared_on_its_float_file(tmp_path):
    root, q = _softmax_variant(tmp_path)
    model = load_quantized_model(q)
    assert model.positions()["fc"]["softmax"] == 5 and model.tensor_types()["fc"]["softmax"] == "pre_activation"
    emu = Emulator.from_quantized(q)
    node = emu.graph["quant_fc"]
    assert node.pre_slot == ("fc", "softmax") and node.out_slot is None and node.device == "CPU"
    # A dump as dump_model writes it for such a layer: probabilities, and probabilities * 2^p truncated.
    dump = tmp_path / "dump_results"
    shutil.copytree(root / "dump_results", dump)
    for p in dump.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    x = np.load(root / "dump_inputs.npy")
    from qinspect.dpu.executor import Evaluator, batch_inputs

    logits = Evaluator(emu.graph, "sim").run(batch_inputs(emu.graph, x))["quant_flatten"].float()
    from qinspect.dpu.fixed_point import Round, fake_quant

    wq = fake_quant(node.weights["kernel"], 11, Round.HALF_TO_EVEN)
    bq = fake_quant(node.weights["bias"], 14, Round.HALF_TO_EVEN)
    pre = fake_quant(logits @ wq + bq, 5, Round.HALF_UP)
    e = np.exp(pre - pre.max(-1, keepdims=True))
    prob = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    prob.reshape(-1).tofile(dump / "dump_results_0" / "quant_fc_float.bin")
    (prob * 2**5).astype(np.int8).reshape(-1).tofile(dump / "dump_results_0" / "quant_fc.bin")
    res = {m.name: m for m in compare_dump(emu, open_dump(dump, model), x)}
    assert res["quant_fc_float"].gating and res["quant_fc_float"].ok
    assert not res["quant_fc"].gating and "means nothing" in res["quant_fc"].note
    # A wrong probability file is caught.
    (prob[::-1]).reshape(-1).tofile(dump / "dump_results_0" / "quant_fc_float.bin")
    res = {m.name: m for m in compare_dump(emu, open_dump(dump, model), x)}
    assert not res["quant_fc_float"].ok


def test_a_dump_trimmed_of_every_float_weight_copy_is_complete_with_a_note(dump_copy):
    root, dst = dump_copy
    model = load_quantized_model(root / "quantized.h5")
    float_weights = sorted((dst / "dump_results_weights").glob("*_float.bin"))
    assert float_weights
    for p in float_weights:
        p.unlink()
    dump = open_dump(dst, model)
    assert dump.missing == []
    assert not any(e.kind == "weight" and e.dtype == "float32" for e in dump.entries)
    assert any(f"none of the {len(float_weights)} float weight files" in n for n in dump.notes)
    # The int8 weights are still compared.
    assert any(e.kind == "weight" and e.dtype == "int8" and e.path for e in dump.entries)


def test_a_dump_missing_only_some_float_weight_copies_is_incomplete(dump_copy):
    root, dst = dump_copy
    first = sorted((dst / "dump_results_weights").glob("*_float.bin"))[0]
    first.unlink()
    dump = open_dump(dst, load_quantized_model(root / "quantized.h5"))
    assert [e.filename for e in dump.missing] == [first.name]


def test_weights_of_layers_named_with_a_slash_are_read():
    """tf_keras's MobileNetV3 names layers ``expanded_conv/project``: their weights are read whole."""
    root = refcase("mbv3small")
    model = load_quantized_model(root / "quantized.h5")
    layer = model["quant_expanded_conv/squeeze_excite/Conv"]
    assert set(layer.weights) == {"kernel", "bias"}
    assert layer.weights["kernel"].shape == (1, 1, 16, 8)
    # the top-level Conv_1 (432 filters) is not mistaken for the squeeze-excite Conv_1 (16 filters)
    assert model["quant_expanded_conv/squeeze_excite/Conv_1"].weights["kernel"].shape == (1, 1, 8, 16)
    assert model.positions()["expanded_conv/squeeze_excite/Conv"] == {
        "expanded_conv/squeeze_excite/Conv/kernel:0": 8, "expanded_conv/squeeze_excite/Conv/bias:0": 11}


def _edited_quantized(tmp_path, edit) -> str:
    """A copy of small/quantized.h5 with ``edit(h5py_file)`` applied."""
    dst = tmp_path / "q.h5"
    shutil.copy(refcase("small") / "quantized.h5", dst)
    dst.chmod(0o644)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return str(dst)


@pytest.mark.parametrize("value", [1e9, -1e9, 100.0, -65.0, 6.5])
def test_a_position_beyond_64_or_not_whole_is_a_damaged_model_naming_the_layer(tmp_path, value):
    """Vitis writes positions as float32 variables: out of range (or fractional) is damage, refused in one
    line naming the layer (a position of 1e9 ended in an OverflowError traceback in the emulator)."""
    def edit(f):
        f["model_weights/quant_relu2/quant_relu2/output_0_pos:0"][...] = value

    q = _edited_quantized(tmp_path, edit)
    with pytest.raises(QInspectError, match=r"layer quant_relu2: quantizer position 'output_0_pos:0' = .* not a "
                                            r"whole number within -64\.\.64") as exc:
        load_quantized_model(q)
    assert str(q) in str(exc.value)


def test_a_wrapper_without_its_quantize_config_is_refused(tmp_path):
    """Without it the layer's quantizers are unknown: emulating it with float weights gave a number for a
    layer the file does not describe."""
    import json

    def edit(f):
        cfg = json.loads(f.attrs["model_config"])
        for lc in cfg["config"]["layers"]:
            if lc["name"] == "quant_conv1":
                del lc["config"]["quantize_config"]
        f.attrs["model_config"] = json.dumps(cfg)

    with pytest.raises(QInspectError, match="layer quant_conv1 .QuantizeWrapper. has no quantize_config"):
        load_quantized_model(_edited_quantized(tmp_path, edit))
