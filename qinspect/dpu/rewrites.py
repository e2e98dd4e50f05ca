"""From a float Keras model to the emulator graph, through the rewrites the Vitis quantizer makes.

The order is the quantizer's (DPU_NUMERICS.md section 3, vai_q_tensorflow2 pof2s pipelines):

optimize
  1. remove Dropout;
  2. split activations out of Conv2D / DepthwiseConv2D / Conv2DTranspose / Dense
     (``conv(activation=a)`` -> ``conv`` + ``Activation(a)`` named ``<conv>_<a>``);
  3. split SeparableConv2D into ``<name>_depthwise_conv`` (no bias) + ``<name>_pointwise_conv``
     (1x1, the bias and the activation);
  (``convert_relu6_to_relu``: ReLU6 layers lose their cap here);
  4. fold BatchNormalization into the conv before it (float32, only when the conv is linear and the
     BN is its only consumer); a BN with no conv before it becomes a 1x1 DepthwiseConv2D;
  5. cross-layer equalization (:mod:`qinspect.dpu.cle`), switchable, ``cle_steps`` and ``cle_to_relu6``
     as :class:`~qinspect.dpu.options.QuantizerOptions` say;
quantize
  6. ``Activation(sigmoid)`` -> DPU hard sigmoid; ``Activation(swish)`` -> hard sigmoid + Multiply;
     the TF-op pattern ``relu6(x + 3) * (1/6)`` -> one hard sigmoid named ``vitis_sigmoid``;
     AveragePooling2D / GlobalAveragePooling2D rescaled to the DPU's ``K / 2^N``;
     LeakyReLU alpha 0.1 -> 26/256;
  7. annotate: a linear conv followed (as its only consumer) by ReLU / Activation / LeakyReLU keeps
     no quantizer of its own (the activation's quantizer rounds the fused result); Add / Multiply
     followed by ReLU / Activation likewise;
  8. quantizers: ``quant_<input>`` after each model input (method 0), kernel / bias / alpha
     (min-MSE, half-to-even), every supported layer's output or activation (min-MSE, half-up).
     ReLU / LeakyReLU / Activation layers that were not annotated stay float, and a quantized
     single-input layer reading a float layer gets an input quantizer ``quant_<that layer>``, when the
     float layer has a single reader (the quantizer's pattern matcher refuses a non-head node with
     several consumers: then every reader takes the float tensor).

Every rewrite is recorded in words with the layers it touched (:class:`Rewrite`).

Shared layers: every call of a layer is its own node (``conv``, ``conv@2``), computed from its own
inputs, but the quantizer wraps the *layer* once, so all calls use one set of weights and one set
of quantizers: their slots are keyed by the first call's name (``PLayer.key``), as in
``positions.json``. Layers a rewrite derives from a later call (``conv@2_relu``) are keyed by the
first call's derived name (``conv_relu``). If the rewrites leave a shared layer's calls with different
weights (a shared conv followed by a different BatchNormalization in each call, which one wrapped
layer cannot hold), this is recorded as a ``shared_weights_differ`` rewrite.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.dpu.cle import cross_layer_equalize
from qinspect.dpu.cpu_layers import conv_groups
from qinspect.dpu.dpu_graph import (
    CLE_GROUPED_TAIL,
    CLE_OUT_SCALE,
    QUANTIZER_DIVERGES,
    QUANTIZER_REFUSES,
    DpuGraph,
    Rewrite,
    SlotSpec,
)
from qinspect.dpu.layer_map import (
    LEAKY_DPU_ALPHA,
    UNQUANTIZED,
    act_name,
    dpu_placement,
    keras_op_as_tf_op,
    layer_node,
)
from qinspect.dpu.options import QuantizerOptions
from qinspect.errors import QInspectError
from qinspect.io.call_order import keras_call_order
from qinspect.io.config_check import check_layer_configs
from qinspect.io.graph import ModelGraph
from qinspect.io.keras_classes import INACTIVE_AT_INFERENCE
from qinspect.io.vitis import POST_QUANT_ACTIVATIONS, PRE_QUANT_ACTIVATIONS, strip_quant

_CONV = ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "Dense")
_DROP = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
         "GaussianDropout", "AlphaDropout", "ActivityRegularization")
# Layer types the quantizer's registry quantizes (others stay float).
_QUANTIZABLE = {
    "Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "Dense", "Activation", "ReLU", "LeakyReLU", "PReLU",
    "Add", "Multiply", "Concatenate", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "UpSampling2D", "ZeroPadding2D", "Reshape", "Flatten", "VitisSigmoid",
}  # not Permute: the registry (vitis_pof2s_quantize_strategy.json) has no entry for it
_NO_QUANTIZER = {"ZeroPadding2D", "Reshape", "Flatten"}


@dataclass
class PLayer:
    """A layer being rewritten (a mutable copy of the float model's layer)."""

    name: str
    cls: str
    cfg: dict[str, Any]
    inbound: list[str]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    origin: list[str] = field(default_factory=list)
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    is_output: bool = False
    output_shape: list[int | None] | None = None
    # set by the quantize steps
    annotated: bool = False  # activation chosen to quantize a fused conv / add
    no_output_quant: bool = False  # conv / add whose output the fused activation quantizes
    params: dict[str, Any] = field(default_factory=dict)
    owner: str = ""  # a later call of a shared layer: the first call's name (its weights and quantizers)

    @property
    def key(self) -> str:
        """The name the quantizer knows this layer by: the first call's for every call of a shared layer."""
        return self.owner or self.name

    def derive(self, new: PLayer) -> PLayer:
        """``new``, made from this layer by a rewrite, keyed like the same rewrite of the first call."""
        if self.owner and new.name.startswith(self.name):
            new.owner = self.owner + new.name[len(self.name):]
        return new


class _Model:
    def __init__(self, layers: list[PLayer], inputs: list[str], outputs: list[str]) -> None:
        self.layers = layers
        self.inputs = inputs
        self.outputs = outputs
        self.log: list[Rewrite] = []

    def by_name(self) -> dict[str, PLayer]:
        return {layer.name: layer for layer in self.layers}

    def consumers(self, name: str) -> list[PLayer]:
        return [layer for layer in self.layers if name in layer.inbound]

    def rewire(self, old: str, new: str) -> None:
        for layer in self.layers:
            layer.inbound = [new if i == old else i for i in layer.inbound]
        self.outputs = [new if o == old else o for o in self.outputs]
        for layer in self.layers:
            layer.is_output = layer.name in self.outputs

    def single(self, layer: PLayer) -> bool:
        return len(self.consumers(layer.name)) == 1 and layer.name not in self.outputs

    def insert_after(self, anchor: PLayer, new: PLayer) -> None:
        self.layers.insert(self.layers.index(anchor) + 1, new)

    def record(self, kind: str, text: str, layers: list[str]) -> None:
        self.log.append(Rewrite(kind, text, layers))


# A layer object called more than once in one functional graph: vai_q's ModelTransformer refuses every
# pattern holding a layer with more than one inbound node (``_is_match_supported``, even as the head),
# so no rewrite, fusion, equalization or quantize wrapper ever touches it: it stays a float layer. While
# the rewrites run its class is hidden behind this prefix, so no pattern here matches it either.
_REUSED = "Reused:"


def _hide_reused(m: _Model) -> None:
    """Hide every call of a layer called more than once at one level of the graph (not the calls of a
    nested model called twice, whose layers each have one inbound node in that model's own graph)."""
    # a later call at the same level is named <first call>@<k>; a later call of a nested model's layer
    # is <model>@<k>/<layer>, and keeps its shared emulation
    later = {layer.name: layer.owner for layer in m.layers
             if layer.owner and re.fullmatch(re.escape(layer.owner) + r"@\d+", layer.name)}
    first = set(later.values())
    calls = [layer for layer in m.layers if layer.name in later or layer.name in first]
    for layer in calls:
        layer.cls = _REUSED + layer.cls
    if calls:
        m.record("reused_layer_float", f"{len(calls)} call(s) of layer(s) used more than once "
                 f"({', '.join(sorted({c.key for c in calls}))}) stay float: the quantizer's pattern matcher "
                 "refuses a layer with more than one inbound node, so it neither rewrites nor quantizes one, "
                 "and its readers get no input quantizer", [c.name for c in calls])


def _restore_reused(m: _Model) -> None:
    for layer in m.layers:
        if layer.cls.startswith(_REUSED):
            layer.cls = layer.cls[len(_REUSED):]
            layer.params["reused"] = True


def _act(layer: PLayer) -> str:
    if layer.cls in _CONV or layer.cls == "Activation":
        return act_name(layer.cfg.get("activation"))
    return ""


def _from_graph(graph: ModelGraph, source: Any) -> _Model:
    layers: list[PLayer] = []
    for layer in graph.leaves():
        if not layer.runnable and layer.class_name not in ("InputLayer",):
            pass  # kept: it becomes an unsupported (CPU) node and errors only if it must run
        w = {k: np.asarray(v, dtype=np.float32) for k, v in source.weights(layer.name).items()}
        cls, cfg, kwargs = layer.class_name, copy.deepcopy(layer.config or {}), dict(layer.call_kwargs or {})
        cfg_function = str(cfg.get("function"))
        if cls == "KerasOp" and cfg_function in ("numpy.add", "numpy.multiply"):
            cls = "TFOpLambda"  # x + 3 in Keras 3: the quantizer sees its tf_keras form
            cfg, kwargs = keras_op_as_tf_op(cfg, kwargs)
        p = PLayer(layer.name, cls, cfg, list(layer.inbound), w, [layer.name], kwargs,
                   layer.name in graph.outputs, layer.output_shape)
        p.owner = layer.shares
        if layer.class_name == "KerasOp" and cls == "TFOpLambda":
            p.params["user_class"] = f"KerasOp {cfg_function}"  # what `info` calls it, for the findings
        if layer.output_index:
            p.params["output_index"] = layer.output_index
        layers.append(p)
    return _Model(layers, list(graph.inputs), list(graph.outputs))


# ---------------------------------------------------------------------------------------------
# optimize pipeline


def _remove_dropout(m: _Model) -> None:
    """vai_q's ``RemoveDropout``: pattern ``Dropout`` (the class name, whole) over one input layer that
    has no other reader (its ModelTransformer matches a non-head node only with a single consumer).
    SpatialDropout, GaussianNoise, the Random* augmentation layers, ... are not removed: the registry has
    none of them, so they stay in the quantized model as float identities (recorded here)."""
    by_name = m.by_name()
    for layer in list(m.layers):
        if layer.cls == "Dropout" and len(layer.inbound) == 1:
            src = by_name.get(layer.inbound[0])
            if src is not None and not m.single(src):
                m.record("dropout_kept", f"Dropout {layer.name} kept: its input {src.name} has other readers, "
                         "which the quantizer's RemoveDropout pattern does not match; it stays a float identity",
                         [layer.name])
                continue
            m.layers.remove(layer)
            m.rewire(layer.name, layer.inbound[0])
            m.record("remove_dropout", f"Dropout {layer.name} removed (identity at inference)", [layer.name])
        elif layer.cls in _DROP or layer.cls in INACTIVE_AT_INFERENCE:
            m.record("dropout_kept", f"{layer.cls} {layer.name} kept as a float identity: the quantizer removes "
                     "only Dropout layers and does not quantize this one", [layer.name])


def _separate_conv_act(m: _Model) -> None:
    for layer in list(m.layers):
        if layer.cls not in _CONV:
            continue
        a = _act(layer)
        if a in ("linear", ""):
            continue
        layer.cfg["activation"] = "linear"
        new = layer.derive(PLayer(f"{layer.name}_{a}", "Activation",
                                  {"name": f"{layer.name}_{a}", "activation": a,
                                   "dtype": layer.cfg.get("dtype")},  # tells the Keras generation
                                  [layer.name], origin=[layer.name], output_shape=layer.output_shape))
        m.rewire(layer.name, new.name)
        new.inbound = [layer.name]
        m.insert_after(layer, new)
        new.is_output = new.name in m.outputs
        m.record("separate_activation", f"activation '{a}' of {layer.name} split into Activation layer "
                 f"{new.name}", [layer.name, new.name])


def _convert_relu6_to_relu(m: _Model) -> None:
    """``convert_relu6_to_relu``: vai_q 3.5's ``ConvertReLU6ToReLU`` (pattern ``ReLU|Activation``): a
    ``ReLU`` whose ``max_value`` equals 6.0 loses its cap, and an ``Activation('relu6')`` (one split out of
    a conv too: the split runs first) becomes ``'relu'``.

    The float reference keeps the float model's cap (``float_max_value``), so the change of function
    shows up as error.
    """
    for layer in m.layers:
        if len(layer.inbound) != 1:
            continue
        if layer.cls == "ReLU":
            cap = layer.cfg.get("max_value")
            if not isinstance(cap, (int, float)) or isinstance(cap, bool) or float(cap) != 6.0:
                continue
            layer.cfg.pop("max_value")
            what = f"ReLU6 {layer.name} became a ReLU without cap"
        elif layer.cls == "Activation" and _act(layer) == "relu6":
            layer.cfg["activation"] = "relu"
            what = f"Activation('relu6') {layer.name} became Activation('relu')"
        else:
            continue
        layer.params["float_max_value"] = 6.0
        m.record("convert_relu6_to_relu", f"{what} (convert_relu6_to_relu: a different function above 6; the "
                 "float reference keeps the cap)", [layer.name])


def _grouped_conv_as_depthwise(m: _Model) -> None:
    """A Conv2D with one group per input channel and one filter per group (ConvNeXt writes its
    depthwise convs so) computes exactly a DepthwiseConv2D: run it as one, kernel (kh, kw, 1, C) ->
    (kh, kw, C, 1). Other grouped convs stay Conv2D nodes whose integer kernel runs group by group.
    Either way ``params["keras_groups"]`` keeps the groups (CLE's rule for a grouped tail reads it)."""
    for layer in m.layers:
        k = layer.weights.get("kernel")
        groups = conv_groups(layer.cfg)
        if layer.cls != "Conv2D" or groups <= 1 or k is None or k.ndim != 4:
            continue
        layer.params["keras_groups"] = groups
        if k.shape[2] != 1 or k.shape[3] != groups:
            m.record("grouped_conv", f"Conv2D {layer.name} with groups={groups}: quantized as the quantizer "
                     "quantizes any Conv2D (its registry matches the class, not groups: one kernel position, "
                     "bias and output positions), computed group by group. An assumption: whether the DPU "
                     "compiler runs groups > 1 on the DPU or cuts it out to the CPU is not checked", [layer.name])
            continue
        layer.cls = "DepthwiseConv2D"
        layer.cfg = {**layer.cfg, "groups": 1, "depth_multiplier": 1}
        layer.weights = {("depthwise_kernel" if n == "kernel" else n): (w.transpose(0, 1, 3, 2) if n == "kernel"
                                                                         else w) for n, w in layer.weights.items()}
        m.record("grouped_conv_as_depthwise", f"Conv2D {layer.name} with groups={groups} = its channels is a "
                 "depthwise convolution: emulated as DepthwiseConv2D (an assumption: the quantizer's handling of "
                 "grouped Conv2D was not checked against a real run)", [layer.name])


def _split_separable(m: _Model) -> None:
    for layer in list(m.layers):
        if layer.cls != "SeparableConv2D":
            continue
        c = layer.cfg
        dw_name, pw_name = f"{layer.name}_depthwise_conv", f"{layer.name}_pointwise_conv"
        dw = PLayer(dw_name, "DepthwiseConv2D",
                    {"name": dw_name, "kernel_size": c.get("kernel_size"), "strides": c.get("strides"),
                     "padding": c.get("padding", "valid"), "dilation_rate": c.get("dilation_rate", (1, 1)),
                     "depth_multiplier": c.get("depth_multiplier", 1), "activation": "linear",
                     "use_bias": False},
                    list(layer.inbound), {"depthwise_kernel": layer.weights["depthwise_kernel"]},
                    [layer.name])
        pw_w = {"kernel": layer.weights["pointwise_kernel"]}
        if "bias" in layer.weights:
            pw_w["bias"] = layer.weights["bias"]
        # vai_q 3.5's SeparableConv replacement builds the pointwise Conv2D without the layer's activation
        # (read from its source): the quantized model computes it linear. The float reference keeps the
        # float model's activation (float_post_act), so its loss shows as error.
        a = act_name(c.get("activation"))
        pw = PLayer(pw_name, "Conv2D",
                    {"name": pw_name, "filters": c.get("filters"), "kernel_size": (1, 1), "strides": (1, 1),
                     "padding": "valid", "dilation_rate": (1, 1), "activation": "linear",
                     "use_bias": "bias" in layer.weights},
                    [dw_name], pw_w, [layer.name], output_shape=layer.output_shape)
        if a != "linear":
            pw.params["float_post_act"] = a
        layer.derive(dw)
        layer.derive(pw)
        i = m.layers.index(layer)
        m.layers[i:i + 1] = [dw, pw]
        m.rewire(layer.name, pw_name)
        pw.inbound = [dw_name]
        pw.is_output = pw_name in m.outputs
        m.record("split_separable", f"SeparableConv2D {layer.name} split into DepthwiseConv2D {dw_name} "
                 f"(no bias) and 1x1 Conv2D {pw_name}", [layer.name, dw_name, pw_name])
        if a != "linear":
            m.record(QUANTIZER_DIVERGES, f"vai_q_tensorflow2 3.5's SeparableConv split (read from its source, no "
                     f"real run checked) builds {pw_name} without the layer's activation: its quantized model "
                     f"computes {layer.name} without '{a}', and so does this emulation, against the float "
                     f"model's function (the missing '{a}' is error in every figure after it). Write the "
                     "activation as a layer of its own after the SeparableConv2D to keep it", [layer.name, pw_name])


def _bn_multiplier(bn: PLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = bn.weights
    eps = float(bn.cfg.get("epsilon", 1e-3))
    mv = w["moving_variance"]
    gamma = w.get("gamma") if bn.cfg.get("scale", True) else None
    mult = gamma / np.sqrt(mv + eps) if gamma is not None else 1 / np.sqrt(mv + eps)
    beta = w.get("beta", np.zeros_like(mv))
    return np.asarray(mult, np.float32), beta, w["moving_mean"]


def _bn_axis_ok(bn: PLayer) -> bool:
    ax = bn.cfg.get("axis", -1)
    ax = ax[0] if isinstance(ax, list) and len(ax) == 1 else ax
    rank = len(bn.output_shape) if bn.output_shape else 4
    return ax in (-1, rank - 1)


def _fold_bn(m: _Model) -> None:
    by = m.by_name()
    for bn in list(m.layers):
        if bn.cls != "BatchNormalization" or len(bn.inbound) != 1:
            continue
        conv = by.get(bn.inbound[0])
        if conv is None or conv.cls not in _CONV or _act(conv) != "linear" or not m.single(conv):
            continue
        if not _bn_axis_ok(bn):
            continue
        mult, beta, mm = _bn_multiplier(bn)
        kname = "depthwise_kernel" if conv.cls == "DepthwiseConv2D" else "kernel"
        k = conv.weights[kname]
        if conv.cls == "Dense":
            k2 = k * mult
        elif conv.cls == "Conv2D":
            k2 = k * mult.reshape([1, 1, 1, k.shape[-1]])
        elif conv.cls == "DepthwiseConv2D":  # output channel c * multiplier + j is kernel slot [:, :, c, j]
            k2 = k * mult.reshape([1, 1, k.shape[-2], k.shape[-1]])
        else:  # Conv2DTranspose: output channel on axis 2
            k2 = k * mult.reshape([1, 1, k.shape[-2], 1])
        b = conv.weights.get("bias")
        b2 = beta + (b - mm) * mult if b is not None else beta + (-mm) * mult
        conv.weights[kname] = np.asarray(k2, np.float32)
        conv.weights["bias"] = np.asarray(b2, np.float32)
        conv.cfg["use_bias"] = True
        if "float_post_act" in conv.params:
            # the float model applies the BatchNorm after the activation the quantizer dropped: y = mult * z +
            # offset here, act(z) there; keep (mult, offset) so the float path can put the activation back
            m0, c0 = conv.params.get("float_affine", (np.float32(1), np.float32(0)))
            off = beta - mm * mult
            conv.params["float_affine"] = (np.asarray(m0 * mult, np.float32), np.asarray(c0 * mult + off, np.float32))
        conv.origin.append(bn.name)
        conv.output_shape = bn.output_shape
        m.layers.remove(bn)
        m.rewire(bn.name, conv.name)
        m.record("fold_batchnorm", f"BatchNormalization {bn.name} folded into {conv.cls} {conv.name} "
                 "(W' = W * g / sqrt(var + eps), b' = beta + (b - mean) * g / sqrt(var + eps), float32)",
                 [bn.name, conv.name])
        by = m.by_name()


def _shape_text(shape: Any) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _bn_to_dwconv(m: _Model) -> None:
    for bn in list(m.layers):
        if bn.cls != "BatchNormalization":
            continue
        if bn.output_shape is not None and len(bn.output_shape) != 4:
            # vai_q's ConvertBNToDWConv turns every BatchNormalization left unfolded into a 1x1
            # DepthwiseConv2D without looking at its rank; rebuilding the model then fails (a
            # DepthwiseConv2D needs a 4-D input), so quantize_model stops
            m.record(QUANTIZER_REFUSES, f"its ConvertBNToDWConv makes BatchNormalization {bn.name}, whose "
                     f"output is {_shape_text(bn.output_shape)}, a 1x1 DepthwiseConv2D, which needs a 4-D input, and "
                     "stops (fold it into the Dense or conv before it, or move it before a conv)", [bn.name])
            continue
        if not _bn_axis_ok(bn):
            # A 1x1 depthwise conv needs NHWC; the quantizer cannot convert this one either.
            m.record("batchnorm_kept", f"BatchNormalization {bn.name} (not after a conv, not NHWC channels-last) "
                     "stays a float layer", [bn.name])
            continue
        mult, beta, mm = _bn_multiplier(bn)
        c = mult.shape[0]
        bn.cls = "DepthwiseConv2D"
        bn.cfg = {"name": bn.name, "kernel_size": (1, 1), "strides": (1, 1), "padding": "valid",
                  "dilation_rate": (1, 1), "depth_multiplier": 1, "activation": "linear", "use_bias": True}
        bn.weights = {"depthwise_kernel": mult.reshape(1, 1, c, 1).astype(np.float32),
                      "bias": np.asarray(beta + (-mm) * mult, np.float32)}
        m.record("batchnorm_to_depthwise", f"BatchNormalization {bn.name} with no conv before it became a 1x1 "
                 "DepthwiseConv2D (kernel g / sqrt(var + eps), bias beta - mean * g / sqrt(var + eps))",
                 [bn.name])


def _float_cap(layer: PLayer) -> float | None:
    """The float model's cap of an activation between an equalized pair (None: uncapped)."""
    if "float_max_value" in layer.params:
        return float(layer.params["float_max_value"])
    if layer.cls == "ReLU":
        mv = layer.cfg.get("max_value")
        return None if mv is None else float(mv)
    if layer.cls == "Activation" and _act(layer) == "relu6":
        return 6.0
    return None


def _cle(m: _Model, options: QuantizerOptions) -> None:
    by = m.by_name()
    before = {layer.name: {k: v.copy() for k, v in layer.weights.items()} for layer in m.layers}
    head_scales: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str, str, str]] = []
    pairs = cross_layer_equalize(m.layers, m.consumers, by, _act, steps=options.cle_steps,
                                 cle_to_relu6=options.cle_to_relu6, head_scales=head_scales, skipped=skipped)
    for pattern, head, tail, why in skipped:
        what = (f"{tail} is a grouped Conv2D, whose kernel holds in/groups input channels against the head's "
                "output channels" if why == "grouped tail" else
                f"{head} is a DepthwiseConv2D with depth_multiplier > 1, whose kernel the formula reshapes to its "
                "input channels while its bias and the tail hold input channels times the multiplier")
        m.record(CLE_GROUPED_TAIL,
                 f"{pattern} pair {head} -> {tail} NOT equalized: {what}. The quantizer's CLE formula "
                 "does not line up there and has no check for it: vai_q_tensorflow2 stops with a numpy shape "
                 "error (read from its source, not from a real run), so a real run needs include_cle=False. "
                 "qinspect leaves this pair as the float model has it and equalizes the others", [head, tail])
    for pattern, head, tail, _ in pairs:
        changes = []
        for name in (head, tail):
            layer = by[name]
            kname = "depthwise_kernel" if layer.cls == "DepthwiseConv2D" else "kernel"
            old, new = before[name][kname], layer.weights[kname]
            denom = float(np.max(np.abs(old))) or 1.0
            changes.append(f"{name} max|dW|/max|W| = {float(np.max(np.abs(new - old))) / denom:.3g}")
        m.record("cross_layer_equalization",
                 f"{pattern} pair {head} -> {tail} equalized ({options.cle_steps} steps); " + "; ".join(changes),
                 [head, tail])
        _keep_float_function(m, by, head, tail, head_scales[head])
        _mark_scaled_outputs(by, head, tail, head_scales[head])


