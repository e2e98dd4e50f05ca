"""Broken input to every command -> one line naming the file and what is wrong, exit code 2, nothing written.

A manifest: each case is the command line (``{name}`` stands for a file made below or a refcase file,
``<empty>`` for an empty argument),
the file the message must name, and a fragment of the expected message. Runs in-process and needs no
TensorFlow (the models are the refcases' .h5 files, read with h5py; the capture is hand-written).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from capture_fixtures import write_tiny

from qinspect.cli import main
from qinspect.io.capture_file import Capture

# (id, argv, file the message names (or None), fragment)
CASES = [
    ("model-missing", "calibrate {tmp}/absent.h5 --inputs {calib}", "{tmp}/absent.h5", "no such file or folder"),
    ("model-is-plain-folder", "emulate {tmp}/folder --inputs {calib}", "{tmp}/folder",
     "is a folder, but not a TensorFlow SavedModel"),
    ("model-is-npy", "diagnose {calib} --inputs {calib}", "{calib}", "not a model file"),
    ("report-model-is-plain-folder", "report {tmp}/folder -o {tmp}/out", "{tmp}/folder",
     "is a folder, but not a TensorFlow SavedModel"),
    ("calibrate-quantized", "calibrate {quantized} --inputs {calib}", "{quantized}", "is a Vitis quantized model"),
    ("inputs-missing", "calibrate {float} --inputs {tmp}/absent.npy", "{tmp}/absent.npy", "no such file or folder"),
    ("inputs-folder", "emulate {float} --inputs {tmp}/folder", "{tmp}/folder", "an image folder needs --preprocess"),
    ("inputs-is-capture", "emulate {float} --inputs {capture}", "{capture}",
     "is a qinspect capture: give it as MODEL_OR_CAPTURE"),
    ("inputs-is-h5", "calibrate {float} --inputs {float}", "{float}", "not a readable .npy file"),
    ("inputs-wrong-shape", "emulate {float} --inputs {tmp}/shape.npy", "{tmp}/shape.npy",
     "inputs have shape (4, 16, 16, 3); the model expects (N, 32, 32, 3)"),
    ("inputs-string-dtype", "diagnose {float} --inputs {tmp}/str.npy", "{tmp}/str.npy",
     "inputs have dtype <U1; a numeric array is needed"),
    ("inputs-object-dtype", "calibrate {float} --inputs {tmp}/obj.npy", "{tmp}/obj.npy", "not a numeric .npy array"),
    ("no-inputs-for-model", "emulate {float}", "{float}", "needs --inputs"),
    ("positions-capture-emulate", "emulate {float} --inputs {calib} --positions {capture}", "{capture}",
     "is a qinspect capture, not positions"),
    ("positions-capture-diagnose", "diagnose {float} --inputs {calib} --positions {capture}", "{capture}",
     "is a qinspect capture, not positions"),
    ("positions-capture-report", "report {float} --positions {capture} -o {tmp}/out", "{capture}",
     "is a qinspect capture, not positions"),
    ("positions-folder-emulate", "emulate {float} --inputs {calib} --positions {tmp}/folder", "{tmp}/folder",
     "is a folder; --positions needs a quantized.h5 or a positions JSON file"),
    ("positions-folder-report", "report {float} --positions {tmp}/folder -o {tmp}/out", "{tmp}/folder",
     "is a folder; --positions needs a quantized.h5 or a positions JSON file"),
    ("positions-unknown-names", "emulate {float} --inputs {calib} --positions {tmp}/unknown.json",
     "{tmp}/unknown.json", "names no layer of this model (it has nope"),
    ("positions-unknown-names-report", "report {float} --positions {tmp}/unknown.json -o {tmp}/out",
     "{tmp}/unknown.json", "no position for"),
    ("positions-not-a-table", "diagnose {float} --inputs {calib} --positions {tmp}/list.json", "{tmp}/list.json",
     "not a positions table"),
    ("positions-not-json", "emulate {float} --inputs {calib} --positions {tmp}/garbage.json",
     "{tmp}/garbage.json", "not a positions JSON file"),
    ("positions-float-h5", "emulate {float} --inputs {calib} --positions {float}", "{float}",
     "is an HDF5 file but not a Vitis quantized model"),
    ("positions-other-model", "emulate {float} --inputs {calib} --positions {rich_quantized}", "{rich_quantized}",
     "is the quantized model of another model: its layer 'c1' is not in"),
    ("positions-other-model-report", "report {float} --positions {rich_quantized} -o {tmp}/out",
     "{rich_quantized}", "is the quantized model of another model"),
    ("positions-for-quantized-model", "emulate {quantized} --inputs {calib} --positions {positions}", "{quantized}",
     "is a Vitis quantized model with its own positions"),
    ("layer-unknown-emulate", "emulate {float} --inputs {calib} --positions {positions} --layer conv",
     "{float}", "no layer named 'conv' in the model; did you mean"),
    ("layer-unknown-report", "report {float} --positions {positions} --layer conv -o {tmp}/out", "{float}",
     "no layer named 'conv' in the model; did you mean"),
    ("eval-not-capture", "diagnose {float} --inputs {calib} --eval {float}", "{float}", "is not a qinspect capture"),
    ("report-out-unwritable", "report {float} --positions {positions} -o /proc/qinspect-report",
     "/proc/qinspect-report", "cannot write a report here"),
    ("report-out-is-file", "report {float} --positions {positions} -o {calib}", "{calib}",
     "exists and is not a folder"),
    ("capture-out-is-folder", "capture {float} --inputs {calib} -o {tmp}/folder", "{tmp}/folder",
     "is a folder; give a file name for the capture"),
    # refused before TensorFlow and the model load (the empty name named the working folder, after them)
    ("capture-out-empty", "capture {float} --inputs {calib} --output=", None, "the capture's file name (-o) is empty"),
    ("capture-out-unwritable", "capture {float} --inputs {calib} -o /proc/qinspect-capture.h5",
     "/proc/qinspect-capture.h5", "cannot write the capture here"),
    ("inputs-empty-name", "emulate {float} --inputs=", None, "--inputs is an empty file name"),
    ("positions-empty-name", "diagnose {float} --inputs {calib} --positions=", None,
     "--positions is an empty file name"),
    ("model-empty-name", "calibrate <empty> --inputs {calib}", None, "MODEL is an empty file name"),
    # --force never replaces the working folder (the test runs inside {tmp}) or a folder holding an input
    ("report-force-working-folder", "report {float} --positions {positions} -o . --force", ".",
     "is the working, home or a parent folder"),
    ("report-force-folder-of-the-model", "report {tmp}/holder/m.h5 --positions {positions} -o {tmp}/holder --force",
     "{tmp}/holder", "is not a qinspect report (it holds m.h5"),
    ("top-zero", "diagnose {float} --inputs {calib} --top 0", None, "--top must be at least 1 (got 0)"),
    ("samples-zero", "emulate {float} --inputs {calib} --samples 0", None, "--samples must be at least 1 (got 0)"),
    ("batch-zero", "report {float} --batch-size 0 -o {tmp}/out", None, "--batch-size must be at least 1 (got 0)"),
    ("dump-not-folder", "compare-dump {quantized} {calib} --inputs {calib}", "{calib}", "not a folder"),
    ("advise-eval-not-capture", "advise {float} --inputs {calib} --eval {calib}", "{calib}",
     "is not a qinspect capture"),
    ("advise-model-without-inputs", "advise {float}", "{float}", "needs --inputs"),
    ("labels-too-few", "diagnose {float} --inputs {calib} --labels {tmp}/shape.npy", "{tmp}/shape.npy",
     "labels must cover the"),
    # class indices no class of the 10-way output can match: an accuracy of 0% would pass for a measurement
    ("dump-inputs-nan", "compare-dump {quantized} {dump} --inputs {tmp}/nan.npy", "{tmp}/nan.npy",
     "inputs hold 6144 non-finite values (NaN or Inf), first in sample 0"),
    ("labels-out-of-range", "emulate {float} --inputs {calib} --labels {tmp}/minus.npy", "{tmp}/minus.npy",
     "labels hold class indices outside 0..9 (the 10 classes of output 'fc'), e.g. -1"),
    ("labels-one-hot-width", "emulate {float} --inputs {calib} --labels {tmp}/hot7.npy", "{tmp}/hot7.npy",
     "one-hot labels of 7 classes, but the model's output 'fc' has 10"),
]


@pytest.fixture(scope="module")
def names(refcases, tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "folder").mkdir()
    (tmp / "folder" / "notes.txt").write_text("not an image")
    np.save(tmp / "shape.npy", np.zeros((4, 16, 16, 3), np.float32))
    np.save(tmp / "minus.npy", np.full(16, -1, np.int64))
    np.save(tmp / "nan.npy", np.full((2, 32, 32, 3), np.nan, np.float32))
    np.save(tmp / "hot7.npy", np.eye(7, dtype=np.float32)[np.arange(16) % 7])
    np.save(tmp / "str.npy", np.array([["a"] * 3] * 4))
    np.save(tmp / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    (tmp / "unknown.json").write_text(json.dumps({"positions": {"nope": {"x": 1}}}))
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "garbage.json").write_text("{not json")
    small = refcases / "small"
    (tmp / "holder").mkdir()
    shutil.copy(small / "float.h5", tmp / "holder" / "m.h5")
    return {
        "tmp": str(tmp), "calib": str(small / "calib.npy"), "float": str(small / "float.h5"),
        "quantized": str(small / "quantized.h5"), "positions": str(small / "positions.json"),
        "dump": str(small / "dump_results"),
        "rich_quantized": str(refcases / "rich" / "quantized.h5"), "capture": str(write_tiny(tmp / "tiny.h5")),
    }


def _listing(folder: str) -> set[str]:
    return {str(p) for p in Path(folder).rglob("*")}


@pytest.mark.parametrize("argv, named, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_file(capsys, monkeypatch, names, argv, named, fragment):
    monkeypatch.chdir(names["tmp"])
    before = _listing(names["tmp"])
    capsys.readouterr()
    code = main(["" if a == "<empty>" else a for a in argv.format(**names).split()])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    expected_start = "qinspect: error: " + (named.format(**names) + ": " if named else "")
    assert lines[0].startswith(expected_start), lines[0]
    assert fragment.format(**names) in lines[0], lines[0]
    assert _listing(names["tmp"]) == before  # nothing written, no temporary left behind
    assert not os.path.exists("/proc/qinspect-report")


FLAG_CASES = [
    # (argv, fragment, the help the line names)
    ("emulate {float} --inputs {calib} --target FOO", "argument --target: invalid choice: 'FOO'", "qinspect emulate"),
    ("emulate {float} --inputs {calib} --samples abc", "argument --samples: invalid int value: 'abc'",
     "qinspect emulate"),
    ("compare-dump {quantized} {dump}", "the following arguments are required: --inputs", "qinspect compare-dump"),
    # an option of another command: the top parser refuses it, and names the sub-command's help
    ("advise {float} --inputs {calib} --fail-below 30", "unrecognized arguments: --fail-below 30", "qinspect advise"),
    ("emulate {float} --inputs {calib} --fail-below nan", "argument --fail-below: not a number of dB: 'nan'",
     "qinspect emulate"),
    ("diagnose {float} --inputs {calib} --fail-below x", "argument --fail-below: not a number of dB: 'x'",
     "qinspect diagnose"),
]


@pytest.mark.parametrize("argv, fragment, command", FLAG_CASES)
def test_a_wrong_flag_is_one_line_naming_the_commands_help(capsys, names, argv, fragment, command):
    """argparse printed its usage block (3 to 11 lines, prefixed 'qinspect emulate: error:'), and the top-level
    usage for an unknown option of a command; `--fail-below nan` was taken, and failed every figure."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(argv.format(**names).split())
    _out, err = capsys.readouterr()
    assert stop.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qinspect: error: "), err
    assert fragment in lines[0] and lines[0].endswith(f"(see {command} --help)"), lines[0]


