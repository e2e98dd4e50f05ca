"""Shared convolution machinery for the integer and the float kernels (numpy only).

Padding follows TensorFlow exactly: ``'same'`` pads ``total = max((out - 1) * s + k_eff - in, 0)`` with
``before = total // 2`` and the rest after; ``'valid'`` pads nothing.

Speed: numpy has no integer BLAS, so integer products are computed by float32 GEMM. int8 codes are in
[-128, 127], so one product is at most 128 * 128 = 2^14 in magnitude and a sum of K <= 1024 of them
is at most 2^24: every partial sum is an integer of magnitude <= 2^24, which float32 represents
exactly. Larger K is split into chunks of <= 1024 whose (exact) sums are added in float64, exact up
to 2^53. :func:`gemm_exact` and :func:`conv_acc` implement that rule; they are also used with float32
data (then they are ordinary float32 kernels).

Further exact shortcuts, each taken only where a bound computed from the weights (and, for the
depthwise int16 groups, the input's largest code) proves every float32 / int16 partial sum exact:
the output stage's per-channel offset riding inside the GEMM (:func:`_foldable`), Winograd F(2x2, 3x3)
for stride-1 3x3 kernels (:func:`_wino2d_exact`) and F(2, 3) along the rows (:func:`_wino_exact`),
and int16 products and tap-group sums in the depthwise kernel (:func:`_int16_tap_groups`). Each has a
module switch (``_FOLD``, ``_WINOGRAD``, ``_DW_INT16``) that tests use to compare with the plain path.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np

from qinspect.dpu._blas import single_threaded_blas

# Largest K whose int8 x int8 dot products stay exact in float32: 1024 * 2^14 = 2^24.
EXACT_K32 = 1024
# Target size of one temporary patch buffer (bytes): bounds memory whatever the batch size. 2 MB keeps
# a chunk's GEMM result in L2 for its output stage (faster than 4 MB on MobileNetV2's 1x1 convs).
_CHUNK_BYTES = 2 * 1024 * 1024
# The F(2x2, 3x3) path's 16 GEMMs per chunk are narrow (K = cin): it takes chunks this many times larger.
_W2D_CHUNK_FACTOR = 4


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def pads_1d(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int, int]:
    """(pad_before, pad_after, out_size) along one axis, as TensorFlow computes them."""
    k_eff = (k - 1) * d + 1
    p = padding.lower()
    if p == "valid":
        out = (size - k_eff) // s + 1 if size >= k_eff else 0
        return 0, 0, max(out, 0)
    if p == "same":
        out = -(-size // s)
        total = max((out - 1) * s + k_eff - size, 0)
        return total // 2, total - total // 2, out
    raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


def transpose_1d(size: int, k: int, s: int, d: int, padding: str, output_padding: int | None) -> tuple[int, int]:
    """(out_size, crop_before) of a transposed convolution along one axis, as Keras sizes it and
    TensorFlow's conv2d_transpose places it: input pixel ``i`` tap ``a`` lands on the full output
    ``i * s + a * d`` (length ``(size - 1) * s + k_eff``); the layer keeps ``out_size`` values of it from
    ``crop_before`` on (positions past the full length, from ``output_padding``, get only the bias)."""
    k_eff = (k - 1) * d + 1
    p = padding.lower()
    if p not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if output_padding is None:
        out = size * s + max(k_eff - s, 0) if p == "valid" else size * s
    else:
        out = (size - 1) * s + k_eff - 2 * (k_eff // 2 if p == "same" else 0) + int(output_padding)
    # TensorFlow pads the forward convolution of an input of length ``out`` (SAME) or not at all (VALID)
    crop = max((size - 1) * s + k_eff - out, 0) // 2 if p == "same" else 0
    return out, crop


def pad_nhwc(x: np.ndarray, ph: tuple[int, int], pw: tuple[int, int], value: float = 0) -> np.ndarray:
    """Pad H and W of an NHWC array (no copy when there is nothing to pad)."""
    if ph == (0, 0) and pw == (0, 0):
        return x
    return np.pad(x, ((0, 0), ph, pw, (0, 0)), mode="constant", constant_values=value)


def l1_bound(w2d: np.ndarray) -> int:
    """A bound on every partial sum of ``x @ w2d`` for int8 codes ``x``: ``128 * max_j sum_k |w_kj|``.

    |sum over any subset of k of x_k w_kj| <= max|x| * sum_k |w_kj|. When this is <= 2^24, float32
    sums are exact for any K and any summation order (real weights are mostly small, so this holds for
    far wider layers than the static K <= 1024 rule).
    """
    w = np.asarray(w2d).reshape(-1, np.asarray(w2d).shape[-1])
    return 128 * int(np.abs(w.astype(np.int64)).sum(axis=0).max()) if w.size else 0


def gemm_exact(a: np.ndarray, b: np.ndarray, f32_exact: bool | None = None) -> np.ndarray:
    """``a @ b`` for float32 matrices holding integers of magnitude <= 128, exactly.

    ``f32_exact`` (default: K <= 1024) says one float32 GEMM is exact: every partial sum is an integer
    <= 2^24 (K <= 1024 terms of <= 2^14, or :func:`l1_bound` <= 2^24). Otherwise K is cut into chunks of
    <= 1024 and the exact float32 chunk sums are added in float64 (exact below 2^53).
    Returns float32 in the first case, float64 in the second.
    """
    k = a.shape[-1]
    if f32_exact is None:
        f32_exact = k <= EXACT_K32
    if f32_exact or k <= EXACT_K32:
        return a @ b
    out = np.zeros(a.shape[:-1] + (b.shape[-1],), dtype=np.float64)
    for k0 in range(0, k, EXACT_K32):
        out += a[..., k0 : k0 + EXACT_K32] @ b[k0 : k0 + EXACT_K32]
    return out


@dataclass(frozen=True)
class Epilogue:
    """An output stage fused into the chunked kernels: per chunk, ``finish(acc * scale + offset, dst)``
    writes the chunk's final values into ``dst`` (a view of the output array; ``acc`` is scratch that
    ``finish`` may overwrite).

    ``scale`` must be a power of two (it is folded into the weights, which keeps integer sums exact),
    ``offset`` is per output channel (added while the partial sums are combined), ``dtype`` the float
    type the stage needs for exactness (float32 or float64), ``out_dtype`` the result's type.
    ``offset_bound`` bounds ``|offset| / scale`` (the offset in accumulator units) and ``acc_bound``
    the accumulator: a kernel that combines partial sums differently (Winograd) checks them.
    """

    finish: Callable[[np.ndarray, np.ndarray], None]
    scale: float = 1.0
    offset: np.ndarray | None = None
    dtype: type = np.float32
    out_dtype: type = np.int8
    offset_bound: float = 0.0


def _store(t: np.ndarray, dst: np.ndarray) -> None:
    dst[...] = t


def _as_epilogue(epilogue: Epilogue | None, acc_dtype: type) -> Epilogue:
    if epilogue is None:
        return Epilogue(finish=_store, dtype=acc_dtype, out_dtype=acc_dtype)
    return epilogue


def _wider(a: type, b: type) -> type:
    return np.float64 if np.float64 in (a, b) else np.float32


def _foldable(ep: Epilogue, acc_dtype: type, acc_bound: int | None) -> bool:
    """Whether the epilogue's per-channel offset may ride inside a float32 GEMM (a K column of ones
    times a row holding the offset) instead of costing a pass of its own.

    Exact when, in accumulator units (the offset divided by the power-of-two ``scale``), the offset is
    an integer and ``acc_bound + |offset| < 2^24``: every partial sum of the GEMM, in any order, is
    then an integer below 2^24 (times the scale), which float32 holds exactly.
    """
    if not _FOLD or ep.offset is None or acc_dtype != np.float32 or ep.dtype != np.float32 or acc_bound is None:
        return False
    units = np.asarray(ep.offset, dtype=np.float64) / ep.scale
    if not np.array_equal(units, np.rint(units)):
        return False
    return acc_bound + float(np.abs(units).max(initial=0.0)) < 2**24


def _with_offset_row(w2: np.ndarray, offset: np.ndarray | None, width: int | None = None) -> np.ndarray:
    """``w2`` (K, N) as float32, with one more row holding ``offset`` in its first ``width`` columns
    (the others 0) when an offset is folded into the GEMM."""
    w2 = np.asarray(w2, dtype=np.float32)
    if offset is None:
        return np.ascontiguousarray(w2)
    row = np.zeros((1, w2.shape[1]), dtype=np.float32)
    row[0, : width or w2.shape[1]] = offset
    return np.concatenate([w2, row])


_PREP: dict[tuple, tuple[weakref.ref, object]] = {}
_PREP_MAX = 1024


def _cached(src: np.ndarray, tag: tuple, make: Callable[[], object]) -> object:
    """``make()``, remembered per read-only weight array ``src`` and ``tag`` (what is derived and how).

    Only arrays that cannot change are remembered: ``src`` and the array owning its memory must be
    read-only (the executor marks its cached weight codes so). The entry holds a weak reference to
    that owner and is used only while the very same object is alive, so a recycled ``id`` never
    matches. Derived arrays are returned read-only.
    """
    if not isinstance(src, np.ndarray) or src.flags.writeable:
        return make()
    root = src
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root.flags.writeable:
        return make()
    key = (id(root), src.__array_interface__["data"][0], src.shape, src.strides, src.dtype.str, tag)
    hit = _PREP.get(key)
    if hit is not None and hit[0]() is root:
        return hit[1]
    val = make()
    if isinstance(val, np.ndarray):
        val.flags.writeable = False
    if len(_PREP) >= _PREP_MAX:
        _PREP.clear()
    # the entry goes when its weights do (the callback holds the key, not the array)
    _PREP[key] = (weakref.ref(root, lambda _ref, key=key: _PREP.pop(key, None)), val)
    return val


def _offset_key(ep: Epilogue, fold: bool) -> tuple:
    return (ep.scale, ep.offset.dtype.str, ep.offset.tobytes()) if fold and ep.offset is not None else (ep.scale,)


def _view(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` reshaped as a view (raises instead of silently copying, so writes reach ``a``)."""
    v = a.view()
    v.shape = shape
    return v


