"""Shared mapping from a Keras layer (class + config) to an emulator op, and DPU/CPU placement.

Used by both graph builders (:mod:`qinspect.dpu.rewrites` from a float model and
:mod:`qinspect.dpu.from_quantized` from a Vitis ``quantized.h5``) so that one layer type always
becomes the same node, whichever file it came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qinspect.dpu import cpu_layers, float_ops, tf_functions
from qinspect.dpu.dpu_graph import Node
from qinspect.io.keras_classes import INACTIVE_AT_INFERENCE
from qinspect.io.op_shapes import keras3_arguments

LEAKY_DPU_ALPHA = 26.0 / 256.0

_CONV_CLASSES = {
    "Conv2D": "conv2d",
    "DepthwiseConv2D": "depthwise_conv2d",
    "Conv2DTranspose": "conv2d_transpose",
    "Dense": "dense",
}


def _pair(v: Any, default: int = 1) -> tuple[int, int]:
    if v is None:
        return (default, default)
    if isinstance(v, int | float):
        return (int(v), int(v))
    v = list(v)
    if len(v) == 1:
        return (int(v[0]), int(v[0]))
    return (int(v[0]), int(v[1]))


def act_name(value: Any) -> str:
    """Normalise a Keras activation config to a name (``"linear"`` when absent)."""
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        cfg = value.get("config") or {}
        if isinstance(cfg, str):  # Keras 3 serializes a function as {"module", "class_name": "function", "config"}
            module = str(value.get("module") or "")
            return cfg if module in ("keras.activations", "keras.src.activations", "tf_keras.activations") \
                else f"{module}.{cfg}"  # someone else's function: an unknown activation, never imported
        if not isinstance(cfg, dict):
            return str(value.get("class_name", "")).lower() or "unknown"
        cls = str(value.get("class_name", ""))
        if cls.endswith("NoQuantizeActivation"):
            return "linear"
        if "activation" in cfg:
            return act_name(cfg["activation"])
        return str(cfg.get("name") or cls).lower()
    return str(value)


def keras_activation(name: str, cfg: dict[str, Any]) -> str:
    """The float function an activation name means in the layer's Keras generation: ``hard_sigmoid`` is
    ``clip(0.2 x + 0.5, 0, 1)`` in tf_keras but ``relu6(x + 3) / 6`` in Keras 3."""
    if name == "hard_sigmoid" and not cpu_layers.is_keras3_config(cfg):
        return "hard_sigmoid_tf_keras"
    return name


def avgpool_scale(kh: int, kw: int) -> tuple[float, tuple[int, int] | None]:
    """The quantizer's average-pool rescale factor for a ``kh x kw`` kernel (its float32 value) and the
    DPU ``(K, N)`` pair it simulates (``None`` when there is no rescale): :func:`ops.avgpool_rescale`,
    the one place of the rule (no rescale only when a side exceeds 255)."""
    from qinspect.dpu import ops

    return ops.avgpool_rescale(kh, kw)


def gap_kernel(kh: int, kw: int) -> tuple[int, int]:
    """Kernel the DPU uses for a global average pool over ``kh x kw`` (the quantizer's rule: a
    rectangle becomes the lcm square when that is at most 8)."""
    if kh == kw:
        return kh, kw
    import math

    lcm = kh * kw // math.gcd(kh, kw)
    return (lcm, lcm) if lcm <= 8 else (kh, kw)


# TFOpLambda functions run as float CPU nodes: elementwise with a scalar, or a known activation.
_TF_SCALAR = {
    "__operators__.add": "add", "math.add": "add", "math.multiply": "mul", "__operators__.mul": "mul",
    "math.subtract": "sub", "__operators__.sub": "sub", "math.truediv": "div", "__operators__.truediv": "div",
}
_TF_ACT = {"nn.relu": "relu", "nn.relu6": "relu6", "math.sigmoid": "sigmoid", "nn.sigmoid": "sigmoid",
           "math.tanh": "tanh", "nn.tanh": "tanh", "nn.softmax": "softmax", "nn.silu": "swish",
           "nn.swish": "swish", "nn.gelu": "gelu", "nn.elu": "elu"}


# Keras 3 operations (``KerasOp``) named like the TensorFlow functions above.
_KERAS_OPS = {"numpy.add": "__operators__.add", "numpy.multiply": "math.multiply", "numpy.subtract": "math.subtract",
              "numpy.true_divide": "math.truediv", "numpy.divide": "math.truediv", "nn.relu": "nn.relu",
              "nn.relu6": "nn.relu6", "nn.sigmoid": "nn.sigmoid", "numpy.tanh": "math.tanh", "nn.silu": "nn.silu",
              "nn.gelu": "nn.gelu"}


_OP_CONFIG_KEYS = ("name", "function", "op_class", "trainable", "dtype")


def keras_op_as_tf_op(cfg: dict[str, Any], call_kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Keras 3 operation in its TFOpLambda form: ``x + 3`` is ``numpy.add`` with ``arg1 = 3`` in Keras 3
    and ``__operators__.add`` with ``y = 3`` in tf_keras; the same model converted for the quantizer has
    the latter, so both get the same rewrites (the hard-sigmoid pattern) and nodes."""
    fn = str(cfg.get("function", ""))
    kwargs = dict(call_kwargs)
    cuts = cfg.get("indices_or_sections")
    if fn == "numpy.split" and (isinstance(cuts, int) or (isinstance(cuts, list) and cuts
                                                          and all(isinstance(c, int) for c in cuts))):
        # N equal sections, as tf.split(x, N); or numpy's cut points (not tf.split's sizes)
        axis = int(cfg.get("axis", 0) or 0)
        how = {"num_or_size_splits": cuts} if isinstance(cuts, int) else {"split_indices": list(cuts)}
        return {**cfg, "function": "split"}, {**kwargs, **how, "axis": axis}
    if fn.rsplit(".", 1)[-1] in float_ops.ACTIVATION_ARGS:
        # ops.elu(x, alpha=0.5): Keras 3 keeps the call's arguments in the operation's config
        kwargs.update({k: v for k, v in cfg.items() if k not in _OP_CONFIG_KEYS and k not in kwargs})
    number = [v for k, v in call_kwargs.items() if k in ("arg0", "arg1") and isinstance(v, int | float)]
    commutative = fn in ("numpy.add", "numpy.multiply")
    if len(number) == 1 and "y" not in kwargs and (commutative or "arg1" in call_kwargs):
        kwargs["y"] = number[0]
    return {**cfg, "function": _KERAS_OPS.get(fn, fn)}, kwargs


