"""A corpus of damaged, hostile and odd input files, generated (never committed as binaries).

``make_corpus(folder)`` writes every file into ``folder`` and returns the cases: each names the file,
the commands to run on it, and a fragment of the one-line message every command must give. It needs
no TensorFlow: captures are written with :class:`CaptureWriter` and then damaged with h5py, models are
copies of the Vitis reference case's ``float.h5`` edited with h5py, or ``.keras`` zips written by hand.

Run it by hand to look at the files: ``python tests/bad_corpus.py OUT_FOLDER``.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture_fixtures import N_SAMPLES, write_tiny  # noqa: E402

# What reads a capture / a model file; the window is run separately (see test_bad_corpus.py).
CAPTURE_COMMANDS = ("info", "emulate", "diagnose", "report")
MODEL_COMMANDS = ("info", "emulate", "calibrate", "report")
DATA_COMMANDS = ("emulate", "calibrate", "diagnose", "report")  # commands given --inputs


@dataclass
class BadCase:
    """One bad file and what every command must answer about it."""

    id: str
    path: Path  # the file the message must name
    fragment: str  # part of the one-line message
    commands: tuple[str, ...] = CAPTURE_COMMANDS
    # "capture" (holds its inputs), "model" (given good --inputs), "inputs" (given to ``model``) or
    # "positions" (--positions for ``model``; compare-dump takes it as the quantized model) or "eval"
    # (--eval for the capture ``model``)
    kind: str = "capture"
    model: Path | None = None  # for bad inputs: the model they are given to
    extra: dict[str, str] = field(default_factory=dict)


# --- captures ------------------------------------------------------------------------------------


def _edit_capture(path: Path, edit: Callable[[h5py.File], None]) -> Path:
    write_tiny(path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


def _edit_graph(edit: Callable[[dict], None]) -> Callable[[h5py.File], None]:
    def apply(h5: h5py.File) -> None:
        graph = json.loads(h5["graph"][()])
        edit(graph)
        del h5["graph"]
        h5.create_dataset("graph", data=json.dumps(graph), dtype=h5py.string_dtype("utf-8"))
    return apply


# 200000 nested JSON lists in 400 KB: Python's decoder gives up with RecursionError.
_DEEP = "[" * 200_000 + "]" * 200_000


def _replace_graph(text: str) -> Callable[[h5py.File], None]:
    def apply(h5: h5py.File) -> None:
        del h5["graph"]
        h5.create_dataset("graph", data=text, dtype=h5py.string_dtype("utf-8"))
    return apply


def _layer(graph: dict, name: str) -> dict:
    return next(layer for layer in graph["layers"] if layer["name"] == name)


def _replace(where: str, name: str, **create) -> Callable[[h5py.File], None]:
    def apply(h5: h5py.File) -> None:
        group = h5[where]
        del group[name]
        if create.pop("as_group", False):
            group.create_group(name)
        else:
            group.create_dataset(name, **create)
    return apply


def _external(where: str, name: str, target: str) -> Callable[[h5py.File], None]:
    """The dataset's bytes moved to another file (HDF5 external storage): h5py would read ``target``."""
    def apply(h5: h5py.File) -> None:
        shape, dtype = h5[where][name].shape, h5[where][name].dtype
        del h5[where][name]
        h5[where].create_dataset(name, shape=shape, dtype=dtype,
                                 external=[(target, 0, int(np.prod(shape)) * dtype.itemsize)])
    return apply


def _linked(where: str, name: str, target: str) -> Callable[[h5py.File], None]:
    """The name linked to an object in another file (an HDF5 external link)."""
    def apply(h5: h5py.File) -> None:
        del h5[where][name]
        h5[where][name] = h5py.ExternalLink(target, "/x")
    return apply


def _set_attr(key: str, value) -> Callable[[h5py.File], None]:
    def apply(h5: h5py.File) -> None:
        h5.attrs[key] = value
    return apply


