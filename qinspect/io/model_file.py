"""Open any model-like file qinspect reads: ``open_model(path) -> ModelSource``.

The kind is told by content, never by extension:

==================  =====================================================  ==============
what is at path     how it is recognised                                    kind
==================  =====================================================  ==============
HDF5 file           signature ``\\x89HDF\\r\\n\\x1a\\n`` (at 0, 512, 1024...)
  qinspect capture  root attribute ``format == "qinspect-capture"``         ``capture``
  Keras model       anything else (``model_config`` attribute required)     ``keras-h5``
zip archive         ``PK\\x03\\x04`` with ``config.json`` inside            ``keras-v3``
folder              holds ``saved_model.pb``: needs TensorFlow              ``savedmodel``
==================  =====================================================  ==============

A SavedModel folder raises :class:`NeedsTensorFlowError`: reading it means loading TensorFlow,
which the core never does; the CLI catches it and hands the folder to
``qinspect.capture.savedmodel``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qinspect.errors import QInspectError, UnsupportedFormatError, first_line
from qinspect.io.graph import ModelGraph
from qinspect.io.paths import check_not_special

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
CAPTURE_FORMAT = "qinspect-capture"

KINDS = ("keras-h5", "keras-v3", "capture", "savedmodel")


class NeedsTensorFlowError(QInspectError):
    """The file can only be read by TensorFlow (a SavedModel folder)."""


class ModelSource(Protocol):
    """What ``open_model`` returns: a graph and the weights of its layers."""

    graph: ModelGraph
    kind: str
    path: str

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        """The arrays of one layer, keyed by short weight name."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


def sniff(path: str | os.PathLike[str]) -> str:
    """What is at ``path`` by content: ``"hdf5"`` (a Keras .h5 or a capture: the root attributes
    tell), ``"keras-v3"`` (a zip) or ``"savedmodel"``; a QInspectError says why it is none of them."""
    p = Path(path)
    if not p.exists():
        raise QInspectError("no such file or folder", p)
    check_not_special(p)
    if p.is_dir():
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise UnsupportedFormatError("is a folder, but not a TensorFlow SavedModel (no saved_model.pb)", p)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if head == HDF5_SIGNATURE or _hdf5_after_userblock(f):
                return "hdf5"
    except OSError as exc:
        raise QInspectError(f"cannot read file ({exc.strerror or exc})", p) from exc
    if head[:4] in ZIP_SIGNATURES:
        return "keras-v3"
    if not head:
        raise UnsupportedFormatError("empty file: not a model", p)
    raise UnsupportedFormatError(
        "not a model file: neither HDF5 (.h5 model or capture) nor a Keras .keras (zip) archive", p
    )


def _hdf5_after_userblock(f: Any) -> bool:
    """HDF5 allows a user block before the superblock: the signature may sit at 512, 1024, 2048..."""
    offset = 512
    size = os.fstat(f.fileno()).st_size
    while offset + 8 <= size and offset <= 1 << 20:
        f.seek(offset)
        if f.read(8) == HDF5_SIGNATURE:
            return True
        offset *= 2
    return False


def open_model(path: str | os.PathLike[str]) -> ModelSource:
    """Open a Keras ``.h5``/``.keras`` model or a qinspect capture, by content.

    Raises QInspectError (one line, naming the file) for a missing, foreign or damaged file and
    :class:`NeedsTensorFlowError` for a SavedModel folder.
    """
    path = str(path)
    kind = sniff(path)
    if kind == "savedmodel":
        from qinspect.extras import install_command

        raise NeedsTensorFlowError(
            f"is a TensorFlow SavedModel folder; reading it needs TensorFlow: {install_command('capture')}", path
        )
    if kind == "keras-v3":
        from qinspect.io.keras_v3 import KerasV3Model

        try:
            model = KerasV3Model(path)
        except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
            # Fields of the wrong type in config.json or the weights file: not what Keras writes.
            raise QInspectError(f"damaged .keras model ({type(exc).__name__}: {first_line(exc)})", path) from None
        return _checked(model, path)
    return _checked(_open_hdf5(path), path)


def _checked(source: ModelSource, path: str) -> ModelSource:
    """``source`` once its weights' shapes agree with its layers' configs (closed and refused otherwise)."""
    from qinspect.io.config_check import check_layer_configs
    from qinspect.io.weight_check import check_weight_shapes

    if source.kind == "capture":
        return source  # checked against its own graph when opened
    try:
        check_layer_configs(source.graph.leaves(), path)  # first: a bad window explains a weight's shape
        check_weight_shapes(source.graph, path)
    except BaseException:
        source.close()
        raise
    return source


def _open_hdf5(path: str) -> ModelSource:
    import h5py

    from qinspect.io.capture_file import unreadable_hdf5_message

    try:
        h5 = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise QInspectError(unreadable_hdf5_message(path, exc), path) from None
    try:
        fmt = h5.attrs.get("format")
    except (OSError, RuntimeError) as exc:
        h5.close()
        raise QInspectError(f"damaged or truncated HDF5 file ({first_line(exc)})", path) from exc
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if isinstance(fmt, str) and fmt == CAPTURE_FORMAT:  # an array attribute compares element-wise
        h5.close()
        from qinspect.io.capture_file import Capture

        return _CaptureSource(Capture.open(path), path)
    from qinspect.io.keras_h5 import KerasH5Model

    try:
        return KerasH5Model(path, h5)
    except RecursionError:
        h5.close()
        raise QInspectError("its model_config is JSON nested too deeply to be a Keras model config", path) from None
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        # A weight that is a group, a config field of the wrong type: the file is not what Keras writes.
        h5.close()
        raise QInspectError(f"damaged Keras model file ({type(exc).__name__}: {first_line(exc)})", path) from None
    except (OSError, RuntimeError, KeyError) as exc:
        # h5py raises these for damaged metadata (a truncated file whose superblock survived).
        h5.close()
        raise QInspectError(f"damaged or truncated HDF5 file ({first_line(exc)})", path) from exc


class _CaptureSource:
    """A capture seen as a ModelSource (it has the graph and weights of the model it came from)."""

    kind = "capture"

    def __init__(self, capture: Any, path: str) -> None:
        self.capture = capture
        self.path = path
        self.graph: ModelGraph = capture.graph

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        """The arrays of one layer, as stored in the capture."""
        return self.capture.weights(layer)

    def close(self) -> None:
        """Close the capture."""
        self.capture.close()

    def __enter__(self) -> _CaptureSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