def _tf_op(node: Node, cfg: dict[str, Any], call_kwargs: dict[str, Any], keras_op: bool = False) -> None:
    fn = str(cfg.get("function", ""))
    p = node.params
    y = call_kwargs.get("y")
    if fn in _TF_SCALAR and isinstance(y, int | float) and len(node.inputs) == 1:
        node.op, p["fn"], p["y"] = "scalar", _TF_SCALAR[fn], float(y)
    elif fn in _TF_SCALAR and len(node.inputs) == 2 and _TF_SCALAR[fn] in ("add", "mul"):
        node.op = "add" if _TF_SCALAR[fn] == "add" else "multiply"
    elif fn in ("split", "unstack") and len(node.inputs) == 1:
        # One node per output (qinspect.io.graph): params["output_index"] (set by the builder) picks it.
        node.op, p["fn"] = "split", fn
        p["axis"] = int(call_kwargs.get("axis", call_kwargs.get("arg2", 0)) or 0)
        if fn == "split" and "split_indices" in call_kwargs:  # Keras 3 ops.split(x, [cut, ...])
            p["indices"] = [int(c) for c in call_kwargs["split_indices"]]
        elif fn == "split":
            p["sizes"] = call_kwargs.get("num_or_size_splits", call_kwargs.get("arg1"))
    elif keras_op and fn.rsplit(".", 1)[-1] in float_ops.ACTIVATION_ARGS and len(node.inputs) == 1 and \
            float_ops.needs_arguments(fn.rsplit(".", 1)[-1], cpu_layers.activation_arguments(fn, call_kwargs)):
        # an activation operation called with other arguments than the activation's by name (an unknown
        # one: not emulated, never computed at a default it was not called with)
        name = fn.rsplit(".", 1)[-1]
        args = cpu_layers.activation_arguments(name, call_kwargs)
        if set(args) - set(float_ops.ACTIVATION_ARGS[name]):
            p["class_name"] = f"KerasOp({fn}) with arguments {sorted(args)}"
            return
        node.op = "cpu_layer"
        p.update(layer="elementwise", config={**cfg, "function": name}, call_kwargs=dict(call_kwargs),
                 reason=cpu_layers.cpu_reason("elementwise") + f" ({fn}"
                 + "".join(f", {k}={v!r}" for k, v in args.items()) + ")")
    elif fn in _TF_ACT and len(node.inputs) == 1:
        a = _TF_ACT[fn]
        if a == "softmax":
            node.op, p["axis"] = "softmax", int(call_kwargs.get("axis", -1) or -1)
        else:
            node.op, p["name"] = "activation", a
    elif cpu_layers.elementwise_name(fn) is not None:
        node.op = "cpu_layer"
        p.update(layer="elementwise", config=dict(cfg), call_kwargs=dict(call_kwargs),
                 reason=cpu_layers.cpu_reason("elementwise") + f" ({fn})")
    elif keras_op and (twin := keras3_arguments(fn, cfg, call_kwargs)) is not None \
            and tf_functions.supports(twin[0], twin[1], len(node.inputs)):
        node.op = "cpu_layer"
        p.update(layer="tf_function", config={**cfg, "function": twin[0]}, call_kwargs=twin[1],
                 reason=cpu_layers.cpu_reason(f"Keras operation {fn}"))
    elif tf_functions.supports(fn, call_kwargs, len(node.inputs)):
        node.op = "cpu_layer"
        p.update(layer="tf_function", config=dict(cfg), call_kwargs=dict(call_kwargs),
                 reason=cpu_layers.cpu_reason(f"TensorFlow function {fn}"))
    else:
        p["class_name"] = f"{'KerasOp' if keras_op else 'TFOpLambda'}({fn})"


