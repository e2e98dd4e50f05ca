"""Causes in the calibration data, and their remedies proved by calibrating again.

- **Outlier samples.** A calibration sample whose largest magnitude at a tensor is far beyond the other
  samples' (:func:`qinspect.analysis.recalibration.outlier_samples`) can set that tensor's position for
  every sample. It is found over every calibration sample, not only those the findings examine; an
  ``outlier_range`` finding (values-based, :func:`qinspect.analysis.findings.outlier_range`) at the same
  tensor gets the samples as evidence, and where there is none a finding is made.
  Remedy: the quantizer's calibration run again without those samples, every changed position applied.
  When the diagnosis measures on the calibration data itself, the outlier samples among the measured
  ones are left out of the remedy's measurement and of its baseline (the remedy is for data without
  them), and the remedy says so.
- **Coverage.** Remedy: the calibration run again on the evaluation data (the data in use), every
  changed position applied; measured on samples it was calibrated on, so an upper bound, said so.

Calibrating again without the outlier samples may change nothing (the batch vote outvoted them): the
finding then gets no recalibration fix, and a note says the samples set no position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from qinspect.analysis.findings import Finding, _severity, ev
from qinspect.analysis.recalibration import MAX_OUTLIER_SHARE, OUTLIER_SAMPLE_BITS, Recalibration, outlier_samples
from qinspect.analysis.remedies import Fix
from qinspect.dpu.dpu_graph import DpuGraph, Node, Slot

SHOWN_SAMPLES = 8  # outlier sample indices named in words


def _samples_text(idx: list[int]) -> str:
    shown = ", ".join(str(i) for i in idx[:SHOWN_SAMPLES])
    return f"sample{'s' if len(idx) > 1 else ''} {shown}" + (f" and {len(idx) - SHOWN_SAMPLES} more"
                                                             if len(idx) > SHOWN_SAMPLES else "")


DOMINANT_RATIO = 2.0  # a few samples whose largest |x| is this many times every other sample's hold a range


def dominant_samples(maxima: np.ndarray) -> np.ndarray:
    """The few samples (at most ``MAX_OUTLIER_SHARE`` of them, at least 8 samples in all) that alone stretch a
    range: each one's largest |x| more than ``DOMINANT_RATIO`` x every other sample's and x the median's.
    Looser than :func:`outlier_samples` (4x the median): used only where an outlier_range finding already
    stands at the tensor, and the recalibration without them is then measured, not assumed."""
    n = maxima.size
    median = float(np.median(maxima)) if n else 0.0
    if n < 8 or median <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-maxima, kind="stable")
    for k in range(1, max(1, int(MAX_OUTLIER_SHARE * n)) + 1):
        low = float(maxima[order[k - 1]])
        if low > DOMINANT_RATIO * float(maxima[order[k]]) and low > DOMINANT_RATIO * median:
            return np.sort(order[:k])
    return np.zeros(0, np.int64)


def _sample_evidence(maxima: np.ndarray, idx: np.ndarray, rule: str | None = None) -> dict[str, object]:
    rest = np.delete(maxima, idx)
    rule = rule or f"more than {2 ** OUTLIER_SAMPLE_BITS:g}x the median sample's"
    return {
        "outlier_samples": ev([int(i) for i in idx], f"calibration samples (0-based, of all {maxima.size}) whose "
                              f"largest |x| here is {rule}"),
        "outlier_sample_max": ev(float(maxima[idx].max()), "largest |x| of those samples"),
        "median_sample_max": ev(float(np.median(maxima)), "median over the calibration samples of each one's "
                                                          "largest |x|"),
        "other_samples_max": ev(float(rest.max()) if rest.size else None, "largest |x| of every other sample"),
    }


def attach_outlier_samples(graph: DpuGraph, found: list[Finding], recal: Recalibration,
                           noise: dict[str, float], tag: Callable[[Finding, Node], Finding],
                           label: Callable[[Node], str]) -> list[Finding]:
    """Give each ``outlier_range`` finding the calibration samples that hold its outliers, and make a
    finding where whole samples are outliers and none was found from the values. Returns the new ones."""
    by_node = {f.evidence.get("node", {}).get("value"): f for f in found if f.kind == "outlier_range"}
    maxima = recal.maxima()
    new: list[Finding] = []
    for node in graph.nodes:
        m = maxima.get(node.name)
        pos = graph.pos(node.out_slot)
        if m is None or pos is None:
            continue
        idx = outlier_samples(m)
        f = by_node.get(node.name)
        if not idx.size and f is not None:
            # the finding's far outliers may sit in one sample below the 4x rule (a spike that CLE scaled):
            # name it, and its recalibration is tried beside the finding's other remedies
            idx = dominant_samples(m)
            if idx.size:
                f.evidence.update(_sample_evidence(m, idx, f"more than {DOMINANT_RATIO:g}x every other sample's "
                                                      "and the median sample's"))
            continue
        if not idx.size:
            continue
        evidence = _sample_evidence(m, idx)
        if f is not None:
            f.evidence.update(evidence)
            continue
        rest = np.delete(m, idx)
        if not rest.size or rest.max() <= 0:
            continue
        bits = math.log2(float(m[idx].max()) / float(rest.max()))
        if bits < 1.0:  # the others reach half their range: no position to gain
            continue
        evidence = {**evidence, "position": ev(int(pos), "the activation's int8 position"),
                    "bits_wasted": ev(bits, "log2(largest |x| of the outlier samples / of every other sample)")}
        # estimate only (to rank the candidates): each bit of range the outliers take costs the others
        # about 6 dB; the remedy measured below replaces it
        share = 1.0 - 4.0 ** (-bits)
        severity = _severity(evidence, share, 6.02 * bits, noise.get(node.name))
        layer = label(node)
        advice = (f"{_samples_text([int(i) for i in idx]).capitalize()} of the calibration data reach "
                  f"{float(m[idx].max()):.3g} at {layer}, {float(m[idx].max()) / float(np.median(m)):.0f}x the median "
                  "sample's largest value: check them (a wrong scale, a corrupt image) and calibrate without them, "
                  "or keep inputs like them out of use.")
        f = tag(Finding(layer, "outlier_range", severity, evidence, advice), node)
        f.evidence["data"] = ev("calibration data", "the outliers are looked for in the calibration data, which "
                                                   "set the position")
        new.append(f)
        by_node[node.name] = f
    return new


def _moves_text(changes: dict[Slot, int], baseline: dict[Slot, int], first: Slot | None) -> str:
    """'input_1 at position 5 instead of 0, and 3 other tensors' for a recalibration's changes."""
    if first is None or first not in changes:
        first = next(iter(changes))
    head = f"{first[0]} at position {changes[first]} instead of {baseline.get(first)}"
    rest = len(changes) - 1
    return head + (f", and {rest} other tensor{'s' if rest > 1 else ''}" if rest else "")


