"""``qinspect capture`` on small generated tf_keras models: values, weights, atomicity, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from capture_fixtures import run_here, write_tiny
from conftest import REPO, run_cli

from qinspect.errors import QInspectError
from qinspect.io.capture_file import Capture

pytestmark = pytest.mark.tf

N = 12


def _build_model():
    """Conv/BN/ReLU, depthwise, a nested functional block, Add, pooling, Dense: every layer kind that
    needs care (nested names, several inbound, weights with non-trainable parts)."""
    import tf_keras as tfk

    tfk.utils.set_random_seed(7)
    block_in = tfk.Input((8, 8, 8), name="block_in")
    y = tfk.layers.Conv2D(8, 3, padding="same", name="b_conv")(block_in)
    y = tfk.layers.ReLU(name="b_relu")(y)
    block = tfk.Model(block_in, y, name="block")

    inp = tfk.Input((8, 8, 3), name="image")
    x = tfk.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = tfk.layers.BatchNormalization(name="bn1")(x)
    x = tfk.layers.ReLU(name="relu1")(x)
    x = tfk.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = block(x)
    x = tfk.layers.Add(name="add")([x, y])
    x = tfk.layers.GlobalAveragePooling2D(name="gap")(x)
    out = tfk.layers.Dense(4, name="fc")(x)
    model = tfk.Model(inp, out, name="small")
    # Non-trivial BN statistics, so a BN that ran in training mode would show.
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    return model


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """(model, path of its .h5, path of random inputs .npy)."""
    folder = tmp_path_factory.mktemp("capture_run")
    model = _build_model()
    path = folder / "small.h5"
    model.save(path)
    x = np.random.default_rng(2).normal(size=(N, 8, 8, 3)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return model, path, folder / "x.npy"


@pytest.fixture(scope="session")
def small_capture(small_model, tmp_path_factory):
    _, path, inputs = small_model
    out = tmp_path_factory.mktemp("capture_out") / "cap.h5"
    result = run_cli("capture", str(path), "--inputs", str(inputs), "-o", str(out), "--batch-size", "5")
    assert result.returncode == 0, result.stderr
    return out, result


def _reference(model, name: str, x: np.ndarray) -> np.ndarray:
    """The layer's output by an independent route: a one-output Keras model, predicted in one go."""
    import tf_keras as tfk

    if "/" in name:
        outer, inner = name.split("/")
        sub = model.get_layer(outer)
        feed = tfk.Model(model.inputs, model.get_layer("dw").output).predict(x, verbose=0)
        return tfk.Model(sub.inputs, sub.get_layer(inner).output).predict(feed, verbose=0)
    return tfk.Model(model.inputs, model.get_layer(name).output).predict(x, verbose=0)


def test_every_layer_matches_keras(small_model, small_capture):
    model, _, inputs = small_model
    out, result = small_capture
    x = np.load(inputs)
    with Capture.open(out) as cap:
        layers = cap.layers_with_activations()
        assert layers == ["image", "conv1", "bn1", "relu1", "dw", "block/b_conv", "block/b_relu", "add", "gap", "fc"]
        np.testing.assert_array_equal(cap.inputs(), x)
        np.testing.assert_array_equal(cap.activation("image"), x)
        for name in layers[1:]:
            got = cap.activation(name)
            ref = _reference(model, name, x)
            assert got.shape == ref.shape
            scale = np.abs(ref).max()
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * scale, err_msg=name)
        assert cap.attrs["inputs_nonfinite"] is False or cap.attrs["inputs_nonfinite"] == 0
        assert cap.attrs["source_model"].endswith("small.h5")


def test_weights_equal_the_model(small_model, small_capture):
    model, _, _ = small_model
    out, _ = small_capture
    with Capture.open(out) as cap:
        block = model.get_layer("block")
        for name, layer in [("conv1", model.get_layer("conv1")), ("bn1", model.get_layer("bn1")),
                            ("dw", model.get_layer("dw")), ("block/b_conv", block.get_layer("b_conv")),
                            ("fc", model.get_layer("fc"))]:
            stored = cap.weights(name)
            expected = layer.get_weights()
            assert len(stored) == len(expected), name
            for got, ref in zip(stored.values(), expected, strict=True):
                np.testing.assert_array_equal(got, ref)
        assert list(cap.weights("bn1")) == ["gamma", "beta", "moving_mean", "moving_variance"]
        assert cap.weights("relu1") == {}