def _per_channel(value: Any) -> float | list[float]:
    """A Rescaling scale or offset: a number, or a flat list of numbers (one per channel)."""
    if isinstance(value, list | tuple):
        return [float(v) for v in np.asarray(value, np.float64).reshape(-1)]
    return float(value)


def layer_node(name: str, cls: str, cfg: dict[str, Any], inputs: list[str],
               weights: dict[str, np.ndarray], act: str | None = None,
               call_kwargs: dict[str, Any] | None = None) -> Node:
    """The node for one (rewritten) Keras layer. Slots and placement are set by the caller."""
    cls = cls.split(">")[-1]
    cfg = cfg or {}
    node = Node(name=name, op="unsupported", inputs=list(inputs), weights=dict(weights))
    p = node.params
    if cls != "?":
        p["keras_class"] = cls  # what the user's model calls it, for messages ("TFOpLambda", not "cpu_layer")
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        _tf_op(node, cfg, call_kwargs or {})
        return node
    if cls == "KerasOp":
        _tf_op(node, *keras_op_as_tf_op(cfg, call_kwargs or {}), keras_op=True)
        return node
    # a grouped Conv2D is a Conv2D to the quantizer (its registry matches the class, not ``groups``); its
    # integer kernel runs group by group (qinspect.dpu._conv_core). Other grouped convolutions are not emulated.
    if cls in _CONV_CLASSES and ((cpu_layers.conv_groups(cfg) > 1 and cls != "Conv2D")
                                 or cfg.get("data_format", "channels_last") == "channels_first"):
        p["class_name"] = f"{cls} with groups={cfg.get('groups')}, data_format={cfg.get('data_format')}"
        return node
    if cls in _CONV_CLASSES:
        node.op = _CONV_CLASSES[cls]
        p["act"] = keras_activation(act if act is not None else act_name(cfg.get("activation")), cfg)
        if node.op != "dense":
            p["strides"] = _pair(cfg.get("strides"))
            p["padding"] = str(cfg.get("padding", "valid")).lower()
            p["dilation"] = _pair(cfg.get("dilation_rate"))
        if node.op == "conv2d_transpose":  # None: Keras' own output size; else extra rows / columns
            op = cfg.get("output_padding")
            p["output_padding"] = None if op is None else _pair(op)
        if node.op == "depthwise_conv2d":
            p["depth_multiplier"] = int(cfg.get("depth_multiplier", 1))
    elif cls == "ReLU":
        mv = cfg.get("max_value")
        slope = float(cfg.get("negative_slope", 0.0) or 0.0)
        thr = float(cfg.get("threshold", 0.0) or 0.0)
        node.op = "relu"
        p.update(max_value=None if mv is None else float(mv), negative_slope=slope, threshold=thr)
    elif cls == "Activation":
        a = keras_activation(act if act is not None else act_name(cfg.get("activation")), cfg)
        if a == "relu":
            node.op, p["max_value"], p["negative_slope"], p["threshold"] = "relu", None, 0.0, 0.0
        elif a == "relu6":
            node.op, p["max_value"], p["negative_slope"], p["threshold"] = "relu", 6.0, 0.0, 0.0
        elif a == "softmax":
            node.op, p["axis"] = "softmax", -1
        elif a in float_ops.ACTIVATIONS:
            node.op, p["name"] = "activation", a
        else:  # no float implementation: the capture's recorded output stands in, or one line says so
            p["class_name"] = f"Activation({a})"
    elif cls == "LeakyReLU":
        node.op = "leaky_relu"
        alpha = cfg.get("alpha", cfg.get("negative_slope", 0.3))
        p["alpha"] = float(alpha)
    elif cls == "PReLU":
        node.op = "prelu"
        p["shared_axes"] = cfg.get("shared_axes")
    elif cls == "VitisSigmoid":
        node.op = "hard_sigmoid"
    elif cls == "Softmax":
        node.op = "softmax"
        ax = cfg.get("axis", -1)
        p["axis"] = int(ax[0] if isinstance(ax, list) else ax)
    elif cls == "Add":
        node.op = "add"
    elif cls == "Multiply":
        node.op = "multiply"
    elif cls == "Concatenate":
        node.op = "concat"
        p["axis"] = int(cfg.get("axis", -1))
    elif cls == "MaxPooling2D":
        node.op = "max_pool"
        p["pool"] = _pair(cfg.get("pool_size"), 2)
        p["strides"] = _pair(cfg.get("strides") or cfg.get("pool_size"), 2)
        p["padding"] = str(cfg.get("padding", "valid")).lower()
    elif cls in ("AveragePooling2D", "VitisAveragePooling2D"):
        node.op = "avg_pool"
        p["pool"] = _pair(cfg.get("pool_size"), 2)
        p["strides"] = _pair(cfg.get("strides") or cfg.get("pool_size"), 2)
        p["padding"] = str(cfg.get("padding", "valid")).lower()
        kh, kw = p["pool"]
        if kh == kw:
            p["rescale"], p["dpu_factor"] = avgpool_scale(kh, kw)
        else:
            # The quantizer's quirk: VitisAveragePooling2D.build gives a non-square kernel no rescale,
            # unless the pool covers its whole input (a 1 x 1 output) and its lcm square is <= 8: that
            # depends on the input's size, so the executor applies it (executor._global_like_rescale).
            p["rescale"], p["dpu_factor"] = 1.0, None
    elif cls in ("GlobalAveragePooling2D", "VitisGlobalAveragePooling2D"):
        node.op = "global_avg_pool"
        p["keepdims"] = bool(cfg.get("keepdims", False))
    elif cls == "UpSampling2D" and str(cfg.get("interpolation", "nearest")) in ("nearest", "bilinear"):
        node.op = "upsample"
        p["size"] = _pair(cfg.get("size"), 2)
        p["interpolation"] = str(cfg.get("interpolation", "nearest"))
    elif cls == "UpSampling2D":
        # bicubic, area, lanczos...: no numpy implementation here; an unsupported layer, so a capture's
        # recorded output stands in for it (as for any layer qinspect cannot compute), said beside it
        p["class_name"] = f"UpSampling2D({cfg.get('interpolation')})"
    elif cls == "ZeroPadding2D":
        node.op = "zero_pad"
        pad = cfg.get("padding", 1)
        if isinstance(pad, int):
            pad = ((pad, pad), (pad, pad))
        elif isinstance(pad, list | tuple) and pad and isinstance(pad[0], int):
            pad = ((pad[0], pad[0]), (pad[1], pad[1]))
        p["padding"] = tuple(tuple(int(v) for v in axis) for axis in pad)
    elif cls == "Flatten":
        node.op = "flatten"
    elif cls == "Reshape":
        node.op = "reshape"
        p["target_shape"] = [int(v) for v in cfg.get("target_shape", [])]
    elif cls == "Permute":
        node.op = "permute"
        p["dims"] = [int(v) for v in cfg.get("dims", [])]
    elif cls in ("InputLayer",):
        node.op = "input"
    elif cls == "BatchNormalization":
        node.op, p["epsilon"] = "batchnorm", float(cfg.get("epsilon", 1e-3))
    elif cls in ("Subtract", "Maximum", "Minimum", "Average"):
        node.op, p["fn"] = "elementwise", cls.lower()
    elif cls in ("GlobalMaxPooling2D",):
        node.op, p["keepdims"] = "global_max_pool", bool(cfg.get("keepdims", False))
    elif cls == "Cropping2D":
        crop = cfg.get("cropping", ((0, 0), (0, 0)))
        if isinstance(crop, int):
            crop = ((crop, crop), (crop, crop))
        elif crop and isinstance(crop[0], int):
            crop = ((crop[0], crop[0]), (crop[1], crop[1]))
        node.op, p["cropping"] = "crop", tuple(tuple(int(v) for v in a) for a in crop)
    elif cls == "Rescaling":  # a number, or one per channel (a list, broadcast over the last axis)
        node.op, p["fn"] = "scalar", "affine"
        p["scale"], p["offset"] = _per_channel(cfg.get("scale", 1.0)), _per_channel(cfg.get("offset", 0.0))
    elif cls in ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "ActivityRegularization") or cls in INACTIVE_AT_INFERENCE:
        node.op = "identity"
    elif cpu_layers.supports(cls, cfg):
        node.op = "cpu_layer"
        p.update(layer=cls, config=cfg, reason=cpu_layers.cpu_reason(cls))
    else:
        node.params["class_name"] = cls
    return node


