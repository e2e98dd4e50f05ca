"""Vitis AI artefacts read without the quantizer: ``quantized.h5`` and ``dump_model`` folders.

``quantized.h5`` is a Keras-2 HDF5 model whose layers are Vitis wrappers:
``Vitis>VitisQuantize`` (the input quantizer, named ``quant_<input>``) and ``Vitis>QuantizeWrapper``
(named ``quant_<layer>``, the wrapped layer's own config under ``config.layer``). Every quantizer keeps
its position as a float32 scalar weight: ``<w>_pos:0`` for a weight, ``post_activation_pos:0`` /
``pre_activation_pos:0`` for an activation quantizer, ``output_<i>_pos:0`` for a layer output and
``<name>_pos:0`` for a ``VitisQuantize``. The float weights stored beside them are the folded,
equalized values the quantizer used.

Positions are keyed exactly as the quantizer's ``get_quantize_info`` keys them (and as the
reference cases' ``positions.json``): ``positions[wrapped layer name][tensor key]``, where the
tensor key of a weight is its variable name after ``str.lstrip("quant_")`` (a *character-set*
strip: ``quant_a3_pw/kernel:0`` gives ``3_pw/kernel:0``), an activation quantizer is keyed by the
activation's name (``linear``, ``relu``, ``softmax``), a layer output by ``output_<i>`` and an
input quantizer, under its own layer name ``quant_<input>``, by ``input``.

``dump_model(..., dump_float=True)`` writes ``dump_results_weights/`` (int8 and float weights) and
``dump_results_0/`` (int8 and float activations of every layer for all dump inputs). The names follow
the quantizer's own code, reproduced by :func:`expected_dump_files`, quirks included.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.graph import call_name
from qinspect.io.h5_scope import refuse_outside_data
from qinspect.io.paths import data_file_size

WRAPPER = "Vitis>QuantizeWrapper"
VQUANT = "Vitis>VitisQuantize"

# Activation names whose quantizer acts on the activation's input (pre) or output (post); the
# quantizer's QuantizeAwareActivation uses the same two sets.
PRE_QUANT_ACTIVATIONS = frozenset(
    {
        "softmax",
        "elu",
        "selu",
        "softplus",
        "softsign",
        "swish",
        "gelu",
        "tanh",
        "sigmoid",
        "exponential",
        "hard_sigmoid",
    }
)
POST_QUANT_ACTIVATIONS = frozenset({"linear", "relu", "ReLU", "relu6", "LeakyReLU", "PReLU"})
NO_QUANT = "NoQuantizeActivation"


def strip_quant(name: str) -> str:
    """The quantizer's ``str.lstrip("quant_")``: strips any leading characters of ``q u a n t _``."""
    return name.lstrip("quant_")


@dataclass
class QuantizerSpec:
    """One quantizer of the quantized model (a position slot)."""

    key: str  # tensor key as in positions.json
    kind: str  # "input", "weight", "post_activation", "pre_activation", "output"
    method: int = 1  # 0 non-overflow, 1 min-MSE
    round_mode: int = 1  # 0 half-to-even, 1 half-up, 2 half-away, 3 floor
    narrow_range: bool = False
    bit_width: int = 8
    position: int | None = None
    weight: str | None = None  # for weights: the short weight name ("kernel", "bias", ...)

    @classmethod
    def from_params(cls, key: str, kind: str, params: dict[str, Any], **extra: Any) -> QuantizerSpec:
        """Build from a quantizer's ``quantizer_params`` / config dict."""
        return cls(
            key=key,
            kind=kind,
            method=int(params.get("method", 1)),
            round_mode=int(params.get("round_mode", 1)),
            narrow_range=bool(params.get("narrow_range", False)),
            bit_width=int(params.get("bit_width", 8)),
            **extra,
        )