def _declare_rows(rows: int) -> Callable[[h5py.File], None]:
    """Every tensor declares ``rows`` samples (chunked, nothing written): 'the file says' vs 'the file has'."""
    def apply(h5: h5py.File) -> None:
        h5.attrs["n_samples"] = rows
        for group in ("inputs", "activations"):
            for name in list(h5[group]):
                if isinstance(h5[group].get(name, getlink=True), h5py.SoftLink):
                    continue
                shape = h5[group][name].shape[1:]
                del h5[group][name]
                h5[group].create_dataset(name, shape=(rows, *shape), dtype=np.float32, chunks=(1, *shape))
    return apply


def _stats_with(key: str, length: int) -> Callable[[h5py.File], None]:
    """Format 1.2 statistics for 'dense' (one calibration batch of 32) whose ``key`` has ``length`` entries."""
    def apply(h5: h5py.File) -> None:
        group = h5.create_group("stats").create_group("dense")
        sizes = {"batch_min": 1, "batch_max": 1, "channel_min": 5, "channel_max": 5, "hist_bins": 1, "hist_counts": 1}
        for name, size in {**sizes, key: length}.items():
            dtype = np.uint16 if name == "hist_bins" else np.int64 if name == "hist_counts" else np.float32
            if size > 1 << 16:  # declared, never stored
                group.create_dataset(name, shape=(size,), dtype=dtype)
            else:
                group.create_dataset(name, data=np.zeros(size, dtype))
        group.attrs["count"], group.attrs["nonfinite"] = 800, 0
    return apply


def _huge_weight(h5: h5py.File) -> None:
    del h5["weights/dense/kernel"]
    h5["weights/dense"].create_dataset("kernel", shape=(10**6, 10**6), dtype=np.float32, chunks=(1, 1024))


def _huge_graph_string(h5: h5py.File) -> None:
    del h5["graph"]
    h5.create_dataset("graph", shape=(10**12,), dtype="S1", chunks=(1 << 20,))