def test_cli_prints_space_and_progress(small_capture):
    _, result = small_capture
    assert "disk space needed:" in result.stderr
    assert "samples" in result.stderr
    assert "wrote" in result.stdout


def test_info_sees_the_same_graph_without_tensorflow(small_model, small_capture):
    """Reading a capture, in a fresh process, never imports TensorFlow."""
    _, model_path, _ = small_model
    out, _ = small_capture
    code = (
        "import sys\n"
        "from qinspect.io.capture_file import Capture\n"
        "from qinspect.io.model_file import open_model\n"
        f"cap = Capture.open({str(out)!r})\n"
        "cap.activation('block/b_relu', [0, 3]); cap.weights('conv1'); cap.inputs()\n"
        f"m = open_model({str(model_path)!r})\n"
        "assert [l.name for l in cap.graph.layers] == [l.name for l in m.graph.layers]\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_layers_pattern(small_model, tmp_path):
    _, path, inputs = small_model
    out = tmp_path / "c.h5"
    result = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(out), "--layers", "b_*,fc",
                     "--samples", "3", "-q")
    assert result.returncode == 0, result.stderr
    with Capture.open(out) as cap:
        assert cap.layers_with_activations() == ["block/b_conv", "block/b_relu", "fc"]
        assert cap.n_samples == 3 and cap.inputs().shape == (3, 8, 8, 3)
        # The whole graph and all weights travel even when only some activations do.
        assert "conv1" in cap.graph and cap.weights("conv1")
    result = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(tmp_path / "d.h5"), "--layers", "zz*")
    assert result.returncode == 2 and "no layer matches" in result.stderr


def _one_line_error(result, path) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("qinspect: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(path) in lines[0]
    return lines[0]


def test_wrong_input_shape_is_one_line_exit_2(small_model, tmp_path):
    _, path, _ = small_model
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 8, 8, 1), np.float32))
    line = _one_line_error(run_here("capture", str(path), "--inputs", str(bad), "-o", str(tmp_path / "c.h5")), bad)
    assert "(2, 8, 8, 1)" in line and "(N, 8, 8, 3)" in line
    assert not (tmp_path / "c.h5").exists()


def test_missing_model_and_capture_as_model(small_capture, small_model, tmp_path):
    _, _, inputs = small_model
    out, _ = small_capture
    _one_line_error(run_here("capture", str(tmp_path / "nope.h5"), "--inputs", str(inputs), "-o",
                            str(tmp_path / "c.h5")), tmp_path / "nope.h5")
    line = _one_line_error(run_here("capture", str(out), "--inputs", str(inputs), "-o", str(tmp_path / "c.h5")), out)
    assert "is a capture" in line


def test_existing_destination_needs_force_and_must_be_a_capture(small_model, tmp_path):
    _, path, inputs = small_model
    out = tmp_path / "c.h5"
    out.write_bytes(b"keep me")
    line = _one_line_error(run_here("capture", str(path), "--inputs", str(inputs), "-o", str(out)), out)
    assert "--force" in line and out.read_bytes() == b"keep me"
    line = _one_line_error(run_here("capture", str(path), "--inputs", str(inputs), "-o", str(out), "--force"), out)
    assert "not a qinspect capture" in line and out.read_bytes() == b"keep me"
    out.unlink()
    write_tiny(out)
    result = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(out), "--force", "-q", "--samples", "2")
    assert result.returncode == 0, result.stderr
    with Capture.open(out) as cap:
        assert cap.n_samples == 2


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_destination_that_is_an_input_is_refused_even_through_links(small_model, tmp_path, how):
    """``capture m.h5 -o m.h5 --force`` once turned the model into a capture."""
    _, path, inputs = small_model
    model, data = tmp_path / "m.h5", tmp_path / "x.npy"
    model.write_bytes(Path(path).read_bytes())
    data.write_bytes(Path(inputs).read_bytes())
    for original in (model, data):
        dest = {"same": original, "symlink": tmp_path / f"link{original.suffix}",
                "hardlink": tmp_path / f"hard{original.suffix}"}[how]
        if how == "symlink":
            dest.symlink_to(original)
        elif how == "hardlink":
            os.link(original, dest)
        before = original.read_bytes()
        result = run_here("capture", str(model), "--inputs", str(data), "-o", str(dest), "--force")
        line = _one_line_error(result, dest)
        assert "is one of the capture's inputs" in line, line
        assert original.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_nan_inputs_warn_and_are_recorded(small_model, tmp_path):
    _, path, _ = small_model
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype(np.float32)
    x[1, 0, 0, 0] = np.nan
    x[2, 1, 1, 1] = np.inf
    x[3, 2, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    out = tmp_path / "c.h5"
    result = run_here("capture", str(path), "--inputs", str(tmp_path / "nan.npy"), "-o", str(out), "-q",
                     "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "NaN or Inf" in result.stderr
    with Capture.open(out) as cap:
        assert cap.attrs["inputs_nonfinite"] in (True, 1)
        assert (cap.attrs["inputs_nan"], cap.attrs["inputs_posinf"], cap.attrs["inputs_neginf"]) == (2, 1, 0)


def test_capture_in_a_log_prints_a_line_per_quarter(small_model, tmp_path, monkeypatch):
    """Without a terminal the bar drew only its last frame: minutes of silence in a CI log."""
    _, path, inputs = small_model
    monkeypatch.setenv("QINSPECT_PROGRESS", "lines")
    result = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(tmp_path / "c.h5"), "--batch-size",
                      "1", "--samples", "8")
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("qinspect capture: capturing samples")]
    assert [ln.split()[4] for ln in lines] == ["12%", "25%", "50%", "75%", "100%"]  # its start, each quarter


