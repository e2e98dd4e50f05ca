"""Keras 3 ``.keras`` archives read with zipfile and h5py only.

A ``.keras`` file is a zip holding ``config.json`` (the model config), ``metadata.json`` and
``model.weights.h5``. The weights file addresses layers by position, not by name::

    layers/<auto name>/vars/<i>                       a layer of the top model
    layers/<auto name>/layers/<auto name>/vars/<i>    a layer of a nested model

where ``<auto name>`` is the snake-case Python class name made unique in layer order
(``conv2d``, ``conv2d_1``, ``batch_normalization``, ...), counting every layer of the model (a
Sequential's InputLayer excepted) but not Keras operations such as ``x + 3``. ``vars/<i>`` are in
creation order, which :func:`qinspect.io.keras_config.expected_weights` names per class.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.graph import NEST_SEP, ModelGraph, WeightSource, alias_shared_weights
from qinspect.io.h5_scope import refuse_outside_data
from qinspect.io.keras_config import (
    ConfigError,
    expected_weights,
    graph_from_config,
    is_keras_op,
    python_class_name,
    snake_case,
    update_container_summaries,
)

WEIGHTS_ENTRY = "model.weights.h5"


class KerasV3Model(WeightSource):
    """A Keras 3 ``.keras`` model: graph from ``config.json``, weights from ``model.weights.h5``."""

    kind = "keras-v3"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._tmp: str | None = None
        self._h5: h5py.File | None = None
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = set(archive.namelist())
                if "config.json" not in names:
                    raise QInspectError("zip file without config.json: not a Keras .keras model", self.path)
                config = _read_json(archive, "config.json", self.path)
                self.keras_version = ""
                if "metadata.json" in names:
                    meta = _read_json(archive, "metadata.json", self.path)
                    self.keras_version = str(meta.get("keras_version", "")) if isinstance(meta, dict) else ""
                try:
                    self.graph: ModelGraph = graph_from_config(config, source=self.path, source_format=self.kind)
                except ConfigError as exc:
                    raise QInspectError(f"unreadable Keras model config: {exc}", self.path) from exc
                if WEIGHTS_ENTRY in names:
                    _check_expansion(archive.getinfo(WEIGHTS_ENTRY), self.path)
                    # h5py needs a seekable real file; seeking inside a zip entry re-reads it.
                    self._tmp = tempfile.mkdtemp(prefix="qinspect-keras-")
                    # Removed by close(), or when the object is collected or the interpreter exits (a
                    # caller that raised before closing it must not leave the copy in /tmp).
                    weakref.finalize(self, shutil.rmtree, self._tmp, True)
                    target = Path(self._tmp) / WEIGHTS_ENTRY
                    with archive.open(WEIGHTS_ENTRY) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    self._h5 = h5py.File(target, "r", locking=False)
                    refuse_outside_data(self._h5, self.path)  # its weights must be in the archive itself
                else:
                    self.graph.warnings.append(f"the archive holds no {WEIGHTS_ENTRY}: no weights")
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as exc:
            self.close()
            raise QInspectError(f"damaged .keras archive ({exc})", self.path) from exc
        except BaseException:
            self.close()
            raise
        self._map: dict[str, list[tuple[str, str]]] = {}
        if self._h5 is not None:
            self._map = _map_weights(config, self.graph, self._h5)
            for leaf, items in self._map.items():
                shapes = {short: [int(d) for d in self._h5[p].shape] for short, p in items}
                self.graph[leaf].weight_shapes = shapes
                self.graph[leaf].params = int(sum(int(np.prod(s)) for s in shapes.values()))
            update_container_summaries(self.graph)

    @classmethod
    def open(cls, path: str | Path) -> KerasV3Model:
        """Open a ``.keras`` archive (raises QInspectError for a damaged or foreign zip)."""
        return cls(path)

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        """The arrays of one leaf layer (float32, Keras layout), keyed by short weight name."""
        if layer not in self.graph:
            raise KeyError(f"no layer {layer!r} in {self.path}")
        if self._h5 is None:
            return {}
        return {s: np.asarray(self._h5[p][()], dtype=np.float32) for s, p in self._map.get(layer, [])}

    def close(self) -> None:
        """Close the weights file and remove its extracted copy."""
        if self._h5 is not None and self._h5.id.valid:
            self._h5.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> KerasV3Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A model config of this size is already absurd (big models have a few MB); larger is refused unread.
MAX_JSON_BYTES = 64 << 20
# Weights compress little (float noise); an entry expanding more than this is refused before extraction.
MAX_WEIGHTS_RATIO = 200


def _read_json(archive: zipfile.ZipFile, name: str, path: str) -> Any:
    size = archive.getinfo(name).file_size
    if size > MAX_JSON_BYTES:
        raise QInspectError(f"{name} in the archive declares {size / (1 << 20):.0f} MiB; a Keras model's is at most "
                            f"{MAX_JSON_BYTES >> 20} MiB (damaged or forged)", path)
    try:
        return json.loads(archive.read(name))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise QInspectError(f"{name} in the archive is not valid JSON ({exc})", path) from exc


def _check_expansion(info: zipfile.ZipInfo, path: str) -> None:
    """Refuse a weights entry that would expand far beyond its stored size (a zip bomb filling the disk)."""
    if info.file_size > (1 << 20) and info.file_size > MAX_WEIGHTS_RATIO * max(info.compress_size, 1):
        raise QInspectError(f"{info.filename} in the archive declares {info.file_size:,} bytes from "
                            f"{info.compress_size:,} stored: not weights (damaged or forged)", path)


def _map_weights(config: dict[str, Any], graph: ModelGraph, h5: h5py.File) -> dict[str, list[tuple[str, str]]]:
    mapping: dict[str, list[tuple[str, str]]] = {}
    _walk(config, "", "", graph, h5, mapping)
    alias_shared_weights(graph, mapping)
    return mapping


def _walk(
    model_cfg: dict[str, Any],
    prefix: str,
    h5_prefix: str,
    graph: ModelGraph,
    h5: h5py.File,
    mapping: dict[str, list[tuple[str, str]]],
) -> None:
    cfg = model_cfg.get("config")
    subs = cfg if isinstance(cfg, list) else (cfg or {}).get("layers", [])
    sequential = python_class_name(model_cfg) == "Sequential"
    used: dict[str, int] = {}
    for sub in subs:
        cls = python_class_name(sub)
        if is_keras_op(sub) or (sequential and cls == "InputLayer"):
            continue
        key = snake_case(cls)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        name = sub.get("name") or (sub.get("config") or {}).get("name")
        full = prefix + str(name)
        path = f"{h5_prefix}layers/{key}"
        if full not in graph:
            continue  # an inner InputLayer aliased away
        layer = graph[full]
        if layer.is_container:
            _walk(sub, full + NEST_SEP, path + "/", graph, h5, mapping)
            continue
        group = h5.get(f"{path}/vars")
        if not isinstance(group, h5py.Group) or not len(group):
            group = h5.get(f"{path}/cell/vars")  # a recurrent layer keeps its weights in its cell
        if not isinstance(group, h5py.Group) or not len(group):
            continue
        indices = sorted(int(k) for k in group.keys() if k.isdigit())
        spec = expected_weights(layer.class_name, layer.config)
        if spec is not None and len(spec) == len(indices):
            shorts = [s for s, _ in spec]
        else:
            shorts = [f"var{i}" for i in indices]
            if spec is not None:
                graph.warnings.append(
                    f"layer {full!r} stores {len(indices)} weights, {len(spec)} expected: named by position"
                )
        mapping[full] = [(s, f"{group.name}/{i}") for s, i in zip(shorts, indices, strict=True)]