def _mark_scaled_outputs(by: dict[str, PLayer], head: str, tail: str, scale: np.ndarray) -> None:
    """The head's output and every tensor between it and the tail hold the float model's values times
    ``scale`` per channel in the quantized model: say so on them (``cle_out_scale``), so views that read
    the float model's tensors (a capture) and compare them with positions scale them first."""
    by[head].params[CLE_OUT_SCALE] = scale
    mid = by[tail].inbound[0]
    while mid != head:
        by[mid].params[CLE_OUT_SCALE] = scale
        mid = by[mid].inbound[0]


# Activations f with f(s * x) = s * f(x) for s > 0: equalizing across them keeps the function.
_HOMOGENEOUS = ("linear", "relu", "")


def _keep_float_function(m: _Model, by: dict[str, PLayer], head: str, tail: str, scale: np.ndarray) -> None:
    """Activations between an equalized pair see the head's output times ``scale`` per channel. Where the
    float model's activation is not scale-invariant (a ReLU6 cap under ``cle_to_relu6`` or one
    ``convert_relu6_to_relu`` removed; a swish, sigmoid, ... that ``cle_to_relu6`` lets ConvActConv match),
    the quantized model computes another function; the float reference keeps the float model's, in the
    quantized model's per-channel scale (the cap times ``scale``; ``scale * f(x / scale)``), so the
    change shows as error."""
    hl = by[head]
    if hl.cls in _CONV and _act(hl) not in _HOMOGENEOUS:
        hl.params["float_act_scale"] = scale  # a split separable conv's pointwise conv keeps its activation
        m.record("cle_across_activation", f"{head}'s own activation '{_act(hl)}' was equalized across (pair "
                 f"{head} -> {tail}): the quantized model computes it on the scaled tensor, a different "
                 "function; the float reference keeps the float model's", [head, tail])
    mid = by[tail].inbound[0]
    while mid != head:
        layer = by[mid]
        cap = _float_cap(layer)
        if layer.cls == "Activation" and cap is None and _act(layer) not in _HOMOGENEOUS:
            layer.params["float_in_scale"] = layer.params["float_out_scale"] = scale
            m.record("cle_across_activation", f"{layer.name} ('{_act(layer)}') lies between the equalized pair "
                     f"{head} -> {tail}: the quantized model applies it to the scaled tensor (scales "
                     f"{float(np.min(scale)):.3g} .. {float(np.max(scale)):.3g}), a different function; the "
                     "float reference keeps the float model's", [layer.name, head, tail])
        if cap is not None:
            layer.params["float_max_value"] = (np.float32(cap) * scale).astype(np.float32)
            uncapped = ("max_value" not in layer.cfg if layer.cls == "ReLU" else
                        layer.cls == "Activation" and _act(layer) != "relu6")
            quantized = "has no cap" if uncapped else f"clips the equalized tensor at {cap:g}"
            m.record("cle_across_cap", f"{layer.name} (float cap {cap:g}) lies between the equalized pair {head} -> "
                     f"{tail}: the quantized model {quantized}, the float model clips at {cap:g} x the channel's "
                     f"scale ({float(np.min(scale)):.3g} .. {float(np.max(scale)):.3g}): a different function",
                     [layer.name, head, tail])
        mid = layer.inbound[0]


