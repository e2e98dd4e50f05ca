"""TensorFlow SavedModel folders (written by tf_keras ``model.save(dir)``) as a ModelSource.

Nothing in the folder is executed or deserialized as Keras objects (a Lambda's code stays inert):

* the graph comes from ``keras_metadata.pb``, whose root node holds the model's config (the same
  JSON a ``.h5`` stores), through :func:`qinspect.io.keras_config.graph_from_config`;
* the weights come from the variables checkpoint: the checkpoint's object graph leads from the
  root, along each layer's ``node_path`` in the metadata (``root.layer_with_weights-2.layer-1``),
  to the layer's variables (``kernel``, ``bias``, ...) and their checkpoint keys.

TensorFlow is needed only to parse these protobufs and read the checkpoint; this module is the
only io-like place allowed to import it (``qinspect.capture``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.graph import NEST_SEP, ModelGraph, WeightSource, alias_shared_weights
from qinspect.io.keras_config import (
    ConfigError,
    expected_weights,
    graph_from_config,
    update_container_summaries,
)


class SavedModelSource(WeightSource):
    """A Keras SavedModel folder read without running it."""

    kind = "savedmodel"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        folder = Path(path)
        meta_file = folder / "keras_metadata.pb"
        if not meta_file.is_file():
            raise QInspectError(
                "SavedModel without keras_metadata.pb: not a Keras model saved by model.save() (Keras 3's "
                "model.export() writes serving functions only, without the layers); qinspect reads Keras models: "
                "save it with model.save('model.keras')",
                self.path,
            )
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter is not for users
        try:
            from qinspect.capture.tf_logs import import_tensorflow_quietly

            import_tensorflow_quietly()
            import tensorflow as tf
            from tensorflow.core.protobuf import trackable_object_graph_pb2
        except ImportError as exc:
            from qinspect.extras import missing_message

            raise QInspectError(missing_message("reading a SavedModel", "capture", exc.name), self.path) from None
        nodes = _metadata_nodes(meta_file, self.path)
        root = nodes.get("root")
        if not root or "config" not in root:
            raise QInspectError("keras_metadata.pb holds no model config", self.path)
        try:
            self.graph: ModelGraph = graph_from_config(
                {"class_name": root.get("class_name", "Functional"), "config": root["config"]},
                source=self.path,
                source_format=self.kind,
            )
        except ConfigError as exc:
            raise QInspectError(f"unreadable Keras model config: {exc}", self.path) from exc

        try:
            self._reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
            object_graph = trackable_object_graph_pb2.TrackableObjectGraph()
            object_graph.ParseFromString(self._reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
        except Exception as exc:  # TF raises many types for a missing or damaged checkpoint
            raise QInspectError(f"cannot read the SavedModel's variables ({_first_line(exc)})", self.path) from exc

        self._map: dict[str, list[tuple[str, str]]] = {}
        shapes = self._reader.get_variable_to_shape_map()
        for node_path, full in _layer_paths(nodes).items():
            if full not in self.graph or self.graph[full].is_container:
                continue
            layer = self.graph[full]
            found = _variables_at(object_graph, node_path)
            if found is None:
                self.graph.warnings.append(f"no variables found for layer {full!r}")
                continue
            spec = expected_weights(layer.class_name, layer.config) or []
            rank = {short: i for i, (short, _) in enumerate(spec)}
            if rank and rank.keys() <= {short for short, _ in found}:
                # the layer's own weights; a SavedModel also tracks state Keras neither saves in .h5 nor
                # counts (Normalization's adapt_mean and adapt_variance)
                found = [item for item in found if item[0] in rank]
            found.sort(key=lambda item: rank.get(item[0], len(rank)))
            self._map[full] = found
            layer.weight_shapes = {short: [int(d) for d in shapes[key]] for short, key in found}
            layer.params = int(sum(int(np.prod(s)) for s in layer.weight_shapes.values()))
        alias_shared_weights(self.graph, self._map)  # later calls of a shared layer read its first call's
        update_container_summaries(self.graph)

    def weights(self, layer: str) -> dict[str, np.ndarray]:
        """The arrays of one leaf layer (float32, Keras layout), keyed by short weight name."""
        if layer not in self.graph:
            raise KeyError(f"no layer {layer!r} in {self.path}")
        return {
            short: np.asarray(self._reader.get_tensor(key), dtype=np.float32) for short, key in self._map.get(layer, [])
        }

    def close(self) -> None:
        """Nothing stays open (the checkpoint reader holds no file handle worth releasing)."""

    def __enter__(self) -> SavedModelSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_savedmodel(path: str | Path) -> SavedModelSource:
    """Open a Keras SavedModel folder (raises QInspectError for anything else)."""
    return SavedModelSource(path)


def read_savedmodel(path: str | Path) -> tuple[ModelGraph, dict[str, dict[str, np.ndarray]]]:
    """A SavedModel folder's graph and every leaf layer's weights, as plain arrays: what a process that
    must not load TensorFlow (the window's) receives from one that may (see qinspect.gui.document)."""
    source = open_savedmodel(path)
    return source.graph, {layer.name: source.weights(layer.name) for layer in source.graph.leaves()}


def _metadata_nodes(meta_file: Path, path: str) -> dict[str, dict[str, Any]]:
    """node_path -> metadata JSON of every Keras object in ``keras_metadata.pb``."""
    try:
        from tf_keras.protobuf import saved_metadata_pb2
    except ImportError:  # TensorFlow's own copy of the same message
        from tensorflow.python.keras.protobuf import saved_metadata_pb2  # type: ignore[no-redef]

    meta = saved_metadata_pb2.SavedMetadata()
    try:
        meta.ParseFromString(meta_file.read_bytes())
        return {node.node_path: _untuple(json.loads(node.metadata)) for node in meta.nodes}
    except Exception as exc:  # protobuf DecodeError, bad JSON
        raise QInspectError(f"damaged keras_metadata.pb ({_first_line(exc)})", path) from exc


def _untuple(value: Any) -> Any:
    """SavedModel metadata writes tuples and shapes as ``{"class_name": "__tuple__", "items": [...]}``."""
    if isinstance(value, dict):
        if value.get("class_name") in ("__tuple__", "TensorShape") and isinstance(value.get("items"), list):
            return [_untuple(v) for v in value["items"]]
        return {k: _untuple(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untuple(v) for v in value]
    return value


def _layer_paths(nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
    """node_path -> flattened graph name (``root.layer_with_weights-0.layer-1`` -> ``seqin/bn``)."""
    out: dict[str, str] = {}
    for node_path, meta in nodes.items():
        if node_path == "root" or "name" not in meta:
            continue
        parts = node_path.split(".")
        names = []
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in nodes or "name" not in nodes[prefix]:
                break
            names.append(str(nodes[prefix]["name"]))
        else:
            out[node_path] = NEST_SEP.join(names)
    return out


def _variables_at(object_graph: Any, node_path: str) -> list[tuple[str, str]] | None:
    """(local name, checkpoint key) of the variables owned by the object at ``node_path``."""
    node_id = 0
    for part in node_path.split(".")[1:]:
        children = {c.local_name: c.node_id for c in object_graph.nodes[node_id].children}
        if part not in children:
            return None
        node_id = children[part]
    found = _own_variables(object_graph, node_id)
    if not found:  # a recurrent layer (LSTM, GRU, SimpleRNN) keeps its weights in its cell
        cell = next((c.node_id for c in object_graph.nodes[node_id].children if c.local_name == "cell"), None)
        if cell is not None:
            found = _own_variables(object_graph, cell)
    return found


def _own_variables(object_graph: Any, node_id: int) -> list[tuple[str, str]]:
    found = []
    for child in object_graph.nodes[node_id].children:
        for attr in object_graph.nodes[child.node_id].attributes:
            if attr.name == "VARIABLE_VALUE":
                found.append((child.local_name, attr.checkpoint_key))
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