def data_fixes(graph: DpuGraph, found: list[Finding], recal: Recalibration, notes: list[str],
               measured_is_calibration: bool, n_measured: int,
               evaluation: dict[str, np.ndarray] | None) -> dict[int, list[Fix]]:
    """Recalibration fixes for the findings whose cause is in the data (keyed by ``id(finding)``):
    outlier samples dropped, or the evaluation data calibrated on. ``n_measured``: the samples the
    remedies are measured on (the first ones of the measured data)."""
    out: dict[int, list[Fix]] = {}
    quiet: dict[tuple[int, ...], list[tuple[int, str]]] = {}  # outlier samples setting no position -> where
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    for f in found:
        name = f.evidence.get("node", {}).get("value")
        if name not in graph:
            continue
        slot = graph[name].out_slot
        if f.kind == "outlier_range" and "outlier_samples" in f.evidence:
            idx = np.asarray(f.evidence["outlier_samples"]["value"], np.int64)
            changes = recal.without(idx)
            f.evidence["positions_without"] = ev(
                {f"{s[0]}:{s[1]}": p for s, p in changes.items()},
                "activation positions that change when the quantizer's calibration runs again without the "
                "outlier samples (the rest as calibrated)")
            text = _samples_text([int(i) for i in idx])
            if not changes:
                quiet.setdefault(tuple(int(i) for i in idx), []).append((order[name], f.layer))
                continue
            excl = tuple(int(i) for i in idx if i < n_measured) if measured_is_calibration else ()
            measured_on = (f"the {n_measured - len(excl)} measured samples other than the outlier "
                           f"{_samples_text(list(excl))}" if excl else "")
            worst, median = f.evidence["outlier_sample_max"]["value"], f.evidence["median_sample_max"]["value"]
            one = len(idx) == 1
            them = "it" if one else "them"
            moves = _moves_text(changes, recal.baseline, slot)
            f.advice = (f"Calibration {text} reach{'es' if one else ''} {'' if one else 'up to '}{worst:.3g} "
                        f"(largest |value|) at {f.layer}, "
                        f"{worst / median:.0f}x the median sample's largest value, and set{'s' if one else ''} "
                        f"positions every other sample then shares ({moves} "
                        f"without {them}): check {them} (a wrong scale, a corrupt file) and calibrate without "
                        f"{them}; inputs like {them} in use would then clip.")
            out[id(f)] = [Fix("recalibrate", f"calibrate without the outlier {text} ({moves})"
                              + (f"; measured on {measured_on}" if excl else ""), dict(changes),
                              exclude=excl, measured_on=measured_on)]
        elif f.kind == "coverage" and evaluation is not None:
            changes = recal.on(evaluation, "evaluation")
            if slot is not None and slot in changes:
                f.evidence["eval_position"] = ev(int(changes[slot]), "the position the quantizer's calibration "
                                                                     "chooses on the evaluation data")
            if not changes:
                continue
            n_eval = len(next(iter(evaluation.values())))
            out[id(f)] = [Fix("recalibrate", f"recalibrate on data like the evaluation data (here its {n_eval} "
                              f"samples themselves: {_moves_text(changes, recal.baseline, slot)}; measured on "
                              "samples it was calibrated on, so an upper bound)", dict(changes))]
    for idx, places in quiet.items():
        layers = [layer for _, layer in sorted(places)]
        one = len(idx) == 1
        where = layers[0] + (f" and {len(layers) - 1} tensor(s) after it" if len(layers) > 1 else "")
        notes.append(f"calibration {_samples_text(list(idx))} {'is an outlier' if one else 'are outliers'} at {where} "
                     f"but set{'s' if one else ''} no position: calibrated without {'it' if one else 'them'}, every "
                     "position is the same (the other calibration batches outvote it)")
    return out


