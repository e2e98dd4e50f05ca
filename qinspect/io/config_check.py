"""Refuse layer configs the emulator cannot compute, before any work: one line naming the layer.

A model file can carry values Keras itself would never write (a damaged file, a hand-edited config):
strides of 0, a padding mode that does not exist, an epsilon that is a string, a pooling window larger
than its input. Left to the operators they divide by zero or fail deep in numpy; here they become
``damaged layer config (layer pool1: strides [0, 0] ...)`` with the file's name, exit code 2.
Only fields the emulator reads are checked, and only when present.
"""

from __future__ import annotations

import math
from typing import Any

from qinspect.errors import QInspectError

# Window and step sizes and layer widths: whole numbers >= 1 (an int or one per spatial axis).
_POSITIVE_SIZES = ("strides", "pool_size", "kernel_size", "dilation_rate", "size", "depth_multiplier", "units",
                   "filters")
# Numbers the float and integer operators compute with (None allowed where Keras allows it).
_NUMBERS = ("epsilon", "alpha", "negative_slope", "max_value", "threshold", "theta")
_PADDING_MODES = ("same", "valid", "causal")


def _is_whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _sizes_problem(key: str, value: Any) -> str | None:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(_is_whole(v) and v >= 1 for v in items):
        what = "are not whole numbers" if isinstance(value, (list, tuple)) else "is not a whole number"
        return f"{key} {value!r} {what} of at least 1"
    return None


def _number_problem(key: str, value: Any) -> str | None:
    if value is None and key in ("max_value", "threshold"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{key} {value!r} is not a finite number"
    if key == "epsilon" and value < 0:
        return f"epsilon {value!r} is negative"
    return None


def _empty_axis(layer: Any) -> str | None:
    shape = getattr(layer, "output_shape", None)
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(s, (list, tuple)) for s in shape):
        shape = shape[0]
    if isinstance(shape, (list, tuple)) and any(_is_whole(d) and d <= 0 for d in shape[1:]):
        return f"its output would have no values (shape {list(shape)}): the window is larger than its input"
    return None


def layer_config_problem(layer: Any) -> str | None:
    """What makes one layer's config impossible to compute (``Layer`` of :mod:`qinspect.io.graph`), or None."""
    cfg = layer.config if isinstance(layer.config, dict) else {}
    cls = str(layer.class_name).split(">")[-1]
    for key in ("batch_input_shape", "batch_shape"):  # an InputLayer's (tf_keras, Keras 3)
        shape = cfg.get(key)
        if isinstance(shape, (list, tuple)) and not all(d is None or (_is_whole(d) and d >= 1) for d in shape[1:]):
            return f"input shape {list(shape)} has an axis that is not a whole number of at least 1"
    for key in _POSITIVE_SIZES:
        if cfg.get(key) is None and key in ("units", "filters"):
            continue  # not given (a depthwise conv's filters)
        if key in cfg and not (key == "size" and not cls.startswith("UpSampling")):
            problem = _sizes_problem(key, cfg[key])
            if problem:
                return problem
    for key in _NUMBERS:
        if key in cfg:
            problem = _number_problem(key, cfg[key])
            if problem:
                return problem
    if ("Conv" in cls or "Pool" in cls) and "padding" in cfg and cfg["padding"] not in _PADDING_MODES:
        return f"padding {cfg['padding']!r} is not one of {', '.join(_PADDING_MODES)}"
    if ("Conv" in cls or "Pool" in cls) and "Global" not in cls:
        return _empty_axis(layer)
    return None


def check_layer_configs(layers: Any, path: str | None) -> None:
    """Raise a one-line :class:`QInspectError` for the first layer whose config cannot be computed."""
    for layer in layers:
        problem = layer_config_problem(layer)
        if problem:
            raise QInspectError(f"damaged layer config (layer {layer.name}: {problem})", path)
