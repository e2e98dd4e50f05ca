"""What a dump_model comparison means as a whole, beyond its rows: the command line and the window say
the same thing from here.

A comparison can only blame the quantizer or the DPU when it compares like with like. Before any row
is read as "the board (or simulation) computes differently", three things are checked:

- the dump was made from these inputs: ``dump_model`` keeps its own float copy of every model input
  (``<input>_float.bin``), so any difference there means other inputs or another preprocessing, and
  every later row differs for that reason alone;
- the dump is of this model: files that map to no tensor of the quantized model, as many as the files
  compared, while files this model makes Vitis write are missing, are another model's dump (a few stray
  files beside a whole dump are listed, and leave it incomplete: not a match);
- the dump is complete: files Vitis writes for this model that are missing, or stray files, are said
  beside the verdict, never left out of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qinspect.dpu.dpu_graph import DpuGraph
from qinspect.errors import QInspectError

LISTED = 3  # file names given in a one-line sentence


def input_mismatch(g: DpuGraph, matches: Sequence[Any]) -> Any | None:
    """The dump's float copy of a model input that differs from the inputs given (None: they agree)."""
    for m in matches:
        if m.layer in g.inputs and m.kind == "activation" and m.dtype == "float32" and not m.ok:
            return m
    return None


def check_same_model(dump: Any, quantized: str) -> None:
    """Refuse, in one line, another model's dump: files of its own this model lacks, as many as those in
    common, while this model's are missing. Decided from the file names alone, before any file is read (a
    file of the same name but another size would otherwise be called damaged first)."""
    shared = [e for e in dump.entries if e.path is not None and e.dtype == "int8"]
    if dump.unmapped and (not shared or (dump.missing and len(dump.unmapped) >= len(shared))):
        common = (f"only {len(shared)} of its int8 files do" if shared else "no int8 file of it does")
        raise QInspectError(f"{len(dump.unmapped)} dump file(s) map to no tensor of {quantized} (first "
                            f"{dump.unmapped[0]}) and {common}: a dump of another model?", dump.root)


def check_samples(g: DpuGraph, dump: Any, n: int, inputs: str) -> None:
    """Refuse inputs with fewer samples than the dump holds: every file would otherwise read as the wrong
    size, blaming a whole dump for short inputs."""
    from qinspect.dpu.emulator import dumped_samples

    refuse_short_inputs(dumped_samples(g, dump), n, inputs)


def refuse_short_inputs(n_dump: int | None, n: int, inputs: str) -> None:
    """:func:`check_samples` on the dump's sample count already read (None: unknown, nothing to refuse)."""
    if n_dump is not None and n_dump > n:
        raise QInspectError(f"holds {n} sample(s) but the dump holds {n_dump} (its copy of the model input says "
                            "so): give the inputs the dump was made from", inputs)


def check_comparable(g: DpuGraph, dump: Any, matches: Sequence[Any], quantized: str, inputs: str) -> None:
    """Refuse, in one line, a comparison whose rows would blame the wrong thing: a dump of another model,
    or a dump made from other inputs than ``inputs``."""
    check_same_model(dump, quantized)
    bad = input_mismatch(g, matches)
    if bad is not None:
        raise QInspectError(
            f"the dump was made from other inputs than {inputs}: its copy of model input '{bad.layer}' "
            f"({bad.name}.bin) differs in {bad.total - bad.matched} of {bad.total} values (max |diff| "
            f"{bad.max_abs:.4g}), so every tensor after it would differ for that reason alone; give the inputs "
            "the dump was made from (the dump_inputs .npy saved with the Vitis run), preprocessed the same way",
            dump.root)


def incomplete(dump: Any) -> list[str]:
    """Sentences for what the dump lacks or holds beyond the model (empty when it is whole)."""
    out = [f"the dump has no {folder} folder: none of those tensors is compared"
           for folder in getattr(dump, "absent_described", ())]
    missing = [e.filename for e in dump.missing]
    if missing:
        out.append(f"{len(missing)} file(s) Vitis writes for this model are missing from the dump, first "
                   + ", ".join(missing[:LISTED]) + ": those tensors are not compared")
    if dump.unmapped:
        out.append(f"{len(dump.unmapped)} file(s) of the dump map to no tensor of the model, first "
                   + ", ".join(dump.unmapped[:LISTED]))
    return out


def weight_copy_note(matches: Sequence[Any]) -> str | None:
    """A sentence when the dump's float weights differ from the quantized model's (they are its copies), else
    None. Where the weight's int8 file matches, the float copy was changed after dump_model wrote it (as for
    activations: :func:`float_file_note`); only where the int8 file differs too did the dump come from other
    weights than this quantized.h5."""
    bad = [m for m in matches if m.kind == "weight" and m.dtype == "float32" and not m.ok]
    if not bad:
        return None
    int8_ok = {(m.layer, m.tensor) for m in matches if m.kind == "weight" and m.dtype == "int8" and m.ok}
    other = [m for m in bad if (m.layer, m.tensor) not in int8_ok]
    first = other[0] if other else bad[0]
    why = ("the dump came from other weights than this quantized.h5" if other else
           "its int8 file matches, so the float copy was changed after dump_model wrote it"
           + ("" if len(bad) == 1 else " (and so for every one of them)"))
    return (f"{len(bad)} float weight file(s) of the dump differ from the quantized model's own weights (first "
            f"{first.name}, {first.total - first.matched} of {first.total} values): {why}")


def float_file_note(g: DpuGraph, matches: Sequence[Any]) -> str | None:
    """A sentence when informative float files of activations differ from the emulator's (None when they
    agree, as in every real run checked). They do not decide the verdict (the int8 files do), but they are
    dump_model's own dequantized copies: a difference means the dump is inconsistent, or, for a float layer
    at the model's output, that the answer the user sees differs."""
    bad = [m for m in matches if m.kind == "activation" and m.dtype == "float32" and not m.gating and not m.ok
           and m.layer not in g.inputs]
    if not bad:
        return None
    int8_ok = {(m.layer, m.tensor) for m in matches if m.dtype == "int8" and m.ok}
    first = bad[0]
    why = ("its int8 file matches, so the float copy was changed after dump_model wrote it"
           if (first.layer, first.tensor) in int8_ok else "the int8 files decide the verdict")
    outputs = [m.name for m in bad if m.layer in g.outputs]
    return (f"{len(bad)} float file(s) of the dump differ from the emulator (first {first.name}: "
            f"{first.total - first.matched} of {first.total} values, max {first.difference})"
            + (f", among them the model output {outputs[0]}" if outputs else "") + f": {why}")


def dump_inputs(path: str, g: DpuGraph) -> tuple[dict[str, np.ndarray], int, list[str]]:
    """The inputs a dump was made from (.npy / .npz, read as every command reads inputs): ``({input name:
    array}, samples, what reading said)``; NaN or Inf refused in one line (they would read as "the dump was
    made from other inputs")."""
    from qinspect.dpu.checks import finite_batches
    from qinspect.io.inputs import open_inputs

    shapes = {name: (list(g[name].output_shape[1:]) if g[name].output_shape else None) for name in g.inputs}
    source = open_inputs(path, shapes)
    arrays = source.batch(0, source.n_samples)
    if len(arrays) == 1 and len(g.inputs) == 1:
        arrays = {g.inputs[0]: next(iter(arrays.values()))}
    arrays = next(finite_batches(iter([arrays]), path))
    return arrays, source.n_samples, [*source.warnings, *source.notes]
