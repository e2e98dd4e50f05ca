"""Why a dumped int8 tensor differs from the emulator's, when the codes themselves show it.

A row of ``compare-dump`` that only says "5834 of 8192 codes differ" leaves the user to find the pattern.
Most real causes leave a clear one in the codes, checked here in this order, each on the tensor alone:

- **an edited or damaged file**: the dump's own float copy of the tensor (``*_float.bin``, the dequantized
  codes dump_model writes beside them) agrees with the emulator where the int8 file does not;
- **another fix position**: the dump's codes are the emulator's times a power of two (within 1 LSB, the
  rounding of the other scale): the dump was made with another position than the quantized model given
  (another quantization of the model, or a board running another compiled model);
- **samples in another order**: a sample of the dump equals another sample of the emulator's;
- **another tensor's file**: the file holds the codes of another tensor of the same size (swapped or
  misnamed files);
- **saturation**: every differing dump code sits at the int8 limit, where the emulator's do not.

None of these is claimed on a weak match: each needs the pattern on (nearly) every value it concerns, and
a tensor with too few telling values gets no cause. The result is a phrase for a row's note, or None.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qinspect.dpu.fixed_point import QMAX, QMIN

SHIFTS = (1, -1, 2, -2, 3, -3)  # position differences tried, the likeliest first
MIN_TELLING = 16  # nonzero values needed before a scale pattern is read from a tensor
SHIFT_FIT = 0.97  # share of the nonzero values within 1 LSB of the scaled codes
SAME = 0.999  # share of equal codes for "the same tensor" / "the same sample"
EDITED = "the int8 file was changed after dump_model wrote it"  # the cause that is no layer's (compare_dump)


def mismatch_cause(dump: np.ndarray, emu: np.ndarray, samples: int = 1, *, pos: int | None = None,
                   float_copy: np.ndarray | None = None,
                   others: Mapping[str, np.ndarray] | None = None) -> str | None:
    """The cause the codes show for ``dump`` (int8, flat) differing from ``emu`` (the emulator's codes, same
    size), or None. ``samples``: how many samples the flat arrays hold (rows, in order); ``pos``: the
    tensor's fix position in the quantized model; ``float_copy``: the dump's own float copy of the tensor;
    ``others``: the emulator's codes of other tensors, by name (only those of the same size are read)."""
    d = np.asarray(dump, np.int32).reshape(-1)
    e = np.asarray(emu, np.int32).reshape(-1)
    if d.shape != e.shape or np.array_equal(d, e):
        return None
    differ = d != e
    if float_copy is not None and pos is not None and float_copy.size == d.size:
        own = np.asarray(float_copy, np.float64).reshape(-1) * 2.0**pos
        if np.all(own[differ] == e[differ]):
            k = int(differ.sum())
            at = "the differing value" if k == 1 else f"all {k} differing values"
            return (f"the dump's own float copy of this tensor agrees with the emulator at {at} while its int8 file "
                    f"does not: {EDITED} (edited or damaged)")
    shift = _shift(d, e)
    if shift is not None:
        k, fit = shift
        factor = f"{2**k}" if k > 0 else f"1/{2**-k}"
        where = (f"fix position {pos + k} where the quantized model has {pos}" if pos is not None
                 else f"a fix position {abs(k)} {'above' if k > 0 else 'below'} the quantized model's")
        return (f"the dump's codes are the emulator's times {factor} ({fit:.1%} of the nonzero values within 1 LSB): "
                f"the dump was made at {where}, so it comes from another quantization of the model (another "
                "quantized.h5, or a board running a model compiled from one)")
    if samples > 1 and d.size % samples == 0:
        moved = _other_sample(d.reshape(samples, -1), e.reshape(samples, -1))
        if moved is not None:
            i, j = moved
            return (f"the dump's sample {i} is the emulator's sample {j} here: samples are exchanged at this tensor "
                    "(swapped sample or engine files, or another sample order in the run from here on)")
    for name, codes in (others or {}).items():
        c = np.asarray(codes).reshape(-1)
        if c.size == d.size and np.mean(c == d) >= SAME:
            return f"the file holds the codes of {name}: the files of two tensors are swapped or misnamed"
    bad = d[differ]
    if bad.size and np.all(bad == QMIN + 1) and np.all(e[differ] == QMIN):
        return (f"every differing code ({bad.size}) is {QMIN + 1} in the dump where the emulator's is {QMIN}: the run "
                f"codes activations in [{QMIN + 1}, {QMAX}], as a DPUCADF8H does (compare with --target DPUCADF8H)")
    if bad.size and np.all((bad == QMAX) | (bad == QMIN)) and not np.any((e[differ] == QMAX) | (e[differ] == QMIN)):
        return (f"every differing code of the dump ({bad.size}) sits at the int8 limit ({QMAX} or {QMIN}) where the "
                "emulator's do not: the dump saturates there (a smaller range upstream, or a clipped buffer)")
    return None


def _shift(d: np.ndarray, e: np.ndarray) -> tuple[int, float] | None:
    """``(k, fit)`` when the dump's codes are the emulator's times 2^k within 1 LSB on at least SHIFT_FIT of
    the values either holds nonzero (and clearly not times 1)."""
    telling = (d != 0) | (e != 0)
    if int(telling.sum()) < MIN_TELLING:
        return None
    dt, et = d[telling], e[telling].astype(np.float64)
    if np.mean(np.abs(dt - et) <= 1) >= 0.5:
        return None
    for k in SHIFTS:
        scaled = np.clip(np.round(et * 2.0**k), QMIN, QMAX)
        fit = float(np.mean(np.abs(dt - scaled) <= 1))
        # a larger scale must also leave room: if nearly every emulator code were 0 or 1 LSB, any k fits
        if fit >= SHIFT_FIT and np.count_nonzero(np.abs(et) >= 4) >= MIN_TELLING // 2:
            return k, fit
    return None


def _other_sample(d: np.ndarray, e: np.ndarray) -> tuple[int, int] | None:
    """``(i, j)``: the first dump sample i that equals emulator sample j != i (and not its own)."""
    for i in range(len(d)):
        if np.mean(d[i] == e[i]) >= SAME:
            continue
        for j in range(len(e)):
            if j != i and np.mean(d[i] == e[j]) >= SAME:
                return i, j
    return None
