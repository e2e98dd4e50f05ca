"""Keras HDF5 model files (``model.save("m.h5")``, Keras 2 / tf_keras and Keras 3) read with h5py only.

Layout (both Keras generations)::

    /                       attrs: model_config (JSON), keras_version, backend
    /model_weights          attrs: layer_names (top-level layers in order)
    /model_weights/<layer>  attrs: weight_names, e.g. ["conv1/kernel:0", "conv1/bias:0"]
    /model_weights/<layer>/<weight_name>   the array (the weight name is the path under the group)

A nested model is one top-level layer: its group holds the weights of all its layers, trainable ones
first (Keras' ``layer.trainable_weights + layer.non_trainable_weights``). They are placed on the
nested leaves by that order and checked against the stored names; when the order does not fit
(custom layers, frozen parts saved oddly) they are placed by the layer name in the weight's name.

Opening reads only attributes and dataset shapes; ``weights(layer)`` reads one layer's arrays.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from qinspect.errors import QInspectError, first_line
from qinspect.io.graph import NEST_SEP, Layer, ModelGraph, WeightSource, alias_shared_weights
from qinspect.io.h5_scope import refuse_outside_data
from qinspect.io.keras_config import (
    ConfigError,
    expected_weights,
    graph_from_config,
    short_weight_name,
    update_container_summaries,
)

# leaf name -> [(short name, HDF5 dataset path)] in the file's order
WeightMap = dict[str, list[tuple[str, str]]]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _names(attr: Any) -> list[str]:
    """An HDF5 string-array attribute (``weight_names``/``layer_names``) as str; empty arrays are float."""
    if attr is None:
        return []
    arr = np.asarray(attr)
    if arr.size == 0 or arr.dtype.kind == "f":
        return []
    return [_text(v) for v in arr.reshape(-1)]


def _named_by_spec(shorts: list[str], layer: Layer) -> list[str]:
    """Stored weight names, with Keras 3's auto-names (``variable``, ``variable_3``: its LayerScale's one weight
    in a ``.h5``) replaced, in order, by the names the layer's weight spec gives (``gamma``), when the
    counts agree; other names as stored."""
    auto = [re.fullmatch(r"variable(_\d+)?", name) is not None for name in shorts]
    if any(auto):
        spec = expected_weights(layer.class_name, layer.config)
        if spec is not None and len(spec) == len(shorts):
            return [name for name, _ in spec]
    return _unique(shorts)


def _unique(names: list[str]) -> list[str]:
    """Short names made unique in order (a custom layer may create two weights named ``w``)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
        out.append(name)
    return out


class KerasH5Model(WeightSource):
    """A Keras ``.h5`` model: its graph from ``model_config`` and its weights from ``model_weights``."""

    kind = "keras-h5"

    def __init__(self, path: str | Path, h5: h5py.File | None = None) -> None:
        self.path = str(path)
        try:
            self._file = h5 if h5 is not None else h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            raise QInspectError(f"cannot read HDF5 file ({first_line(exc)})", self.path) from exc
        try:
            refuse_outside_data(self._file, self.path)  # before anything reads an object another file holds
            self.graph = self._read_graph()
            self._map = self._map_weights()
        except Exception:
            self._file.close()
            raise
        self._attach_shapes()

    @classmethod
    def open(cls, path: str | Path) -> KerasH5Model:
        """Open a Keras ``.h5`` model file (raises QInspectError for anything else)."""
        return cls(path)

    # -- graph

    def _read_graph(self) -> ModelGraph:
        f = self._file
        raw = f.attrs.get("model_config")
        if raw is None:
            if "model_weights" in f or "layer_names" in f.attrs:
                raise QInspectError(
                    "has weights but no model config (saved with save_weights?); "
                    "qinspect needs a model saved with model.save()",
                    self.path,
                )
            raise QInspectError("HDF5 file is not a Keras model (no model_config attribute)", self.path)
        try:
            graph = graph_from_config(_text(raw), source=self.path, source_format=self.kind)
        except ConfigError as exc:
            raise QInspectError(f"unreadable Keras model config: {exc}", self.path) from exc
        return graph

    # -- weights

    def _weights_root(self) -> h5py.Group:
        return self._file["model_weights"] if "model_weights" in self._file else self._file

    def _map_weights(self) -> WeightMap:
        root = self._weights_root()
        mapping: WeightMap = {}
        for layer in self.graph.children(None):
            if layer.shares:
                continue  # a later call of a shared layer: its weights are its first call's
            # The group is named after the whole layer name; a "/" in it (tf_keras' MobileNetV3 has
            # "expanded_conv/squeeze_excite/Conv_1") is an HDF5 path of nested groups, which
            # root[name] follows. The name is never cut to its last part.
            group = _layer_group(root, layer.name)
            if group is None:
                spec = None if layer.is_container else expected_weights(layer.class_name, layer.config)
                if layer.is_container or spec:
                    self.graph.warnings.append(f"no weights stored for layer {layer.name!r}")
                continue
            stored = [n for n in _names(group.attrs.get("weight_names")) if n in group]
            paths = [f"{group.name}/{n}" for n in stored]
            if not layer.is_container:
                shorts = _named_by_spec([short_weight_name(n, layer.class_name) for n in stored], layer)
                mapping[layer.name] = list(zip(shorts, paths, strict=True))
            else:
                mapping.update(self._distribute(layer, stored, paths))
        alias_shared_weights(self.graph, mapping)
        return mapping

    def _distribute(self, container: Layer, stored: list[str], paths: list[str]) -> WeightMap:
        """Place a nested model's weights on its leaves: by Keras' order, else by stored name."""
        order = _saved_order(self.graph, container)
        if order is not None and len(order) == len(stored):
            placed: WeightMap = {}
            ok = True
            for (leaf, short), name, path in zip(order, stored, paths, strict=True):
                if short_weight_name(name, self.graph[leaf].class_name) != short:
                    ok = False
                    break
                placed.setdefault(leaf, []).append((short, path))
            if ok:
                return {leaf: _sorted_like_spec(self.graph[leaf], items) for leaf, items in placed.items()}
        by_name = _place_by_name(self.graph, container, stored, paths)
        if by_name is not None:
            return by_name
        self.graph.warnings.append(
            f"weights of nested model {container.name!r} could not be matched to its layers; they are not shown"
        )
        return {}

    def _attach_shapes(self) -> None:
        for name, items in self._map.items():
            layer = self.graph[name]
            shapes = {short: [int(d) for d in self._file[path].shape] for short, path in items}
            layer.weight_shapes = shapes
            layer.params = int(sum(int(np.prod(s)) for s in shapes.values()))
        update_container_summaries(self.graph)

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        """The arrays of one leaf layer (float32, Keras layout), keyed by short weight name."""
        if layer not in self.graph:
            raise KeyError(f"no layer {layer!r} in {self.path}")
        out = {}
        for short, path in self._map.get(layer, []):
            out[short] = np.asarray(self._file[path][()], dtype=np.float32)
        return out

    def close(self) -> None:
        """Close the HDF5 file."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> KerasH5Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def _layer_group(root: h5py.Group, name: str) -> h5py.Group | None:
    """The weight group Keras wrote for a top-level layer ``name`` (None when there is none)."""
    try:
        group = root.get(name) if name and not name.startswith("/") else None
    except (KeyError, ValueError):  # a name h5py cannot follow as a path
        return None
    return group if isinstance(group, h5py.Group) else None


def _saved_order(graph: ModelGraph, container: Layer) -> list[tuple[str, str]] | None:
    """The (leaf, short name) order Keras saves a nested model's weights in; None if unknowable."""
    split = _trainable_split(graph, container)
    if split is None:
        return None
    trainable, frozen = split
    return trainable + frozen


