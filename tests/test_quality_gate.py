"""``--fail-below DB``: a CI job fails the build on int8 quality without parsing JSON (where non-finite
SQNRs are strings, which jq sorts above every number: ``.sqnr_db >= 20`` passed on "-inf")."""

from __future__ import annotations

import json
import math

import pytest
from capture_fixtures import run_here, write_tiny

from qinspect.cli._dpu_common import quality_gate


@pytest.mark.parametrize("value, limit, code", [(25.0, 20.0, 0), (19.99, 20.0, 1), (math.inf, 20.0, 0),
                                               (-math.inf, 20.0, 1), (math.nan, 20.0, 1), (None, 20.0, 1),
                                               (5.0, None, 0)])
def test_the_gate(value, limit, code, capsys):
    assert quality_gate(value, limit) == code
    err = capsys.readouterr().err
    assert (err.count("\n") == 1 and "below --fail-below" in err) == bool(code)


def test_emulate_and_diagnose_gate_on_the_output_sqnr(tmp_path):
    cap = write_tiny(tmp_path / "tiny.h5")
    done = run_here("emulate", str(cap), "--json")
    out = json.loads(done.stdout)
    sqnr = out["output"]["sqnr_db"]
    node = next(r for r in out["layers"] if r["name"] == out["output"]["outputs"][0])
    assert sqnr == pytest.approx(node["accumulated"]["sqnr_db"])  # one output: its accumulated SQNR
    assert run_here("emulate", str(cap), "--fail-below", f"{sqnr - 1}").returncode == 0
    failed = run_here("emulate", str(cap), "--json", "--fail-below", f"{sqnr + 1}")
    assert failed.returncode == 1 and json.loads(failed.stdout)["output"]["sqnr_db"] == sqnr
    assert f"output SQNR {sqnr:.2f} dB is below --fail-below" in failed.stderr
    diagnosed = run_here("diagnose", str(cap), "--no-sensitivity", "--fail-below", "1000")
    assert diagnosed.returncode == 1 and "below --fail-below 1000 dB" in diagnosed.stderr


def test_a_mistyped_command_and_a_window_without_display_are_one_line(tmp_path):
    from conftest import run_cli

    cap = write_tiny(tmp_path / "tiny.h5")
    typo = run_here("diagnoze", str(cap))
    assert typo.returncode == 2 and "unknown command 'diagnoze'; did you mean diagnose?" in typo.stderr
    # `qinspect FILE` on a machine with no display: Qt aborted (exit 134, seven lines of plugin errors)
    done = run_cli(str(cap), env={"DISPLAY": "", "WAYLAND_DISPLAY": "", "QT_QPA_PLATFORM": ""})
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no display to open the inspector window on" in done.stderr


def test_a_stopped_command_exits_as_a_shell_reports_a_signal(capsys, monkeypatch):
    """An interrupted run exited 2, the bad-input code: a CI script could not tell the runner's timeout
    (SIGTERM) from a bad file."""
    import signal

    import qinspect.cli as cli

    monkeypatch.setattr(cli, "_STOPPED_BY", [])
    assert cli.interrupted() == 130  # Ctrl-C
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        cli.raise_interrupt(signal.SIGTERM, None)
    assert cli.interrupted() == 143
    # in a caller's process (this test run) the signals are left as they were: ignored ones would be
    # inherited by every helper started later, which then ignored terminate() and hung the run at exit
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert capsys.readouterr().err.count("qinspect: error: interrupted\n") == 2


def test_a_softmax_position_is_said_to_be_its_inputs(tmp_path):
    """emulate showed 'pos 3' for a CPU softmax, the report none and the window a what-if: the 3 is the
    quantizer before the softmax (its output stays float), which emulate now says."""
    import numpy as np

    from tests.dpu_graph_fixtures import model

    rng = np.random.default_rng(0)
    src = model([("x", "InputLayer", {}, [], [None, 6]),
                 ("fc", "Dense", {"units": 3, "activation": "softmax"}, ["x"], [None, 3])], ["fc"],
                {"fc": {"kernel": rng.normal(size=(6, 3)).astype("f4"), "bias": np.zeros(3, "f4")}})
    from qinspect.dpu.emulator import Emulator

    emu = Emulator.from_model(src, rng.normal(size=(8, 6)).astype("f4"), batch_size=8)
    (result,) = [r for r in emu.run(rng.normal(size=(8, 6)).astype("f4")).values() if r.op == "softmax"]
    assert result.position is not None and result.position_of_input


def test_a_constant_output_is_said_by_emulate_and_fails_the_gate(tmp_path, capsys):
    """Random-weight MobileNets showed 'output SQNR inf dB' in emulate with no note (diagnose said it), and
    --fail-below 30 passed a model whose int8 output is all zeros."""
    import numpy as np
    from capture_fixtures import tiny_data

    data = tiny_data()
    same = {k: np.repeat(v[:1], len(v), axis=0) for k, v in data.items()}  # every sample the first one
    cap = write_tiny(tmp_path / "same.h5", same)
    done = run_here("emulate", str(cap), "--json")
    notes = json.loads(done.stdout)["notes"]
    assert any("is nearly the same for every sample (exactly the same)" in n for n in notes), notes
    gated = run_here("emulate", str(cap), "--fail-below", "-1000")
    assert gated.returncode == 1 and gated.stderr.count("\n") == 1
    assert "no output SQNR to pass: the float model's output" in gated.stderr
    diagnosed = run_here("diagnose", str(cap), "--no-sensitivity", "--fail-below", "-1000")
    assert diagnosed.returncode == 1 and "no output SQNR to pass" in diagnosed.stderr
    # a varying output still gates on its figure
    assert quality_gate(25.0, 20.0, None) == 0 and quality_gate(25.0, 20.0, "a constant") == 1
    capsys.readouterr()
