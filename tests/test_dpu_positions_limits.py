"""Positions loaded from a file or a dict must be ones a DPU can run: the shift limits are checked."""

from __future__ import annotations


def test_positions_no_dpu_runs_are_refused_not_emulated():
    """An add read 58 positions apart wrapped in int64 (codes 64, -64 came out 0, 0) and emulate printed an SQNR
    with no warning: positions that break the DPU's shift limits are refused when loaded (outside audit)."""
    import pytest

    from qinspect.dpu.emulator import Emulator
    from qinspect.errors import QInspectError
    from tests.dpu_graph_fixtures import model

    s = [None, 4]
    emu = Emulator.from_model(model([("a", "InputLayer", {}, [], s), ("b", "InputLayer", {}, [], s),
                                     ("add", "Add", {}, ["a", "b"], s)], ["add"]))
    held = {"quant_a": {"input": 6}, "quant_b": {"input": 7}, "add": {"output_0": 6}}
    assert emu.load_positions(held) == []
    with pytest.raises(QInspectError, match=r"first quant_add: shift_read 58 > 15: no DPU runs these positions"):
        emu.load_positions({**held, "quant_b": {"input": 64}})
