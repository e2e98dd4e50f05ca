"""Keep the memory numpy frees for its next arrays, instead of handing it back to the kernel at once.

glibc's malloc serves every block over its mmap threshold (128 KiB, rising to at most 32 MiB as such
blocks are freed) with a fresh ``mmap`` and unmaps it on ``free``; it also gives back the top of its heap
past 128 KiB. The emulator allocates and frees tensors of tens to hundreds of MB per layer, so each new
tensor is faulted in and zeroed by the kernel page by page: on MobileNetV2 224 (``qinspect emulate``),
about 220,000 page faults and 3 to 5 s of system time beside 9 s of user time. Kept for reuse: 29,000
faults and 1 to 2 s (``bench/bench_memory_reuse.py``). The window gains too: that zeroing streams
through the memory bus the UI thread's painting shares.

So qinspect's number-crunching processes (the command line, the window's helper processes) ask malloc
to serve large blocks from its heap (``M_MMAP_MAX`` 0) and to keep what is freed (``M_TRIM_THRESHOLD``
high). The peak stays that of the work; what is kept is at most that peak, and the long-lived helpers
give it back between jobs (:func:`return_freed_memory`). With another C library nothing changes.
"""

from __future__ import annotations

import ctypes
import threading

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_KEEP_UP_TO = 2**31 - 1  # the largest value mallopt takes (an int): free memory kept before trimming

_lock = threading.Lock()
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: not glibc
_keeping = False


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is False:
        try:
            lib = ctypes.CDLL(None)  # the symbols already in the process: its C library's among them
        except OSError:
            lib = None
        # mallopt's parameters are glibc's: musl and others have a mallopt that ignores them, or none
        ok = lib is not None and all(hasattr(lib, n) for n in ("gnu_get_libc_version", "mallopt", "malloc_trim"))
        if ok:
            lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        _libc = lib if ok else None
    return _libc


def keep_freed_memory() -> bool:
    """From now on, in this whole process, large blocks come from malloc's heap and freed ones stay
    there for the next allocation. True when the C library took both settings (glibc)."""
    global _keeping
    with _lock:
        lib = _glibc()
        if lib is not None and not _keeping:
            # Order matters: with the trim threshold alone, glibc stops raising its mmap threshold and
            # every block over 128 KiB would be mapped afresh.
            _keeping = bool(lib.mallopt(_M_MMAP_MAX, 0)) and bool(lib.mallopt(_M_TRIM_THRESHOLD, _KEEP_UP_TO))
        return _keeping


def keeping_freed_memory() -> bool:
    """True once :func:`keep_freed_memory` took effect in this process."""
    return _keeping


def return_freed_memory() -> None:
    """Give the kernel back the free memory malloc keeps (the end of a job in a long-lived helper)."""
    lib = _glibc()
    if lib is not None and _keeping:
        lib.malloc_trim(0)
