"""Static PNG figures for reports, drawn with pyqtgraph and exported by ``ImageExporter``.

The report package describes each figure as data (:class:`qinspect.report.content.FigureSpec`); this
module draws it. It works offscreen (``QT_QPA_PLATFORM=offscreen``) and inside the running GUI: the
plot widget is never shown on screen. PNG only: pyqtgraph's SVG exporter is broken with Qt >= 6.11.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pyqtgraph as pg
import shiboken6
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject, Qt, QThread, Signal, Slot

from qinspect.report.content import FigureSpec, Marker, Series

_BACKGROUND = "w"
_FOREGROUND = "#1d2330"


def _app() -> None:
    # pyqtgraph needs a QApplication; reuse the GUI's when there is one. Not pg.mkQApp(): it hands Qt
    # the raw sys.argv, and a file name that is not valid UTF-8 (a surrogate escape) crashes Qt.
    from PySide6.QtWidgets import QApplication

    if QApplication.instance() is None:
        QApplication(["qinspect"])
    pg.mkQApp()


def _pen(colour: str, width: float = 1.6, dashed: bool = False) -> pg.QtGui.QPen:
    pen = pg.mkPen(colour, width=width)
    if dashed:
        pen.setStyle(Qt.PenStyle.DashLine)
    pen.setCosmetic(True)
    return pen


def _brush(colour: str, alpha: int) -> pg.QtGui.QBrush:
    c = pg.mkColor(colour)
    c.setAlpha(alpha)
    return pg.mkBrush(c)


def _log_counts(y: np.ndarray) -> np.ndarray:
    # A log axis cannot show 0: empty bins are drawn at the axis floor (10^-0.3 ~ 0.5, below one count).
    return np.where(y > 0, y, 0.5)


def _draw_series(plot: pg.PlotItem, s: Series, log_y: bool) -> None:
    x = np.asarray(s.x, dtype=float)
    y = np.asarray(s.y, dtype=float)
    if s.style in ("line", "points") and not np.isfinite(y).any():
        return  # nothing to draw (every value is a gap)
    if s.style == "step":
        if log_y:
            y = _log_counts(y)
        # fillLevel is in the plotted (log10) space when the axis is logarithmic.
        plot.plot(
            x, y, stepMode="center", fillLevel=math.log10(0.5) if log_y else 0.0,
            pen=_pen(s.color, 1.2), brush=_brush(s.color, 110), name=s.label,
        )
    elif s.style == "line":
        keep = np.isfinite(y)  # join the points across layers without a value (the caption says so)
        x, y = x[keep], y[keep]
        plot.plot(x, y, pen=_pen(s.color, 2.0), name=s.label,
                  symbol="o", symbolSize=4, symbolPen=None, symbolBrush=_brush(s.color, 255))
    elif s.style == "segments":  # pairs of points, each pair one segment (a graph's edges)
        plot.plot(x, y, pen=_pen(s.color, 2.0), connect="pairs", name=s.label,
                  symbol="o", symbolSize=4, symbolPen=None, symbolBrush=_brush(s.color, 255))
    elif s.style == "points":
        plot.plot(x, y, pen=None, symbol="o", symbolSize=6, symbolPen=_pen(s.color, 1.0),
                  symbolBrush=_brush(s.color, 90), name=s.label)
    elif s.style == "range":
        y2 = np.asarray(s.y2 if s.y2 is not None else s.y, dtype=float)
        width = 0.7 if len(x) < 200 else 1.0
        bars = pg.BarGraphItem(x=x, y0=y, y1=y2, width=width, brush=_brush(s.color, 170),
                               pen=_pen(s.color, 0.6))
        plot.addItem(bars)
        if plot.legend is not None:
            plot.legend.addItem(bars, s.label)
    else:
        raise ValueError(f"unknown series style {s.style!r}")


def _draw_marker(plot: pg.PlotItem, m: Marker, log_y: bool, label_row: int) -> None:
    angle = 90 if m.axis == "x" else 0
    pos = m.value
    if m.axis == "y" and log_y:
        pos = math.log10(pos) if pos > 0 else None
    if pos is None or not math.isfinite(pos):
        return
    line = pg.InfiniteLine(pos=pos, angle=angle, pen=_pen(m.color, 1.6, m.dashed), movable=False)
    if m.label:
        # Stagger the labels of vertical lines so two close thresholds do not print on each other.
        if m.axis == "x":
            line.label = pg.InfLineLabel(line, text=m.label, position=0.95 - 0.08 * (label_row % 4),
                                         anchor=(0, 0.5), color=m.color)
        else:
            line.label = pg.InfLineLabel(line, text=m.label, position=0.12, anchor=(0.5, 1), color=m.color)
    plot.addItem(line, ignoreBounds=True)


def _legend_corner(spec: FigureSpec) -> tuple[int, int]:
    """The legend offset for the plot corner that covers the fewest data points (top right on a tie)."""
    pts = []
    for s in spec.series:
        ys = [s.y] + ([s.y2] if s.y2 is not None else [])
        for yv in ys:
            n = min(len(s.x), len(yv))
            pts.extend((float(a), float(b)) for a, b in zip(s.x[:n], yv[:n], strict=True))
    pts = [(a, b) for a, b in pts if math.isfinite(a) and math.isfinite(b)]
    if not pts:
        return (-10, 10)
    xs, ys = np.array(pts).T
    if spec.log_y:
        ys = np.log10(np.maximum(ys, 0.5))
    fx = (xs - xs.min()) / ((xs.max() - xs.min()) or 1.0)
    fy = (ys - ys.min()) / ((ys.max() - ys.min()) or 1.0)
    corners = {  # offset -> points in that 30% x 35% corner box
        (-10, 10): int(np.sum((fx > 0.7) & (fy > 0.65))),
        (10, 10): int(np.sum((fx < 0.3) & (fy > 0.65))),
        (-10, -40): int(np.sum((fx > 0.7) & (fy < 0.35))),
        (10, -40): int(np.sum((fx < 0.3) & (fy < 0.35))),
    }
    return min(corners, key=lambda k: corners[k])


def integer_tick_step(span: float, ticks: int = 8) -> int:
    """A whole 1-2-5 step that puts about ``ticks`` major ticks on an axis ``span`` long."""
    raw = max(span / ticks, 1.0)
    base = 10 ** math.floor(math.log10(raw))
    return int(next(m * base for m in (1, 2, 5, 10) if m * base >= raw))


def _build(spec: FigureSpec) -> pg.PlotWidget:
    # Never shown: the plot is laid out at the figure's size and painted straight into an image.
    widget = pg.PlotWidget(background=_BACKGROUND, enableMenu=False)  # never clicked: no context menus to build
    widget.resize(spec.width, spec.height)
    plot = widget.getPlotItem()
    plot.setTitle(spec.title, color=_FOREGROUND, size="11pt")
    for side, text in (("bottom", spec.x_label), ("left", spec.y_label)):
        plot.setLabel(side, text, color=_FOREGROUND)
        axis = plot.getAxis(side)
        axis.setPen(_pen(_FOREGROUND, 1.0))
        axis.setTextPen(_pen(_FOREGROUND, 1.0))
        axis.enableAutoSIPrefix(False)  # "weight value (x0.001)" reads worse than the plain numbers
    plot.showGrid(x=True, y=True, alpha=0.15)
    if len(spec.series) > 1:
        plot.addLegend(offset=_legend_corner(spec), labelTextColor=_FOREGROUND,
                       brush=_brush("#ffffff", 225), pen=_pen("#c8ccd4", 1.0))
    if spec.log_y:
        plot.setLogMode(x=False, y=True)
    for s in spec.series:
        _draw_series(plot, s, spec.log_y)
    x_markers = 0
    for m in spec.markers:
        _draw_marker(plot, m, spec.log_y, x_markers)
        x_markers += m.axis == "x"
    # Make sure every marker is inside the view, not only the data.
    bounds = plot.vb.childrenBounds()
    for axis, setter in (("x", plot.setXRange), ("y", plot.setYRange)):
        vals = [m.value for m in spec.markers if m.axis == axis and math.isfinite(m.value)]
        if axis == "y" and spec.log_y:
            vals = [math.log10(v) for v in vals if v > 0]
        if not vals:
            continue
        data = bounds[0 if axis == "x" else 1] or (min(vals), max(vals))
        lo, hi = min([data[0], *vals]), max([data[1], *vals])
        pad = 0.04 * (hi - lo or 1.0)
        setter(lo - pad, hi + pad, padding=0)
    if spec.integer_x:
        # a three-layer model got ticks at 0.5, 1.5: layer numbers are whole. The span is the data's: the
        # view's range is not laid out yet here (a 240-layer model got a tick, and a label, at every layer)
        xs = [float(v) for s in spec.series for v in s.x if math.isfinite(float(v))]
        lo, hi = (min(xs), max(xs)) if xs else plot.vb.viewRange()[0]
        major = integer_tick_step(hi - lo)
        plot.getAxis("bottom").setTickSpacing(major, max(1, major // 5))
    plot.setGeometry(0, 0, spec.width, spec.height)
    widget.setSceneRect(0, 0, spec.width, spec.height)
    plot.layout.activate()
    return widget


PALETTE_COLOURS = 128  # the figures are flat colours on white: a palette of this many loses nothing visible


def palette_png(png: bytes) -> bytes:
    """A figure's PNG as an optimized palette PNG, about a quarter of the RGBA one Qt writes: a report of 743
    figures was 40 MB, most of it these figures, twice (in figures/ and inlined in the HTML, which then
    reached its inline cap and linked the rest)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        rgba = im.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    flat.quantize(PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def render_png(spec: FigureSpec) -> bytes:
    """Draw one figure specification and return PNG bytes."""
    _app()
    widget = _build(spec)
    try:
        exporter = ImageExporter(widget.getPlotItem())
        exporter.parameters()["width"] = spec.width
        image = exporter.export(toBytes=True)
        data = QByteArray()
        buf = QBuffer(data)
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        if not image.save(buf, "PNG"):
            raise RuntimeError(f"could not encode figure {spec.id} as PNG")
        buf.close()
        return palette_png(bytes(data.data()))
    finally:
        # Delete now: deleteLater would wait for an event loop the command line never runs.
        shiboken6.delete(widget)


class _GuiThreadRenderer(QObject):
    """Draws figures on the GUI thread for callers in worker threads (Qt widgets live on one thread)."""

    request = Signal(object, object)

    def __init__(self) -> None:
        super().__init__()
        # The emitting worker blocks until the GUI thread has drawn the figure.
        self.request.connect(self._render, Qt.ConnectionType.BlockingQueuedConnection)

    @Slot(object, object)
    def _render(self, spec: FigureSpec, out: list) -> None:
        try:
            out.append(render_png(spec))
        except BaseException as exc:  # handed back to the worker, raised there
            out.append(exc)


_relay: _GuiThreadRenderer | None = None


def _on_gui_thread() -> bool:
    app = pg.QtWidgets.QApplication.instance()
    return app is None or QThread.currentThread() == app.thread()


def _render_via_gui_thread(spec: FigureSpec) -> bytes:
    global _relay
    if _relay is None:
        relay = _GuiThreadRenderer()
        relay.moveToThread(pg.QtWidgets.QApplication.instance().thread())
        _relay = relay
    out: list = []
    _relay.request.emit(spec, out)
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


Progress = Callable[[int, int], None]  # (figures drawn, figures in all); may raise to stop the drawing


def _render_here(specs: Sequence[FigureSpec], progress: Progress | None = None) -> dict[str, bytes]:
    # Exported figures are antialiased; the window's own plots are not (software raster: twice the paint
    # time), and pyqtgraph reads the option when an item is made, so it is put back afterwards.
    previous = pg.getConfigOption("antialias")
    pg.setConfigOptions(antialias=True)
    draw = render_png if _on_gui_thread() else _render_via_gui_thread
    out: dict[str, bytes] = {}
    try:
        _app()
        with _signals_held() as deliver:
            for spec in specs:
                out[spec.id] = draw(spec)
                deliver()  # between figures, never inside a paint
                if progress:
                    progress(len(out), len(specs))
        return out
    finally:
        pg.setConfigOptions(antialias=previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[Callable[[], None]]:
    """Hold Ctrl-C and SIGTERM while figures are painted, and deliver one at the next safe point.

    Raised inside a Qt paint, the KeyboardInterrupt was swallowed by pyqtgraph's paint guard (the report
    went on and replaced the old one, exit 0), printed a 37-line warning, or unwound through a live
    QPainter and crashed (exit 139). Outside the main thread (the window's own export) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in wanted}
    pending: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        pending.append(signum)

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    def deliver() -> None:
        if not pending:
            return
        restore()
        signum, handler = pending[0], previous[pending[0]]
        pending.clear()  # delivered once
        if callable(handler):
            handler(signum, None)  # qinspect's own handler raises KeyboardInterrupt here
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    for s in wanted:
        signal.signal(s, hold)
    try:
        yield deliver
    finally:
        restore()
        deliver()


# A report of a few hundred layers has about a thousand figures at ~50 ms each: helper processes draw
# them side by side, one per core, and off the window's GUI thread. Starting one (Python, Qt, pyqtgraph)
# takes about a second, so a handful of figures is drawn here.
POOL_MIN_FIGURES = 24
FIGURES_PER_TASK = 8  # per request to a helper: few round trips, and the helpers still finish together
MAX_FIGURE_HELPERS = 8
_HELPER_ENV = {"QT_QPA_PLATFORM": "offscreen"}


def _draw_in_helper(specs: list[FigureSpec]) -> list[tuple[str, bytes]]:
    """In a figure helper process: draw a few figures."""
    pg.setConfigOptions(antialias=True)
    _app()
    return [(spec.id, render_png(spec)) for spec in specs]


def figure_helpers(count: int, on_gui_thread: bool) -> int:
    """How many helper processes draw ``count`` figures (0: draw them in this process).

    From the GUI thread (the command line) helpers only pay when there are cores to run them side by
    side; from the window's worker thread one helper still keeps the drawing off the GUI thread.
    """
    if os.environ.get("QINSPECT_NO_HELPER_PROCESS") or count < POOL_MIN_FIGURES:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    helpers = min(cores, MAX_FIGURE_HELPERS, -(-count // FIGURES_PER_TASK))
    return 0 if on_gui_thread and helpers < 2 else helpers


def _render_in_helpers(specs: list[FigureSpec], helpers: int, niceness: int,
                       progress: Progress | None) -> dict[str, bytes]:
    from qinspect.gui import compute_process as cp

    out: dict[str, bytes] = {}
    try:
        pool = cp.start_helpers(helpers, niceness, _HELPER_ENV)
    except (OSError, ValueError, ImportError):
        return _render_here(specs, progress)  # no helper processes here: slower, same figures
    try:
        batches = [specs[i:i + FIGURES_PER_TASK] for i in range(0, len(specs), FIGURES_PER_TASK)]
        # submit and wait in order, not pool.map: interrupted, map cancels the calls still queued, and the
        # pool's manager thread then failed on them (InvalidStateError, a traceback after "interrupted")
        for future in [pool.submit(_draw_in_helper, batch) for batch in batches]:
            out.update(future.result())
            if progress:
                progress(len(out), len(specs))
        cp.close_helpers(pool)
    except BrokenProcessPool:  # a helper died (killed, out of memory): draw what is missing here
        cp.stop_helpers(pool)
        drawn = len(out)
        rest = _render_here([spec for spec in specs if spec.id not in out],
                            None if progress is None else lambda n, _total: progress(drawn + n, len(specs)))
        out.update(rest)
    except BaseException:  # cancelled (progress raised) or interrupted: the helpers stop now
        cp.stop_helpers(pool)
        raise
    return {spec.id: out[spec.id] for spec in specs}


def render_figures(specs: Sequence[FigureSpec], progress: Progress | None = None) -> dict[str, bytes]:
    """Draw every specification; the report writer's ``render_figures`` callable.

    Many figures are drawn by helper processes, side by side (:func:`figure_helpers`). Safe to call
    from a worker thread while the GUI runs: figures drawn in this process are then drawn on the GUI
    thread, one at a time, so the window keeps handling events between figures. ``progress`` hears
    how many are drawn; an exception it raises (a cancelled job) stops the drawing.
    """
    specs = list(specs)
    on_gui_thread = _on_gui_thread()
    helpers = figure_helpers(len(specs), on_gui_thread)
    if helpers:
        # The command line waits for the figures; the window's export yields to the window itself.
        from qinspect.gui.compute_process import MODEL_NICENESS

        return _render_in_helpers(specs, helpers, 0 if on_gui_thread else MODEL_NICENESS, progress)
    return _render_here(specs, progress)
