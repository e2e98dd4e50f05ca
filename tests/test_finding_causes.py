"""A finding names the cause its own remedy proves: a saturation stands only where removing the clipping
helps, and an option that cures a finding's error is said there, not listed as a second cause.

The audit's case (its wsat.h5: a conv with one weight 64x its others, CLE on): a layer clips a few values;
keeping it float gains (its rounding goes), and that gain was credited to "Saturation", whose advice
(lower the position: non-overflow, no clipping) lost output SQNR. Here the same build with numpy weights:
the global average pooling clips, its non-overflow position loses 0.22 dB, keeping it float gains 0.89 dB."""

from __future__ import annotations

import numpy as np
import pytest

from qinspect.analysis.diagnose import MIN_SEVERITY_DB, diagnose
from qinspect.analysis.remedies import float_fix
from qinspect.analysis.sensitivity import display_name, what_if
from qinspect.dpu.emulator import Emulator
from tests.dpu_graph_fixtures import model


def _images(n: int = 48, h: int = 16) -> np.ndarray:
    r = np.random.default_rng(0)
    x = r.uniform(0, 1, (n, h // 4, h // 4, 3)).astype(np.float32)
    return np.repeat(np.repeat(x, 4, 1), 4, 2) + 0.1 * r.standard_normal((n, h, h, 3)).astype(np.float32)


def _glorot(r: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = int(np.prod(shape[:-1]))
    fan_out = shape[-1] * (int(np.prod(shape[:-2])) if len(shape) == 4 else 1)
    lim = np.sqrt(6 / (fan_in + fan_out))
    return r.uniform(-lim, lim, shape).astype(np.float32)


def _build(seed: int = 6):
    r = np.random.default_rng(seed)
    w, layers, prev, ch = {}, [("inp", "InputLayer", {}, [], [None, 16, 16, 3])], "inp", 3
    for i in (1, 2, 3):
        w[f"conv{i}"] = {"kernel": _glorot(r, (3, 3, ch, 16)), "bias": np.zeros(16, np.float32)}
        layers += [(f"conv{i}", "Conv2D", {"filters": 16, "kernel_size": [3, 3], "padding": "same",
                                           "activation": "linear"}, [prev], [None, 16, 16, 16]),
                   (f"act{i}", "Activation", {"activation": "relu"}, [f"conv{i}"], [None, 16, 16, 16])]
        prev, ch = f"act{i}", 16
    w["logits"] = {"kernel": _glorot(r, (16, 10)), "bias": np.zeros(10, np.float32)}
    layers += [("gap", "GlobalAveragePooling2D", {}, [prev], [None, 16]),
               ("logits", "Dense", {"units": 10, "activation": "linear"}, ["gap"], [None, 10])]
    k = w["conv2"]["kernel"]
    k[0, 0, 0, 5] = 64 * np.abs(k).max()
    return model(layers, ["logits"], w), _images()


@pytest.fixture(scope="module")
def case():
    src, x = _build()
    emu = Emulator.from_model(src, x, batch_size=32)
    return emu.graph, {"inp": x}


def test_clipping_that_costs_nothing_is_not_listed_as_saturation(case):
    graph, data = case
    d = diagnose(graph, data, batch_size=32)
    assert not [f for f in d.findings if f.kind == "saturation" and f.layer == "gap"]
    (note,) = [n for n in d.notes if "clips some values, but that is not what it costs" in n]
    assert note.startswith("gap ")
    # measured apart (the what-if path, not the diagnosis' walks): the coarser positions that clip less
    # lose output SQNR, while keeping the layer float gains what was credited to clipping
    node = next(n for n in graph.nodes if display_name(n) == "gap" and n.out_slot is not None)
    pos = graph.pos(node.out_slot)
    base = what_if(graph, data, batch_size=48).sqnr_db
    for p in (pos - 1, pos - 2):
        assert what_if(graph, data, {node.out_slot: p}, batch_size=48).sqnr_db - base < MIN_SEVERITY_DB
    floated = float_fix([node.name], {}, graph).float_nodes  # the layer's nodes, as ignore_layers floats them
    assert what_if(graph, data, float_nodes=floated, batch_size=48).sqnr_db - base > MIN_SEVERITY_DB


def test_a_quantizer_option_that_cures_a_finding_is_said_there_not_as_a_second_cause():
    """Without CLE the 64x weight spreads conv2's channel ranges: keeping conv2 float and CLE both remove that
    error. CLE was tried for the finding, lost to keep-float, and came back as a second "Quantizer option"
    finding: one error listed as two causes. Now the finding says the option's own figure, the advice rows
    keep both calls, and no second finding."""
    from qinspect.dpu.emulator import recalibrator
    from qinspect.dpu.options import QuantizerOptions

    src, x = _build()
    opts = QuantizerOptions(include_cle=False)
    emu = Emulator.from_model(src, x, batch_size=32, options=opts)
    d = diagnose(emu.graph, {"inp": x}, batch_size=32, rebuild=recalibrator(src, x, opts))
    (spread,) = [f for f in d.findings if f.kind == "channel_spread"]
    second = spread.evidence["option_remedy"]["value"]
    assert second["options"] == {"include_cle": True} and second["measured_gain_db"] < spread.severity_db
    assert "quantizing with include_cle=True gains" in spread.advice
    assert not [f for f in d.findings if f.kind == "quantizer_option"
                and (f.remedy or {}).get("options") == {"include_cle": True}]
    # the option's own figure is a real run: the model calibrated with CLE, measured apart
    on = Emulator.from_model(src, x, batch_size=32, options=opts.with_(include_cle=True))
    want = what_if(on.graph, {"inp": x}, batch_size=48).sqnr_db
    assert second["measured_sqnr_db"] == pytest.approx(want, abs=0.05)
    calls = [row["command"] for row in d.advice]
    assert any("include_cle=True" in c for c in calls) and any("ignore_layers=['conv2']" in c for c in calls)
