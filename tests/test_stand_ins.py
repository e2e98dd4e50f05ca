"""Layers without a numpy implementation (here SeparableConv1D) take the capture's recorded float output:
what-if runs must keep those stand-ins (a position changed upstream crashed diagnose and report), and
every output figure says it is an upper bound (the int8 error before a stand-in never reaches the output)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from qinspect.analysis.sensitivity import BatchRunner
from qinspect.dpu.emulator import Emulator, captured_stand_ins
from qinspect.io.capture_file import Capture

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def stand_in_capture(tmp_path_factory):
    import tf_keras as keras

    tmp = tmp_path_factory.mktemp("standin")
    x = keras.Input((8, 8, 3), name="img")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(h)
    s = keras.layers.Reshape((64, 4), name="seq")(h)
    s = keras.layers.SeparableConv1D(4, 3, padding="same", name="sep")(s)
    y = keras.layers.Dense(3, name="out")(keras.layers.Flatten(name="flat")(s))
    keras.Model(x, y).save(tmp / "m.h5")
    np.save(tmp / "x.npy", np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3)).astype(np.float32))
    done = run_cli("capture", str(tmp / "m.h5"), "--inputs", str(tmp / "x.npy"), "-o", str(tmp / "cap.h5"), "-q")
    assert done.returncode == 0, done.stderr
    return tmp / "cap.h5"


def test_a_what_if_upstream_of_a_stand_in_keeps_its_recorded_output(stand_in_capture):
    emu = Emulator.from_model(str(stand_in_capture))
    with Capture.open(stand_in_capture) as cap:
        emu.calibrate(cap)
        batch = {"img": cap.inputs("img"), **captured_stand_ins(emu.graph, cap)}
        recorded = cap.activation("sep")
    graph = emu.graph
    assert graph["sep"].op == "unsupported"
    runner = BatchRunner(graph, batch)
    slot = graph.output_slot("quant_c1_relu")
    changed = runner.what_if({slot: graph.pos(slot) - 2})  # raised "no float or integer implementation"
    np.testing.assert_array_equal(changed["sep"].float(), recorded)
    assert not np.array_equal(changed["quant_c2_relu"].float(), runner.base["quant_c2_relu"].float())


def test_every_output_figure_says_it_is_an_upper_bound(stand_in_capture, tmp_path):
    emulated = run_cli("emulate", str(stand_in_capture), "--json")
    assert emulated.returncode == 0, emulated.stderr
    notes = json.loads(emulated.stdout)["notes"]
    assert len(notes) == 1 and notes[0].startswith("upper bound: sep has no numpy implementation")
    diagnosed = run_cli("diagnose", str(stand_in_capture), "--json")
    assert diagnosed.returncode == 0, diagnosed.stderr
    assert any("upper bound: sep" in n for n in json.loads(diagnosed.stdout)["notes"])
    reported = run_cli("report", str(stand_in_capture), "-o", str(tmp_path / "rep"), "--no-sensitivity")
    assert reported.returncode == 0, reported.stderr
    assert any("upper bound: sep" in w for w in json.loads((tmp_path / "rep" / "report.json").read_text())["warnings"])