# ---------------------------------------------------------------------------------------------
# quantize pipeline


def _is_hsig_pattern(m: _Model, mul: PLayer) -> tuple[PLayer, PLayer] | None:
    by = m.by_name()
    if mul.cls != "TFOpLambda" or mul.cfg.get("function") != "math.multiply" or len(mul.inbound) != 1:
        return None
    relu6 = by.get(mul.inbound[0])
    if relu6 is None or relu6.cls != "ReLU" or str(relu6.cfg.get("max_value")) != "6.0" or not m.single(relu6):
        return None
    add = by.get(relu6.inbound[0]) if len(relu6.inbound) == 1 else None
    if add is None or add.cls != "TFOpLambda" or add.cfg.get("function") != "__operators__.add" \
            or not m.single(add) or len(add.inbound) != 1:
        return None
    return add, relu6


def _vitis_sigmoid_name(m: _Model) -> str:
    names = {layer.name for layer in m.layers}
    if "vitis_sigmoid" not in names:
        return "vitis_sigmoid"
    i = 1
    while f"vitis_sigmoid_{i}" in names:
        i += 1
    return f"vitis_sigmoid_{i}"


def _convert_activations(m: _Model) -> None:
    for layer in list(m.layers):
        a = _act(layer) if layer.cls == "Activation" else ""
        if layer.cls == "Activation" and a == "sigmoid":
            layer.cls = "VitisSigmoid"
            layer.params["float_fn"] = "sigmoid"
            m.record("sigmoid_to_hard_sigmoid", f"sigmoid {layer.name} replaced by the DPU hard sigmoid "
                     "relu6(x + 3) * 2731 / 16384 (a different function: up to 0.07 from the sigmoid)",
                     [layer.name])
        elif layer.cls == "Activation" and a in ("swish", "silu"):
            src = next((x for x in m.layers if x.name == layer.inbound[0]), None)
            if src is not None and not m.single(src):
                # ConvertActivationSwish's pattern holds the swish's input as a non-head node (the Multiply
                # reads it): with another reader the matcher refuses it and the swish stays as it is
                m.record("swish_kept", f"swish {layer.name} kept (not converted to a hard swish): its input "
                         f"{src.name} has other readers, which the quantizer's pattern does not match", [layer.name])
                continue
            sig = layer.derive(PLayer(layer.name, "VitisSigmoid", {"name": layer.name}, list(layer.inbound),
                                      origin=[layer.name], output_shape=layer.output_shape,
                                      params={"float_fn": "sigmoid"}))
            if "float_in_scale" in layer.params:  # equalized across: x * sigmoid(x / s) is s * swish(x / s)
                sig.params["float_in_scale"] = layer.params["float_in_scale"]
            mul = layer.derive(PLayer(f"{layer.name}_mul", "Multiply", {"name": f"{layer.name}_mul"},
                                      [layer.inbound[0], layer.name], origin=[layer.name],
                                      output_shape=layer.output_shape))
            i = m.layers.index(layer)
            m.layers[i:i + 1] = [sig, mul]
            m.rewire(layer.name, mul.name)
            mul.inbound = [sig.inbound[0], sig.name]
            mul.is_output = mul.name in m.outputs
            m.record("swish_to_hard_swish", f"swish {layer.name} replaced by hard sigmoid {sig.name} and "
                     f"Multiply {mul.name} (x * hard_sigmoid(x))", [layer.name, mul.name])
    for layer in list(m.layers):
        found = _is_hsig_pattern(m, layer)
        if found is None:
            continue
        add, relu6 = found
        y_add = add.call_kwargs.get("y")
        y_mul = layer.call_kwargs.get("y")
        if not (isinstance(y_add, int | float) and isinstance(y_mul, int | float)):
            continue
        name = _vitis_sigmoid_name(m)
        sig = PLayer(name, "VitisSigmoid", {"name": name}, list(add.inbound),
                     origin=[add.name, relu6.name, layer.name], output_shape=layer.output_shape,
                     params={"float_fn": "hard_sigmoid"})
        i = m.layers.index(add)
        for x in (add, relu6, layer):
            m.layers.remove(x)
        m.layers.insert(i, sig)
        m.rewire(layer.name, name)
        sig.is_output = name in m.outputs
        m.record("hard_sigmoid_pattern", f"relu6(x + 3) * (1/6) written as {add.name}, {relu6.name}, "
                 f"{layer.name} became one DPU hard sigmoid named {name} (the three names disappear)",
                 [add.name, relu6.name, layer.name, name])
    for layer in m.layers:
        if layer.cls == "LeakyReLU":
            alpha = float(layer.cfg.get("alpha", layer.cfg.get("negative_slope", 0.3)))
            layer.params["float_alpha"] = alpha
            if abs(alpha - 0.1) < 1e-7:
                layer.cfg["alpha"] = LEAKY_DPU_ALPHA
                m.record("leaky_relu_alpha", f"LeakyReLU {layer.name} alpha 0.1 -> 26/256 = 0.1015625 "
                         "(the DPU's fixed leaky slope)", [layer.name])
        elif layer.cls in ("AveragePooling2D", "GlobalAveragePooling2D"):
            m.record("avgpool_rescale", f"{layer.cls} {layer.name} rescaled so the simulation computes the "
                     "DPU's sum * K / 2^N (see its rescale factor)", [layer.name])


