"""Findings in words: the one place that turns a diagnosed finding into a sentence with its key numbers.

Used by the window's Findings tab, the HTML report and the text of ``qinspect diagnose``. A finding may
be a :class:`qinspect.analysis.findings.Finding` or its ``to_dict()`` form (the report's JSON): fields
are read either way. Each known kind has its own sentence; a kind this module does not know (a new
cause added to the diagnosis) gets a generic sentence built from its fields, never nothing. A number the
evidence does not hold is left out of the sentence rather than guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qinspect.analysis.decisions import agreement_text
from qinspect.analysis.findings import OUTLIER_MIN_BITS
from qinspect.analysis.option_remedies import QUANTIZER_STOPS
from qinspect.analysis.remedies import OPTION_APART

KIND_TITLES = {
    "saturation": "Saturation",
    "outlier_range": "Outlier-stretched range",
    "channel_spread": "Channel range spread",
    "coverage": "Calibration does not cover use",
    "error_growth": "Error growth",
    "alignment": "Shared position",
    "constraint": "DPU constraint",
    "cpu_fallback": "CPU layer",
    "hw_vs_sim": "Board differs from simulation",
    "accumulated_rounding": "Accumulated rounding",
    "quantizer_option": "Quantizer option",
    "function_change": "Function replaced by the quantizer",
}


def field_of(finding: Any, name: str, default: Any = None) -> Any:
    """A finding's field, from a Finding object or its dict form (``severity_db`` is ``severity`` there)."""
    if isinstance(finding, Mapping):
        if name == "severity_db":
            name = "severity"
        return finding.get(name, default)
    return getattr(finding, name, default)


def evidence_value(finding: Any, key: str) -> Any:
    """The value of one evidence entry (``{"value": ..., "how": ...}`` or a bare value); None if absent."""
    evidence = field_of(finding, "evidence") or {}
    entry = evidence.get(key) if isinstance(evidence, Mapping) else None
    return entry.get("value") if isinstance(entry, Mapping) else entry


def kind_title(kind: str) -> str:
    """A short title for a finding kind (unknown kinds: the kind's words, capitalised)."""
    return KIND_TITLES.get(kind) or kind.replace("_", " ").strip().capitalize() or "Finding"


def finding_title(f: Any) -> str:
    """"Saturation at conv3"; a group of CPU layers adds how many more it holds ("CPU layer at ln0 and 22
    more")."""
    kind = str(field_of(f, "kind", ""))
    more = len(field_of(f, "affects") or []) if kind == "cpu_fallback" else 0
    return f"{kind_title(kind)} at {field_of(f, 'layer')}" + (f" and {more} more" if more else "")


def short_action(action: str, most: int = 8) -> str:
    """A keep-float remedy's action with its layer list cut to ``most`` names ("keep a, b and 49 more in
    float (CPU layers)"), for one-line summaries; any other action as it is."""
    m = re.fullmatch(r"keep (.+) in float( \(.*\))?", action)
    names = m.group(1).split(", ") if m else []
    if len(names) <= most:
        return action
    return f"keep {', '.join(names[:most])} and {len(names) - most} more in float{m.group(2) or ''}"


