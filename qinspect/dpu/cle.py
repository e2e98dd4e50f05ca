"""Cross-layer equalization as the Vitis quantizer does it (``include_cle``, ``cle_steps`` = 10).

Per step, four patterns are matched in this order, each over the layers in model order, each pair
equalized once per step (the quantizer's ModelTransformer):

1. ConvConv: a Conv2D / DepthwiseConv2D (tail) whose single input is a Conv2D / DepthwiseConv2D
   (head) with activation ``linear`` or ``relu``;
2. ConvActConv: tail <- ``Activation(linear|relu)`` <- head (activation ``linear``);
3. ConvReLUConv: tail <- ``ReLU`` <- head (``linear``), where the quantizer's pattern asks for
   ``max_value`` printing as ``None``: a plain ReLU matches, a ReLU6 does not;
4. ConvReLUPadConv: tail <- ZeroPadding2D <- ``ReLU`` <- head, where the pattern asks for ``max_value``
   printing as ``0``, which no ReLU layer's config holds: it never matches by default. Reproduced as is
   (vai_q_tensorflow2 3.5, checked on ``refcases/vitis/mbv3small``, whose ReLU -> ZeroPadding2D ->
   depthwise pairs are left alone while its ReLU -> conv pairs are equalized).

``cle_to_relu6=True`` drops every activation condition of the four patterns (ReLU6 pairs, and padded
pairs, are then equalized too).

Intermediate layers (the head, the activation, the padding) must have exactly one consumer.

A grouped Conv2D (``groups`` > 1, kernel ``(kh, kw, in / groups, out)``) as the tail is left alone: the
quantizer's formula takes the tail's per-input-channel maxima from the kernel's third axis, which for a
grouped conv has ``in / groups`` entries against the head's ``in`` channels, so its code stops there with
a shape error (RegNet's stages). :func:`cross_layer_equalize` reports such pairs as skipped. A grouped
conv as the head lines up (its output channels are the tail's input channels) and is equalized as the code does.
A DepthwiseConv2D head with ``depth_multiplier`` > 1 does not: the code reshapes its kernel to its input
channels (``in``) while its bias and the tail hold ``in * multiplier``, and stops there the same way; such
pairs are skipped and reported too.

Scale per channel, float32 as the quantizer's numpy code: ``s = sqrt(max|tail| / max|head|)``
(the head's max includes its bias), clipped to [0.1, 10], ``s = 1`` where
``max|head| + max|tail| < 0.1``; head kernel and bias are multiplied by ``s``, the tail's matching
input channels divided by ``s``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from qinspect.dpu.cpu_layers import conv_groups

CONV_CLASSES = ("Conv2D", "DepthwiseConv2D")


def _grouped(layer: Any) -> bool:
    # a grouped Conv2D run as a DepthwiseConv2D (one group per channel) is still grouped to the quantizer
    return layer.params.get("keras_groups", 1) > 1 or (layer.cls == "Conv2D" and conv_groups(layer.cfg) > 1)


def _multiplier_head(layer: Any) -> bool:
    """A depthwise head with several outputs per input channel (the quantizer's formula stops there)."""
    return layer.cls == "DepthwiseConv2D" and int(layer.cfg.get("depth_multiplier", 1) or 1) > 1


def _kernel_name(layer: Any) -> str:
    return "depthwise_kernel" if layer.cls == "DepthwiseConv2D" else "kernel"


def _calc_scale(head: np.ndarray, tail: np.ndarray, threshold: float) -> np.ndarray:
    a = np.max(tail, axis=0)
    b = np.max(head, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(a / b)
    scale = np.clip(scale, 1e-1, 10)
    i_max = np.max(head, axis=0)
    o_max = np.max(tail, axis=0)
    scale[(i_max + o_max) < threshold] = 1
    return scale


def equalize_pair(head: Any, tail: Any, threshold: float = 0.1) -> np.ndarray:
    """Equalize one head/tail pair in place (float32, the quantizer's formulas); returns the scales."""
    hk = head.weights[_kernel_name(head)]
    if head.cls == "Conv2D":
        oc = hk.shape[3]
    else:
        oc = hk.shape[2]
    hw = [hk.reshape(-1, oc)]
    has_bias = "bias" in head.weights
    if has_bias:
        hw.append(head.weights["bias"].reshape(1, -1))
    tk = tail.weights[_kernel_name(tail)]
    ic = tk.shape[2]
    tw = tk.transpose(0, 1, 3, 2).reshape(-1, ic) if tail.cls == "Conv2D" else tk.reshape(-1, ic)
    head_abs = np.abs(np.concatenate(hw, axis=0))
    tail_abs = np.abs(tw)
    scale = _calc_scale(head_abs, tail_abs, threshold)
    if head.cls == "Conv2D":
        head.weights["kernel"] = hk * scale.reshape(1, 1, 1, -1)
    else:
        head.weights["depthwise_kernel"] = hk * scale.reshape(1, 1, -1, 1)
    if has_bias:
        head.weights["bias"] = head.weights["bias"] * scale
    tail.weights[_kernel_name(tail)] = tk / scale.reshape(1, 1, -1, 1)
    return scale


def _config_matches(value: Any, pattern: str) -> bool:
    """The quantizer's config test: ``str(value)`` fully matches one ``|``-separated regex of ``pattern``."""
    return any(re.match("^" + p + "$", str(value)) is not None for p in pattern.split("|"))


def find_pairs(layers: list[Any], consumers: Callable[[str], list[Any]], by_name: dict[str, Any],
               act_of: Callable[[Any], str], cle_to_relu6: bool = False) -> list[tuple[str, Any, Any]]:
    """The (pattern, head, tail) pairs of one CLE step, in the quantizer's order.

    Patterns as in ``vitis_equalization_transforms`` (the tail is the pattern's head node, so only the
    layers before it must have a single consumer). Without ``cle_to_relu6``: ConvConv needs the head's
    activation ``linear|relu``; ConvActConv the Activation's ``linear|relu``; ConvReLUConv a ReLU whose
    ``max_value`` prints as ``None`` (a plain ReLU, or a ReLU6 after ``convert_relu6_to_relu``);
    ConvReLUPadConv a ReLU whose ``max_value`` prints as ``0``, which no ReLU layer has. With
    ``cle_to_relu6`` those activation conditions are dropped, so ReLU6 (and any ReLU) pairs equalize too.
    """

    def single(layer: Any) -> bool:
        return len(consumers(layer.name)) == 1 and not layer.is_output

    def inp(layer: Any) -> Any | None:
        if len(layer.inbound) != 1:
            return None
        return by_name.get(layer.inbound[0])

    def conv_head(layer: Any | None, act_pattern: str | None) -> bool:
        if layer is None or layer.cls not in CONV_CLASSES or not single(layer):
            return False
        return act_pattern is None or _config_matches(act_of(layer), act_pattern)

    loose = cle_to_relu6
    found: list[tuple[str, Any, Any]] = []
    tails = [layer for layer in layers if layer.cls in CONV_CLASSES]
    # 1. ConvConv
    for tail in tails:
        head = inp(tail)
        if conv_head(head, None if loose else "linear|relu"):
            found.append(("ConvConv", head, tail))
    # 2. ConvActConv
    for tail in tails:
        act = inp(tail)
        if act is None or act.cls != "Activation" or not single(act):
            continue
        if not loose and not _config_matches(act_of(act), "linear|relu"):
            continue
        head = inp(act)
        if conv_head(head, "linear"):
            found.append(("ConvActConv", head, tail))
    # 3. ConvReLUConv (max_value "None"), 4. ConvReLUPadConv (max_value "0")
    for pad, max_pattern in ((False, "None"), (True, "0")):
        for tail in tails:
            mid = inp(tail)
            if pad:
                if mid is None or mid.cls != "ZeroPadding2D" or not single(mid):
                    continue
                mid = inp(mid)
            if mid is None or mid.cls != "ReLU" or not single(mid):
                continue
            if not loose and not _config_matches(mid.cfg.get("max_value"), max_pattern):
                continue
            head = inp(mid)
            if conv_head(head, "linear"):
                found.append(("ConvReLUPadConv" if pad else "ConvReLUConv", head, tail))
    return found


def cross_layer_equalize(layers: list[Any], consumers: Callable[[str], list[Any]], by_name: dict[str, Any],
                         act_of: Callable[[Any], str], steps: int = 10, threshold: float = 0.1,
                         cle_to_relu6: bool = False,
                         head_scales: dict[str, np.ndarray] | None = None,
                         skipped: list[tuple[str, str, str, str]] | None = None
                         ) -> list[tuple[str, str, str, float]]:
    """Run ``steps`` CLE steps in place. Returns (pattern, head, tail, max |log10 s| of the last step)
    for every equalized pair; ``head_scales`` (when given) receives each head's product of scales over
    all steps (its output channels were multiplied by it); ``skipped`` (when given) the (pattern, head,
    tail, why) of each pair left alone because the quantizer's formula stops there (a grouped Conv2D
    tail, a depthwise head with a depth multiplier)."""
    pairs: dict[tuple[str, str, str], float] = {}
    for step in range(steps):
        for pattern, head, tail in find_pairs(layers, consumers, by_name, act_of, cle_to_relu6):
            # the patterns match them; the formula does not apply (module docstring)
            why = ("grouped tail" if _grouped(tail) else "multiplier head" if _multiplier_head(head) else "")
            if why:
                if skipped is not None and step == 0:  # the same pairs match at every step
                    skipped.append((pattern, head.name, tail.name, why))
                continue
            s = equalize_pair(head, tail, threshold)
            if head_scales is not None:
                prev = head_scales.get(head.name)
                head_scales[head.name] = s.astype(np.float32) if prev is None else (prev * s).astype(np.float32)
            with np.errstate(divide="ignore", invalid="ignore"):
                spread = float(np.nanmax(np.abs(np.log10(s)))) if s.size else 0.0
            pairs[(pattern, head.name, tail.name)] = spread
    return [(p, h, t, v) for (p, h, t), v in pairs.items()]
