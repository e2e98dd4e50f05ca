"""The capture file: one HDF5 file with a model's graph, weights, inputs and float activations.

Schema (version 1.3; ``docs/capture-format.md`` shows an example file's layout)::

    /                         attrs: format="qinspect-capture", version="1.3", complete=True,
                                     created (ISO 8601 UTC), creator ("qinspect 0.1.0"),
                                     source_model, source_format, preprocess, n_samples (K, kept),
                                     n_total_samples (N, fed), calib_batch_size (B),
                                     inputs_nonfinite (bool), inputs_nan / inputs_posinf / inputs_neginf
                                     (counts), plus any extra key given to the writer (JSON-encoded
                                     when not a plain str/int/float/bool)
    /graph                    scalar UTF-8 string dataset: ModelGraph.to_json()
    /inputs/<input>           (K, ...) float32: what the model was fed, after preprocessing
    /activations/<layer>      (K, ...) float32: the layer's float output, one row per kept sample.
                              A model input layer is a soft link to /inputs/<input>.
    /weights/<layer>/<short>  float32 arrays in Keras layout, in the layer's weight order; a shared
                              layer's later calls (graph entries with ``shares``) have none: they read
                              their first call's
    /positions                optional: attr "json" = quantization positions (another tool's JSON)
    /all_inputs/<input>       (N, ...) float32: every sample's input, only when K < N
    /stats/<node>             statistics of every sample (``qinspect.io.capture_stats.LayerStats``)
    /labels                   optional (N,) int32: every sample's class, for images read from class
                              folders; attrs "classes" (JSON list, index order) and "origin"

Names: HDF5 uses ``/`` as its path separator and nested Keras layers are named ``outer/inner``, so a
layer name becomes one HDF5 link name by percent-escaping ``%`` -> ``%25``, ``/`` -> ``%2F`` and a
leading ``.`` -> ``%2E`` (:func:`escape_name`). Every group or dataset named after a layer also carries
the real name in its ``name`` attr.

Storage: uncompressed (the default), each tensor is contiguous, allocated when the file is created;
sample i of a layer is one byte range, so reading one sample of one layer is one read, as with a
chunk. With compression (``lzf``, or ``gzip`` level 1) one chunk holds one sample of one tensor;
tensors under 16 KiB per sample group several samples per chunk (up to 16 KiB), since millions of
tiny chunks would make the chunk index larger than the data. Compression is off by default because
float activations shrink little (lzf: 6% on the demo model, 16% on MobileNetV2) and it makes
writing about 2x (lzf) to 3-8x (gzip) slower; ``docs/capture-format.md`` has the figures.

Reading is lazy: :meth:`Capture.open` reads the root attrs and the graph JSON; listing layers reads
dataset shapes; tensors are read only by :meth:`Capture.activation`, :meth:`Capture.inputs` and
:meth:`Capture.weights`. Files are opened read-only with HDF5 file locking off.

Writing is atomic: :class:`CaptureWriter` writes a temporary file beside the destination and
``os.replace``-s it into place on :meth:`CaptureWriter.commit`; on any error (or Ctrl-C) the temporary
file is deleted and the destination, whether absent or an older file, is left untouched.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from qinspect import __version__
from qinspect.errors import QInspectError, UnsupportedFormatError, first_line
from qinspect.io.capture_check import check_capture, check_graph, check_samples, check_storage
from qinspect.io.graph import ModelGraph, WeightSource
from qinspect.io.h5_scope import refuse_outside_data
from qinspect.io.labels import ClassLabels
from qinspect.io.paths import check_not_special, temp_prefix

FORMAT_NAME = "qinspect-capture"
DEFAULT_CALIB_BATCH_SIZE = 32  # vai_q_tensorflow2's calib_batch_size default
FORMAT_VERSION = "1.3"  # 1.1: one entry per call of a shared layer; 1.2: /stats, /all_inputs, kept subset;
# 1.3: /labels (the classes of samples read from class folders)

# Samples per chunk are chosen so that a chunk holds at least this many bytes (see module docstring).
_MIN_CHUNK_BYTES = 16 * 1024
COMPRESSIONS = ("lzf", "gzip", None)
# os.pwrite is POSIX only; elsewhere rows go through h5py (same file, no overlap with computing).
_HAS_PWRITE = hasattr(os, "pwrite")
# Rows are written in slices of this size, so a cancelled capture stops within one slice.
_WRITE_SLICE = 64 << 20


# --- names ---------------------------------------------------------------------------------------


def escape_name(name: str) -> str:
    """A layer name as one HDF5 link name (no ``/``; reversible with :func:`unescape_name`)."""
    out = name.replace("%", "%25").replace("/", "%2F")
    if out.startswith("."):
        out = "%2E" + out[1:]
    return out


def unescape_name(link: str) -> str:
    """Inverse of :func:`escape_name`."""
    return link.replace("%2E", ".").replace("%2F", "/").replace("%25", "%")


def _parse_version(text: str, path: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in str(text).split(".", 1))
    except ValueError:
        raise UnsupportedFormatError(f"capture has an unreadable format version {text!r}", path) from None
    return major, minor


def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# --- reading -------------------------------------------------------------------------------------


class Capture(WeightSource):
    """A capture file opened read-only; tensors are read lazily, one layer at a time."""

    path: str
    graph: ModelGraph
    n_samples: int  # K: samples with full tensors
    n_total_samples: int  # N: every sample fed (format 1.2; = n_samples before)
    attrs: dict[str, Any]

    def __init__(self, path: str, h5: h5py.File, graph: ModelGraph, attrs: dict[str, Any]) -> None:
        self.path = path
        self._h5 = h5
        self.graph = graph
        self.attrs = attrs
        self.n_samples = int(attrs.get("n_samples", 0))
        self.n_total_samples = int(attrs.get("n_total_samples", self.n_samples))
        self.calib_batch_size = int(attrs.get("calib_batch_size", DEFAULT_CALIB_BATCH_SIZE))
        self._activation_links: dict[str, str] | None = None
        self._stats: dict[str, Any] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Capture:
        """Open a capture read-only (HDF5 locking off), checking its format name and version."""
        path = str(path)
        if not os.path.exists(path):
            raise QInspectError("no such file or folder", path)
        if os.path.isdir(path):
            raise QInspectError("is a folder, not a capture file", path)
        check_not_special(path)
        if not h5py.is_hdf5(path):
            raise QInspectError("not an HDF5 file (a capture is an HDF5 file written by qinspect capture)", path)
        try:
            h5 = h5py.File(path, "r", locking=False)
        except OSError as exc:
            raise QInspectError(unreadable_hdf5_message(path, exc), path) from None
        try:
            refuse_outside_data(h5, path)  # before anything reads an object another file could hold
            return cls._from_h5(path, h5)
        except BaseException:
            h5.close()
            raise

    @classmethod
    def _from_h5(cls, path: str, h5: h5py.File) -> Capture:
        try:
            attrs = {key: _attr_value(h5.attrs[key]) for key in h5.attrs}
        except (OSError, RuntimeError, KeyError) as exc:
            raise QInspectError(f"damaged or truncated HDF5 file ({first_line(exc)})", path) from None
        if attrs.get("format") != FORMAT_NAME:
            raise UnsupportedFormatError(
                "an HDF5 file but not a qinspect capture (no format=\"qinspect-capture\" attribute)", path
            )
        major, _ = _parse_version(attrs.get("version", ""), path)
        ours, _ = _parse_version(FORMAT_VERSION, path)
        if major > ours:
            raise UnsupportedFormatError(
                f"capture format version {attrs['version']} is newer than this qinspect reads "
                f"({FORMAT_VERSION}); update qinspect",
                path,
            )
        if not attrs.get("complete", False):
            raise QInspectError("incomplete capture (its writing was interrupted)", path)
        n_samples = check_samples(attrs.get("n_samples"), path)
        try:
            stored = h5["graph"]
            if not isinstance(stored, h5py.Dataset) or stored.shape != () or stored.dtype.kind not in "OSU":
                shape = getattr(stored, "shape", None)
                raise QInspectError(f"damaged capture: /graph declares shape {shape} of {getattr(stored, 'dtype', '')}"
                                    "; a capture's graph is one string", path)
            check_storage(stored.id, "/graph", path)
            raw = stored[()]
        except (OSError, RuntimeError, KeyError) as exc:
            raise QInspectError(f"damaged capture: cannot read /graph ({first_line(exc)})", path) from None
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            graph = ModelGraph.from_json(text)
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
            raise QInspectError(f"damaged capture: /graph is not a model graph ({type(exc).__name__}: "
                                f"{first_line(exc)})", path) from None
        graph.source = path
        graph.source_format = "capture"
        check_graph(graph, path)
        try:
            check_capture(h5, graph, n_samples, path, escape_name, unescape_name)
        except (OSError, RuntimeError) as exc:
            raise QInspectError(f"damaged capture: cannot read its structure ({first_line(exc)})", path) from None
        return cls(path, h5, graph, attrs)

    # - metadata -

    def _links(self) -> dict[str, str]:
        """Layer name -> link name in /activations (reads link names and attrs only)."""
        if self._activation_links is None:
            group = self._group("activations")
            self._activation_links = {unescape_name(link): link for link in group}
        return self._activation_links

    def _group(self, name: str) -> h5py.Group:
        try:
            return self._h5[name]
        except (KeyError, OSError, RuntimeError) as exc:
            raise QInspectError(f"damaged capture: cannot read /{name} ({first_line(exc)})", self.path) from None

    def layers_with_activations(self) -> list[str]:
        """Names of the layers whose activations the capture holds, in topological order."""
        links = self._links()
        ordered = [layer.name for layer in self.graph.leaves() if layer.name in links]
        # Anything not in the graph (should not happen) goes last rather than disappearing.
        return ordered + sorted(set(links) - set(ordered))

    def _dataset(self, group: str, name: str, what: str) -> h5py.Dataset:
        if group == "activations":
            links = self._links()
            if name not in links:
                raise KeyError(f"{self.path}: no activations for layer {name!r} in this capture")
            link = links[name]
        else:
            link = escape_name(name)
        try:
            return self._h5[group][link]
        except KeyError:
            raise KeyError(f"{self.path}: no {what} {name!r} in this capture") from None
        except (OSError, RuntimeError) as exc:
            message = f"damaged capture: cannot read {what} {name!r} ({first_line(exc)})"
            raise QInspectError(message, self.path) from None

    def activation_shape(self, layer: str) -> tuple[int, ...]:
        """Shape ``(N, ...)`` of a layer's activations (metadata only)."""
        return tuple(int(d) for d in self._dataset("activations", layer, "layer").shape)

    def activation(self, layer: str, samples: Any = None) -> np.ndarray:
        """A layer's float32 activations for ``samples`` (None: all; a slice; an int array; an int)."""
        return _read(self._dataset("activations", layer, "layer"), samples, self.path)

    def input_names(self) -> list[str]:
        """Names of the model inputs stored, in the model's input order."""
        stored = {unescape_name(link) for link in self._group("inputs")}
        return [name for name in self.graph.inputs if name in stored] + sorted(stored - set(self.graph.inputs))

    def _input_name(self, name: str | None) -> str:
        """``name``, or the only input's when None."""
        if name is None:
            names = self.input_names()
            if len(names) != 1:
                raise ValueError(f"{self.path}: the model has {len(names)} inputs {names}; name one")
            name = names[0]
        return name

    def inputs(self, name: str | None = None, samples: Any = None) -> np.ndarray:
        """The float32 inputs fed to the model (``name`` None: the only input)."""
        name = self._input_name(name)
        return _read(self._dataset("inputs", name, "input"), samples, self.path)

    def all_inputs(self, name: str | None = None, samples: Any = None) -> np.ndarray:
        """The float32 inputs of every sample fed (``n_total_samples`` rows: ``/all_inputs`` when the
        capture keeps fewer samples, else the same as :meth:`inputs`)."""
        if "all_inputs" not in self._h5:
            return self.inputs(name, samples)
        name = self._input_name(name)
        return _read(self._dataset("all_inputs", name, "input"), samples, self.path)

    @property
    def n_kept(self) -> int:
        """K: the samples whose full tensors the file holds (= ``n_samples``)."""
        return self.n_samples

    @property
    def is_kept_subset(self) -> bool:
        """True when full tensors are kept for fewer samples than were fed (format 1.2, N > K)."""
        return self.n_total_samples > self.n_samples

    def samples_note(self) -> str:
        """'on K of N samples' for a kept-subset capture (tensor-based results), else ''."""
        return f"on {self.n_samples} of {self.n_total_samples} samples" if self.is_kept_subset else ""

    def stats(self, layer: str) -> Any:
        """The layer's :class:`~qinspect.io.capture_stats.LayerStats` over every sample fed: ``/stats`` of a
        1.2 capture, else computed from the stored tensors in ``calib_batch_size`` batches (cached)."""
        from qinspect.io.capture_stats import LayerStats

        if layer not in self._stats:
            link = escape_name(layer)
            group = self._h5.get("stats")
            if group is not None and link in group:
                try:
                    self._stats[layer] = LayerStats.read(group[link])
                except (OSError, RuntimeError, KeyError, ValueError) as exc:
                    message = f"damaged capture: cannot read /stats of {layer!r} ({first_line(exc)})"
                    raise QInspectError(message, self.path) from None
            elif self.is_kept_subset:
                raise QInspectError(f"damaged capture: no /stats for {layer!r} in a capture that keeps "
                                    f"{self.n_samples} of {self.n_total_samples} samples", self.path)
            else:
                tensor = self.activation(layer) if layer in self.layers_with_activations() else None
                if tensor is None:
                    tensor = self.inputs(layer)
                self._stats[layer] = LayerStats.from_tensor(tensor, self.calib_batch_size, name=layer)
        return self._stats[layer]

    def every_input(self) -> EveryInput:
        """Every sample's model inputs (``n_total_samples`` of them), as data to calibrate or run on."""
        return EveryInput(self)

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        """The layer's weights keyed by short name, in the layer's order (empty if it has none).

        A later call of a shared layer (``conv@2``) has its first call's weights."""
        group = self._group("weights")
        if layer in self.graph:
            layer = self.graph.owner(layer)
        link = escape_name(layer)
        if link not in group:
            if layer in self.graph:
                return {}
            raise KeyError(f"{self.path}: no layer {layer!r} in this capture")
        try:
            sub = group[link]
            return {name: np.asarray(sub[name][()], dtype=np.float32) for name in sub}
        except (OSError, RuntimeError) as exc:
            message = f"damaged capture: cannot read weights of {layer!r} ({first_line(exc)})"
            raise QInspectError(message, self.path) from None

    @property
    def class_labels(self) -> ClassLabels | None:
        """The classes of every sample fed (format 1.3: images read from class folders), or None."""
        if "labels" not in self._h5:
            return None
        damaged = QInspectError(f"damaged capture: /labels is not one class index per sample (of "
                                f"{self.n_total_samples}) below its number of classes", self.path)
        try:
            stored = self._h5["labels"]
            # The shape is checked before anything is read: a forged one could declare any size.
            if not isinstance(stored, h5py.Dataset) or stored.shape != (self.n_total_samples,) or \
                    stored.dtype.kind not in "iu":
                raise damaged
            values = np.asarray(stored[()])
            classes = json.loads(_attr_value(stored.attrs.get("classes", "[]")))
            origin = str(_attr_value(stored.attrs.get("origin", "")))
        except (OSError, RuntimeError, ValueError, RecursionError) as exc:
            raise QInspectError(f"damaged capture: cannot read /labels ({first_line(exc)})", self.path) from None
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or \
                (len(values) and (values.min() < 0 or values.max() >= len(classes))):
            raise damaged
        return ClassLabels(values.astype(np.int64), origin or "the capture's labels", tuple(classes))

    def positions(self) -> dict[str, Any] | None:
        """Quantization positions stored with the capture (another tool's JSON), or None."""
        if "positions" not in self._h5:
            return None
        text = _attr_value(self._h5["positions"].attrs.get("json", "null"))
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise QInspectError(f"damaged capture: /positions is not JSON ({exc})", self.path) from None

    def close(self) -> None:
        """Close the file (further reads fail)."""
        self._h5.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Capture({self.path!r}, {self.n_samples} samples, {len(self._links())} layers)"



