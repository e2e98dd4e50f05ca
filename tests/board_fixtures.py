"""Board-dump folders laid out as VART writes them, built from independent sources.

The codes come either from the quantizer's own ``dump_model`` int8 files (the shared reference cases)
or from the emulator's integer results; the names are written out by hand in the normalised form VART
produces, so the reader's name rule is checked, not reused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# small: two subgraphs, the split at pool1 (its output is the second subgraph's input). Names as
# vai_c_tensorflow2 xmodels show them (`xir subgraph` prints e.g. subgraph_quant_concatenate with input
# quant_image_input and outputs quant_conv2d_9_fix), plus other usual additions: a model-name prefix,
# a "/aquant" or "/BiasAdd" suffix.
SMALL_LAYOUT = [
    ("subgraph_quant_conv1", "input", "quant_input", "quant_input"),
    ("subgraph_quant_conv1", "internal", "functional_1_quant_conv1_BiasAdd_fix", "quant_relu1"),
    ("subgraph_quant_conv1", "output", "quant_pool1_fix", "quant_pool1"),
    ("subgraph_quant_conv2", "input", "quant_pool1_fix", "quant_pool1"),
    ("subgraph_quant_conv2", "internal", "quant_relu2_aquant", "quant_relu2"),
    ("subgraph_quant_conv2", "output", "functional_1_quant_fc_BiasAdd_0_fix", "quant_fc"),
]


def quantizer_codes(case_dir: Path, dump_file: str, samples: int) -> np.ndarray:
    """One int8 file of a refcase's ``dump_results_0``, one row per sample."""
    raw = np.fromfile(case_dir / "dump_results" / "dump_results_0" / f"{dump_file}.bin", dtype=np.int8)
    return raw.reshape(samples, -1)


def write_board(root: Path, layout: list[tuple[str, str, str, np.ndarray]]) -> Path:
    """``root/dump/<subgraph>/<kind>/<engine>.<tensor>.bin`` for each (subgraph, kind, tensor, rows)."""
    for sub, kind, name, rows in layout:
        folder = root / "dump" / sub / kind
        folder.mkdir(parents=True, exist_ok=True)
        for engine, row in enumerate(np.asarray(rows, dtype=np.int8).reshape(len(rows), -1)):
            row.tofile(folder / f"{engine}.{name}.bin")
    return root


def small_board_from_quantizer(case_dir: Path, root: Path) -> Path:
    """The small refcase's quantizer dump, re-laid out as a board dump of two subgraphs."""
    n = len(np.load(case_dir / "dump_inputs.npy"))
    return write_board(root, [(s, k, t, quantizer_codes(case_dir, f, n)) for s, k, t, f in SMALL_LAYOUT])
