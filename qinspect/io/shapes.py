"""Output-shape inference from a layer's stored config, without TensorFlow.

Shapes are lists with ``None`` for unknown dimensions (the batch dimension is always ``None``).
``infer_output_shape`` returns ``None`` when it cannot tell (an unknown class, an unknown input
shape, a config it does not understand): a missing shape is better than a wrong one.

The rules follow Keras' own ``compute_output_shape`` for the built-in layers listed in
``_RULES``; each rule is a small function of ``(config, input_shapes, call_kwargs)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from qinspect.io import op_shapes
from qinspect.io.keras_classes import INACTIVE_AT_INFERENCE

Shape = list[int | None]
_Rule = Callable[[dict[str, Any], list[Shape], dict[str, Any]], Shape | None]


def _tuple(value: Any, rank: int) -> list[int]:
    """Keras' normalize_tuple: an int is repeated, a sequence is taken as is."""
    if isinstance(value, int):
        return [value] * rank
    return [int(v) for v in value]


def _channels_last(config: dict[str, Any]) -> bool:
    return config.get("data_format") in (None, "channels_last")


def _spatial(shape: Shape, config: dict[str, Any], rank: int) -> tuple[list[int | None], int | None]:
    """Split an input shape into its spatial dims and its channel count."""
    if _channels_last(config):
        return list(shape[1 : 1 + rank]), shape[-1]
    return list(shape[2 : 2 + rank]), shape[1]


def _join(batch: int | None, spatial: list[int | None], channels: int | None, config: dict[str, Any]) -> Shape:
    if _channels_last(config):
        return [batch, *spatial, channels]
    return [batch, channels, *spatial]