@dataclass
class QuantizedLayer:
    """One layer of a Vitis quantized model."""

    name: str  # the layer's name in quantized.h5 (``quant_c1``; the dump file name)
    inner_name: str  # the wrapped layer's name (``c1``), the positions.json key
    wrapper: str  # "QuantizeWrapper", "VitisQuantize" or the plain class (InputLayer, ...)
    class_name: str  # wrapped class without the ``Vitis>`` package prefix
    config: dict[str, Any]
    inbound: list[str]
    activation: str | None = None  # activation of conv-like / Activation layers ("linear", "relu", ...)
    quantizers: list[QuantizerSpec] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    # A layer called more than once is one entry per call (``quant_c1``, ``quant_c1@2``, as in
    # qinspect.io.graph); later calls share the first call's quantizers and weights.
    call: int = 0

    @property
    def first_call(self) -> str:
        """The entry of this layer's first call (its own name for the first call)."""
        return self.name[: -len(call_name("", self.call))] if self.call else self.name

    @property
    def float_name(self) -> str:
        """The float model's node this call comes from (``c1@2`` for ``quant_c1@2``)."""
        return call_name(self.inner_name, self.call)

    @property
    def output_quantizer(self) -> QuantizerSpec | None:
        """The quantizer whose position the dump uses for this layer's int8 file (last one wins)."""
        found = None
        for q in self.quantizers:
            if q.kind in ("input", "output", "pre_activation", "post_activation"):
                found = q
        return found

    def weight_quantizer(self, weight: str) -> QuantizerSpec | None:
        """The quantizer of one weight (``kernel``, ``bias``, ``depthwise_kernel``, ``alpha``)."""
        for q in self.quantizers:
            if q.kind == "weight" and q.weight == weight:
                return q
        return None


@dataclass
class VitisQuantizedModel:
    """A Vitis ``quantized.h5`` read with h5py."""

    path: str
    name: str
    layers: list[QuantizedLayer]
    inputs: list[str]
    outputs: list[str]

    def __post_init__(self) -> None:
        self._index = {layer.name: layer for layer in self.layers}

    def __getitem__(self, name: str) -> QuantizedLayer:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def positions(self) -> dict[str, dict[str, int]]:
        """Final positions keyed like the quantizer's ``get_quantize_info`` (and positions.json)."""
        out: dict[str, dict[str, int]] = {}
        for layer in self.layers:
            if layer.call:
                continue  # a later call: its first call's quantizers
            if layer.wrapper == "VitisQuantize":
                out[layer.name] = {q.key: q.position for q in layer.quantizers}
            elif layer.wrapper == "QuantizeWrapper":
                out[layer.inner_name] = {q.key: q.position for q in layer.quantizers}
        return out

    def tensor_types(self) -> dict[str, dict[str, str]]:
        """The quantizer type of each position (``input``, ``weight``, ``output``, ...)."""
        out: dict[str, dict[str, str]] = {}
        for layer in self.layers:
            if layer.call:
                continue
            key = layer.name if layer.wrapper == "VitisQuantize" else layer.inner_name
            if layer.wrapper in ("VitisQuantize", "QuantizeWrapper"):
                out[key] = {q.key: q.kind for q in layer.quantizers}
        return out


def _activation_name(value: Any) -> str | None:
    """``"relu"`` from the many shapes an activation takes in a Keras config."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        cls = str(value.get("class_name", ""))
        cfg = value.get("config", {}) or {}
        if cls.endswith("QuantizeAwareActivation"):
            return _activation_name(cfg.get("activation"))
        if cls.endswith("NoQuantizeActivation"):
            return NO_QUANT
        if "activation" in cfg:
            return _activation_name(cfg["activation"])
        return cfg.get("name") or cls
    return str(value)


def _ref_name(layer: Any, node: Any, n_calls: dict[str, int]) -> str:
    """The entry a ``[layer, node index, tensor]`` reference reads: ``call_name`` of a shared layer's call."""
    name = str(layer)
    if n_calls.get(name, 1) > 1 and isinstance(node, int) and node > 0:
        return call_name(name, node)
    return name


def _call_inbounds(layer_cfg: dict[str, Any], n_calls: dict[str, int]) -> list[list[str]]:
    """The inbound entries of each call of a layer (one list per inbound node; ``[[]]`` for an input)."""
    calls: list[list[str]] = []
    for node in layer_cfg.get("inbound_nodes") or []:
        names: list[str] = []
        if isinstance(node, list):
            for item in node:
                if isinstance(item, list | tuple) and item:
                    names.append(_ref_name(item[0], item[1] if len(item) > 1 else 0, n_calls))
        elif isinstance(node, dict):  # Keras 3 style
            for arg in node.get("args", []):
                hist = arg.get("config", {}).get("keras_history") if isinstance(arg, dict) else None
                if hist:
                    names.append(_ref_name(hist[0], hist[1] if len(hist) > 1 else 0, n_calls))
        calls.append(names)
    return calls or [[]]