def _trainable_split(graph: ModelGraph, container: Layer) -> tuple[list[tuple[str, str]], list[tuple[str, str]]] | None:
    """(trainable weights, non-trainable weights) of a container, each in Keras' gathering order."""
    trainable: list[tuple[str, str]] = []
    frozen: list[tuple[str, str]] = []
    container_trainable = bool(container.config.get("trainable", True))
    for child_name in container.config.get("layer_names", []):
        full = container.name + NEST_SEP + child_name
        if full not in graph:
            continue  # an inner InputLayer, aliased away
        child = graph[full]
        if child.is_container:
            sub = _trainable_split(graph, child)
            if sub is None:
                return None
            ctw, cntw = sub
        else:
            spec = expected_weights(child.class_name, child.config)
            if spec is None:
                return None
            if child.config.get("trainable", True):
                ctw = [(full, s) for s, t in spec if t]
                cntw = [(full, s) for s, t in spec if not t]
            else:
                ctw, cntw = [], [(full, s) for s, _ in spec]
        if container_trainable:
            trainable += ctw
            frozen += cntw
        else:
            frozen += ctw + cntw
    return trainable, frozen


def _sorted_like_spec(layer: Layer, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A leaf's weights in its creation order (a nested model stores trainable ones first)."""
    spec = expected_weights(layer.class_name, layer.config) or []
    rank = {short: i for i, (short, _) in enumerate(spec)}
    return sorted(items, key=lambda item: rank.get(item[0], len(rank)))


def _place_by_name(graph: ModelGraph, container: Layer, stored: list[str], paths: list[str]) -> WeightMap | None:
    """Match ``"inner/conv/kernel:0"`` to the leaf whose path ends with ``conv``; None if any is unmatched."""
    leaves = [
        layer for layer in graph.leaves() if layer.name.startswith(container.name + NEST_SEP) and not layer.shares
    ]
    placed: WeightMap = {}
    for name, path in zip(stored, paths, strict=True):
        scope = name.split("/")[:-1]
        scores = []
        for leaf in leaves:
            rel = leaf.name[len(container.name) + 1 :].split(NEST_SEP)
            n = 0
            while n < min(len(rel), len(scope)) and rel[-1 - n] == scope[-1 - n]:
                n += 1
            if n:
                scores.append((n, leaf))
        top = max((n for n, _ in scores), default=0)
        winners = [leaf for n, leaf in scores if n == top]
        if len(winners) != 1:
            return None  # no leaf, or several equally good: do not guess
        best = winners[0]
        placed.setdefault(best.name, []).append((short_weight_name(name, best.class_name), path))
    return {leaf: _sorted_like_spec(graph[leaf], items) for leaf, items in placed.items()}