def _num(v: Any) -> float | None:
    """A finite float, or None (strings such as "inf" from strict JSON count as not finite)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _db(v: Any) -> str:
    x = _num(v)
    return f"{x:.1f} dB" if x is not None else "n/a"


def _pct(v: Any) -> str:
    x = _num(v)
    if x is None:
        return "n/a"
    return f"{100 * x:.2g}%" if 100 * x < 10 else f"{100 * x:.0f}%"


def _g(v: Any) -> str:
    x = _num(v)
    return f"{x:.4g}" if x is not None else str(v)


def _range(v: Any) -> str:
    if isinstance(v, list | tuple) and len(v) == 2 and all(_num(x) is not None for x in v):
        return f"[{_g(v[0])}, {_g(v[1])}]"
    return ""


def _s_saturation(f: Any, e: Callable[[str], Any]) -> str | None:
    lo, hi = _num(e("clipped_lo_frac")), _num(e("clipped_hi_frac"))
    if lo is None or hi is None:
        return None
    data = e("data")
    on = f" on the {data}" if isinstance(data, str) and data != "calibration" else ""
    rng = _range(e("representable_range"))
    return (f"{_pct(lo + hi)} of {field_of(f, 'layer')}'s output values{on} clip at the int8 range "
            f"{rng} (position {e('position')}); its SQNR is {_db(e('sqnr_db'))} against "
            f"{_db(e('sqnr_unclipped_db'))} with rounding alone.")


def _s_outlier_samples(f: Any, e: Callable[[str], Any]) -> str | None:
    idx, worst, median = e("outlier_samples"), _num(e("outlier_sample_max")), _num(e("median_sample_max"))
    if not isinstance(idx, list) or not idx or worst is None or not median:
        return None
    shown = ", ".join(str(i) for i in idx[:8]) + (f" and {len(idx) - 8} more" if len(idx) > 8 else "")
    others = _num(e("other_samples_max"))
    rest = f"; every other sample stays within {_g(others)}" if others is not None else ""
    many = len(idx) > 1
    return (f"Calibration sample{'s' if many else ''} {shown} reach{'' if many else 'es'} "
            f"{'|x| up to ' if many else '|x| = '}{_g(worst)} at {field_of(f, 'layer')}, {worst / median:.0f}x the "
            "median sample's largest value "
            f"({_g(median)}){rest}; the position is {e('position')}.")


def _s_outlier(f: Any, e: Callable[[str], Any]) -> str | None:
    samples = _s_outlier_samples(f, e)
    if samples is not None:
        return samples
    bits, amax = _num(e("bits_wasted")), _num(e("max_abs"))
    if bits is None or amax is None:
        return None
    where = " in the calibration data" if str(e("data") or "").startswith("calibration") else ""
    absent = " (absent in use)" if "absent" in str(e("data") or "") else ""
    codes = e("codes_used_by_bulk")
    bulk = (f", leaving the bulk of the values {codes} int8 code{'' if codes == 1 else 's'}"
            if codes is not None else "")
    far = e("far_outlier_frac")
    few = f" ({_pct(far)} of the values lie beyond {2 ** OUTLIER_MIN_BITS:g}x the bulk)" if far is not None else ""
    return (f"Rare outliers{where}{absent}{few}, the largest {_g(amax)} ({2 ** bits:.0f}x the bulk), set "
            f"{field_of(f, 'layer')}'s range at position {e('position')}: {bits:.1f} bits of range serve "
            f"them{bulk}.")


def _s_spread(f: Any, e: Callable[[str], Any]) -> str | None:
    spread = _num(e("spread_bits"))
    if spread is None:
        return None
    few, channels = e("handful_channels"), e("channels")
    handful = (f"; {len(few)} of {channels} channels quantize to a handful of codes"
               if isinstance(few, list) and few and channels is not None else "")
    return (f"{field_of(f, 'layer')}'s kernel has channel ranges {spread:.1f} bits apart under one "
            f"per-tensor position{handful}: channel-averaged weight SQNR (each channel's error against its own "
            f"size) {_db(e('weight_sqnr_db'))}, {_db(e('weight_sqnr_equalized_db'))} with equalized channels.")


def _s_coverage(f: Any, e: Callable[[str], Any]) -> str | None:
    frac = _num(e("outside_int8_range_frac"))
    if frac is None:
        return None
    return (f"{_pct(frac)} of {field_of(f, 'layer')}'s evaluation values fall outside the calibrated int8 "
            f"range (position {e('position')}; the data in use would choose {e('eval_position')}): calibration "
            f"spans {_range(e('calib_range'))}, use {_range(e('eval_range'))}.")


def _s_growth(f: Any, e: Callable[[str], Any]) -> str | None:
    drop, a_in, a_out = _num(e("drop_db")), e("acc_in_sqnr_db"), e("acc_out_sqnr_db")
    if drop is None:
        return None
    how = e("mechanism")
    how = f": it {how.replace('own error', 'adds the error itself')}" if isinstance(how, str) else ""
    own = e("own_sqnr_db")
    own = f"; its own quantization alone gives {_db(own)}" if _num(own) is not None else ""
    return (f"The accumulated SQNR drops {drop:.1f} dB across {field_of(f, 'layer')} ({_db(a_in)} in, "
            f"{_db(a_out)} out{own}){how}.")


def _s_alignment(f: Any, e: Callable[[str], Any]) -> str | None:
    loss = _num(e("worst_loss_db"))
    if loss is None:
        return None
    return (f"The {e('rule')} at {field_of(f, 'layer')} gives all its branches position "
            f"{e('shared_position')}; the worst branch loses {loss:.1f} dB of SQNR to it.")


def _s_constraint(f: Any, e: Callable[[str], Any]) -> str | None:
    loss = _num(e("sqnr_loss_db"))
    if loss is None:
        return None
    together = e("moved_together")
    more = (f" and {len(together) - 1} more tensor(s), which cost the output only together (put back one at a "
            "time, each gains nothing)") if isinstance(together, list) and len(together) > 1 else ""
    return (f"The DPU's {e('constraint')} constraint moved {e('tensor')} from position {e('position_before')} to "
            f"{e('position_after')}: its SQNR falls from {_db(e('sqnr_before_db'))} to {_db(e('sqnr_after_db'))}"
            f"{more}.")


def _s_cpu(f: Any, e: Callable[[str], Any]) -> str | None:
    reason = e("reason")
    if reason is None:
        return None
    parts = e("partitions")
    split = ""
    if e("splits_model") and parts is not None:
        # one subgraph: DPU layers on both sides of it stay connected by another path (a residual's skip)
        split = (f"; the model runs as {parts} DPU subgraphs with round trips through the CPU" if parts > 1 else
                 "; DPU layers sit on both sides of it, so its tensor makes a round trip through the CPU")
    count = e("count")
    if isinstance(count, int) and count > 1:  # a group (qinspect.analysis.findings.group_cpu_fallbacks)
        names = [field_of(f, "layer"), *(field_of(f, "affects") or [])]
        shown = ", ".join(map(str, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"{count} {e('class')} layers ({shown}) run on the CPU in float: {reason}{split}."
    return f"{field_of(f, 'layer')} ({e('class')}) runs on the CPU in float: {reason}{split}."


def _s_hw_vs_sim(f: Any, e: Callable[[str], Any]) -> str | None:
    risk, differ, total = e("codes_at_risk"), e("codes_differ"), e("codes_compared")
    if risk is None or differ is None:
        return None
    layers = [x for x in e("layers") or [] if isinstance(x, Mapping)]
    top = max((_num(x.get("abs_sum_max_over_2_24")) or 0.0 for x in layers), default=0.0)
    text = (f"The DPU computes {field_of(f, 'layer')}"
            f"{f' and {len(layers) - 1} more layer(s)' if len(layers) > 1 else ''} exactly where the quantizer's "
            f"float32 simulation rounds: {differ} of {total} codes differ here")
    if risk:
        text += f", and {risk} codes sum products up to {top:.2f}x 2^24, so they can differ in any summation order"
    return text + "; the board can disagree with dump_model and the quantized Keras model there."


def _s_rounding(f: Any, e: Callable[[str], Any]) -> str | None:
    share = _num(e("share"))
    if share is None:
        return None
    adders = [a for a in e("adders") or [] if isinstance(a, Mapping)]
    amps = [a for a in e("amplifiers") or [] if isinstance(a, Mapping)]
    alone = [str(x) for x in e("each_alone_loses_output") or []]
    if len(alone) >= 2:
        # no layer's float run gains anything: "+0.0 dB in float" per adder would read as "no cause"
        return (f"{_pct(share)} of the output error comes from layers that each lose the output on their own: "
                f"{', '.join(alone)}, each quantized alone, already give about the whole model's output SQNR, so "
                "keeping any one of them float gains nothing.")
    apart = OPTION_APART if e("option_apart") else ""
    text = f"{_pct(share)} of the output error is rounding the causes' fixes leave{apart}, spread over many layers"
    # a layer of the jointly measured set may gain nothing kept float alone (errors that cancel): it is
    # named apart, so "added most by" never reads "-0.6 dB in float"
    gaining = [a for a in adders if (_num(a.get("keep_float_gain_db")) or 0) > 0.05]
    others = [str(a.get("layer")) for a in adders if a not in gaining]
    if gaining:
        text += ", added most by " + ", ".join(
            f"{a.get('layer')} ({_num(a.get('keep_float_gain_db')):+.1f} dB in float)" for a in gaining)
    if others:
        text += (", and by " if gaining else ", by ") + ", ".join(others) + \
            " (nothing gained kept float alone: they count only with the others)"
    if amps:
        text += ", amplified by " + ", ".join(
            f"{a.get('layer')} (noise gain {_num(a.get('noise_gain_db')) or 0:.1f} dB)" for a in amps)
    return text + "."


def _s_option(f: Any, e: Callable[[str], Any]) -> str | None:
    option, why, n = e("option"), e("why"), _num(e("layers_changed"))
    if not isinstance(option, Mapping) or not why or n is None:
        return None
    what = ", ".join(f"{k}={v!r}" for k, v in option.items())
    if option.get("include_cle") is False:  # the options as given are no run the quantizer can make
        return (f"The model as quantized here is no run vai_q_tensorflow2 can make (its cross-layer equalization "
                f"stops on a grouped Conv2D: see the advice); {what} is the run it can make.")
    if "calib_batch_size" in option or e("cure") == "steadies the vote":
        return (f"{str(why)[0].upper()}{str(why)[1:]}: {n:.0f} layer(s) from {field_of(f, 'layer')} on take "
                f"positions a close vote decided, and {what} would steady it.")
    return (f"{str(why)[0].upper()}{str(why)[1:]}: {n:.0f} layer(s) from {field_of(f, 'layer')} on keep their "
            f"unequal channel ranges, and {what} would equalize them.")


def _s_function_change(f: Any, e: Callable[[str], Any]) -> str | None:
    sqnr, share, replaced = _num(e("function_only_sqnr_db")), _num(e("share")), e("replaced")
    if sqnr is None or share is None or not isinstance(replaced, list):
        return None
    shown = ", ".join(map(str, replaced[:3])) + (f" and {len(replaced) - 3} more" if len(replaced) > 3 else "")
    return (f"The quantizer computes {e('what')} ({shown}) with the DPU's hard sigmoid instead: with that change "
            f"alone and no int8, the output SQNR against the float model is {sqnr:.1f} dB, a ceiling no int8 remedy "
            f"passes while the replacement stays (keeping those layers float removes it, and can pass it); it makes "
            f"about {100 * share:.0f}% of the int8 model's output error.")


_SENTENCES: dict[str, Callable[[Any, Callable[[str], Any]], str | None]] = {
    "saturation": _s_saturation,
    "outlier_range": _s_outlier,
    "channel_spread": _s_spread,
    "coverage": _s_coverage,
    "error_growth": _s_growth,
    "alignment": _s_alignment,
    "constraint": _s_constraint,
    "cpu_fallback": _s_cpu,
    "hw_vs_sim": _s_hw_vs_sim,
    "accumulated_rounding": _s_rounding,
    "quantizer_option": _s_option,
    "function_change": _s_function_change,
}

# evidence entries that are bookkeeping, not numbers a reader needs in the generic sentence
_PLUMBING = frozenset({"node", "severity_basis", "share", "layer_noise_frac", "local_cost_db", "note"})


def _generic(f: Any) -> str:
    """A sentence for a kind with no wording of its own: its title, layer and first scalar evidence."""
    evidence = field_of(f, "evidence") or {}
    facts = []
    for key, entry in (evidence.items() if isinstance(evidence, Mapping) else []):
        value = entry.get("value") if isinstance(entry, Mapping) else entry
        if key in _PLUMBING or isinstance(value, list | dict | tuple) or value is None:
            continue
        facts.append(f"{key.replace('_', ' ')} {_g(value)}")
        if len(facts) == 4:
            break
    text = f"{kind_title(str(field_of(f, 'kind', '')))} at {field_of(f, 'layer')}"
    return text + (f": {'; '.join(facts)}." if facts else ".")


def finding_sentence(finding: Any) -> str:
    """What the finding is, in one or two sentences with its key numbers, then what it costs."""
    kind = str(field_of(finding, "kind", ""))
    make = _SENTENCES.get(kind)
    text = None
    if make is not None:
        try:
            text = make(finding, lambda key: evidence_value(finding, key))
        except (TypeError, ValueError, AttributeError):
            text = None  # evidence of an unexpected shape: the generic sentence still says what is known
    text = text or _generic(finding)
    # once each: a layer the quantizer split into several nodes (a swish's hard sigmoid and multiply) was named twice
    affects = list(dict.fromkeys(map(str, field_of(finding, "affects") or [])))
    if affects and kind not in ("accumulated_rounding", "cpu_fallback", "function_change"):  # those name theirs
        text += f" The same cause reaches {len(affects)} layer(s) downstream: {', '.join(affects)}."
    cost = cost_sentence(finding)
    return f"{text} {cost}" if cost else text


def cost_sentence(finding: Any) -> str:
    """What fixing the finding is worth at the model output (measured gain and noise share), if known."""
    remedy = field_of(finding, "remedy")
    share = _num(field_of(finding, "noise_share"))
    gain = _num(remedy.get("measured_gain_db")) if isinstance(remedy, Mapping) else None
    if gain is None:
        sev = _num(field_of(finding, "severity_db"))
        return f"Estimated cost at the output: {sev:.2f} dB (not measured)." if sev else ""
    se = _num(remedy.get("measured_gain_se_db")) if isinstance(remedy, Mapping) else None
    if evidence_value(finding, QUANTIZER_STOPS):
        # no gain to weigh: the figures it departs from are of a run the quantizer cannot make
        after = _num(remedy.get("measured_sqnr_db"))
        where = "above" if gain > 0 else "below"
        return (f"The run it can make measures {after:.1f} dB at the output, {abs(gain):.2f}{_pm(se)} dB {where} "
                "these figures." if after is not None else "")
    text = f"Fixing it gains {gain:.2f}{_pm(se)} dB of output SQNR"
    if field_of(finding, "kind") == "accumulated_rounding":
        # its noise_share is the unexplained rest (in its sentence), not what its remedy removes
        return text + " (the remedy below)." + _noise_caveat(gain, se)
    return text + (f", {_pct(share)} of the output's error power." if share is not None else ".") + \
        _noise_caveat(gain, se)


def _pm(se: float | None) -> str:
    return f" ± {se:.2f}" if se is not None else ""


def _noise_caveat(gain: float, se: float | None) -> str:
    """A warning when a gain is within twice its standard error over the samples."""
    if se is None or abs(gain) >= 2 * se:
        return ""
    return " That is within the spread over the measured samples: it may not hold on other data."


REMEDY_NAMES_SHOWN = 8  # a keep-float list longer than this names its first ones and counts the rest


def remedy_sentence(remedy: Mapping[str, Any] | None, shown: int | None = REMEDY_NAMES_SHOWN) -> str:
    """The remedy tried in the emulator and what it measured (empty when there is none); a long list of layers
    is cut to its first ``shown`` (None: whole)."""
    if not remedy:
        return ""
    # 71 names pushed what the remedy measured out of the window's sight
    action = str(remedy.get("action", "?"))
    action = short_action(action, shown) if shown is not None else action
    text = f"Tried in the emulator: {action}. Output SQNR {_db(remedy.get('measured_sqnr_db'))}"
    gain = _num(remedy.get("measured_gain_db"))
    if gain is not None:
        text += f" ({gain:+.2f}{_pm(_num(remedy.get('measured_gain_se_db')))} dB)"
    top1 = _num(remedy.get("top1_agreement"))
    if top1 is not None:
        text += f", top-1 agreement with float {agreement_text(top1)}"
    return text + "."


def evidence_lines(finding: Any) -> list[str]:
    """The raw evidence, one ``name = value  (how)`` line per entry (the details behind the sentence)."""
    evidence = field_of(finding, "evidence") or {}
    out = []
    for key, entry in (evidence.items() if isinstance(evidence, Mapping) else []):
        value, how = (entry.get("value"), entry.get("how", "")) if isinstance(entry, Mapping) else (entry, "")
        shown = _g(value) if _num(value) is not None else str(value)
        if len(shown) > 400:  # a per-channel list: the start says what it is; the JSON export has all of it
            shown = shown[:400] + " …"
        out.append(f"{key} = {shown}" + (f"  ({how})" if how else ""))
    return out


def output_phrase(figure: Any) -> str:
    """One model output's own figures in words: ``cls 34.2 dB (0.1% of the signal power; top-1 100.0%)``.

    ``figure``: a :class:`qinspect.analysis.outputs.OutputFigure` or its ``to_dict()`` form."""
    if isinstance(figure, Mapping):
        top1 = figure.get("top1_agreement")
    else:
        tally = getattr(figure, "top1", None)
        top1 = None if tally is None else tally.agreement
    share = _num(field_of(figure, "signal_share"))
    parts = [] if share is None else [f"{100 * share:.3g}% of the signal power"]
    if _num(top1) is not None:
        parts.append(f"top-1 {agreement_text(top1)}")
    if field_of(figure, "weighed", True) is False:
        parts.append("not weighed")
    tail = f" ({'; '.join(parts)})" if parts else ""
    return f"{field_of(figure, 'layer')} {_db(field_of(figure, 'sqnr_db'))}{tail}"


def per_output_line(figures: Any) -> str:
    """Every output's own figures, comma-separated (see :func:`output_phrase`)."""
    return ", ".join(output_phrase(f) for f in figures)


