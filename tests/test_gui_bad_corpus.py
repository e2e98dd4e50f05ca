"""The window, headless, on every file of the bad-file corpus that it opens (captures and model files).

Each must end in one message box with the command line's one-line refusal (naming the file, saying
what is wrong) as its text, the technical detail behind the box's "Show Details" toggle, and a
window that still works.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from bad_corpus import CAPTURES, make_corpus  # noqa: E402
from gui_fixtures import main_window, stop_helpers  # noqa: E402

pytestmark = pytest.mark.gui

# What the window opens: every damaged capture and the model files refused on opening.
WINDOW_CASES = [cid for cid, _, _ in CAPTURES] + ["leftover-tmp", "nan-inputs", "h5-wrong-weight",
                                                   "keras-wrong-weight", "keras-config-bomb", "h5-weight-is-a-group",
                                                   "keras-weights-bomb", "fifo"]


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


@pytest.fixture(scope="module")
def corpus(refcases, tmp_path_factory):
    return {case.id: case for case in make_corpus(tmp_path_factory.mktemp("corpus"), refcases / "small")}


@pytest.fixture
def window(qtbot, tmp_path):
    yield from main_window(qtbot, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", WINDOW_CASES)
def test_window_shows_the_one_line_refusal_with_details_behind_a_toggle(qtbot, window, corpus, case_id):
    case = corpus[case_id]
    # A capture with NaN inputs opens (its float activations are fine to look at); the int8 model built
    # right after is what refuses it.
    with qtbot.waitSignal(window.errors.reported, timeout=60000) as blocker:
        window.open_path(str(case.path))
    record = blocker.args[0]
    assert record.user_error, record.details
    assert record.summary.startswith(f"{case.path}: ") and case.fragment in record.summary, record.summary
    box = window.errors.box
    assert box.isVisible() and not box.isModal()
    text = box.text()
    assert len(text.splitlines()) == 1 and "Traceback" not in text and record.summary in text, text
    assert box.detailedText()  # the technical detail, behind the toggle
