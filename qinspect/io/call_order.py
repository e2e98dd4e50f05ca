"""The order in which Keras (tf_keras, the Keras the Vitis quantizer runs) executes a model's calls.

It matters for shared layers only: the quantizer wraps a layer once, and during calibration each
call of the wrapper assigns the batch's position to the one shared variable, so the value the
quantizer records after a batch is the one of the call that ran *last*.

tf_keras' ``Functional._run_internal_graph`` runs ``nodes_by_depth`` from the deepest depth to 0 and,
within a depth, in the order ``_map_graph_network`` first put each node into its depth dict: walking
the post-order of a depth-first search from the outputs (each node's inputs in call order) backwards,
the output node first, then each node's parents in input order. A shared layer's calls all get the
largest depth any of them has. This module repeats that walk on a :class:`ModelGraph`.

Nested models are taken flattened (their leaves ordered as if they were the outer model's), which is
Keras' own order whenever a nested model's calls do not interleave with other layers at one depth.
"""

from __future__ import annotations

from qinspect.io.graph import OUTPUT_SEP, ModelGraph


def keras_node(graph: ModelGraph, name: str) -> str:
    """The entry standing for the Keras node of ``name``: extra outputs (``split:1``) are ``split``'s."""
    layer = graph[name]
    suffix = f"{OUTPUT_SEP}{layer.output_index}"
    return name[: -len(suffix)] if layer.output_index and name.endswith(suffix) else name


def keras_call_order(graph: ModelGraph) -> list[str]:
    """Leaf entries (one per Keras node, extra outputs left out) in the order tf_keras runs them."""
    post: list[str] = []
    done: set[str] = set()
    for out in graph.outputs:
        _visit(graph, keras_node(graph, out), post, done)
    depth: dict[str, int] = {}  # insertion order matters, as in Keras' dict
    layer_depth: dict[str, int] = {}
    for name in reversed(post):
        d = depth.setdefault(name, 0)
        owner = graph[name].owner
        d = max(d, layer_depth.get(owner, 0))
        layer_depth[owner] = d
        depth[name] = d
        for parent in _parents(graph, name):
            depth[parent] = max(d + 1, depth.get(parent, 0))
    order = sorted(range(len(depth)), key=lambda i: -list(depth.values())[i])  # stable: ties keep insertion
    names = list(depth)
    return [names[i] for i in order]


def _parents(graph: ModelGraph, name: str) -> list[str]:
    return [keras_node(graph, i) for i in graph[name].inbound if i in graph]


def _visit(graph: ModelGraph, name: str, post: list[str], done: set[str]) -> None:
    """Iterative depth-first post-order (deep models would overflow Python's recursion)."""
    stack: list[tuple[str, int]] = [(name, 0)]
    while stack:
        node, i = stack.pop()
        if node in done:
            continue
        parents = _parents(graph, node)
        if i < len(parents):
            stack.append((node, i + 1))
            if parents[i] not in done:
                stack.append((parents[i], 0))
            continue
        done.add(node)
        post.append(node)
