"""Rows ranked by output SQNR are marked where a lower-ranked row agrees with the float top-1 more often."""

from __future__ import annotations

from qinspect.analysis.advisor import top1_outranked


def test_a_row_is_marked_only_when_a_lower_row_beats_its_top1():
    # ranked by SQNR: 0.50 is beaten by the 0.75 two rows down; 0.75 by nothing below it; None is never
    # marked and never beats anything; equal agreement is not beaten
    assert top1_outranked([0.5, None, 0.75, 0.75, 0.25]) == [True, False, False, False, False]
    assert top1_outranked([0.9, 0.8, 0.7]) == [False, False, False]
    assert top1_outranked([0.1, 0.2, 0.3]) == [True, True, False]
    assert top1_outranked([None, 1.0]) == [False, False]
    assert top1_outranked([]) == []