def _read_weights(group: Any, layer_name: str) -> dict[str, np.ndarray]:
    """All arrays of one layer keyed by variable name without the layer prefix (``kernel:0``)."""
    if layer_name not in group:
        return {}
    g = group[layer_name]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
    out: dict[str, np.ndarray] = {}
    for full in names:
        try:
            arr = np.asarray(g[full][()])
        except KeyError:
            continue
        out[_weight_short_name(full, layer_name)] = arr
    return out


def _weight_short_name(full: str, layer_name: str) -> str:
    """``kernel:0`` from ``quant_a/b/kernel:0`` of layer ``quant_a/b``.

    Layer names may hold ``/`` themselves (tf_keras's MobileNetV3 has ``expanded_conv/project``), so the
    layer's own name is removed as a prefix instead of splitting at the first ``/``.
    """
    prefix = layer_name + "/"
    if full.startswith(prefix):
        return full[len(prefix):]
    return full.rsplit("/", 1)[-1]


# A position p means a scale of 2^-p; beyond this the scale leaves float32 (and no tensor needs it).
MAX_POSITION = 64


def is_position(value: int | float) -> bool:
    """Whether a number can be a quantizer position: whole, within ±:data:`MAX_POSITION` (the rule a
    positions table and a quantized.h5 share; an int of any size is compared as it is)."""
    if isinstance(value, int):
        return abs(value) <= MAX_POSITION
    return math.isfinite(value) and float(value).is_integer() and abs(value) <= MAX_POSITION


@dataclass(frozen=True)
class PositionsTable:
    """A positions JSON file (a Vitis run's ``positions.json``, or ``qinspect calibrate --json``): layer ->
    tensor -> position, and the quantizer options it was calibrated under (``calibrate --json`` records
    them; None otherwise)."""

    table: dict[str, dict[str, int]]
    options: dict[str, Any] | None = None
    path: str = ""  # the file it was read from (named by every refusal of its positions)


