"""The options advisor: quantizer options and small sets of float layers, each tried in the emulator.

Each row is one way to quantize the model: a set of ``vai_q_tensorflow2`` options (the graph is rebuilt
and recalibrated under them by the caller's ``build``), optionally with some layers kept in float. The
output SQNR and top-1 agreement are measured on the evaluation data; the row carries the exact
``quantize_model`` call that reproduces it. Option sets are plain dicts of ``quantize_model`` keywords
(plus ``calib_samples``, the number of calibration samples), so options added to the emulator plug in by
adding dicts to the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qinspect.analysis.metrics import json_safe, ratio_se_db
from qinspect.analysis.outputs import constant_output_notes
from qinspect.analysis.sensitivity import (
    _output_stats,
    output_powers,
    quantizing_nodes,
    sensitivity,
    top1_counts,
)
from qinspect.dpu.dpu_graph import DpuGraph, float_layers, quantizes_model_input

KEEP_FLOAT_CANDIDATES = 6  # DPU layers with the lowest isolated SQNR whose keep-float run is measured
KEEP_FLOAT_MAX = 3  # the largest set of float layers advised


@dataclass
class AdviceRow:
    """One way to quantize the model and what the emulator measured for it."""

    options: dict[str, Any]
    keep_float: list[str] = field(default_factory=list)
    output_sqnr_db: float = math.nan
    top1_agreement: float | None = None
    cpu_layers_added: int = 0
    command: str = ""
    # why vai_q_tensorflow2 cannot quantize the model so (DpuGraph.quantizer_stop_note); None: it can
    quantizer_stops: str | None = None
    # calibration data other than the given one (a diagnosis' data remedy): "evaluation" (calibrate on the
    # data in use), or the calibration samples to leave out (outliers)
    calib_data: str | None = None
    calib_exclude: list[int] = field(default_factory=list)
    measured_on: str = ""  # the samples the figures are over, in words, when not every measured one
    # the standard error of this row's output SQNR minus the top row's, paired over the measured samples
    # (jackknife); None for the top row, or where unknown
    vs_best_se_db: float | None = None
    noise: Any = field(default=None, repr=False, compare=False)  # per-sample output error power (not in JSON)
    # ranked first though another row measured more: within the noise of it, with fewer changes
    simplest_within_noise: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``advice`` entries of ``diagnose --json`` / ``advise --json``): ``options``
        holds ``quantize_model`` keywords only (``**row["options"]`` is a valid call), ``calib_samples`` the
        calibration samples (``calib_dataset=calib[:N]``; null: all), ``calib_exclude`` calibration samples
        left out (``np.delete(calib, calib_exclude, axis=0)``), ``calib_data`` "evaluation" when the row
        calibrates on the evaluation data instead (null: the calibration data)."""
        options = dict(self.options)
        calib_samples = options.pop("calib_samples", None)
        return json_safe({"options": options, "calib_samples": calib_samples, "calib_exclude": self.calib_exclude,
                          "calib_data": self.calib_data, "keep_float": self.keep_float,
                          "output_sqnr_db": self.output_sqnr_db, "top1_agreement": self.top1_agreement,
                          "cpu_layers_added": self.cpu_layers_added, "command": self.command,
                          "quantizer_stops": self.quantizer_stops, "sqnr_vs_best_se_db": self.vs_best_se_db,
                          "simplest_within_noise": self.simplest_within_noise,
                          **({"measured_on": self.measured_on} if self.measured_on else {})})


def command(options: dict[str, Any], keep_float: Sequence[str], keras_names: dict[str, str] | None = None,
            calib_exclude: Sequence[int] = (), calib_data: str | None = None) -> str:
    """The ``vai_q_tensorflow2`` call that quantizes the model this way; ``keras_names`` (``DpuGraph.keras_names``)
    turns a nested layer's name into the one Keras and ``ignore_layers`` know; ``calib_exclude``: calibration
    samples left out; ``calib_data`` "evaluation": calibrated on the data in use instead."""
    keep_float = [(keras_names or {}).get(name, name) for name in keep_float]
    opts = dict(options)
    n = opts.pop("calib_samples", None)
    data = "calib" if calib_data is None else f"{calib_data}_data"
    if calib_exclude:
        data = f"np.delete({data}, {list(calib_exclude)!r}, axis=0)"
    args = [f"calib_dataset={data}{'' if n is None else f'[:{n}]'}"]
    args += [f"{k}={v!r}" for k, v in opts.items()]
    if keep_float:
        args.append(f"ignore_layers={list(keep_float)!r}")
    return "vitis_quantize.VitisQuantizer(model).quantize_model(" + ", ".join(args) + ")"


