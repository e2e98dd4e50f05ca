"""The advisor's prediction for the options a real quantizer run used, checked against that run: its
default-options row must measure exactly what the quantized model's own dump gives against TensorFlow's
float model (the refcases ran with those options; other options have no real run here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.dpu_graph_fixtures import refcase


@pytest.mark.tf
@pytest.mark.slow
def test_advise_default_row_equals_the_real_quantizer_runs_output(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    root = refcase("small")
    meta = json.loads((root / "positions.json").read_text())
    dump = root / "dump_results" / "dump_results_0"
    x = np.load(root / "dump_inputs.npy")
    n = len(x)
    # The quantized model's output as the quantizer ran it: int8 codes at the output position.
    codes = np.fromfile(dump / "quant_fc.bin", np.int8).reshape(n, -1).astype(np.float64)
    real = codes * 2.0 ** -meta["positions"]["fc"]["linear"]  # the Dense's activation quantizer
    ref = tf_keras.models.load_model(root / "float.h5", compile=False).predict(x, verbose=0).astype(np.float64)
    want_db = 10 * math.log10(np.sum(ref**2) / np.sum((real - ref) ** 2))
    want_top1 = float(np.mean(np.argmax(real, -1) == np.argmax(ref, -1)))

    cap = tmp_path / "dump_inputs.h5"
    r = run_cli("capture", str(root / "float.h5"), "--inputs", str(root / "dump_inputs.npy"), "-o", str(cap))
    assert r.returncode == 0, r.stderr
    r = run_cli("advise", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--batch-size",
                str(meta["calib_batch_size"]), "--eval", str(cap), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["advice"]
    as_run = {"include_cle": True, "calib_batch_size": meta["calib_batch_size"]}  # quantize_model's keywords
    (row,) = [row for row in rows if row["options"] == as_run and row["calib_samples"] == meta["calib_samples"]
              and not row["keep_float"]]
    # Equal codes; the advisor's float reference is its own float walk, equal to TensorFlow's to float32
    # rounding (measured: 6e-5 dB apart). One position chosen otherwise moves the figure by far more.
    assert row["output_sqnr_db"] == pytest.approx(want_db, abs=1e-3)
    assert row["top1_agreement"] == pytest.approx(want_top1)


def test_the_text_marks_rows_a_lower_ranked_row_beats_on_top1(tmp_path):
    """Ranked by output SQNR, a row can agree with the float model's top-1 less often than one below it;
    the text marks it rather than let the order read as a ranking by top-1."""
    root = refcase("small")
    r = run_cli("advise", str(root / "float.h5"), "--inputs", str(root / "calib.npy"), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["advice"]
    r = run_cli("advise", str(root / "float.h5"), "--inputs", str(root / "calib.npy"))
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line[:3].strip().isdigit()]
    assert len(lines) == len(rows)
    for i, (line, row) in enumerate(zip(lines, rows, strict=True)):
        later = [x["top1_agreement"] for x in rows[i + 1:] if x["top1_agreement"] is not None]
        beaten = row["top1_agreement"] is not None and bool(later) and row["top1_agreement"] < max(later)
        assert ("↓" in line.split()[2]) == beaten, line
    assert ("↓: a row ranked lower agrees" in r.stdout) == any("↓" in line for line in lines)
