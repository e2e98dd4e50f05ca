"""Calibration against evaluation data: per layer, how much of each capture falls outside the int8 range.

On a capture that keeps full tensors for fewer samples than it was fed, the fractions are of the kept
samples' values (the view says "K of N samples") and the largest magnitudes of every sample's statistics.

The range of a layer is the one the int8 model uses (the emulator's position, calibrated on the open
capture), ``[-128, 127] * 2^-p`` (``[-127, 127]`` on a DPUCADF8H target). For each layer both captures
are streamed in sample batches, and the fraction of values below and above that range is counted. A
layer where the evaluation fraction is far above the calibration one is a layer the calibration data did
not cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qinspect.analysis.coverage import activation_batches, range_shares
from qinspect.analysis.metrics import representable_range
from qinspect.dpu.fixed_point import Round, pos_min_mse
from qinspect.errors import QInspectError
from qinspect.gui import layer_stats as ls
from qinspect.gui.worker import CancelToken

BATCH_BYTES = 4 << 20  # a million float32 values a read


@dataclass
class CoverageRow:
    """One layer of the comparison."""

    layer: str
    position: int
    position_source: str
    lo: float
    hi: float
    calib_below: float
    calib_above: float
    eval_below: float
    eval_above: float
    calib_absmax: float
    eval_absmax: float

    @property
    def whatif(self) -> bool:
        """True when the int8 model does not quantize this tensor: its position is min-MSE's what-if."""
        return self.position_source.startswith(MIN_MSE_SOURCE)

    @property
    def calib_outside(self) -> float:
        """Fraction of calibration values outside the range."""
        return self.calib_below + self.calib_above

    @property
    def eval_outside(self) -> float:
        """Fraction of evaluation values outside the range."""
        return self.eval_below + self.eval_above


@dataclass
class Coverage:
    """The comparison of two captures of the same model."""

    calib_path: str
    eval_path: str
    calib_samples: int
    eval_samples: int
    rows: list[CoverageRow] = field(default_factory=list)
    calib_total: int = 0  # every sample a kept-subset capture was fed (0: as many as it keeps)
    eval_total: int = 0
    warning: str | None = None  # the two captures' inputs were scaled differently (--preprocess)

    def samples_text(self, which: str) -> str:
        """'12 samples', or '4 of 12 samples' for a kept-subset capture (``which``: calib or eval)."""
        kept, total = getattr(self, f"{which}_samples"), getattr(self, f"{which}_total")
        return f"{kept} of {total} samples" if total > kept else f"{kept} samples"

    def summary(self) -> str:
        """One line for the status bar."""
        if not self.rows:
            return "No common layers to compare"
        # the worst of the tensors the int8 model quantizes: a what-if row (a float CPU layer, a tensor
        # folded into its consumer) has no int8 range in the model
        quantized = [r for r in self.rows if not r.whatif]
        worst = max(quantized or self.rows, key=lambda r: r.eval_outside)
        return (f"Compared {len(self.rows)} layers: worst coverage at {worst.layer}"
                + (" (what-if: no tensor of the int8 model is quantized)" if worst.whatif else "")
                + f", {100 * worst.eval_outside:.3g}% of evaluation values outside the calibrated range")


MIN_MSE_SOURCE = "min-MSE over the calibration capture"


def _fractions(capture, layer: str, lo: float, hi: float, token: CancelToken,
               scale: np.ndarray | None = None) -> tuple[float, float, float]:
    """Shares of ``layer``'s captured values below ``lo`` and above ``hi``, and its largest magnitude
    (times ``scale`` per channel first: the int8 model's equalized tensor)."""
    got = range_shares(activation_batches(capture, layer, scale=scale, batch_bytes=BATCH_BYTES), lo, hi, token.check)
    return got.below_share, got.above_share, got.absmax


def _total(capture) -> int:
    return int(getattr(capture, "n_total_samples", capture.n_samples))


def _absmax(capture, layer: str, kept_absmax: float, scale: np.ndarray | None = None) -> float:
    """A layer's largest magnitude over every sample fed (statistics of a kept-subset capture; per
    channel times ``scale`` when given)."""
    if not getattr(capture, "is_kept_subset", False):
        return kept_absmax
    stats = capture.stats(layer)
    if scale is None:
        return float(stats.abs_max())
    return float(np.max(np.maximum(np.abs(stats.channel_min), np.abs(stats.channel_max)) * scale))


def check_same_model(calib, evaluation, calib_path: str, eval_path: str) -> list[str]:
    """Layers both captures hold activations of; another model (or input size) is a user error, said in
    the words of every other place that compares two captures (:mod:`qinspect.io.same_model`)."""
    from qinspect.io import same_model

    same_model.check_same_model(calib.graph, calib_path, evaluation.graph, eval_path)
    held = set(evaluation.layers_with_activations())
    common = [name for name in calib.layers_with_activations() if name in held]
    if not common:
        raise QInspectError(f"holds activations of no layer that {calib_path} holds (captured with other "
                            "--layers patterns): capture both with the same layers", eval_path)
    return common


def coverage_job(token: CancelToken, document, eval_path: str, analysis) -> Coverage:
    """Worker: compare the open capture (calibration) with the capture at ``eval_path`` (evaluation)."""
    from qinspect.io.capture_file import Capture, preprocess_mismatch

    if document.capture is None:
        raise QInspectError("open a capture first (a model has no activations to compare)", document.path)
    evaluation = Capture.open(eval_path)
    try:
        common = check_same_model(document.capture, evaluation, document.path, eval_path)
        out = Coverage(document.path, eval_path, document.n_samples, evaluation.n_samples,
                       calib_total=_total(document.capture), eval_total=_total(evaluation),
                       warning=preprocess_mismatch(document.capture, evaluation))
        for i, name in enumerate(common):
            token.progress(i, len(common), name)
            pos, source = (analysis.activation_position(name) if analysis is not None else (None, ""))
            code_min = analysis.activation_code_min(name) if analysis is not None else -128
            if pos is None:
                # No emulator position: the vai_q activation rule (min-MSE, HALF_UP) on the calibration
                # values, read as the layer panel reads them.
                shape = document.capture.activation_shape(name)
                size = int(np.prod(shape[1:], dtype=np.int64))
                ids, keep = ls.spread_plan(int(shape[0]), size)
                values = ls.read_spread(document.capture, name, ids, keep, token.check)
                if values.size == 0:
                    continue
                pos, source = pos_min_mse(values, Round.HALF_UP, code_min > -128), MIN_MSE_SOURCE
            lo, hi = representable_range(pos, qmin=code_min)  # [-127, 127] * 2^-p on a DPUCADF8H target
            # against the emulator's position, the int8 model's (equalized) tensor
            scale = analysis.channel_scale(name) if analysis is not None and source != MIN_MSE_SOURCE else None
            if scale is not None:
                from qinspect.report.wording import equalized_note

                source = f"{source}; {equalized_note(scale)}"
            cb, ca, cmax = _fractions(document.capture, name, lo, hi, token, scale)
            eb, ea, emax = _fractions(evaluation, name, lo, hi, token, scale)
            # the fractions need the values (kept samples); the largest magnitude is in every sample's statistics
            cmax, emax = _absmax(document.capture, name, cmax, scale), _absmax(evaluation, name, emax, scale)
            out.rows.append(CoverageRow(name, int(pos), source, lo, hi, cb, ca, eb, ea, cmax, emax))
        return out
    finally:
        evaluation.close()
