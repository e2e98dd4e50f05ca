"""Run a float Keras model over its inputs and stream every layer's output into a capture file.

Two phases, so bad input fails fast and without TensorFlow:

1. :func:`plan_capture` (no TensorFlow): read the graph and weights with
   ``qinspect.io.model_file.open_model``, refuse models that cannot run (Lambda or custom layers:
   their code lives in the file and is never deserialized), open the inputs and check their shapes,
   pick the layers (``--layers`` patterns), and choose the batch size.
2. :func:`run_capture`: load the model with TensorFlow, build one multi-output model over the chosen
   leaf outputs (nested models included), run it batch by batch, and hand each batch to a writer
   thread so the HDF5 writing of batch k overlaps the computation of batch k+1.

Loaders: Keras-2 ``.h5`` and SavedModel folders through ``tf_keras`` (the Keras-2 API Vitis AI users
have), ``.keras`` through Keras 3. Loading is in safe mode and only after the graph check above,
so a Lambda layer's marshalled bytecode is never read by Keras.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import queue
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.capture_file import CaptureWriter, bytes_needed, check_capture_destination
from qinspect.io.capture_stats import StatsAccumulator, stats_bytes_bound
from qinspect.io.graph import ModelGraph, WeightSource, call_name, output_name
from qinspect.io.inputs import InputSource, count_nonfinite, open_inputs

# Default batch size: as many samples as fit in this many bytes of activations, between 1 and 32.
# Up to three batches are alive at once (computing, queued, being written).
BATCH_BYTES = 512 << 20
MAX_AUTO_BATCH = 32
# Default byte budget of a capture (--budget): full tensors for as many samples as fit beside every
# sample's inputs and statistics.
DEFAULT_BUDGET = 2 << 30
# vai_q_tensorflow2 calibrates with Keras' predict, whose batch defaults to 32 (calib_batch_size=None).
DEFAULT_CALIB_BATCH = 32

Progress = Callable[[int, int], None]


@dataclass
class CapturePlan:
    """Everything decided before TensorFlow is imported."""

    model_path: str
    graph: ModelGraph
    weights: WeightSource
    source: InputSource
    layers: list[str]  # leaves whose outputs are captured (model inputs excluded), topological order
    input_layers: list[str]  # model-input layers selected (stored as links to /inputs)
    batch_size: int
    warnings: list[str] = field(default_factory=list)
    pattern: str = ""  # the --layers patterns, as given
    keep: int | None = None  # samples with full tensors (--keep); None: as many as the budget allows
    budget: int = DEFAULT_BUDGET  # bytes (--budget), used when keep is None
    calib_batch_size: int = DEFAULT_CALIB_BATCH  # batches the statistics are grouped by

    @property
    def n_samples(self) -> int:
        """Samples to capture."""
        return self.source.n_samples

    def close(self) -> None:
        """Release the model file the graph and weights were read from."""
        close = getattr(self.weights, "close", None)
        if close is not None:
            close()

    def activation_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """Per-sample output shape of each captured layer, or None when the graph leaves one open."""
        shapes = {}
        for name in self.layers:
            shape = self.graph[name].output_shape
            if not shape or any(d is None for d in shape[1:]) or _is_multi(shape):
                return None
            shapes[name] = tuple(int(d) for d in shape[1:])
        return shapes

    def bytes_needed(self) -> int | None:
        """Uncompressed bytes of the capture's tensors and statistics at most (None if a shape is only
        known at run time)."""
        shapes = self.activation_shapes()
        if shapes is None:
            return None
        return capture_bytes(self.n_samples, self.kept_samples(shapes), shapes, self.source.shapes,
                             self.calib_batch_size)

    def kept_samples(self, shapes: dict[str, tuple[int, ...]]) -> int:
        """K: samples whose full tensors are kept (``--keep``, else as many as fit the budget, at least 1)."""
        if self.keep is not None:
            return min(self.keep, self.n_samples)
        return choose_keep(self.n_samples, shapes, self.source.shapes, self.calib_batch_size, self.budget)


def capture_bytes(n: int, keep: int, shapes: dict[str, tuple[int, ...]], inputs: dict[str, Any],
                  calib_batch: int) -> int:
    """Bytes a capture of ``n`` samples keeping ``keep`` takes at most: kept tensors, every input
    (``/all_inputs`` when ``keep < n``) and the statistics' bound (graph and weights not counted)."""
    total = bytes_needed(keep, shapes, inputs)
    if keep < n:
        total += bytes_needed(n, {}, inputs)
    every = {**shapes, **inputs}
    return total + sum(stats_bytes_bound(n, calib_batch, shape) for shape in every.values())