def _fused_text(src: Any, act: Any) -> str:
    """The rewrite's sentence: a DPU activation quantizes the conv's result in the same step; a softmax, which
    stays float on the CPU, rounds it at its input quantizer and then runs in float (it quantizes no result)."""
    if act.cls == "Activation" and act.cfg.get("activation") == "softmax":
        return (f"{src.name} output not quantized: the input quantizer of {act.cls} {act.name} (softmax, run in "
                "float on the CPU) rounds the accumulator once")
    return f"{src.name} output not quantized: {act.cls} {act.name} is fused into it and quantizes the result"


def _annotate(m: _Model) -> None:
    by = m.by_name()
    for act in m.layers:
        if act.cls not in ("ReLU", "Activation", "LeakyReLU", "VitisSigmoid") or len(act.inbound) != 1:
            continue
        src = by.get(act.inbound[0])
        if src is None or not m.single(src):
            continue
        if src.cls in _CONV and _act(src) == "linear":
            act.annotated = True
            _check_wrappable_activation(m, act, src)
            if act.cls != "VitisSigmoid":
                src.no_output_quant = True
                m.record("fuse_activation", _fused_text(src, act), [src.name, act.name])
        elif src.cls in ("Add", "Multiply") and act.cls in ("ReLU", "Activation"):
            act.annotated = True
            _check_wrappable_activation(m, act, src)
            src.no_output_quant = True
            m.record("fuse_activation", f"{src.name} output not quantized: {act.cls} {act.name} is fused "
                     "into it and quantizes the result", [src.name, act.name])
        elif src.cls in ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D") and \
                act.cls in ("ReLU", "Activation"):
            act.annotated = True


