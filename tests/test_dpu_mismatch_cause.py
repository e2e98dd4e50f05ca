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
    dump[[5, 40, 612]] = -127  # ... where the run held them at -127 (a narrow_range quantization)
    text = mismatch_cause(dump, emu, 2, pos=6)
    assert "the run codes activations in [-127, 127] (narrow_range, as for a DPUCADF8H)" in text
    # --target DPUCADF8H refuses a full-range quantized.h5: it is never the advice
    assert "compare with the quantized.h5 of that run" in text and "--target" not in text
    dump[612] = -126  # not that pattern: one differing code is not -127
    assert "DPUCADF8H" not in (mismatch_cause(dump, emu, 2, pos=6) or "")


def test_a_weight_coded_from_minus_127_is_said_to_be_a_weight_not_narrow_activations():
    """Audit s34 F2: weight codes held at -127 were "the run codes activations in [-127, 127] ... (compare with
    --target DPUCADF8H)", a flag that changes no weight (a DPUCADF8H keeps weights in [-128, 127])."""
    emu = EMU[:500].copy()
    emu[[7, 77]] = -128
    dump = emu.copy()
    dump[[7, 77]] = -127
    text = mismatch_cause(dump, emu, pos=7, weight=True)
    assert "the run coded this weight in [-127, 127]" in text and "activations" not in text
    assert "does not change it" in text and "compare with --target" not in text
    # narrow activations already on (the emulator's lowest code is -127): no narrow-range advice at all
    assert mismatch_cause(dump, emu, pos=7, code_min=-127) is None


def test_an_alias_of_the_same_codes_is_never_a_swapped_file():
    """Audit s34 F1: a Flatten of the tensor (the same codes) was offered as "another tensor" and accepted at
    99.9% equal, so three changed codes read "the files of two tensors are swapped or misnamed"."""
    emu = RNG.integers(-60, 61, size=2 * 8192).astype(np.int8)  # relu2's size: 3 codes are under 0.1% of it
    dump = emu.copy()
    dump[[3, 50, 700]] += 2
    flatten = emu.copy()  # what a Flatten / Reshape of this tensor holds
    assert mismatch_cause(dump, emu, 2, others={"quant_flatten": flatten}) is None
    # another tensor that differs from the dump about as often as this one's own codes explains nothing better
    near = dump.copy()
    near[[9, 90]] += 1
    assert mismatch_cause(dump, emu, 2, others={"other": near}) is None
    # one that holds the dump's codes exactly, where this tensor's own differ at every other value, is the swap
    other = RNG.integers(-100, 100, EMU.size).astype(np.int8)
    assert "holds the codes of relu7" in mismatch_cause(other, EMU, 2, others={"relu7": other})


def test_same_size_codes_leaves_out_a_flatten_of_the_tensor():
    from qinspect.dpu.emulator import Emulator
    from qinspect.dpu.executor import Evaluator, same_size_codes
    from tests.dpu_graph_fixtures import refcase

    root = refcase("small")
    emu = Emulator.from_quantized(root / "quantized.h5")
    vals = Evaluator(emu.graph, "int").run({"input": np.load(root / "dump_inputs.npy")})
    relu2 = vals["quant_relu2"].codes().reshape(-1)
    # small's quant_flatten flattens quant_relu2: the same codes in the same order
    np.testing.assert_array_equal(vals["quant_flatten"].codes().reshape(-1), relu2)
    assert "quant_flatten" not in same_size_codes(vals, "quant_relu2", relu2.size)


def test_a_constant_offset_and_a_one_sided_rounding_are_named():
    """Audit s34 F6: every code +1 LSB, or some codes -1 LSB and none +1, got no cause."""
    plus = np.clip(EMU.astype(int) + 1, -128, 127)
    text = mismatch_cause(plus, EMU, 2, pos=6)
    assert f"every differing code ({EMU.size} of {EMU.size}) is the emulator's +1 LSB" in text
    assert "a constant offset of +1 LSB" in text
    floats = EMU.astype(float) + RNG.uniform(-0.5, 0.5, EMU.size)  # values the emulator rounded half up
    down = np.floor(floats)  # the run rounded the same values down: -1 LSB where the fraction was >= 0.5
    assert np.array_equal(np.floor(floats + 0.5), EMU)
    text = mismatch_cause(down, EMU, 2, pos=6)
    assert "is the emulator's -1 LSB, none +1: the run rounds down" in text
    few = EMU.copy()
    few[[1, 2, 3, 4, 5]] -= 1  # five codes: too few to read a rounding from
    assert mismatch_cause(few, EMU, 2, pos=6) is None


def test_a_model_input_quantized_with_another_rounding_is_named_from_its_float_copy():
    x = RNG.uniform(-1.5, 1.5, 600).astype(np.float32)
    halfup = np.clip(np.floor(x * 64 + 0.5), -128, 127)  # the DPU's quantizer: HALF_UP at position 6
    floor = np.clip(np.floor(x * 64), -128, 127)
    trunc = np.clip(np.trunc(x * 64), -128, 127)
    text = mismatch_cause(floor, halfup, pos=6, source=x, source_name="input_float.bin")
    assert "every code of the dump is input_float.bin times 2^6 rounded down (floor)" in text
    assert "quantized with another rounding" in text
    text = mismatch_cause(trunc, halfup, pos=6, source=x, source_name="input_float.bin")
    assert "truncated toward zero" in text
    positive = np.abs(x)  # no negative value: floor and truncation give the same codes
    text = mismatch_cause(np.floor(positive * 64), np.floor(positive * 64 + 0.5), pos=6, source=positive)
    assert "floor, or truncation" in text
    # codes that are the emulator's plus noise are no rounding of the input
    noisy = halfup.copy()
    noisy[[1, 10, 100]] += 1
    assert "another rounding" not in (mismatch_cause(noisy, halfup, pos=6, source=x) or "")
