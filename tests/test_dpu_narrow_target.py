"""A DPUCADF8H target (DPU_NUMERICS.md section 1): activations are int8 in [-127, 127], weights keep
[-128, 127]. Checked on hand-worked integer examples, on the position formula by hand, and on a real
quantizer run (only the -128 codes of the first layers that make them change, to -127)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qinspect.analysis.metrics import ErrorStats
from qinspect.dpu.emulator import Emulator
from qinspect.dpu.executor import Evaluator
from qinspect.dpu.options import QuantizerOptions
from qinspect.errors import QInspectError
from tests.conftest import run_cli
from tests.dpu_graph_fixtures import model, refcase
from tests.test_dpu_graph_executor import _graph, _run

NARROW = QuantizerOptions(target="DPUCADF8H")


def test_a_saturated_conv_holds_at_minus_127_and_the_top_is_unchanged():
    # acc = -48 at 2^-7 shifted up to po = 9: -192 -> clipped; full range -128, narrow -127.
    g = _graph([0.5, -0.25], 0.0, 4, 3, 4, 9)
    assert _run(g, [-1.0, -0.5]) == (-128, -128)
    g.narrow_activations()
    assert _run(g, [-1.0, -0.5]) == (-127, -127)
    assert _run(g, [1.0, 0.5]) == (127, 127)
    # inside the range nothing moves: acc -38 -> -9.5 -> -9 (HALF_UP) at po = 5, as on any DPU
    g = _graph([0.5, -0.25], 0.078125, 4, 3, 6, 5)
    g.narrow_activations()
    assert _run(g, [-1.0, -0.5]) == (-9, -9)


def test_the_input_quantizer_is_narrow_and_the_weights_are_not():
    # x = -8 at pi = 4 is code -128 on a full-range input, -127 on a narrow one; a weight of -1.0 at
    # pw = 7 stays code -128 (weights are quantized as the quantizer's weight quantizers say: full range).
    g = _graph([-1.0, 0.0], 0.0, 4, 7, 4, 11)
    g.narrow_activations()
    ev = Evaluator(g, "int")
    x = np.asarray([-8.0, 0.0], np.float32).reshape(1, 1, 1, -1)
    assert int(ev.run({"x": x})["q"].codes().reshape(-1)[0]) == -127
    codes, _ = ev.weight(g["c"], "kernel")
    assert int(codes.reshape(-1)[0]) == -128
    # acc = -127 * -128 = 16256 at 2^-11: 7.9375 at po = 11 -> clipped to 127
    assert _run(g, [-8.0, 0.0]) == (127, 127)


def test_a_leaky_relu_saturating_low_holds_at_minus_127():
    from qinspect.dpu.dpu_graph import Node

    leaky = Node("k", "leaky_relu", ["c"], params={"alpha": 26 / 256}, out_slot=("k", "output_0"))
    g = _graph([0.5, 0.25], 0.0, 0, 3, 3, 7, act_node=leaky)
    # acc = -48 * 26 / 2^(3 + 8 - 7) = -78 inside; x 16x larger: -1248 -> clipped
    g.narrow_activations()
    assert _run(g, [-8.0, -8.0]) == (-78, -78)
    assert _run(g, [-128.0, -128.0]) == (-127, -127)


def _input_model():
    return model([("x", "InputLayer", {}, [], [None, 4]),
                  ("r", "ReLU", {}, ["x"], [None, 4])], ["r"])


def test_positions_are_chosen_for_minus_127():
    # min -1, max 0.5. Full range: lo = -1, hi = 0.992 -> max(1/128, 0.992/127) = 2^-7 -> p = 7.
    # Narrow: [-1, 1] -> 1/127 -> -log2 = 6.989 -> p = 6 (the quantizer's narrow_range get_min_max and bound).
    calib = np.asarray([[-1.0, 0.5, 0.25, 0.0]] * 4, np.float32)
    full = Emulator.from_model(_input_model(), calib)
    narrow = Emulator.from_model(_input_model(), calib, options=NARROW)
    assert full.graph.pos(("quant_x", "input")) == 7
    assert narrow.graph.pos(("quant_x", "input")) == 6
    assert narrow.graph.slots[("quant_x", "input")].narrow_range


def test_saturation_counts_the_low_code_of_a_narrow_target():
    calib = np.asarray([[-1.0, 0.5, 0.25, 0.0]] * 4, np.float32)
    emu = Emulator.from_model(_input_model(), calib, options=NARROW)
    emu.graph.set_pos(("quant_x", "input"), 7)  # -1.0 at 7 would be code -128: held at -127 instead
    res = emu.run(calib, layers=["quant_x"], stats_factory=ErrorStats)["quant_x"].accumulated
    assert res.qmin == -127 and res.q_lo_count == 4  # the four -1.0 values, at the narrow end
    assert res.hist[0] == 0  # no -128 code


def test_on_a_real_run_the_first_changed_tensors_differ_only_by_their_minus_128_codes():
    case = refcase("rich")
    calib = np.load(case / "calib.npy")[:8]
    full = Emulator.from_quantized(case / "quantized.h5")
    narrow = Emulator.from_quantized(case / "quantized.h5")
    narrow.graph.narrow_activations()  # a what-if on the same positions (--target refuses a full-range file)
    # The run's own positions make no -128 code on these samples: the model input's, two steps finer,
    # saturates both ends (and everything after it moves)
    for emu in (full, narrow):
        slot = emu.graph[emu.graph.inputs[0]].name
        qnode = emu.graph.consumers(slot)[0]
        emu.graph.set_pos(qnode.out_slot, emu.graph.pos(qnode.out_slot) + 2)
    a = full.run(calib, keep_int8=True)
    b = narrow.run(calib, keep_int8=True)
    checked, changed = 0, set()
    for node in full.graph.nodes:  # graph order: a node's inputs come first
        qa, qb = a[node.name].int8, b[node.name].int8
        upstream = any(i in changed for i in node.inputs)
        if qa is None or upstream:
            changed.update([node.name] if upstream else [])
            continue
        assert qb.min() >= -127
        np.testing.assert_array_equal(qb, np.maximum(qa, -127))  # its inputs are the same in both runs
        checked += int(np.count_nonzero(qa == -128))
        if not np.array_equal(qa, qb):
            changed.add(node.name)
    assert checked > 0  # the run has -128 codes to move


def test_calibrate_records_the_target_and_emulate_refuses_its_positions_for_another(tmp_path):
    root = refcase("rich")
    r = run_cli("calibrate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size", "4",
                "--json", "--target", "DPUCADF8H")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["quantizer_options"]["target"] == "DPUCADF8H"
    positions = tmp_path / "narrow.json"
    positions.write_text(r.stdout)
    r = run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--positions",
                str(positions), "--samples", "4")
    assert r.returncode == 2
    assert "DPUCADF8H" in r.stderr and "activation range" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--positions",
                str(positions), "--samples", "4", "--target", "DPUCADF8H", "--json")
    assert r.returncode == 0, r.stderr
    r = run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--samples", "4",
                "--target", "DPUCADF8H")
    assert r.returncode == 0, r.stderr
    assert "batch size 32, target=DPUCADF8H" in r.stdout.splitlines()[0]  # the positions line says it
    r = run_cli("emulate", str(root / "float.h5"), "--target", "DPUCX")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def _narrow_quantized(tmp_path):
    """small's quantized.h5 with narrow_range set on every input and activation quantizer (weights keep
    [-128, 127]), as a DPUCADF8H quantization writes them."""
    import shutil

    import h5py

    dst = tmp_path / "narrow.h5"
    shutil.copy(refcase("small") / "quantized.h5", dst)
    dst.chmod(0o644)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        for layer in cfg["config"]["layers"]:
            c = layer["config"]
            if layer["class_name"] == "Vitis>VitisQuantize":
                c["quantizer"]["config"]["narrow_range"] = True
            for key in ("input_quantizers", "activation_quantizers", "output_quantizers"):
                for q in c.get("quantize_config", {}).get("config", {}).get(key, []):
                    q["quantizer_params"]["narrow_range"] = True
        f.attrs["model_config"] = json.dumps(cfg)
    return dst


def test_a_full_range_quantized_h5_is_refused_for_a_narrow_target(tmp_path):
    """Audit s34 F5: --target DPUCADF8H with a quantized.h5 whose quantizers are [-128, 127] ran silently with
    -127 clamping on positions chosen for the full range; a positions file of the other range was refused."""
    import h5py

    root = refcase("small")  # its quantizers all say narrow_range false
    with h5py.File(root / "quantized.h5", "r") as f:
        assert '"narrow_range": true' not in json.dumps(json.loads(f.attrs["model_config"]))
    for r in (run_cli("compare-dump", str(root / "quantized.h5"), str(root / "dump_results"), "--inputs",
                      str(root / "dump_inputs.npy"), "--target", "DPUCADF8H", "--json"),
              run_cli("emulate", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--positions",
                      str(root / "quantized.h5"), "--samples", "4", "--target", "DPUCADF8H")):
        assert r.returncode == 2 and r.stdout == ""
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"qinspect: error: {root / 'quantized.h5'}: ") and "[-128, 127]" in line
        assert "the target is DPUCADF8H" in line and "one activation range" in line and "--target" in line
    # a quantized.h5 whose quantizers say narrow_range: emulated narrow without the flag, and accepted with it
    narrow = _narrow_quantized(tmp_path)
    emu = Emulator.from_quantized(narrow)
    assert all(spec.narrow_range == (spec.kind != "weight") for spec in emu.graph.slots.values())
    assert Emulator.from_quantized(narrow, narrow_activations=True).graph.output_code_min("quant_relu1") == -127
    r = run_cli("compare-dump", str(narrow), str(root / "dump_results"), "--inputs", str(root / "dump_inputs.npy"),
                "--target", "DPUCADF8H", "--json")
    assert r.returncode in (0, 1), r.stderr
    assert json.loads(r.stdout)["format"] == "dump_model"


def test_the_report_and_the_windows_dump_tab_take_the_target_too(tmp_path):
    """The report's --positions quantized.h5 and the window's dump comparison read a quantized.h5 without the
    target: with DPUCADF8H a full-range file was emulated full range under a DPUCADF8H label."""
    from types import SimpleNamespace

    from qinspect.report.collect import build_report

    root = refcase("small")
    r = run_cli("report", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--positions",
                str(root / "quantized.h5"), "--target", "DPUCADF8H", "--no-findings", "-o", str(tmp_path / "rep"))
    assert r.returncode == 2 and "one activation range" in r.stderr and not (tmp_path / "rep").exists()
    narrow = _narrow_quantized(tmp_path)
    report = build_report(str(root / "float.h5"), positions=str(narrow), inputs=str(root / "calib.npy"),
                          diagnose=False, options=QuantizerOptions(target="DPUCADF8H"))
    assert report.layers  # a narrow file with the narrow target: as the command line takes it
    pytest.importorskip("PySide6")
    from qinspect.gui.emulation import dump_job

    token = SimpleNamespace(check=lambda: None, progress=lambda *_: None)
    with pytest.raises(QInspectError, match="one activation range"):
        dump_job(token, str(root / "dump_results"), str(root / "quantized.h5"), str(root / "dump_inputs.npy"), True)
    assert dump_job(token, str(root / "dump_results"), str(root / "quantized.h5"), str(root / "dump_inputs.npy"))


def test_an_unknown_target_is_refused():
    with pytest.raises(ValueError, match="unknown DPU target"):
        QuantizerOptions(target="DPUCX")
    emu = Emulator.from_model(_input_model())
    with pytest.raises(QInspectError, match="not readable"):
        emu.check_options_of({"target": "DPUCX"}, "p.json")


def test_the_report_section_of_a_narrow_output_clips_and_counts_at_minus_127():
    from qinspect.report.layer import LayerInputs, layer_section

    # -1.0 at p = 7: code -128 on a full range, -127 (held) on a narrow one; -0.5 is code -64 on both
    x = np.asarray([-1.0, -0.5, 0.25, 0.5] * 8, np.float32)
    full = layer_section(LayerInputs("a", "ReLU", positions={"output": 7}, float_out=x), "L1")
    narrow = layer_section(LayerInputs("a", "ReLU", positions={"output": 7}, float_out=x, code_min=-127), "L1")
    assert full.activation["clip_low"] == -1.0 and narrow.activation["clip_low"] == -127 / 128
    assert full.saturation_low == 0.0  # -1.0 is representable at -128
    assert narrow.saturation_low == 0.25  # a quarter of the values lie below -127/128
    labels = [m.label for f in narrow.figures if f.id.endswith("activation") for m in f.markers]
    assert "-127·2^-7" in labels and "127·2^-7" in labels


def test_the_diagnosis_counts_saturation_at_minus_127_on_a_narrow_target():
    from qinspect.analysis.sensitivity import sensitivity

    calib = np.asarray([[-1.0, 0.5, 0.25, 0.0]] * 4, np.float32)
    emu = Emulator.from_model(_input_model(), calib, options=NARROW)
    emu.graph.set_pos(("quant_x", "input"), 7)  # -1.0 at 7: held at -127
    res = sensitivity(emu.graph, {"x": calib}, mode="int", whatifs=False)
    st = res.accumulated["quant_x"]
    assert st.qmin == -127 and st.q_lo_count == 4 and st.clip_lo_count == 4
