"""Vitis artefacts in the window: a real quantized.h5's positions, and its dump_results compared."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")

from gui_fixtures import isolated_settings, stop_helpers, window_on  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _helpers_stopped():
    yield
    stop_helpers()


pytestmark = [pytest.mark.gui, pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(scope="module")
def small_capture(refcases, tmp_path_factory):
    """A capture of the refcase's float model on its calibration inputs (TensorFlow runs once)."""
    pytest.importorskip("tf_keras")
    from qinspect.capture.runner import plan_capture, run_capture

    small = refcases / "small"
    out = tmp_path_factory.mktemp("vitis") / "small_capture.h5"
    plan = plan_capture(small / "float.h5", small / "calib.npy")
    run_capture(plan, out)
    return out


def _window_with_quantized(qtbot, tmp_path, capture, quantized):
    """A window on the capture, emulated with the positions of a Vitis quantized.h5."""
    win = window_on(qtbot, tmp_path, capture)
    with qtbot.waitSignal(win.session.results_changed, timeout=60000):
        win.session.import_quantized(str(quantized))
    return win


def _import_dump(qtbot, win, folder, inputs) -> None:
    """Import a dump folder and wait for its comparison (or its failure)."""
    win.session.import_dump(str(folder), str(inputs))
    qtbot.waitUntil(lambda: win.session.dump is not None or win.session.dump_error is not None, timeout=60000)


def test_quantized_h5_positions_and_dump_comparison(qtbot, tmp_path, refcases, small_capture):
    small = refcases / "small"
    win = _window_with_quantized(qtbot, tmp_path, small_capture, small / "quantized.h5")
    analysis = win.session.analysis
    assert analysis.quantized_path == str(small / "quantized.h5")
    # The README's position table: relu1 output 6, relu2 output 7, fc output 5; conv1 weights 9, bias 10.
    assert analysis.activation_position("relu1")[0] == 6
    assert analysis.activation_position("relu2")[0] == 7
    assert analysis.activation_position("fc")[0] == 5
    assert analysis.weight_positions("conv1")[0] == {"kernel": 9, "bias": 10}
    # conv1's own output is fused into relu1 (the DPU rounds once after the ReLU): no position of its own.
    pos, why = analysis.activation_position("conv1")
    assert pos is None and ("fused" in why or "folded" in why)
    win.select_layer("relu2")
    qtbot.waitUntil(lambda: win.layer_panel.data is not None and win.layer_panel.data.name == "relu2"
                    and win.layer_panel.data.complete and win.layer_panel.whatif is not None, timeout=10000)
    assert win.layer_panel.whatif.position == 7 and "quantized.h5" in win.layer_panel.data.position_source
    # The dump: every int8 tensor the quantizer dumped matches the emulator bit for bit.
    _import_dump(qtbot, win, small / "dump_results", small / "dump_inputs.npy")
    tensors = win.session.dump.tensors
    gating = [t for t in tensors if t.gating]
    assert gating and all(t.matched == t.total for t in gating)
    assert win.dump_view.table.rowCount() == len(tensors)
    assert win.errors.history == []
    win.shutdown()


def test_an_option_changed_after_a_quantized_h5_import_drops_its_positions_and_says_so(qtbot, tmp_path, refcases,
                                                                                       small_capture):
    # Vitis chose the quantized.h5's positions and weights under its own options: another option applied
    # to them gave figures of neither run (the status bar still said "positions of quantized.h5")
    small = refcases / "small"
    win = _window_with_quantized(qtbot, tmp_path, small_capture, small / "quantized.h5")
    assert "positions of quantized.h5" in win.quality_label.text()
    statuses = []
    win.session.status.connect(statuses.append)
    win.set_quantizer_option("include_cle", False)
    assert win.session.quantized_path is None
    assert any("positions of quantized.h5 are no longer used" in text for text in statuses)
    qtbot.waitUntil(lambda: not win.session.channels["emulate"].busy, timeout=60000)
    assert win.session.analysis.quantized_path is None and "quantized.h5" not in win.quality_label.text()
    assert "include_cle=False" in win.quality_label.text()
    win.shutdown()


