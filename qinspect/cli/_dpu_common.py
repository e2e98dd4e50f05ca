"""Helpers shared by the emulator's sub-commands (calibrate, emulate, compare-dump)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Any

from qinspect.errors import QInspectError


def input_shapes(graph: Any) -> dict[str, list[int | None]]:
    """``{input name: shape without the batch axis}`` of an emulator graph."""
    out = {}
    for name in graph.inputs:
        shape = graph[name].output_shape
        out[name] = list(shape[1:]) if shape else None
    return out


def open_data(path: str, graph: Any, samples: int | None = None, preprocess: str | None = None,
              quiet: bool = False) -> Any:
    """An input source for ``--inputs`` (.npy / .npz, or an image folder with ``--preprocess``); what reading
    does to the data (skipped files, resizes, the order of class folders) is said on stderr, as capture says it
    (``quiet``: not again, for a second opening)."""
    from qinspect.io.inputs import open_inputs

    source = open_inputs(path, input_shapes(graph), samples=samples, preprocess=preprocess)
    if quiet:
        return source
    for warning in source.warnings:
        print(f"qinspect: warning: {warning}", file=sys.stderr)
    for note in source.notes:
        print(f"qinspect: note: {note}", file=sys.stderr)
    return source


def json_safe(obj: Any) -> Any:
    """Non-finite floats as strings so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype"):
        return json_safe(obj.item())
    return obj


