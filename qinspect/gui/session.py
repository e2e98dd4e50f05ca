"""Model-wide analysis state of the open document, and the background jobs that fill it.

The :class:`Session` is the one place that talks to the emulator, the Vitis importers, the capture
comparison and the report writer. Widgets read its plain attributes and listen to its signals; each
job runs on its own :class:`~qinspect.gui.worker.Channel`, so a newer request of the same kind
replaces an older one and failures go to the window's error hub (``failed`` signal).
"""

from __future__ import annotations

import math
import os
from typing import Any

from PySide6.QtCore import QObject, Signal

from qinspect.analysis.decisions import agreement_text
from qinspect.dpu.options import QuantizerOptions
from qinspect.gui import emulation
from qinspect.gui.document import Document
from qinspect.gui.worker import Channel
from qinspect.report import wording


class Session(QObject):
    """Analysis of one open document."""

    positions_changed = Signal()
    results_changed = Signal()
    findings_changed = Signal()
    trial_changed = Signal()  # a remedy tried as a what-if (or undone): see ``trial``
    advice_changed = Signal()  # the options advisor's rows arrived: see ``advice``
    coverage_changed = Signal()
    dump_changed = Signal()
    exported = Signal(str)
    status = Signal(str)
    failed = Signal(object, str, str)  # exception, traceback, what was being done
    busy = Signal(object, str)  # the channel running a long job (None when idle), its description
    progress = Signal(int, int, str)
    options_restored = Signal(object)  # a cancelled re-emulation: these QuantizerOptions stand again

    def __init__(self, document: Document, parent: QObject | None = None,
                 options: QuantizerOptions | None = None) -> None:
        super().__init__(parent)
        self.document = document
        self.options = options or QuantizerOptions()  # the quantizer options the model is emulated under
        self.quantized_path: str | None = None  # the Vitis quantized.h5 whose positions are in use
        self._importing = False  # an import's emulation is running; a failure puts back _before_import
        self._before_import: str | None = None
        self.analysis: emulation.Analysis | None = None  # emulator positions and per-layer results
        # the options and quantized.h5 ``analysis`` was measured under: they stand again when a re-emulation
        # is cancelled
        self._shown_run: tuple[QuantizerOptions, str | None] = (self.options, None)
        self.placement: dict[str, str] = {}
        self.placement_notes: dict[str, str] = {}
        self.coverage: Any = None  # compare_job.Coverage
        self.dump: Any = None  # dump comparison rows
        self.dump_error: str | None = None  # why the last dump import failed (one line)
        self.dump_dropped: str | None = None  # why the comparison on hand went (another quantized.h5 or target)
        self._dump_with: tuple[str | None, bool] | None = None  # the quantized.h5 and target it was made with
        self.findings: list[Any] = []
        self.diagnosis: emulation.DiagnosisSummary | None = None  # the output block beside the findings
        self._diagnosed_on: str | None = None  # the evaluation capture the diagnosis measured (None: the capture)
        self.trial: Any = None  # qinspect.analysis.remedy_curve.RemedyCurves of the remedy tried, if any
        self.trial_finding: Any = None  # the finding whose remedy ``trial`` applied
        self.advice: Any = None  # qinspect.gui.advice_job.AdviceResult of the last advisor run
        self.labels_path: str | None = None  # class labels of the measured samples, for accuracy
        # the output layers the diagnosis, the remedies, the advisor and reports weigh (None: all, pooled)
        self.weighed_outputs: list[str] | None = None
        self.channels: dict[str, Channel] = {}
        for name in ("emulate", "coverage", "dump", "export", "write", "findings", "trial", "advice"):
            channel = Channel(name, self)
            channel.failed.connect(lambda _rid, exc, tb, n=name: self._on_failed(n, exc, tb))
            channel.progress.connect(lambda _rid, d, t, text: self.progress.emit(d, t, text))
            channel.idle.connect(lambda n=name: self._on_idle(n))
            self.channels[name] = channel
        self.channels["emulate"].finished.connect(self._on_emulated)
        self.channels["coverage"].finished.connect(self._on_coverage)
        self.channels["dump"].finished.connect(self._on_dump)
        self.channels["export"].finished.connect(self._on_report_built)
        self.channels["write"].finished.connect(self._on_exported)
        self.channels["findings"].finished.connect(self._on_findings)
        self.channels["trial"].finished.connect(self._on_trial)
        self.channels["advice"].finished.connect(self._on_advice)
        self._long: str | None = None

    _WHAT = {
        "emulate": "Building the int8 model",
        "coverage": "Comparing captures",
        "dump": "Comparing the Vitis dump",
        "export": "Gathering the report",
        "write": "Writing the report",
        "findings": "Diagnosing",
        "trial": "Trying the remedy",
        "advice": "Trying quantizer options",
    }

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the model-wide analysis (emulation over the capture) in the background."""
        opts = self.options.to_dict()
        if self.document.has_activations:
            self._run("emulate", emulation.emulate_job, self.document, self.quantized_path, opts)
        elif self.document.model is not None:
            self._run("emulate", emulation.rewrite_job, self.document, opts)

    def set_options(self, options: QuantizerOptions) -> None:
        """Emulate again under other quantizer options. An imported quantized.h5 is dropped: Vitis chose its
        positions and weights under the options it was run with, and mixing them with others (its positions,
        a float reference rewritten under the new options) gave figures that were neither run's."""
        if options == self.options:
            return
        self.options = options
        dropped = self.quantized_path
        self.quantized_path, self._importing = None, False
        self._drop_advice()  # measured under the old options
        self._drop_findings()  # the same: never shown while the new options are being measured
        self._drop_dump("the quantizer options changed, which drops the quantized.h5 it was compared with")
        self.start()
        if dropped:
            self.status.emit(f"Quantizer options apply to qinspect's own calibration: the positions of "
                             f"{os.path.basename(dropped)} are no longer used (File ▸ Import Vitis quantized.h5 "
                             "to use them again)")

    @property
    def refiguring(self) -> bool:
        """The model is being emulated again (other options, an import): the figures on hand are the old run's.
        Not once that run is cancelled (its thread may not have returned yet): the old run stands again."""
        return self.channels["emulate"].running and self.analysis is not None

    def shutdown(self) -> None:
        """Cancel every job of this session (a model-wide job running in the helper is killed)."""
        model_jobs_running = any(self.channels[n].busy for n in _MODEL_JOBS)
        for channel in self.channels.values():
            channel.cancel()
        if model_jobs_running:
            from qinspect.gui import compute_process

            compute_process.kill_model_helper()

    def cancel_background(self) -> None:
        """Cancel the long job shown in the status bar."""
        name = self._long  # cancelling it clears _long (its idle signal)
        if name is not None:
            again = name == "emulate" and self.analysis is not None  # a re-emulation, the old figures on hand
            self.channels[name].cancel()
            if name in _MODEL_JOBS:
                from qinspect.gui import compute_process

                compute_process.kill_model_helper()
            self.status.emit(f"{self._WHAT[name]}: cancelled")
            if again:
                self._restore_shown_run()

    def _restore_shown_run(self) -> None:
        """A cancelled re-emulation: the options (and quantized.h5) of the figures on hand stand again, and
        those figures are shown again. The window had kept "emulating again under ..." and an empty SQNR
        column for good, with options in effect that no figure was measured under."""
        options, quantized = self._shown_run
        self.options, self.quantized_path, self._importing = options, quantized, False
        self._drop_dump_made_otherwise()
        self.options_restored.emit(options)
        self._show_run_on_hand()
        self.status.emit(f"{self._WHAT['emulate']}: cancelled; the figures shown are the previous run's again "
                         f"({options.describe()})")

    def _run(self, name: str, fn, *args: Any) -> int:
        rid = self.channels[name].submit(fn, *args)  # before the busy signal: its listeners see the job running
        self._long = name  # after: submitting cancels the channel's previous job, whose idle clears _long
        self.busy.emit(self.channels[name], self._WHAT[name])
        self.status.emit(self._WHAT[name] + "…")
        return rid

    def _on_idle(self, name: str) -> None:
        if self._long == name:
            self._long = None
            # not a cancelled job whose thread has yet to return: its busy bar would stay for good
            busy = [n for n, c in self.channels.items() if c.running]
            if busy:
                self._long = busy[0]
                self.busy.emit(self.channels[busy[0]], self._WHAT[busy[0]])
            else:
                self.busy.emit(None, "")

    def _on_failed(self, name: str, exc: BaseException, tb: str) -> None:
        self.status.emit(f"{self._WHAT[name]}: failed")
        restored = False
        if name == "emulate" and self._importing:
            # the quantized.h5 did not load: later emulations (another option) use what was in use before
            self.quantized_path, self._importing = self._before_import, False
            restored = self.analysis is not None
            self._drop_dump_made_otherwise()
        bad_labels = name == "findings" and self.labels_path and self.labels_path in str(exc)
        if bad_labels:  # reported once; the diagnosis runs again without them (it failed on every later run)
            self.labels_path = None
        if name == "dump":  # the tab says so, rather than keep showing the previous dump's comparison
            from qinspect.errors import one_line

            self.dump_error = one_line(str(exc)) or type(exc).__name__
            self.dump_changed.emit()
        self.failed.emit(exc, tb, self._WHAT[name])
        if bad_labels:
            self._rediagnose()
        if restored:  # the run before the import stands again
            self.status.emit(self.analysis.summary())
            self._show_run_on_hand()

    def _show_run_on_hand(self) -> None:
        """The run on hand stands again after a failed import or a cancelled re-emulation: its figures are
        shown again (the window had kept "emulating again" and an empty SQNR column) and the findings the
        change dropped are measured again."""
        self.positions_changed.emit()
        self.results_changed.emit()
        self._rediagnose()

    # --- emulation ---------------------------------------------------------------------------------
    def _on_emulated(self, _rid: int, analysis: emulation.Analysis) -> None:
        self.analysis = analysis
        self._importing = False
        self._shown_run = (self.options, self.quantized_path)  # a later change supersedes this run: never mixed
        self._drop_findings()  # they were the previous emulation's: never shown beside the new figures
        self.placement = analysis.placement()
        self.placement_notes = analysis.placement_notes()
        self.status.emit(analysis.summary())
        self.positions_changed.emit()
        self.results_changed.emit()
        if self.document.has_activations and analysis.available:
            self._diagnose()

    def _diagnose(self) -> None:
        # the data a remedy is tried on is the data the diagnosis measured (see try_remedy)
        self._diagnosed_on = self.coverage_eval_path()
        self._run("findings", emulation.diagnose_bg_job, self.document, self.analysis, self._diagnosed_on,
                  self.labels_path, self.weighed_outputs)

    def _rediagnose(self) -> None:
        """Drop the findings (and a remedy tried on them) and diagnose again, when there is data to."""
        self._drop_findings()
        if self.analysis is not None and self.analysis.available and self.document.has_activations:
            self._diagnose()

    def _drop_findings(self) -> None:
        self._clear_trial()
        had = self.diagnosis is not None or bool(self.findings)
        self.diagnosis = None
        self.findings = []
        if had:
            self.findings_changed.emit()

    def _drop_dump(self, why: str) -> None:
        """A dump comparison (or its failure) made with a quantized.h5 or a target no longer in use goes, its
        job with it: kept, it showed codes the emulator now computes otherwise. The tab says ``why``."""
        if self.dump is None and self.dump_error is None and not self.channels["dump"].busy:
            return
        self.channels["dump"].cancel()
        self.dump, self.dump_error, self.dump_dropped, self._dump_with = None, None, why, None
        self.dump_changed.emit()

    def _drop_dump_made_otherwise(self) -> None:
        """Drop a comparison made (or being made) with another quantized.h5 or target than those in use now:
        one started while an import that then failed or was cancelled was emulating."""
        if self._dump_with is not None and self._dump_with != (self.quantized_path, self.options.narrow_activations):
            self._drop_dump(f"it was made with {os.path.basename(self._dump_with[0] or 'no quantized.h5')}, whose "
                            "import did not complete")

    def _drop_advice(self) -> None:
        if self.advice is not None or self.channels["advice"].busy:
            self.channels["advice"].cancel()
            self.advice = None
            self.advice_changed.emit()

    def set_weighed_outputs(self, outputs: list[str] | None) -> None:
        """Weigh only these output layers (None: all, pooled): the diagnosis runs again on them, and a
        remedy tried or advice measured before, on other outputs, goes."""
        if outputs is not None and self.analysis is not None and outputs == self.analysis.output_names():
            outputs = None
        if outputs == self.weighed_outputs:
            return
        self.weighed_outputs = outputs
        self._drop_advice()
        self._rediagnose()

    def load_labels(self, path: str) -> None:
        """Class labels of the measured samples (.npy): the diagnosis runs again and adds float and int8
        accuracy to the output block (a bad file is reported as the diagnosis' failure)."""
        self.labels_path = os.fspath(path)
        self._rediagnose()

    def import_quantized(self, path: str) -> None:
        """Use the graph, positions and folded weights of a Vitis quantized.h5, then re-emulate (a file that
        fails leaves the positions in use before it)."""
        if not self._importing:
            self._before_import = self.quantized_path
        self._importing = True
        self.quantized_path = os.fspath(path)
        self._drop_advice()  # measured with other positions
        self._drop_findings()
        self._drop_dump(f"{os.path.basename(self.quantized_path)} was imported since")
        self._run("emulate", emulation.emulate_job, self.document, self.quantized_path, self.options.to_dict())

    def activation_position(self, layer: str) -> tuple[int | None, str]:
        """The position the int8 model uses for a float layer's output, and where it comes from."""
        if self.analysis is None:
            return None, ""
        return self.analysis.activation_position(layer)

    def activation_code_min(self, layer: str) -> int:
        """The lowest int8 code of a float layer's output in the int8 model (-127 on a DPUCADF8H target)."""
        return self.analysis.activation_code_min(layer) if self.analysis is not None else -128

    def activation_scale(self, layer: str) -> Any:
        """The per-channel factor that turns ``layer``'s captured values into the int8 model's (cross-layer
        equalization), or None: views that set the captured values against a position apply it."""
        return self.analysis.channel_scale(layer) if self.analysis is not None else None

    def weight_positions(self, layer: str) -> tuple[dict[str, int], str]:
        """Positions of a layer's weights (short name -> position) and their source."""
        if self.analysis is None:
            return {}, ""
        return self.analysis.weight_positions(layer)

    def layer_weights(self, layer: str, read_file: bool = True) -> tuple[dict[str, Any] | None, str]:
        """A layer's weights as the int8 model quantizes them (folded, equalized) when known, else as
        stored in the file; with a note saying which. ``read_file=False`` returns None instead of
        reading the file (the caller reads it off the UI thread)."""
        if self.analysis is not None and self.analysis.available:
            weights, how = self.analysis.layer_weights(layer)
            if weights:
                return weights, how
        stored = self.document.weights(layer) if read_file else None
        return stored, "as stored in the model file (before BN folding and CLE)"

    def layer_notes(self, layer: str) -> list[str]:
        """The rewrites and constraint adjustments that touched ``layer``, in words."""
        return self.analysis.notes(layer) if self.analysis is not None else []

    def layer_result(self, layer: str) -> Any:
        """The emulator's per-layer result (isolated/accumulated ErrorStats), if computed."""
        return self.analysis.result(layer) if self.analysis is not None else None

    def metric_values(self, metric: str, accumulated: bool = True) -> dict[str, float]:
        """Per float layer, the chosen metric of the emulated output (empty before emulation, and while the
        model is emulated again: the old run's figures never show under the new run's settings)."""
        if self.analysis is None or self.refiguring:
            return {}
        out = {}
        for layer, stats in self.analysis.layer_stats(accumulated).items():
            value = metric_of(stats, metric)
            if value is not None:
                out[layer] = value
        return out

    # --- evaluation capture ------------------------------------------------------------------------
    def load_eval_capture(self, path: str) -> None:
        """Compare an evaluation capture with the calibration capture (range coverage per layer)."""
        from qinspect.gui.compare_job import coverage_job

        self._eval_path = os.fspath(path)
        self._run("coverage", coverage_job, self.document, self._eval_path, self.analysis)

    def coverage_eval_path(self) -> str | None:
        """The evaluation capture compared, if any."""
        return getattr(self, "_eval_path", None)

    def _on_coverage(self, _rid: int, coverage: Any) -> None:
        self.coverage = coverage
        self.status.emit(coverage.summary())
        self.coverage_changed.emit()
        # as `diagnose --eval`: the findings, and every remedy tried from them, are measured on what the
        # model sees in use from now on (a remedy tried on other data than its finding's contradicted it)
        if self._diagnosed_on != self.coverage_eval_path():
            if self.labels_path:  # they name the classes of the samples measured until now, not these
                self.labels_path = None
                self.status.emit(f"{coverage.summary()} · the class labels loaded were for the other samples: "
                                 "load the evaluation samples' labels (File ▸ Load class labels) for accuracy")
            self._rediagnose()

    # --- Vitis dump --------------------------------------------------------------------------------
    def import_dump(self, folder: str, inputs: str) -> None:
        """Compare a Vitis dump_results folder (made from ``inputs``) with the emulator of the imported
        quantized.h5."""
        # the quantized.h5 in use, or being imported: the run on screen may still be the one before it
        quantized = self.quantized_path
        self._dump_with = (quantized, self.options.narrow_activations)
        # the previous comparison goes at once: it is not this folder's
        self.dump, self.dump_error, self.dump_dropped = None, None, None
        self.dump_changed.emit()
        self._run("dump", emulation.dump_job, os.fspath(folder), quantized, os.fspath(inputs),
                  self.options.narrow_activations)

    def _on_dump(self, _rid: int, rows: Any) -> None:
        self.dump, self.dump_error = rows, None
        self.dump_changed.emit()
        self.status.emit(rows.summary())

    # --- findings ----------------------------------------------------------------------------------
    def _on_findings(self, _rid: int, summary: emulation.DiagnosisSummary) -> None:
        self.diagnosis = summary
        self.findings = list(summary.findings)
        n = len(self.findings)
        self.status.emit(f"{n} finding{'' if n == 1 else 's'}" if n else "No findings")
        self.findings_changed.emit()

    def output_summary(self) -> str:
        """The current emulation's output SQNR, top-1 agreement and accuracy, with what they rest on."""
        if self.refiguring:
            return f"Emulating again under {self._settings_label(pending=True)}: the figures follow when it is done"
        parts = []
        stats = self.analysis.output_stats(self.weighed_outputs) if self.analysis is not None else None
        d = self.diagnosis
        # with an evaluation capture the diagnosis (and every remedy tried) measures other samples than the
        # emulation of the capture: each figure says its samples, and the diagnosis' own output SQNR is given
        on_eval = d is not None and d.measured_on == "evaluation"
        if stats is not None:
            n = getattr(self.document.capture, "n_samples", None)
            which = self._outputs_label()
            samples = f" ({n} calibration samples)" if n and on_eval else f" ({n} samples)" if n else ""
            evaluated = (f", {d.output_sqnr_db:.1f} dB on the first {d.n_samples} evaluation samples"
                         if on_eval and d.output_sqnr_db is not None and math.isfinite(d.output_sqnr_db) else "")
            parts.append(f"Output SQNR{which} {stats.sqnr_db:.1f} dB{samples}{evaluated}"
                         + (" (an upper bound: see the tooltip)" if self._graph_note("stand_in_note") else "")
                         + (" (no run vai_q can make: uncheck Quantizer ▸ Cross-layer equalization; see the "
                            "tooltip)" if self._graph_note("quantizer_stop_note") else "")
                         + (" (no run vai_q can make on this model as it is: see the tooltip)"
                            if self._graph_note("model_stop_note") else ""))
        if d is not None and d.hidden_output_warning:
            parts.append("the pooled figures hide a worse output: see the tooltip")
        if d is not None and d.top1_agreement is not None:
            on = f"first {d.n_samples} {d.measured_on} samples"
            tied = ("; near ties: says little, see the tooltip" if d.top1_rests_on_near_ties
                    else "; ties: see the tooltip" if d.near_tie_warning else "")
            pooled = wording.pooled_top1_suffix(d.outputs)
            parts.append(f"top-1 agreement {agreement_text(d.top1_agreement)}{pooled} ({on}{tied})")
            if d.accuracy:
                folders = " (class-folder labels, see the tooltip)" if d.accuracy.get("labels") and \
                    not self.labels_path else ""
                parts.append(f"accuracy float {100 * d.accuracy['float']:.1f}%, int8 {100 * d.accuracy['int8']:.1f}%"
                             + folders)
        trial = self.trial
        if trial is not None:
            top1 = (f", top-1 {agreement_text(trial.top1_before)} → {agreement_text(trial.top1_after)}"
                    if trial.top1_before is not None and trial.top1_after is not None else "")
            on = trial.measured_on or " ".join(x for x in (str(trial.n_samples), d.measured_on if d else "",
                                                            "samples") if x)
            parts.append(f"with the remedy tried: {trial.output_before.sqnr_db:.1f} → "
                         f"{trial.output_after.sqnr_db:.1f} dB{top1} ({on})")
        if parts:
            parts.append(self._settings_label())
        return " · ".join(parts)

    def _settings_label(self, pending: bool = False) -> str:
        """What every figure on screen was computed under: a Vitis quantized.h5's positions, or the quantizer
        options (said whatever they are, so a screenshot under other options cannot pass for the defaults).
        ``pending``: what the run in progress is computed under."""
        quantized = self.quantized_path if pending else (self.analysis.quantized_path if self.analysis else None)
        if quantized:
            return f"positions of {os.path.basename(quantized)}"
        return f"batch size {self.options.calib_batch_size}, {self.options.describe()}"

    def _outputs_label(self) -> str:
        """`` (cls)`` when the figures are some outputs' only, `` (2 outputs pooled)`` for all of several."""
        if self.weighed_outputs is not None:
            return f" ({', '.join(self.weighed_outputs)})"
        n = len(self.analysis.output_names()) if self.analysis is not None else 0
        return f" ({n} outputs pooled)" if n > 1 else ""

    def _graph_note(self, which: str) -> str | None:
        """One of the emulated graph's notes (``stand_in_note``, ``quantizer_stop_note``, ``model_stop_note``);
        None before emulation or for a stand-in analysis without it."""
        note = getattr(getattr(self.analysis, "graph", None), which, None)
        return note() if callable(note) else None

    def output_caveat(self) -> str:
        """What the output figures rest on, in full (the status bar's tooltip): each output's own figures,
        the note when the pooled figures hide one, near-tied decisions."""
        d = self.diagnosis
        graph = getattr(self.analysis, "graph", None)
        lines = [f"Note: {note}." for note in (graph.caveats() if hasattr(graph, "caveats") else [])]
        if d is None:
            return "\n".join(lines)
        if d.outputs:
            lines.append(f"Each output: {wording.per_output_line(d.outputs)}.")
        if d.hidden_output_warning:
            lines.append(f"Note: {d.hidden_output_warning} (Quantizer ▸ Diagnose for output weighs one alone).")
        if d.top1_agreement is not None and d.near_tie_warning:
            lines.append(f"Note: {d.near_tie_warning}.")
        if d.accuracy:
            line = wording.accuracy_line(d.accuracy)
            lines.append(line[:1].upper() + line[1:] + ".")
        if d.labels_note:
            lines.append(f"Note: {d.labels_note}.")
        return "\n".join(lines)

    # --- Try it ------------------------------------------------------------------------------------
    def try_remedy(self, finding: Any) -> None:
        """Apply a finding's fix as a what-if on the diagnosis' data (off the UI thread)."""
        fix = getattr(finding, "fix", None)
        d = self.diagnosis
        if fix is None or d is None or not d.n_samples or self.analysis is None or not self.analysis.available:
            return
        self.trial_finding = finding
        self._run("trial", emulation.trial_bg_job, self.document, self.analysis, self._diagnosed_on,
                  fix, d.n_samples, self.weighed_outputs)

    def undo_trial(self) -> None:
        """Back to the model as quantized."""
        self.channels["trial"].cancel()
        had = self.trial is not None
        self._clear_trial()
        if had:  # the status line said "Remedy tried: ..."
            self.status.emit("Remedy undone: the model as quantized")

    def _clear_trial(self) -> None:
        had = self.trial is not None or self.trial_finding is not None
        self.trial = self.trial_finding = None
        if had:
            self.trial_changed.emit()

    def _on_trial(self, _rid: int, curves: Any) -> None:
        self.trial = curves
        self.status.emit(f"Remedy tried: output SQNR {curves.output_before.sqnr_db:.1f} → "
                         f"{curves.output_after.sqnr_db:.1f} dB")
        self.trial_changed.emit()

    # --- options advisor ---------------------------------------------------------------------------
    def run_advice(self) -> None:
        """Run the options advisor on the capture (in a process of its own; cancellable)."""
        if not self.document.has_activations:
            return
        from qinspect.gui import advice_job

        self._run("advice", advice_job.advice_job, self.document.path, self.coverage_eval_path(),
                  self.options.to_dict(), self.weighed_outputs)

    def _on_advice(self, _rid: int, result: Any) -> None:
        self.advice = result
        self.status.emit(f"Advice: {len(result.rows)} ways to quantize measured")
        self.advice_changed.emit()

    def finding_badges(self) -> dict[str, tuple[str, str]]:
        """Per layer, the badge of its worst finding (text, tooltip)."""
        badges: dict[str, tuple[str, str]] = {}
        for f in sorted(self.findings, key=lambda f: -severity(f)):
            # a group of CPU layers marks every layer it holds (another kind's affects are downstream layers
            # its cause reaches, not where it is)
            grouped = getattr(f, "affects", None) or [] if getattr(f, "kind", "") == "cpu_fallback" else []
            for layer in [getattr(f, "layer", None), *grouped]:
                if not layer or layer in badges:
                    continue
                sev = severity(f)
                mark = "⚠" if sev >= 1.0 else "•"
                what = ("gained at the output by its remedy (measured)" if getattr(f, "remedy", None) is not None
                        else "estimated cost (not measured)")
                badges[layer] = (mark, f"{wording.kind_title(getattr(f, 'kind', ''))}: {sev:.1f} dB {what}")
        return badges

    # --- export ------------------------------------------------------------------------------------
    def export_report(self, folder: str, layer: str | None) -> None:
        """Write an HTML + JSON + CSV report for the model or one layer (see qinspect.report)."""
        self._export_folder = os.fspath(folder)
        self._run("export", emulation.export_job, self.document, self.analysis, layer,
                  self.coverage_eval_path(), self.advice, self.labels_path, self.options.to_dict(),
                  self.weighed_outputs)

    def _on_report_built(self, _rid: int, report: Any) -> None:
        self._run("write", emulation.write_job, report, self._export_folder)

    def _on_exported(self, _rid: int, path: str) -> None:
        self.status.emit(f"Report written: {path}")
        self.exported.emit(str(path))


