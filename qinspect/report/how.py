"""The "how each number was computed" texts of every export.

The metric definitions are taken from :meth:`ErrorStats.to_dict` (the code that computes them says
how); the report adds what only it knows: which tensors were compared, where positions came from,
and how the histograms were binned.
"""

from __future__ import annotations

from qinspect.analysis.metrics import ErrorStats
from qinspect.report.layer import HIST_BINS

# Report key -> ErrorStats.to_dict() key whose "how" text defines it.
_FROM_STATS = {
    "sqnr_db": "sqnr_db",
    "mse": "mse",
    "cosine": "cosine",
    "max_abs": "max_abs_d",
    "saturation low": "clip_lo_frac",
    "saturation high": "clip_hi_frac",
    "codes used": "codes_used_frac",
}


def how_texts() -> dict[str, str]:
    """Key -> one or two sentences saying how that number was computed."""
    stats = ErrorStats().to_dict()
    out = {
        "isolated": "the layer alone: its inputs are the float reference values quantized at the positions the "
        "int8 pipeline uses, the layer runs its integer DPU operator in the emulator, and its dequantized "
        "output (test) is compared with the float reference output (ref)",
        "accumulated": "the whole int8 pipeline from the model input to this layer, run in integers by the "
        "emulator, dequantized and compared with the float reference output",
        "float reference": "the emulator's float path over the same inputs: the model as the quantizer rewrites "
        "it (BatchNorm folded, equalized weights) in float32, with the float model's own functions where the "
        "quantizer changes the function (true sigmoid, original LeakyReLU alpha); histograms use the "
        "capture's float values of the layer",
    }
    for key, stats_key in _FROM_STATS.items():
        text = stats[stats_key]["how"]
        if key.startswith(("saturation", "codes")):
            text += "; for the layer's float output from the capture quantized alone at its output position (HALF_UP)"
        out[key] = text
    out["rmse_over_scale"] = (
        "sqrt(mse) divided by the output's quantization step 2^-p (p = output position): the RMS error in LSB; "
        "rounding alone gives about 0.29 (1/sqrt(12))"
    )
    out["positions"] = (
        "a position p means scale 2^-p: q = clip(round(x * 2^p), -128, 127); input lists one position per "
        "input tensor; a dash means the tensor has no quantizer of its own (for example a conv whose "
        "activation is fused into it)"
    )
    out["histograms"] = (
        f"{HIST_BINS} equal bins between the smallest and largest finite value; activation histograms count "
        "every value of every calibration sample in the capture; weights histograms count the weights as "
        "quantized (after BatchNorm folding and equalization); the error histogram counts test - ref per "
        "element, its range widened to at least +-1/2 LSB"
    )
    out["per-channel ranges"] = (
        "the smallest and largest weight of each output channel (Keras layout: last kernel axis; depthwise "
        "channels are input channel x multiplier); bits wasted = log2(tensor max|w| / channel max|w|)"
    )
    return out
