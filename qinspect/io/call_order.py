"""The order in which Keras (tf_keras, the Keras the Vitis quantizer runs) executes a model's calls.

It matters for shared layers only: the quantizer wraps a layer once, and during calibration each
call of the wrapper assigns the batch's position to the one shared variable, so the value the
quantizer records after a batch is the one of the call that ran *last*.

tf_keras' ``Functional._run_internal_graph`` runs ``nodes_by_depth`` from the deepest depth to 0 and,
within a depth, in the order ``_map_graph_network`` first put each node into its depth dict: walking
the post-order of a depth-first search from the outputs (each node's inputs in call order) backwards,
the output node first, then each node's parents in input order. A shared layer's calls all get the
largest depth any of them has. This module repeats that walk on a :class:`ModelGraph`.

A call of a nested model is one node of the outer model and runs its own graph, in that graph's
order, as a whole: the walk is done model by model, and each nested call is expanded in place. Where
the flattened graph no longer says it, two orders are approximated, which only decides between calls
that tie on depth: a nested call's inputs are taken in the order its layers read them, and a nested
model's outputs in graph order.
"""

from __future__ import annotations

from qinspect.io.graph import OUTPUT_SEP, Layer, ModelGraph


def keras_node(graph: ModelGraph, name: str) -> str:
    """The entry standing for the Keras node of ``name``: extra outputs (``split:1``) are ``split``'s."""
    layer = graph[name]
    suffix = f"{OUTPUT_SEP}{layer.output_index}"
    return name[: -len(suffix)] if layer.output_index and name.endswith(suffix) else name


def keras_call_order(graph: ModelGraph) -> list[str]:
    """Leaf entries (one per Keras node, extra outputs left out) in the order tf_keras runs them."""
    return _level(graph, None)


def _unit(graph: ModelGraph, name: str, level: str | None) -> str | None:
    """The entry at ``level`` (a direct child of container ``level``) that holds leaf ``name``."""
    layer: Layer = graph[keras_node(graph, name)]
    while layer.parent != level:
        if layer.parent is None:
            return None  # outside this model
        layer = graph[layer.parent]
    return layer.name


def _level(graph: ModelGraph, level: str | None) -> list[str]:
    """The order inside one model (``level``: a container entry, None for the top model), expanded."""
    units = {x.name: _unit(graph, x.name, level) for x in graph.leaves() if not x.output_index}
    inner = [graph[name] for name, unit in units.items() if unit is not None]  # nesting by parent, not by name
    parents: dict[str, list[str]] = {}
    for leaf in inner:
        unit = units[leaf.name]
        into = parents.setdefault(unit, [])
        for i in leaf.inbound:
            src = _unit(graph, i, level) if i in graph else None
            if src is not None and src != unit and src not in into:
                into.append(src)
    if level is None:
        outputs = [_unit(graph, o, None) for o in graph.outputs]
    else:  # what is read outside the nested model, or is a model output
        outside = {i for x in graph.leaves() if units.get(x.name, "") is None for i in x.inbound}
        outputs = [_unit(graph, x.name, level) for x in inner if x.name in outside or x.name in graph.outputs]
    post: list[str] = []
    done: set[str] = set()
    for out in outputs:
        if out is not None:
            _visit(parents, out, post, done)
    depth: dict[str, int] = {}  # insertion order matters, as in Keras' dict
    layer_depth: dict[str, int] = {}
    for name in reversed(post):
        d = depth.setdefault(name, 0)
        owner = graph[name].owner
        d = max(d, layer_depth.get(owner, 0))
        layer_depth[owner] = d
        depth[name] = d
        for parent in parents.get(name, []):
            depth[parent] = max(d + 1, depth.get(parent, 0))
    names = list(depth)
    ranked = sorted(range(len(names)), key=lambda i: -depth[names[i]])  # stable: ties keep insertion
    order: list[str] = []
    for i in ranked:
        unit = graph[names[i]]
        order += _level(graph, unit.name) if unit.is_container else [unit.name]
    return order


def _visit(parents: dict[str, list[str]], name: str, post: list[str], done: set[str]) -> None:
    """Iterative depth-first post-order (deep models would overflow Python's recursion)."""
    stack: list[tuple[str, int]] = [(name, 0)]
    while stack:
        node, i = stack.pop()
        if node in done:
            continue
        mine = parents.get(node, [])
        if i < len(mine):
            stack.append((node, i + 1))
            if mine[i] not in done:
                stack.append((mine[i], 0))
            continue
        done.add(node)
        post.append(node)