def test_board_dump_headline_histogram_and_row_selection(qtbot, tmp_path, refcases, small_capture):
    import numpy as np

    from tests.board_fixtures import small_board_from_quantizer

    small = refcases / "small"
    board = small_board_from_quantizer(small, tmp_path / "board")
    f = board / "dump" / "subgraph_quant_conv2" / "internal" / "0.quant_relu2_aquant.bin"
    codes = np.fromfile(f, np.int8)
    codes[[10, 11, 12]] = np.clip(codes[[10, 11, 12]].astype(int) + [1, 1, 4], -128, 127)  # 2 codes 1 LSB off, 1 4 LSB
    codes.tofile(f)
    win = _window_with_quantized(qtbot, tmp_path, small_capture, small / "quantized.h5")
    win.tabs.setCurrentWidget(win.dump_view)
    _import_dump(qtbot, win, board, small / "dump_inputs.npy")
    view = win.dump_view
    assert win.session.dump.kind == "board" and view.table.rowCount() == 6
    assert "board dump" in view.info.text() and view.headline.text().startswith("First divergence: layer relu2")
    assert "3 of 16384 codes differ, max 4 LSB" in view.headline.text()
    # The first divergence is selected: its layer in the tree, its histogram drawn, the tab kept.
    assert view.table.item(view.table.currentRow(), 1).text() == "relu2"
    assert win.current_layer() == "relu2" and win.tabs.currentWidget() is view
    heights = list(view.bars.opts["height"])
    assert heights == [2, 0, 0, 1]
    assert view.hist.getPlotItem().getAxis("left").isVisible() and not view.empty.isVisible()
    # Selecting another row selects its layer.
    row = [view.table.item(i, 1).text() for i in range(view.table.rowCount())].index("pool1")
    view.table.selectRow(row)
    assert win.current_layer() == "pool1" and win.tabs.currentWidget() is view
    assert list(view.bars.opts["height"]) == []
    assert win.errors.history == []
    win.shutdown()


def test_model_without_capture_offers_capture_with_progress_and_cancel(qtbot, tmp_path, refcases):
    pytest.importorskip("tf_keras")
    from PySide6.QtWidgets import QMessageBox

    from qinspect.gui.main_window import MainWindow

    small = refcases / "small"
    win = MainWindow(settings_path=isolated_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.open_channel.finished, timeout=20000):
        win.open_path(str(small / "float.h5"))
    assert win.document.kind == "model" and not win.document.has_activations
    qtbot.waitUntil(lambda: isinstance(getattr(win, "_capture_offer", None), QMessageBox)
                    and win._capture_offer.isVisible(), timeout=5000)
    win._capture_offer.done(QMessageBox.StandardButton.Yes)  # "Capture…"
    dialog = win._capture_dialog
    # Cancel first: the capture stops and nothing is left at the destination.
    cancelled = tmp_path / "cancelled.h5"
    dialog.inputs.setText(str(small / "calib.npy"))
    dialog.output.setText(str(cancelled))
    dialog.run_capture()
    assert dialog.cancel.text() == "Cancel"
    dialog._cancel()
    assert "Cancelled" in dialog.status.text()
    qtbot.waitUntil(lambda: not any(p.name.startswith(".cancelled") for p in tmp_path.iterdir()), timeout=60000)
    assert not cancelled.exists()
    # Then a real capture: progress reaches the sample count and the window opens the new capture.
    out = tmp_path / "small_capture.h5"
    dialog.output.setText(str(out))
    progress = []
    dialog.channel.progress.connect(lambda _rid, done, total, _t: progress.append((done, total)))
    with qtbot.waitSignal(win.open_channel.finished, timeout=120000):
        dialog.run_capture()
    assert out.exists() and win.document.path == str(out) and win.document.has_activations
    assert progress and progress[-1] == (16, 16)
    win.shutdown()