class EveryInput:
    """The inputs of every sample a capture was fed (``/all_inputs`` of a kept-subset capture), read the way
    a capture's inputs are; it holds no activations, so a reader takes it as plain inputs."""

    def __init__(self, capture: Capture) -> None:
        self._capture = capture
        self.path = capture.path
        self.n_samples = capture.n_total_samples

    def inputs(self, name: str | None = None, samples: Any = None) -> np.ndarray:
        """Inputs of every sample (``samples``: None, a slice, indices)."""
        return self._capture.all_inputs(name, samples)

    def input_names(self) -> list[str]:
        """Names of the model inputs stored."""
        return self._capture.input_names()


def _read(ds: h5py.Dataset, samples: Any, path: str) -> np.ndarray:
    """Read rows of a (N, ...) dataset as float32; ``samples`` as in :meth:`Capture.activation`."""
    n = ds.shape[0]
    try:
        if samples is None:
            data = ds[()]
        elif isinstance(samples, slice) and (samples.step or 1) > 0:
            data = ds[samples]
        elif np.isscalar(samples) and np.issubdtype(type(samples), np.integer):
            index = int(samples)
            if not -n <= index < n:
                raise IndexError(f"sample {index} out of range for {n} samples")
            data = ds[index % n]
        else:
            # A reversed slice (h5py reads only forward) goes through the index path.
            index = np.arange(n)[samples] if isinstance(samples, slice) else np.asarray(samples)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
                raise IndexError("samples must be None, a slice, an int or a 1-D int array")
            index = index.astype(np.int64)
            if index.size and (index.min() < -n or index.max() >= n):
                raise IndexError(f"sample index out of range for {n} samples")
            index = index % n if n else index
            # h5py wants increasing, unique indices: read those, then put them back in the asked order.
            unique, inverse = np.unique(index, return_inverse=True)
            if unique.size == 0:
                data = np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
            elif unique.size * 4 >= unique[-1] - unique[0] + 1:
                # Dense enough: one contiguous read is faster than a point selection.
                data = ds[int(unique[0]) : int(unique[-1]) + 1][unique - unique[0]]
            else:
                data = ds[unique]
            data = data[inverse]
    except (OSError, RuntimeError) as exc:
        raise QInspectError(f"damaged capture: cannot read {ds.name} ({first_line(exc)})", path) from None
    return np.asarray(data, dtype=np.float32)