def conv_acc(
    x: np.ndarray,
    w: np.ndarray,
    strides: tuple[int, int] = (1, 1),
    padding: str = "valid",
    dilation: tuple[int, int] = (1, 1),
    exact: bool = True,
    epilogue: Epilogue | None = None,
    acc_bound: int | None = None,
) -> np.ndarray:
    """2-D convolution (cross-correlation, NHWC, HWIO kernel) of ``x`` and ``w``.

    ``x`` may be int8 codes or float32 (converted chunk by chunk, never as a whole). With ``exact`` the
    inputs hold int8 codes and the accumulator is exact: float32 when kh*kw*cin <= 1024, float64
    otherwise (see the module docstring for the range proof). ``epilogue`` (optional, see
    :class:`Epilogue`) turns each chunk of accumulators into final values: the output stage runs on
    cache-sized chunks and no full accumulator is ever held.
    Memory is bounded: patches are built for a few images (or output rows) at a time.
    ``acc_bound``: :func:`l1_bound` of ``w`` when the caller has it cached (computed otherwise).
    """
    sh, sw = _pair(strides)
    dh, dw = _pair(dilation)
    n, h, wd, cin = x.shape
    kh, kw, cin_w, cout = w.shape
    if cin_w != cin:
        if cin_w and cin % cin_w == 0 and cout % (cin // cin_w) == 0:  # grouped, as TensorFlow infers it
            return _grouped_conv(x, w, cin // cin_w, lambda xg, wg, ep_g: conv_acc(
                xg, wg, strides, padding, dilation, exact, ep_g, acc_bound), epilogue)
        raise ValueError(f"kernel expects {cin_w} input channels, input has {cin}")
    pt, pb, ho = pads_1d(h, kh, sh, dh, padding)
    pl, pr, wo = pads_1d(wd, kw, sw, dw, padding)
    xp = pad_nhwc(x, (pt, pb), (pl, pr))
    # ``src``: the caller's array. The GEMM layouts prepared from read-only weights are cached on it
    # (_cached); the float32 and scaled copies below are made only when a layout must be built.
    src = w
    memo: dict[str, np.ndarray] = {}

    def w32() -> np.ndarray:
        if "w32" not in memo:
            memo["w32"] = np.asarray(src, dtype=np.float32)
        return memo["w32"]

    def wscaled() -> np.ndarray:
        # the epilogue's scale is a power of two: exact, and integer sums stay exact (scaled)
        return w32() if ep.scale == 1.0 else w32() * np.float32(ep.scale)

    k_total = kh * kw * cin
    if exact and acc_bound is None:
        acc_bound = l1_bound(w32().reshape(k_total, cout))
    # float32 sums are exact when K <= 1024 or the weights' L1 bound allows it (see l1_bound)
    f32 = (not exact) or k_total <= EXACT_K32 or acc_bound <= 2**24
    acc_dtype = np.float32 if f32 else np.float64
    ep = _as_epilogue(epilogue, acc_dtype)
    acc_dtype = _wider(acc_dtype, ep.dtype)
    fold = exact and _foldable(ep, acc_dtype, acc_bound)
    out = np.empty((n, ho, wo, cout), dtype=ep.out_dtype)
    if n == 0 or ho == 0 or wo == 0:
        return out
    if sh == 1 and sw == 1:
        if exact and _WINOGRAD and kh == 3 and kw == 3 and dh == 1 and dw == 1 and cin >= 16 and cout >= 16:
            if _wino2d_exact(src, ep, acc_dtype, acc_bound, src):
                _conv_wino2d(xp, src, ep, ho, wo, out, src)
                return out
        if exact and _WINOGRAD and kw == 3 and dw == 1 and kh * cin >= 16:
            u = _cached(src, ("wino1d-filter",), lambda: _wino_filter(src))
            if _wino_exact(u, acc_bound, ep, acc_dtype):
                _conv_wino1d(xp, u, ep, dh, ho, wo, out, acc_dtype, src)
                return out
        wcat = _cached(src, ("rows", *_offset_key(ep, fold)), lambda: _with_offset_row(
            wscaled().transpose(1, 2, 0, 3).reshape(kw * cin, kh * cout), ep.offset if fold else None, cout))
        _conv_stride1(xp, (kh, kw, cin, cout), wcat, dh, dw, ho, wo, out, exact, f32, acc_dtype, ep, fold)
        return out
    # with ``fold`` the offset rides in the GEMM as one more K column of ones (see _foldable)
    w2 = _cached(src, ("im2col", *_offset_key(ep, fold)),
                 lambda: _with_offset_row(wscaled().reshape(k_total, cout), ep.offset if fold else None))
    kc = w2.shape[0]
    # Generic (strided) path: im2col for blocks of output rows (whole images when small), one strided
    # copy per tap and block, so the patch buffer stays near _CHUNK_BYTES.
    tasks = _row_tasks(n, ho, 0, wo * (k_total + cout) * 4)
    offset = None if ep.offset is None or fold else ep.offset.astype(acc_dtype)

    def run(task: tuple[int, int, int, int]) -> None:
        i0, i1, y0, y1 = task
        m, hr = i1 - i0, y1 - y0
        full = _scratch("cols", (m * hr * wo, kc))
        if fold:
            full[:, k_total] = 1.0
        cols = _view(full[:, :k_total], (m, hr, wo, kh, kw, cin))
        for a in range(kh):
            r0 = y0 * sh + a * dh
            rsl = slice(r0, r0 + (hr - 1) * sh + 1, sh)
            for b in range(kw):
                cols[:, :, :, a, b, :] = xp[i0:i1, rsl, b * dw : b * dw + (wo - 1) * sw + 1 : sw]
        res = (gemm_exact(full, w2, f32) if exact else full @ w2).astype(acc_dtype, copy=False)
        if offset is not None:
            res += offset
        ep.finish(res.reshape(m, hr, wo, cout), out[i0:i1, y0:y1])

    _run_chunks(run, tasks)
    return out


