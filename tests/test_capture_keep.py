"""Capture format 1.2: full tensors for K kept samples, every input and per-node statistics for all N.

References are independent of the streaming code: the tensors of a capture that keeps every sample
(checked against Keras in test_capture_run), numpy over them, and ``calibrate MODEL --inputs`` on the
same inputs.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from capture_fixtures import run_here as run_in_process

from qinspect.io.capture_file import Capture
from qinspect.io.capture_stats import LayerStats

pytestmark = pytest.mark.tf

N = 13


def run_here(*args: str) -> tuple[int, str, str]:
    """``qinspect ARGS`` in this process: (exit code, stdout, stderr)."""
    done = run_in_process(*args)
    return int(done.returncode or 0), done.stdout, done.stderr


def _model(kind: str):
    import tf_keras as tfk

    tfk.utils.set_random_seed(3)
    inp = tfk.Input((8, 8, 3), name="image")
    x = tfk.layers.Conv2D(6, 3, padding="same", name="conv1")(inp)
    x = tfk.layers.BatchNormalization(name="bn1")(x)
    x = tfk.layers.ReLU(name="relu1")(x)
    if kind == "residual":
        y = tfk.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
        x = tfk.layers.Add(name="add")([x, y])
    x = tfk.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv2")(x)
    x = tfk.layers.GlobalAveragePooling2D(name="gap")(x)
    out = tfk.layers.Dense(4, name="fc")(x)
    model = tfk.Model(inp, out, name=kind)
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(4)
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)])
    return model


@pytest.fixture(scope="module", params=["plain", "residual"])
def model_files(request, tmp_path_factory):
    """(model path, inputs .npy): samples whose ranges grow along the set, so per-batch positions differ."""
    folder = tmp_path_factory.mktemp(f"keep_{request.param}")
    path = folder / "m.h5"
    _model(request.param).save(path)
    rng = np.random.default_rng(5)
    scale = np.linspace(0.3, 6.0, N, dtype=np.float32)[:, None, None, None]
    x = rng.normal(size=(N, 8, 8, 3)).astype(np.float32) * scale
    np.save(folder / "x.npy", x)
    return path, folder / "x.npy"


def _capture(model_files, tmp_path, *extra: str) -> str:
    path, inputs = model_files
    out = tmp_path / f"cap{'_'.join(extra)}.h5"
    code, _, err = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(out), "-q",
                            "--batch-size", "3", *extra)
    assert code == 0, err
    return str(out)


def test_kept_subset_holds_every_input_and_statistics(model_files, tmp_path):
    full = _capture(model_files, tmp_path, "--calib-batch-size", "5")
    kept = _capture(model_files, tmp_path, "--keep", "4", "--calib-batch-size", "5")
    x = np.load(model_files[1])
    with h5py.File(full, "r", locking=False) as h5:
        assert "all_inputs" not in h5 and h5.attrs["n_total_samples"] == N
    with Capture.open(full) as f, Capture.open(kept) as k, h5py.File(kept, "r", locking=False) as h5:
        assert (k.n_samples, k.n_total_samples, f.n_samples, f.n_total_samples) == (4, N, N, N)
        assert h5.attrs["calib_batch_size"] == 5
        np.testing.assert_array_equal(k.all_inputs(), x)
        np.testing.assert_array_equal(k.inputs(), x[:4])
        assert k.layers_with_activations() == f.layers_with_activations()
        for layer in f.layers_with_activations():
            whole = f.activation(layer)
            np.testing.assert_array_equal(k.activation(layer), whole[:4])
            # Streamed over batches of 3 into calibration batches of 5: as numpy over the whole tensor.
            got = LayerStats.read(h5["stats"][layer.replace("/", "%2F")])
            assert got.name == layer and got.n_samples == N and got.n_batches == 3
            np.testing.assert_array_equal(got.batch_min, [whole[i:i + 5].min() for i in range(0, N, 5)])
            np.testing.assert_array_equal(got.batch_max, [whole[i:i + 5].max() for i in range(0, N, 5)])
            np.testing.assert_array_equal(got.channel_max, whole.reshape(-1, whole.shape[-1]).max(axis=0))
            assert got.hist_counts.sum() == whole.size
            q = float(np.quantile(whole, 0.999, method="inverted_cdf"))
            assert abs(got.quantile(0.999) - q) <= abs(q) * 2.0**-7 + 1e-40


@pytest.mark.parametrize("batch", ["4", "13", "5"])  # 4 and 5 do not divide 13; 13 does
def test_calibrate_capture_equals_calibrate_model_on_all_samples(model_files, tmp_path, batch):
    path, inputs = model_files
    kept = _capture(model_files, tmp_path, "--keep", "2", "--calib-batch-size", batch)
    code, out, err = run_here("calibrate", str(path), "--inputs", str(inputs), "--batch-size", batch, "--json")
    assert code == 0, err
    want = json.loads(out)
    code, out, err = run_here("calibrate", kept, "--batch-size", batch, "--json")
    assert code == 0, err
    got = json.loads(out)
    for key in ("positions", "pre_refine_positions", "calib_batch_positions", "refine_changes", "adjustments",
                "calib_samples", "calib_batches"):
        assert got[key] == want[key], key
    assert got["calib_samples"] == N and got["calib_batches"] == -(-N // int(batch))
    per_batch = [v for keys in want["calib_batch_positions"].values() for v in keys.values()]
    assert batch == "13" or any(len(set(v)) > 1 for v in per_batch), "some per-batch positions should differ"
    code, out, err = run_here("calibrate", kept, "--batch-size", batch)
    assert code == 0 and f"{N} samples (2 kept) in" in out, out + err


def test_budget_keeps_what_fits_and_the_file_stays_within(model_files, tmp_path):
    from qinspect.capture.runner import plan_capture

    path, inputs = model_files
    plan = plan_capture(path, inputs)
    shapes = plan.activation_shapes()
    per_sample = sum(int(np.prod(s)) for s in shapes.values()) * 4 + 8 * 8 * 3 * 4
    full = plan.bytes_needed()
    budget = full - 5 * per_sample  # room for 8 of 13 samples' tensors, less the inputs of the others
    out = _capture(model_files, tmp_path, "--budget", str(budget))
    with Capture.open(out) as cap:
        assert 1 <= cap.n_samples < N and cap.n_total_samples == N
        assert plan_capture(path, inputs, budget=budget).kept_samples(shapes) == cap.n_samples
    import os

    assert os.path.getsize(out) <= budget * 1.05
    # One more kept sample would not have fitted.
    plan.budget = budget
    more = plan.kept_samples(shapes) + 1
    from qinspect.capture.runner import capture_bytes

    assert capture_bytes(N, more, shapes, plan.source.shapes, plan.calib_batch_size) > budget


def test_keep_and_budget_refused_together_and_bad_sizes(model_files, tmp_path):
    path, inputs = model_files
    for extra in (["--keep", "2", "--budget", "1GiB"], ["--budget", "lots"], ["--keep", "0"],
                  ["--calib-batch-size", "0"]):
        code, _, err = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(tmp_path / "c.h5"),
                                *extra)
        assert code == 2 and "Traceback" not in err, (extra, err)
        assert not (tmp_path / "c.h5").exists()


def test_parse_bytes():
    from qinspect.cli.capture import parse_bytes

    assert parse_bytes("2GiB") == 2 << 30 and parse_bytes("500MB") == 500_000_000
    assert parse_bytes("1.5k") == 1500 and parse_bytes("4096") == 4096


def test_a_stop_while_only_statistics_are_taken_leaves_nothing(model_files, tmp_path):
    """Cancelled past the kept samples (where only statistics are computed): the error is the caller's,
    no temporary file stays, an existing capture at the destination is untouched."""
    from qinspect.capture.runner import plan_capture, run_capture

    path, inputs = model_files
    dest = tmp_path / "cap.h5"
    assert _capture(model_files, tmp_path) == str(dest)  # a capture already there, to be left as it is
    original = dest.read_bytes()

    class StopError(Exception):
        pass

    def progress(done: int, total: int) -> None:
        if done > 6:
            raise StopError

    plan = plan_capture(path, inputs, keep=2, batch_size=3, calib_batch_size=4)
    try:
        with pytest.raises(StopError):
            run_capture(plan, dest, overwrite=True, progress=progress)
    finally:
        plan.close()
    assert dest.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["cap.h5"]


def test_a_kept_subset_capture_exits_zero_as_a_program(model_files, tmp_path):
    # in a process of its own the capture wrote a complete file and then TensorFlow's teardown aborted
    # it (exit 134): scripts and CI read that as a failure
    from conftest import run_cli

    path, inputs = model_files
    out = tmp_path / "kept.h5"
    result = run_cli("capture", str(path), "--inputs", str(inputs), "--keep", "2", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr[-2000:]
    with Capture.open(str(out)) as k:
        assert (k.n_samples, k.n_total_samples) == (2, N)


def test_a_quiet_capture_prints_no_plan_line(model_files, tmp_path):
    """`capture -q` ("no progress display") still printed its plan line ("16 samples, 9 layers, batch size 32;
    disk space needed: ...") on stderr, where a CI script reads warnings and errors."""
    path, inputs = model_files
    code, _, err = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(tmp_path / "q.h5"), "-q")
    assert code == 0 and "disk space needed" not in err and "layers, batch size" not in err, err
    code, _, err = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(tmp_path / "v.h5"))
    assert code == 0 and "disk space needed" in err