def _incomplete_tmp(folder: Path) -> Path:
    """What a killed capture leaves: the writer's temporary file, never closed, complete=False."""
    path = write_tiny(folder / "done.h5")
    tmp = folder / ".capture.h5.abc123.tmp"
    with h5py.File(path, "r+") as h5:
        h5.attrs["complete"] = False
    data = path.read_bytes()
    path.unlink()
    tmp.write_bytes(data[: len(data) * 2 // 3])  # killed: part of the file never reached the disk
    return tmp


def _nan_capture(path: Path) -> Path:
    from capture_fixtures import tiny_data

    data = tiny_data()
    data["input"][3, 1, 2, 0] = np.nan
    data["input"][5, 0, 0, 1] = np.inf
    return write_tiny(path, data)


CAPTURES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("inputs-in-another-file", lambda p: _edit_capture(p, _external("inputs", "input", os.devnull)),
     "/inputs/input stores its data in another file"),
    ("inputs-linked-to-another-file", lambda p: _edit_capture(p, _linked("inputs", "input", "/elsewhere/x.h5")),
     "/inputs/input links to '/elsewhere/x.h5'"),
    ("graph-missing-layer", lambda p: _edit_capture(p, _edit_graph(
        lambda g: _layer(g, "dense").update(inbound=["ghost"]))), "reads layer 'ghost', which is not in the graph"),
    ("graph-no-outputs", lambda p: _edit_capture(p, _edit_graph(lambda g: g.update(outputs=[]))),
     "the graph lists no model output"),
    ("graph-strides-zero", lambda p: _edit_capture(p, _edit_graph(
        lambda g: _layer(g, "outer/conv")["config"].update(strides=[0, 0]))),
     "damaged layer config (layer outer/conv: strides [0, 0]"),
    ("graph-cycle", lambda p: _edit_capture(p, _edit_graph(
        lambda g: _layer(g, "outer/conv").update(inbound=["dense"]))), "graph has a cycle"),
    ("graph-not-json", lambda p: _edit_capture(p, _edit_graph(lambda g: g.clear())), "/graph is not a model graph"),
    ("graph-layers-not-list", lambda p: _edit_capture(p, _edit_graph(lambda g: g.update(layers=7))),
     "/graph is not a model graph"),
    ("graph-class-not-a-name", lambda p: _edit_capture(p, _edit_graph(lambda g: _layer(g, "dense").update(
        class_name=7))), "layer 'dense' has class_name = 7, not a class name"),
    ("graph-inbound-a-string", lambda p: _edit_capture(p, _edit_graph(lambda g: _layer(g, "dense").update(
        inbound="outer/conv"))), "has inbound = 'outer/conv', not a list of layer names"),
    ("graph-params-not-a-count", lambda p: _edit_capture(p, _edit_graph(lambda g: _layer(g, "dense").update(
        params="many"))), "has params = 'many', not a count"),
    ("graph-nested-too-deeply", lambda p: _edit_capture(p, _replace_graph(_DEEP)), "RecursionError"),
    ("graph-huge-string", lambda p: _edit_capture(p, _huge_graph_string), "/graph declares"),
    ("no-complete-marker", lambda p: _edit_capture(p, lambda h5: h5.attrs.__delitem__("complete")),
     "incomplete capture"),
    ("no-weights-group", lambda p: _edit_capture(p, lambda h5: h5.__delitem__("weights")),
     "/weights is missing or not a group"),
    ("dangling-input-link", lambda p: _edit_capture(p, lambda h5: h5["inputs"].__delitem__("input")),
     "cannot read activations of layer 'input'"),
    ("n-samples-string", lambda p: _edit_capture(p, _set_attr("n_samples", "ten")), "n_samples"),
    ("n-samples-negative", lambda p: _edit_capture(p, _set_attr("n_samples", -3)), "n_samples"),
    ("n-samples-beyond-data", lambda p: _edit_capture(p, _set_attr("n_samples", 1000)),
     "n_samples = 1000 but"),
    ("n-samples-declared-huge", lambda p: _edit_capture(p, _declare_rows(3_900_000_000)), "declares"),
    ("input-wrong-shape", lambda p: _edit_capture(p, _replace("inputs", "input", data=np.zeros((N_SAMPLES, 3),
                                                                                               np.float32))),
     "input 'input' has shape (10, 3); the graph says (10, 4, 4, 3)"),
    ("weight-wrong-shape", lambda p: _edit_capture(p, _replace("weights/dense", "kernel",
                                                               data=np.zeros((7, 7), np.float32))),
     "weight 'kernel' of layer 'dense' has shape (7, 7); the graph says (2, 5)"),
    ("weight-missing", lambda p: _edit_capture(p, lambda h5: h5["weights/dense"].__delitem__("kernel")),
     "no weight 'kernel' for layer 'dense'"),
    ("weight-declared-huge", lambda p: _edit_capture(p, _huge_weight), "has shape (1000000, 1000000)"),
    ("activation-group", lambda p: _edit_capture(p, _replace("activations", "dense", as_group=True)),
     "activations of layer 'dense' are a group, not an array"),
    ("activation-scalar", lambda p: _edit_capture(p, _replace("activations", "dense", data=np.float32(1))),
     "activations of layer 'dense' have shape ()"),
    ("activation-string", lambda p: _edit_capture(p, _replace("activations", "dense", data="hello")),
     "activations of layer 'dense' have"),
    ("activation-wrong-shape", lambda p: _edit_capture(p, _replace("activations", "dense",
                                                                   data=np.zeros((16, 3), np.float32))),
     "activations of layer 'dense' have shape (16, 3); the graph says (10, 4, 4, 5)"),
    ("n-total-below-kept", lambda p: _edit_capture(p, _set_attr("n_total_samples", 3)),
     "n_total_samples = 3; it must be a whole number >= 10"),
    ("all-inputs-missing", lambda p: _edit_capture(p, _set_attr("n_total_samples", 40)),
     "n_total_samples = 40 but /all_inputs is missing"),
    ("stats-batches-wrong-length", lambda p: _edit_capture(p, _stats_with("batch_max", 7)),
     "statistics batch_max of 'dense' has 7 entries; expected 1"),
    ("stats-histogram-declared-huge", lambda p: _edit_capture(p, _stats_with("hist_bins", 10**6)),
     "statistics hist_bins of 'dense' has 1000000 entries; expected at most 65536"),
    ("activation-int8", lambda p: _edit_capture(p, _replace("activations", "dense",
                                                            data=np.zeros((N_SAMPLES, 4, 4, 5), np.int8))),
     "activations of layer 'dense' have dtype int8"),
]


# --- models --------------------------------------------------------------------------------------


def _edit_model(src: Path, path: Path, edit: Callable[[h5py.File], None]) -> Path:
    path.write_bytes(src.read_bytes())  # not shutil.copy: the reference file's read-only mode stays behind
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


def _first_kernel(h5: h5py.File) -> h5py.Dataset:
    found: list[h5py.Dataset] = []
    h5["model_weights"].visititems(lambda n, o: found.append(o) if n.endswith("kernel:0") and not found else None)
    return found[0]


def _wrong_weight(h5: h5py.File) -> None:
    ds = _first_kernel(h5)
    name, group = ds.name.rsplit("/", 1)[1], ds.parent
    del group[name]
    group.create_dataset(name, data=np.zeros((2, 2), np.float32))


def _add_lambda(h5: h5py.File) -> None:
    config = json.loads(h5.attrs["model_config"])
    layers = config["config"]["layers"]
    last = layers[-1]
    layers.append({"class_name": "Lambda", "name": "evil", "inbound_nodes": [[[last["name"], 0, 0, {}]]],
                   "config": {"name": "evil", "function": ["4wEAAAAAAAAA", None, None], "function_type": "lambda",
                              "arguments": {}, "output_shape": None}})
    config["config"]["output_layers"] = [["evil", 0, 0]]
    h5.attrs["model_config"] = json.dumps(config)


def _keras_archive(path: Path, config: bytes, weights: bytes | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config)
        z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        if weights is not None:
            z.writestr("model.weights.h5", weights)
    return path


def keras3_dense_config(units: int = 2, features: int = 4) -> dict:
    """A Keras 3 config of Input(features) -> Dense(units), as Keras 3 writes it."""
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, features], "dtype": "float32",
                                                          "keras_history": ["x", 0, 0]}}
    return {"module": "keras", "class_name": "Functional", "registered_name": "Functional", "config": {
        "name": "m", "trainable": True,
        "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None, "name": "x",
             "config": {"batch_shape": [None, features], "dtype": "float32", "sparse": False, "name": "x"},
             "inbound_nodes": []},
            {"module": "keras.layers", "class_name": "Dense", "registered_name": None, "name": "fc",
             "build_config": {"input_shape": [None, features]},
             "config": {"name": "fc", "trainable": True, "dtype": "float32", "units": units,
                        "activation": "linear", "use_bias": True},
             "inbound_nodes": [{"args": [tensor], "kwargs": {}}]},
        ],
        "input_layers": [["x", 0, 0]], "output_layers": [["fc", 0, 0]]}}


