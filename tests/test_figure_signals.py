"""Ctrl-C or SIGTERM while a report paints its figures is delivered between figures, never inside a Qt
paint: raised there, pyqtgraph's paint guard swallowed it (the report went on and replaced the old one,
exit 0), printed a 37-line warning, or crashed (exit 139)."""

from __future__ import annotations

import signal

import pytest

pytest.importorskip("PySide6")


def test_a_signal_waits_for_the_safe_point_and_is_delivered_once():
    from qinspect.gui.figures import _signals_held

    calls: list[int] = []

    def handler(signum, _frame):
        calls.append(signum)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with _signals_held() as deliver:
                signal.raise_signal(signal.SIGTERM)  # "inside a paint": held, nothing raised
                assert calls == []
                deliver()  # the safe point
        assert calls == [signal.SIGTERM]  # once: not again on leaving the block
        assert signal.getsignal(signal.SIGTERM) is handler  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, before)


def test_figures_drawn_with_no_signal_are_all_returned():
    from qinspect.gui.figures import _render_here
    from qinspect.report.content import FigureSpec, Series

    spec = FigureSpec("f0", "title", "x", "y", [Series("s", [0.0, 1.0, 2.0], [1.0, 3.0, 2.0], style="line")])
    out = _render_here([spec])
    assert list(out) == ["f0"] and out["f0"].startswith(b"\x89PNG")