def test_image_folder_with_a_non_image_file(small_model, tmp_path):
    from PIL import Image

    _, path, _ = small_model
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "labels.csv").write_text("0,1,2\n")
    out = tmp_path / "c.h5"
    result = run_here("capture", str(path), "--inputs", str(folder), "--preprocess", "0..1", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 file(s) that are not images: labels.csv" in result.stderr
    with Capture.open(out) as cap:
        assert cap.n_samples == 3 and cap.attrs["preprocess"] == "0..1"
        assert 0 <= cap.inputs().min() and cap.inputs().max() <= 1
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    _one_line_error(run_here("capture", str(path), "--inputs", str(folder), "--preprocess", "0..1", "-o",
                            str(tmp_path / "d.h5")), folder / "broken.png")
    assert not (tmp_path / "d.h5").exists()


def test_lambda_model_is_refused_without_running_its_code(tmp_path):
    import tf_keras as tfk

    marker = tmp_path / "ran"
    marker_name = str(marker)

    def double(t):
        with open(marker_name, "w") as f:
            f.write("the Lambda's code ran")
        return t * 2

    inp = tfk.Input((4,), name="x")
    out = tfk.layers.Lambda(double, name="double")(inp)
    tfk.Model(inp, out).save(tmp_path / "lam.h5")
    marker.unlink()  # building the model called it once
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    line = _one_line_error(run_here("capture", str(tmp_path / "lam.h5"), "--inputs", str(tmp_path / "x.npy"), "-o",
                                   str(tmp_path / "c.h5")), tmp_path / "lam.h5")
    assert "double" in line and "Lambda" in line
    assert not marker.exists() and not (tmp_path / "c.h5").exists()


def test_crash_mid_write_leaves_destination_alone(small_model, tmp_path, monkeypatch):
    """An exception injected after some batches were written: no file appears, an old one is kept."""
    from qinspect.capture import runner

    model, path, inputs = small_model
    plan = runner.plan_capture(path, inputs, batch_size=3)

    def crash(done, total):
        if done >= 6:
            raise RuntimeError("injected crash")

    out = tmp_path / "c.h5"
    with pytest.raises(RuntimeError, match="injected"):
        runner.run_capture(plan, out, progress=crash, keras_model=model)
    assert list(tmp_path.iterdir()) == []
    write_tiny(out)
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="injected"):
        runner.run_capture(plan, out, overwrite=True, progress=crash, keras_model=model)
    assert out.read_bytes() == before
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_leaves_destination_alone(small_model, tmp_path, signals):
    """Ctrl-C in the middle of a real capture: exit 130, no temporary file left, old file unchanged; also
    with a second Ctrl-C right after the first (pressed twice, or `timeout -s INT`, which signals the
    process and then its group), which cut the cleanup short and left the temporary file."""
    _, path, _ = small_model
    many = tmp_path / "many.npy"
    # Enough one-sample batches that the capture is still running when it is interrupted, even on an idle machine.
    np.save(many, np.random.default_rng(5).normal(size=(20000, 8, 8, 3)).astype(np.float32))
    out = write_tiny(tmp_path / "c.h5")
    old = out.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qinspect", "capture", str(path), "--inputs", str(many), "-o", str(out), "--force",
         "--batch-size", "1", "-q"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        # As from a terminal: a suite started in the background by a non-interactive shell inherits
        # SIGINT ignored, and a process started ignoring it never sees Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # TensorFlow's start-up can take long on a loaded machine: wait for the temp file or for an early exit.
    deadline = time.time() + 600
    while (time.time() < deadline and proc.poll() is None
           and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())):
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"capture ended (exit {proc.returncode}) before it could be interrupted: {proc.communicate()[1]}")
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "capture never started writing"
    for i in range(signals):
        time.sleep(0.002 * i)
        proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # 128 + SIGINT, as a shell reports it: not bad input (2)
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "many.npy"]


