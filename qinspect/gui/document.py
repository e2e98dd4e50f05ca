"""What is open in the window: a capture (activations ready to inspect) or a model (graph and weights only).

Plain Python, no widgets (glue's style): widgets read from a :class:`Document` and never reach into the
files themselves. Opening runs in a worker thread (:func:`open_document`), so a slow disk never blocks
the window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from qinspect.errors import QInspectError
from qinspect.io.graph import ModelGraph, WeightSource


@dataclass
class Document:
    """A file opened for inspection."""

    path: str
    kind: str  # "capture" or "model"
    graph: ModelGraph
    capture: Any = None  # qinspect.io.capture_file.Capture
    model: Any = None  # what qinspect.io.model_file.open_model returned
    activation_layers: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The file name shown in the title bar."""
        return os.path.basename(self.path.rstrip("/")) or self.path

    @property
    def has_activations(self) -> bool:
        """True when float activations are available (a capture)."""
        return self.capture is not None

    @property
    def n_samples(self) -> int:
        """Samples in the capture (0 for a model)."""
        return int(self.capture.n_samples) if self.capture is not None else 0

    def weights(self, layer: str) -> dict[str, Any]:
        """A layer's float weights (Keras layout), from the capture or the model file."""
        source = self.capture if self.capture is not None else self.model
        if source is None:
            return {}
        try:
            return source.weights(layer)
        except KeyError:
            return {}

    def summary(self) -> str:
        """One line for the status bar."""
        leaves = len(self.graph.leaves())
        what = f"{leaves} layers, {self.graph.total_params:,} parameters"
        if self.capture is not None:
            total = int(getattr(self.capture, "n_total_samples", self.n_samples))
            samples = f"{self.n_samples} samples" if total <= self.n_samples else \
                f"full tensors of {self.n_samples} of {total} samples (positions and ranges from all {total})"
            return f"{self.name}: capture of {self.graph.name}, {what}, {samples}"
        return f"{self.name}: model {self.graph.name}, {what}, no activations (capture to inspect them)"

    def close(self) -> None:
        """Release the open file handles."""
        for obj in (self.capture, self.model):
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing a broken file must not raise at the user
                    pass


def open_document(path: str | os.PathLike[str]) -> Document:
    """Open a capture or a model file (no TensorFlow for either); raises QInspectError on bad input."""
    from qinspect.io.capture_file import Capture, is_capture

    path = os.fspath(path)
    if os.path.basename(path) in ("saved_model.pb", "saved_model.pbtxt") and os.path.isfile(path):
        path = os.path.dirname(os.path.abspath(path))  # picked in a file dialog: the SavedModel is its folder
    if not os.path.exists(path):
        raise QInspectError("no such file or folder", path)
    if os.path.isfile(path) and is_capture(path):
        capture = Capture.open(path)
        return Document(path, "capture", capture.graph, capture=capture,
                        activation_layers=capture.layers_with_activations())
    try:
        from qinspect.io.model_file import open_model
    except ImportError:
        if os.path.isfile(path) and not _looks_like_model(path):
            raise QInspectError("not a qinspect capture or a Keras model file", path) from None
        raise QInspectError("opening model files needs qinspect.io.model_file, which is missing", path) from None
    from qinspect.io.board_dump import dump_folder_kind
    from qinspect.io.model_file import NeedsTensorFlowError

    kind = dump_folder_kind(path) if os.path.isdir(path) else None
    if kind is not None:  # not a model: say where it goes rather than "not a SavedModel"
        raise QInspectError(f"a Vitis {'board' if kind == 'board' else 'dump_model'} dump folder: open a capture of "
                            "the float model, import its quantized.h5 (File > Import Vitis quantized.h5), then use "
                            "File > Import Vitis dump folder to compare the two", path)
    try:
        model = open_model(path)
    except NeedsTensorFlowError:
        model = _open_savedmodel(path)
    if any(layer.class_name in _VITIS_CLASSES for layer in model.graph.layers):
        close = getattr(model, "close", None)
        if close is not None:
            close()
        raise QInspectError("a Vitis quantized model: open a capture of the float model, then use "
                            "File > Import Vitis quantized.h5 to inspect it with these positions", path)
    return Document(path, "model", model.graph, model=model)


class SavedModelArrays(WeightSource):
    """A SavedModel folder's graph and weights, read in a process of their own (:func:`_open_savedmodel`)."""

    kind = "savedmodel"

    def __init__(self, path: str, graph: ModelGraph, weights: dict[str, dict[str, Any]]) -> None:
        self.path, self.graph, self._weights = path, graph, weights

    def weights(self, layer: str) -> dict[str, Any]:
        """The arrays of one leaf layer, keyed by short weight name."""
        if layer not in self.graph:
            raise KeyError(f"no layer {layer!r} in {self.path}")
        return dict(self._weights.get(layer, {}))

    def close(self) -> None:
        """Nothing is held open."""


def _open_savedmodel(path: str) -> SavedModelArrays:
    """Read a SavedModel folder (which needs TensorFlow's protobufs and checkpoint reader) in a short-lived
    process, so TensorFlow never loads into the window's: the graph and weights come back as arrays."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        from qinspect.capture.savedmodel import read_savedmodel
    except ImportError:
        raise QInspectError("is a TensorFlow SavedModel folder; reading it needs qinspect's capture extras "
                            "(TensorFlow)", path) from None
    # inherited by the reader: no TensorFlow start-up chatter in the terminal (the oneDNN notice also drags
    # absl's "before InitializeLog" warning onto stderr; reading runs no TensorFlow op)
    quiet = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    before = {key: os.environ.get(key) for key in quiet}
    for key, value in quiet.items():
        os.environ.setdefault(key, value)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            graph, weights = pool.submit(read_savedmodel, path).result()
    except BrokenProcessPool:
        raise QInspectError("reading this SavedModel folder stopped its reader process (out of memory?)",
                            path) from None
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
    return SavedModelArrays(path, graph, weights)


_VITIS_CLASSES = {"QuantizeWrapper", "VitisQuantize", "Vitis>QuantizeWrapper", "Vitis>VitisQuantize"}


def _looks_like_model(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head.startswith(b"\x89HDF\r\n\x1a\n") or head.startswith(b"PK")