def read_positions_json(path: str) -> PositionsTable:
    """Read and check a positions JSON file; a file that is not one is a one-line error naming it. The
    positions' range is checked where they meet the model's tensors (``dpu.checks.checked_position``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise QInspectError(f"not a positions JSON file ({exc.__class__.__name__})", path) from None
    table = data.get("positions", data) if isinstance(data, dict) else data
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise QInspectError("not a positions table: expected an object keyed by layer, then tensor (a Vitis "
                            "positions.json or calibrate --json output)", path)
    for layer, keys in table.items():
        for key, value in keys.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise QInspectError(f"position {layer}:{key} is not an integer: {value!r}", path)
    options = data.get("quantizer_options") if isinstance(data, dict) else None
    return PositionsTable(table, options if isinstance(options, dict) else None, path)


def _pos(arrays: dict[str, np.ndarray], name: str, path: str, layer: str) -> int:
    if name not in arrays:
        raise QInspectError(f"layer {layer}: quantizer position '{name}' is missing from the weights", path)
    values = np.asarray(arrays[name]).reshape(-1)
    if values.size == 0:
        raise QInspectError(f"layer {layer}: quantizer position '{name}' is empty", path)
    value = float(values[0])
    if not is_position(value):
        raise QInspectError(f"layer {layer}: quantizer position '{name}' = {value:g} is not a whole number within "
                            f"-{MAX_POSITION}..{MAX_POSITION} (a scale of 2^-p): a damaged quantized model", path)
    return int(value)


def _wrapper_quantizers(
    wrapper_name: str,
    inner: dict[str, Any],
    qconfig: dict[str, Any],
    arrays: dict[str, np.ndarray],
    path: str,
) -> tuple[list[QuantizerSpec], str | None]:
    inner_cfg = inner.get("config", {})
    act = _activation_name(inner_cfg.get("activation")) if "activation" in inner_cfg else None
    specs: list[QuantizerSpec] = []
    for wkey, qkey in (("quantizable_weights", "weight_quantizers"), ("quantizable_biases", "bias_quantizers")):
        for w, q in zip(qconfig.get(wkey, []) or [], qconfig.get(qkey, []) or [], strict=False):
            if f"{w}:0" not in arrays and f"{w}_pos:0" not in arrays:
                continue  # e.g. a bias quantizer listed for a layer built with use_bias=False
            var = f"{wrapper_name}/{w}:0"
            specs.append(
                QuantizerSpec.from_params(
                    strip_quant(var),
                    "weight",
                    q.get("quantizer_params", {}),
                    position=_pos(arrays, f"{w}_pos:0", path, wrapper_name),
                    weight=w,
                )
            )
    acts = qconfig.get("quantizable_activations", []) or []
    for _a, q in zip(acts, qconfig.get("activation_quantizers", []) or [], strict=False):
        if act is None or act == NO_QUANT:
            continue
        if act in PRE_QUANT_ACTIVATIONS:
            kind = "pre_activation"
        elif act in POST_QUANT_ACTIVATIONS:
            kind = "post_activation"
        else:
            continue
        specs.append(
            QuantizerSpec.from_params(
                act, kind, q.get("quantizer_params", {}), position=_pos(arrays, f"{kind}_pos:0", path, wrapper_name)
            )
        )
    outs = qconfig.get("quantizable_outputs", []) or []
    for i, q in zip(outs, qconfig.get("output_quantizers", []) or [], strict=False):
        specs.append(
            QuantizerSpec.from_params(
                f"output_{i}",
                "output",
                q.get("quantizer_params", {}),
                position=_pos(arrays, f"output_{i}_pos:0", path, wrapper_name),
            )
        )
    return specs, act


def load_quantized_model(path: str | os.PathLike[str]) -> VitisQuantizedModel:
    """Read a Vitis ``quantized.h5``; :class:`QInspectError` if the file is not one."""
    import h5py

    from qinspect.errors import first_line
    from qinspect.io.model_file import sniff

    path = str(path)
    if not os.path.exists(path):
        raise QInspectError("no such file or folder", path)
    if sniff(path) != "hdf5":  # an empty file, a folder, a zip: said what it is, as every command does
        raise QInspectError("not a Vitis quantized.h5 (an HDF5 file)", path)
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise QInspectError(f"damaged or truncated HDF5 file ({first_line(exc)})", path) from None
    with f:
        refuse_outside_data(f, path)  # before anything reads an object another file could hold
        raw = f.attrs.get("model_config")
        if raw is None:
            raise QInspectError("not a Vitis quantized model: the HDF5 file has no model_config", path)
        try:
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
            raise QInspectError("not a Vitis quantized model: model_config is not JSON", path) from None
        layer_cfgs = (config.get("config") or {}).get("layers")
        if not isinstance(layer_cfgs, list):
            raise QInspectError("not a Vitis quantized model: model_config lists no layers", path)
        classes = {lc.get("class_name") for lc in layer_cfgs}
        if WRAPPER not in classes and VQUANT not in classes:
            raise QInspectError(
                "not a Vitis quantized model: no Vitis>QuantizeWrapper or Vitis>VitisQuantize layer "
                "(is this the float model?)",
                path,
            )
        weights_group = f["model_weights"] if "model_weights" in f else f
        layers: list[QuantizedLayer] = []
        n_calls = {
            str(lc.get("name") or (lc.get("config") or {}).get("name")): len(lc.get("inbound_nodes") or [])
            for lc in layer_cfgs
        }
        for lc in layer_cfgs:
            name = lc.get("name") or lc.get("config", {}).get("name")
            cls = lc.get("class_name", "")
            cfg = lc.get("config", {}) or {}
            arrays = _read_weights(weights_group, name)
            calls = _call_inbounds(lc, n_calls)
            inbound = calls[0]
            if cls == VQUANT:
                q = (cfg.get("quantizer") or {}).get("config", {})
                position = _pos(arrays, f"{name}_pos:0", path, name)
                spec = QuantizerSpec.from_params("input", "input", q, position=position)
                layers.append(
                    QuantizedLayer(name, name, "VitisQuantize", "VitisQuantize", cfg, inbound, quantizers=[spec])
                )
            elif cls == WRAPPER:
                inner = cfg.get("layer") or {}
                inner_cls = str(inner.get("class_name", "")).split(">")[-1]
                inner_cfg = inner.get("config", {}) or {}
                if not isinstance(cfg.get("quantize_config"), dict):
                    # every wrapper the quantizer writes has one; without it the layer's quantizers (and
                    # their positions) are unknown, and emulating it unquantized would be a wrong number
                    raise QInspectError(f"damaged Vitis quantized model: layer {name} (QuantizeWrapper) has no "
                                        "quantize_config", path)
                qconf = (cfg.get("quantize_config") or {}).get("config", {}) or {}
                specs, act = _wrapper_quantizers(name, inner, qconf, arrays, path)
                weights = {}
                for k, v in arrays.items():
                    short = k[:-2] if k.endswith(":0") else k
                    if short.endswith(("_pos", "_min", "_max")) or short == "optimizer_step":
                        continue
                    weights[short] = np.asarray(v, dtype=np.float32)
                layers.append(
                    QuantizedLayer(
                        name,
                        inner_cfg.get("name", name),
                        "QuantizeWrapper",
                        inner_cls,
                        inner_cfg,
                        inbound,
                        act,
                        specs,
                        weights,
                    )
                )
            else:
                weights = {k[:-2] if k.endswith(":0") else k: np.asarray(v, np.float32) for k, v in arrays.items()}
                layers.append(
                    QuantizedLayer(
                        name,
                        name,
                        cls.split(">")[-1],
                        cls.split(">")[-1],
                        cfg,
                        inbound,
                        _activation_name(cfg.get("activation")),
                        [],
                        weights,
                    )
                )
            # A shared layer: one entry per later call, on that call's inputs, sharing the first call's
            # quantizers and weights (one wrapper per layer).
            first = layers[-1]
            for i, call_inbound in enumerate(calls[1:], start=1):
                layers.append(replace(first, name=call_name(name, i), inbound=call_inbound, call=i))
        mc = config.get("config") or {}
        ins = [str(x[0]) for x in mc.get("input_layers", [])] or [
            layer.name for layer in layers if layer.class_name == "InputLayer"
        ]
        outs = [_ref_name(x[0], x[1] if len(x) > 1 else 0, n_calls) for x in mc.get("output_layers", [])]
    return VitisQuantizedModel(path, str(mc.get("name", "")), _topological(layers), ins, outs)


def _topological(layers: list[QuantizedLayer]) -> list[QuantizedLayer]:
    """The layers with every call after its inputs (a later call may read a layer listed after it),
    otherwise in file order."""
    placed: set[str] = set()
    known = {layer.name for layer in layers}
    out: list[QuantizedLayer] = []
    pending = list(layers)
    while pending:
        waiting = []
        for x in pending:  # in file order, each placed as soon as its inputs are: a topological file stays as it is
            if all(i in placed or i not in known for i in x.inbound):
                placed.add(x.name)
                out.append(x)
            else:
                waiting.append(x)
        if len(waiting) == len(pending):  # a cycle: keep the file's order, the graph check reports it
            return out + waiting
        pending = waiting
    return out


# ---------------------------------------------------------------------------------------------
# dump_model folders


@dataclass
class DumpEntry:
    """One tensor the quantizer's ``dump_model`` writes (or would write)."""

    layer: str  # layer name in quantized.h5 (``quant_c1``; ``img`` for an InputLayer)
    tensor: str  # "output" for activations, else the weight's short name ("kernel", "bias", ...)
    kind: str  # "activation" or "weight"
    dtype: str  # "int8" or "float32"
    filename: str  # file name without folder
    position: int | None = None
    path: str | None = None  # where it was found (None: missing)