def test_run_capture_result_and_plan(small_model, tmp_path):
    from qinspect.capture import runner

    model, path, inputs = small_model
    plan = runner.plan_capture(path, inputs)
    assert plan.batch_size == runner.MAX_AUTO_BATCH
    tensors = 4 * N * (8 * 8 * 3 + 8 * 8 * 8 * 7 + 8 + 4)  # 7 layers of 8x8x8, gap 8, fc 4
    # Statistics bound per node: min/max of 1 batch and C channels, 10 bytes per histogram bin (at most
    # one per value), 8 KiB of HDF5 headers.
    stats = sum(8 + 8 * c + 10 * min(65536, N * v) + 8192
                for c, v in [(3, 192), *[(8, 512)] * 7, (8, 8), (4, 4)])
    assert plan.bytes_needed() == tensors + stats
    result = runner.run_capture(plan, tmp_path / "c.h5", keras_model=model)
    assert result.n_samples == N and Path(result.path).stat().st_size == result.bytes_written
    result = runner.run_capture(plan, tmp_path / "z.h5", keras_model=model, compression="lzf")
    with h5py.File(result.path, "r") as h5, Capture.open(tmp_path / "c.h5") as plain:
        # 2 KiB per sample: 8 samples fill a 16 KiB chunk.
        assert h5["activations"]["conv1"].chunks == (8, 8, 8, 8)
        np.testing.assert_array_equal(h5["activations"]["add"][()], plain.activation("add"))
    with pytest.raises(QInspectError, match="already exists"):
        runner.run_capture(plan, tmp_path / "c.h5", keras_model=model)


