"""The cause a dumped tensor's codes show, on hand-made codes: each pattern found, and none claimed on noise."""

from __future__ import annotations

import numpy as np

from qinspect.dpu.mismatch_cause import mismatch_cause

RNG = np.random.default_rng(7)
EMU = RNG.integers(-60, 61, size=2 * 500).astype(np.int8)  # two samples of 500 codes


def test_another_fix_position_is_read_from_a_power_of_two_scale():
    doubled = np.clip(EMU.astype(int) * 2, -128, 127)  # made one position higher: every code twice as large
    text = mismatch_cause(doubled, EMU, 2, pos=6)
    assert text.startswith("the dump's codes are the emulator's times 2 (100.0%")
    assert "fix position 7 where the quantized model has 6" in text
    # made one position lower from the same floats: half, each rounded its own way (within 1 LSB)
    floats = EMU.astype(float) + RNG.uniform(-0.5, 0.5, EMU.size)
    halved = np.round(floats / 2)
    text = mismatch_cause(halved, EMU, 2, pos=6)
    assert "times 1/2" in text and "fix position 5 where the quantized model has 6" in text


def test_an_int8_file_its_own_float_copy_contradicts_was_edited():
    dump = EMU.copy()
    dump[[3, 99, 700]] += 2
    float_copy = EMU.astype(np.float32) / 2**6  # dump_model's float file: the codes it dequantized
    text = mismatch_cause(dump, EMU, 2, pos=6, float_copy=float_copy)
    assert "agrees with the emulator at all 3 differing values" in text and "edited or damaged" in text
    # a float copy that agrees with the int8 file (a consistent dump) says nothing of the kind
    assert mismatch_cause(dump, EMU, 2, pos=6, float_copy=dump.astype(np.float32) / 2**6) is None


def test_exchanged_samples_another_tensors_file_and_saturation():
    swapped = EMU.reshape(2, -1)[::-1].reshape(-1)
    assert mismatch_cause(swapped, EMU, 2).startswith("the dump's sample 0 is the emulator's sample 1 here")
    other = RNG.integers(-100, 100, EMU.size).astype(np.int8)
    assert "holds the codes of relu7" in mismatch_cause(other, EMU, 2, others={"relu7": other, "x": EMU[:10]})
    pinned = EMU.copy()
    pinned[[5, 50, 500]] = 127
    assert "every differing code of the dump (3) sits at the int8 limit" in mismatch_cause(pinned, EMU, 2)


def test_no_cause_on_rounding_noise_or_too_few_telling_values():
    noisy = EMU.astype(int) + (RNG.random(EMU.size) < 0.3) * RNG.choice([-1, 1], EMU.size)
    assert mismatch_cause(noisy, EMU, 2, pos=6) is None
    sparse = np.zeros(1000, np.int8)
    sparse[:6] = [3, -2, 5, 1, 2, 4]  # six nonzero codes: no scale can be read from them
    assert mismatch_cause(sparse * 2, sparse, 1, pos=4) is None
    assert mismatch_cause(EMU, EMU, 2) is None



def test_a_dump_coded_from_minus_127_names_a_narrow_range_target():
    emu = EMU.copy()
    emu[[5, 40, 612]] = -128  # the emulator's full-range codes saturate low here ...
    dump = emu.copy()
    dump[[5, 40, 612]] = -127  # ... where the run held them at -127 (a DPUCADF8H)
    text = mismatch_cause(dump, emu, 2, pos=6)
    assert "in [-127, 127], as a DPUCADF8H does" in text and "--target DPUCADF8H" in text
    dump[612] = -126  # not that pattern: one differing code is not -127
    assert "DPUCADF8H" not in (mismatch_cause(dump, emu, 2, pos=6) or "")
