"""What a dump_model comparison means as a whole, beyond its rows: the command line and the window say
the same thing from here.

A comparison can only blame the quantizer or the DPU when it compares like with like. Before any row
is read as "the board (or simulation) computes differently", three things are checked:

- the dump was made from these inputs: ``dump_model`` keeps its own float copy of every model input
  (``<input>_float.bin``), so any difference there means other inputs or another preprocessing, and
  every later row differs for that reason alone;
- the dump is of this model: files that map to no tensor of the quantized model, as many as the files
  compared, while files this model makes Vitis write are missing, are another model's dump (stray files
  beside a whole dump are only listed);
- the dump is complete: files Vitis writes for this model that are missing, or stray files, are said
  beside the verdict, never left out of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qinspect.dpu.dpu_graph import DpuGraph
from qinspect.errors import QInspectError

LISTED = 3  # file names given in a one-line sentence


def input_mismatch(g: DpuGraph, matches: Sequence[Any]) -> Any | None:
    """The dump's float copy of a model input that differs from the inputs given (None: they agree)."""
    for m in matches:
        if m.layer in g.inputs and m.kind == "activation" and m.dtype == "float32" and not m.ok:
            return m
    return None


def check_comparable(g: DpuGraph, dump: Any, matches: Sequence[Any], quantized: str, inputs: str) -> None:
    """Refuse, in one line, a comparison whose rows would blame the wrong thing: a dump of another model,
    or a dump made from other inputs than ``inputs``."""
    gating = [m for m in matches if m.gating]
    # another model's: files of its own this model lacks, as many as those in common, and this model's missing
    if dump.unmapped and (not gating or (dump.missing and len(dump.unmapped) >= len(gating))):
        shared = (f"only {len(gating)} of its files do" if gating else "no file of it does")
        raise QInspectError(f"{len(dump.unmapped)} dump file(s) map to no tensor of {quantized} (first "
                            f"{dump.unmapped[0]}) and {shared}: a dump of another model?", dump.root)
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
    out = []
    missing = [e.filename for e in dump.missing]
    if missing:
        out.append(f"{len(missing)} file(s) Vitis writes for this model are missing from the dump, first "
                   + ", ".join(missing[:LISTED]) + ": those tensors are not compared")
    if dump.unmapped:
        out.append(f"{len(dump.unmapped)} file(s) of the dump map to no tensor of the model, first "
                   + ", ".join(dump.unmapped[:LISTED]))
    return out


def weight_copy_note(matches: Sequence[Any]) -> str | None:
    """A sentence when the dump's float weights differ from the quantized model's (they are its copies, so
    the dump came from other weights), else None."""
    bad = [m for m in matches if m.kind == "weight" and m.dtype == "float32" and not m.ok]
    if not bad:
        return None
    return (f"{len(bad)} float weight file(s) of the dump differ from the quantized model's own weights (first "
            f"{bad[0].name}, {bad[0].total - bad[0].matched} of {bad[0].total} values): the dump came from "
            "other weights than this quantized.h5")