def _has_top1(figure: Any) -> bool:
    if isinstance(figure, Mapping):
        return _num(figure.get("top1_agreement")) is not None
    tally = getattr(figure, "top1", None)
    return tally is not None and tally.agreement is not None


def pooled_top1_suffix(figures: Any) -> str:
    """`` (pooled over N outputs)`` when the top-1 agreement counts the decisions of several weighed
    outputs, else nothing: to put beside that figure."""
    n = sum(1 for f in figures or [] if field_of(f, "weighed", True) is not False and _has_top1(f))
    return f" (pooled over {n} outputs)" if n > 1 else ""


def accuracy_line(accuracy: Mapping[str, Any]) -> str:
    """``accuracy on N labelled samples: float X%, int8 Y%``, with where the labels come from when known
    (class folders number classes by name, an assumption said beside the figure)."""
    line = (f"accuracy on {accuracy['samples']} labelled samples: float {100 * accuracy['float']:.1f}%, "
            f"int8 {100 * accuracy['int8']:.1f}%")
    return line + (f" (labels: {accuracy['labels']})" if accuracy.get("labels") else "")


# Beside the share the findings' fixes remove together: each finding's own share was read as the sum of theirs
# (44% + 27% + 24% beside "together 69%"; an outside audit took it for a contradiction).
EXPLAINED_TOGETHER = ("every fix applied at once; each finding's own share is measured alone and fixes overlap, so "
                      "those shares do not add up to it")