@pytest.mark.parametrize("kind", ["savedmodel", "keras3"])
def test_other_model_formats_capture_the_same_values(small_model, small_capture, tmp_path, kind):
    """A SavedModel folder (tf_keras) and a Keras 3 ``.keras`` file of the same network capture the same
    activations, under the same layer names, as the ``.h5``."""
    model, _, inputs = small_model
    if kind == "savedmodel":
        path = tmp_path / "small_savedmodel"
        model.save(path, save_format="tf")
    else:
        import keras

        path = tmp_path / "small.keras"
        k3 = _keras3_copy(keras, model)
        k3.save(path)
    out = tmp_path / "c.h5"
    result = run_here("capture", str(path), "--inputs", str(inputs), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    reference, _ = small_capture
    with Capture.open(out) as cap, Capture.open(reference) as ref:
        assert cap.layers_with_activations() == ref.layers_with_activations()
        for name in ref.layers_with_activations():
            want = ref.activation(name)
            np.testing.assert_allclose(cap.activation(name), want, rtol=1e-5, atol=1e-6 * np.abs(want).max(),
                                       err_msg=name)
        np.testing.assert_array_equal(cap.weights("block/b_conv")["kernel"], ref.weights("block/b_conv")["kernel"])


def _keras3_copy(keras, model):
    """The small model rebuilt with Keras 3 layers and the tf_keras weights."""
    block_in = keras.Input((8, 8, 8), name="block_in")
    y = keras.layers.Conv2D(8, 3, padding="same", name="b_conv")(block_in)
    y = keras.layers.ReLU(name="b_relu")(y)
    block = keras.Model(block_in, y, name="block")
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = block(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, name="fc")(x)
    k3 = keras.Model(inp, out, name="small")
    for name in ("conv1", "bn1", "dw", "fc"):
        k3.get_layer(name).set_weights(model.get_layer(name).get_weights())
    block.get_layer("b_conv").set_weights(model.get_layer("block").get_layer("b_conv").get_weights())
    return k3


def test_info_on_capture_shows_the_models_tree_with_tensorflow_blocked(small_model, small_capture):
    """``qinspect info CAPTURE`` runs with TensorFlow made unimportable and prints the model's tree."""
    _, model_path, _ = small_model
    out, _ = small_capture
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from qinspect.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    from_capture = subprocess.run([sys.executable, "-c", blocker, "info", str(out)], capture_output=True, text=True,
                                  cwd=REPO)
    assert from_capture.returncode == 0, from_capture.stderr
    from_model = run_here("info", str(model_path))
    assert from_model.returncode == 0, from_model.stderr
    # Same rows (the first line names the file and its kind, which differ).
    model_lines = from_model.stdout.splitlines()
    capture_lines = from_capture.stdout.splitlines()
    # the same tree and totals; a capture adds what it holds of its samples at the end
    assert capture_lines[1:len(model_lines)] == model_lines[1:]
    assert "samples" in "\n".join(capture_lines[len(model_lines):])
    assert "block/b_conv" in from_capture.stdout


def test_disk_full_is_a_one_line_error_and_leaves_nothing(small_model, tmp_path, monkeypatch):
    import errno

    from qinspect.capture import runner

    model, path, inputs = small_model
    plan = runner.plan_capture(path, inputs, batch_size=4)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(QInspectError) as info:
        runner.run_capture(plan, tmp_path / "c.h5", keras_model=model)
    assert "No space left on device" in str(info.value) and str(tmp_path / "c.h5") in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_custom_layer_model_is_refused(tmp_path):
    import tf_keras as tfk

    @tfk.utils.register_keras_serializable(package="qinspect_test")
    class Scale(tfk.layers.Layer):
        def call(self, x):
            return x * 3.0

    inp = tfk.Input((4,), name="x")
    tfk.Model(inp, Scale(name="scale")(tfk.layers.Dense(2, name="fc")(inp))).save(tmp_path / "custom.h5")
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    line = _one_line_error(run_here("capture", str(tmp_path / "custom.h5"), "--inputs", str(tmp_path / "x.npy"),
                                   "-o", str(tmp_path / "c.h5")), tmp_path / "custom.h5")
    assert "scale" in line and not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize("damage", ["truncated", "newer"])
def test_info_on_a_damaged_capture_is_one_line(small_capture, tmp_path, damage):
    out, _ = small_capture
    bad = tmp_path / "bad.h5"
    bad.write_bytes(out.read_bytes())
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])
    else:
        with h5py.File(bad, "r+") as h5:
            h5.attrs["version"] = "3.1"
    line = _one_line_error(run_here("info", str(bad)), bad)
    if damage == "newer":
        assert "3.1" in line and "1.3" in line