def conv_length(n: int | None, kernel: int, stride: int, padding: str, dilation: int = 1) -> int | None:
    """Output length of a convolution or pooling window along one axis (Keras conv_output_length)."""
    if n is None:
        return None
    eff = kernel + (kernel - 1) * (dilation - 1)
    if padding in ("same", "causal"):
        out = n
    elif padding == "valid":
        out = n - eff + 1
    elif padding == "full":
        out = n + eff - 1
    else:
        raise ValueError(padding)
    return max(0, (out + stride - 1) // stride)


def deconv_length(
    n: int | None, kernel: int, stride: int, padding: str, output_padding: int | None, dilation: int = 1
) -> int | None:
    """Output length of a transposed convolution along one axis (Keras deconv_output_length)."""
    if n is None:
        return None
    eff = kernel + (kernel - 1) * (dilation - 1)
    if output_padding is None:
        if padding == "valid":
            return n * stride + max(eff - stride, 0)
        if padding == "full":
            return n * stride - (stride + eff - 2)
        return n * stride  # same
    pad = {"same": eff // 2, "valid": 0, "full": eff - 1}[padding]
    return (n - 1) * stride + eff - 2 * pad + output_padding


def _conv(rank: int, kind: str) -> _Rule:
    def rule(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
        shape = inputs[0]
        if len(shape) != rank + 2:
            return None
        spatial, channels = _spatial(shape, config, rank)
        k = _tuple(config["kernel_size"], rank)
        s = _tuple(config.get("strides", 1), rank)
        d = _tuple(config.get("dilation_rate", 1), rank)
        padding = config.get("padding", "valid").lower()
        if kind == "transpose":
            op = config.get("output_padding")
            op = [None] * rank if op is None else _tuple(op, rank)
            out = [deconv_length(n, k[i], s[i], padding, op[i], d[i]) for i, n in enumerate(spatial)]
        else:
            out = [conv_length(n, k[i], s[i], padding, d[i]) for i, n in enumerate(spatial)]
        if kind == "depthwise":
            filters = None if channels is None else channels * int(config.get("depth_multiplier", 1))
        else:
            filters = int(config["filters"])
        return _join(shape[0], out, filters, config)

    return rule


def _pool(rank: int) -> _Rule:
    def rule(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
        shape = inputs[0]
        if len(shape) != rank + 2:
            return None
        spatial, channels = _spatial(shape, config, rank)
        pool = _tuple(config.get("pool_size", 2), rank)
        strides = config.get("strides")
        s = pool if strides is None else _tuple(strides, rank)
        padding = config.get("padding", "valid").lower()
        out = [conv_length(n, pool[i], s[i], padding) for i, n in enumerate(spatial)]
        return _join(shape[0], out, channels, config)

    return rule


def _global_pool(rank: int) -> _Rule:
    def rule(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
        shape = inputs[0]
        if len(shape) != rank + 2:
            return None
        _, channels = _spatial(shape, config, rank)
        if config.get("keepdims", False):
            return _join(shape[0], [1] * rank, channels, config)
        return [shape[0], channels]

    return rule


def _identity(_config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    return list(inputs[0])


def _dense(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    return [*inputs[0][:-1], int(config["units"])]


def _recurrent(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    """LSTM / GRU / SimpleRNN: the last step's state, or every step's with ``return_sequences``."""
    if config.get("return_state"):
        return None  # several outputs
    units = int(config["units"])
    if config.get("return_sequences"):
        return [*inputs[0][:2], units]
    batch = inputs[0][1] if config.get("time_major") else inputs[0][0]
    return [batch, units]


def _bidirectional(config: dict[str, Any], inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    """Bidirectional(RNN): the wrapped layer's shape; ``concat`` doubles the features."""
    shape = _recurrent((config.get("layer") or {}).get("config") or {}, inputs, kw)
    mode = config.get("merge_mode", "concat")
    if shape is None or mode not in ("concat", "sum", "mul", "ave"):
        return None  # merge_mode None: two outputs
    return [*shape[:-1], shape[-1] * 2] if mode == "concat" else shape


def _time_distributed(config: dict[str, Any], inputs: list[Shape], kw: dict[str, Any]) -> Shape | None:
    """TimeDistributed(layer): the wrapped layer on each step of axis 1."""
    inner = config.get("layer") or {}
    name = str(inner.get("class_name", "")).rsplit(">", 1)[-1]
    step = infer_output_shape(name, inner.get("config") or {}, [[inputs[0][0], *inputs[0][2:]]])
    return None if step is None else [step[0], inputs[0][1], *step[1:]]


def _flatten(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    shape = inputs[0]
    rest = shape[1:]
    if not _channels_last(config) and len(shape) > 2:
        rest = [*shape[2:], shape[1]]
    total = None if any(d is None for d in rest) else math.prod(rest)  # type: ignore[arg-type]
    return [shape[0], total]


def _reshape(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    return op_shapes.reshape_shape(inputs[0], [int(d) for d in config["target_shape"]])


def _permute(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    shape = inputs[0]
    return [shape[0], *[shape[int(d)] for d in config["dims"]]]


def _pairs(value: Any, rank: int) -> list[tuple[int, int]]:
    """ZeroPadding/Cropping amounts: int, (a, b) per axis, or ((lo, hi), ...)."""
    if isinstance(value, int):
        return [(value, value)] * rank
    pairs = []
    for v in value:
        pairs.append((v, v) if isinstance(v, int) else (int(v[0]), int(v[1])))
    return pairs


def _pad_or_crop(rank: int, sign: int, key: str) -> _Rule:
    def rule(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
        shape = inputs[0]
        if len(shape) != rank + 2:
            return None
        spatial, channels = _spatial(shape, config, rank)
        pairs = _pairs(config[key], rank)
        out = [None if n is None else n + sign * (lo + hi) for n, (lo, hi) in zip(spatial, pairs, strict=False)]
        return _join(shape[0], out, channels, config)

    return rule


def _upsample(rank: int) -> _Rule:
    def rule(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
        shape = inputs[0]
        if len(shape) != rank + 2:
            return None
        size = _tuple(config.get("size", 2), rank)
        if rank == 1:  # UpSampling1D is always (batch, steps, features)
            return [shape[0], None if shape[1] is None else shape[1] * size[0], shape[2]]
        spatial, channels = _spatial(shape, config, rank)
        out = [None if n is None else n * f for n, f in zip(spatial, size, strict=False)]
        return _join(shape[0], out, channels, config)

    return rule


def _concatenate(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    return op_shapes.concat_shape(inputs, int(config.get("axis", -1)))


def broadcast(shapes: Sequence[Sequence[int | None]]) -> Shape | None:
    """NumPy broadcasting of shapes with unknown (None) dims; None if they cannot broadcast."""
    rank = max(len(s) for s in shapes)
    out: Shape = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            return None
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return out


def _merge(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    return broadcast(inputs)


def _const_shape(value: Any) -> Shape | None:
    """Shape of a constant argument (a number or a nested list); None if not a plain constant."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return []
    if isinstance(value, list):
        if not value:
            return [0]
        inner = _const_shape(value[0])
        return None if inner is None else [len(value), *inner]
    return None


# Element-wise TensorFlow ops (TFOpLambda "function") and Keras-3 op functions: output = broadcast.
_ELEMENTWISE_OPS = {
    "__operators__.add",
    "math.add",
    "math.add_n",
    "math.subtract",
    "math.multiply",
    "math.truediv",
    "math.divide",
    "math.maximum",
    "math.minimum",
    "math.pow",
    "math.squared_difference",
    "math.multiply_no_nan",
    "math.divide_no_nan",
    "compat.v1.add",
    "add",
    "subtract",
    "multiply",
    "divide",
    "true_divide",
    "maximum",
    "minimum",
    "power",
    # unary
    "nn.relu",
    "nn.relu6",
    "nn.sigmoid",
    "math.sigmoid",
    "nn.tanh",
    "math.tanh",
    "nn.leaky_relu",
    "nn.elu",
    "nn.selu",
    "nn.swish",
    "nn.silu",
    "nn.gelu",
    "math.exp",
    "math.log",
    "math.sqrt",
    "math.rsqrt",
    "math.square",
    "math.abs",
    "math.negative",
    "__operators__.neg",
    "clip_by_value",
    "math.reciprocal",
    "nn.softplus",
    "identity",
    "cast",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "sqrt",
    "square",
    "abs",
    "negative",
    "clip",
    "hard_sigmoid",
    "hard_swish",
    "swish",
    "silu",
}


def _elementwise(config: dict[str, Any], inputs: list[Shape], kwargs: dict[str, Any]) -> Shape | None:
    function = str(config.get("function", ""))
    if function not in _ELEMENTWISE_OPS:
        return None
    shapes = list(inputs)
    for value in kwargs.values():
        if isinstance(value, dict):  # a tensor argument: already among the inputs
            continue
        const = _const_shape(value)
        if const is not None:
            shapes.append(const)
    return broadcast(shapes)


def _tf_op(config: dict[str, Any], inputs: list[Shape], kwargs: dict[str, Any]) -> Shape | None:
    """A TFOpLambda / SlicingOpLambda / KerasOp: elementwise, or one that moves, cuts or reduces."""
    shape = _elementwise(config, inputs, kwargs)
    if shape is not None:
        return shape
    function = str(config.get("function", ""))
    # a Keras 3 operation (the reader marks it with op_class): its config holds the arguments
    twin = op_shapes.keras3_arguments(function, config, kwargs) if "op_class" in config else None
    if twin is not None:
        function, kwargs = twin
    return op_shapes.function_shape(function, inputs, kwargs)


def _resizing(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    shape = inputs[0]
    if len(shape) != 4 or not _channels_last(config):
        return None
    return [shape[0], int(config["height"]), int(config["width"]), shape[3]]


def _dot(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    """Keras ``Dot`` (``batch_dot``): the inputs' other axes, in order; (samples, 1) when none is left."""
    a, b = inputs
    axes = config["axes"]
    ia, ib = ((axes, axes) if isinstance(axes, int) else axes)
    ia, ib = int(ia) % len(a), int(ib) % len(b)
    rest = [d for i, d in enumerate(a) if i not in (0, ia)] + [d for i, d in enumerate(b) if i not in (0, ib)]
    return [a[0], *(rest or [1])]


def _repeat_vector(config: dict[str, Any], inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    shape = inputs[0]
    return [shape[0], int(config["n"]), *shape[1:]] if len(shape) == 2 else None


def _input_layer(config: dict[str, Any], _inputs: list[Shape], _kw: dict[str, Any]) -> Shape | None:
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key) is not None:
            return [None if d is None else int(d) for d in config[key]]
    if config.get("input_shape") is not None:
        return [None, *config["input_shape"]]
    return None


_RULES: dict[str, _Rule] = {
    "InputLayer": _input_layer,
    "Conv1D": _conv(1, "conv"),
    "Conv2D": _conv(2, "conv"),
    "Conv3D": _conv(3, "conv"),
    "Convolution2D": _conv(2, "conv"),
    "DepthwiseConv2D": _conv(2, "depthwise"),
    "DepthwiseConv1D": _conv(1, "depthwise"),
    "SeparableConv2D": _conv(2, "separable"),
    "SeparableConv1D": _conv(1, "separable"),
    "Conv2DTranspose": _conv(2, "transpose"),
    "Conv1DTranspose": _conv(1, "transpose"),
    "Dense": _dense,
    "MaxPooling1D": _pool(1),
    "MaxPooling2D": _pool(2),
    "MaxPool2D": _pool(2),
    "AveragePooling1D": _pool(1),
    "AveragePooling2D": _pool(2),
    "AvgPool2D": _pool(2),
    "GlobalAveragePooling1D": _global_pool(1),
    "GlobalAveragePooling2D": _global_pool(2),
    "GlobalMaxPooling1D": _global_pool(1),
    "GlobalMaxPooling2D": _global_pool(2),
    "GlobalAvgPool2D": _global_pool(2),
    "GlobalMaxPool2D": _global_pool(2),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "ZeroPadding1D": _pad_or_crop(1, +1, "padding"),
    "ZeroPadding2D": _pad_or_crop(2, +1, "padding"),
    "Cropping1D": _pad_or_crop(1, -1, "cropping"),
    "Cropping2D": _pad_or_crop(2, -1, "cropping"),
    "UpSampling1D": _upsample(1),
    "UpSampling2D": _upsample(2),
    "Concatenate": _concatenate,
    "TFOpLambda": _tf_op,
    "SlicingOpLambda": _tf_op,
    "KerasOp": _tf_op,
    "Resizing": _resizing,
    "RepeatVector": _repeat_vector,
    "Dot": _dot,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "SimpleRNN": _recurrent,
    "Bidirectional": _bidirectional,
    "TimeDistributed": _time_distributed,
}
# InceptionResNetV2's CustomScaleLayer is x[0] + x[1] * scale: a merge of two tensors
for _name in ("Add", "Multiply", "Subtract", "Average", "Maximum", "Minimum", "CustomScaleLayer"):
    _RULES[_name] = _merge
# Layers whose output has the shape of their (first) input; also runnable built-ins (keras_config).
SHAPE_PRESERVING = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "ThresholdedReLU",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "Rescaling",
    "Normalization",
    "ActivityRegularization",
    "Masking",
    "Identity",
    "LayerScale",
    "StochasticDepth",
)
for _name in (*SHAPE_PRESERVING, *INACTIVE_AT_INFERENCE):
    _RULES[_name] = _identity


def known_classes() -> set[str]:
    """Layer classes whose output shape this module can infer."""
    return set(_RULES)


def infer_output_shape(
    class_name: str,
    config: dict[str, Any],
    input_shapes: Sequence[Shape | None],
    call_kwargs: dict[str, Any] | None = None,
) -> Shape | None:
    """The output shape of one layer call, or None when it cannot be inferred.

    ``input_shapes`` are the shapes of the layer's inbound tensors in call order (an InputLayer has
    none). A rule that meets a config it does not understand gives None rather than a guess.
    """
    rule = _RULES.get(class_name)
    if rule is None:
        return None
    if class_name != "InputLayer" and (not input_shapes or any(s is None for s in input_shapes)):
        return None
    try:
        return rule(config, [list(s) for s in input_shapes if s is not None], dict(call_kwargs or {}))
    except (KeyError, ValueError, TypeError, IndexError, ZeroDivisionError):
        return None