def expected_dump_files(model: VitisQuantizedModel) -> tuple[list[DumpEntry], list[str]]:
    """Every file ``dump_model(dump_float=True)`` writes for this model, and notes on those it skips.

    Weight names follow the quantizer's ``dump_model_weights``: a weight is dumped when
    ``"quant_" + key.rstrip(":0")`` equals its variable name ``.rstrip(":0")``; the character-set
    ``lstrip("quant_")`` that made ``key`` breaks that for layers whose names start with one of
    ``q u a n t _`` (their weights are silently not dumped by Vitis). Activations follow
    ``dump_model_activations``: every layer gets ``<name>_float.bin``; layers with an input, output
    or activation quantizer also get the int8 ``<name>.bin``.
    """
    entries: list[DumpEntry] = []
    notes: list[str] = []
    for layer in model.layers:
        if layer.call:
            notes.append(f"{layer.name}: a later call of shared layer {layer.first_call}; dump_model writes one "
                         "output per layer (its first call's), so none is expected for it")
            continue
        for q in layer.quantizers:
            if q.kind != "weight":
                continue
            var = f"{layer.name}/{q.weight}:0".rstrip(":0")
            mapped = "quant_" + q.key.rstrip(":0")
            if mapped != var:
                notes.append(
                    f"{layer.name}/{q.weight}: not dumped by Vitis (its key '{q.key}' was mangled by "
                    f"lstrip('quant_'), so '{mapped}' matches no weight)"
                )
                continue
            base = var.replace("/", "_")
            entries.append(DumpEntry(layer.name, q.weight or "", "weight", "int8", base + ".bin", q.position))
            entries.append(DumpEntry(layer.name, q.weight or "", "weight", "float32", base + "_float.bin"))
    for layer in model.layers:
        if layer.call:
            continue
        base = layer.name.replace("/", "_")
        entries.append(DumpEntry(layer.name, "output", "activation", "float32", base + "_float.bin"))
        oq = layer.output_quantizer
        if oq is not None:
            entries.append(DumpEntry(layer.name, "output", "activation", "int8", base + ".bin", oq.position))
    return entries, notes