# --- writing -------------------------------------------------------------------------------------


def samples_per_chunk(sample_shape: Sequence[int], itemsize: int = 4) -> int:
    """Samples per chunk: one, unless a sample is under 16 KiB (then enough to fill 16 KiB)."""
    sample_bytes = max(1, int(np.prod(sample_shape, dtype=np.int64)) * itemsize)
    return max(1, _MIN_CHUNK_BYTES // sample_bytes)


def bytes_needed(
    n_samples: int, activation_shapes: Mapping[str, Sequence[int]], input_shapes: Mapping[str, Sequence[int]]
) -> int:
    """Uncompressed float32 bytes of a capture's activations and inputs (shapes without the N)."""
    per_sample = sum(int(np.prod(s, dtype=np.int64)) for s in activation_shapes.values())
    per_sample += sum(int(np.prod(s, dtype=np.int64)) for s in input_shapes.values())
    return 4 * n_samples * per_sample


class CaptureWriter:
    """Writes a capture into a temporary file beside ``path``; :meth:`commit` moves it into place.

    Use as a context manager: leaving the block normally commits, an exception (Ctrl-C included)
    aborts, which deletes the temporary file and leaves ``path`` as it was.

    ``activation_shapes``/``input_shapes`` give each tensor's shape *without* the sample axis.
    ``input_links`` maps model-input layer names to input names: those layers' activations are soft
    links to ``/inputs/<input>`` rather than copies. ``positions`` (optional) is stored as /positions.

    Format 1.2: ``n_samples`` (K) samples keep full tensors; ``n_total_samples`` (N >= K, default K)
    are fed. :meth:`write_batch` takes every one of the N samples in order, stores the first K in
    ``/inputs`` and ``/activations`` and, when N > K, every input in ``/all_inputs``; per-node
    statistics over all N come through :meth:`write_stats` (grouped by ``calib_batch_size``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        graph: ModelGraph,
        n_samples: int,
        activation_shapes: Mapping[str, Sequence[int]],
        input_shapes: Mapping[str, Sequence[int]],
        *,
        attrs: Mapping[str, Any] | None = None,
        input_links: Mapping[str, str] | None = None,
        positions: Mapping[str, Any] | None = None,
        compression: str | None = None,
        overwrite: bool = False,
        n_total_samples: int | None = None,
        calib_batch_size: int = 32,
        labels: ClassLabels | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}")
        self.n_total_samples = int(n_samples if n_total_samples is None else n_total_samples)
        if not 1 <= int(n_samples) <= self.n_total_samples:
            raise ValueError(f"kept samples ({n_samples}) must be between 1 and the samples fed "
                             f"({self.n_total_samples})")
        self.calib_batch_size = int(calib_batch_size)
        if labels is not None and len(labels) != self.n_total_samples:
            raise ValueError(f"{len(labels)} labels for {self.n_total_samples} samples")
        self._labels = labels
        self.path = os.path.abspath(os.fspath(path))
        folder = os.path.dirname(self.path)
        check_capture_destination(self.path, overwrite)
        self._overwrite = overwrite
        self.n_samples = int(n_samples)
        self._written = 0
        self._cancelled = False
        fd, self.temp_path = tempfile.mkstemp(
            prefix=temp_prefix(os.path.basename(self.path)), suffix=".tmp", dir=folder
        )
        os.close(fd)
        # mkstemp makes the file private (0600); a capture gets the usual mode, as open() would give it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.temp_path, 0o666 & ~umask)
        self._h5: h5py.File | None = None
        self._fd = -1
        self._raw: dict[str, tuple[int, int]] = {}  # dataset path -> (file offset, bytes per sample)
        try:
            self._h5 = h5py.File(self.temp_path, "w", locking=False)
            self._fd = os.open(self.temp_path, os.O_WRONLY)
            self._start(graph, activation_shapes, input_shapes, attrs or {}, input_links or {}, positions,
                        compression)
            self._h5.flush()  # a killed run leaves a file that opens and says complete=False
        except BaseException:
            self.abort()
            raise

    def _start(self, graph, activation_shapes, input_shapes, attrs, input_links, positions, compression) -> None:
        h5 = self._h5
        assert h5 is not None
        h5.attrs["format"] = FORMAT_NAME
        h5.attrs["version"] = FORMAT_VERSION
        h5.attrs["complete"] = False
        h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        h5.attrs["creator"] = f"qinspect {__version__}"
        h5.attrs["n_samples"] = self.n_samples
        h5.attrs["n_total_samples"] = self.n_total_samples
        h5.attrs["calib_batch_size"] = self.calib_batch_size
        self.set_attrs(attrs)
        h5.create_dataset("graph", data=graph.to_json(), dtype=h5py.string_dtype("utf-8"))
        options: dict[str, Any] = {}
        if compression == "lzf":
            options = {"compression": "lzf"}
        elif compression == "gzip":
            options = {"compression": "gzip", "compression_opts": 1}
        self._inputs: dict[str, h5py.Dataset] = {}
        group = h5.create_group("inputs", track_order=True)
        for name, shape in input_shapes.items():
            self._inputs[name] = self._create(group, name, shape, options)
        self._all_inputs: dict[str, h5py.Dataset] = {}
        if self.n_total_samples > self.n_samples:
            group = h5.create_group("all_inputs", track_order=True)
            for name, shape in input_shapes.items():
                self._all_inputs[name] = self._create(group, name, shape, options, self.n_total_samples)
        self._activations: dict[str, h5py.Dataset] = {}
        group = h5.create_group("activations", track_order=True)
        for name, shape in activation_shapes.items():
            self._activations[name] = self._create(group, name, shape, options)
        for layer, input_name in input_links.items():
            link = escape_name(layer)
            group[link] = h5py.SoftLink(f"/inputs/{escape_name(input_name)}")
        h5.create_group("weights", track_order=True)
        if positions is not None:
            h5.create_group("positions").attrs["json"] = json.dumps(positions)
        if self._labels is not None:
            stored = h5.create_dataset("labels", data=np.asarray(self._labels.values, dtype=np.int32))
            stored.attrs["classes"] = json.dumps(list(self._labels.classes))
            stored.attrs["origin"] = self._labels.origin

    def _create(self, group: h5py.Group, name: str, shape: Sequence[int], options: dict[str, Any],
                rows: int | None = None) -> h5py.Dataset:
        rows = self.n_samples if rows is None else rows
        shape = tuple(int(d) for d in shape)
        full = (rows, *shape)
        if not options:
            # Uncompressed: contiguous storage allocated now, never filled. Sample i of the layer is one
            # byte range at a fixed offset, so rows are written with os.pwrite, which (unlike h5py)
            # releases the GIL: the model computes the next batch while this one goes to disk.
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            ds = group.create_dataset(escape_name(name), shape=full, dtype=np.float32, dcpl=dcpl, fill_time="never")
            offset = ds.id.get_offset()
            if offset is not None and _HAS_PWRITE:
                self._raw[ds.name] = (int(offset), 4 * int(np.prod(shape, dtype=np.int64)))
        else:
            chunk_n = min(max(rows, 1), samples_per_chunk(shape))
            ds = group.create_dataset(
                escape_name(name), shape=full, dtype=np.float32,
                chunks=(chunk_n, *shape) if all(shape) and rows else None, **options,
            )
        ds.attrs["name"] = name
        return ds

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Set root attributes (non-scalar values are stored as JSON text)."""
        assert self._h5 is not None
        for key, value in attrs.items():
            if value is None:
                value = ""
            if not isinstance(value, (str, int, float, bool, np.integer, np.floating, np.bool_)):
                value = json.dumps(value)
            self._h5.attrs[key] = value

    def write_weights(self, source: WeightSource, layers: Sequence[str]) -> None:
        """Copy the weights of ``layers`` from ``source`` (float32, in the source's order)."""
        assert self._h5 is not None
        group = self._h5["weights"]
        for layer in layers:
            arrays = source.weights(layer)
            if not arrays:
                continue
            sub = group.create_group(escape_name(layer), track_order=True)
            sub.attrs["name"] = layer
            for short, array in arrays.items():
                sub.create_dataset(short, data=np.asarray(array, dtype=np.float32))

    def write_batch(
        self, start: int, inputs: Mapping[str, np.ndarray], activations: Mapping[str, np.ndarray]
    ) -> None:
        """Store samples ``start .. start+len`` of every input and activation given: rows below the kept
        count in ``/inputs`` and ``/activations``, every input row in ``/all_inputs`` (when it exists).
        Activations of samples past the kept ones may be left out."""
        stop = start + max([0, *(len(a) for a in inputs.values()), *(len(a) for a in activations.values())])
        if stop > self.n_total_samples:
            raise ValueError(f"batch {start}:{stop} beyond the {self.n_total_samples} samples of the capture")
        kept = max(0, min(stop, self.n_samples) - start)
        for name, array in inputs.items():
            if kept:
                self._put(self._inputs, name, start, array[:kept])
            if self._all_inputs:
                self._put(self._all_inputs, name, start, array)
        if kept:
            for name, array in activations.items():
                self._put(self._activations, name, start, array[:kept])
        self._written = max(self._written, stop)

    def write_stats(self, stats: Mapping[str, Any]) -> None:
        """Store ``/stats/<node>`` for each ``{node: LayerStats}`` (over all the samples fed)."""
        assert self._h5 is not None
        group = self._h5.require_group("stats")
        for name, layer_stats in stats.items():
            if layer_stats.n_samples != self.n_total_samples or layer_stats.batch_size != self.calib_batch_size:
                raise ValueError(f"{name}: statistics of {layer_stats.n_samples} samples in batches of "
                                 f"{layer_stats.batch_size}, the capture feeds {self.n_total_samples} in batches of "
                                 f"{self.calib_batch_size}")
            layer_stats.write(group.create_group(escape_name(name)))

    def _put(self, table: dict[str, h5py.Dataset], name: str, start: int, array: np.ndarray) -> None:
        ds = table[name]
        array = np.asarray(array, dtype=np.float32)
        stop = start + array.shape[0]
        if stop > ds.shape[0]:
            raise ValueError(f"batch {start}:{stop} beyond the {ds.shape[0]} rows of {ds.name}")
        if array.shape[1:] != ds.shape[1:]:
            raise ValueError(f"{name}: batch shape {array.shape[1:]} does not match {ds.shape[1:]}")
        raw = self._raw.get(ds.name)
        if raw is not None and array.size:
            offset, row_bytes = raw
            data = memoryview(np.ascontiguousarray(array)).cast("B")
            position, done = offset + start * row_bytes, 0
            while done < len(data):  # pwrite may write less than asked; in slices, so cancel() stops it soon
                if self._cancelled:
                    raise InterruptedError("capture cancelled")
                done += os.pwrite(self._fd, data[done:done + _WRITE_SLICE], position + done)
        else:
            ds[start:stop] = array

    def cancel(self) -> None:
        """Ask a write in progress (on another thread) to stop after its current slice; then abort()."""
        self._cancelled = True

    def commit(self) -> str:
        """Finish the file and move it to its destination (atomically). Returns the path."""
        assert self._h5 is not None, "already committed or aborted"
        if self._written != self.n_total_samples:
            raise ValueError(f"only {self._written} of {self.n_total_samples} samples were written")
        os.close(self._fd)
        self._fd = -1
        self._h5.attrs["complete"] = True
        self._h5.close()
        self._h5 = None
        # Checked again: what is at the destination may have changed while the model ran.
        check_capture_destination(self.path, self._overwrite)
        os.replace(self.temp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; the destination is not touched."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # noqa: BLE001 - closing a broken file must not hide the first error
                pass
            self._h5 = None
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# The writer's temporary file: ".<name>.<random>.tmp" beside the destination (tempfile.mkstemp).
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def unreadable_hdf5_message(path: str, exc: BaseException) -> str:
    """What to say about an HDF5 file h5py cannot open: a killed capture's temporary file is called what it is."""
    if _TEMP_NAME.match(os.path.basename(path)):
        return ("incomplete capture: the temporary file of a capture that was interrupted; it holds no usable "
                "data and can be deleted")
    return f"damaged or truncated HDF5 file ({first_line(exc)})"


def check_capture_destination(
    path: str | os.PathLike[str], overwrite: bool = False, inputs: Sequence[str | os.PathLike[str] | None] = ()
) -> None:
    """Refuse a capture destination qinspect may not write (QInspectError naming ``path``).

    Never one of ``inputs`` (the model, the input data), through symbolic or hard links too; never a
    link or a folder; an existing file only with ``overwrite``, and only when it is a qinspect capture
    (its root ``format`` marker says so). Anything else is refused whatever ``overwrite`` says.
    """
    path = os.fspath(path)
    if not path:
        raise QInspectError("the capture's file name (-o) is empty")
    if path.endswith(("/", os.sep)) or (os.altsep and path.endswith(os.altsep)):
        # "cap.h5/" names a folder; abspath would drop the slash and replace the file cap.h5
        raise QInspectError("ends with a folder separator: give the capture's file name", path)
    for source in inputs:
        if source and _same_file(path, os.fspath(source)):
            raise QInspectError(f"is one of the capture's inputs ({os.fspath(source)}): write the capture to a "
                                "new file", path)
        if source and os.path.isdir(source):
            inside = os.path.realpath(os.path.dirname(os.path.abspath(path)))
            folder = os.path.realpath(source)
            if inside == folder or inside.startswith(folder.rstrip(os.sep) + os.sep):
                raise QInspectError(f"is inside the input folder {os.fspath(source)}: qinspect adds nothing to an "
                                    "input; write the capture elsewhere", path)
    if os.path.islink(path):
        raise QInspectError("is a symbolic link: give a file name (qinspect never writes through a link)", path)
    if os.path.isdir(path):
        raise QInspectError("is a folder; give a file name for the capture", path)
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise QInspectError("the folder for the capture does not exist", path)
    if os.path.lexists(path):
        # what the file is decides the message: --force is offered only where it would be taken
        if not is_capture(path):
            raise QInspectError("exists and is not a qinspect capture: qinspect replaces only a capture it wrote, "
                                "even with --force; choose a new file name", path)
        if not overwrite:
            raise QInspectError("already exists; use --force to replace it", path)


def _same_file(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are the same file (same inode and device: links followed)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def is_capture(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is an HDF5 file with the capture format attribute (cheap check)."""
    path = Path(path)
    if not path.is_file() or not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r", locking=False) as h5:
            return _attr_value(h5.attrs.get("format")) == FORMAT_NAME
    except OSError:
        return False


def preprocess_mismatch(calib: Capture, evaluation: Capture) -> str | None:
    """A sentence when two captures' inputs were scaled differently (``capture --preprocess``), else None:
    the model then sees differently scaled inputs, and a coverage finding measures that, not the data."""
    a, b = (str(c.attrs.get("preprocess", "") or "") for c in (calib, evaluation))
    if not a or not b or a == b:
        return None
    return (f"the calibration capture's inputs were scaled with --preprocess {a} and the evaluation capture's "
            f"with {b}: the model sees differently scaled inputs in each, and coverage findings measure that "
            "difference; capture both with the preprocessing the model was trained with")