# why a layer the DPU could run has no quantizer in the quantized model (both graphs say it alike)
UNQUANTIZED = "left unquantized by the quantizer (runs in float)"


def dpu_placement(node: Node) -> tuple[str, str]:
    """``("DPU", "")`` or ``("CPU", why)`` for a node, from its op alone (quantization aside)."""
    op, p = node.op, node.params
    if op == "unsupported":
        return "CPU", (f"layer class {p.get('class_name', '?')} is not a DPU operator and has no numpy "
                       "implementation: from a capture, its recorded float output stands in for it, so int8 "
                       "error before it does not reach the layers after it")
    if op == "cpu_layer":
        return "CPU", str(p.get("reason", "runs in float on the CPU"))
    if op == "scalar":
        return "CPU", f"elementwise op with a constant ({p.get('fn')}) is not a DPU operator"
    if op == "split":
        return "CPU", f"TF op {p.get('fn')} runs in float on the CPU (the emulator does not convert it)"
    if op == "batchnorm":
        rank = len(node.output_shape) if node.output_shape else None
        return "CPU", ("a BatchNormalization that follows no conv becomes a 1x1 depthwise conv in the quantizer, "
                       "which needs an image tensor (N, H, W, C)" + (f"; this one's has rank {rank}" if rank else "")
                       + ": kept float here (what the quantizer does with it is not checked against a real run)")
    if op in ("elementwise", "global_max_pool", "crop"):
        what = f"elementwise {p.get('fn')}" if op == "elementwise" else op.replace("_", " ")
        return "CPU", f"{what} is not quantized by the Vitis pof2s quantizer"
    if op == "softmax":
        return "CPU", "softmax stays float on the CPU, where Vitis pof2s keeps it"
    if op == "activation" and p.get("keras_class") in ("TFOpLambda", "KerasOp"):
        # tf.nn.relu / keras.ops.relu inline: relu itself runs on a DPU, but not as a TensorFlow operation
        return "CPU", (f"{p.get('name')} called as a TensorFlow / Keras operation: the quantizer does not convert "
                       "operations to Keras layers, so it stays float on the CPU")
    if op == "activation" and p.get("name") in ("hard_silu", "hard_swish"):
        return "CPU", (f"Keras 3 activation '{p.get('name')}': the Vitis quantizer (Keras 2) has no rule for it and "
                       "leaves it float, with no quantizer on either side; tf_keras's MobileNetV3 writes hard-swish "
                       "as TensorFlow operations, which the quantizer makes the DPU hard sigmoid times x")
    if op == "activation" and p.get("name") not in ("linear",):
        return "CPU", f"activation '{p.get('name')}' has no DPU implementation"
    if op == "relu":
        mv = p.get("max_value")
        if p.get("negative_slope") or p.get("threshold"):
            return "CPU", "ReLU with a negative slope or threshold has no DPU implementation"
        if mv is not None and float(mv) != 6.0:
            return "CPU", f"ReLU with max_value={mv} has no DPU implementation (only ReLU and ReLU6)"
    if op == "leaky_relu" and abs(float(p.get("alpha", 0.0)) - LEAKY_DPU_ALPHA) > 1e-7:
        return "CPU", f"LeakyReLU alpha {p.get('alpha')} (the DPU only has 26/256 = 0.1015625)"
    if op in ("conv2d", "depthwise_conv2d", "conv2d_transpose", "dense"):
        a = p.get("act", "linear")
        if a not in ("linear", "relu", "relu6"):
            return "CPU", f"activation '{a}' inside {op} has no DPU implementation"
    if op == "upsample" and p.get("interpolation", "nearest") != "nearest":
        return "CPU", (f"{p.get('interpolation')} UpSampling2D: qinspect computes it in float32 on the dequantized "
                       "input (the DPU's own resize kernel is not emulated); whether the compiler maps it onto the "
                       "DPU depends on the target")
    return "DPU", ""
