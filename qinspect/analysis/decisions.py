"""Task-level figures of a classifier's int8 outputs: top-1 agreement with the float model, accuracy
against labels, and whether the agreement figure means anything.

A top-1 figure can mislead. A random-weight or untrained network has (almost) tied outputs: its best
class beats the second by a few millionths of the output, or not at all, so any rounding picks the
winner and agreement falls even at 95 dB output SQNR (measured: a random-weight EfficientNetB0's top
two softmax outputs differ by 1e-6 of the top one; MobileNetV2's are exactly equal). Such a decision
is a *near tie*: its float top-2 margin is at most ``NEAR_TIE_REL`` of the decision's largest output
magnitude. The test looks at the float model only, so it does not depend on the int8 error (every
flip has a margin below the error; counting those would say nothing). A trained model's margins sit
far above it (the demo's smallest is 1.7% of its top output). The tally counts near ties, so every
place that shows top-1 agreement can say when the figure rests on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.dpu.dpu_graph import CONV_OPS

# Float top-2 margin, relative to the decision's largest output magnitude, at or below which it is a near tie.
NEAR_TIE_REL = 1e-3
# A figure that rests on more near ties than this share of its decisions gets a warning beside it.
NEAR_TIE_WARN_SHARE = 0.1


def agreement_text(frac: float, digits: int = 1) -> str:
    """A share of decisions as a percentage that never rounds to 100% or 0% unless it is: 3 flips in
    10,000 decisions read "99.97%" at 2 digits and ">99.9%" at 1, not "100.0%"."""
    pct = 100 * frac
    text = f"{pct:.{digits}f}%"
    step = 10 ** -digits
    if 0 < frac < 1 and float(text[:-1]) >= 100:
        return f">{100 - step:.{digits}f}%"
    if 0 < frac < 1 and float(text[:-1]) <= 0:
        return f"<{step:.{digits}f}%"
    return text


def _as_classes(labels: np.ndarray) -> np.ndarray:
    """Class indices from indices or one-hot rows."""
    y = np.asarray(labels)
    return np.argmax(y, axis=-1) if y.ndim == 2 else y.astype(np.int64)


@dataclass
class Top1Tally:
    """Arg-max decisions of one model output (last axis = classes), int8 against float, over batches.

    ``labels`` (one class index or one-hot row per sample, in data order) adds float and int8 accuracy
    for outputs of shape (samples, classes).
    """

    output: str = ""
    kind: str = ""  # decision_kind of the output ("" when unknown)
    agree: int = 0
    total: int = 0
    near_tied: int = 0  # decisions whose float top-2 margin is at most NEAR_TIE_REL of their largest output
    agree_decided: int = 0  # agreeing decisions among the others
    int8_tied: int = 0  # decisions whose int8 top two outputs are equal (arg-max then takes the lower class)
    int8_tied_flips: int = 0  # of those, the ones that disagree with the float model
    labels_origin: str = ""  # where the labels come from, said beside the accuracy ("" : a file named elsewhere)
    labelled: int = 0
    float_correct: int = 0
    int8_correct: int = 0
    _seen: int = field(default=0, repr=False)  # samples so far, to line labels up with batches

    def update(self, ref: np.ndarray, test: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add one batch of float (``ref``) and int8 (``test``) outputs, samples on the first axis."""
        ref = np.asarray(ref, np.float64)
        test = np.asarray(test, np.float64)
        n = len(ref)
        r = ref.reshape(-1, ref.shape[-1])
        t = test.reshape(-1, test.shape[-1])
        ra, ta = np.argmax(r, axis=-1), np.argmax(t, axis=-1)
        same = ra == ta
        top2 = np.partition(r, -2, axis=-1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        tied = margin <= NEAR_TIE_REL * np.max(np.abs(r), axis=-1)
        self.agree += int(np.count_nonzero(same))
        self.total += len(r)
        self.near_tied += int(np.count_nonzero(tied))
        self.agree_decided += int(np.count_nonzero(same & ~tied))
        t2 = np.partition(t, -2, axis=-1)[:, -2:] if t.shape[-1] > 1 else None
        if t2 is not None:
            exact = t2[:, 1] == t2[:, 0]
            self.int8_tied += int(np.count_nonzero(exact))
            self.int8_tied_flips += int(np.count_nonzero(exact & ~same))
        if labels is not None and ref.ndim == 2:
            y = _as_classes(labels)[self._seen:self._seen + n]
            k = len(y)
            self.labelled += k
            self.float_correct += int(np.count_nonzero(ra[:k] == y))
            self.int8_correct += int(np.count_nonzero(ta[:k] == y))
        self._seen += n

    @property
    def agreement(self) -> float | None:
        """Share of decisions where int8 and float pick the same class."""
        return self.agree / self.total if self.total else None

    @property
    def decided_agreement(self) -> float | None:
        """Agreement over the decisions that are not near ties (None when all are)."""
        decided = self.total - self.near_tied
        return self.agree_decided / decided if decided else None

    @property
    def warning(self) -> str | None:
        """What to show beside the agreement when ties weigh on it (float near ties, or int8 outputs whose
        top two are equal where it disagrees), else None."""
        parts = [text for text in (self._near_tie_text(), self._int8_tie_text()) if text]
        return "; ".join(parts) if parts else None

    @property
    def rests_on_near_ties(self) -> bool:
        """True when near-tied float outputs are so many that the agreement says little about accuracy (the
        int8 output's exact ties, the other half of :attr:`warning`, do not make it so)."""
        return self._near_tie_text() is not None

    def _int8_tie_text(self) -> str | None:
        if not self.int8_tied_flips:
            return None
        verb = "is an exact tie" if self.int8_tied_flips == 1 else "are exact ties"
        return (f"{self.int8_tied_flips} of the {self.total - self.agree} disagreements {verb} of the int8 "
                "output's top two classes, which arg-max breaks by taking the lower class index (a runtime that "
                "breaks them otherwise agrees differently)")

    def _near_tie_text(self) -> str | None:
        if not self.total or self.near_tied <= NEAR_TIE_WARN_SHARE * self.total:
            return None
        rest = self.decided_agreement
        tail = (f"; on the other {self.total - self.near_tied} it is {100 * rest:.1f}%" if rest is not None
                else "; every decision is one")
        return (f"top-1 agreement rests on {self.near_tied} near-tied of {self.total} decisions: the float model's "
                f"top two outputs are within {100 * NEAR_TIE_REL:g}% of each other there, so rounding picks the "
                f"winner and the figure says little about accuracy{tail}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"output": self.output, "decides_by": decision_note(self.kind) or "softmax arg-max",
                               "top1_agreement": self.agreement, "decisions": self.total,
                               "near_tied": self.near_tied, "decided_agreement": self.decided_agreement,
                               "int8_tied": self.int8_tied, "int8_tied_flips": self.int8_tied_flips,
                               "near_tie_warning": self.warning}
        if self.labelled:
            out["accuracy"] = {"float": self.float_correct / self.labelled, "int8": self.int8_correct / self.labelled,
                               "samples": self.labelled}
            if self.labels_origin:
                out["accuracy"]["labels"] = self.labels_origin
        return out


# Ops an output's decision looks through to the layer that makes it (they move values, not decide).
_PASS_THROUGH = ("quantize", "identity", "reshape", "flatten")
_LINEAR = ("linear", None, "")


def decision_kind(graph: Any, name: str) -> str | None:
    """How the model output ``name`` (a node of the emulator graph) decides, read from the layer that
    makes it: ``"classes"`` (softmax: the arg-max over the last axis), ``"logits"`` (a linear Dense or
    convolution: the arg-max over the last axis, as for ``classifier_activation=None``), ``"labels"``
    (sigmoid: each unit decides at 0.5, binary and multi-label heads), or None: a feature map, a pooled
    embedding, anything else, where an arg-max is no decision the model makes."""
    node = graph[name]
    # Activation("linear") computes nothing (tf_keras's MobileNetV3 with classifier_activation=None ends in one)
    while (node.op in _PASS_THROUGH or (node.op == "activation" and node.params.get("name") in _LINEAR)) \
            and len(node.inputs) == 1:
        node = graph[node.inputs[0]]
    op, p = node.op, node.params
    if op == "softmax" or (op == "activation" and p.get("name") in ("softmax", "log_softmax")):
        return "classes"
    if (op == "activation" and p.get("name") in ("sigmoid", "hard_sigmoid")) or op == "hard_sigmoid":
        return "labels"
    if op in CONV_OPS and p.get("act") in _LINEAR:
        return "logits"
    return None


def decision_scores(kind: str | None, x: np.ndarray) -> np.ndarray | None:
    """``x`` with the choices of each decision on its last axis (what :class:`Top1Tally` takes), or None
    when the output makes no decision. A sigmoid unit is a choice between ``1 - p`` and ``p``; a
    single-unit sigmoid (a binary classifier) becomes one two-class decision per sample, so labels 0/1
    give its accuracy."""
    x = np.asarray(x)
    if kind is None or x.ndim < 2:
        return None
    if kind == "labels":
        two = np.stack([1.0 - x, x], axis=-1)
        return two[..., 0, :] if x.shape[-1] == 1 else two
    return x if x.shape[-1] >= 2 else None


def decision_pair(kind: str | None, ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Float and int8 values of one output as decisions (:func:`decision_scores`), or None when the output
    makes none or the two do not line up."""
    r, t = decision_scores(kind, ref), decision_scores(kind, test)
    return None if r is None or t is None or r.shape != t.shape else (r, t)


def decision_note(kind: str | None) -> str:
    """What the top-1 figure of an output of this kind counts, for the text beside it."""
    return {"logits": "arg-max of a linear output, read as class logits",
            "labels": "each sigmoid unit decides at 0.5"}.get(kind or "", "")