def measured_outliers_note(found: list[Finding], signal: np.ndarray, noise: np.ndarray) -> str | None:
    """When outlier calibration samples are among the measured ones (per-sample output ``signal`` and
    ``noise`` powers), the output SQNR without them: pooled by power, a few clipped outliers can set it."""
    idx = sorted({int(i) for f in found for i in (f.evidence.get("outlier_samples") or {}).get("value") or []
                  if int(i) < len(signal)})
    if not idx or len(idx) >= len(signal):
        return None
    keep = np.setdiff1d(np.arange(len(signal)), idx)
    s, n = float(signal[keep].sum()), float(noise[keep].sum())
    s_all, n_all = float(signal.sum()), float(noise.sum())
    if n <= 0 or s <= 0 or n_all <= 0:
        return None
    one = len(idx) == 1
    return (f"the outlier calibration {_samples_text(idx)} {'is' if one else 'are'} among the measured samples: the "
            f"output SQNR over the other {len(keep)} is {10 * math.log10(s / n):.1f} dB "
            f"({10 * math.log10(s_all / n_all):.1f} dB with {'it' if one else 'them'})")


INPUT_CEILING_DB = 30.0  # an input whose quantization alone leaves less output SQNR than this is said
OFFSET_RATIO = 4.0  # an input mean this many times its spread takes most of its int8 range


