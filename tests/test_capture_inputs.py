"""Capture inputs: arrays and image folders, shapes, preprocessing, non-image files, NaN (no TF)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qinspect.errors import QInspectError
from qinspect.io.inputs import count_nonfinite, open_inputs, preprocess_pixels

SHAPE = {"in": [8, 6, 3]}


def test_npy_is_read_lazily_and_as_float32(tmp_path):
    x = np.arange(5 * 8 * 6 * 3, dtype=np.float64).reshape(5, 8, 6, 3)
    np.save(tmp_path / "x.npy", x)
    src = open_inputs(tmp_path / "x.npy", SHAPE, samples=3)
    assert src.n_samples == 3 and src.kind == "npy"
    assert isinstance(src._arrays["in"], np.memmap)  # never loaded whole
    batch = src.batch(1, 3)["in"]
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, x[1:3])


def test_wrong_shape_names_file_and_both_shapes(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 6, 1), np.float32))
    with pytest.raises(QInspectError) as info:
        open_inputs(tmp_path / "x.npy", SHAPE)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "x.npy"))
    assert "(4, 8, 6, 1)" in message and "(N, 8, 6, 3)" in message


def test_variable_size_input_accepts_any(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 7, 3), np.float32))
    assert open_inputs(tmp_path / "x.npy", {"in": [None, None, 3]}).shapes == {"in": (5, 7, 3)}


def test_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}] * 2, dtype=object), allow_pickle=True)
    with pytest.raises(QInspectError, match="not a numeric .npy"):
        open_inputs(tmp_path / "x.npy", {"in": []})


def test_not_npy(tmp_path):
    (tmp_path / "x.npy").write_text("hello")
    with pytest.raises(QInspectError, match="not a readable .npy"):
        open_inputs(tmp_path / "x.npy", SHAPE)
    with pytest.raises(QInspectError, match="no such file"):
        open_inputs(tmp_path / "missing.npy", SHAPE)


def test_npz_by_input_name(tmp_path):
    a = np.ones((3, 2), np.float32)
    b = np.zeros((3, 4), np.float32)
    np.savez(tmp_path / "x.npz", first=a, second=b)
    src = open_inputs(tmp_path / "x.npz", {"first": [2], "second": [4]})
    assert src.names == ["first", "second"] and src.n_samples == 3
    np.testing.assert_array_equal(src.batch(0, 3)["second"], b)
    with pytest.raises(QInspectError, match="no array for model input"):
        open_inputs(tmp_path / "x.npz", {"first": [2], "third": [4]})
    np.savez(tmp_path / "y.npz", first=a, second=np.zeros((2, 4)))
    with pytest.raises(QInspectError, match="different sample counts"):
        open_inputs(tmp_path / "y.npz", {"first": [2], "second": [4]})


def test_single_array_npz_feeds_a_one_input_model(tmp_path):
    np.savez(tmp_path / "x.npz", anything=np.ones((2, 8, 6, 3)))
    assert open_inputs(tmp_path / "x.npz", SHAPE).n_samples == 2


def test_preprocess_modes_by_hand():
    px = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(preprocess_pixels(px, "0..1"), [[[[0.0, 0.5, 1.0]]]])
    np.testing.assert_allclose(preprocess_pixels(px, "-1..1"), [[[[-1.0, 0.0, 1.0]]]])
    # caffe: R,G,B -> B,G,R, minus the BGR ImageNet mean.
    np.testing.assert_allclose(
        preprocess_pixels(px, "caffe"), [[[[255.0 - 103.939, 127.5 - 116.779, 0.0 - 123.68]]]], rtol=1e-6
    )
    gray = np.full((1, 1, 1, 1), 100.0, np.float32)
    np.testing.assert_allclose(preprocess_pixels(gray, "caffe"), [[[[100.0 - (103.939 + 116.779 + 123.68) / 3]]]],
                               rtol=1e-6)


def _image_folder(tmp_path, n=3, size=(12, 10), mode="RGB"):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img{i}.png")
    return folder


def test_image_folder_resized_converted_scaled(tmp_path):
    folder = _image_folder(tmp_path)
    src = open_inputs(folder, SHAPE, preprocess="0..1")
    x = src.batch(0, 3)["in"]
    assert x.shape == (3, 8, 6, 3) and x.dtype == np.float32
    expected = np.asarray(Image.open(folder / "img1.png").resize((6, 8), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_allclose(x[1], expected / 255, rtol=1e-6)
    gray = open_inputs(folder, {"in": [8, 6, 1]}, preprocess="-1..1").batch(0, 1)["in"]
    expected_gray = np.asarray(Image.open(folder / "img0.png").convert("L").resize((6, 8), Image.Resampling.BILINEAR),
                               np.float32)
    np.testing.assert_allclose(gray[0, :, :, 0], (expected_gray / 255 - 0.5) * 2, rtol=1e-6, atol=1e-7)


def test_image_folder_0_255_feeds_the_pixels_unscaled(tmp_path):
    """For models with their own Rescaling (MobileNetV3, EfficientNet): pixels as float, unscaled."""
    folder = _image_folder(tmp_path)
    x = open_inputs(folder, SHAPE, preprocess="0..255").batch(0, 3)["in"]
    expected = np.asarray(Image.open(folder / "img2.png").resize((6, 8), Image.Resampling.BILINEAR), np.float32)
    assert x.dtype == np.float32 and x.max() > 1.5
    np.testing.assert_array_equal(x[2], expected)
    assert preprocess_pixels(np.array([0, 255], np.uint8), "0..255").tolist() == [0.0, 255.0]


def test_image_folder_skips_non_image_files_with_a_warning(tmp_path):
    folder = _image_folder(tmp_path)
    (folder / "notes.txt").write_text("calibration set v2")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    (folder / "sub").mkdir()
    src = open_inputs(folder, SHAPE, preprocess="0..1")
    assert src.n_samples == 3
    assert [p.rsplit("/", 1)[-1] for p in src.files] == ["img0.png", "img1.png", "img2.png"]
    (skip,) = [w for w in src.warnings if "skipped" in w]
    assert "notes.txt" in skip and "skipped 1" in skip
    (sub,) = [w for w in src.warnings if "sub-folder" in w]
    assert "ignored 1 sub-folder(s) (sub)" in sub


def test_image_folder_says_what_reading_does_to_the_images(tmp_path):
    """Resizing, stretching to another aspect ratio, channel conversion and the sample order were silent."""
    folder = _image_folder(tmp_path)  # 12x10 RGB images for an 6x8 (w x h) input: another aspect ratio
    Image.fromarray(np.zeros((8, 6), np.uint8), "L").save(folder / "gray.png")  # the model's size, grayscale
    src = open_inputs(folder, SHAPE, preprocess="0..1")
    assert any("3 image(s) stretched to the model's aspect ratio" in w for w in src.warnings)
    assert any("3 image(s) resized (bilinear) to 6x8" in n for n in src.notes)
    assert any("converted to RGB (1 from L)" in n for n in src.notes)
    assert any("file-name order" in n for n in src.notes)
    assert [p.rsplit("/", 1)[-1] for p in src.files] == ["gray.png", "img0.png", "img1.png", "img2.png"]


@pytest.mark.parametrize("mode, what", [("I;16", "16-bit"), ("F", "32-bit float")])
def test_image_folder_refuses_wider_than_8_bit_pixels_naming_the_file(tmp_path, mode, what):
    """A 16-bit PNG was clipped at 255 (99.6% of the pixels 255) and a float TIFF truncated to zeros."""
    folder = _image_folder(tmp_path)
    if mode == "F":
        Image.fromarray(np.full((8, 6), 0.5, np.float32), "F").save(folder / "wide.tif")
    else:
        Image.fromarray(np.full((8, 6), 40000, np.uint16)).save(folder / "wide.png")
    with pytest.raises(QInspectError, match=f"a {what} image") as info:
        open_inputs(folder, SHAPE, preprocess="0..1")
    assert "wide." in str(info.value)


def _class_tree(tmp_path, counts):
    """``train/<class>/<i>.png``, image ``i`` of class ``c`` filled with the value ``10 * c + i``."""
    root = tmp_path / "train"
    for c, (cls, n) in enumerate(counts.items()):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 6, 3), 10 * c + i, np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_a_folder_of_class_folders_feeds_every_class_in_turn_with_its_labels(tmp_path):
    """A folder per class (the Keras image_dataset_from_directory layout) was refused; it is now read, the
    classes taken in turn so any first N samples cover them, and the folders are the labels."""
    root = _class_tree(tmp_path, {"dogs": 3, "cats": 1, "birds": 2})  # sorted: birds=0, cats=1, dogs=2
    src = open_inputs(root, SHAPE, preprocess="0..255")
    names = [p.split("/")[-2] + "/" + p.split("/")[-1] for p in src.files]
    assert names == ["birds/0.png", "cats/0.png", "dogs/0.png", "birds/1.png", "dogs/1.png", "dogs/2.png"]
    assert src.class_labels.values.tolist() == [0, 1, 2, 0, 2, 2]
    assert src.class_labels.classes == ("birds", "cats", "dogs")
    assert "class i is the i-th folder in sorted name order" in src.class_labels.origin
    pixels = src.batch(0, 6)["in"][:, 0, 0, 0]
    assert pixels.tolist() == [20, 10, 0, 21, 1, 2]  # each image is the one its label names (10 * dict order + i)
    assert any("taken in turn from each class" in n for n in src.notes)
    first = open_inputs(root, SHAPE, preprocess="0..255", samples=4)
    assert first.class_labels.values.tolist() == [0, 1, 2, 0]


def test_class_folders_warn_about_what_they_leave_out(tmp_path):
    root = _class_tree(tmp_path, {"a": 1, "b": 1})
    (root / "c").mkdir()  # empty: still class 2
    (root / "a" / "deeper").mkdir()
    (root / "b" / "notes.txt").write_text("x")
    src = open_inputs(root, SHAPE, preprocess="0..1")
    assert src.class_labels.classes == ("a", "b", "c") and src.class_labels.values.tolist() == [0, 1]
    text = " | ".join(src.warnings)
    assert "1 class folder(s) hold no images (c)" in text
    assert "ignored 1 sub-folder(s) (deeper)" in text
    assert "skipped 1 file(s) that are not images: notes.txt" in text


def test_class_folders_without_images_are_refused(tmp_path):
    root = tmp_path / "train"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
    with pytest.raises(QInspectError, match=r"no image files in its 2 class folder\(s\) \(cats, dogs\)"):
        open_inputs(root, SHAPE, preprocess="0..1")


def test_image_folder_damaged_image_fails_naming_it(tmp_path):
    folder = _image_folder(tmp_path)
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(QInspectError) as info:
        open_inputs(folder, SHAPE, preprocess="0..1")
    assert str(folder / "broken.jpg") in str(info.value)


def test_image_folder_needs_preprocess_and_images(tmp_path):
    folder = _image_folder(tmp_path)
    with pytest.raises(QInspectError, match="needs --preprocess"):
        open_inputs(folder, SHAPE)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(QInspectError, match="no image files"):
        open_inputs(empty, SHAPE, preprocess="0..1")
    with pytest.raises(QInspectError, match="fixed size"):
        open_inputs(folder, {"in": [None, None, 3]}, preprocess="0..1")


def test_count_nonfinite():
    x = np.array([1.0, np.nan, np.inf, -np.inf, np.nan], np.float32)
    assert count_nonfinite(x) == (2, 1, 1)
    assert count_nonfinite(np.ones(3)) == (0, 0, 0)
    assert count_nonfinite(np.ones(3, np.uint8)) == (0, 0, 0)


def test_samples_must_be_positive(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 6, 3), np.float32))
    with pytest.raises(QInspectError, match="at least 1"):
        open_inputs(tmp_path / "x.npy", SHAPE, samples=0)
    src = open_inputs(tmp_path / "x.npy", SHAPE, samples=5)
    assert src.n_samples == 2 and "holds 2" in src.warnings[0]


@pytest.mark.parametrize("command", ["capture", "diagnose", "calibrate", "emulate"])
def test_the_readme_spelling_preprocess_minus_one_to_one_parses(command):
    """`--preprocess -1..1`, as the README writes it, was refused ('expected one argument'): argparse reads a
    value starting with a dash as an option."""
    from qinspect.cli import _joined_dash_values, build_parser

    argv = [command, "m.h5", "--inputs", "imgs", "--preprocess", "-1..1"] + (["-o", "c.h5"] if command == "capture"
                                                                             else [])
    assert build_parser().parse_args(_joined_dash_values(argv)).preprocess == "-1..1"
