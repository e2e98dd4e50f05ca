"""``qinspect info`` through the real command line: table, JSON, no TensorFlow, and bad input.

The bad-input cases are one manifest (Netron-style): each broken file and the exact message
fragment a user must see. Every case must exit 2 with one line on stderr naming the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, run_cli
from io_keras_fixtures import FER_MODEL, keras2_case, keras3_case

from qinspect.cli.info import format_plain, format_shape
from qinspect.io.model_file import open_model


@pytest.fixture(scope="module")
def k2():
    return keras2_case()


@pytest.fixture(scope="module")
def k3():
    return keras3_case()


# ----------------------------------------------------------------------------------------- output


@pytest.mark.tf
def test_info_text_lists_every_layer_with_nesting_and_marks(k2):
    path = k2.paths["h5"]
    result = run_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("outer (keras-h5): ")
    with open_model(path) as source:
        graph = source.graph
    table = lines[2 : 3 + len(graph)]
    assert table[0].split() == ["Layer", "Class", "Output", "shape", "Params", "Inbound"]
    rows = table[1:]
    # one row per layer, in the graph's topological order, nested layers indented under their model
    for layer, row in zip(graph, rows, strict=True):
        indent = "  " * layer.depth
        assert row.startswith(indent + layer.short_name), row
        assert not row[len(indent)].isspace()
    row = dict(zip([layer.name for layer in graph], rows, strict=True))
    assert row["inner_seq"].startswith("inner_seq/ ") and "Sequential" in row["inner_seq"]
    assert row["inner_seq/ic1"].startswith("  ic1 ")
    assert "(None, 8, 8, 6)" in row["inner_seq/ic1"] and " 222 " in row["inner_seq/ic1"]
    assert row["inner_seq/ic1"].rstrip().endswith("sep")
    assert "Lambda !" in row["lam"]
    assert "TFOpLambda __operators__.add" in row["tf.__operators__.add"]
    assert row["tf.math.multiply"].rstrip().endswith("tf.__operators__.add, inner_seq/ibn2")
    assert "! lam: Lambda layer: its code is stored in the file and is never deserialized or run" in lines
    assert any(line.startswith("! mys: custom layer class 'MyScale'") for line in lines)


@pytest.mark.tf
def test_info_json_is_the_documented_structure(k3):
    result = run_cli("info", str(k3.paths["keras"]), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"name", "source", "format", "inputs", "outputs", "total_params", "warnings", "layers"}
    assert (data["name"], data["format"], data["inputs"], data["outputs"]) == ("outer3", "keras-v3", ["img"], ["fc"])
    fields = {
        "name", "class_name", "config", "inbound", "call_kwargs", "output_shape", "params", "parent",
        "weight_shapes", "is_container", "runnable", "note", "shares", "call", "output_index",
    }  # fmt: skip
    for layer in data["layers"]:
        assert set(layer) == fields
    by_name = {layer["name"]: layer for layer in data["layers"]}
    for name, truth in k3.truth.items():
        assert by_name[name]["params"] == truth["params"]
        if not truth["container"]:
            assert by_name[name]["output_shape"] == truth["shape"]
    deep = by_name["inner_seq/seq_in_seq/deep"]
    assert (deep["parent"], deep["inbound"]) == ("inner_seq/seq_in_seq", ["inner_seq/ibn"])
    assert by_name["inner_seq"]["is_container"] is True
    assert data["total_params"] == sum(t["params"] for t in k3.truth.values() if not t["container"])
    # the doc describes every field
    doc = (REPO / "docs" / "info-json.md").read_text()
    for field in fields | set(data):
        assert f"`{field}`" in doc, field


def test_format_helpers():
    assert format_shape([None, 32, 32, 3]) == "(None, 32, 32, 3)"
    assert format_shape([None]) == "(None,)"
    assert format_shape(None) == "?"


@pytest.mark.tf
def test_rich_table_when_stdout_is_a_terminal(k2):
    """A terminal gets the rich table (run under a pseudo-terminal)."""
    pty = pytest.importorskip("pty")
    import os

    out = bytearray()

    def read(fd: int) -> bytes:
        data = os.read(fd, 65536)
        out.extend(data)
        return data

    pid_status = None
    argv = [sys.executable, "-m", "qinspect", "info", str(k2.paths["h5"])]
    os.environ["COLUMNS"] = "160"
    try:
        pid_status = pty.spawn(argv, read)
    finally:
        os.environ.pop("COLUMNS", None)
    text = out.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(pid_status) == 0
    assert "┃" in text and "Layer" in text and "inner_seq/" in text and "ic1" in text


# ----------------------------------------------------------------------------------------- no TF


PROBE = """
import contextlib, io, json, sys
from qinspect.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    rc = main(["info", sys.argv[1]] + sys.argv[2:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras", "PySide6"))
print(json.dumps({"rc": rc, "heavy": heavy, "chars": len(out.getvalue())}))
"""


@pytest.mark.tf
@pytest.mark.parametrize("which", ["keras2 h5", "keras3 keras", "keras3 h5", "fer", "json"])
def test_info_never_imports_tensorflow(k2, k3, which):
    path, extra = {
        "keras2 h5": (k2.paths["h5"], []),
        "keras3 keras": (k3.paths["keras"], []),
        "keras3 h5": (k3.paths["h5"], []),
        "fer": (FER_MODEL, []),
        "json": (k2.paths["h5"], ["--json"]),
    }[which]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), *extra], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rc"] == 0 and report["chars"] > 500
    assert report["heavy"] == []


def test_the_probe_would_see_tensorflow():
    """The probe above is not blind: a module named tensorflow in sys.modules shows up."""
    stand_in = "import sys, types\nsys.modules['tensorflow.python'] = types.ModuleType('tensorflow.python')\n"
    result = subprocess.run(
        [sys.executable, "-c", stand_in + PROBE, str(FER_MODEL)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert json.loads(result.stdout)["heavy"] == ["tensorflow.python"]


# ----------------------------------------------------------------------------------------- Lambda


@pytest.mark.tf
def test_lambda_model_is_shown_and_its_code_never_runs(k2, tmp_path):
    marker: Path = k2.extra["marker"]
    assert k2.extra["lambda_ran_at_build"], "the Lambda's code writes the marker when it runs"
    marker.unlink(missing_ok=True)
    for extra in ([], ["--json"]):
        result = run_cli("info", str(k2.paths["h5"]), *extra)
        assert result.returncode == 0, result.stderr
        assert not marker.exists(), "qinspect ran the Lambda's code"
    data = json.loads(result.stdout)
    lam = next(layer for layer in data["layers"] if layer["name"] == "lam")
    assert lam["runnable"] is False and lam["class_name"] == "Lambda"
    # Keras itself does run it on load: the trap is real.
    import tf_keras

    tf_keras.models.load_model(k2.paths["h5"], compile=False, custom_objects={"MyScale": _any_layer()})
    assert marker.exists()
    marker.unlink()


def _any_layer():
    import tf_keras

    class MyScale(tf_keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(name="scale", shape=(shape[-1],))

        def call(self, x):
            return x * self.scale

    return MyScale


# ----------------------------------------------------------------------------------------- bad input

Maker = Callable[[Path], Path]


def _text(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("this is not a model\n")
    return tmp / "notes.txt"


def _text_named_h5(tmp: Path) -> Path:
    (tmp / "model.h5").write_text("this is not a model either\n")
    return tmp / "model.h5"


def _random_bytes(tmp: Path) -> Path:
    (tmp / "blob.keras").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp / "blob.keras"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.h5").write_bytes(b"")
    return tmp / "empty.h5"


def _truncated(source: Path, name: str) -> Maker:
    def make(tmp: Path) -> Path:
        data = source.read_bytes()
        (tmp / name).write_bytes(data[: len(data) // 2])
        return tmp / name

    return make


def _weights_only(tmp: Path) -> Path:
    return shutil.copy(keras2_case().paths["weights_only"], tmp / "weights.h5")


def _plain_hdf5(tmp: Path) -> Path:
    with h5py.File(tmp / "data.h5", "w") as f:
        f["x"] = np.arange(4)
    return tmp / "data.h5"


def _bad_config(tmp: Path) -> Path:
    path = tmp / "badconfig.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = '{"class_name": "Functional", "config": {"layers": ['
    return path


def _no_layers_config(tmp: Path) -> Path:
    path = tmp / "nolayers.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"name": "m"}})
    return path


def _zip_without_config(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "model.keras", "w") as z:
        z.writestr("readme.txt", "hello")
    return tmp / "model.keras"


def _keras_bad_json(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "model.keras", "w") as z:
        z.writestr("config.json", "{oops")
    return tmp / "model.keras"


def _keras_truncated_weights(tmp: Path) -> Path:
    src = keras3_case().paths["keras"]
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(tmp / "model.keras", "w") as b:
        b.writestr("config.json", a.read("config.json"))
        weights = a.read("model.weights.h5")
        b.writestr("model.weights.h5", weights[: len(weights) // 2])
    return tmp / "model.keras"


def _folder(tmp: Path) -> Path:
    (tmp / "models").mkdir()
    return tmp / "models"


def _savedmodel_without_keras(tmp: Path) -> Path:
    folder = tmp / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    return folder


# (case id, how to make the file, the message fragment a user must see)
MANIFEST: list[tuple[str, Maker, str]] = [
    ("missing file", lambda tmp: tmp / "nope.h5", "no such file or folder"),
    ("text file", _text, "not a model file: neither HDF5"),
    ("text file named .h5", _text_named_h5, "not a model file: neither HDF5"),
    ("random bytes named .keras", _random_bytes, "not a model file: neither HDF5"),
    ("empty file", _empty, "empty file: not a model"),
    ("truncated HDF5 (real fer model cut in half)", _truncated(FER_MODEL, "fer_half.h5"), "damaged or truncated HDF5"),
    ("weights but no model config", _weights_only, "has weights but no model config"),
    ("HDF5 that is not a Keras model", _plain_hdf5, "HDF5 file is not a Keras model (no model_config attribute)"),
    ("model_config not JSON", _bad_config, "unreadable Keras model config: model config is not valid JSON"),
    ("model_config without layers", _no_layers_config, "unreadable Keras model config: model 'Functional' config"),
    ("zip without config.json", _zip_without_config, "zip file without config.json: not a Keras .keras model"),
    ("config.json not JSON", _keras_bad_json, "config.json in the archive is not valid JSON"),
    ("truncated .keras weights", _keras_truncated_weights, "damaged .keras archive"),
    ("folder that is not a SavedModel", _folder, "is a folder, but not a TensorFlow SavedModel"),
    ("SavedModel without Keras metadata", _savedmodel_without_keras,
     "save it with model.save('model.keras')"),
]


@pytest.mark.tf  # some broken files are made from real saved models
@pytest.mark.parametrize(("case", "make", "fragment"), MANIFEST, ids=[m[0] for m in MANIFEST])
def test_bad_input_gives_one_line_naming_the_file(tmp_path, case, make, fragment):
    path = make(tmp_path)
    result = run_cli("info", str(path))
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    err = result.stderr.strip().splitlines()
    err = [line for line in err if not _tf_chatter(line)]
    assert len(err) == 1, result.stderr
    assert err[0].startswith(f"qinspect: error: {path}: "), err[0]
    assert fragment in err[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def _tf_chatter(line: str) -> bool:
    """TensorFlow's own start-up log lines (only the SavedModel case imports it)."""
    return line.startswith(("WARNING: All log messages before absl", "I0000 ", "W0000 ", "E0000 "))


@pytest.mark.tf
def test_truncated_hdf5_of_every_size_is_refused_cleanly(refcases, tmp_path):
    data = (refcases / "rich" / "float.h5").read_bytes()
    for frac in (0.02, 0.1, 0.5, 0.9, 0.99):
        path = tmp_path / f"cut{frac}.h5"
        path.write_bytes(data[: int(len(data) * frac)])
        result = run_cli("info", str(path))
        assert result.returncode == 2, frac
        assert result.stderr.count("\n") == 1 and "damaged or truncated HDF5" in result.stderr


# ----------------------------------------------------------------------------------------- plain text


@pytest.mark.tf
def test_plain_table_columns_align(k2):
    with open_model(k2.paths["h5"]) as source:
        text = format_plain(source.graph)
    rows = text.splitlines()[2:]
    header = rows[0]
    start = header.index("Params")
    end = start + len("Params")
    for row in rows[1 : 1 + len(source.graph)]:
        assert row[start:end].strip().replace(",", "").isdigit(), row  # right-aligned under its header


# ----------------------------------------------------------------------------------------- capture


def test_info_on_a_capture_shows_the_same_tree_as_the_model(tmp_path):
    """A capture carries the model's graph and weights: `info` lists the same layers, without TF."""
    from qinspect.io.capture_file import CaptureWriter

    path = tmp_path / "fer_capture.h5"
    with open_model(FER_MODEL) as source:
        graph = source.graph
        (inp,) = graph.inputs
        with CaptureWriter(path, graph, 1, {}, {inp: graph[inp].output_shape[1:]}) as writer:
            writer.write_weights(source, [layer.name for layer in graph.leaves()])
            writer.write_batch(0, {inp: np.zeros((1, 64, 64, 1), np.float32)}, {})
    model_rows = run_cli("info", str(FER_MODEL)).stdout.splitlines()[2:]
    result = run_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "(capture)" in lines[0] and "58,423 parameters" in lines[0]
    # the same table, then what the capture holds of its samples
    assert lines[2:-2] == model_rows
    assert lines[-2:] == ["", "samples: 1, every tensor kept"]
    with open_model(path) as capture, open_model(FER_MODEL) as model:
        assert capture.kind == "capture"
        np.testing.assert_array_equal(
            capture.weights("separable_conv2d_1")["pointwise_kernel"],
            model.weights("separable_conv2d_1")["pointwise_kernel"],
        )


def test_info_json_is_strict_with_a_nan_in_a_config_key_it_does_not_read(tmp_path):
    from tests.dpu_graph_fixtures import refcase

    path = tmp_path / "nan.h5"
    shutil.copy(refcase("small") / "float.h5", path)
    with h5py.File(path, "r+") as f:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        config["config"]["layers"][0]["config"]["foo"] = float("nan")
        f.attrs["model_config"] = json.dumps(config)  # Python writes the bare token NaN
    r = run_cli("info", "--json", str(path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout, parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))
    assert data["layers"][0]["config"]["foo"] == "nan"
