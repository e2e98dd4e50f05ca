"""The window on a capture of a siamese model whose tower is a sub-model called twice."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from gui_fixtures import isolated_settings, stop_helpers  # noqa: E402

from tests.conftest import run_cli  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


@pytest.fixture(scope="module")
def capture_path(tmp_path_factory):
    import tf_keras

    from tests.test_shared_layers import _siamese

    d = tmp_path_factory.mktemp("gui_shared")
    _siamese(tf_keras, nested=True).save(d / "siamese.h5")
    rng = np.random.default_rng(5)
    np.savez(d / "in.npz", a=rng.normal(size=(6, 8, 8, 2)).astype(np.float32),
             b=rng.normal(size=(6, 8, 8, 2)).astype(np.float32))
    result = run_cli("capture", str(d / "siamese.h5"), "--inputs", str(d / "in.npz"), "-o", str(d / "calib.h5"))
    assert result.returncode == 0, result.stderr
    return d / "calib.h5"


def test_each_call_of_the_tower_is_its_own_branch_of_the_tree(qtbot, tmp_path, capture_path):
    from qinspect.gui.graph_model import LAYER_NAME_ROLE
    from qinspect.gui.main_window import MainWindow

    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    try:
        with qtbot.waitSignal(win.open_channel.finished, timeout=10000):
            win.open_path(str(capture_path))
        qtbot.waitUntil(lambda: win.session.analysis is not None, timeout=60000)
        model = win.tree_model
        top = [model.index(i, 0).data(LAYER_NAME_ROLE) for i in range(model.rowCount())]
        assert top == ["a", "b", "tower", "tower@2", "sub"]
        second = model.index(3, 0)
        assert [model.index(i, 0, second).data(LAYER_NAME_ROLE) for i in range(model.rowCount(second))] == [
            "tower@2/conv", "tower@2/relu", "tower@2/gap", "tower@2/dense",
        ]  # fmt: skip
        win.select_layer("tower@2/conv")
        qtbot.waitUntil(lambda: win.layer_panel.data is not None and win.layer_panel.data.name == "tower@2/conv"
                        and win.layer_panel.data.complete, timeout=10000)
        # the panel's notes say the call shares its layer's positions with the other call
        notes = win.session.analysis.notes("tower@2/conv")
        assert any(n.startswith("Shared layer: weights and positions shared with quant_tower/conv") for n in notes)
    finally:
        win.shutdown()