def choose_keep(n: int, shapes: dict[str, tuple[int, ...]], inputs: dict[str, Any], calib_batch: int,
                budget: int) -> int:
    """The most samples (at most ``n``, at least 1) whose full tensors fit ``budget`` beside every
    sample's inputs and statistics."""
    if capture_bytes(n, n, shapes, inputs, calib_batch) <= budget:
        return n
    fixed = capture_bytes(n, 0, shapes, inputs, calib_batch)
    per_sample = bytes_needed(1, shapes, inputs)
    return max(1, min(n - 1, (budget - fixed) // max(1, per_sample)))


@dataclass
class CaptureResult:
    """What a finished capture holds."""

    path: str
    n_samples: int
    layers: list[str]
    seconds: float
    bytes_written: int
    nonfinite: dict[str, tuple[int, int, int]]
    load_seconds: float = 0.0  # of ``seconds``: loading the model and building the layer-output model
    kept: int = 0  # samples whose full tensors the file holds (n_samples: every sample fed)


def _is_multi(shape: Any) -> bool:
    return bool(shape) and isinstance(shape[0], (list, tuple))


def _open_model(path: str) -> Any:
    """The graph + weights of a model file, read without TensorFlow."""
    from qinspect.io.model_file import NeedsTensorFlowError, open_model

    try:
        return open_model(path)
    except NeedsTensorFlowError:
        # A SavedModel folder: its graph and weights are read with TensorFlow's protobuf and
        # checkpoint readers (nothing in it is deserialized as Keras objects).
        from qinspect.capture.savedmodel import open_savedmodel

        return open_savedmodel(path)


def match_layers(graph: ModelGraph, patterns: str | Sequence[str] | None) -> list[str]:
    """Leaf layer names matching any ``fnmatch`` pattern (comma-separated in a string), in graph order.

    A pattern is tried on the full nested name (``outer/inner``) and on the short name.
    """
    leaves = [layer for layer in graph.leaves()]
    if not patterns:
        return [layer.name for layer in leaves]
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    return [
        layer.name
        for layer in leaves
        if any(fnmatch.fnmatchcase(layer.name, p) or fnmatch.fnmatchcase(layer.short_name, p) for p in patterns)
    ]


def input_shapes(graph: ModelGraph) -> dict[str, list[int | None]]:
    """Each model input's shape without the batch axis, from the graph."""
    shapes = {}
    for name in graph.inputs:
        shape = graph[name].output_shape if name in graph else None
        if shape is None or _is_multi(shape):
            raise QInspectError(f"cannot tell the shape of model input {name!r}", graph.source or None)
        shapes[name] = list(shape[1:])
    return shapes


def plan_capture(
    model_path: str | os.PathLike[str],
    inputs_path: str | os.PathLike[str],
    *,
    samples: int | None = None,
    batch_size: int | None = None,
    layers: str | Sequence[str] | None = None,
    preprocess: str | None = None,
    model: Any = None,
    keep: int | None = None,
    budget: int | None = None,
    calib_batch_size: int | None = None,
) -> CapturePlan:
    """Check everything that can be checked without TensorFlow. ``model``: an already opened model file.

    ``keep`` (samples with full tensors) or ``budget`` (bytes; default 2 GiB) decide the kept samples;
    ``calib_batch_size`` groups the statistics (default 32, the quantizer's).
    """
    model_path = os.fspath(model_path)
    if not os.path.exists(model_path):
        raise QInspectError("no such file or folder", model_path)
    opened = model if model is not None else _open_model(model_path)
    try:
        plan = _plan(model_path, opened, inputs_path, samples, batch_size, layers, preprocess)
        if keep is not None and budget is not None:
            raise QInspectError("give --keep or --budget, not both", model_path)
        for flag, value in (("--keep", keep), ("--budget", budget), ("--calib-batch-size", calib_batch_size)):
            if value is not None and value < 1:
                raise QInspectError(f"{flag} must be at least 1 (got {value})", model_path)
        plan.keep = keep
        plan.budget = DEFAULT_BUDGET if budget is None else int(budget)
        plan.calib_batch_size = DEFAULT_CALIB_BATCH if calib_batch_size is None else int(calib_batch_size)
        return plan
    except BaseException:
        if model is None:  # opened here: a refused plan must not leave the model (or its extracted copy) open
            opened.close()
        raise


def _plan(model_path: str, opened: Any, inputs_path: str | os.PathLike[str], samples: int | None,
          batch_size: int | None, layers: str | Sequence[str] | None, preprocess: str | None) -> CapturePlan:
    if getattr(opened, "kind", "") == "capture":
        raise QInspectError("is a capture, not a model: capture needs the Keras model file", model_path)
    graph: ModelGraph = opened.graph
    not_runnable = [layer for layer in graph.leaves() if not layer.runnable]
    if not_runnable:
        listed = ", ".join(f"{layer.name} ({layer.class_name})" for layer in not_runnable[:4])
        more = f" and {len(not_runnable) - 4} more" if len(not_runnable) > 4 else ""
        raise QInspectError(
            f"cannot run this model: layer(s) {listed}{more} hold code or classes qinspect does not run "
            "(Lambda or custom layers; the graph is still shown by `qinspect info`)",
            model_path,
        )
    if batch_size is not None and batch_size < 1:
        raise QInspectError(f"--batch-size must be at least 1 (got {batch_size})", model_path)
    source = open_inputs(inputs_path, input_shapes(graph), samples=samples, preprocess=preprocess)
    chosen = match_layers(graph, layers)
    if not chosen:
        raise QInspectError(f"no layer matches --layers {layers!r}", model_path)
    input_layers = [name for name in chosen if name in graph.inputs]
    captured = [name for name in chosen if graph[name].class_name != "InputLayer"]
    plan = CapturePlan(model_path, graph, opened, source, captured, input_layers, 1, list(source.warnings))
    if batch_size is None:
        shapes = plan.activation_shapes()
        per_sample = bytes_needed(1, shapes, {}) if shapes else 0
        batch_size = MAX_AUTO_BATCH if per_sample == 0 else max(1, min(MAX_AUTO_BATCH, BATCH_BYTES // per_sample))
    plan.batch_size = int(batch_size)
    if layers:
        plan.pattern = layers if isinstance(layers, str) else ",".join(layers)
    return plan


# --- TensorFlow side -----------------------------------------------------------------------------


def load_keras_model(path: str) -> Any:
    """Load a model for running: ``.keras`` with Keras 3, ``.h5``/SavedModel with tf_keras (safe mode)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from qinspect.capture.tf_logs import import_tensorflow_quietly

        import_tensorflow_quietly()
        if zipfile.is_zipfile(path):
            import keras

            return keras.saving.load_model(path, compile=False, safe_mode=True)
        if _written_by_keras3(path):
            return _load_keras3_h5(path)
        import tf_keras
        from tf_keras.src.saving.serialization_lib import SafeModeScope

        own = _application_layers()
        with SafeModeScope(True):
            if os.path.isfile(path):
                import h5py

                # Opened here with locking off, as every qinspect reader opens it: HDF5 refuses a second
                # open of a file with different locking flags, and open_model may hold it open.
                with h5py.File(path, "r", locking=False) as h5:
                    return tf_keras.models.load_model(h5, compile=False, safe_mode=True, custom_objects=own)
            model = tf_keras.models.load_model(path, compile=False, safe_mode=True, custom_objects=own)
        _refuse_revived(model, path)
        return model
    except QInspectError:
        raise
    except ImportError as exc:
        from qinspect.extras import missing_message

        raise QInspectError(missing_message("capturing", "capture", exc.name), path) from None
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad model file for the user
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise QInspectError(f"TensorFlow cannot load this model ({text[:300]})", path) from None


def _refuse_revived(model: Any, path: str) -> None:
    """Refuse a SavedModel whose layers tf_keras could not rebuild from their config: it then revives them
    from the functions traced into the folder and runs those, whatever ops they hold (a Lambda relabelled
    as a ReLU with one unknown setting wrote a file during capture). Only layers built from their checked
    config run."""
    stack, revived = [model], []
    while stack:
        layer = stack.pop()
        if ".saved_model." in type(layer).__module__ or type(layer).__name__.startswith("Revived"):
            revived.append(getattr(layer, "name", "?"))
        stack.extend(getattr(layer, "layers", None) or [])
    if revived:
        shown = ", ".join(revived[:4]) + (f" and {len(revived) - 4} more" if len(revived) > 4 else "")
        raise QInspectError(f"cannot run this model: layer(s) {shown} cannot be rebuilt from their saved config "
                            "(TensorFlow would run the functions stored in the folder instead, which qinspect "
                            "never does)", path)


def _load_keras3_h5(path: str) -> Any:
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import load_model_from_hdf5

    # Through an h5py handle opened with locking off (see load_keras_model's tf_keras case).
    with h5py.File(path, "r", locking=False) as h5:
        try:
            return load_model_from_hdf5(h5, compile=False, safe_mode=True,
                                        custom_objects=_application_layers(keras3=True))
        except (TypeError, ValueError) as exc:
            # Keras 3 cannot rebuild some of its own models from its legacy HDF5 config (operations
            # called with constants, as MobileNetV3's x + 3.0; ConvNeXt): its .keras format can.
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise QInspectError(f"Keras 3 cannot rebuild this model from the HDF5 file it wrote ({text[:200]}); "
                                "save it as .keras (model.save('model.keras')) and capture that", path) from None


def _application_layers(keras3: bool = False) -> dict[str, Any]:
    """Keras's own layers that live in keras.applications modules (ConvNeXt's LayerScale,
    InceptionResNetV2's CustomScaleLayer), which tf_keras, and Keras 3 reading an HDF5 file (its config
    names no module), cannot find by class name alone. ``keras3``: Keras 3's classes, else tf_keras's."""
    import importlib

    from qinspect.io.keras_classes import APPLICATION_LAYERS

    found = {}
    for name, modules in APPLICATION_LAYERS.items():
        cls = getattr(importlib.import_module(modules[1 if keras3 else 0]), name, None)
        if cls is not None:
            found[name] = cls
    return found


def _written_by_keras3(path: str) -> bool:
    """An HDF5 model saved by Keras 3 (tf_keras cannot read its config)."""
    if not os.path.isfile(path):
        return False
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as h5:
            version = h5.attrs.get("keras_version", "")
    except OSError:
        return False
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version.startswith("3.")


def _functional(model: Any) -> Any:
    """The functional graph behind a model (Keras 3 Sequential keeps it in ``_functional``)."""
    inner = getattr(model, "_functional", None)
    return inner if inner is not None else model


def _is_model(layer: Any) -> bool:
    return hasattr(layer, "layers") and hasattr(_functional(layer), "_nodes_by_depth")


def _own_nodes(model: Any, layer: Any) -> list[Any]:
    """The nodes of ``layer``'s calls inside ``model``'s own graph, in call order.

    Call ``k`` here is the graph's node ``call_name(layer, k)`` (qinspect.io.keras_config numbers a
    layer's calls in the order its config lists them, which is the order of its inbound nodes).
    Nodes of the layer made outside this model (a nested model built on its own Input) are left out.
    """
    mine = [
        node
        for nodes in model._nodes_by_depth.values()
        for node in nodes
        if (getattr(node, "operation", None) or getattr(node, "layer", None)) is layer
    ]
    if not mine:
        raise QInspectError(f"layer {layer.name!r} is not called in model {model.name!r}")
    order = {id(node): i for i, node in enumerate(layer._inbound_nodes)}
    return sorted(mine, key=lambda node: order.get(id(node), len(order)))


def _node_outputs(node: Any) -> list[Any]:
    outs = node.outputs
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _node_call(node: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The (args, kwargs) a node was called with (Keras 3 and tf_keras)."""
    if hasattr(node, "arguments"):
        return tuple(node.arguments.args), dict(node.arguments.kwargs)
    return tuple(node.call_args), dict(node.call_kwargs)


def layer_outputs(model: Any, wanted: set[str], prefix: str = "") -> dict[str, Any]:
    """Symbolic outputs of the wanted graph nodes (``outer/inner``, ``conv@2``, ``split:1``) in ``model``.

    Every call of a layer is its own node: its output is that call's node's tensor. A nested model's
    inner outputs live in its own graph, so for each call of it a sub-model over them is called on
    the tensors that call received in the outer graph, which joins them to that call's inputs.
    """
    graph_model = _functional(model)
    found: dict[str, Any] = {}
    # Keras 3 keeps operations called on tensors (keras.ops.split, x + 3) beside the layers.
    for layer in getattr(graph_model, "operations", None) or graph_model.layers:
        wanted_here = [w for w in wanted if w.startswith(prefix + layer.name)]
        if not wanted_here:
            continue
        for k, node in enumerate(_own_nodes(graph_model, layer)):
            name = call_name(prefix + layer.name, k)
            if _is_model(layer):
                found.update(_nested_call_outputs(layer, node, {w for w in wanted if w.startswith(name + "/")}, name))
                continue
            for t, out in enumerate(_node_outputs(node)):
                if output_name(name, t) in wanted:
                    found[output_name(name, t)] = out
    return found


def _nested_call_outputs(layer: Any, node: Any, wanted: set[str], name: str) -> dict[str, Any]:
    """The wanted inner outputs of one call (``node``) of nested model ``layer``, named under ``name``."""
    import keras
    import tf_keras

    if not wanted:
        return {}
    inner = layer_outputs(layer, wanted, name + "/")
    if not inner:
        return {}
    sub_model = _functional(layer)
    model_cls = keras.Model if hasattr(sub_model, "_operations") else tf_keras.Model
    extractor = model_cls(sub_model.inputs, list(inner.values()))
    args, kwargs = _node_call(node)
    kwargs.pop("training", None)
    kwargs.pop("mask", None)
    outs = extractor(*args, **kwargs)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return dict(zip(inner, outs, strict=True))


def build_extractor(model: Any, names: Sequence[str]) -> Any:
    """One model whose outputs are the given leaf layers' outputs, in ``names`` order."""
    import keras
    import tf_keras

    outputs = layer_outputs(model, set(names))
    missing = [n for n in names if n not in outputs]
    if missing:
        raise QInspectError(
            f"layer(s) {', '.join(missing[:5])} of the model graph are not in the loaded model "
            "(the file's config and what TensorFlow loaded disagree)",
            None,
        )
    graph_model = _functional(model)
    model_cls = keras.Model if hasattr(graph_model, "_operations") else tf_keras.Model
    return model_cls(graph_model.inputs, [outputs[n] for n in names])


class _BatchWriter:
    """A writer thread: TensorFlow computes batch k+1 while batch k's statistics are taken and its kept
    rows written (queue depth 1)."""

    def __init__(self, writer: CaptureWriter, stats: dict[str, tuple[StatsAccumulator, str, bool]]) -> None:
        self._writer = writer
        self._stats = stats  # node -> (accumulator, its tensor's name, from the inputs?)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="qinspect-capture-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                start, inputs, activations, summaries = item
                self._writer.write_batch(start, inputs, activations)
                for accumulator, key, is_input in self._stats.values():
                    if is_input:
                        accumulator.add(inputs[key])
                    elif summaries is not None:
                        accumulator.add_summary(len(next(iter(inputs.values()))), *summaries[key])
                    else:
                        accumulator.add(activations[key])
            except BaseException as exc:  # noqa: BLE001 - handed back to the main thread
                self._error = exc

    def put(self, start: int, inputs: dict[str, np.ndarray], activations: dict[str, np.ndarray],
            summaries: dict[str, list[np.ndarray]] | None = None) -> None:
        """Queue a batch: its tensors (written as far as they are kept), or, past the kept samples, the
        in-graph ``summaries`` of its activations (``_compiled_run``)."""
        self.check()
        self._queue.put((start, inputs, activations, summaries))

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> dict[str, Any]:
        """Wait for every queued batch to be written (re-raising a write error); the statistics."""
        self._queue.put(None)
        self._thread.join()
        self.check()
        return {node: accumulator.result() for node, (accumulator, _, _) in self._stats.items()}

    def abort(self) -> None:
        """Stop at once (Ctrl-C, an error): queued batches are dropped, the one being written is cut short."""
        self._writer.cancel()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join()


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM are held off while the body runs (the cleanup after a first one: the writer
    thread joined before its file is closed, the temporary file removed). Signal handlers can only be
    set on the main thread; elsewhere (the window's job helper) the body runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, signal.SIGTERM)
    saved = {sig: signal.getsignal(sig) for sig in held}
    for sig in held:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run_capture(
    plan: CapturePlan,
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    compression: str | None = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    keras_model: Any = None,
    attrs: dict[str, Any] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> CaptureResult:
    """Run the model over the plan's inputs and write the capture atomically to ``output``.

    ``progress(done, total)`` is called after each batch (it may raise to cancel). ``keras_model``:
    an already loaded model (tests, benchmarks); else it is loaded from ``plan.model_path``.
    ``attrs``: extra root attributes (they override the ones the runner sets). ``on_start(bytes)`` is
    called once the first batch has run and the exact (uncompressed) size of the capture is known.
    """
    started = time.perf_counter()
    output = os.path.abspath(os.fspath(output))
    check_capture_destination(output, overwrite, (plan.model_path, plan.source.path))
    order = list(plan.source.names)
    if plan.layers:
        model = keras_model if keras_model is not None else load_keras_model(plan.model_path)
        extractor = build_extractor(model, plan.layers)
        order = _model_input_order(extractor, order)
        step = _interruptible(_compiled_run(extractor, [plan.source.shapes[name] for name in order], tensors=True))
    else:  # --layers matched only model inputs: nothing to run
        def step(*arrays: np.ndarray) -> list[tuple[np.ndarray | None, list[np.ndarray]]]:
            return []
    load_seconds = time.perf_counter() - started
    n, batch, calib = plan.n_samples, plan.batch_size, plan.calib_batch_size
    stats_batch = max(batch, MAX_AUTO_BATCH)
    nonfinite = {name: (0, 0, 0) for name in order}
    warned = False
    writer: CaptureWriter | None = None
    background: _BatchWriter | None = None
    summarize: Callable[..., list[Any]] | None = None  # statistics only, for samples past the kept
    warming: _Warmup | None = None
    keep = n
    shapes: dict[str, tuple[int, ...]] = {}  # each output's sample shape, from the first batch
    start = 0
    try:
        while start < n:
            tensors = writer is None or start < keep or not plan.layers
            # Past the kept samples only statistics are taken, inside the graph, over pieces that stay
            # within one calibration batch (so a piece's min and max are its channels').
            stop = min(n, start + batch) if tensors else min(n, start + stats_batch, _next_boundary(start, calib))
            x = plan.source.batch(start, stop)
            for name, array in x.items():
                counts = count_nonfinite(array)
                if any(counts):
                    nonfinite[name] = tuple(a + b for a, b in zip(nonfinite[name], counts, strict=True))
                    if not warned and warn is not None:
                        bad = ~np.isfinite(np.asarray(array).reshape(len(array), -1)).all(axis=1)
                        first = start + int(np.argmax(bad))
                        warn(f"{plan.source.path}: inputs hold NaN or Inf (first in sample {first}); "
                             "captured as they are and recorded in the capture")
                        warned = True
            try:
                if not tensors and summarize is None:
                    assert warming is not None
                    summarize = _interruptible(warming.result())
                outs = (step if tensors else summarize)(*[x[name] for name in order])
            except Exception as exc:  # noqa: BLE001 - TensorFlow's runtime errors are many types
                text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
                raise QInspectError(f"the model failed on samples {start}..{stop - 1}: {text}",
                                    plan.model_path) from None
            if not tensors:
                assert background is not None
                background.put(start, x, {}, {name: parts for name, (_, parts) in zip(plan.layers, outs, strict=True)})
                if progress is not None:
                    progress(stop, n)
                start = stop
                continue
            acts = {name: np.asarray(out, dtype=np.float32) for name, (out, _) in zip(plan.layers, outs, strict=True)}
            if writer is None:
                shapes = {name: a.shape[1:] for name, a in acts.items()}
                keep = plan.kept_samples(shapes)
                writer = CaptureWriter(
                    output,
                    plan.graph,
                    keep,
                    shapes,
                    plan.source.shapes,
                    attrs={**_attrs(plan), **(attrs or {})},
                    input_links={name: name for name in plan.input_layers},
                    compression=compression,
                    overwrite=overwrite,
                    n_total_samples=n,
                    calib_batch_size=plan.calib_batch_size,
                    labels=plan.source.class_labels,
                )
                if on_start is not None:
                    on_start(capture_bytes(n, keep, shapes, plan.source.shapes, plan.calib_batch_size))
                # A shared layer's weights once, under its first call (later calls read those).
                writer.write_weights(plan.weights, [layer.name for layer in plan.graph.leaves() if not layer.shares])
                stats = {name: (StatsAccumulator(name, plan.calib_batch_size), name, True)
                         for name in plan.input_layers}
                stats.update({name: (StatsAccumulator(name, plan.calib_batch_size), name, False) for name in acts})
                background = _BatchWriter(writer, stats)
                if keep < n and plan.layers:
                    # The statistics graph takes seconds to trace; the kept batches are bound by the writer
                    # thread, so it is traced beside them.
                    most = max((math.prod(shape) for shape in shapes.values()), default=1)
                    warming = _Warmup(extractor, [plan.source.shapes[k] for k in order],
                                      stats_batch * most >= 2**31, [x[k][:1].copy() for k in order])
            assert background is not None
            background.put(start, x, acts)
            if progress is not None:
                progress(stop, n)
            start = stop
        assert writer is not None and background is not None
        writer.write_stats(background.close())
        writer.set_attrs(_nonfinite_attrs(nonfinite))
        writer.commit()
    except BaseException:
        with _uninterrupted():  # a second Ctrl-C must not cut the cleanup short (a 2 GB temp file stayed)
            if background is not None:
                try:
                    background.abort()
                except BaseException:  # noqa: BLE001 - the first error is the one to report
                    pass
            if writer is not None:
                writer.abort()
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # disk full, folder removed, ...: a user-facing condition
            raise QInspectError(f"cannot write the capture ({error.strerror or error})", output) from None
        raise
    seconds = time.perf_counter() - started
    return CaptureResult(output, n, list(plan.layers), seconds, os.path.getsize(output), nonfinite, load_seconds,
                         writer.n_samples)


def _interruptible(step: Callable[..., list[np.ndarray]]) -> Callable[..., list[np.ndarray]]:
    """``step`` run in a helper thread while the main thread waits on an event.

    Python runs a signal handler (Ctrl-C, the SIGTERM handler) only on the main thread between
    bytecodes: during a batch inside TensorFlow's C++ it would wait for the batch to end, seconds under
    load. Waiting on an event is interruptible, so the capture stops and cleans up at once; the helper
    thread (a daemon) is abandoned with its batch.
    """
    def call(*arrays: np.ndarray) -> list[np.ndarray]:
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["out"] = step(*arrays)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                box["exc"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="qinspect-capture-step", daemon=True).start()
        done.wait()
        if "exc" in box:
            raise box["exc"]
        return box["out"]

    return call


def _compiled_run(extractor: Any, shapes: list[tuple[int, ...]], *, tensors: bool,
                  wide_counts: bool = True) -> Callable[..., list[tuple[np.ndarray | None, list[np.ndarray]]]]:
    """The extractor as one graph function, traced once for any batch size (``predict_on_batch`` traces
    again for the last, shorter batch, seconds on a large model), returning for each output either its
    tensor (``tensors``: ``(tensor, [])``) or only its summary computed inside the graph (``(None,
    summary)``): per-channel min and max and the counts of the 65536 top-16-bit patterns of its float32
    values, as ``qinspect.io.capture_stats`` bins them. Where nothing else is copied out, TensorFlow's
    threads taking the statistics is faster than numpy on copied tensors; where the tensors are copied
    out anyway, numpy's statistics in the writer thread overlap the next batch and cost less
    (bench/bench_capture_keep.py --stats). ``wide_counts``: int64 counts; int32 (a cheaper bincount) is
    exact only while a piece holds fewer than 2**31 values of one output.
    """
    import tensorflow as tf

    specs = [tf.TensorSpec((None, *shape), tf.float32) for shape in shapes]
    count_type = tf.int64 if wide_counts else tf.int32

    def summary(out: Any) -> list[Any]:
        flat = tf.reshape(out, [-1, tf.shape(out)[-1] if out.shape.rank >= 2 else 1])
        bits = tf.bitwise.right_shift(tf.bitcast(tf.reshape(out, [-1]), tf.uint32), 16)
        # Below 2^16, so viewing the bits as int32 (what bincount takes) needs no conversion pass.
        counts = tf.math.bincount(tf.bitcast(bits, tf.int32), minlength=1 << 16, maxlength=1 << 16, dtype=count_type)
        return [tf.reduce_min(flat, 0), tf.reduce_max(flat, 0), counts]

    @tf.function(input_signature=specs)
    def run(*xs: Any) -> list[list[Any]]:
        outs = extractor(list(xs) if len(xs) > 1 else xs[0], training=False)
        return [[out] if tensors else summary(out) for out in (outs if isinstance(outs, (list, tuple)) else [outs])]

    def step(*arrays: np.ndarray) -> list[tuple[np.ndarray | None, list[np.ndarray]]]:
        done = []
        for parts in run(*arrays):
            values = [t.numpy() for t in parts]
            done.append((values[0], []) if tensors else (None, values))
        return done

    return step


class _Warmup:
    """The statistics-only graph function (``_compiled_run``), traced and run once on ``sample`` (one
    sample already run, so it cannot fail where the data does not) in a daemon thread; ``result()`` waits
    for it (re-raising its error)."""

    def __init__(self, extractor: Any, shapes: list[tuple[int, ...]], wide_counts: bool,
                 sample: list[np.ndarray]) -> None:
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(extractor, shapes, wide_counts, sample),
                                        name="qinspect-capture-trace", daemon=True)
        self._thread.start()

    def _run(self, extractor: Any, shapes: list[tuple[int, ...]], wide_counts: bool,
             sample: list[np.ndarray]) -> None:
        try:
            fn = _compiled_run(extractor, shapes, tensors=False, wide_counts=wide_counts)
            fn(*sample)
            self._box["fn"] = fn
        except BaseException as exc:  # noqa: BLE001 - re-raised where the function is wanted
            self._box["exc"] = exc

    def result(self) -> Callable[..., list[tuple[np.ndarray | None, list[np.ndarray]]]]:
        """The traced function."""
        self._thread.join()
        if "exc" in self._box:
            raise self._box["exc"]
        return self._box["fn"]


def _next_boundary(start: int, calib: int) -> int:
    """The first calibration-batch boundary after sample ``start``."""
    return (start // calib + 1) * calib


def _model_input_order(extractor: Any, names: list[str]) -> list[str]:
    """The model's input names in its input order (the graph's order when they cannot be matched)."""
    own = []
    for tensor in extractor.inputs:
        history = getattr(tensor, "_keras_history", None)
        layer = history[0] if history else None
        own.append(getattr(layer, "name", None))
    return own if sorted(n for n in own if n) == sorted(names) else names


def _attrs(plan: CapturePlan) -> dict[str, Any]:
    source = plan.source
    return {
        "source_model": os.path.abspath(plan.model_path),
        "source_format": plan.graph.source_format,
        "inputs_source": os.path.abspath(source.path),
        "inputs_kind": source.kind,
        "preprocess": source.preprocess or "",
        "batch_size": plan.batch_size,
        "layers_pattern": plan.pattern,
    }


def _nonfinite_attrs(nonfinite: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    nan = sum(c[0] for c in nonfinite.values())
    posinf = sum(c[1] for c in nonfinite.values())
    neginf = sum(c[2] for c in nonfinite.values())
    return {
        "inputs_nonfinite": bool(nan or posinf or neginf),
        "inputs_nan": nan,
        "inputs_posinf": posinf,
        "inputs_neginf": neginf,
        "inputs_nonfinite_per_input": {k: list(v) for k, v in nonfinite.items() if any(v)},
    }


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0 if n < 1024 else min(len(units) - 1, int(math.log(n, 1024)))
    return f"{n / 1024**i:.1f} {units[i]}" if i else f"{int(n)} B"