_MODEL_JOBS = ("emulate", "findings", "trial")  # jobs run in the model helper process


def metric_of(stats: Any, metric: str) -> float | None:
    """The chosen metric of an ErrorStats (None when it has seen nothing)."""
    if stats is None or not getattr(stats, "n", 0):
        return None
    value = {"sqnr": stats.sqnr_db, "mse": stats.mse, "cosine": stats.cosine}[metric]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)



def severity(finding: Any) -> float:
    """A finding's cost to the model output in dB: its remedy's measured gain, else its estimate (0 when
    unknown)."""
    value = getattr(finding, "severity_db", getattr(finding, "severity", 0.0))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def label_step(n: int, width_px: int, label_px: int = 110) -> int:
    """Show every k-th layer name on an x axis so that names of ~``label_px`` pixels never overlap."""
    fits = max(1, int(max(width_px, 200) // label_px))
    return max(1, -(-n // fits))


def set_layer_ticks(plot, names: list[str]) -> None:
    """Name the layers on a plot's x axis (every k-th, so names never overlap; a minor tick for each)."""
    from PySide6.QtGui import QFontMetrics

    axis = plot.getAxis("bottom")
    short = [name.rsplit("/", 1)[-1] for name in names]
    # The widest name, in the axis' own font, decides the spacing (batch_normalization_149 needs 150 px).
    metrics = QFontMetrics(axis.style.get("tickFont") or axis.font())
    widest = max((metrics.horizontalAdvance(s) for s in short), default=0)
    step = label_step(len(names), plot.width(), max(110, widest + 24))
    axis.setTicks([[(i, short[i]) for i in range(0, len(names), step)], [(i, "") for i in range(len(names))]])