def test_after_a_quantized_h5_import_the_model_input_stands_as_its_quantizer():
    """The tree showed the input as a float CPU layer at ∞ dB once quant_input came from the file."""
    import json

    from qinspect.dpu.emulator import Emulator
    from qinspect.gui.emulation import Analysis
    from tests.dpu_graph_fixtures import refcase

    root = refcase("small")
    emu = Emulator.from_quantized(str(root / "quantized.h5"))
    a = Analysis(available=True, graph=emu.graph)
    want = json.loads((root / "positions.json").read_text())["positions"]["quant_input"]["input"]
    assert a.activation_position("input")[0] == want
    assert a.placement()["input"] == "DPU"
    assert "0 on the CPU" in a.summary()


def test_an_incomplete_dump_never_reads_as_matching_and_a_failed_import_clears_the_tab(qtbot, tmp_path, refcases,
                                                                                      small_capture):
    """The window said 'all match' for a dump missing a file (the command line exits 2 on it), and kept the
    previous comparison on screen when the next import failed."""
    import shutil

    import numpy as np

    small = refcases / "small"
    dump = tmp_path / "dump_results"
    shutil.copytree(small / "dump_results", dump)
    for p in dump.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    (dump / "dump_results_0" / "quant_relu2.bin").unlink()
    win = _window_with_quantized(qtbot, tmp_path, small_capture, small / "quantized.h5")
    _import_dump(qtbot, win, dump, small / "dump_inputs.npy")
    view = win.dump_view
    assert "incomplete" in view.info.text()
    head = view.headline.text()
    assert head.startswith("No divergence among the tensors compared, but the dump is incomplete")
    assert "quant_relu2.bin" in head and "every compared tensor matches" not in head
    # another import, of a dump made from other inputs: refused, and the tab no longer shows the last one
    np.save(tmp_path / "other.npy", np.load(small / "calib.npy")[5:7])
    win.session.import_dump(str(small / "dump_results"), str(tmp_path / "other.npy"))
    qtbot.waitUntil(lambda: win.session.dump_error is not None, timeout=60000)
    assert view.table.rowCount() == 0
    assert view.headline.text().startswith("The dump import failed:") and "other inputs" in view.headline.text()
    win.shutdown()


def test_a_quantized_h5_of_another_model_is_one_line_and_the_positions_in_use_stay(qtbot, tmp_path, refcases,
                                                                                   small_capture):
    """The window skipped the check the command line makes: a KeyError with a traceback, and the bad path
    stayed in the session, so every later option change failed the same way."""
    from qinspect.dpu.options import QuantizerOptions

    win = window_on(qtbot, tmp_path, small_capture)
    other = refcases / "rich" / "quantized.h5"
    with qtbot.waitSignal(win.session.failed, timeout=60000) as failed:
        win.session.import_quantized(str(other))
    exc = failed.args[0]
    assert str(other) in str(exc) and "is the quantized model of another model" in str(exc)
    assert "\n" not in str(exc) and not isinstance(exc, KeyError)
    assert win.session.quantized_path is None  # as before the import
    # the run before it stands again: its figures are shown and the findings the import dropped come back (the
    # status bar kept "Emulating again", the SQNR column stayed empty, the findings never came back: GUI audit)
    qtbot.waitUntil(lambda: win.session.diagnosis is not None, timeout=120000)
    assert "Emulating again" not in win.quality_label.text() and "Output SQNR" in win.quality_label.text()
    assert any(v is not None for v in win.session.metric_values(win.metric, accumulated=True).values())
    # an option change after it emulates (calibrated on the capture) instead of failing again
    with qtbot.waitSignal(win.session.results_changed, timeout=60000):
        win.session.set_options(QuantizerOptions(include_cle=False))
    assert win.session.analysis.quantized_path is None and win.session.analysis.available


