"""Emulator.run: accumulated and isolated results streamed by batch, and the facade's positions API."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qinspect.analysis.metrics import ErrorStats
from qinspect.dpu import ops
from qinspect.dpu.emulator import Emulator
from qinspect.dpu.executor import Evaluator, batch_inputs
from qinspect.dpu.fixed_point import Round, dequantize, quantize
from qinspect.errors import QInspectError
from tests.dpu_graph_fixtures import positions_json, refcase


@pytest.fixture(scope="module")
def small():
    root = refcase("small")
    return root, Emulator.from_quantized(root / "quantized.h5"), np.load(root / "calib.npy")


def test_accumulated_codes_are_the_integer_pipeline_in_any_batch_size(small):
    _, emu, x = small
    a = emu.run(x, layers=["quant_fc"], batch_size=3, keep_int8=True)["quant_fc"].int8
    b = emu.run(x, layers=["fc"], batch_size=16, keep_int8=True)["quant_fc"].int8
    direct = Evaluator(emu.graph, "int").run(batch_inputs(emu.graph, x))["quant_fc"].codes()
    np.testing.assert_array_equal(a, direct)
    np.testing.assert_array_equal(b, direct)


def test_isolated_error_is_the_layer_alone_on_quantized_reference_inputs(small):
    _, emu, x = small
    g = emu.graph
    res = emu.run(x, layers=["quant_fc"], batch_size=5, stats_factory=ErrorStats, keep_float=True)["quant_fc"]
    ref = Evaluator(g, "float").run(batch_inputs(g, x))
    # By hand: the flattened float reference quantized at relu2's position, then the DPU dense.
    p_in, p_w, p_b, p_o = 7, 11, 14, 5
    xin = quantize(ref["quant_flatten"].float(), p_in, Round.HALF_UP)
    wq = quantize(g["quant_fc"].weights["kernel"], p_w, Round.HALF_TO_EVEN)
    bq = quantize(g["quant_fc"].weights["bias"], p_b, Round.HALF_TO_EVEN)
    y = dequantize(ops.dense(xin, wq, bq, p_in, p_w, p_b, p_o), p_o)
    d = y.astype(np.float64) - ref["quant_fc"].float()
    # (float32 GEMM sums in a batch-size-dependent order: the reference moves by ~1e-7 relative)
    assert res.isolated.mse == pytest.approx(float(np.mean(d * d)), rel=1e-4)
    assert res.accumulated.n == res.isolated.n == x.shape[0] * 10
    np.testing.assert_allclose(res.float_ref, ref["quant_fc"].float(), rtol=1e-5, atol=1e-6)
    assert res.accumulated.n_codes == res.accumulated.n  # codes counted for saturation / code use
    first = emu.run(x, layers=["quant_input"], stats_factory=ErrorStats)["quant_input"]
    assert first.isolated.sum_d2 == first.accumulated.sum_d2  # the first quantizer: nothing upstream


def test_fused_conv_reports_its_activation(small):
    _, emu, x = small
    r = emu.run(x[:4], layers=["quant_conv1"], stats_factory=ErrorStats)["quant_conv1"]
    assert r.fused_into == "quant_relu1" and r.position is None
    assert r.accumulated.n_codes == 0  # the conv's own output is unquantized: no codes to count


def test_load_positions_from_json_and_quantized_h5(small, tmp_path):
    root, _, x = small
    emu = Emulator.from_model(root / "float.h5")
    with pytest.raises(QInspectError, match="calibrate or load positions"):
        emu.run(x[:2])
    assert emu.load_positions(root / "positions.json") == []
    assert emu.positions == positions_json(root)["positions"]
    emu2 = Emulator.from_model(root / "float.h5")
    assert emu2.load_positions(root / "quantized.h5") == []
    assert emu2.positions == emu.positions
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"conv1": {"conv1/kernel:0": 9}}))
    missing = Emulator.from_model(root / "float.h5").load_positions(p)
    assert "quant_input:input" in missing and "conv1:conv1/kernel:0" not in missing
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(QInspectError, match="not a positions JSON"):
        emu.load_positions(bad)


def test_wrong_input_shape_is_one_line(small):
    _, emu, _ = small
    with pytest.raises(QInspectError, match=r"do not fit model input input of shape \[N, 32, 32, 3\]"):
        emu.run(np.zeros((2, 16, 16, 3), np.float32))