_FOLDER_HOLDS = {"dump_results_0": "the activations", "dump_results_weights": "the weights"}


@dataclass
class DumpFolder:
    """A ``dump_results`` folder matched against what the quantized model makes Vitis write."""

    root: str
    entries: list[DumpEntry]  # expected files (``path`` None where missing)
    unmapped: list[str]  # .bin files in the folder that map to no tensor of the model
    notes: list[str]
    # dump_model's folders that are not there and leave the dump incomplete, never a match (dump_results_0:
    # without the activations nothing the DPU computes is compared; dump_results_weights, which dump_model
    # always writes: without it no int8 weight is compared)
    absent: list[str] = field(default_factory=list)
    # .txt copies in the dump of files that are missing as .bin (never read: only the .bin files are compared)
    text_only: list[str] = field(default_factory=list)

    @property
    def absent_described(self) -> list[str]:
        """The absent folders as the messages name them: "dump_results_0/ (the activations)"."""
        return [f"{name}/ ({_FOLDER_HOLDS.get(name, 'tensors')})" for name in self.absent]

    @property
    def missing(self) -> list[DumpEntry]:
        """Expected files that are not in the folder."""
        return [e for e in self.entries if e.path is None]

    def read(self, entry: DumpEntry, count: int) -> np.ndarray:
        """The flat array of one file, checked to hold exactly ``count`` values."""
        assert entry.path is not None
        size = data_file_size(entry.path, "the dump has a tensor's .bin file")
        dtype = np.int8 if entry.dtype == "int8" else np.float32
        itemsize = np.dtype(dtype).itemsize
        if size != count * itemsize:
            raise QInspectError(
                f"holds {size} bytes but tensor {entry.layer}/{entry.tensor} needs {count} {entry.dtype} "
                f"values ({count * itemsize} bytes){size_hint(size, count, itemsize)}",
                entry.path,
            )
        return np.fromfile(entry.path, dtype=dtype)


# what a file of another element size most likely holds, by its bytes per value
_WIDTHS = {1: "int8", 2: "int16 (or float16)", 4: "float32 (or int32)", 8: "float64 (or int64)"}


def size_hint(size: int, count: int, itemsize: int) -> str:
    """The likely cause of a dump file holding ``size`` bytes where ``count`` values of ``itemsize`` bytes
    belong, as a parenthesis for the message: exactly another element size (float32 written instead of
    int8: 4x), else smaller (truncated) or larger (more data than the tensor); "" when nothing fits."""
    if count > 0 and size > 0 and size % count == 0 and size // count in _WIDTHS and size // count != itemsize:
        width = size // count
        ratio = f"{width // itemsize}x" if width > itemsize else f"1/{itemsize // width}"
        return (f" ({ratio} the size: {_WIDTHS[width]} values written where dump_model writes "
                f"{_WIDTHS[itemsize].split(' ')[0]}?)")
    if size == 0:
        return " (empty: an interrupted dump?)"
    if size < count * itemsize:
        return " (truncated?)"
    return " (more data than the tensor: another shape or more samples?)"


def _dump_dirs(root: Path) -> tuple[Path | None, Path | None]:
    acts = weights = None
    if root.name.startswith("dump_results_") and root.name != "dump_results_weights":
        acts = root
        sib = root.parent / "dump_results_weights"
        weights = sib if sib.is_dir() else None
    elif root.name == "dump_results_weights":
        weights = root
        sib = root.parent / "dump_results_0"
        acts = sib if sib.is_dir() else None
    else:
        a = root / "dump_results_0"
        w = root / "dump_results_weights"
        acts = a if a.is_dir() else None
        weights = w if w.is_dir() else None
    return acts, weights


