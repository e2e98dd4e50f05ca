"""The options advisor for the window's Advice tab, run in a helper process of its own.

Imported in that process, so it needs no Qt. Rows are measured as ``qinspect advise`` measures them
(:func:`qinspect.analysis.advisor.advise`): on the evaluation capture when one is compared, else on the
capture's first samples; every option set is recalibrated on the capture's inputs. The window measures
them on as many samples as its diagnosis (the status bar's and the Findings tab's figures): on fewer, the
advisor's row for the quantization in use read 22 dB where the status bar said 16 dB for the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qinspect.gui.document import open_document


@dataclass
class AdviceResult:
    """The advisor's ranked rows (``AdviceRow.to_dict()``) and what they were measured on."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    measured_on: str = ""
    n_samples: int = 0
    outputs: list[str] | None = None  # the output layers the rows' figures are of (None: all of them)
    n_calib: int = 0  # the calibration samples the as-calibrated rows were calibrated on


def advise_capture(path: str, eval_path: str | None, options: dict[str, Any] | None,
                   samples: int | None = None, outputs: list[str] | None = None) -> AdviceResult:
    """Try the quantizer options and keep-float sets on the capture at ``path``, measured on the output
    layers ``outputs`` (None: all), on ``samples`` samples (None: the diagnosis' count,
    :func:`~qinspect.analysis.diagnose.default_sens_samples`); progress goes to
    :func:`qinspect.gui.compute_process.report_progress` (which also stops a cancelled job)."""
    from qinspect.analysis.advisor import advise, has_relu6, option_grid
    from qinspect.analysis.diagnose import default_sens_samples
    from qinspect.analysis.outputs import focused, resolve_outputs
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.options import QuantizerOptions
    from qinspect.gui.compute_process import report_progress
    from qinspect.gui.emulation import diagnosis_data

    document = open_document(path)
    try:
        base = QuantizerOptions.from_dict(options)
        report_progress(0, 0, "building the int8 model")
        graph = Emulator.from_model(document.capture, options=base).graph
        chosen = None if outputs is None else resolve_outputs(graph, outputs)
        data, calib, _labels = diagnosis_data(document, graph, eval_path)
        calib = calib if calib is not None else data
        if samples is None:
            samples = default_sens_samples(graph, len(next(iter(data.values()))))
        data = {k: v[:samples] for k, v in data.items()}
        n_calib = len(next(iter(calib.values())))

        def build(opts: dict[str, Any]) -> Any:
            n = opts.get("calib_samples", n_calib)
            keywords = {k: v for k, v in opts.items() if k != "calib_samples"}
            return focused(Emulator.from_model(document.capture, {k: v[:n] for k, v in calib.items()},
                                               options=base.with_(**keywords)).graph, chosen)

        grid = option_grid(base.calib_batch_size, n_calib, has_relu6(document.graph.layers))
        rows = advise(build, data, grid, step=lambda text, done, total: report_progress(done, total, text))
    finally:
        document.close()
    return AdviceResult([r.to_dict() for r in rows], "evaluation" if eval_path else "calibration",
                        len(next(iter(data.values()))), outputs, n_calib)


def advice_job(token: Any, path: str, eval_path: str | None, options: dict[str, Any] | None,
               outputs: list[str] | None = None) -> AdviceResult:
    """Worker: :func:`advise_capture` in a helper process of its own, its progress forwarded; cancelling
    the token stops it at its next progress report."""
    from qinspect.gui.worker import in_own_process

    return in_own_process(token, advise_capture, path, eval_path, options, None, outputs)
