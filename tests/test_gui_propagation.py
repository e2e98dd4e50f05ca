"""The error propagation plot: an exact layer (+inf dB) is drawn at the top of the scale and said to be exact."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

from gui_fixtures import stop_helpers, window_on, write_gui_capture  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


def test_exact_layers_are_said_exact_not_read_as_120_db(qtbot, tmp_path):
    import math

    from qinspect.gui.propagation_view import EXACT_DB, _tip

    win = window_on(qtbot, tmp_path, write_gui_capture(tmp_path / "c.h5"))
    try:
        exact = [n for n, s in win.session.analysis.layer_stats(False).items() if math.isinf(s.sqnr_db)]
        assert exact  # the chain's isolated ReLUs are exact on these values
        win.tabs.setCurrentWidget(win.propagation)
        qtbot.waitUntil(lambda: "layers" in win.propagation.info.text(), timeout=30000)
        assert f"exact (∞ dB, no error) drawn at {EXACT_DB:.0f} dB" in win.propagation.info.text()
        assert _tip("chain_3", EXACT_DB) == "chain_3\nexact (∞ dB): no error"
        assert _tip("chain_3", 31.25) == "chain_3\n31.25"
    finally:
        win.shutdown()
