"""The layer tree: a ``QStandardItemModel`` over a :class:`~qinspect.io.graph.ModelGraph`.

Rows are layers in topological order; a nested model is a row whose children are its layers. Columns: layer,
type, output shape, parameters, DPU/CPU placement and, once computed, the chosen error metric with a
colour scale. :class:`LayerFilterProxy` filters by name or type, keeping the ancestors of every match.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QStandardItem, QStandardItemModel

from qinspect.io.graph import Layer, ModelGraph

COLUMNS = ("Layer", "Type", "Output shape", "Params", "Runs on", "Metric")
COL_NAME, COL_TYPE, COL_SHAPE, COL_PARAMS, COL_PLACEMENT, COL_METRIC = range(len(COLUMNS))

LAYER_NAME_ROLE = Qt.ItemDataRole.UserRole + 1  # the full (nested) layer name of a row
SORT_ROLE = Qt.ItemDataRole.UserRole + 2  # numeric value for sorting numeric columns

METRIC_TITLES = {"sqnr": "SQNR dB", "mse": "MSE", "cosine": "Cosine"}


def format_shape(shape: list | None) -> str:
    """``[None, 32, 32, 16]`` -> ``"N×32×32×16"``; nested lists (several outputs) joined by commas."""
    if shape is None:
        return ""
    if shape and isinstance(shape[0], list):
        return ", ".join(format_shape(s) for s in shape)
    return "×".join("N" if d is None else str(d) for d in shape)


def metric_color(value: float, metric: str, lo: float, hi: float) -> QColor:
    """Background colour for a metric value: red = much error, green = little.

    SQNR uses a fixed scale that means the same across models (10 dB red, 40 dB green: an int8 tensor
    quantized well sits near 40 dB). MSE and cosine have no absolute scale, so they are placed
    between the model's best and worst layer (log scale for MSE, ``1 - cos`` on a log scale for cosine).
    """
    if value is None or not math.isfinite(value):
        t = 0.0 if metric == "sqnr" and value == -math.inf else 1.0
    elif metric == "sqnr":
        t = (value - 10.0) / 30.0
    elif metric == "mse":
        a, b, v = (math.log10(max(x, 1e-30)) for x in (lo, hi, value))
        t = 1.0 - ((v - a) / (b - a) if b > a else 0.0)
    else:  # cosine: 1 is perfect
        a, b, v = (math.log10(max(1.0 - x, 1e-12)) for x in (hi, lo, value))
        t = 1.0 - ((v - a) / (b - a) if b > a else 0.0)
    t = min(max(t, 0.0), 1.0)
    # Hue from red (0) through yellow (60) to green (120); light, so text stays readable.
    return QColor.fromHsvF(t * 120.0 / 360.0, 0.45, 1.0)


_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_NOT_RUNNABLE = QColor("#a33")
_ON_CPU = QColor("#b35900")


class GraphTreeModel(QStandardItemModel):
    """Layers as a tree, with per-layer placement, metric and finding badges set by the window.

    Every cell is a ``QStandardItem`` holding its answers: a view asks each visible cell for about
    seven roles on every repaint, and a model written in Python answered each of those calls through
    the binding (a jump down the tree repainted 55 rows in 17 ms, 4 ms of it drawing). Items answer in
    C++; what changes (placement, metric, badges) is written into them when it is set.
    """

    def __init__(self, graph: ModelGraph | None = None, parent=None) -> None:
        super().__init__(parent)
        self._graph: ModelGraph | None = None
        self._rows: dict[str, list[QStandardItem]] = {}  # layer -> its row's items, one per column
        self._placement: dict[str, str] = {}
        self._placement_note: dict[str, str] = {}
        self._metric: dict[str, float] = {}
        self._metric_name = "sqnr"
        self._metric_range = (0.0, 1.0)
        self._badges: dict[str, tuple[str, str]] = {}  # layer -> (badge text, tooltip)
        self.setColumnCount(len(COLUMNS))
        self._set_headers(METRIC_TITLES["sqnr"])
        self.set_graph(graph)

    # --- content -----------------------------------------------------------------------------------
    @property
    def graph(self) -> ModelGraph | None:
        """The graph shown."""
        return self._graph

    def set_graph(self, graph: ModelGraph | None) -> None:
        """Show ``graph`` (None: empty); clears placement, metric and badges."""
        self.beginResetModel()
        self.blockSignals(True)  # one reset, not a signal per row
        try:
            self.removeRows(0, self.rowCount())
            self._graph = graph
            self._rows = {}
            self._placement, self._placement_note, self._metric, self._badges = {}, {}, {}, {}
            if graph is not None:
                by_parent: dict[str | None, list[Layer]] = {}
                for layer in graph.layers:
                    # A layer whose container is not in the graph is shown at the top level.
                    key = layer.parent if layer.parent in graph else None
                    by_parent.setdefault(key, []).append(layer)
                self._append_rows(self.invisibleRootItem(), None, by_parent)
        finally:
            self.blockSignals(False)
            self.endResetModel()

    def _append_rows(self, under: QStandardItem, parent: str | None, by_parent: dict) -> None:
        for layer in by_parent.get(parent, []):
            row = [QStandardItem() for _ in COLUMNS]
            for col, item in enumerate(row):
                item.setEditable(False)
                item.setData(layer.name, LAYER_NAME_ROLE)
                self._fill(item, layer, col)
            if layer.is_container:
                self._append_rows(row[0], layer.name, by_parent)
            self._rows[layer.name] = row
            under.appendRow(row)

    def _fill(self, item: QStandardItem, layer: Layer, col: int) -> None:
        """Write the cell's answers for every role into ``item``."""
        text = self._display(layer, col)
        item.setData(text, Qt.ItemDataRole.DisplayRole)
        if col == COL_PARAMS:
            item.setData(layer.params, SORT_ROLE)
        elif col == COL_METRIC:
            item.setData(self._metric.get(layer.name, math.nan), SORT_ROLE)
        else:
            item.setData(text, SORT_ROLE)
        item.setData(self._tooltip(layer, col), Qt.ItemDataRole.ToolTipRole)
        background = None
        if col == COL_METRIC and layer.name in self._metric:
            lo, hi = self._metric_range
            background = QBrush(metric_color(self._metric[layer.name], self._metric_name, lo, hi))
        item.setData(background, Qt.ItemDataRole.BackgroundRole)
        foreground = None
        if not layer.runnable:
            foreground = QBrush(_NOT_RUNNABLE)
        elif col == COL_PLACEMENT and self._placement.get(layer.name) == "CPU":
            foreground = QBrush(_ON_CPU)
        item.setData(foreground, Qt.ItemDataRole.ForegroundRole)
        if layer.is_container:
            font = QFont()
            font.setBold(True)
            item.setData(font, Qt.ItemDataRole.FontRole)
        if col in (COL_PARAMS, COL_METRIC):
            item.setData(int(_RIGHT), Qt.ItemDataRole.TextAlignmentRole)

    def _refill(self, column: int) -> None:
        """Rewrite one column, then tell the views once per group of siblings (a signal per cell and
        role made the proxy and the view re-check every row hundreds of times)."""
        if self._graph is None:
            return
        self.blockSignals(True)
        try:
            for name, row in self._rows.items():
                self._fill(row[column], self._graph[name], column)
        finally:
            self.blockSignals(False)
        parents = [self.invisibleRootItem()] + [row[0] for row in self._rows.values() if row[0].hasChildren()]
        for parent in parents:
            if parent.rowCount():
                top = self.index(0, column, parent.index())
                self.dataChanged.emit(top, top.siblingAtRow(parent.rowCount() - 1))

    def _set_headers(self, metric_title: str) -> None:
        for col, title in enumerate(COLUMNS):
            self.setHeaderData(col, Qt.Orientation.Horizontal, metric_title if col == COL_METRIC else title)
        self.setHeaderData(COL_METRIC, Qt.Orientation.Horizontal,
                           "Accumulated error of the layer's output against float (the whole int8 pipeline).",
                           Qt.ItemDataRole.ToolTipRole)
        self.setHeaderData(COL_PLACEMENT, Qt.Orientation.Horizontal,
                           "Where the layer runs after partitioning: on the DPU (int8) or the CPU (float).",
                           Qt.ItemDataRole.ToolTipRole)

    def set_placement(self, placement: dict[str, str], notes: dict[str, str] | None = None) -> None:
        """Set the "Runs on" column (layer -> "DPU"/"CPU"/...), with optional tooltips."""
        self._placement = dict(placement)
        self._placement_note = dict(notes or {})
        self._refill(COL_PLACEMENT)

    def set_metric(self, values: dict[str, float], metric: str, title: str | None = None) -> None:
        """Set the metric column (layer -> value) for ``metric`` in ("sqnr", "mse", "cosine")."""
        self._metric = {k: float(v) for k, v in values.items() if v is not None}
        self._metric_name = metric
        finite = [v for v in self._metric.values() if math.isfinite(v)]
        self._metric_range = (min(finite), max(finite)) if finite else (0.0, 1.0)
        self._set_headers(title or METRIC_TITLES.get(metric, metric))
        self._refill(COL_METRIC)

    def set_badges(self, badges: dict[str, tuple[str, str]]) -> None:
        """Set a badge per layer (short text shown before the name, tooltip explaining it)."""
        self._badges = dict(badges)
        self._refill(COL_NAME)

    def metric_value(self, name: str) -> float | None:
        """The metric shown for a layer, if any."""
        return self._metric.get(name)

    def index_of(self, name: str) -> QModelIndex:
        """The index (column 0) of the layer called ``name``."""
        row = self._rows.get(name)
        return row[0].index() if row is not None else QModelIndex()

    # --- cell text ---------------------------------------------------------------------------------
    def _display(self, layer: Layer, col: int) -> str:
        if col == COL_NAME:
            badge = self._badges.get(layer.name)
            return f"{badge[0]} {layer.short_name}" if badge else layer.short_name
        if col == COL_TYPE:
            return layer.class_name
        if col == COL_SHAPE:
            return format_shape(layer.output_shape)
        if col == COL_PARAMS:
            return f"{layer.params:,}" if layer.params else ""
        if col == COL_PLACEMENT:
            return self._placement.get(layer.name, "")
        if col == COL_METRIC:
            value = self._metric.get(layer.name)
            if value is None:
                return ""
            if self._metric_name == "sqnr":
                return f"{value:.1f}" if math.isfinite(value) else ("∞" if value > 0 else "-∞")
            if self._metric_name == "cosine":
                return f"{value:.5f}"
            return f"{value:.3g}"
        return ""

    def _tooltip(self, layer: Layer, col: int) -> str | None:
        parts = [layer.name]
        if col == COL_NAME and layer.name in self._badges:
            parts.append(self._badges[layer.name][1])
        if col == COL_PLACEMENT and layer.name in self._placement_note:
            parts.append(self._placement_note[layer.name])
        if not layer.runnable:
            parts.append(f"Not runnable: {layer.note}" if layer.note else "Not runnable")
        elif layer.note:
            parts.append(layer.note)
        if layer.inbound:
            parts.append("inputs: " + ", ".join(layer.inbound))
        return "\n".join(parts)


class LayerFilterProxy(QSortFilterProxyModel):
    """Filters rows whose layer name or type contains the search text (case-insensitive).

    Recursive filtering keeps the ancestors (nested models) of every matching layer visible.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setSortRole(SORT_ROLE)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self._needle = ""

    def set_search(self, text: str) -> None:
        """Filter by ``text`` (empty: show everything)."""
        # Qt >= 6.9 wants begin/endFilterChange (invalidateFilter is deprecated there).
        begin = getattr(self, "beginFilterChange", None)
        if begin is not None:
            begin()
            self._needle = text.strip().lower()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._needle = text.strip().lower()
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        if not self._needle:
            return True
        model = self.sourceModel()
        idx = model.index(source_row, COL_NAME, source_parent)
        name = str(model.data(idx, LAYER_NAME_ROLE) or "").lower()
        kind = str(model.data(model.index(source_row, COL_TYPE, source_parent)) or "").lower()
        return self._needle in name or self._needle in kind
