"""Images in class folders (``val/<class>/*.png``) give the samples' labels: a capture keeps them, and
emulate, diagnose and the report measure float and int8 accuracy against them without ``--labels``,
only when the model's classifier has as many classes as there are folders."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import run_cli
from label_fixtures import classifier, labelled_capture  # noqa: F401 - a fixture

from qinspect.errors import QInspectError
from qinspect.io.capture_file import Capture


def test_capture_keeps_the_class_folders_as_labels_in_turn(labelled_capture):  # noqa: F811
    _, _, _, cap, stderr = labelled_capture
    assert "taken in turn from each class" in stderr
    with Capture.open(cap) as opened:
        labels = opened.class_labels
        # in turn: blue/0, green/0, red/0, blue/1, green/1, red/1, green/2
        assert labels.values.tolist() == [0, 1, 2, 0, 1, 2, 1]
        assert labels.classes == ("blue", "green", "red")
        lit = opened.inputs()[:, 0, 0, :].argmax(axis=-1)
    assert lit.tolist() == [2, 1, 0, 2, 1, 0, 0]  # the last green-folder image is red


def test_emulate_and_diagnose_measure_accuracy_against_the_folders(labelled_capture):  # noqa: F811
    _, _, _, cap, _ = labelled_capture
    emulated = run_cli("emulate", str(cap), "--json")
    assert emulated.returncode == 0, emulated.stderr
    accuracy = json.loads(emulated.stdout)["outputs"][0]["accuracy"]
    assert accuracy["samples"] == 7 and accuracy["float"] == pytest.approx(6 / 7)
    assert "3 class folders" in accuracy["labels"] and "sorted name order" in accuracy["labels"]
    diagnosed = run_cli("diagnose", str(cap), "--json")
    assert diagnosed.returncode == 0, diagnosed.stderr
    accuracy = json.loads(diagnosed.stdout)["output"]["accuracy"]
    assert accuracy["float"] == pytest.approx(6 / 7) and "class folders" in accuracy["labels"]
    text = run_cli("emulate", str(cap))
    assert "accuracy on 7 labelled samples: float 85.7%" in text.stdout
    assert "(labels: the 3 class folders" in text.stdout


def test_the_report_says_its_accuracy_rests_on_the_folders(labelled_capture, tmp_path):  # noqa: F811
    _, _, _, cap, _ = labelled_capture
    done = run_cli("report", str(cap), "-o", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "accuracy against the 3 class folders of" in html
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["output"]["accuracy"]["float"] == pytest.approx(6 / 7)


def test_a_labels_file_wins_over_the_folders(labelled_capture):  # noqa: F811
    tmp, _, _, cap, _ = labelled_capture
    np.save(tmp / "y.npy", np.array([0, 1, 2, 0, 1, 2, 2]))  # says the odd image is red: all right
    done = run_cli("emulate", str(cap), "--json", "--labels", str(tmp / "y.npy"))
    accuracy = json.loads(done.stdout)["outputs"][0]["accuracy"]
    assert accuracy["float"] == 1.0 and accuracy["labels"] == f"the file {tmp / 'y.npy'}"


def test_folders_that_cannot_be_the_models_classes_give_no_accuracy(labelled_capture):  # noqa: F811
    """Three folders numbered 0..2 against a four-class model: the numbering cannot be the model's."""
    tmp, root, _, _, _ = labelled_capture
    model = classifier(tmp / "four.h5", classes=4)
    done = run_cli("emulate", str(model), "--inputs", str(root), "--preprocess", "0..1", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "accuracy" not in out["outputs"][0]
    why = "class-folder labels not used: 3 class folders (blue, green, red) cannot be numbered as the 4 classes"
    assert any(note.startswith(why) for note in out["notes"])  # in the JSON a script reads, not only on stderr
    text = run_cli("emulate", str(model), "--inputs", str(root), "--preprocess", "0..1")
    assert why in text.stdout
    assert "taken in turn from each class" in done.stderr  # what reading did is said without a capture too


def test_damaged_labels_are_one_line_errors(labelled_capture, tmp_path):  # noqa: F811
    _, _, _, cap, _ = labelled_capture
    bad = tmp_path / "bad.h5"
    bad.write_bytes(cap.read_bytes())
    with h5py.File(bad, "r+") as h5:
        h5["labels"][6] = 3  # beyond the three classes
    with Capture.open(bad) as opened, pytest.raises(QInspectError, match="damaged capture: /labels"):
        _ = opened.class_labels
    with h5py.File(bad, "r+") as h5:
        del h5["labels"]
        h5.create_dataset("labels", shape=(10**12,), dtype=np.int32)  # forged size: refused unread
    with Capture.open(bad) as opened, pytest.raises(QInspectError, match="damaged capture: /labels"):
        _ = opened.class_labels


def test_a_labels_file_that_is_no_npy_array_is_one_line(tmp_path):
    """An empty file, a header declaring terabytes, an .npz and a text file each gave a traceback (EOFError,
    an allocation of 279 TiB, AttributeError) or numpy's "pickled data" for a file holding no pickle."""
    from qinspect.io.labels import read_labels

    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    text = tmp_path / "text.npy"
    text.write_text("hello")
    archive = tmp_path / "lab.npz"
    np.savez(archive, y=np.arange(4))
    huge = tmp_path / "huge.npy"
    np.save(huge, np.arange(4, dtype=np.int64))
    data = huge.read_bytes().replace(b"(4,)", b"(40000000000000,)".ljust(4)[:len(b"(40000000000000,)")])
    header_end = data.index(b"\n") + 1
    huge.write_bytes(data[:header_end] + bytes(32))
    for path, words in ((empty, "no .npy header"), (text, "no .npy header"), (archive, "an .npz archive"),
                        (huge, "is not a .npy array of labels")):
        with pytest.raises(QInspectError, match=words):
            read_labels(str(path), 4)
    good = tmp_path / "y.npy"
    np.save(good, np.array([0, 1, 2, 0, 1]))
    assert read_labels(str(good), 4).tolist() == [0, 1, 2, 0]
