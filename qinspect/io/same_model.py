"""Whether two captures (or a model and a capture) are of the same model: one rule for every place that
puts two side by side (``diagnose``/``advise``/``report --eval``, the window's evaluation capture)."""

from __future__ import annotations

from typing import Any

from qinspect.errors import QInspectError


def _leaf_signature(graph: Any) -> dict[str, tuple[str, Any]]:
    return {layer.name: (layer.class_name, layer.output_shape) for layer in graph.leaves()}


def _norm(shape: Any) -> Any:
    """An output shape without its batch axis (a list per output for multi-output layers)."""
    if shape is None:
        return None
    if shape and isinstance(shape[0], list | tuple):  # multi-output layers
        return [_norm(s) for s in shape]
    return [None if d is None else int(d) for d in shape][1:]


def _fmt(shape: Any) -> str:
    return "?" if shape is None else "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def check_same_model(graph_a: Any, path_a: str, graph_b: Any, path_b: str) -> None:
    """A one-line error naming ``path_b`` (and ``path_a`` in its text) when the two graphs differ in a
    layer's name, class or output shape: the second is not of the same model at the same input size."""
    a, b = _leaf_signature(graph_a), _leaf_signature(graph_b)
    only_a = [n for n in a if n not in b]
    only_b = [n for n in b if n not in a]
    if only_a or only_b:
        what = f"layer {only_a[0]!r} missing" if only_a else f"extra layer {only_b[0]!r}"
        raise QInspectError(f"is not a capture of the same model as {path_a} ({what}; "
                            f"{len(only_a)} layer(s) only in {path_a}, {len(only_b)} only here)", path_b)
    for name, (cls, shape) in a.items():
        cls_b, shape_b = b[name]
        if cls != cls_b:
            raise QInspectError(f"layer {name!r} is a {cls_b} here but a {cls} in {path_a}: not the same model",
                                path_b)
        if _norm(shape) != _norm(shape_b):
            raise QInspectError(f"layer {name!r} has output shape {_fmt(shape_b)} here but {_fmt(shape)} in "
                                f"{path_a}: not the same model shapes", path_b)