# Keras names whose function carries another __name__ (QuantizeAwareActivation checks the function's)
_FUNCTION_NAME = {"silu": "swish"}


def _check_wrappable_activation(m: _Model, act: PLayer, src: PLayer) -> None:
    """An Activation the quantizer fuses is wrapped with its QuantizeAwareActivation, which raises (VAILogger
    .error) for a function outside its pre- and post-quantized lists: quantize_model stops there."""
    if act.cls != "Activation":
        return
    name = _act(act)
    if _FUNCTION_NAME.get(name, name) in PRE_QUANT_ACTIVATIONS | POST_QUANT_ACTIVATIONS:
        return
    m.record(QUANTIZER_REFUSES, f"Activation {act.name} ('{name}'), fused into {src.name}, is wrapped with a "
             f"QuantizeAwareActivation, which accepts only the activations it lists and raises on '{name}' "
             "(replace it with a listed activation, or keep it out of the fusion)", [act.name, src.name])


def _unquantized_reason(layer: PLayer) -> str:
    """Why a layer the DPU could run gets no quantizer, by the rule that leaves it out."""
    if layer.params.get("reused"):
        return (f"{UNQUANTIZED}: the layer is called more than once, and the quantizer's pattern matcher "
                "refuses a layer with more than one inbound node, so it neither folds, fuses, equalizes nor "
                "quantizes it (read from vai_q_tensorflow2's ModelTransformer; no real run checked)")
    if layer.cls in ("ReLU", "LeakyReLU", "Activation"):
        return (f"{UNQUANTIZED}: it quantizes an activation only where it fuses "
                "it into the layer before it (a conv or dense; a ReLU also into an add or a pooling), and the "
                "layer before this one is none of those or has other readers; the next quantized layer "
                "quantizes its output (real runs show it for a LeakyReLU after an Add)")
    if layer.cls in _DROP or layer.cls in INACTIVE_AT_INFERENCE:
        return (f"{UNQUANTIZED}: an identity at inference, which the quantizer neither removes (it removes "
                "only Dropout layers with a single-reader input) nor quantizes; the next quantized layer "
                "quantizes its output")
    if layer.cls == "TFOpLambda":
        user = str(layer.params.get("user_class") or "")
        what = (f"a Keras 3 operation written on tensors ({user}; vai_q_tensorflow2 reads Keras 2 models, where "
                "the same code is a TFOpLambda)" if user.startswith("KerasOp") else
                "a TensorFlow operation written on tensors (TFOpLambda)")
        return (f"{UNQUANTIZED}: {what}, which vai_q's pof2s registry has no entry for (it quantizes Keras layers; "
                "only the hard-sigmoid pattern of such operations is converted); the next quantized layer "
                "quantizes its output")
    if layer.cls == "Permute":
        return (f"{UNQUANTIZED}: vai_q's pof2s registry has no entry for Permute (it has Reshape and Flatten); "
                "the next quantized layer quantizes its output")
    return UNQUANTIZED


