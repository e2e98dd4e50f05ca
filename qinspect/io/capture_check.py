"""Check a capture's structure against its graph when it is opened, before any tensor is read.

A capture is a file from anywhere: it may be damaged, truncated, edited by hand or built to hurt.
:func:`check_capture` reads metadata only (attributes, dataset shapes, dtypes, storage sizes) and
refuses, with one line naming the file, whatever would later crash a command or yield wrong numbers:

- a graph naming a layer it does not hold, or with a cycle (:func:`check_graph`);
- ``n_samples`` that is not a positive integer, or that the tensors do not hold;
- an input, activation or weight that is not a float array of the shape the graph gives it;
- a missing weight;
- a tensor declaring more bytes than the file stores (a 10^6 x 10^6 weight in a 16 KB file would
  otherwise be read into a 3.6 TiB array);
- format 1.2's parts (:func:`check_kept_subset`): ``n_total_samples`` below ``n_samples``, a
  ``calib_batch_size`` below 1, ``/all_inputs`` missing or not ``(n_total_samples, ...)`` floats, and
  ``/stats`` arrays of the wrong kind or size (per-batch arrays of ``ceil(N / B)``, per-channel ones of
  the node's channels, histograms of at most 65536 bins).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.config_check import check_layer_configs
from qinspect.io.graph import ModelGraph


def check_graph(graph: ModelGraph, path: str) -> None:
    """Refuse a graph with a field of the wrong type, edges naming missing layers, or a cycle."""
    check_types(graph, path)
    names = {layer.name for layer in graph.layers}
    if len(names) != len(graph.layers):
        seen: set[str] = set()
        twice = next(layer.name for layer in graph.layers if layer.name in seen or seen.add(layer.name))
        raise QInspectError(f"damaged capture: the graph names layer {twice!r} twice", path)
    for layer in graph.layers:
        for source in layer.inbound:
            if source not in names:
                raise QInspectError(f"damaged capture: layer {layer.name!r} reads layer {source!r}, which is not in "
                                    "the graph", path)
        if layer.parent is not None and layer.parent not in names:
            raise QInspectError(f"damaged capture: layer {layer.name!r} is nested in {layer.parent!r}, which is not "
                                "in the graph", path)
    for kind, listed in (("input", graph.inputs), ("output", graph.outputs)):
        if not listed:  # a model has at least one of each: there is nothing to feed or to measure otherwise
            raise QInspectError(f"damaged capture: the graph lists no model {kind}", path)
        for name in listed:
            if name not in names:
                raise QInspectError(f"damaged capture: model {kind} {name!r} is not a layer of the graph", path)
    cycle = find_cycle(graph)
    if cycle:
        raise QInspectError(f"damaged capture: the graph has a cycle ({' -> '.join(cycle)}); a model's layers "
                            "cannot read their own output", path)
    check_layer_configs(graph.leaves(), path)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_dims(v: Any) -> bool:
    """A shape: a list of ints and None, or (a multi-output layer) a list of such lists."""
    return isinstance(v, list) and all(d is None or _is_int(d) or _is_dims(d) for d in v)


# Layer field -> (test, what it must be). Every field a graph JSON gives is checked before use.
_LAYER_FIELDS = {
    "name": (_is_str, "a name"),
    "class_name": (_is_str, "a class name"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "inbound": (lambda v: isinstance(v, list) and all(map(_is_str, v)), "a list of layer names"),
    "call_kwargs": (lambda v: isinstance(v, dict), "an object"),
    "output_shape": (lambda v: v is None or _is_dims(v), "a shape"),
    "params": (lambda v: _is_int(v) and v >= 0, "a count"),
    "parent": (lambda v: v is None or _is_str(v), "a layer name"),
    "weight_shapes": (lambda v: isinstance(v, dict) and all(
        _is_str(k) and isinstance(d, list) and all(_is_int(x) and x >= 0 for x in d) for k, d in v.items()),
        "an object of shapes"),
    "is_container": (lambda v: isinstance(v, bool), "true or false"),
    "runnable": (lambda v: isinstance(v, bool), "true or false"),
    "note": (_is_str, "text"),
}


def check_types(graph: ModelGraph, path: str) -> None:
    """Refuse a graph whose fields have the wrong JSON types (a layer's class_name 7, inbound "conv")."""
    if not _is_str(graph.name) or not all(map(_is_str, graph.inputs)) or not all(map(_is_str, graph.outputs)):
        raise QInspectError("damaged capture: the graph's name, inputs or outputs are not names", path)
    for index, layer in enumerate(graph.layers):
        for field, (test, meaning) in _LAYER_FIELDS.items():
            value = getattr(layer, field)
            if not test(value):
                who = repr(layer.name) if _is_str(layer.name) else f"#{index}"
                raise QInspectError(f"damaged capture: layer {who} has {field} = {_short(value)}, not {meaning}", path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def find_cycle(graph: ModelGraph) -> list[str]:
    """One cycle of the graph's edges as layer names (first repeated at the end), or [] when there is none."""
    inbound = {layer.name: [s for s in layer.inbound if s in graph] for layer in graph.layers}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in inbound:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        state[start] = 1
        while stack:  # iterative depth-first search: a long chain must not hit the recursion limit
            node, i = stack[-1]
            if i < len(inbound[node]):
                stack[-1] = (node, i + 1)
                nxt = inbound[node][i]
                if state.get(nxt) == 1:
                    return [*path[path.index(nxt):], nxt][::-1]
                if not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return []


def check_samples(value: Any, path: str) -> int:
    """``n_samples`` as an int; refuse a string, a bool, a fraction or a count below 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise QInspectError(f"damaged capture: n_samples is {value!r}, not a whole number", path)
    if value < 1:
        raise QInspectError(f"damaged capture: n_samples = {int(value)}: a capture holds at least one sample", path)
    return int(value)


def check_storage(dsid: h5py.h5d.DatasetID, what: str, path: str, file_size: int | None = None) -> None:
    """Refuse a dataset (its low-level id) declaring more data than the file stores, before anything reads it.
    ``file_size``: the file's size when the caller knows it (one stat for many datasets)."""
    shape, itemsize = dsid.shape or (), dsid.get_type().get_size()
    declared = math.prod(shape) * itemsize  # exact Python ints: no overflow for forged shapes
    if declared == 0:
        return
    stored = int(dsid.get_storage_size())
    dcpl = dsid.get_create_plist()
    if dcpl.get_layout() != h5py.h5d.CHUNKED:
        offset = dsid.get_offset()
        size = os.path.getsize(path) if file_size is None else file_size
        if stored < declared or (offset is not None and offset + declared > size):
            raise QInspectError(f"damaged capture: {what} declares {_human(declared)} and the file holds "
                                f"{_human(min(stored, max(0, size - (offset or 0))))} of it (truncated or forged)",
                                path)
        return
    chunk = dcpl.get_chunk()
    chunks = math.prod(math.ceil(d / c) for d, c in zip(shape, chunk, strict=True))
    # Every chunk of a complete capture is written; a stored chunk takes at least one byte, and an
    # unfiltered one its full size.
    needed = chunks * math.prod(chunk) * itemsize if not dcpl.get_nfilters() else chunks
    if stored < min(needed, declared):
        raise QInspectError(f"damaged capture: {what} declares {_human(declared)} in {chunks} chunk(s) and the file "
                            f"holds {_human(stored)} (truncated or forged)", path)


def check_tensor(oid: Any, what: str, expected: Sequence[int | None] | None, n_samples: int | None,
                 path: str, file_size: int | None = None) -> tuple[int, ...]:
    """Refuse an HDF5 object (its low-level id) that is not a float array of the expected shape (None: any
    size on that axis); return its shape. Low-level ids: the high-level wrappers cost ~10x per object."""
    are, have = ("are", "have") if what.startswith("activations") else ("is", "has")
    if isinstance(oid, h5py.h5g.GroupID):
        raise QInspectError(f"damaged capture: {what} {are} a group, not an array", path)
    if not isinstance(oid, h5py.h5d.DatasetID):
        raise QInspectError(f"damaged capture: {what} {are} not an array", path)
    shape = tuple(int(d) for d in (oid.shape or ()))
    if expected is not None:
        want = tuple(expected)
        if len(shape) == len(want) and n_samples is not None and shape[0] != n_samples and _fits(shape[1:], want[1:]):
            raise QInspectError(f"damaged capture: n_samples = {n_samples} but {what} {have} {shape[0]} rows", path)
        if len(shape) != len(want) or not _fits(shape, want):
            raise QInspectError(f"damaged capture: {what} {have} shape {_fmt(shape)}; the graph says {_fmt(want)}",
                                path)
    if not isinstance(oid.get_type(), h5py.h5t.TypeFloatID):
        raise QInspectError(f"damaged capture: {what} {have} dtype {oid.dtype}; a capture stores float32", path)
    check_storage(oid, what, path, file_size)
    return shape


def check_capture(h5: h5py.File, graph: ModelGraph, n_samples: int, path: str, escape: Any, unescape: Any) -> None:
    """Check the tensors of an opened capture against its graph (metadata only). ``escape``/``unescape``:
    layer name <-> HDF5 link name (``capture_file.escape_name`` / ``unescape_name``)."""
    size = os.path.getsize(path)
    groups = {}
    for name in ("inputs", "activations", "weights"):
        group = h5.get(name)
        if not isinstance(group, h5py.Group):
            raise QInspectError(f"damaged capture: /{name} is missing or not a group", path)
        groups[name] = group
    for name in graph.inputs:
        link = escape(name)
        if link in groups["inputs"]:
            check_tensor(_get(groups["inputs"], link, f"input {name!r}", path), f"input {name!r}",
                         _expected(graph, name, n_samples), n_samples, path, size)
    for link in groups["activations"]:
        layer = unescape(link)
        if layer not in graph:
            continue  # shown last, never matched to a layer
        what = f"activations of layer {layer!r}"
        check_tensor(_get(groups["activations"], link, what, path), what, _expected(graph, layer, n_samples),
                     n_samples, path, size)
    for layer in graph.leaves():
        if not layer.weight_shapes or layer.shares:
            continue  # a later call of a shared layer: its weights are its first call's, checked there
        stored = groups["weights"].get(escape(layer.name))
        for short, shape in layer.weight_shapes.items():
            what = f"weight {short!r} of layer {layer.name!r}"
            if not isinstance(stored, h5py.Group) or short not in stored:
                raise QInspectError(f"damaged capture: no weight {short!r} for layer {layer.name!r} (the graph "
                                    f"declares shape {_fmt(tuple(shape))})", path)
            oid = _get(stored, short, what, path)
            got = tuple(oid.shape or ()) if isinstance(oid, h5py.h5d.DatasetID) else None
            if got != tuple(shape):
                raise QInspectError(f"damaged capture: {what} has shape {'a group' if got is None else _fmt(got)}; "
                                    f"the graph says {_fmt(tuple(shape))}", path)
            check_tensor(oid, what, None, None, path, size)
    check_kept_subset(h5, graph, n_samples, path, escape, unescape, size)


def _count_attr(attrs: Any, key: str, default: int, least: int, path: str) -> int:
    value = attrs.get(key, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < least:
        shown = int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) \
            else repr(value)
        raise QInspectError(f"damaged capture: {key} = {shown}; it must be a whole number >= {least}", path)
    return int(value)


def check_kept_subset(h5: h5py.File, graph: ModelGraph, n_samples: int, path: str, escape: Any, unescape: Any,
                      size: int | None = None) -> None:
    """Format 1.2: every sample's inputs (``/all_inputs``) and statistics (``/stats``) against the graph
    and the root counts, from metadata only."""
    total = _count_attr(h5.attrs, "n_total_samples", n_samples, n_samples, path)
    batch = _count_attr(h5.attrs, "calib_batch_size", 32, 1, path)
    every = h5.get("all_inputs")
    if total > n_samples and not isinstance(every, h5py.Group):
        raise QInspectError(f"damaged capture: n_total_samples = {total} but /all_inputs is missing", path)
    if isinstance(every, h5py.Group):
        for name in graph.inputs:
            what = f"every-sample input {name!r}"
            if escape(name) not in every:
                raise QInspectError(f"damaged capture: /all_inputs has no {name!r}", path)
            check_tensor(_get(every, escape(name), what, path), what, _expected(graph, name, total), total, path, size)
    stats = h5.get("stats")
    if stats is None:
        return
    if not isinstance(stats, h5py.Group):
        raise QInspectError("damaged capture: /stats is not a group", path)
    for link in stats:
        node = unescape(link)
        if node not in graph:
            continue  # never matched to a node
        group = stats.get(link)
        if not isinstance(group, h5py.Group):
            raise QInspectError(f"damaged capture: statistics of {node!r} are not a group", path)
        shape = graph[node].output_shape
        channels = shape[-1] if shape and isinstance(shape[-1], int) and not isinstance(shape[-1], bool) else None
        bins = _stats_array(group, "hist_bins", h5py.h5t.TypeIntegerID, None, node, path, size)
        sizes = {"batch_min": -(-total // batch), "batch_max": -(-total // batch), "channel_min": channels,
                 "channel_max": channels, "hist_counts": bins}
        for key, length in sizes.items():
            kind = h5py.h5t.TypeIntegerID if key == "hist_counts" else h5py.h5t.TypeFloatID
            _stats_array(group, key, kind, length, node, path, size)
        for key in ("count", "nonfinite"):
            _count_attr(group.attrs, key, -1, 0, path)


def _stats_array(group: h5py.Group, key: str, kind: type, length: int | None, node: str, path: str,
                 size: int | None) -> int:
    """Refuse a ``/stats/<node>/<key>`` that is not a 1-D array of ``kind`` and ``length`` (None: any, up
    to 65536); its length."""
    what = f"statistics {key} of {node!r}"
    if key not in group:
        raise QInspectError(f"damaged capture: no {what}", path)
    oid = _get(group, key, what, path)
    shape = tuple(oid.shape or ()) if isinstance(oid, h5py.h5d.DatasetID) else None
    if shape is None or len(shape) != 1 or not isinstance(oid.get_type(), kind):
        kind_name = "float" if kind is h5py.h5t.TypeFloatID else "integer"
        raise QInspectError(f"damaged capture: {what} is not a 1-D {kind_name} array", path)
    if (length is not None and shape[0] != length) or (shape[0] > 1 << 16 and key.startswith("hist")):
        want = length if length is not None else "at most 65536"
        raise QInspectError(f"damaged capture: {what} has {shape[0]} entries; expected {want}", path)
    check_storage(oid, what, path, size)
    return int(shape[0])


def _get(group: h5py.Group, link: str, what: str, path: str) -> Any:
    """The low-level id of ``group/link`` (soft links followed)."""
    try:
        return h5py.h5o.open(group.id, link.encode("utf-8"))
    except (KeyError, OSError, RuntimeError):  # a dangling soft link, damaged metadata
        raise QInspectError(f"damaged capture: cannot read {what}", path) from None


def _expected(graph: ModelGraph, layer: str, n_samples: int) -> tuple[int | None, ...] | None:
    """``(n_samples, *output shape)`` of a layer, or None when the graph does not give one flat shape."""
    shape = graph[layer].output_shape
    if not shape or not all(d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in shape):
        return None
    return (n_samples, *shape[1:])


def _fits(found: Sequence[int], want: Sequence[int | None]) -> bool:
    return all(w is None or f == w for f, w in zip(found, want, strict=True))


def _fmt(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