def open_dump(root: str | os.PathLike[str], model: VitisQuantizedModel) -> DumpFolder:
    """Match a dump folder (``dump_results`` or one of its sub-folders) to a quantized model."""
    rootp = Path(root)
    if not rootp.is_dir():
        raise QInspectError("not a folder (expected a dump_results folder from dump_model)", root)
    for name in ("dump_results_0", "dump_results_weights"):
        if (rootp / name).exists() and not (rootp / name).is_dir():
            raise QInspectError("is not a folder: dump_model writes its tensors' .bin files there", rootp / name)
    acts, weights = _dump_dirs(rootp)
    if acts is None and weights is None:
        raise QInspectError("holds neither dump_results_0/ nor dump_results_weights/", root)
    entries, notes = expected_dump_files(model)
    found: dict[str, str] = {}
    for folder in (acts, weights):
        if folder is None:
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix == ".bin":
                found[f"{folder.name}/{p.name}"] = str(p)
    used: set[str] = set()
    for e in entries:
        folder = weights if e.kind == "weight" else acts
        if folder is None:
            continue
        key = f"{folder.name}/{e.filename}"
        if key in found:
            e.path = found[key]
            used.add(key)
    unmapped = sorted(found[k] for k in found if k not in used)
    entries = _drop_trimmed_float_weights(entries, notes)
    absent = []
    if acts is not None and acts.name == "dump_results_0":
        others = sorted(p.name for p in acts.parent.glob("dump_results_*")
                        if p.is_dir() and p.name not in ("dump_results_0", "dump_results_weights"))
        if others:
            notes.append(f"{', '.join(others)} beside dump_results_0 not compared: the inputs are compared with "
                         "batch 0 (dump_model predicts one batch)")
    if acts is None:
        absent.append("dump_results_0")
        entries = [e for e in entries if e.kind != "activation"]
    if weights is None and any(e.kind == "weight" for e in entries):
        # dump_model always writes it (dump_model_weights runs first, weights_only or not): without it the int8
        # weights go uncompared, so the dump is incomplete, as without dump_results_0
        absent.append("dump_results_weights")
    if weights is None:
        entries = [e for e in entries if e.kind != "weight"]
    txt = _text_copies([e for e in entries if e.path is None], acts, weights)
    if txt:
        notes.append(f"{len(txt)} missing .bin file(s) have a .txt copy in the dump (first "
                     f"{os.path.basename(txt[0])}), which is not read: the .bin files decide, and .txt files are "
                     "never compared")
    return DumpFolder(str(rootp), entries, unmapped, notes, absent, txt)


def _text_copies(missing: list[DumpEntry], acts: Path | None, weights: Path | None) -> list[str]:
    """The ``.txt`` copies dump_model writes beside each ``.bin`` (``np.savetxt`` of the same values) that are
    there for ``missing`` files: they are never read, so a dump holding only them is still incomplete."""
    out = []
    for e in missing:
        folder = weights if e.kind == "weight" else acts
        if folder is not None:
            twin = folder / (e.filename[: -len(".bin")] + ".txt")
            if twin.is_file():
                out.append(str(twin))
    return out


def _drop_trimmed_float_weights(entries: list[DumpEntry], notes: list[str]) -> list[DumpEntry]:
    """Leave out the float32 weight files when *every* one is absent while the int8 ones are there.

    They are plain copies of the weights stored in ``quantized.h5`` (the quantizer writes
    ``layer.get_weights()``), so a folder trimmed of all of them loses no information; the emulator reads
    those weights from ``quantized.h5`` itself. A folder missing only some of them is still incomplete.
    """
    float_w = [e for e in entries if e.kind == "weight" and e.dtype == "float32"]
    int8_w = [e for e in entries if e.kind == "weight" and e.dtype == "int8"]
    if not float_w or any(e.path is not None for e in float_w) or any(e.path is None for e in int8_w):
        return entries
    notes.append(
        f"none of the {len(float_w)} float weight files (*_float.bin in dump_results_weights/) is present; "
        "they are copies of the weights stored in the quantized model, so only the int8 weights are compared"
    )
    return [e for e in entries if not (e.kind == "weight" and e.dtype == "float32")]
