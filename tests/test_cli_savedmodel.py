"""Every command that takes a model reads a TensorFlow SavedModel folder (tf_keras ``model.save(dir)``).

The same tiny model is saved twice, as a SavedModel folder and as a Keras ``.h5`` (the .h5 path is the
independent reference: it is read without TensorFlow); each command must give the same numbers on both.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qinspect.cli import main

pytestmark = pytest.mark.tf

MAKE = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tf_keras as k
out = sys.argv[1]
k.utils.set_random_seed(7)
x = k.Input((8, 8, 3), name="img")
y = k.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
y = k.layers.GlobalAveragePooling2D(name="gap")(y)
y = k.layers.Dense(3, name="fc")(y)
m = k.Model(x, y, name="tiny")
m.save(os.path.join(out, "tiny_sm"))
m.save(os.path.join(out, "tiny.h5"))
np.save(os.path.join(out, "x.npy"), np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # imported here, before the CLI reads a SavedModel in this process, so TensorFlow keeps its defaults
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("savedmodel")
    subprocess.run([sys.executable, "-c", MAKE, str(out)], check=True, capture_output=True, timeout=300)
    assert (out / "tiny_sm" / "saved_model.pb").is_file()
    return out


def _json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _both(capsys, tiny, command: str, *rest: str) -> tuple[dict, dict]:
    return tuple(_json(capsys, command, str(tiny / name), *rest) for name in ("tiny_sm", "tiny.h5"))


def test_calibrate_reads_a_savedmodel(capsys, tiny):
    sm, h5 = _both(capsys, tiny, "calibrate", "--inputs", str(tiny / "x.npy"), "--batch-size", "4", "--json")
    assert sm["positions"] == h5["positions"]
    assert sm["positions"]["conv"]["conv/kernel:0"] is not None


def test_emulate_reads_a_savedmodel(capsys, tiny):
    sm, h5 = _both(capsys, tiny, "emulate", "--inputs", str(tiny / "x.npy"), "--batch-size", "4", "--json")
    assert [r["name"] for r in sm["layers"]] == [r["name"] for r in h5["layers"]]
    assert [r["accumulated"] for r in sm["layers"]] == [r["accumulated"] for r in h5["layers"]]
    assert any(r["accumulated"] and r["accumulated"]["sqnr_db"] not in (None, "inf") for r in sm["layers"])


def test_diagnose_reads_a_savedmodel(capsys, tiny):
    sm, h5 = _both(capsys, tiny, "diagnose", "--inputs", str(tiny / "x.npy"), "--batch-size", "4",
                   "--sens-samples", "4", "--json")
    assert sm["output_sqnr_db"] == h5["output_sqnr_db"]
    assert [s["layer"] for s in sm["sensitivity"]] == [s["layer"] for s in h5["sensitivity"]]


def test_report_reads_a_savedmodel(capsys, tiny, tmp_path):
    positions = _json(capsys, "calibrate", str(tiny / "tiny.h5"), "--inputs", str(tiny / "x.npy"),
                      "--batch-size", "4", "--json")
    (tmp_path / "p.json").write_text(json.dumps(positions))
    code = main(["report", str(tiny / "tiny_sm"), "--positions", str(tmp_path / "p.json"), "--no-findings",
                 "-o", str(tmp_path / "rep")])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    layers = {x["name"]: x for x in data["layers"]}
    assert set(layers) >= {"conv", "gap", "fc"}
    assert layers["conv"]["positions"]["weights"] == positions["positions"]["conv"]["conv/kernel:0"]
    assert data["model"]["format"] == "savedmodel"


def test_info_reads_a_savedmodel(capsys, tiny):
    sm = _json(capsys, "info", str(tiny / "tiny_sm"), "--json")
    assert [x["name"] for x in sm["layers"]] == ["img", "conv", "gap", "fc"]


def test_errors_on_a_savedmodel_stay_one_line(tiny, tmp_path):
    import numpy as np
    from conftest import run_cli

    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 5, 3), np.float32))
    result = run_cli("calibrate", str(tiny / "tiny_sm"), "--inputs", str(tmp_path / "bad.npy"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"qinspect: error: {tmp_path / 'bad.npy'}: inputs have shape (2, 5, 5, 3); the model expects (N, 8, 8, 3)"]


def test_the_window_opens_a_savedmodel_without_loading_tensorflow_itself(tiny):
    # the window refused every SavedModel folder ("needs TensorFlow", which was installed); it now reads
    # one in a process of its own and keeps TensorFlow out of its own
    code = (
        "import sys, numpy as np\n"
        "from qinspect.gui.document import open_document\n"
        "from qinspect.io.model_file import open_model\n"
        f"doc = open_document({str(tiny / 'tiny_sm' / 'saved_model.pb')!r})\n"  # as a file dialog picks it

        f"ref = open_model({str(tiny / 'tiny.h5')!r})\n"
        f"assert doc.kind == 'model' and doc.path == {str(tiny / 'tiny_sm')!r} and 'tensorflow' not in sys.modules\n"
        "names = [lay.name for lay in ref.graph.leaves()]\n"
        "assert [lay.name for lay in doc.graph.leaves()] == names\n"
        "for name in names:\n"
        "    a, b = doc.weights(name), ref.weights(name)\n"
        "    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name\n"
        "print('ok', len(names))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]


FORGE = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import tf_keras as k
from tf_keras.protobuf import saved_metadata_pb2
out, marker = sys.argv[1], sys.argv[2]

def writes(t):
    w = tf.io.write_file(marker, "ran")
    with tf.control_dependencies([w]):
        return tf.identity(t)

x = k.Input((4, 8), name="x")
y = k.layers.Dense(3, name="dense")(k.layers.Lambda(writes, name="evil")(x))
path = os.path.join(out, "forged_sm")
k.Model(x, y).save(path, save_format="tf")
# relabel the Lambda a built-in ReLU with a setting ReLU does not take: tf_keras cannot rebuild it from its
# config and revives it from the functions traced into the folder
meta = saved_metadata_pb2.SavedMetadata()
with open(os.path.join(path, "keras_metadata.pb"), "rb") as f:
    meta.ParseFromString(f.read())

def relabel(obj):
    if isinstance(obj, dict):
        if obj.get("class_name") == "Lambda":
            obj["class_name"] = "ReLU"
            obj["config"] = {"name": "evil", "trainable": True, "dtype": "float32", "max_value": None,
                             "negative_slope": 0.0, "threshold": 0.0, "bogus_kw": 1}
        for v in obj.values():
            relabel(v)
    elif isinstance(obj, list):
        for v in obj:
            relabel(v)

for node in meta.nodes:
    md = json.loads(node.metadata)
    relabel(md)
    node.metadata = json.dumps(md)
with open(os.path.join(path, "keras_metadata.pb"), "wb") as f:
    f.write(meta.SerializeToString())
np.save(os.path.join(out, "x4.npy"), np.zeros((4, 4, 8), np.float32))
"""


def test_a_forged_savedmodel_never_runs_its_stored_functions(tmp_path):
    """A Lambda relabelled as a ReLU with an unknown setting passed the class check; tf_keras revived it from
    the folder's traced functions, and capture ran them (a WriteFile op wrote a file). Refused now, before any
    predict, in one line; the marker the model would write never appears."""
    from conftest import run_cli

    marker = tmp_path / "ran.txt"
    subprocess.run([sys.executable, "-c", FORGE, str(tmp_path), str(marker)], check=True, capture_output=True,
                   timeout=300)
    result = run_cli("capture", str(tmp_path / "forged_sm"), "--inputs", str(tmp_path / "x4.npy"), "-o",
                     str(tmp_path / "cap.h5"), "-q")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"qinspect: error: {tmp_path / 'forged_sm'}: cannot run this model: layer(s) evil cannot be rebuilt from "
        "their saved config (TensorFlow would run the functions stored in the folder instead, which qinspect "
        "never does)")
    # TensorFlow's start-up notices (oneDNN, absl) no longer reach the terminal: the error alone (-q: no plan line)
    assert len(lines) == 1 and not any("oneDNN" in ln or "absl" in ln for ln in lines), lines
    assert not marker.exists() and not (tmp_path / "cap.h5").exists()