def print_json(obj: Any) -> None:
    """Strict JSON on stdout."""
    json.dump(json_safe(obj), sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON beside the destination, then rename: nothing half-written."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".qinspect-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(json_safe(obj), fh, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def is_vitis_quantized(path: str) -> bool:
    """True for an HDF5 file holding a Vitis quantized model."""
    try:
        with open(path, "rb") as fh:
            if not fh.read(8).startswith(b"\x89HDF"):
                return False
    except OSError:
        return False
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                return False
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return "Vitis>QuantizeWrapper" in text or "Vitis>VitisQuantize" in text
    except OSError as exc:
        # an HDF5 signature that h5py cannot open: a truncated or damaged file, not "another kind of model"
        from qinspect.errors import QInspectError
        from qinspect.io.capture_file import unreadable_hdf5_message

        raise QInspectError(unreadable_hdf5_message(path, exc), path) from None


def require_file(path: str, what: str = "a file argument") -> None:
    """One-line error for a missing path (or an empty name: ``--inputs ''``); ``what`` names the argument."""
    if not path:
        raise QInspectError(f"{what} is an empty file name")
    if not os.path.exists(path):
        raise QInspectError("no such file or folder", path)
    from qinspect.io.paths import check_not_special

    check_not_special(path)


# ------------------------------------------------------------------ arguments shared by the commands

POSITIONS_HELP = "take positions (and, from a quantized.h5, the folded weights) from here"


def add_positions_arg(parser: argparse.ArgumentParser, help: str = POSITIONS_HELP, dest: str | None = None) -> None:
    """``--positions QUANTIZED.h5|POSITIONS.json``."""
    kwargs = {"dest": dest} if dest else {}
    parser.add_argument("--positions", metavar="QUANTIZED.h5|POSITIONS.json", help=help, **kwargs)


def add_data_args(parser: argparse.ArgumentParser, inputs_help: str | None, batch_help: str,
                  samples_help: str = "use only the first N samples", samples_default: int | None = None,
                  inputs_metavar: str = "X") -> None:
    """``--inputs`` (when ``inputs_help`` is given), ``--batch-size``, ``--no-cle`` and ``--samples``: the
    calibration and emulation data options of calibrate, emulate, diagnose and report."""
    if inputs_help is not None:
        parser.add_argument("--inputs", metavar=inputs_metavar, help=inputs_help + "; or a folder of images "
                            "with --preprocess")
        add_preprocess_arg(parser)
    parser.add_argument("--batch-size", type=int, default=32, metavar="B", help=batch_help)
    add_quantizer_option_args(parser)
    parser.add_argument("--samples", type=int, default=samples_default, metavar="N", help=samples_help)


OUTPUTS_HELP = ("a model with several outputs: weigh only these (comma-separated output layer names); "
                "every figure, sensitivity and remedy is then measured on them (default: all, pooled by "
                "signal power)")


def db_threshold(text: str) -> float:
    """A --fail-below value: a number of dB (inf and -inf too); NaN is no threshold (every figure would fail it
    with "37.32 dB is below nan dB")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of dB: {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"not a number of dB: {text!r} (NaN fails every figure)")
    return value


def add_fail_below_arg(parser: argparse.ArgumentParser) -> None:
    """``--fail-below DB``: a quality gate for CI scripts."""
    parser.add_argument("--fail-below", type=db_threshold, metavar="DB",
                        help="exit 1 when the int8 model's output SQNR is below DB (a gate for CI; an undefined "
                             "or -inf SQNR fails too); the output is printed as usual first")


def quality_gate(sqnr_db: float | None, limit: float | None, meaningless: str | None = None) -> int:
    """0, or 1 with one line on stderr, for ``--fail-below``: the output SQNR must be a number at or
    above ``limit`` (+inf, an exact output, passes; NaN, -inf and no figure at all fail). ``meaningless``:
    why the figure measures nothing (a dead or constant float output): it fails too, saying so."""
    if limit is None:
        return 0
    if meaningless:
        print(f"qinspect: --fail-below {limit:g} dB: no output SQNR to pass: {meaningless}", file=sys.stderr)
        return 1
    value = math.nan if sqnr_db is None else float(sqnr_db)
    if value >= limit:
        return 0
    shown = "no figure" if sqnr_db is None else f"{value:.2f} dB"
    print(f"qinspect: output SQNR {shown} is below --fail-below {limit:g} dB", file=sys.stderr)
    return 1


def add_outputs_arg(parser: argparse.ArgumentParser) -> None:
    """``--outputs NAMES``: the model outputs a diagnosis weighs."""
    parser.add_argument("--outputs", metavar="NAMES", help=OUTPUTS_HELP)


def chosen_outputs(graph: Any, names: str | None, model_path: str) -> list[str] | None:
    """The ``--outputs`` names as output node names (None: all); one-line error naming the model's outputs."""
    from qinspect.analysis.outputs import resolve_outputs

    return None if names is None else resolve_outputs(graph, names.split(","), model_path)


def add_quantizer_option_args(parser: argparse.ArgumentParser) -> None:
    """The vai_q_tensorflow2 options that change pof2s results (besides ``--batch-size``), named like its
    keywords: ``--no-cle`` (include_cle=False), ``--cle-steps``, ``--cle-to-relu6``, ``--convert-relu6-to-relu``.
    Give the ones the model was quantized with: they change the folded weights, the graph and the positions."""
    parser.add_argument("--no-cle", action="store_true", help="without cross-layer equalization (include_cle=False)")
    parser.add_argument("--cle-steps", type=int, default=10, metavar="N",
                        help="cross-layer equalization steps (the quantizer's cle_steps; default 10)")
    parser.add_argument("--cle-to-relu6", action="store_true",
                        help="equalize across ReLU6 too (the quantizer's cle_to_relu6; changes the function)")
    parser.add_argument("--convert-relu6-to-relu", action="store_true",
                        help="ReLU6 layers become ReLU (the quantizer's convert_relu6_to_relu; changes the function)")
    add_target_arg(parser)


def add_target_arg(parser: argparse.ArgumentParser) -> None:
    """``--target DPU``: the DPU family, where it changes the arithmetic (DPUCADF8H: activations in [-127, 127])."""
    from qinspect.dpu.options import TARGETS

    parser.add_argument("--target", choices=TARGETS, metavar="DPU",
                        help="the DPU family the model runs on: DPUCADF8H's activations are int8 in [-127, 127] "
                             "(positions chosen for that range, codes held at -127; only the range is modelled, "
                             "not which operators it runs); the others "
                             f"({', '.join(t for t in TARGETS if t != 'DPUCADF8H')}) use [-128, 127], "
                             "the default")


MAX_CLE_STEPS = 1000


def quantizer_options(args: argparse.Namespace) -> Any:
    """The :class:`~qinspect.dpu.options.QuantizerOptions` the command's flags say (one-line error when
    a count is below 1)."""
    from qinspect.dpu.options import QuantizerOptions

    check_counts(args, "--cle-steps")
    steps = getattr(args, "cle_steps", None)
    if steps is not None and steps > MAX_CLE_STEPS:
        # each step walks every equalized pair; a huge count was a hang, not a better equalization
        raise QInspectError(f"--cle-steps must be at most {MAX_CLE_STEPS} (got {steps}): cross-layer equalization "
                            "settles within a few dozen steps")
    return QuantizerOptions(
        include_cle=not getattr(args, "no_cle", False),
        cle_steps=int(getattr(args, "cle_steps", 10)),
        cle_to_relu6=bool(getattr(args, "cle_to_relu6", False)),
        convert_relu6_to_relu=bool(getattr(args, "convert_relu6_to_relu", False)),
        calib_batch_size=int(getattr(args, "batch_size", 32) or 32),
        target=getattr(args, "target", None) or "",
    )


def calibrated_here(on: Any, args: argparse.Namespace) -> str:
    """Where positions calibrated by the command come from: ``on`` (a file or a sample count), the batch
    size, and the quantizer options when they are not the defaults (a DPUCADF8H target, CLE off)."""
    options = quantizer_options(args).describe()
    return f"calibrated here on {on}, batch size {args.batch_size}" + (
        f", {options}" if options != "default options" else "")


def add_preprocess_arg(parser: argparse.ArgumentParser) -> None:
    """``--preprocess 0..255|0..1|-1..1|caffe`` for image folders (and .npy / .npz values when given)."""
    from qinspect.io.inputs import PREPROCESS

    parser.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        help="scale image pixels: 0..255 (unscaled, for models with their own Rescaling), 0..1 (x/255), "
        "-1..1 ((x/255-0.5)*2), caffe (BGR minus ImageNet mean); "
        "also applies to .npy/.npz values when given",
    )


def check_counts(args: argparse.Namespace, *flags: str) -> None:
    """One-line error for a count option below 1 (``--batch-size``, ``--samples``, ...); None is allowed."""
    for flag in ("--batch-size", "--samples", *flags):
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None and value < 1:
            raise QInspectError(f"{flag} must be at least 1 (got {value})")


# ------------------------------------------------------------------ sources, positions, data

def open_positions_emulator(source: Any, args: argparse.Namespace) -> tuple[Any, str]:
    """The emulator for ``source`` and where its positions come from (``""``: still to calibrate).

    A quantized.h5 given as ``args.positions`` brings its graph, positions and folded weights, and the
    float reference is ``source`` rewritten under the quantizer options of ``args``; a positions JSON is
    loaded into the graph rewritten from ``source`` under those options and must cover every quantizer of it.
    """
    from qinspect.dpu.emulator import Emulator

    positions = getattr(args, "positions", None)
    if positions is not None:
        require_file(positions, "--positions")
        if os.path.isdir(positions):
            raise QInspectError("is a folder; --positions needs a quantized.h5 or a positions JSON file", positions)
        if is_vitis_quantized(positions):
            options = quantizer_options(args)
            emu = Emulator.from_quantized(positions, narrow_activations=options.narrow_activations)
            check_quantized_matches(emu, source, positions)
            # The emulated graph is the quantized model's own; errors are measured against the float model.
            emu.use_float_reference(_WeightsOnly(source), options)
            return emu, f"{positions} (quantized model: its graph, positions and folded weights)"
    # Emulator.from_model calibrates on a capture source by itself; the commands calibrate once, on the
    # data they were asked to use (--inputs, --samples), or not at all when positions are given.
    emu = Emulator.from_model(_WeightsOnly(source), None, options=quantizer_options(args))
    if positions is None:
        return emu, ""
    load_positions_file(emu, positions)
    return emu, f"{positions} (positions file)"


class _WeightsOnly:
    """A model source's graph and weights, without the calibration data a capture also holds."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.graph = source.graph
        self.path = getattr(source, "path", "")
        self.kind = "weights-of-" + str(getattr(source, "kind", "") or "model")

    def weights(self, layer: str) -> Any:
        """The arrays of one layer, from the wrapped source."""
        return self._source.weights(layer)


def load_positions_file(emu: Any, positions: str) -> None:
    """Load a positions JSON into ``emu``; one-line error when it is not one, or misses quantizers."""
    from qinspect.io.capture_file import is_capture

    if is_capture(positions):
        raise QInspectError("is a qinspect capture, not positions: --positions needs a Vitis quantized.h5 or a "
                            "positions JSON (calibrate --json, or a Vitis run's positions.json)", positions)
    with open(positions, "rb") as fh:
        if fh.read(8).startswith(b"\x89HDF"):
            raise QInspectError("is an HDF5 file but not a Vitis quantized model: --positions needs a quantized.h5 "
                                "or a positions JSON", positions)
    from qinspect.io.vitis import read_positions_json

    read = read_positions_json(positions)
    missing = emu.load_positions(read)  # refuses positions recorded under other weight options
    table = read.table
    if missing:
        known = {slot[0] for slot in emu.graph.slots}
        if not known & set(table):
            names = ", ".join(sorted(table)[:3]) or "none"
            raise QInspectError(f"names no layer of this model (it has {names}{', ...' if len(table) > 3 else ''}; "
                                f"the model has {missing[0].split(':')[0]}, ...): positions of another model?",
                                positions)
        raise QInspectError(f"gives no position for {len(missing)} tensor(s) of the model, first "
                            f"{missing[0]}", positions)


def check_quantized_matches(emu: Any, source: Any, positions: str) -> None:
    """Refuse a quantized.h5 made from another model: every float layer its weighted nodes come from
    must be a layer of ``source``."""
    from qinspect.report.layer_map import refuse_foreign

    graph = getattr(source, "graph", None)
    if graph is None:
        return
    refuse_foreign([layer.name for layer in graph.leaves()], emu.graph, getattr(source, "path", "the model"),
                   positions)


def check_layers(emu: Any, layers: list[str] | None, model_path: str) -> list[str] | None:
    """The ``--layer`` names to run, each with the activation fused into it (``Conv2D(...,
    activation="relu")`` is a conv node and a relu node holding its output position); one-line error
    for a name that is neither a layer of the model nor an emulator node."""
    import difflib

    graph = emu.graph
    if layers is None:
        return None
    out: list[str] = []
    for name in layers:
        # every node built from the float layer (a conv and the activation split out of it), else the node
        nodes = [n for n in graph.nodes if name in (getattr(n, "origin", None) or [])]
        if not nodes:
            node = graph[name] if name in graph else emu.node_for(name)
            if node is None and f"quant_{name}" in graph:
                node = graph[f"quant_{name}"]
            nodes = [] if node is None else [node]
        for node in nodes:
            act = graph.fused_activation(node)
            for n in (node, act):
                if n is not None and n.name not in out:
                    out.append(n.name)
        if nodes:
            continue
        candidates = sorted({o for n in graph.nodes for o in (getattr(n, "origin", None) or [])}
                            | {n.name for n in graph.nodes})
        close = difflib.get_close_matches(name, candidates, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise QInspectError(f"no layer named {name!r} in the model{hint}", model_path)
    return out


def data_source(inputs: str | None, emu: Any, source: Any, model_path: str, samples: int | None = None,
                need: str = "needs --inputs (a .npy / .npz of preprocessed samples) or a capture",
                preprocess: str | None = None, every_sample: bool = False, quiet: bool = False) -> Any:
    """The samples to calibrate or emulate on: ``--inputs`` when given, else a capture's own inputs.

    ``every_sample``: a capture that keeps full tensors for fewer samples than it was fed gives the
    inputs of all of them (``/all_inputs``), unless the graph needs captured outputs as stand-ins for
    layers without an implementation, which exist for the kept samples only.
    """
    from qinspect.cli._sources import is_capture_source
    from qinspect.io.inputs import fewer_samples

    if inputs is not None:
        from qinspect.io.capture_file import is_capture

        require_file(inputs, "--inputs")
        if is_capture(inputs):
            raise QInspectError("is a qinspect capture: give it as MODEL_OR_CAPTURE (its inputs are used), "
                                "--inputs takes a .npy / .npz", inputs)
        return open_data(inputs, emu.graph, samples, preprocess, quiet)
    if source is not None and is_capture_source(source):
        capture = getattr(source, "capture", source)
        every = every_sample and every_input_usable(emu, capture)
        held = int(capture.n_total_samples) if every else source_samples(source)
        if samples is not None and samples > held and not quiet:
            # as an .npy says it: the figures rest on fewer samples than the command line asked for
            warning = fewer_samples(getattr(capture, "path", model_path), samples, held,
                                    kept=held < int(capture.n_total_samples))
            print(f"qinspect: warning: {warning}", file=sys.stderr)
        if every:
            return FirstSamples(capture, capture.n_total_samples if samples is None else samples, every=True)
        if samples is not None and samples < held:
            return FirstSamples(capture, samples)
        return source
    raise QInspectError(need, model_path)


def samples_total(source: Any, inputs: str | None, used: int | None) -> int | None:
    """Every sample the data came from: a capture's ``n_total_samples`` (more than it keeps when it holds a
    kept subset), else ``used`` (``--inputs`` given, or nothing known)."""
    if inputs is not None or source is None:
        return used
    capture = getattr(source, "capture", source)
    return int(getattr(capture, "n_total_samples", getattr(capture, "n_samples", used or 0)))


def source_samples(source: Any) -> int:
    """Samples held by a capture (opened by ``open_any`` or as a Capture)."""
    return int(getattr(source, "capture", source).n_samples)


def every_input_usable(emu: Any, capture: Any) -> bool:
    """True when a capture keeps fewer samples than it fed and the emulator can run on its inputs alone
    (no layer needs a captured output as a stand-in)."""
    from qinspect.dpu.emulator import captured_stand_ins

    if getattr(capture, "n_total_samples", 0) <= capture.n_samples:
        return False
    return not captured_stand_ins(emu.graph, capture, slice(0, 1))


class FirstSamples:
    """The first ``n`` samples of a capture's inputs (``--samples``), read as the emulator reads a capture.

    ``every``: of every sample fed (``Capture.all_inputs``), not only the kept ones; then it has no
    activations, so the emulator takes it as plain inputs."""

    def __init__(self, capture: Any, n: int, every: bool = False) -> None:
        self._capture = capture
        self._read = capture.all_inputs if every else capture.inputs
        self.path = getattr(capture, "path", "")
        self.n_samples = min(int(n), int(capture.n_total_samples if every else capture.n_samples))

    @property
    def class_labels(self) -> Any:
        """The capture's class-folder labels (its first samples are these samples), or None."""
        return getattr(self._capture, "class_labels", None)

    def inputs(self, name: str | None = None, samples: Any = None) -> Any:
        """Inputs of the kept samples (``samples``: a slice within them; default all of them)."""
        if samples is None:
            samples = slice(0, self.n_samples)
        elif isinstance(samples, slice):
            start, stop, step = samples.indices(self.n_samples)
            samples = slice(start, stop, step)
        return self._read(name, samples)
