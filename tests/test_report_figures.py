"""The report's PNG figures drawn by pyqtgraph offscreen (qinspect.gui.figures)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from qinspect.report import figspec

pytestmark = pytest.mark.gui
figures = pytest.importorskip("qinspect.gui.figures")
pg = pytest.importorskip("pyqtgraph")


def _image(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(png))
    img.load()
    return img.convert("RGB")


def _has_colour(img: Image.Image, rgb: tuple[int, int, int], tol: int = 40) -> int:
    a = np.asarray(img).astype(int)
    return int(np.sum(np.all(np.abs(a - np.array(rgb)) <= tol, axis=-1)))


def _hex(c: str) -> tuple[int, int, int]:
    return tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))


def test_activation_figure_draws_histogram_and_clip_lines():
    counts, edges = np.histogram(np.random.default_rng(0).standard_normal(5000), bins=64)
    counts[10:14] = 0  # empty bins on a log axis must not break the drawing
    spec = figspec.activation_figure("act", "conv", edges, counts, -2.0, 1.984375, 6, 0.01, 0.02)
    img = _image(figures.render_png(spec))
    assert img.size[0] == spec.width
    assert _has_colour(img, _hex(figspec.RED), 30) > 100  # the two clip lines
    assert _has_colour(img, _hex(figspec.BLUE), 30) > 100  # the histogram outline


def test_marker_outside_the_data_is_still_in_view():
    # Data in [0, 1]; the clip line at 10 must be drawn (the view widens to include markers).
    spec = figspec.activation_figure("act", "relu", [0.0, 0.5, 1.0], [5, 3], None, 10.0, 3, log_y=False)
    img = _image(figures.render_png(spec))
    assert _has_colour(img, _hex(figspec.RED), 30) > 50


def test_propagation_with_infinite_sqnr_renders():
    spec = figspec.propagation_figure("p", ["a", "b", "c"], [30.0, math.inf, 20.0], [30.0, 25.0, None])
    assert spec.series[0].y[1] != spec.series[0].y[1]  # inf became a NaN gap
    img = _image(figures.render_png(spec))
    assert img.size[0] == spec.width
    assert _has_colour(img, _hex(figspec.RED), 30) > 50  # the accumulated line


def test_propagation_line_follows_the_graph_and_renders():
    # b and c are two branches off a, joined at d; c has no value (exact): d joins a through it
    inbound = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
    spec = figspec.propagation_figure("p", ["a", "b", "c", "d"], [40.0, 30.0, None, 20.0],
                                      [40.0, 30.0, math.inf, 20.0], inbound=inbound)
    acc = spec.series[1]
    assert acc.style == "segments"
    assert list(zip(acc.x[::2], acc.x[1::2], strict=True)) == [(0.0, 1.0), (0.0, 3.0), (1.0, 3.0)]
    assert "follows the model's edges" in spec.caption
    img = _image(figures.render_png(spec))
    assert _has_colour(img, _hex(figspec.RED), 30) > 50


def test_render_figures_returns_one_png_per_spec():
    specs = [
        figspec.weights_figure("w", "conv", np.linspace(-1, 1, 9), [1, 2, 3, 4, 4, 3, 2, 1], -1.0, 0.9921875, 7),
        figspec.channel_ranges_figure("c", "conv", [-0.5, -0.1, -0.9], [0.4, 0.2, 0.8], -1.0, 0.9921875),
        figspec.error_figure("e", "conv", np.linspace(-0.01, 0.01, 11), np.arange(10), "isolated", 1 / 64),
    ]
    pg.setConfigOptions(antialias=False)  # as the window sets it
    out = figures.render_figures(specs)
    assert sorted(out) == ["c", "e", "w"]
    for spec in specs:
        assert _image(out[spec.id]).size[0] == spec.width
    # the exported figures' antialiasing does not stay on for the window's plots made afterwards
    assert pg.getConfigOption("antialias") is False


def test_render_figures_from_a_worker_thread_draws_on_the_gui_thread():
    import threading

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    specs = [figspec.error_figure(f"e{i}", "conv", np.linspace(-1, 1, 11), np.arange(10), "isolated", 0.5)
             for i in range(3)]
    box: dict = {}

    def work():
        try:
            box["out"] = figures.render_figures(specs)
        except BaseException as exc:  # pragma: no cover - reported below
            box["err"] = exc

    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():  # the GUI thread keeps its event loop turning, as the window does
        app.processEvents()
        t.join(0.01)
    assert "err" not in box, box.get("err")
    assert sorted(box["out"]) == ["e0", "e1", "e2"]
    assert all(_image(png).size[0] == 560 for png in box["out"].values())


def _many_specs(n: int) -> list:
    rng = np.random.default_rng(3)
    return [figspec.error_figure(f"e{i}", f"layer{i}", np.linspace(-1, 1, 11), rng.integers(0, 50, 10), "isolated",
                                 0.5) for i in range(n)]


def test_how_many_figure_helpers(monkeypatch):
    monkeypatch.delenv("QINSPECT_NO_HELPER_PROCESS", raising=False)
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    few, many = figures.POOL_MIN_FIGURES - 1, 1000
    assert figures.figure_helpers(few, on_gui_thread=True) == 0  # start-up would cost more than it saves
    assert figures.figure_helpers(many, on_gui_thread=True) == 4  # one per core
    assert figures.figure_helpers(figures.POOL_MIN_FIGURES, on_gui_thread=True) == 3  # not more than batches
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda _pid: {0}, raising=False)
    assert figures.figure_helpers(many, on_gui_thread=True) == 0  # one core: the command line draws itself
    assert figures.figure_helpers(many, on_gui_thread=False) == 1  # the window: still off its GUI thread
    monkeypatch.setenv("QINSPECT_NO_HELPER_PROCESS", "1")
    assert figures.figure_helpers(many, on_gui_thread=False) == 0


def test_helper_processes_draw_the_same_png_bytes_as_this_process(monkeypatch):
    monkeypatch.delenv("QINSPECT_NO_HELPER_PROCESS", raising=False)
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    specs = _many_specs(figures.POOL_MIN_FIGURES + 3)
    assert figures.figure_helpers(len(specs), on_gui_thread=True) == 2
    pooled = figures.render_figures(specs)
    here = figures._render_here(specs)
    assert list(pooled) == [s.id for s in specs]  # in the specifications' order
    assert pooled == here


def test_figures_are_drawn_here_when_no_helper_can_start(monkeypatch):
    from qinspect.gui import compute_process

    def refuse(*_a, **_k):
        raise OSError("no processes here")

    monkeypatch.delenv("QINSPECT_NO_HELPER_PROCESS", raising=False)
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.setattr(compute_process, "start_helpers", refuse)
    specs = _many_specs(figures.POOL_MIN_FIGURES)
    out = figures.render_figures(specs)
    assert sorted(out) == sorted(s.id for s in specs)
    assert all(_image(png).size[0] == specs[0].width for png in out.values())


def test_figures_a_dead_helper_left_are_drawn_here(monkeypatch):
    from qinspect.gui import compute_process

    stopped = []
    real_stop = compute_process.stop_helpers
    monkeypatch.setattr(compute_process, "stop_helpers", lambda pool: (stopped.append(pool), real_stop(pool)))
    monkeypatch.delenv("QINSPECT_NO_HELPER_PROCESS", raising=False)
    monkeypatch.setattr(figures.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.setattr(figures, "_draw_in_helper", _die_on_the_second_batch)
    specs = _many_specs(figures.POOL_MIN_FIGURES + 8)
    out = figures.render_figures(specs)
    assert len(stopped) == 1  # the pool broke and was stopped
    assert list(out) == [s.id for s in specs]
    assert out == figures._render_here(specs)


def _die_on_the_second_batch(specs: list) -> list:
    """In a helper: draw the first batch, die (as a killed helper does) on any other."""
    import os

    if specs[0].id != "e0":
        os._exit(1)
    return figures._draw_in_helper(specs)


def test_the_report_command_hears_how_many_figures_are_drawn():
    """`qinspect report` shows the figures' progress (a big model's report draws a couple of thousand)."""
    from qinspect.cli.report import _renderer

    heard = []
    renderer = _renderer(lambda done, total, what: heard.append((done, total, what)))
    specs = _many_specs(3)
    out = renderer(specs)
    assert sorted(out) == ["e0", "e1", "e2"]
    assert heard == [(1, 3, "figures"), (2, 3, "figures"), (3, 3, "figures")]


def test_graph_edges_follow_the_model_and_pass_through_layers_with_no_point():
    from qinspect.report.figspec import graph_edges

    # a -> b -> c -> e, a -> d -> e, e -> f; listed in a topological order that interleaves the branches
    inbound = {"b": ["a"], "c": ["b"], "d": ["a"], "e": ["c", "d"], "f": ["e"]}
    layers = ["a", "d", "b", "c", "e", "f"]
    assert graph_edges(layers, inbound, [True] * 6) == [(0, 1), (0, 2), (2, 3), (1, 4), (3, 4), (4, 5)]
    # c has no point (an exact layer, say): e joins b, the drawn layer before it; nothing joins d to b
    edges = graph_edges(layers, inbound, [True, True, True, False, True, True])
    assert edges == [(0, 1), (0, 2), (1, 4), (2, 4), (4, 5)]
    # a layer the plot leaves out altogether (a BatchNorm folded into its conv) is passed through too
    assert graph_edges(["a", "c"], {"b": ["a"], "c": ["b"]}, [True, True]) == [(0, 1)]


def test_the_layer_axis_has_whole_ticks_only():
    """A three-layer model's propagation figure had ticks at 0.5 and 1.5, between its layer numbers."""
    from qinspect.gui.figures import _app, _build, integer_tick_step

    assert [integer_tick_step(s) for s in (2, 10, 41, 155)] == [1, 2, 10, 20]
    _app()
    spec = figspec.propagation_figure("p", ["a", "b", "c"], [30.0, 25.0, 20.0], [30.0, 24.0, 18.0])
    assert spec.integer_x
    axis = _build(spec).getPlotItem().getAxis("bottom")
    levels = axis.tickSpacing(0.0, 2.0, 1000)
    assert levels and all(float(step).is_integer() and step >= 1 for step, _ in levels)


def test_a_long_model_gets_a_few_layer_ticks_not_one_per_layer():
    """MobileNetV3Small's 240 layers got a tick and a label at every layer (read off a view range not yet
    laid out): an unreadable band of numbers under the plot."""
    from qinspect.gui.figures import _app, _build

    _app()
    n = 240
    names = [f"l{i}" for i in range(n)]
    spec = figspec.propagation_figure("p", names, [30.0] * n, [20.0] * n,
                                      inbound={name: names[i - 1:i] for i, name in enumerate(names)})
    axis = _build(spec).getPlotItem().getAxis("bottom")
    major = axis.tickSpacing(0.0, n - 1.0, 1000)[0][0]
    assert (n - 1) / major <= 10  # about eight labels along the axis
