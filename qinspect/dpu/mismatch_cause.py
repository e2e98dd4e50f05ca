"""Why a dumped int8 tensor differs from the emulator's, when the codes themselves show it.

A row of ``compare-dump`` that only says "5834 of 8192 codes differ" leaves the user to find the pattern.
Most real causes leave a clear one in the codes, checked here in this order, each on the tensor alone:

- **an edited or damaged file**: the dump's own float copy of the tensor (``*_float.bin``, the dequantized
  codes dump_model writes beside them) agrees with the emulator where the int8 file does not;
- **a model input quantized with another rounding**: the codes of a model input's quantizer are exactly
  the float input (the dump's own copy of it, ``input_float.bin``, or the inputs given a board) times 2^p
  rounded down (floor), truncated toward zero or rounded half to even, where the DPU rounds half up;
- **another fix position**: the dump's codes are the emulator's times a power of two (within 1 LSB, the
  rounding of the other scale): the dump was made with another position than the quantized model given
  (another quantization of the model, or a board running another compiled model);
- **samples in another order**: a sample of the dump equals another sample of the emulator's;
- **another tensor's file**: the file holds the codes of another tensor of the same size (swapped or
  misnamed files), which explain it clearly better than this tensor's own codes (a tensor holding the
  same codes as this one, a Flatten or Reshape of it, is never such a candidate);
- **a narrow range**: every differing code is -127 where the emulator's is -128 (a weight or activation
  quantizer with ``narrow_range`` where the quantized model's has none);
- **saturation**: every differing dump code sits at the int8 limit, where the emulator's do not;
- **a constant offset or another rounding**: every differing code is the emulator's +1 LSB (or every one
  -1 LSB): on every code but those already at the limit, a constant offset; on some of them only, a
  rounding that goes one way where the emulator rounds to nearest (floor, truncation, another tie rule).

None of these is claimed on a weak match: each needs the pattern on (nearly) every value it concerns, and
a tensor with too few telling values gets no cause. The result is a phrase for a row's note, or None.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from qinspect.dpu.fixed_point import QMAX, QMIN

SHIFTS = (1, -1, 2, -2, 3, -3)  # position differences tried, the likeliest first
MIN_TELLING = 16  # nonzero values needed before a scale pattern is read from a tensor (and differing
#                   values before a one-sided +-1 LSB pattern is)
SHIFT_FIT = 0.97  # share of the nonzero values within 1 LSB of the scaled codes
SAME = 0.999  # share of equal codes for "the same tensor" / "the same sample"
CLEARLY = 10  # another tensor's codes must differ from the dump at most 1/CLEARLY as often as this one's
EDITED = "the int8 file was changed after dump_model wrote it"  # the cause that is no layer's (compare_dump)
INPUT_ROUNDING = "quantized with another rounding"  # the model-input cause (board_compare keeps it)
# other roundings of a model input, tried in this order (the DPU's quantizer rounds half up)
ROUNDINGS = (("rounded down (floor)", np.floor), ("truncated toward zero (a cast to an integer type)", np.trunc),
             ("rounded half to even", np.rint))


def mismatch_cause(dump: np.ndarray, emu: np.ndarray, samples: int = 1, *, pos: int | None = None,
                   float_copy: np.ndarray | None = None,
                   others: Mapping[str, np.ndarray] | None = None, weight: bool = False, code_min: int = QMIN,
                   source: np.ndarray | None = None, source_name: str = "the float input") -> str | None:
    """The cause the codes show for ``dump`` (int8, flat) differing from ``emu`` (the emulator's codes, same
    size), or None. ``samples``: how many samples the flat arrays hold (rows, in order); ``pos``: the
    tensor's fix position in the quantized model; ``float_copy``: the dump's own float copy of the tensor;
    ``others``: the emulator's codes of other tensors, by name (only those of the same size are read);
    ``weight``: the tensor is a weight; ``code_min``: the tensor's lowest code in the emulator (-127 when
    its quantizer is narrow); ``source``: for a model input's quantizer, the float values it quantizes
    (named ``source_name`` in the text)."""
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
    if source is not None and pos is not None and np.size(source) == d.size:
        mode = _input_rounding(d, np.asarray(source), pos, code_min)
        if mode is not None:
            return (f"every code of the dump is {source_name} times 2^{pos} {mode}, where the DPU's quantizer rounds "
                    f"half up ({int(differ.sum())} of {d.size} codes differ by it): the model input was "
                    f"{INPUT_ROUNDING} (the preprocessing that made the int8 input)")
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
    other = _other_tensor(d, e, others or {})
    if other is not None:
        return f"the file holds the codes of {other}: the files of two tensors are swapped or misnamed"
    bad = d[differ]
    if bad.size and np.all(bad == QMIN + 1) and np.all(e[differ] == QMIN):
        return _narrow(bad.size, weight, code_min)
    if bad.size and np.all((bad == QMAX) | (bad == QMIN)) and not np.any((e[differ] == QMAX) | (e[differ] == QMIN)):
        return (f"every differing code of the dump ({bad.size}) sits at the int8 limit ({QMAX} or {QMIN}) where the "
                "emulator's do not: the dump saturates there (a smaller range upstream, or a clipped buffer)")
    return _one_sided(d, e, code_min)


def _input_rounding(d: np.ndarray, x: np.ndarray, pos: int, code_min: int) -> str | None:
    """How the dump's codes round ``x * 2^pos`` when another rounding than the DPU's half up gives every one
    of them (floor and truncation alike where no negative value tells them apart), else None."""
    scaled = np.asarray(x, np.float32).reshape(-1) * np.float32(2.0**pos)  # exact: a power of two
    fits = [name for name, f in ROUNDINGS if np.array_equal(np.clip(f(scaled), code_min, QMAX), d)]
    if not fits:
        return None
    if fits[:2] == [ROUNDINGS[0][0], ROUNDINGS[1][0]]:
        return "rounded down (floor, or truncation: no negative value tells them apart)"
    return fits[0]


def _other_tensor(d: np.ndarray, e: np.ndarray, others: Mapping[str, np.ndarray]) -> str | None:
    """The first other tensor whose codes explain the dump nearly everywhere and clearly better than this
    tensor's own (``e``): a candidate holding the same codes as ``e`` (an alias) never does."""
    own_off = float(np.mean(d != e))
    for name, codes in others.items():
        c = np.asarray(codes).reshape(-1)
        if c.size != d.size or np.array_equal(c, e):
            continue
        off = float(np.mean(c != d))
        if off <= 1 - SAME and off * CLEARLY <= own_off:
            return name
    return None