def test_fail_below_takes_minus_inf_as_its_own_word(capsys, names):
    """`--fail-below -inf` read '-inf' as an option ("expected one argument"); only `--fail-below=-inf` worked."""
    code = main(["emulate", names["float"], "--inputs", names["calib"], "--fail-below", "-inf", "--json"])
    out, _err = capsys.readouterr()
    assert code == 0 and json.loads(out)["output"]["sqnr_db"] > 0


def test_a_progress_setting_of_no_known_value_is_said_once(capsys, names, monkeypatch):
    """QINSPECT_PROGRESS=foo was ignored without a word (a typo such as `of` passes unseen in a CI log)."""
    monkeypatch.setenv("QINSPECT_PROGRESS", "foo")
    assert main(["emulate", names["float"], "--inputs", names["calib"], "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("qinspect: warning: QINSPECT_PROGRESS='foo' is none of lines, bar, off; ignored") == 1
    monkeypatch.setenv("QINSPECT_PROGRESS", "off")
    assert main(["emulate", names["float"], "--inputs", names["calib"], "--json"]) == 0
    assert "QINSPECT_PROGRESS" not in capsys.readouterr().err


def test_fewer_samples_than_asked_and_a_renamed_npz_array_are_said(capsys, names, tmp_path):
    """emulate and advise took `--samples 1000` of a 16-sample set silently (calibrate warned); an .npz whose one
    array is named for no model input was used without a word."""
    capture = names["capture"]
    with Capture.open(capture) as cap:
        held = cap.n_samples
    assert main(["emulate", capture, "--samples", "1000", "--json"]) == 0
    assert f"asked for 1000 samples, it holds {held}; using all" in capsys.readouterr().err
    assert main(["advise", capture, "--samples", "1000", "--json"]) == 0
    assert f"asked for 1000 samples, the data holds {held}; using all" in capsys.readouterr().err
    np.savez(tmp_path / "foo.npz", foo=np.load(names["calib"]))
    assert main(["emulate", names["float"], "--inputs", str(tmp_path / "foo.npz"), "--json"]) == 0
    assert "its one array 'foo' is taken for the model's input 'input'" in capsys.readouterr().err
