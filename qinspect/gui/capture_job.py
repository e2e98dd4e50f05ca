"""The GUI's capture, run in a helper process (no Qt here: the helper imports this module).

TensorFlow and the capture writer hold the GIL in stretches; in a thread of the window's process they
stalled its painting. :func:`qinspect.gui.compute_process.call_with_progress` runs :func:`capture` in
a process of its own, forwards its progress and cancels it cooperatively (at the next batch, so the
runner's atomic writer leaves nothing at the destination).
"""

from __future__ import annotations


def capture(model_path: str, inputs: str, output: str, samples: int | None, preprocess: str | None) -> str:
    """Plan (no TensorFlow), then run the capture, reporting progress; returns the capture path."""
    from qinspect.capture.runner import plan_capture, run_capture
    from qinspect.gui.compute_process import report_progress

    report_progress(0, 1, "checking inputs")
    plan = plan_capture(model_path, inputs, samples=samples, preprocess=preprocess)
    report_progress(0, plan.n_samples, "loading TensorFlow")
    result = run_capture(plan, output, overwrite=True, progress=lambda done, total: report_progress(done, total))
    return result.path