def _narrow(count: int, weight: bool, code_min: int) -> str | None:
    """Every differing code -127 where the emulator's is -128: a narrow_range quantizer in the run."""
    head = f"every differing code ({count}) is {QMIN + 1} in the dump where the emulator's is {QMIN}: "
    if weight:
        return head + (f"the run coded this weight in [{QMIN + 1}, {QMAX}] (a narrow_range weight quantizer: another "
                       "quantizer configuration than this quantized.h5's, whose weights are coded in "
                       f"[{QMIN}, {QMAX}]); --target DPUCADF8H does not change it (a DPUCADF8H keeps weights in "
                       f"[{QMIN}, {QMAX}])")
    if code_min > QMIN:  # narrow activations are on already: the pattern cannot come from them
        return None
    return head + (f"the run codes activations in [{QMIN + 1}, {QMAX}] (narrow_range, as for a DPUCADF8H) while this "
                   f"quantized.h5's quantizers use [{QMIN}, {QMAX}]: compare with the quantized.h5 of that run")


def _one_sided(d: np.ndarray, e: np.ndarray, code_min: int) -> str | None:
    """Every differing code the emulator's +1 LSB (or every one -1), on at least MIN_TELLING values: a
    constant offset when every code but those at the limit differs, else a rounding that goes one way."""
    diff = d - e
    differ = diff != 0
    n = int(differ.sum())
    if n < MIN_TELLING:
        return None
    for k in (1, -1):
        if not np.all(diff[differ] == k):
            continue
        limit = QMAX if k > 0 else code_min
        head = f"every differing code ({n} of {d.size}) is the emulator's {k:+d} LSB"
        if np.all(differ | (e == limit)):
            return (head + f", and every code differs but those at the limit: a constant offset of {k:+d} LSB "
                    "(an offset or zero point added, or a rounding that always goes one way)")
        return (head + f", none {-k:+d}: the run rounds {'down' if k < 0 else 'up'} where the emulator rounds to "
                "nearest (another rounding mode: floor or truncation, a ceiling, or another rule for ties)")
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