def test_two_input_model_from_npz(tmp_path):
    """Inputs are matched to the model by name, whatever the order of the arrays in the archive."""
    import tf_keras as tfk

    tfk.utils.set_random_seed(3)
    b = tfk.Input((3,), name="b_in")
    a = tfk.Input((4,), name="a_in")
    x = tfk.layers.Concatenate(name="cat")([a, tfk.layers.Dense(2, name="fc_b")(b)])
    model = tfk.Model([b, a], tfk.layers.Dense(5, name="head")(x))
    model.save(tmp_path / "two.h5")
    rng = np.random.default_rng(6)
    xa, xb = rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", a_in=xa, b_in=xb)
    out = tmp_path / "c.h5"
    result = run_here("capture", str(tmp_path / "two.h5"), "--inputs", str(tmp_path / "x.npz"), "-o", str(out), "-q",
                     "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    with Capture.open(out) as cap:
        assert cap.input_names() == ["b_in", "a_in"]
        np.testing.assert_array_equal(cap.inputs("a_in"), xa)
        np.testing.assert_array_equal(cap.activation("b_in"), xb)
        want = model.predict([xb, xa], verbose=0)
        np.testing.assert_allclose(cap.activation("head"), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
        cat = tfk.Model(model.inputs, model.get_layer("cat").output).predict([xb, xa], verbose=0)
        np.testing.assert_allclose(cap.activation("cat"), cat, rtol=1e-6, atol=1e-6 * np.abs(cat).max())


def test_shared_layers_are_captured_at_every_call(tmp_path):
    """A Dense and a nested model each called twice: the capture holds each call's own output
    (``shared``, ``shared@2``; ``enc/enc_d``, ``enc@2/enc_d``), worked out by hand."""
    import tf_keras as tfk

    tfk.utils.set_random_seed(4)
    ii = tfk.Input((4,), name="ii")
    enc = tfk.Model(ii, tfk.layers.Dense(3, name="enc_d")(ii), name="enc")
    a, b = tfk.Input((4,), name="a"), tfk.Input((4,), name="b")
    shared = tfk.layers.Dense(4, name="shared")
    model = tfk.Model([a, b], tfk.layers.Concatenate(name="cat")([enc(shared(a)), enc(shared(b))]))
    model.save(tmp_path / "siamese.h5")
    rng = np.random.default_rng(8)
    xa, xb = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    np.savez(tmp_path / "x.npz", a=xa, b=xb)
    result = run_here("capture", str(tmp_path / "siamese.h5"), "--inputs", str(tmp_path / "x.npz"), "-o",
                      str(tmp_path / "c.h5"), "-q")
    assert result.returncode == 0, result.stderr
    w_shared, b_shared = model.get_layer("shared").get_weights()
    w_enc, b_enc = model.get_layer("enc").get_layer("enc_d").get_weights()
    first = xa @ w_shared + b_shared  # shared(a), by hand
    with Capture.open(tmp_path / "c.h5") as cap:
        np.testing.assert_allclose(cap.activation("shared"), first, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cap.activation("enc/enc_d"), first @ w_enc + b_enc, rtol=1e-5, atol=1e-6)
        second = (xb @ w_shared + b_shared) @ w_enc + b_enc
        np.testing.assert_allclose(cap.activation("shared@2"), xb @ w_shared + b_shared, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cap.activation("enc@2/enc_d"), second, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cap.activation("cat"), np.concatenate([first @ w_enc + b_enc, second], axis=1),
                                   rtol=1e-5, atol=1e-6)


def test_output_folder_must_exist_and_inputs_must_exist(small_model, tmp_path):
    _, path, inputs = small_model
    target = tmp_path / "no" / "such" / "c.h5"
    line = _one_line_error(run_here("capture", str(path), "--inputs", str(inputs), "-o", str(target)), target)
    assert "folder" in line
    _one_line_error(run_here("capture", str(path), "--inputs", str(tmp_path / "none.npy"), "-o",
                             str(tmp_path / "c.h5")), tmp_path / "none.npy")
    assert list(tmp_path.iterdir()) == []


def test_keras3_h5_and_inputs_only_capture(tmp_path):
    """A Keras 3 model saved as .h5 runs through Keras 3; ``--layers`` matching only the input runs nothing."""
    import keras

    x = np.random.default_rng(9).normal(size=(5, 6, 6, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    model = keras.Sequential([keras.Input((6, 6, 2), name="img"), keras.layers.Conv2D(3, 3, name="c"),
                              keras.layers.ReLU(name="r"), keras.layers.Flatten(name="f"),
                              keras.layers.Dense(2, name="d")], name="seq3")
    model.save(tmp_path / "k3.h5")
    result = run_here("capture", str(tmp_path / "k3.h5"), "--inputs", str(tmp_path / "x.npy"), "-o",
                      str(tmp_path / "c.h5"), "-q")
    assert result.returncode == 0, result.stderr
    with Capture.open(tmp_path / "c.h5") as cap:
        assert cap.layers_with_activations() == ["img", "c", "r", "f", "d"]
        want = model.predict(x, verbose=0)
        np.testing.assert_allclose(cap.activation("d"), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    result = run_here("capture", str(tmp_path / "k3.h5"), "--inputs", str(tmp_path / "x.npy"), "-o",
                      str(tmp_path / "i.h5"), "-q", "--layers", "img")
    assert result.returncode == 0, result.stderr
    with Capture.open(tmp_path / "i.h5") as cap:
        assert cap.layers_with_activations() == ["img"]
        np.testing.assert_array_equal(cap.activation("img"), x)


def test_non_finite_inputs_are_warned_about_with_the_first_sample_that_holds_one(small_model, tmp_path):
    # The warning named the batch ("first in samples 0..4") where one NaN sat in sample 3.
    _, path, inputs = small_model
    x = np.load(inputs)
    x[3, 1, 2, 0] = np.nan
    bad = tmp_path / "nan.npy"
    np.save(bad, x)
    result = run_cli("capture", str(path), "--inputs", str(bad), "-o", str(tmp_path / "cap.h5"), "--batch-size", "5")
    assert result.returncode == 0, result.stderr
    assert "inputs hold NaN or Inf (first in sample 3)" in result.stderr
