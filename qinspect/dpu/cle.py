"""Cross-layer equalization as the Vitis quantizer does it (``include_cle``, ``cle_steps`` = 10).

Per step, four patterns are matched in this order, each over the layers in model order, each pair
equalized once per step (the quantizer's ModelTransformer):

1. ConvConv: a Conv2D / DepthwiseConv2D (tail) whose single input is a Conv2D / DepthwiseConv2D
   (head) with activation ``linear`` or ``relu``;
2. ConvActConv: tail (activation ``linear``) <- ``Activation(linear|relu)`` <- head;
3. ConvReLUConv and 4. ConvReLUPadConv: tail <- ``ReLU`` [<- ZeroPadding2D] <- head, where the
   quantizer's pattern asks for ``max_value`` matching ``0``: a ReLU layer's config holds ``None``
   (or ``6.0``), so with the default ``cle_to_relu6=False`` these two never match. Reproduced as is.

Intermediate layers (the head, the activation, the padding) must have exactly one consumer.

Scale per channel, float32 as the quantizer's numpy code: ``s = sqrt(max|tail| / max|head|)``
(the head's max includes its bias), clipped to [0.1, 10], ``s = 1`` where
``max|head| + max|tail| < 0.1``; head kernel and bias are multiplied by ``s``, the tail's matching
input channels divided by ``s``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

CONV_CLASSES = ("Conv2D", "DepthwiseConv2D")


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


def find_pairs(layers: list[Any], consumers: Callable[[str], list[Any]], by_name: dict[str, Any],
               act_of: Callable[[Any], str]) -> list[tuple[str, Any, Any]]:
    """The (pattern, head, tail) pairs of one CLE step, in the quantizer's order."""

    def single(layer: Any) -> bool:
        return len(consumers(layer.name)) == 1 and not layer.is_output

    def inp(layer: Any) -> Any | None:
        if len(layer.inbound) != 1:
            return None
        return by_name.get(layer.inbound[0])

    found: list[tuple[str, Any, Any]] = []
    # 1. ConvConv
    for tail in layers:
        if tail.cls not in CONV_CLASSES:
            continue
        head = inp(tail)
        if head is not None and head.cls in CONV_CLASSES and act_of(head) in ("linear", "relu") and single(head):
            found.append(("ConvConv", head, tail))
    # 2. ConvActConv
    for tail in layers:
        if tail.cls not in CONV_CLASSES or act_of(tail) != "linear":
            continue
        act = inp(tail)
        if act is None or act.cls != "Activation" or act_of(act) not in ("linear", "relu") or not single(act):
            continue
        head = inp(act)
        if head is not None and head.cls in CONV_CLASSES and single(head):
            found.append(("ConvActConv", head, tail))
    # 3./4. ConvReLUConv, ConvReLUPadConv: the ReLU pattern needs str(max_value) to match "0".
    for pad in (False, True):
        for tail in layers:
            if tail.cls not in CONV_CLASSES or act_of(tail) != "linear":
                continue
            mid = inp(tail)
            if pad:
                if mid is None or mid.cls != "ZeroPadding2D" or not single(mid):
                    continue
                mid = inp(mid)
            if mid is None or mid.cls != "ReLU" or str(mid.cfg.get("max_value")) != "0" or not single(mid):
                continue
            head = inp(mid)
            if head is not None and head.cls in CONV_CLASSES and single(head):
                found.append(("ConvReLUPadConv" if pad else "ConvReLUConv", head, tail))
    return found


def cross_layer_equalize(layers: list[Any], consumers: Callable[[str], list[Any]], by_name: dict[str, Any],
                         act_of: Callable[[Any], str], steps: int = 10,
                         threshold: float = 0.1) -> list[tuple[str, str, str, float]]:
    """Run ``steps`` CLE steps in place. Returns (pattern, head, tail, max |log10 s| of the last step)
    for every equalized pair."""
    pairs: dict[tuple[str, str, str], float] = {}
    for _ in range(steps):
        for pattern, head, tail in find_pairs(layers, consumers, by_name, act_of):
            s = equalize_pair(head, tail, threshold)
            with np.errstate(divide="ignore", invalid="ignore"):
                spread = float(np.nanmax(np.abs(np.log10(s)))) if s.size else 0.0
            pairs[(pattern, head.name, tail.name)] = spread
    return [(p, h, t, v) for (p, h, t), v in pairs.items()]