def _weights_h5(folder: Path, kernel_shape: tuple[int, ...]) -> bytes:
    tmp = folder / "weights.scratch.h5"
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("layers/dense/vars/0", data=np.ones(kernel_shape, np.float32))
        h5.create_dataset("layers/dense/vars/1", data=np.zeros((2,), np.float32))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def _weight_group(h5: h5py.File) -> None:
    ds = _first_kernel(h5)
    name, group = ds.name.rsplit("/", 1)[1], ds.parent
    del group[name]
    group.create_group(name)


def _npz_bomb(path: Path, samples: int = 7000) -> Path:
    """An .npz whose one member declares ~86 MB of float32 zeros, stored in ~85 KB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array_header_1_0(entry, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (samples, 32, 32, 3)})
        left = samples * 32 * 32 * 3 * 4
        block = bytes(1 << 20)
        while left > 0:
            entry.write(block[:min(left, len(block))])
            left -= len(block)
    return path


def _positions(refcase: Path, path: Path, value: int) -> Path:
    """The reference case's positions.json with its first position replaced by ``value``."""
    data = json.loads((refcase / "positions.json").read_text())
    table = data.get("positions", data)
    layer = next(iter(table))
    table[layer][next(iter(table[layer]))] = value
    path.write_text(json.dumps(data))
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _fifo(path: Path) -> Path:
    """A named pipe: reading it would block until another process writes (nothing ever does here)."""
    if not path.exists():
        os.mkfifo(path)
    return path