def _quantized(layer: PLayer) -> bool:
    if layer.cls not in _QUANTIZABLE or layer.params.get("reused"):
        return False
    if layer.cls in ("ReLU", "LeakyReLU", "Activation"):
        return layer.annotated
    return True


def _build_graph(m: _Model, cle: bool) -> DpuGraph:
    g = DpuGraph(nodes=[], inputs=[], outputs=[], source="float-model",
                 weights_from="folded" + (" and equalized (CLE emulated)" if cle else " (CLE off)")
                 + " from the float model's weights")
    name_of: dict[str, str] = {}  # float-layer name -> node name that outputs it
    for layer in m.layers:
        name_of[layer.name] = layer.name if not _quantized(layer) else f"quant_{layer.name}"
    inserted: dict[str, str] = {}
    unquantized_input: set[str] = set()  # float layers whose readers get no input quantizer
    for layer in m.layers:
        if layer.cls == "InputLayer":
            node = layer_node(layer.name, "InputLayer", layer.cfg, [], {})
            node.origin, node.key, node.output_shape = [layer.name], layer.name, layer.output_shape
            node.device, node.cpu_reason = "CPU", "model input (float)"
            g.nodes.append(node)
            qname = f"quant_{layer.name}"
            qn = layer_node(qname, "?", {}, [layer.name], {})
            qn.op, qn.key, qn.origin, qn.output_shape = "quantize", qname, [layer.name], layer.output_shape
            qn.out_slot = g.add_slot(SlotSpec(qname, "input", "input", method=0, round_mode=1))
            g.nodes.append(qn)
            g.inputs.append(layer.name)
            name_of[layer.name] = qname
            continue
        quant = _quantized(layer)
        nname = name_of[layer.name]
        ins = [name_of.get(i, i) for i in layer.inbound]
        if quant and len(ins) == 1 and layer.cls != "InputLayer":
            src = next((x for x in m.layers if x.name == layer.inbound[0]), None)
            floating = src is not None and not _quantized(src) and src.cls != "InputLayer"
            # LayersInputQuantize's pattern takes the float layer as a non-head node, which the quantizer's
            # ModelTransformer matches only with one consumer (a model output counts) and one inbound node
            if floating and (not m.single(src) or src.params.get("reused")):
                if src.name not in unquantized_input:
                    unquantized_input.add(src.name)
                    readers = ", ".join(c.name for c in m.consumers(src.name))
                    why = ("is a call of a layer used more than once" if src.params.get("reused") else
                           f"has other readers ({readers}{', a model output' if src.name in m.outputs else ''})")
                    g.rewrites.append(Rewrite("no_input_quantizer", f"float layer {src.name} {why}: "
                                              "the quantizer inserts no input quantizer after it (its pattern "
                                              "needs a single reader with one inbound node), so its quantized "
                                              "readers take its float output",
                                              [src.name, *(c.name for c in m.consumers(src.name))]))
                if layer.cls == "VitisSigmoid":
                    # its refine pass compares the input position (ipos > 0) with no None check: it raises
                    g.rewrites.append(Rewrite(QUANTIZER_REFUSES, f"its adjust_vitis_sigmoid refines hard sigmoid "
                                              f"{layer.name}, which reads float layer {src.name} without an input "
                                              "quantizer, by comparing an input position that does not exist, "
                                              "and raises (give the hard sigmoid an input the quantizer "
                                              "quantizes)", [layer.name, src.name]))
            elif floating:
                qname, qkey = f"quant_{src.name}", f"quant_{src.key}"
                if qname not in inserted:
                    qn = layer_node(qname, "?", {}, [name_of[src.name]], {})
                    qn.op, qn.key, qn.origin, qn.output_shape = "quantize", qkey, [src.name], src.output_shape
                    qn.out_slot = g.add_slot(SlotSpec(qkey, "input", "input", method=0, round_mode=1))
                    g.nodes.append(qn)
                    inserted[qname] = qname
                    g.rewrites.append(Rewrite("input_quantizer", f"{layer.name} reads float layer {src.name}: "
                                              f"input quantizer {qname} inserted (non-overflow method)",
                                              [src.name, layer.name]))
                ins = [qname]
        act = _act(layer) if layer.cls in _CONV + ("Activation",) else None
        node = layer_node(nname, layer.cls, layer.cfg, ins, layer.weights, act=act, call_kwargs=layer.call_kwargs)
        node.params.update(layer.params)
        node.origin, node.output_shape = list(layer.origin), layer.output_shape
        # Every call of a shared layer has the first call's quantizers (one wrapper per layer).
        lkey = layer.key
        node.key = lkey if quant else ""
        if quant:
            # A grouped Conv2D runs in float on the CPU here: its weights are used as they are, so they
            # get no position slots (none would ever be calibrated).
            for w in ("kernel", "depthwise_kernel", "bias", "alpha"):
                if w in layer.weights and (layer.cls in _CONV or layer.cls == "PReLU") and node.op != "cpu_layer":
                    key = strip_quant(f"quant_{lkey}/{w}:0")
                    node.weight_slots[w] = g.add_slot(SlotSpec(lkey, key, "weight", 1, 0))
            if layer.cls in _CONV:
                if not layer.no_output_quant:
                    a = _act(layer)
                    kind = "pre_activation" if a in PRE_QUANT_ACTIVATIONS else "post_activation"
                    if a in PRE_QUANT_ACTIVATIONS or a in POST_QUANT_ACTIVATIONS:
                        slot = g.add_slot(SlotSpec(lkey, a, kind, 1, 1))
                        if kind == "pre_activation":
                            node.pre_slot = slot
                        else:
                            node.out_slot = slot
            elif layer.cls == "Activation":
                a = _act(layer)
                if a in PRE_QUANT_ACTIVATIONS:
                    node.pre_slot = g.add_slot(SlotSpec(lkey, a, "pre_activation", 1, 1))
                elif a in POST_QUANT_ACTIVATIONS:
                    node.out_slot = g.add_slot(SlotSpec(lkey, a, "post_activation", 1, 1))
            elif layer.cls in _NO_QUANTIZER:
                pass
            elif layer.cls in ("Add", "Multiply") and layer.no_output_quant:
                pass
            else:
                node.out_slot = g.add_slot(SlotSpec(lkey, "output_0", "output", 1, 1))
        device, why = dpu_placement(node)
        if device == "DPU" and not quant:
            device, why = "CPU", _unquantized_reason(layer)
        node.device, node.cpu_reason = device, why
        g.nodes.append(node)
    g.outputs = [name_of.get(o, o) for o in m.outputs]
    g.rewrites = m.log + g.rewrites
    g.reindex()
    return g


