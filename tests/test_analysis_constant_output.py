"""A float output that is the same for every sample makes the output SQNR meaningless, and diagnose says so.

Random-weight MobileNetV3 and EfficientNet showed "output SQNR inf dB" while every layer before the
softmax was at 0 dB: their activations collapse, the softmax sits at 1/classes for every input.
"""

from __future__ import annotations

import numpy as np

from qinspect.analysis.diagnose import diagnose
from qinspect.dpu.emulator import Emulator
from tests.dpu_graph_fixtures import model


def _head(kernel_scale: float):
    rng = np.random.default_rng(5)
    w = {"fc": {"kernel": (rng.normal(size=(16, 4)) * kernel_scale).astype(np.float32),
                "bias": np.array([0.5, -0.25, 0.125, 0.0], np.float32)}}
    src = model([("x", "InputLayer", {}, [], [None, 16]),
                 ("fc", "Dense", {"units": 4, "activation": "linear"}, ["x"], [None, 4]),
                 ("sm", "Softmax", {"axis": -1}, ["fc"], [None, 4])], ["sm"], w)
    x = rng.uniform(-1, 1, (24, 16)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=24)
    return diagnose(emu.graph, {"x": x}, batch_size=24, with_sensitivity=False)


def test_an_output_that_never_changes_is_said_to_describe_a_constant():
    d = _head(0.0)  # the inputs never reach the output: softmax of the bias alone
    assert any("output 'sm' is nearly the same for every sample (exactly the same)" in n for n in d.notes)


def test_a_model_whose_output_follows_its_input_gets_no_such_note():
    d = _head(1.0)
    assert not any("nearly the same for every sample" in n for n in d.notes)


def test_a_dead_output_is_said_to_be_one_not_read_as_a_perfect_infinite_sqnr():
    """An output that is exactly 0 everywhere showed 'output SQNR inf dB' (0/0) with no note: a CI gate
    on the figure passed a model whose head is dead."""
    rng = np.random.default_rng(5)
    w = {"fc": {"kernel": np.zeros((16, 4), np.float32), "bias": np.zeros(4, np.float32)}}
    src = model([("x", "InputLayer", {}, [], [None, 16]),
                 ("fc", "Dense", {"units": 4, "activation": "relu"}, ["x"], [None, 4])], ["fc"], w)
    x = rng.uniform(-1, 1, (24, 16)).astype(np.float32)
    emu = Emulator.from_model(src, x, batch_size=24)
    d = diagnose(emu.graph, {"x": x}, batch_size=24, with_sensitivity=False)
    assert any("output 'fc' is exactly 0 for every sample" in n and "dead output" in n for n in d.notes)