def _bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid PNG header declaring side x side pixels (Pillow's decompression-bomb guard refuses it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (side + 1))  # the first row only: never decoded
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# Cases other than the damaged captures: id -> commands run on it.
OTHER_CASES: dict[str, tuple[str, ...]] = {
    "leftover-tmp": CAPTURE_COMMANDS,
    "nan-inputs": ("emulate", "diagnose", "report"),  # info shows a capture's structure, never its data
    "h5-no-weights": ("emulate", "calibrate", "report"),
    "h5-wrong-weight": MODEL_COMMANDS,
    "h5-lambda": ("emulate", "calibrate", "report"),
    "keras-config-bomb": MODEL_COMMANDS,
    "keras-no-weights": ("emulate", "calibrate", "report"),
    "keras-wrong-weight": MODEL_COMMANDS,
    "h5-weight-is-a-group": MODEL_COMMANDS,
    "keras-weights-bomb": MODEL_COMMANDS,
    "positions-out-of-range": ("emulate", "diagnose", "report"),
    "quantized-bad-kernel": ("emulate", "report", "compare-dump"),
    "eval-nan-inputs": ("diagnose", "advise", "report"),
    "fifo": CAPTURE_COMMANDS,
    "fifo-image": DATA_COMMANDS,
    "keras-config-nested-too-deeply": MODEL_COMMANDS,
    "positions-nested-too-deeply": ("emulate", "diagnose", "report"),
    "h5-config-nested-too-deeply": MODEL_COMMANDS,
    "npy-nan": DATA_COMMANDS,
    "npz-bomb": DATA_COMMANDS,
    "image-bomb": DATA_COMMANDS,
}


def runs() -> list[tuple[str, str]]:
    """Every (case id, command) pair the corpus test runs, known before any file is written."""
    pairs = [(cid, command) for cid, _, _ in CAPTURES for command in CAPTURE_COMMANDS]
    return pairs + [(cid, command) for cid, commands in OTHER_CASES.items() for command in commands]


def make_corpus(folder: Path, refcase: Path) -> list[BadCase]:
    """Write every bad file into ``folder``; ``refcase``: a Vitis reference case (``float.h5``, ``calib.npy``)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = [BadCase(cid, make(folder / f"{cid}.h5"), fragment) for cid, make, fragment in CAPTURES]
    float_h5 = refcase / "float.h5"
    calib = np.load(refcase / "calib.npy")
    nan = calib[:4].copy()
    nan[2, 0, 0, 0] = np.nan
    nan[3, 1, 1, 1] = -np.inf
    np.save(folder / "nan.npy", nan)
    images = folder / "images"
    images.mkdir(exist_ok=True)
    fifo_images = folder / "fifo-images"
    fifo_images.mkdir(exist_ok=True)
    dense = json.dumps(keras3_dense_config()).encode()
    np.save(folder / "x4.npy", np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4))
    x4 = {"inputs": str(folder / "x4.npy")}
    others = [
        ("leftover-tmp", _incomplete_tmp(folder), "incomplete capture", None, {}),
        ("nan-inputs", _nan_capture(folder / "nan-inputs.h5"), "2 non-finite values (NaN or Inf), first in sample 3",
         None, {}),
        ("h5-no-weights", _edit_model(float_h5, folder / "noweights.h5", lambda h5: h5.__delitem__("model_weights")),
         "holds no weights", None, {}),
        ("h5-wrong-weight", _edit_model(float_h5, folder / "wrongweight.h5", _wrong_weight), "has shape (2, 2)",
         None, {}),
        ("h5-lambda", _edit_model(float_h5, folder / "evil.h5", _add_lambda), "evil: operator Lambda", None, {}),
        ("keras-config-bomb", _keras_archive(folder / "spaces.keras", b" " * (80 << 20) + b"{}"), "config.json",
         None, {}),
        ("keras-no-weights", _keras_archive(folder / "noweights.keras", dense), "holds no weights", None, x4),
        ("keras-wrong-weight", _keras_archive(folder / "wrongweight.keras", dense, _weights_h5(folder, (3, 3))),
         "has shape (3, 3)", None, x4),
        ("h5-weight-is-a-group", _edit_model(float_h5, folder / "weightgroup.h5", _weight_group),
         "damaged Keras model file (AttributeError", None, {}),
        ("keras-weights-bomb", _keras_archive(folder / "weightsbomb.keras", dense, bytes(8 << 20)),
         "model.weights.h5 in the archive declares 8,388,608 bytes", None, x4),
        ("npz-bomb", _npz_bomb(folder / "bomb.npz"), "x.npy declares 86,016,128 bytes", float_h5, {}),
        ("positions-out-of-range", _positions(refcase, folder / "positions.json", 10**30),
         "is not a whole number within -64..64 (a scale of 2^-p)", None, {}),
        ("quantized-bad-kernel", _edit_model(refcase / "quantized.h5", folder / "quantized.h5", _wrong_weight),
         "its kernel has shape (2, 2); a conv2d kernel has 4 axes", None, {}),
        ("eval-nan-inputs", _nan_capture(folder / "eval-nan.h5"), "2 non-finite values (NaN or Inf), first in sample 3",
         write_tiny(folder / "good.h5"), {}),
        ("fifo", _fifo(folder / "fifo.h5"), "is a FIFO (named pipe): qinspect reads regular files and folders only",
         None, {}),
        ("fifo-image", _fifo(fifo_images / "a.png"), "is a FIFO (named pipe)", float_h5,
         {"inputs": str(fifo_images), "preprocess": "0..1"}),
        ("keras-config-nested-too-deeply", _keras_archive(folder / "deep.keras", _DEEP.encode()),
         "config.json in the archive is not valid JSON (maximum recursion depth", None, {}),
        ("h5-config-nested-too-deeply", _edit_model(float_h5, folder / "deep.h5", lambda h5: h5.attrs.__setitem__(
            "model_config", _DEEP)), "its model_config is JSON nested too deeply", None, {}),
        ("positions-nested-too-deeply", _text(folder / "deep.json", _DEEP), "not a positions JSON file", None, {}),
        ("npy-nan", folder / "nan.npy", "2 non-finite values (NaN or Inf), first in sample 2", float_h5, {}),
        ("image-bomb", _bomb_png(images / "huge.png"), "image too large to decode safely (400,000,000 pixels", float_h5,
         {"inputs": str(images), "preprocess": "0..1"}),
    ]
    for cid, path, fragment, model, extra in others:
        kind = "inputs" if model is not None else "capture" if path.suffix in (".h5", ".tmp") and cid[:3] != "h5-" \
            else "model"
        if cid.startswith("eval-"):
            kind = "eval"
        if cid.startswith(("positions-", "quantized-")):
            kind, model, extra = "positions", float_h5, {"dump": str(refcase / "dump_results"),
                                                          "dump_inputs": str(refcase / "dump_inputs.npy")}
        cases.append(BadCase(cid, path, fragment, OTHER_CASES[cid], kind, model, extra))
    return cases


if __name__ == "__main__":
    from conftest import REFCASES

    for case in make_corpus(Path(sys.argv[1]), REFCASES / "small"):
        print(f"{case.id:28} {case.path}")