def graph_from_float(graph: ModelGraph, source: Any, options: QuantizerOptions | None = None) -> DpuGraph:
    """The emulator graph of a float model: the quantizer's rewrites under ``options`` applied,
    positions unknown."""
    options = options or QuantizerOptions()
    vitis = [layer.name for layer in graph.leaves() if str(layer.class_name).startswith("Vitis>")
             or layer.class_name in ("QuantizeWrapper", "VitisQuantize")]
    if vitis:
        raise QInspectError("is already a Vitis quantized model (layers like " + vitis[0] + "); its positions are "
                            "chosen: use it with emulate --positions or compare-dump", graph.source or None)
    check_layer_configs(graph.leaves(), graph.source or None)
    m = _from_graph(graph, source)
    if not any(layer.cls == "InputLayer" for layer in m.layers):
        raise QInspectError("the model has no InputLayer", graph.source or None)
    _hide_reused(m)
    _remove_dropout(m)
    _separate_conv_act(m)
    if options.convert_relu6_to_relu:
        _convert_relu6_to_relu(m)
    _grouped_conv_as_depthwise(m)
    _split_separable(m)
    _fold_bn(m)
    _bn_to_dwconv(m)
    if options.include_cle:
        _cle(m, options)
    else:
        m.record("cross_layer_equalization", "cross-layer equalization switched off (--no-cle)", [])
    _convert_activations(m)
    _annotate(m)
    _restore_reused(m)
    _check_shared_weights(m)
    g = _build_graph(m, options.include_cle)
    g.options = options
    if options.narrow_activations:
        g.narrow_activations()
    g.keras_names = {lay.name: lay.short_name for lay in graph.leaves() if lay.short_name != lay.name}
    rank = {name: i for i, name in enumerate(keras_call_order(graph))}
    g.call_rank = {n.name: rank[n.origin[0]] for n in g.nodes if n.origin and n.origin[0] in rank}
    return g


def _check_shared_weights(m: _Model) -> None:
    """Record shared layers whose calls the rewrites left with different weights (see the module doc)."""
    first: dict[str, PLayer] = {}
    for layer in m.layers:
        if not layer.weights:
            continue
        ref = first.setdefault(layer.key, layer)
        if ref is layer:
            continue
        same = ref.weights.keys() == layer.weights.keys() and all(
            np.array_equal(ref.weights[k], layer.weights[k]) for k in ref.weights
        )
        if not same:
            m.record("shared_weights_differ", f"calls {ref.name} and {layer.name} of shared layer {layer.key} "
                     "ended with different folded / equalized weights (a rewrite touched one call only); each "
                     "call is emulated with its own, which one quantized layer cannot hold", [ref.name, layer.name])