def test_the_windows_dump_job_agrees_with_the_command_line(tmp_path, refcases):
    """Audit cases: a board tensor that maps to no layer read "No divergence: every compared tensor matches" in the
    window (the command line: not a match, exit 2); .npz inputs failed there; the notes were not shown."""
    import numpy as np

    from qinspect.gui.emulation import dump_job
    from qinspect.gui.worker import CancelToken
    from tests.board_fixtures import small_board_from_quantizer

    small = refcases / "small"
    board = small_board_from_quantizer(small, tmp_path / "board")
    for p in (board / "dump" / "subgraph_quant_conv2" / "internal").glob("*.quant_relu2_aquant.bin"):
        p.rename(p.with_name(p.name.replace("quant_relu2_aquant", "tensor_42")))
    np.savez(tmp_path / "in.npz", input=np.load(small / "dump_inputs.npy"))
    res = dump_job(CancelToken(1), str(board), str(small / "quantized.h5"), str(tmp_path / "in.npz"))
    head = res.headline()
    assert "every compared tensor matches" not in head and "map to no layer of the model" in head
    # more inputs than the dump holds: the window says which samples it compared, as the command line does
    np.save(tmp_path / "three.npy", np.concatenate([np.load(small / "dump_inputs.npy"),
                                                    np.load(small / "calib.npy")[:1]]))
    res = dump_job(CancelToken(2), str(small / "dump_results"), str(small / "quantized.h5"),
                   str(tmp_path / "three.npy"))
    assert res.first is None and any("compared the first 2 of the 3 inputs" in n for n in res.notes)


def test_opening_a_vitis_dump_folder_says_where_it_goes(refcases, tmp_path):
    # a dump folder given to the window (command line, drop, File > Open) read "is a folder, but not a
    # TensorFlow SavedModel": it is no model, and the window has a menu entry for it
    from qinspect.errors import QInspectError
    from qinspect.gui.document import open_document

    dump = refcases / "small" / "dump_results"
    for path in (dump, dump / "dump_results_0"):
        with pytest.raises(QInspectError) as info:
            open_document(str(path))
        text = str(info.value)
        assert str(path) in text and "a Vitis dump_model dump folder" in text
        assert "File > Import Vitis quantized.h5" in text and "File > Import Vitis dump folder" in text
    board = tmp_path / "dump" / "subgraph_0" / "output"  # a VART board dump's layout
    board.mkdir(parents=True)
    with pytest.raises(QInspectError, match="a Vitis board dump folder"):
        open_document(str(tmp_path / "dump"))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(QInspectError, match="not a TensorFlow SavedModel"):  # any other folder: as before
        open_document(str(plain))


def test_a_dump_compared_with_the_quantized_h5_being_imported_and_dropped_when_options_change(
        qtbot, tmp_path, refcases, small_capture):
    """Audit s34 (window): a dump imported while the quantized.h5 import still emulated was compared with the
    run on screen's (none: 'import the quantized.h5 first', beside 'positions of quantized.h5'); a comparison
    stayed on screen after an option change dropped the quantized.h5 it was made with; the failure stayed
    after the quantized.h5 was imported."""
    from qinspect.dpu.options import QuantizerOptions

    small = refcases / "small"
    win = window_on(qtbot, tmp_path, small_capture)
    qtbot.waitUntil(lambda: win.session.analysis is not None, timeout=60000)
    view = win.dump_view
    # a dump before any quantized.h5: refused, said on the tab
    _import_dump(qtbot, win, small / "dump_results", small / "dump_inputs.npy")
    assert win.session.dump_error and "import the quantized.h5" in win.session.dump_error
    # the import clears that failure (it spoke of a quantized.h5 now given), and a dump imported at once,
    # while the import still emulates, is compared with the file being imported
    win.session.import_quantized(str(small / "quantized.h5"))
    assert win.session.dump_error is None and "was imported since" in view.headline.text()
    assert win.session.analysis.quantized_path is None  # the run on screen is still the one before
    _import_dump(qtbot, win, small / "dump_results", small / "dump_inputs.npy")
    assert win.session.dump_error is None, win.session.dump_error
    assert all(t.matched == t.total for t in win.session.dump.tensors if t.gating)
    # the tab counts what compare-dump counts: the int8 tensors, the float copies beside them
    deciding = sum(t.gating for t in win.session.dump.tensors)
    assert deciding == 11 and f"11 tensors compared, all match ({len(win.session.dump.tensors) - 11} float copies" \
        in view.info.text()
    qtbot.waitUntil(lambda: not win.session.channels["emulate"].busy, timeout=60000)
    # another target: the quantized.h5 goes, and the comparison made with it goes too, saying why
    win.session.set_options(QuantizerOptions(target="DPUCADF8H"))
    assert win.session.dump is None and view.table.rowCount() == 0
    assert view.headline.text().startswith("The dump comparison was cleared: the quantizer options changed")
    win.shutdown()


