"""The error the quantizer's own function replacements cause: sigmoid and swish become the DPU's hard versions.

vai_q_tensorflow2 replaces every ``sigmoid`` with the DPU hard sigmoid ``relu6(x + 3) * 2731/16384`` and
every ``swish`` with ``x * hard_sigmoid(x)`` (:mod:`qinspect.dpu.rewrites`): the quantized model computes
another function than the float one, up to 0.07 apart per activation. The emulator measures against the
float model's true function, so that difference is part of the int8 model's error, and in EfficientNet-style
models (a swish after every conv) often most of it. No position, clipping or rounding remedy touches it, and
listed under those headings it sent users after the wrong thing.

Measured here without any int8 at all: the rewritten graph run in float with the hard functions in place,
against the float model. That output SQNR is a ceiling no quantization remedy passes, and its error power
next to the int8 model's says what share of the output error the replacement causes (noises taken as
additive, as the severity formula does). The remedy tried in the emulator keeps every replaced activation in
float (their true function, no quantizer), all together: one at a time, each gains little.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from qinspect.analysis.findings import Finding, ev, output_cost_db
from qinspect.dpu.dpu_graph import DpuGraph, Node
from qinspect.dpu.executor import Evaluator

MIN_SHARE = 0.05  # share of the output error power below which the replacement is not a finding


def replaced_nodes(graph: DpuGraph) -> list[Node]:
    """The hard sigmoids that stand for a float model's sigmoid or swish (the rewrite keeps the true function
    as ``float_fn``); a hard sigmoid the float model already had is none of them."""
    return [n for n in graph.nodes if n.op == "hard_sigmoid" and n.params.get("float_fn") not in (None, "hard_sigmoid",
                                                                                                   "hard_sigmoid_dpu")]


def hard_function_graph(graph: DpuGraph, nodes: list[Node]) -> DpuGraph:
    """A copy of ``graph`` whose float path computes the DPU hard sigmoid at ``nodes`` (the graph itself keeps
    the true functions)."""
    names = {n.name for n in nodes}
    copies = []
    for n in graph.nodes:
        if n.name in names:
            n = replace(n, params={k: v for k, v in n.params.items() if k != "float_fn"})
        copies.append(n)
    return replace(graph, nodes=copies)


def function_only_powers(graph: DpuGraph, nodes: list[Node], inputs: dict[str, np.ndarray],
                         batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the float output's power and the error power of the float model with the hard functions
    in place (all outputs summed, as the sensitivity's output figures)."""
    from qinspect.analysis.sensitivity import output_powers

    hard = hard_function_graph(graph, nodes)
    n = len(next(iter(inputs.values())))
    signal, noise = [], []
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in inputs.items()}
        ref = Evaluator(graph, "float").run(batch, keep=graph.outputs)
        alt = Evaluator(hard, "float").run(batch, keep=graph.outputs)
        s, d = output_powers(graph, ref, alt)
        signal.append(s)
        noise.append(d)
    return np.concatenate(signal), np.concatenate(noise)


def function_change_finding(graph: DpuGraph, inputs: dict[str, np.ndarray], batch_size: int,
                            output_signal: np.ndarray, output_noise: np.ndarray,
                            label: Callable[[Node], str]) -> Finding | None:
    """A ``function_change`` finding when the replaced activations cause at least :data:`MIN_SHARE` of the
    output error power (``output_signal`` / ``output_noise``: the int8 model's, per sample, on ``inputs``),
    else None. Its severity is that share's estimate until the keep-float remedy is measured."""
    nodes = replaced_nodes(graph)
    if not nodes or not output_noise.size:
        return None
    signal, noise = function_only_powers(graph, nodes, inputs, batch_size)
    total = float(np.sum(output_noise))
    own = float(np.sum(noise))
    if total <= 0.0 or own / total < MIN_SHARE:
        return None
    share = min(1.0, own / total)
    sqnr = 10.0 * math.log10(float(np.sum(signal)) / own) if own > 0 else math.inf
    names = list(dict.fromkeys(label(n) for n in nodes))
    # a swish is x * hard_sigmoid(x): a multiply reading the hard sigmoid and its input (an SE block's sigmoid
    # scales another tensor)
    swish = sum(1 for n in nodes if any(c.op == "multiply" and set(n.inputs) <= set(c.inputs)
                                        for c in graph.consumers(n.name)))
    what = (f"{swish} swish and {len(nodes) - swish} sigmoid activation(s)" if swish and swish < len(nodes)
            else f"{swish} swish activation(s)" if swish else f"{len(nodes)} sigmoid activation(s)")
    evidence = {
        "node": ev(nodes[0].name, "the first replaced activation's emulator node"),
        "replaced": ev(names, "the float model's layers whose sigmoid or swish the quantizer replaces, in model "
                              "order"),
        "what": ev(what, "what the quantizer replaces"),
        "function_only_sqnr_db": ev(sqnr, "output SQNR of the float model with the DPU hard sigmoid / hard swish in "
                                          "place and no int8 at all: a ceiling no quantization remedy passes"),
        "share": ev(share, "the replacement's output error power over the int8 model's (noises taken as additive)"),
        "severity_basis": ev("share", "estimated from the share until the keep-float remedy is measured"),
    }
    advice = (f"The quantizer replaces {what} with the DPU's hard sigmoid (swish becomes x * hard_sigmoid(x)), a "
              "different function; no position or calibration change recovers that. Fine-tune the model with the "
              "hard functions in place (vai_q_tensorflow2's quantize-aware training), or train it with hard-swish / "
              "hard-sigmoid from the start; keeping them all in float (ignore_layers) is measured below.")
    return Finding(names[0], "function_change", output_cost_db(share, 1.0), evidence, advice, affects=names[1:])
