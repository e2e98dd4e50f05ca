"""The layer tree: a ``QAbstractItemModel`` over a :class:`~qinspect.io.graph.ModelGraph`.

Rows are layers in topological order; a nested model is a row whose children are its layers, built
only when the view first asks for them (lazy children, as silx's HDF5 tree does). Columns: layer,
type, output shape, parameters, DPU/CPU placement and, once computed, the chosen error metric with a
colour scale. :class:`LayerFilterProxy` filters by name or type, keeping the ancestors of every match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont

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


@dataclass(eq=False)
class _Node:
    layer: Layer | None  # None for the invisible root
    parent: _Node | None
    row: int
    children: list[_Node] | None = field(default=None)  # None until first asked for


class GraphTreeModel(QAbstractItemModel):
    """Layers as a tree, with per-layer placement, metric and finding badges set by the window."""

    def __init__(self, graph: ModelGraph | None = None, parent=None) -> None:
        super().__init__(parent)
        self._graph: ModelGraph | None = None
        self._root = _Node(None, None, 0)
        self._by_parent: dict[str | None, list[Layer]] = {}
        self._nodes: dict[str, _Node] = {}
        self._placement: dict[str, str] = {}
        self._placement_note: dict[str, str] = {}
        self._metric: dict[str, float] = {}
        self._metric_name = "sqnr"
        self._metric_title = METRIC_TITLES["sqnr"]
        self._metric_range = (0.0, 1.0)
        self._badges: dict[str, tuple[str, str]] = {}  # layer -> (badge text, tooltip)
        self.set_graph(graph)

    # --- content -----------------------------------------------------------------------------------
    @property
    def graph(self) -> ModelGraph | None:
        """The graph shown."""
        return self._graph

    def set_graph(self, graph: ModelGraph | None) -> None:
        """Show ``graph`` (None: empty); clears placement, metric and badges."""
        self.beginResetModel()
        self._graph = graph
        self._root = _Node(None, None, 0)
        self._nodes = {}
        self._by_parent = {}
        if graph is not None:
            for layer in graph.layers:
                self._by_parent.setdefault(layer.parent, []).append(layer)
        self._placement, self._placement_note, self._metric, self._badges = {}, {}, {}, {}
        self.endResetModel()

    def set_placement(self, placement: dict[str, str], notes: dict[str, str] | None = None) -> None:
        """Set the "Runs on" column (layer -> "DPU"/"CPU"/...), with optional tooltips."""
        self._placement = dict(placement)
        self._placement_note = dict(notes or {})
        self._column_changed(COL_PLACEMENT)

    def set_metric(self, values: dict[str, float], metric: str, title: str | None = None) -> None:
        """Set the metric column (layer -> value) for ``metric`` in ("sqnr", "mse", "cosine")."""
        self._metric = {k: float(v) for k, v in values.items() if v is not None}
        self._metric_name = metric
        self._metric_title = title or METRIC_TITLES.get(metric, metric)
        finite = [v for v in self._metric.values() if math.isfinite(v)]
        self._metric_range = (min(finite), max(finite)) if finite else (0.0, 1.0)
        self.headerDataChanged.emit(Qt.Orientation.Horizontal, COL_METRIC, COL_METRIC)
        self._column_changed(COL_METRIC)

    def set_badges(self, badges: dict[str, tuple[str, str]]) -> None:
        """Set a badge per layer (short text shown before the name, tooltip explaining it)."""
        self._badges = dict(badges)
        self._column_changed(COL_NAME)

    def metric_value(self, name: str) -> float | None:
        """The metric shown for a layer, if any."""
        return self._metric.get(name)

    def _column_changed(self, column: int) -> None:
        # Only rows already created can be on screen; lazily built rows read the new data when built.
        for node in self._nodes.values():
            idx = self.createIndex(node.row, column, node)
            self.dataChanged.emit(idx, idx)

    # --- tree structure ----------------------------------------------------------------------------
    def _children(self, node: _Node) -> list[_Node]:
        if node.children is None:
            key = None if node.layer is None else node.layer.name
            layers = self._by_parent.get(key, []) if (node.layer is None or node.layer.is_container) else []
            node.children = [_Node(layer, node, row) for row, layer in enumerate(layers)]
            for child in node.children:
                self._nodes[child.layer.name] = child
        return node.children

    def _node(self, index: QModelIndex) -> _Node:
        return index.internalPointer() if index.isValid() else self._root

    def index(self, row: int, column: int, parent: QModelIndex = QModelIndex()) -> QModelIndex:  # noqa: B008
        if column < 0 or column >= len(COLUMNS):
            return QModelIndex()
        children = self._children(self._node(parent))
        if 0 <= row < len(children):
            return self.createIndex(row, column, children[row])
        return QModelIndex()

    def parent(self, index: QModelIndex = QModelIndex()) -> QModelIndex:  # noqa: B008
        if not index.isValid():
            return QModelIndex()
        node: _Node = index.internalPointer()
        up = node.parent
        if up is None or up is self._root:
            return QModelIndex()
        return self.createIndex(up.row, 0, up)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self._children(self._node(parent)))

    def hasChildren(self, parent: QModelIndex = QModelIndex()) -> bool:  # noqa: B008
        node = self._node(parent)
        if node.layer is None:
            return bool(self._by_parent.get(None))
        # Answer without building the children, so expanding stays lazy.
        return node.layer.is_container and bool(self._by_parent.get(node.layer.name))

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return len(COLUMNS)

    def index_of(self, name: str) -> QModelIndex:
        """The index (column 0) of the layer called ``name``, building its ancestors if needed."""
        if self._graph is None or name not in self._graph:
            return QModelIndex()
        chain = []
        layer = self._graph[name]
        while layer is not None:
            chain.append(layer.name)
            layer = self._graph[layer.parent] if layer.parent and layer.parent in self._graph else None
        node = self._root
        for part in reversed(chain):
            node = next((c for c in self._children(node) if c.layer.name == part), None)
            if node is None:
                return QModelIndex()
        return self.createIndex(node.row, 0, node)

    # --- data --------------------------------------------------------------------------------------
    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self._metric_title if section == COL_METRIC else COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            if section == COL_METRIC:
                return "Accumulated error of the layer's output against float (the whole int8 pipeline)."
            if section == COL_PLACEMENT:
                return "Where the layer runs after partitioning: on the DPU (int8) or the CPU (float)."
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        layer: Layer = index.internalPointer().layer
        col = index.column()
        if role == LAYER_NAME_ROLE:
            return layer.name
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(layer, col)
        if role == SORT_ROLE:
            if col == COL_PARAMS:
                return layer.params
            if col == COL_METRIC:
                return self._metric.get(layer.name, math.nan)
            return self._display(layer, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(layer, col)
        if role == Qt.ItemDataRole.BackgroundRole and col == COL_METRIC and layer.name in self._metric:
            lo, hi = self._metric_range
            return QBrush(metric_color(self._metric[layer.name], self._metric_name, lo, hi))
        if role == Qt.ItemDataRole.ForegroundRole:
            if not layer.runnable:
                return QBrush(QColor("#a33"))
            if col == COL_PLACEMENT and self._placement.get(layer.name) == "CPU":
                return QBrush(QColor("#b35900"))
        if role == Qt.ItemDataRole.FontRole and layer.is_container:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_PARAMS, COL_METRIC):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

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