def test_a_weight_row_opens_the_layer_whose_kernel_it_is(qtbot, tmp_path, refcases, small_capture):
    """A folded conv's kernel row selected the BatchNorm after it ('this BatchNormalization layer has no
    kernel'); its activation rows still select the layer the tree shows for them."""
    small = refcases / "small"
    win = _window_with_quantized(qtbot, tmp_path, small_capture, small / "quantized.h5")
    _import_dump(qtbot, win, small / "dump_results", small / "dump_inputs.npy")
    view = win.dump_view
    rows = {t.name: i for i, t in enumerate(view.rows)}
    kernel = next(n for n in rows if n.endswith("conv2_kernel"))
    assert view._layer_of(rows[kernel]) == "conv2"
    with qtbot.waitSignal(view.layer_clicked) as clicked:
        view._on_double_click(rows[kernel], 0)
    assert clicked.args == ["conv2"]
    act = next(i for i, t in enumerate(view.rows) if t.kind == "activation" and t.layer == "quant_relu2"
               and t.gating)
    assert view._layer_of(act) == "relu2"
    # the tree's selection moves the table to that layer's output row (the histogram kept another tensor's),
    # without the table selecting back in the tree; a layer with no dumped tensor leaves no row selected
    win.select_layer("relu2", show_layer_tab=False)
    assert view.table.currentRow() == act and win.current_layer() == "relu2"
    # the tree's names in the Layer column and the plot's title, the quantizer's (quant_relu2) in the tooltip
    assert view.hist.plotItem.titleLabel.text.startswith("relu2: 16384 of 16384 codes equal")
    assert view.table.item(act, 1).text() == "relu2" and "quant_relu2" in view.table.item(act, 1).toolTip()
    # every code equal: said in the plot instead of an empty 0..1 frame
    assert view.empty.isVisible() and view.empty.textItem.toPlainText().startswith("Every code equal")
    assert not view.hist.getPlotItem().getAxis("left").isVisible()
    # the selected row's cause and first mismatch, whole, under the table (the Note column is cut)
    assert view.detail.text().startswith(f"{view.rows[act].name}: {view.rows[act].matched} of ")
    assert all(view.table.columnWidth(j) <= 300 for j in range(view.table.columnCount() - 1))
    # a dump_model tensor differing: the headline names the tree's layer, then the quantizer's tensor
    import shutil

    import numpy as np
    edited = tmp_path / "edited_dump"
    shutil.copytree(small / "dump_results", edited)
    f = edited / "dump_results_0" / "quant_relu2.bin"
    codes = np.fromfile(f, np.int8)
    codes[5] = np.int8(codes[5] + (1 if codes[5] < 127 else -1))
    codes.tofile(f)
    _import_dump(qtbot, win, edited, small / "dump_inputs.npy")
    assert view.headline.text().startswith("First divergence: layer relu2 (quant_relu2), 1 of 16384 codes differ")
    # every layer of this model has a dumped tensor; one without (a layer run on the CPU) leaves no row
    view.follow_layer("not_dumped")
    assert view.table.currentRow() == -1 and view.detail.text() == ""
    assert view.hist.plotItem.titleLabel.text == "No dumped tensor of not_dumped"
    win.shutdown()
