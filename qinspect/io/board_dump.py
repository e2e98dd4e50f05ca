"""The DPU runtime's board dumps (VART with ``XLNX_ENABLE_DUMP=1``), read without the runtime.

Layout (VART's ``dpu_runner_base_imp.cpp``, ``get_dump_filename``)::

    dump/<subgraph>/input/<engine>.<tensor>.bin      before the subgraph runs
    dump/<subgraph>/internal/<engine>.<tensor>.bin   after it runs (every non-output op of the subgraph)
    dump/<subgraph>/output/<engine>.<tensor>.bin     after it runs

``<engine>`` is the batch index (one file per sample). ``<subgraph>`` and ``<tensor>`` are XIR names
passed through :func:`board_name`: the compiler's ``(...)`` prefixes and suffixes removed as XIR's
``remove_xfix`` removes them, then every character outside ``[A-Za-z0-9_]`` replaced by ``_``. Each
file is the raw int8 feature map of one sample, copied out by stride into a dense HWC buffer: its size
is the tensor's H*W*C bytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.paths import data_file_size

KINDS = ("input", "internal", "output")  # VART's tensor_output_dir_ values, in the order it writes them
_FILE = re.compile(r"^(\d+)\.(.+)\.bin$")
_NOT_WORD = re.compile(r"[^A-Za-z0-9_]")
_HEAD, _TAIL = "(", ")"  # XIR's HEAD_DELIMITER / TAIL_DELIMITER


def remove_xfix(name: str) -> str:
    """XIR's ``remove_xfix``: the name without the compiler's ``(prefix)`` / ``(suffix)`` groups.

    Follows XIR's scan exactly, quirks included: groups are removed innermost first; once the stack of
    open ``(`` is empty the scan restarts *after* position 0, so a ``(`` left at the very start by an
    earlier removal stays; a ``(`` without a later ``)`` ends the scan.
    """
    s = name
    heads: list[int] = []
    first = s.find(_HEAD)
    if first >= 0:
        heads.append(first)
    while heads:
        head = heads[-1]
        tail = s.find(_TAIL, head + 1)
        if tail < 0:
            break
        nxt = s.find(_HEAD, head + 1)
        if nxt >= 0 and nxt < tail:  # a nested group opens first: handle it before this one
            heads.append(nxt)
            continue
        s = s[:head] + s[tail + 1:]
        heads.pop()
        head = heads[-1] if heads else 0
        nxt = s.find(_HEAD, head + 1)
        if nxt >= 0:
            heads.append(nxt)
    return s


def board_name(name: str) -> str:
    """A name as VART writes it into a dump path: :func:`remove_xfix`, then non-``[A-Za-z0-9_]`` -> ``_``."""
    return _NOT_WORD.sub("_", remove_xfix(name))


@dataclass
class BoardTensor:
    """One tensor of a board dump: every engine's (sample's) file of one subgraph / kind / name."""

    subgraph: str
    kind: str  # "input", "internal" or "output"
    name: str  # the normalised tensor name in the file name
    files: dict[int, str] = field(default_factory=dict)  # engine -> path

    @property
    def label(self) -> str:
        """``subgraph/kind/name``: how reports name this tensor."""
        return f"{self.subgraph}/{self.kind}/{self.name}"

    @property
    def engines(self) -> list[int]:
        """The engines (batch indices) dumped, ascending."""
        return sorted(self.files)

    @property
    def size(self) -> int:
        """Bytes per engine (the tensor's H*W*C); the sizes are checked to agree when the dump is opened."""
        return os.path.getsize(self.files[self.engines[0]])

    def path(self, engine: int) -> str:
        """The file of one engine, or where VART would have written it."""
        return self.files.get(engine) or os.path.join(self._folder(), f"{engine}.{self.name}.bin")

    def _folder(self) -> str:
        return os.path.dirname(next(iter(self.files.values())))

    def read(self, engines: list[int]) -> np.ndarray:
        """The int8 codes of the given engines, one flat row per engine."""
        return np.stack([np.fromfile(self.files[e], dtype=np.int8) for e in engines])


@dataclass
class BoardDump:
    """A VART board dump folder."""

    root: str  # the folder holding the subgraph folders
    tensors: list[BoardTensor]
    engines: int  # number of engines (samples): the highest engine index dumped, plus one
    notes: list[str] = field(default_factory=list)

    @property
    def subgraphs(self) -> list[str]:
        """Subgraph folder names, in name order."""
        return sorted({t.subgraph for t in self.tensors})

    def describe(self) -> str:
        """One line saying what was found."""
        return (f"a DPU runtime (VART) board dump: {len(self.subgraphs)} subgraph(s), {len(self.tensors)} "
                f"tensor(s), {self.engines} engine(s)")


def _has_kind_folders(folder: Path) -> bool:
    return any((folder / k).is_dir() for k in KINDS)


def board_root(path: str | os.PathLike[str]) -> Path | None:
    """The folder holding the subgraph folders if ``path`` is a board dump (``dump/``, its parent, or
    one ``dump/<subgraph>`` folder, which then stands for the whole dump)."""
    p = Path(path)
    if not p.is_dir():
        return None
    if _has_kind_folders(p) and not (p / "dump").is_dir():
        return p
    for cand in (p / "dump", p):
        if cand.is_dir():
            try:
                subs = [s for s in cand.iterdir() if s.is_dir()]
            except OSError:
                continue
            if subs and any(_has_kind_folders(s) for s in subs):
                return cand
    return None


def dump_folder_kind(path: str | os.PathLike[str]) -> str | None:
    """``"board"`` for a VART dump, ``"dump_model"`` for the quantizer's dump_results, else None."""
    if board_root(path) is not None:
        return "board"
    p = Path(path)
    if p.is_dir() and (p.name.startswith("dump_results_") or (p / "dump_results_0").is_dir()
                       or (p / "dump_results_weights").is_dir()):
        return "dump_model"
    return None


def open_board_dump(path: str | os.PathLike[str]) -> BoardDump:
    """Read a board dump's layout; :class:`QInspectError` naming the file for anything malformed.

    Every tensor must hold a file for each engine 0..B-1 (B: the highest engine dumped, plus one),
    all of the same size; a ``.bin`` file whose name is not ``<engine>.<tensor>.bin`` is an error.
    """
    root = board_root(path)
    if root is None:
        raise QInspectError("not a board dump: no dump/<subgraph>/{input,internal,output}/ folders", path)
    tensors: dict[tuple[str, str, str], BoardTensor] = {}
    subgraphs = [root] if _has_kind_folders(root) else sorted(s for s in root.iterdir() if s.is_dir())
    for sub in subgraphs:
        for kind in KINDS:
            folder = sub / kind
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.suffix != ".bin":
                    continue
                m = _FILE.match(f.name)
                if m is None:
                    raise QInspectError("not a VART dump file name (expected <engine>.<tensor>.bin)", f)
                t = tensors.setdefault((sub.name, kind, m.group(2)), BoardTensor(sub.name, kind, m.group(2)))
                t.files[int(m.group(1))] = str(f)
    if not tensors:
        raise QInspectError("the board dump holds no <engine>.<tensor>.bin files", root)
    engines = 1 + max(max(t.files) for t in tensors.values())
    for t in tensors.values():
        for e in range(engines):
            if e not in t.files:
                raise QInspectError(f"missing: the dump holds engines 0..{engines - 1} but not engine {e} of "
                                    f"tensor {t.label}", t.path(e))
        sizes = {e: data_file_size(p, "a tensor's .bin file") for e, p in t.files.items()}
        # the most common size; between equally common ones the largest, since a damaged file is most often
        # a truncated one (two engines, one cut short: the cut one is named)
        common = max(set(sizes.values()), key=lambda size: (list(sizes.values()).count(size), size))
        for e, size in sizes.items():
            if size != common:
                raise QInspectError(f"holds {size} bytes but the other engines of tensor {t.label} hold "
                                    f"{common} (truncated?)", t.files[e])
            if size == 0:
                raise QInspectError("is empty", t.files[e])
    return BoardDump(str(root), list(tensors.values()), engines)