def _grouped_conv(x: np.ndarray, w: np.ndarray, groups: int,
                  conv: Callable[[np.ndarray, np.ndarray, Epilogue | None], np.ndarray],
                  epilogue: Epilogue | None) -> np.ndarray:
    """A grouped convolution (kernel ``(kh, kw, cin / groups, cout)``, TensorFlow's layout): group ``g``'s
    output channels are ``conv`` of its input channels with its filters, each with its share of the
    epilogue's per-channel offset. The whole kernel's L1 bound bounds every group's, so the exactness
    rules hold per group."""
    cin_g, per = w.shape[2], w.shape[3] // groups
    parts = []
    for g in range(groups):
        ep = epilogue
        if ep is not None and ep.offset is not None and np.size(ep.offset) > 1:
            ep = replace(ep, offset=ep.offset[..., g * per:(g + 1) * per])
        parts.append(conv(x[..., g * cin_g:(g + 1) * cin_g], w[..., g * per:(g + 1) * per], ep))
    return np.concatenate(parts, axis=-1)


def _row_tasks(n: int, ho: int, hp_extra: int, bytes_per_row: int) -> list[tuple[int, int, int, int]]:
    """Work items (i0, i1, y0, y1): whole images grouped when they are small, otherwise blocks of output
    rows of one image, so that one item's scratch stays near _CHUNK_BYTES whatever the image size.
    ``hp_extra`` input rows beyond the output rows are read by each item (the kernel's row span)."""
    rows_fit = max(1, _CHUNK_BYTES // max(1, bytes_per_row))
    per_img = ho + hp_extra
    if per_img <= rows_fit:
        imgs = max(1, rows_fit // per_img)
        return [(i0, min(n, i0 + imgs), 0, ho) for i0 in range(0, n, imgs)]
    step = max(1, rows_fit - hp_extra)
    step = -(-ho // -(-ho // step))  # the same number of blocks, of even sizes (no small last block)
    return [(i, i + 1, y0, min(ho, y0 + step)) for i in range(n) for y0 in range(0, ho, step)]


def _conv_stride1(
    xp: np.ndarray,
    wshape: tuple[int, int, int, int],
    wcat: np.ndarray,
    dh: int,
    dw: int,
    ho: int,
    wo: int,
    out: np.ndarray,
    exact: bool,
    f32: bool,
    acc_dtype: type,
    ep: Epilogue,
    fold: bool = False,
) -> None:
    """Stride-1 convolution without a full im2col.

    Flatten a slab of padded rows to ``p = y * Wp + x``. Output (y, x) needs input rows
    ``p + a*dh*Wp + b*dw`` for taps (a, b). Build ``E[p] = concat_b xflat[p + b*dw]`` (kw copies of the
    input instead of kh*kw), multiply once by all kernel rows stacked side by side
    (``E @ [W_0 | .. | W_{kh-1}]``), then add the kh column blocks shifted by ``a*dh*Wp`` rows.
    Outputs at x >= Wo are computed and dropped (a (Wp - Wo) / Wp overhead). A valid output never
    reads past its own slab, so slabs of several images are simply stacked.
    Exactness: each GEMM sums kw*cin products, the shifted adds bring the total to kh*kw*cin terms;
    when that is <= 1024 (or the L1 bound of the whole kernel is <= 2^24: ``f32``) every partial sum is
    an integer <= 2^24 and float32 is exact; otherwise the GEMM is split by :func:`gemm_exact` and the
    adds are done in float64. With ``fold`` the offset rides in the GEMM (see :func:`_foldable`): E gets
    a column of ones and the weights a row holding the offset under kernel row 0.
    """
    n, hp, wp, cin = xp.shape
    kh, kw, _, cout = wshape
    kdim = kw * cin
    # wcat (kw*cin [+1], kh*cout): the (scaled) kernel, column block a holding kernel row a (and the
    # offset row under block 0 when folded)
    kc = wcat.shape[0]
    span_rows = (kh - 1) * dh
    span = span_rows * wp  # extra flattened rows needed below the last output row
    tasks = _row_tasks(n, ho, span_rows, wp * (kdim + kh * cout) * 4)
    offset = None if ep.offset is None or fold else ep.offset.astype(acc_dtype)

    def run(task: tuple[int, int, int, int]) -> None:
        i0, i1, y0, y1 = task
        m, hs = i1 - i0, y1 - y0 + span_rows
        slab = xp[i0:i1, y0 : y0 + hs]
        rows = m * hs * wp
        xf = slab.reshape(rows, cin)
        e = _scratch("e", (rows + span, kc))
        for b in range(kw):
            off = b * dw
            e[: rows - off, b * cin : (b + 1) * cin] = xf[off:]  # int8 -> float32 here, chunk by chunk
            e[rows - off :, b * cin : (b + 1) * cin] = 0
        if fold:
            e[:, kdim] = 1.0
        z = gemm_exact(e, wcat, f32) if exact else e @ wcat
        # acc[p] = offset + sum_a z[p + a*dh*wp, a-th block]  (the offset costs no extra pass)
        if z.dtype == acc_dtype:
            # z is this chunk's own result: add the other row taps into its first block in place
            # (they read other columns, so nothing is overwritten before it is read)
            acc = z[:rows, :cout]
            if offset is not None:
                acc += offset
        elif offset is not None:
            acc = np.add(z[:rows, :cout], offset, dtype=acc_dtype)
        else:
            acc = z[:rows, :cout].astype(acc_dtype)
        for a in range(1, kh):
            off = a * dh * wp
            acc += z[off : off + rows, a * cout : (a + 1) * cout]
        ep.finish(acc.reshape(m, hs, wp, cout)[:, : y1 - y0, :wo, :], out[i0:i1, y0:y1])

    _run_chunks(run, tasks)


_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_threads = max(1, min(2, os.cpu_count() or 1))
# With worker threads, give each GEMM call one BLAS thread (see qinspect.dpu._blas).
_blas_per_call_1 = True


def set_threads(n: int) -> None:
    """Number of worker threads for the chunked kernels (1 = run in the caller's thread)."""
    global _threads, _pool
    _threads = max(1, int(n))
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None


def _scratch(name: str, shape: tuple[int, int]) -> np.ndarray:
    """A per-thread reusable float32 buffer (avoids page-faulting a fresh 20 MB array per chunk)."""
    size = shape[0] * shape[1]
    buf = getattr(_local, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=np.float32)
        setattr(_local, name, buf)
    return buf[:size].reshape(shape)


def _run_chunks(fn: Callable[[tuple], None], chunks: list[tuple]) -> None:
    """Run independent chunks, on worker threads when there are several (numpy and BLAS release the
    GIL, so the copies and the output stage of one chunk overlap the GEMM of another)."""
    global _pool
    if _threads <= 1 or len(chunks) <= 1:
        for c in chunks:
            fn(c)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="qinspect-conv")
    with single_threaded_blas() if _blas_per_call_1 else nullcontext():
        for f in [_pool.submit(fn, c) for c in chunks]:
            f.result()


def _int16_tap_groups(x: np.ndarray, w: np.ndarray) -> list[list[int]] | None:
    """Taps of a depthwise kernel grouped so that int16 sums of a group's products are exact, or None
    when the operands are not int8 codes and integer weights.

    A product of two codes is at most 128 * 128 = 2^14: int16 holds it. A group's partial sums, per
    channel, are at most ``max|x| * sum over the group's taps of |w|``; taps are added to a group (in
    order) while that bound stays <= 32767, so every int16 sum is exact whatever the data.
    """
    if x.dtype != np.int8 or not np.issubdtype(w.dtype, np.integer) or x.size == 0:
        return None
    absw = np.abs(w.astype(np.int64)).reshape(w.shape[0] * w.shape[1], -1)  # (taps, channels)
    if absw.size and absw.max() > 128:
        return None
    xm = max(-int(x.min()), int(x.max()))
    groups: list[list[int]] = []
    total = np.zeros(absw.shape[1], np.int64)
    for t in range(absw.shape[0]):
        if groups and xm * int((total + absw[t]).max(initial=0)) <= 32767:
            groups[-1].append(t)
            total += absw[t]
        else:
            groups.append([t])
            total = absw[t].copy()
    return groups


def depthwise_acc(
    x: np.ndarray,
    w: np.ndarray,
    strides: tuple[int, int] = (1, 1),
    padding: str = "valid",
    dilation: tuple[int, int] = (1, 1),
    epilogue: Epilogue | None = None,
) -> np.ndarray:
    """Depthwise convolution, kernel ``(kh, kw, cin, mult)``, output channel ``c * mult + m``.

    Computed tap by tap on blocks of output rows of one image (sized to stay in cache).
    For int8 codes this is exact: a sum of kh*kw <= 1024 products of <= 2^14 stays <= 2^24 in the
    float32 accumulator (float64 is used for larger windows). A depth multiplier > 1 repeats each input
    channel ``mult`` times, which gives Keras' channel order ``c * mult + m``. ``epilogue`` as in
    :func:`conv_acc`.
    Speed: the weights of each tap are tiled along the output row, so with a horizontal stride of 1
    every multiply-add runs over a contiguous row segment of ``wo * channels`` values. For int8 codes
    and integer weights the products and the sums of small groups of taps are int16 (exact: see
    :func:`_int16_tap_groups`; numpy's int16 arithmetic moves half the bytes of float32), and only the
    group sums are added into the float accumulator, which is then scaled (a power of two) and offset.
    """
    sh, sw = _pair(strides)
    dh, dw = _pair(dilation)
    n, h, wd, cin = x.shape
    kh, kw, cin_w, mult = w.shape
    if cin_w != cin:
        raise ValueError(f"depthwise kernel expects {cin_w} channels, input has {cin}")
    pt, pbt, ho = pads_1d(h, kh, sh, dh, padding)
    pl, pr, wo = pads_1d(wd, kw, sw, dw, padding)
    if mult != 1:
        x = np.repeat(x, mult, axis=-1)  # channel c*mult + m reads input channel c
    ch = cin * mult
    groups = _int16_tap_groups(x, np.asarray(w)) if _DW_INT16 else None
    xp = pad_nhwc(x, (pt, pbt), (pl, pr))
    acc_dtype = np.float32 if kh * kw <= EXACT_K32 else np.float64
    ep = _as_epilogue(epilogue, acc_dtype)
    acc_dtype = _wider(acc_dtype, ep.dtype)
    out = np.empty((n, ho, wo, ch), dtype=ep.out_dtype)
    if n == 0 or ho == 0 or wo == 0:
        return out
    if groups is None:
        tap_dtype = acc_dtype
        wf = np.asarray(w, dtype=acc_dtype).reshape(kh, kw, ch) * acc_dtype(ep.scale)  # power of two: exact
        scale = None
    else:
        tap_dtype = np.int16
        wf = np.asarray(w).astype(np.int16).reshape(kh, kw, ch)
        scale = None if ep.scale == 1.0 else acc_dtype(ep.scale)
        groups_ab = [[divmod(t, kw) for t in g] for g in groups]
    # (kh, kw, wo, ch): each tap's weights repeated along the output row (contiguous operands)
    wt = _cached(w, ("dw-tiled", np.dtype(tap_dtype).str, wo, ep.scale),
                 lambda: np.ascontiguousarray(np.broadcast_to(wf[:, :, None, :], (kh, kw, wo, ch))))
    offset = None if ep.offset is None else np.ascontiguousarray(
        np.broadcast_to(ep.offset.astype(acc_dtype), (wo, ch)))
    rows = max(1, _DW_BLOCK // max(1, wo * ch))
    blocks = [(i, y0, min(ho, y0 + rows)) for i in range(n) for y0 in range(0, ho, rows)]
    # group blocks into tasks of several blocks (fewer pool round trips)
    per_task = max(1, len(blocks) // (8 * max(1, _threads)))
    tasks = [(t0, min(len(blocks), t0 + per_task)) for t0 in range(0, len(blocks), per_task)]

    def run(task: tuple[int, int]) -> None:
        for i, y0, y1 in blocks[task[0] : task[1]]:
            r = y1 - y0
            rows = xp[i, y0 * sh : (y1 - 1) * sh + (kh - 1) * dh + 1]
            # Strided windows: split the rows into their sh x sw phases once (each a contiguous copy),
            # so that every tap reads contiguous row segments (a tap at row offset a*dh and column
            # offset b*dw reads phase (a*dh % sh, b*dw % sw) from (a*dh // sh, b*dw // sw)).
            phases: dict[tuple[int, int], np.ndarray] = {}

            def tap(a: int, b: int, r: int = r, rows: np.ndarray = rows, phases: dict = phases) -> np.ndarray:
                (pa, ra), (pb, cb) = divmod(a * dh, sh)[::-1], divmod(b * dw, sw)[::-1]
                if (pa, pb) not in phases:
                    phases[pa, pb] = rows[pa::sh, pb::sw].astype(tap_dtype)
                return phases[pa, pb][ra : ra + r, cb : cb + wo]

            acc = np.empty((r, wo, ch), dtype=acc_dtype)
            if groups is None:
                tmp = np.empty((r, wo, ch), dtype=acc_dtype)
                for a in range(kh):
                    for b in range(kw):
                        if a == 0 and b == 0:
                            np.multiply(tap(a, b), wt[a, b], out=acc)
                        else:
                            np.multiply(tap(a, b), wt[a, b], out=tmp)
                            acc += tmp
            else:
                g16 = np.empty((r, wo, ch), dtype=np.int16)
                p16 = np.empty((r, wo, ch), dtype=np.int16)
                for gi, group in enumerate(groups_ab):
                    for j, (a, b) in enumerate(group):
                        if j == 0:
                            np.multiply(tap(a, b), wt[a, b], out=g16)
                        else:
                            np.multiply(tap(a, b), wt[a, b], out=p16)
                            g16 += p16
                    if gi == 0:
                        acc[...] = g16
                    else:
                        np.add(acc, g16, out=acc)
                if scale is not None:
                    acc *= scale  # a power of two: exact
            if offset is not None:
                acc += offset
            ep.finish(acc, out[i, y0:y1])

    _run_chunks(run, tasks)
    return out


_DW_BLOCK = 1 << 17  # elements of one depthwise block (fewer numpy calls; acc and tmp mostly in L2)
_DW_INT16 = True  # int16 products and group sums for int8 codes (tests switch it off to compare)


# ----------------------------------------------------------------------------------------------------
# Stride-1 convolution with kw = 3: Winograd F(2, 3) along the rows, exact
# ----------------------------------------------------------------------------------------------------

_WINOGRAD = True  # tests switch it off to compare with the direct path
_FOLD = True  # offsets inside the GEMM where exact (tests switch it off to compare)


def _wino_filter(w: np.ndarray) -> np.ndarray:
    """Filter transform of F(2, 3) along kw, times 2 so it stays integer: (4, kh, cin, cout) int64.

    ``U'_0 = 2 g0``, ``U'_1 = g0 + g1 + g2``, ``U'_2 = g0 - g1 + g2``, ``U'_3 = 2 g2`` (g_b = w[:, b]).
    """
    g = np.rint(np.asarray(w, dtype=np.float64)).astype(np.int64)
    g0, g1, g2 = g[:, 0], g[:, 1], g[:, 2]
    return np.stack([2 * g0, g0 + g1 + g2, g0 - g1 + g2, 2 * g2])


def _wino_exact(u: np.ndarray, acc_bound: int, ep: Epilogue, acc_dtype: type) -> bool:
    """Whether every float32 sum of the F(2, 3) path is an exact integer (in units of 2^-1 * scale).

    Transformed inputs are differences or sums of two codes: |V| <= 256. A GEMM partial sum over any
    subset of (row tap, channel) is at most 256 * L1_i (the column L1 norm of U'_i). The outputs are
    combined as (M0 + off) + M1 + M2 and M1 - M2 - M3 (+ off), with totals 2 * (acc + offset); in
    float32 each partial sum must stay <= 2^24. In float64 only the GEMM bound matters.
    """
    l1 = np.abs(u).sum(axis=(1, 2)).astype(np.float64)  # (4, cout)
    lim = 2.0**24
    if 256.0 * l1.max() > lim:
        return False
    if acc_dtype == np.float64:
        return True
    off = 2.0 * ep.offset_bound
    return bool(
        256.0 * l1[0].max() + off <= lim
        and 256.0 * (l1[0] + l1[1]).max() + off <= lim
        and 256.0 * (l1[1] + l1[2]).max() <= lim
        and 2.0 * (acc_bound + ep.offset_bound) <= lim
    )


def _wino_fold_ok(u: np.ndarray, ep: Epilogue, acc_dtype: type) -> bool:
    """Whether the offset may be added inside the float32 GEMM of M1 (on top of :func:`_wino_exact`):
    M1 + off and (M1 + off) - M2 must stay exact too, so ``256 * (L1_1 + L1_2) + off <= 2^24``; the
    offset must be an integer in the GEMM's units (2^-1 * scale)."""
    if not _FOLD or ep.offset is None or acc_dtype != np.float32 or ep.dtype != np.float32:
        return False
    units = np.asarray(ep.offset, dtype=np.float64) * 2.0 / ep.scale
    if not np.array_equal(units, np.rint(units)):
        return False
    l1 = np.abs(u).sum(axis=(1, 2)).astype(np.float64)
    return bool(256.0 * (l1[1] + l1[2]).max() + 2.0 * ep.offset_bound <= 2.0**24)


def _conv_wino1d(
    xp: np.ndarray, u: np.ndarray, ep: Epilogue, dh: int, ho: int, wo: int, out: np.ndarray, acc_dtype: type,
    src: np.ndarray | None = None,
) -> None:
    """Exact stride-1 convolution with kw = 3 using Winograd F(2, 3) along the output rows.

    Two neighbouring outputs of a row need 4 products per (row tap, channel) instead of 6, so the GEMMs
    do 2/3 of the direct work. For output pair (2t, 2t+1) and input columns d0..d3 = x[2t .. 2t+3]:
    ``V = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)``, ``M_i = sum over row taps and channels of V_i U'_i``,
    ``y(2t) = (M0 + M1 + M2) / 2`` and ``y(2t+1) = (M1 - M2 - M3) / 2`` (U' is 2 U). The 1/2 and the
    epilogue scale are powers of two folded into U'. Exactness: see :func:`_wino_exact`.
    """
    n, hp, wp, cin = xp.shape
    _, kh, _, cout = u.shape
    tiles = -(-wo // 2)
    need = 2 * tiles + 2
    if wp < need:  # columns beyond the padded input only feed the dropped output column
        xp = np.pad(xp, ((0, 0), (0, 0), (0, need - wp), (0, 0)))
    kk = kh * cin
    # The offset rides in the GEMM of M1 (it enters both outputs with a + sign) when its bounds allow
    # (see _wino_fold_ok): E gets a column of ones, U'_1 a row holding the offset.
    fold = _wino_fold_ok(u, ep, acc_dtype)

    def make_ut() -> np.ndarray:
        ut = (u.astype(np.float64) * (ep.scale / 2.0)).astype(np.float32).reshape(4, kk, cout)
        if fold:
            ut = np.concatenate([ut, np.zeros((4, 1, cout), np.float32)], axis=1)
            ut[1, kk] = ep.offset
        return ut

    ut = _cached(src, ("wino1d", *_offset_key(ep, fold)), make_ut)
    kc = ut.shape[1]
    offset = None if ep.offset is None or fold else ep.offset.astype(acc_dtype)
    # twice the usual chunk (its GEMMs run faster on more rows)
    tasks = _row_tasks(n, ho, (kh - 1) * dh, (4 * kh * cin + 4 * cin + 6 * cout) * tiles * 2)

    def run(task: tuple[int, int, int, int]) -> None:
        i0, i1, y0, y1 = task
        m, hr = i1 - i0, y1 - y0
        r = m * hr * tiles
        e_full = _scratch("we", (4 * r, kc)).reshape(4, r, kc)
        if fold:
            e_full[:, :, kk] = 1.0
        e = _view(e_full[:, :, :kk], (4, m, hr, tiles, kh, cin))
        # input transform once per input row, then copied into each row tap's block of E
        hs = hr + (kh - 1) * dh
        xc = xp[i0:i1, y0 : y0 + hs].astype(np.float32)
        v = _scratch("wv", (4 * m * hs * tiles, cin)).reshape(4, m, hs, tiles, cin)
        d0, d1, d2, d3 = (xc[:, :, k : k + 2 * tiles : 2, :] for k in range(4))
        np.subtract(d0, d2, out=v[0])
        np.add(d1, d2, out=v[1])
        np.subtract(d2, d1, out=v[2])
        np.subtract(d1, d3, out=v[3])
        for a in range(kh):
            e[:, :, :, :, a] = v[:, :, a * dh : a * dh + hr]
        mm = np.matmul(e_full, ut, out=_scratch("wm", (4 * r, cout)).reshape(4, r, cout))
        mm = mm.reshape(4, m, hr, tiles, cout)
        acc = np.empty((m, hr, 2 * tiles, cout), dtype=acc_dtype)
        ev, od = acc[:, :, 0::2], acc[:, :, 1::2]
        if offset is not None:
            np.add(mm[0], offset, out=ev)
            ev += mm[1]
        else:
            np.add(mm[0], mm[1], out=ev)
        ev += mm[2]
        np.subtract(mm[1], mm[2], out=od)
        od -= mm[3]
        if offset is not None:
            od += offset
        ep.finish(acc[:, :, :wo], out[i0:i1, y0:y1])

    _run_chunks(run, tasks)


# ----------------------------------------------------------------------------------------------------
# Stride-1 3x3 convolution: Winograd F(2x2, 3x3), exact where its bounds prove it
# ----------------------------------------------------------------------------------------------------

# F(2x2, 3x3) with integer transforms: G' = 2 G (so U' = G' g G'^T = 4 U is integer), B^T, A^T.
_G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.int64)
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64)


def _wino2d_bounds(w: np.ndarray) -> tuple[float, float]:
    """For a 3x3 kernel of codes: (the largest bound of any float32 partial sum the F(2x2, 3x3) path
    forms before its last addition, in units of 2^-2 of the accumulator), and the bound of that last
    result, 4 * acc).

    Every quantity the path forms is a linear form in the 4x4 input patch of each channel with integer
    coefficients; its magnitude is at most 128 * sum over channels and pixels of |coefficient| (taken
    exactly, cancellations included). The GEMM partial sums over channels of ``V_ij U'_ij`` are
    bounded by 128 * 4 * sum_c |U'_ij| (each V_ij sums 4 codes). The output transform forms
    ``M1j + M2j``, ``M1j - M2j``, ``T0j = (M1j + M2j) + M0j``, ``T1j = (M1j - M2j) - M3j``, then the
    same over j; its last additions give 4 * acc, a multiple of 4.
    """
    g = np.rint(np.asarray(w, dtype=np.float64)).astype(np.int64)
    u = np.einsum("ia,abco,jb->ijco", _G2, g, _G2)  # (4, 4, cin, cout)
    cin, cout = u.shape[2], u.shape[3]
    bc = np.einsum("ip,jq->ijpq", _BT, _BT).reshape(16, 16)  # coefficient of pixel pq in V_ij
    uf = u.reshape(16, cin * cout).astype(np.float64)
    gemm = 512.0 * np.abs(u).sum(axis=2).max()

    def lin(alpha: np.ndarray) -> float:
        # coef[pq, c, o] = sum_ij alpha_ij * bc[ij, pq] * U'_ij[c, o]
        coef = ((alpha.reshape(16, 1) * bc).T @ uf).reshape(16, cin, cout)
        return 128.0 * float(np.abs(coef).sum(axis=(0, 1)).max())

    def e(i: int, j: int) -> np.ndarray:
        a = np.zeros((4, 4))
        a[i, j] = 1.0
        return a

    worst = gemm
    t0 = [e(0, j) + e(1, j) + e(2, j) for j in range(4)]
    t1 = [e(1, j) - e(2, j) - e(3, j) for j in range(4)]
    for j in range(4):
        worst = max(worst, lin(e(1, j) + e(2, j)), lin(e(1, j) - e(2, j)), lin(t0[j]), lin(t1[j]))
    for t in (t0, t1):
        worst = max(worst, lin(t[1] + t[2]), lin(t[1] - t[2]))
    final = 4.0 * 128.0 * float(np.abs(g).sum(axis=(0, 1, 2)).max())
    return worst, final


_W2D_CACHE: dict[tuple, tuple[float, float]] = {}


def _wino2d_exact(w: np.ndarray, ep: Epilogue, acc_dtype: type, acc_bound: int | None,
                  src: np.ndarray | None = None) -> bool:
    """Whether the float32 F(2x2, 3x3) path is exact for these weights and this output stage:
    every partial sum (see :func:`_wino2d_bounds`) below 2^24 in its units, and the result with the
    offset, ``4 * (acc + offset)`` (a multiple of 4), below 2^26. Bounds are cached per weight bytes."""
    if acc_dtype != np.float32 or ep.dtype != np.float32 or acc_bound is None:
        return False
    if ep.offset is not None:
        units = np.asarray(ep.offset, dtype=np.float64) / ep.scale
        if not np.array_equal(units, np.rint(units)):
            return False
    if acc_bound + ep.offset_bound >= 2**24:
        return False
    return _wino2d_worst(w, src) < 2**24


def _wino2d_worst(w: np.ndarray, src: np.ndarray | None = None) -> float:
    """:func:`_wino2d_bounds`' partial-sum bound, cached per weight bytes (and per read-only source
    array, which saves hashing them)."""
    if src is not None:
        return _cached(src, ("wino2d-worst",), lambda: _wino2d_worst(w))  # type: ignore[return-value]
    wc = np.ascontiguousarray(w)
    key = (wc.shape, wc.dtype.str, hashlib.blake2b(wc.tobytes(), digest_size=16).digest())
    if key not in _W2D_CACHE:
        if len(_W2D_CACHE) > 512:
            _W2D_CACHE.clear()
        _W2D_CACHE[key] = _wino2d_bounds(wc)
    return _W2D_CACHE[key][0]


def _conv_wino2d(xp: np.ndarray, w: np.ndarray, ep: Epilogue, ho: int, wo: int, out: np.ndarray,
                 src: np.ndarray | None = None) -> None:
    """Exact stride-1 3x3 convolution with Winograd F(2x2, 3x3): 16 GEMMs over channels per 2x2 output
    tile instead of 36 products (4/9 of the direct work). ``V = B^T d B`` (d: 4x4 input patch),
    ``M_ij = sum_c V_ij U'_ij`` with ``U' = (2G) g (2G)^T``, ``y = A^T M A / 4``; the 1/4 and the
    epilogue scale (powers of two) are folded into U'. Exactness: :func:`_wino2d_exact`.
    """
    n, hp, wp, cin = xp.shape
    cout = w.shape[-1]
    th, tw = -(-ho // 2), -(-wo // 2)
    need_h, need_w = 2 * th + 2, 2 * tw + 2
    if hp < need_h or wp < need_w:  # rows / columns beyond the input only feed dropped outputs
        xp = np.pad(xp, ((0, 0), (0, max(0, need_h - hp)), (0, max(0, need_w - wp)), (0, 0)))
    # The offset enters all four outputs of a tile through M_11 with a + sign: it rides in that GEMM
    # (a K column of ones, a row holding it) when every partial sum stays exact with it added
    # (4 * offset in the GEMM's units of scale / 4; _wino2d_exact checked it is an integer there).
    fold = _FOLD and ep.offset is not None and _wino2d_worst(w, src) + 4.0 * ep.offset_bound < 2**24

    def make_ut() -> np.ndarray:
        g = np.rint(np.asarray(w, dtype=np.float64)).astype(np.int64)
        u = np.einsum("ia,abco,jb->ijco", _G2, g, _G2).reshape(16, cin, cout)
        ut = (u.astype(np.float64) * (ep.scale / 4.0)).astype(np.float32)
        if fold:
            ut = np.concatenate([ut, np.zeros((16, 1, cout), np.float32)], axis=1)
            ut[5, cin] = ep.offset  # index 4 * i + j of M_11
        return ut

    ut = _cached(src, ("wino2d", *_offset_key(ep, fold)), make_ut)
    kc = ut.shape[1]
    offset = None if ep.offset is None or fold else ep.offset.astype(np.float32)
    per_tile_row = tw * (8 * cin + 16 * cin + 16 * cout + 8 * cout + 4 * cout) * 4
    # larger chunks than the other paths: the 16 GEMMs per chunk are narrow (K = cin), longer ones run
    # markedly faster
    tasks = _row_tasks(n, th, 1, max(1, per_tile_row // _W2D_CHUNK_FACTOR))
    # codes: the transforms in int16 (|H| <= 256, |V| <= 512: exact; half the bytes of float32)
    tdt = np.int16 if np.issubdtype(xp.dtype, np.integer) else np.float32

    def run(task: tuple[int, int, int, int]) -> None:
        i0, i1, t0, t1 = task
        m, tc = i1 - i0, t1 - t0
        r = m * tc * tw
        hs = 2 * tc + 2
        xc = xp[i0:i1, 2 * t0 : 2 * t0 + hs, :need_w].astype(tdt)
        # row transform along W: H_j (m, hs, tw, cin)
        h = np.empty((4, m, hs, tw, cin), dtype=tdt)
        d0, d1, d2, d3 = (xc[:, :, k : k + 2 * tw : 2, :] for k in range(4))
        np.subtract(d0, d2, out=h[0])
        np.add(d1, d2, out=h[1])
        np.subtract(d2, d1, out=h[2])
        np.subtract(d1, d3, out=h[3])
        # column transform along H into E (16 = 4 i x 4 j, r tiles, cin)
        e_full = _scratch("w2e", (16 * r, kc)).reshape(16, r, kc)
        if fold:
            e_full[:, :, cin] = 1.0
        e = _view(e_full[:, :, :cin], (4, 4, m, tc, tw, cin))
        r0, r1, r2, r3 = (h[:, :, k : k + 2 * tc : 2] for k in range(4))
        np.subtract(r0, r2, out=e[0])
        np.add(r1, r2, out=e[1])
        np.subtract(r2, r1, out=e[2])
        np.subtract(r1, r3, out=e[3])
        mm = np.matmul(e_full, ut, out=_scratch("w2m", (16 * r, cout)).reshape(16, r, cout))
        mm = mm.reshape(4, 4, r, cout)
        # output transform over i: T_0j = (M1j + M2j) + M0j, T_1j = (M1j - M2j) - M3j
        t = _scratch("w2t", (8 * r, cout)).reshape(2, 4, r, cout)
        np.add(mm[1], mm[2], out=t[0])
        t[0] += mm[0]
        np.subtract(mm[1], mm[2], out=t[1])
        t[1] -= mm[3]
        # over j, straight into the output tile layout (m, tc, 2, tw, 2, cout)
        acc = np.empty((m, tc, 2, tw, 2, cout), dtype=np.float32)
        part = _scratch("w2p", (r, cout)).reshape(m, tc, tw, cout)  # contiguous partial sums
        for a in range(2):
            ta = t[a].reshape(4, m, tc, tw, cout)
            np.add(ta[1], ta[2], out=part)
            np.add(part, ta[0], out=acc[:, :, a, :, 0])
            np.subtract(ta[1], ta[2], out=part)
            np.subtract(part, ta[3], out=acc[:, :, a, :, 1])
        full = acc.reshape(m, 2 * tc, 2 * tw, cout)
        if offset is not None:
            full += offset
        rows = min(ho, 2 * t1) - 2 * t0
        ep.finish(full[:, :rows, :wo], out[i0:i1, 2 * t0 : 2 * t0 + rows])

    _run_chunks(run, tasks)


def windows_reduce(
    x: np.ndarray,
    pool: tuple[int, int],
    strides: tuple[int, int],
    padding: str,
    fill: float,
    op: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce pooling windows of an NHWC array (max, or sum: give int64 codes for integer sums) and count
    the valid taps of each window (in the array's dtype for floats, int64 for integers)."""
    kh, kw = pool
    sh, sw = strides
    n, h, wd, c = x.shape
    pt, pbt, ho = pads_1d(h, kh, sh, 1, padding)
    pl, pr, wo = pads_1d(wd, kw, sw, 1, padding)
    xp = pad_nhwc(x, (pt, pbt), (pl, pr), value=fill)
    count_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.int64
    valid = pad_nhwc(np.ones((1, h, wd, 1), dtype=count_dtype), (pt, pbt), (pl, pr), value=0)
    res = None
    cnt = np.zeros((1, ho, wo, 1), dtype=count_dtype)
    for a in range(kh):
        for b in range(kw):
            sl = (slice(None), slice(a, a + (ho - 1) * sh + 1, sh), slice(b, b + (wo - 1) * sw + 1, sw))
            tap = xp[sl]
            cnt += valid[sl]
            if res is None:
                res = tap.copy()
            elif op == "max":
                np.maximum(res, tap, out=res)
            else:
                res += tap
    return res, cnt