def option_grid(batch_size: int, n_calib: int, has_relu6: bool = False) -> list[dict[str, Any]]:
    """The option sets tried by default: CLE on and off, the calibration batch size and a smaller one,
    all calibration samples and half of them, and, when the model has ReLU6 activations, equalizing
    across them (``cle_to_relu6``) and replacing them by ReLU (``convert_relu6_to_relu``)."""
    small = max(1, batch_size // 4)
    base = {"include_cle": True, "calib_batch_size": batch_size, "calib_samples": n_calib}
    grid = [base, {**base, "include_cle": False}]
    if small != batch_size and n_calib > small:  # over fewer samples than a small batch, both are one batch
        grid.append({**base, "calib_batch_size": small})
    if n_calib >= 2:
        grid.append({**base, "calib_samples": n_calib // 2})
    if has_relu6:
        grid += [{**base, "cle_to_relu6": True}, {**base, "convert_relu6_to_relu": True},
                 {**base, "cle_to_relu6": True, "convert_relu6_to_relu": True}]
    return grid


def has_relu6(layers: Any) -> bool:
    """Whether a float model's layers (``ModelGraph.layers``) cap an activation at 6 (the ReLU6 options
    change something then)."""
    for layer in layers:
        cfg = getattr(layer, "config", None) or {}
        if cfg.get("max_value") in (6, 6.0) or cfg.get("activation") == "relu6":
            return True
    return False


def advise(build: Callable[[dict[str, Any]], DpuGraph], data: dict[str, np.ndarray],
           option_sets: Sequence[dict[str, Any]], mode: str = "sim",
           step: Callable[[str, int, int], None] | None = None, notes: list[str] | None = None,
           same: list[str] | None = None) -> list[AdviceRow]:
    """Try every option set, then keep-float sets on the best one; rows ranked by output SQNR. An option
    set the quantizer cannot run (its CLE stops) is tried again with CLE off. The simplest row within the
    measurement noise of the best ranks first (:func:`prefer_simplest`).

    ``build(options)`` returns the calibrated graph under ``options``; ``data`` is what every row is
    measured on (the evaluation data when there is one). ``notes`` (when given) receives what the figures
    rest on: a float output that is constant over the data, which no row's SQNR then measures. An option set
    that calibrates to the very positions of one tried before it, its other options equal (half the samples
    choosing what all of them chose), is the same int8 model: it gets no row, and ``same`` (when given)
    receives a sentence saying so.
    """
    n = len(next(iter(data.values())))
    rows: list[AdviceRow] = []
    best = None
    todo = [dict(o) for o in option_sets]
    models: dict[tuple, dict[str, Any]] = {}  # what makes the int8 model -> the first option set that made it
    for i, opts in enumerate(todo):  # grows while it runs (below)
        if step is not None:
            step("trying quantizer options", i, len(todo))
        graph = build(opts)
        model = _int8_model_key(graph, opts)
        if model in models:
            if same is not None:
                same.append(f"{_options_text(opts)} calibrates to the positions of {_options_text(models[model])}: "
                            "the same int8 model, not listed again")
            continue
        models[model] = opts
        sens = sensitivity(graph, data, batch_size=max(n, 1), whatifs=False, mode=mode)
        agree, total = sens.top1
        row = AdviceRow(dict(opts), [], sens.output.sqnr_db, agree / total if total else None, 0, command(opts, []),
                        graph.quantizer_stop_note(), noise=sens.output_noise)
        rows.append(row)
        if best is None or rank_key(row) > rank_key(best[0]):
            best = (row, graph, sens)
        if row.quantizer_stops and opts.get("include_cle", True):
            # the quantizer stops in CLE under these options: the same ones with CLE off are a real run
            # (cle_to_relu6 means nothing without CLE)
            runnable = {k: v for k, v in opts.items() if k != "cle_to_relu6"} | {"include_cle": False}
            if runnable not in todo:
                todo.append(runnable)
    assert best is not None
    row, graph, sens = best
    runner = sens.runner
    if runner is not None:
        rows.extend(_keep_float_rows(row, graph, sens, runner, step))
    rows.sort(key=rank_key, reverse=True)
    _spread_against_top(rows)
    if prefer_simplest(rows, option_sets[0] if option_sets else {}):
        _spread_against_top(rows)
    if notes is not None:
        notes.extend(constant_output_notes(graph, runner))
    return rows


SIMPLEST_NOTE = ("=: ranked first as the simplest row (fewest CPU layers, then fewest option changes) within the "
                 "measurement noise of the best figure, which does not support the extra changes.")


def prefer_simplest(rows: list[AdviceRow], base: Mapping[str, Any]) -> bool:
    """Move to the top the simplest row within the noise of the best one (fewest CPU layers added, then
    fewest float layers, then fewest options changed from ``base``, the options as given): a row that adds
    five CPU layers for the same 0.26 dB (to the third decimal) came first. True when the order changed."""
    if len(rows) < 2 or rows[0].quantizer_stops:
        return False

    def changes(row: AdviceRow) -> tuple[int, int, int]:
        changed = sum(1 for k in {*row.options, *base} if row.options.get(k) != base.get(k))
        return (row.cpu_layers_added, len(row.keep_float), changed)

    top = rows[0].to_dict()
    tied = [r for r in rows[1:] if not r.quantizer_stops and not r.measured_on and within_noise(r.to_dict(), top)]
    simplest = min([rows[0], *tied], key=changes)
    if simplest is rows[0] or changes(simplest) == changes(rows[0]):
        return False
    rows.remove(simplest)
    rows.insert(0, simplest)
    simplest.simplest_within_noise = True
    for r in rows:
        r.vs_best_se_db = None
    return True


WITHIN_NOISE_NOTE = ("≈: within twice the standard error of the difference from the top row (paired over the "
                     "measured samples): which of them is better is not measured well on these samples.")


def _spread_against_top(rows: list[AdviceRow]) -> None:
    """Each row's standard error of its SQNR difference from the top row (rows measured on other samples,
    or a row the quantizer cannot run, get none)."""
    top = rows[0] if rows else None
    if top is None or top.noise is None:
        return
    for row in rows[1:]:
        if row.noise is None or len(row.noise) != len(top.noise) or row.measured_on or row.quantizer_stops:
            continue
        se = ratio_se_db(row.noise, top.noise)
        row.vs_best_se_db = None if math.isnan(se) else se


def within_noise(row: Mapping[str, Any], top: Mapping[str, Any]) -> bool:
    """Whether an advice row (JSON form) is within twice its paired standard error of the top row."""
    se, a, b = row.get("sqnr_vs_best_se_db"), row.get("output_sqnr_db"), top.get("output_sqnr_db")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (se, a, b)):
        return False
    return abs(float(b) - float(a)) < 2.0 * float(se)


def _int8_model_key(graph: DpuGraph, opts: Mapping[str, Any]) -> tuple:
    """The options that change weights or operators, and every tensor's position: equal keys, equal int8
    models (the calibration options, samples and batch size, act through the positions alone)."""
    rest = tuple(sorted((k, repr(v)) for k, v in opts.items() if k not in ("calib_samples", "calib_batch_size")))
    return rest, tuple(sorted((repr(slot), graph.pos(slot)) for slot in graph.slots))


def _options_text(opts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in opts.items())


def in_sample_note(n_calib: int, how: str = "give an evaluation capture (--eval)",
                   rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """What rows measured on the calibration data itself cannot show: each row is calibrated on the very
    samples it is measured on, the half-calibration row on half of them, so a row calibrated on fewer is
    flattered (it fits those samples more closely). ``how``: how to give evaluation data, where the note is
    read (the option, the menu); ``rows``: the rows listed (``AdviceRow.to_dict()``), to name the
    half-calibration row only when it is one of them."""
    listed = any(r.get("calib_samples") == n_calib // 2 for r in rows)
    half = f" and the calib_samples={n_calib // 2} row on the first {n_calib // 2} of them" if listed else ""
    return (f"In-sample: these rows are measured on the calibration data, so each was calibrated on samples it is "
            f"measured on{half}; a row calibrated on fewer samples reads better than it would on new data: "
            f"{how} to rank the rows on data the calibration did not see.")


TOP1_OUTRANKED_NOTE = ("↓: a row ranked lower agrees with the float model's top-1 more often; rows are ranked by "
                       "output SQNR.")


def quantizer_stops_note(stops: Sequence[str | None]) -> str | None:
    """The footnote of rows marked ✗ (a way vai_q_tensorflow2 cannot take: ranked last), or None."""
    first = next((s for s in stops if s), None)
    return None if first is None else f"✗: no real run: {first}."


def top1_outranked(agreements: Sequence[float | None], runnable: Sequence[bool] | None = None) -> list[bool]:
    """For rows ranked by output SQNR, whether a row ranked lower agrees with the float model's top-1
    more often (marked ↓ wherever rows are shown, so the ranking does not pass for one by top-1). Rows
    the quantizer cannot run (``runnable`` False: marked ✗) neither beat nor are marked."""
    ok = list(runnable) if runnable is not None else [True] * len(agreements)
    marks = []
    for i, a in enumerate(agreements):
        later = [x for x, good in zip(agreements[i + 1:], ok[i + 1:], strict=True) if x is not None and good]
        marks.append(ok[i] and a is not None and bool(later) and a < max(later))
    return marks


def calibration_text(row: Mapping[str, Any]) -> str:
    """How an advice row calibrates when not on the given calibration data ("" when it does)."""
    if row.get("calib_data") == "evaluation":
        return "calibrated on the evaluation data"
    exclude = row.get("calib_exclude") or []
    if exclude:
        return "calibrated without sample" + ("s " if len(exclude) > 1 else " ") + ", ".join(map(str, exclude))
    return ""


def row_marks(rows: Sequence[Mapping[str, Any]]) -> tuple[list[bool], str | None]:
    """For advice rows in their JSON form (``AdviceRow.to_dict()``, as the window and the report hold
    them): which are marked ↓ (:func:`top1_outranked`) and the ✗ rows' footnote (:func:`quantizer_stops_note`)."""
    stops = [row.get("quantizer_stops") for row in rows]
    return (top1_outranked([row.get("top1_agreement") for row in rows], [not s for s in stops]),
            quantizer_stops_note(stops))


def rank_key(row: AdviceRow) -> tuple[bool, float, float]:
    """Rows rank by output SQNR (an undefined figure last), then fewer CPU layers; a way the quantizer
    cannot take ranks below every way it can, whatever its figure."""
    sqnr = row.output_sqnr_db if not math.isnan(row.output_sqnr_db) else -math.inf
    return (row.quantizer_stops is None, sqnr, -row.cpu_layers_added)


def _keep_float_rows(base: AdviceRow, graph: DpuGraph, sens: Any, runner: Any,
                     step: Callable[[str, int, int], None] | None) -> list[AdviceRow]:
    """Keep-float runs of the DPU layers with the most isolated error, then the best 1..3 of them together."""
    dpu = [n for n in quantizing_nodes(graph) if n.device == "DPU" and not quantizes_model_input(graph, n)]
    # One candidate per ignore_layers entry: the nodes a float layer was split into (a conv and its
    # activation, a separable conv's two halves) stay float together, as ignoring the layer keeps them;
    # tried apart they gave rows whose figure was not their command's. Ranked by their worst isolated SQNR.
    groups: dict[tuple[str, ...], list[str]] = {}
    for n in dpu:
        closure = graph.float_closure([n.name])
        groups.setdefault(tuple(closure), closure)

    def worst(names: list[str]) -> float | None:
        return min((sens.isolated[m].sqnr_db for m in names if m in sens.isolated and sens.isolated[m].n),
                   default=None)

    scored = [(worst(names), names) for names in groups.values()]
    ranked = sorted((item for item in scored if item[0] is not None), key=lambda item: item[0])
    candidates = [names for _, names in ranked[:KEEP_FLOAT_CANDIDATES]]

    def measure(names: list[str]) -> AdviceRow:
        values = runner.what_if(None, names)
        agree, total = top1_counts(graph, runner.ref, values)
        layers = float_layers(graph, names)
        return AdviceRow(dict(base.options), layers, _output_stats(graph, runner.ref, values).sqnr_db,
                         agree / total if total else None, sum(graph[n].device == "DPU" for n in names),
                         command(base.options, layers, graph.keras_names), base.quantizer_stops,
                         noise=output_powers(graph, runner.ref, values)[1])

    singles = []
    for i, names in enumerate(candidates):
        if step is not None:
            step("trying layers in float", i, len(candidates))
        singles.append((measure(names), names))
    singles.sort(key=lambda r: rank_key(r[0]), reverse=True)
    rows = [r for r, _ in singles]
    for k in range(2, min(KEEP_FLOAT_MAX, len(singles)) + 1):
        rows.append(measure([name for _, names in singles[:k] for name in names]))
    return rows
