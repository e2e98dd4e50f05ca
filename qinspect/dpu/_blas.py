"""Limit the BLAS library's own threads while qinspect runs its chunked kernels on worker threads.

The chunked kernels run one chunk per worker thread (numpy releases the GIL), each calling a GEMM.
If OpenBLAS also starts its own threads inside every call, the machine is oversubscribed and its
threads spin-wait on each other (badly so on a loaded machine). While the workers run we therefore
ask OpenBLAS for one thread per call, through its public ``openblas_set_num_threads`` entry point
(found in the library numpy already loaded, as threadpoolctl does), and restore the previous count
afterwards. Where no OpenBLAS is found (other BLAS, other OS) this does nothing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_NAMES = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)
_lock = threading.Lock()
_depth = 0
_saved = 0
_api: tuple | None | bool = False  # False: not looked up yet; None: not available


def _loaded_openblas() -> list[str]:
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return []
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "openblas" in line.lower()}
    return sorted(p for p in paths if p.startswith("/"))


def _lookup() -> tuple | None:
    import numpy  # noqa: F401  (make sure numpy's BLAS is loaded before looking)

    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


def available() -> bool:
    """True when the BLAS thread count can be controlled (OpenBLAS found)."""
    global _api
    with _lock:
        if _api is False:
            _api = _lookup()
        return _api is not None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Within the block, every BLAS call uses one thread (re-entrant, thread-safe)."""
    global _depth, _saved
    if not available():
        yield
        return
    setter, getter = _api  # type: ignore[misc]
    with _lock:
        if _depth == 0:
            _saved = int(getter())
            setter(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                setter(_saved)
