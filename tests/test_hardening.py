"""Hardening details the bad-file corpus does not reach: odd paths, cleanup, NaN counting, long graphs."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from bad_corpus import keras3_dense_config
from capture_fixtures import write_tiny
from conftest import REPO

from qinspect.errors import QInspectError
from qinspect.io.capture_check import find_cycle
from qinspect.io.graph import Layer, ModelGraph


def _chain(n: int, back_edge: bool = False) -> ModelGraph:
    layers = [Layer("l0", "InputLayer")]
    layers += [Layer(f"l{i}", "ReLU", inbound=[f"l{i - 1}"]) for i in range(1, n)]
    if back_edge:
        layers[0].inbound = [f"l{n - 1}"]
    return ModelGraph("chain", layers, ["l0"], [f"l{n - 1}"])


def test_find_cycle_on_a_long_chain_without_recursion_and_on_a_loop():
    assert find_cycle(_chain(20000)) == []  # deeper than Python's recursion limit
    cycle = find_cycle(_chain(4, back_edge=True))
    assert cycle[0] == cycle[-1] and set(cycle) == {"l0", "l1", "l2", "l3"}


def test_nan_refusal_counts_every_bad_value_and_names_the_first_sample_across_batches():
    from qinspect.dpu.emulator import _data_batches

    class Graph:  # what _data_batches needs of a DpuGraph for a one-input dict source
        inputs = ["x"]

    class Source:  # an io.inputs-like source read batch by batch
        path = "/data/x.npy"
        names = ["x"]
        n_samples = 10

        def __init__(self) -> None:
            self.x = np.zeros((10, 3), np.float32)
            self.x[5, 1] = np.nan
            self.x[7, 0] = np.inf
            self.x[9, 2] = -np.inf

        def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
            return {"x": self.x[start:stop]}

    with pytest.raises(QInspectError) as info:
        list(_data_batches(Graph(), Source(), batch_size=4))
    assert info.value.path == "/data/x.npy"
    assert "inputs hold 3 non-finite values (NaN or Inf), first in sample 5" in info.value.message


def test_keras_extracted_weights_go_even_when_nobody_closes_the_model(tmp_path):
    from qinspect.io.keras_v3 import KerasV3Model

    path = tmp_path / "m.keras"
    weights = tmp_path / "w.h5"
    import h5py

    with h5py.File(weights, "w") as h5:
        h5.create_dataset("layers/dense/vars/0", data=np.ones((4, 2), np.float32))
        h5.create_dataset("layers/dense/vars/1", data=np.zeros((2,), np.float32))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(keras3_dense_config()))
        z.writestr("model.weights.h5", weights.read_bytes())
    model = KerasV3Model(path)
    folder = model._tmp
    assert folder and os.path.isdir(folder)
    model._h5.close()  # what a caller that raised would leave behind: an unclosed model object
    del model
    gc.collect()
    assert not os.path.exists(folder)


@pytest.mark.slow
def test_a_path_that_is_not_utf8_neither_crashes_qt_nor_the_report(tmp_path):
    """``report`` on a file name with a 0xff byte segfaulted (exit 139): pyqtgraph gave Qt the raw argv."""
    folder = os.fsencode(tmp_path)
    src = os.fsdecode(folder + b"/bad\xff.h5")
    write_tiny(src)
    out = os.fsdecode(folder + b"/rep\xfe")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "qinspect", "report", src, "--no-findings", "-o", out],
                            capture_output=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"rep\xfe/report.html" in result.stdout
    data = json.loads((tmp_path / os.fsdecode(b"rep\xfe") / "report.json").read_bytes())
    assert data["format"] == "qinspect-report"
    missing = os.fsdecode(folder + b"/absent\xff.h5")
    result = subprocess.run([sys.executable, "-m", "qinspect", "info", missing], capture_output=True, env=env,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith(b"qinspect: error: " + folder + b"/absent\xff.h5: ")
    assert b"Traceback" not in result.stderr


def test_a_name_with_a_line_break_still_gives_one_line(capsys, tmp_path):
    from qinspect.cli import main

    path = tmp_path / "two\nlines.h5"
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "two\\nlines.h5: no such file" in err
