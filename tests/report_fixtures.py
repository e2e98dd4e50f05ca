"""Shared helpers of the report tests: a small hand-made report and a Pillow-based PNG renderer.

The numbers in :func:`sample_report` are arbitrary test values (the writers only copy numbers; the
tests check that what comes out equals what went in). Reports built from real emulator results are
tested in ``test_report_collect.py``.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qinspect.report import figspec
from qinspect.report.content import FigureSpec, LayerSection, Report


def pillow_renderer(specs: Sequence[FigureSpec]) -> dict[str, bytes]:
    """A Qt-free renderer: a blank PNG of each figure's size (enough to test embedding)."""
    out = {}
    for spec in specs:
        buf = io.BytesIO()
        Image.new("RGB", (spec.width, spec.height), "white").save(buf, "PNG")
        out[spec.id] = buf.getvalue()
    return out


def sample_report(findings: list | None = None) -> Report:
    """Two layers, one with every field filled and one CPU layer with missing numbers."""
    conv = LayerSection(
        name="block/conv<1>",
        class_name="Conv2D",
        placement="DPU",
        index=1,
        positions={"input": [6], "weights": 9, "bias": 10, "output": 5},
        positions_source="quantized.h5 (/x/quantized.h5)",
        isolated={"sqnr_db": 38.25, "mse": 1.2345678901234567e-05, "cosine": 0.99991, "max_abs": 0.0039,
                  "rmse_over_scale": 0.2887},
        accumulated={"sqnr_db": math.inf, "mse": 0.0, "cosine": 1.0, "max_abs": 0.0, "rmse_over_scale": 0.0},
        saturation_low=0.0,
        saturation_high=0.00125,
        codes_used=0.5078125,
        activation={"float_min": -1.5, "float_max": 4.25, "clip_low": -4.0, "clip_high": 3.96875},
        rewrites=["BatchNormalization bn1 folded into block/conv<1>"],
        adjustments=["shift_cut: weights position 10 -> 9"],
        findings=[f for f in (findings or []) if f.get("layer") == "block/conv<1>"],
    )
    conv.figures = [
        figspec.activation_figure("L1-activation", conv.name, [0.0, 1.0, 2.0], [3, 0], -4.0, 3.96875, 5, 0.0, 0.00125),
    ]
    soft = LayerSection(
        name="softmax",
        class_name="Softmax",
        placement="CPU",
        placement_note="the DPU has no softmax: computed in float on the CPU",
        index=2,
        positions={"input": [5], "weights": None, "bias": None, "output": None},
        positions_source="quantized.h5 (/x/quantized.h5)",
    )
    report = Report(
        model_name="tiny",
        source="/x/capture.h5",
        source_format="capture",
        samples=16,
        positions_source="quantized.h5 (/x/quantized.h5)",
        layers=[conv, soft],
        how={"sqnr_db": "10*log10(sum ref^2 / sum d^2)"},
        findings=findings,
        figures=[figspec.propagation_figure("propagation", ["block/conv<1>", "softmax"], [38.25, None],
                                            [math.inf, None])],
        generated="2026-01-01T00:00:00Z",
        qinspect_version="0.0-test",
    )
    return report


SRC_RE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def make_capture(out: Path, model: Path, inputs: Path) -> Path:
    """Capture ``model`` on ``inputs`` with the real ``qinspect capture`` command (needs TensorFlow)."""
    from conftest import run_cli

    result = run_cli("capture", str(model), "--inputs", str(inputs), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def small_capture(refcases, tmp_path_factory) -> Path:
    """A capture of the Vitis ``small`` reference model on its own calibration data (16 samples)."""
    small = refcases / "small"
    return make_capture(tmp_path_factory.mktemp("report") / "small.h5", small / "float.h5", small / "calib.npy")


@pytest.fixture(scope="session")
def small_eval_capture(refcases, tmp_path_factory) -> Path:
    """The same model captured on its calibration data times 3: values beyond the calibrated ranges."""
    small = refcases / "small"
    folder = tmp_path_factory.mktemp("report_eval")
    np.save(folder / "eval.npy", np.load(small / "calib.npy", allow_pickle=False) * 3.0)
    return make_capture(folder / "eval.h5", small / "float.h5", folder / "eval.npy")