def input_ceiling_notes(graph: DpuGraph, rows: list, sample: dict[str, np.ndarray],
                        label: Callable[[Node], str], moved: Mapping[str, str] | None = None,
                        best: tuple[str, float] | None = None, noise_db: float = math.nan) -> list[str]:
    """A note per model input whose quantization alone (every layer after it float: the sensitivity's
    only-quantized run) limits the output SQNR: a ceiling no remedy here passes, since the DPU reads its
    input in int8. Says how many codes the input uses, and when an offset far larger than the values'
    spread takes the range, that removing it frees the bits. ``moved``: input quantizer nodes a kept
    finding's remedy gives another position, with that finding's title: the ceiling is the calibrated
    position's, and that remedy passes it. ``best``: the finding whose measured remedy reaches the highest
    output SQNR, and that SQNR: where it passes the ceiling (a rebuilt model, other positions), the note
    says so instead of calling the ceiling absolute; ``noise_db``: the output SQNR's standard error on these
    samples, within twice which passing it is measurement noise, not a remedy beating the ceiling."""
    from qinspect.dpu.dpu_graph import quantizes_model_input
    from qinspect.dpu.fixed_point import Round, quantize

    out = []
    for row in rows:
        if row.node not in graph or not math.isfinite(row.only_quantized_sqnr_db) \
                or row.only_quantized_sqnr_db >= INPUT_CEILING_DB:
            continue
        node = graph[row.node]
        pos = graph.pos(node.out_slot)
        if not quantizes_model_input(graph, node) or pos is None or node.inputs[0] not in sample:
            continue
        x = np.asarray(sample[node.inputs[0]], np.float64).ravel()
        narrow = graph.code_min(node.out_slot) > -128  # a DPUCADF8H target's input codes in [-127, 127]
        codes = int(np.unique(quantize(x.astype(np.float32), int(pos), Round.HALF_UP, narrow)).size)
        mean, spread = float(x.mean()), float(x.std())
        by = (moved or {}).get(node.name)
        passed = best is not None and math.isfinite(best[1]) and best[1] > row.only_quantized_sqnr_db
        within_noise = passed and math.isfinite(noise_db) and best[1] - row.only_quantized_sqnr_db <= 2 * noise_db
        if by:
            ceiling = (f"at the position it is calibrated to, which the remedy of {by} moves (so that remedy is not "
                       "bound by it)")
        elif within_noise:
            # both figures are estimates on the same few samples: a remedy 0.6 dB past a ceiling it cannot
            # pass is the measurement's noise, not a remedy that beats it
            ceiling = (f"an estimate on these samples (± {noise_db:.1f} dB): the remedy of {best[0]} reads "
                       f"{best[1]:.1f} dB, within that noise of it, and is bound by it as well")
        elif passed:
            ceiling = (f"as quantized here; the remedy of {best[0]} reaches {best[1]:.1f} dB, past it (it changes "
                       "the model or the positions this was measured on)")
        else:
            ceiling = "a ceiling no remedy here passes (the DPU reads its input in int8)"
        text = (f"quantizing the model input {label(node)} alone (every layer after it float) limits the output "
                f"SQNR to {row.only_quantized_sqnr_db:.1f} dB, {ceiling}: at position {int(pos)} its values take "
                f"{codes} of the 256 codes")
        if spread > 0 and abs(mean) > OFFSET_RATIO * spread:
            text += (f", sitting at {mean:.4g} ± {spread:.3g}: an offset {abs(mean) / spread:.0f}x their spread takes "
                     "the range; subtracting it in preprocessing (and folding it into the first layer's bias) frees "
                     "those bits")
        out.append(text)
    return out