def explained_text(explained: float, se: float | None) -> str:
    """The share of the output error the findings' fixes remove, with its spread over the samples; a
    spread larger than the share itself says the share is not measured well, rather than "50% (± 111%)"."""
    text = f"{100 * explained:.0f}%"
    if se is None or not math.isfinite(se):
        return text
    if se > explained:
        return text + f" (not measured well on these samples: ± {100 * se:.0f}%, more than the share itself)"
    return text + f" (± {100 * se:.0f}%)"


def equalized_note(scale: Any) -> str:
    """What a captured tensor shown against an equalized layer's position is: the int8 model's values,
    the float model's times cross-layer equalization's per-channel scales (with their range)."""
    lo, hi = float(min(scale)), float(max(scale))
    return (f"values as the int8 model holds them: the float model's output times cross-layer equalization's "
            f"per-channel scales ({lo:.3g} .. {hi:.3g}), the tensor its position was chosen on")


# The order findings come in (analysis.diagnose._rank_key), said wherever they are listed.
FINDINGS_ORDER = ("causes first, the largest measured gain first; then the accumulated rounding they leave; "
                  "then CPU layers that cost no measured accuracy (at the model's edge, or a round trip)")


def findings_order(findings: Sequence[Any]) -> str:
    """:data:`FINDINGS_ORDER` for these findings: the rounding part only where such a finding is listed (it
    needs a sensitivity run; the header promised it even without one)."""
    if any(getattr(f, "kind", None) == "accumulated_rounding" for f in findings):
        return FINDINGS_ORDER
    return FINDINGS_ORDER.replace("; then the accumulated rounding they leave", "")
