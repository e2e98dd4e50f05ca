"""Model inputs for a capture: a ``.npy``/``.npz`` array or a folder of images, read batch by batch.

* ``.npy``: one array ``(N, ...)`` for a one-input model, memory-mapped (never loaded whole).
  ``.npz``: one array per model input, keyed by the input layer's name (a one-input model also takes
  an ``.npz`` with a single array of any name). Both read with ``allow_pickle=False``.
  Arrays are taken as already preprocessed and fed as float32, unless ``preprocess`` is given, in which
  case it is applied to the raw values as to image pixels (0..255).
* A folder of images (one-input models only), in file-name order, each converted to grayscale or
  RGB to match the model's channels, resized with Pillow (bilinear) to the model's input height and
  width, then scaled by ``preprocess`` (required for images):

  - ``0..255``: the pixels as float, unscaled (for models that carry their own ``Rescaling``, such as
    Keras's MobileNetV3 and EfficientNet)
  - ``0..1``: ``x / 255``
  - ``-1..1``: ``(x / 255 - 0.5) * 2``
  - ``caffe``: RGB -> BGR, minus the ImageNet BGR mean (103.939, 116.779, 123.68), no scaling
    (Keras ``imagenet_utils`` "caffe" mode); a one-channel model subtracts the mean of the three.

  A folder holding only sub-folders is a folder per class (``val/cat/*.jpg``, ``val/dog/*.jpg``, the
  layout of Keras's ``image_dataset_from_directory``): every class folder's images are read, taken in
  turn from each class so any first N samples cover the classes evenly, and the folders are the
  samples' labels (``InputSource.class_labels``; class ``i`` is the ``i``-th folder in sorted name order).
  Beside images of its own, a folder's sub-folders are not read (a warning names them), nor are the
  folders below a class folder.

  Files in the folder that are not images: hidden files (``.*``) are ignored; a file
  whose extension is not an image format Pillow knows (``notes.txt``, ``Thumbs.db``) is **skipped
  with a warning** listing them; a file with an image extension that does not decode (a damaged
  ``.jpg``) **fails** with an error naming it, because silently dropping a broken sample would
  change the calibration set without anyone noticing. So does an image of more than 8 bits a channel
  (16-bit PNG, float TIFF): converting it would clip or truncate its values. The source's ``notes``
  say what reading does (the order, resizes, channel conversions); a stretch to another aspect ratio
  is a warning. EXIF orientation is not applied (as Keras's ``load_img``).

Shapes are checked before anything runs: a mismatch is a one-line :class:`QInspectError` naming the
file, the expected and the found shape. Non-finite values (NaN, +Inf, -Inf) are counted batch by
batch (:func:`count_nonfinite`); the capture records them.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qinspect.errors import QInspectError
from qinspect.io.labels import ClassLabels, folder_labels_origin
from qinspect.io.paths import check_not_special

PREPROCESS = ("0..255", "0..1", "-1..1", "caffe")
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)

Shape = Sequence[int | None]


def preprocess_pixels(x: np.ndarray, mode: str) -> np.ndarray:
    """Scale raw pixel values (0..255, NHWC, channels 1 or 3 in RGB order) as ``mode`` says."""
    x = np.asarray(x, dtype=np.float32)
    if mode == "0..255":  # the model scales them itself (a Rescaling layer inside)
        return x
    if mode == "0..1":
        return x / np.float32(255.0)
    if mode == "-1..1":
        # As the fer package (and many Keras examples) do it: x/255, then (x - 0.5) * 2.
        return (x / np.float32(255.0) - np.float32(0.5)) * np.float32(2.0)
    if mode == "caffe":
        if x.shape[-1] == 3:
            return x[..., ::-1] - CAFFE_BGR_MEAN
        return x - np.float32(CAFFE_BGR_MEAN.mean())
    raise ValueError(f"unknown preprocess {mode!r}; one of {', '.join(PREPROCESS)}")


def count_nonfinite(x: np.ndarray) -> tuple[int, int, int]:
    """(NaN count, +Inf count, -Inf count) of an array."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return 0, 0, 0
    finite = np.isfinite(x)
    if finite.all():
        return 0, 0, 0
    return int(np.isnan(x).sum()), int(np.isposinf(x).sum()), int(np.isneginf(x).sum())


def _fmt(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if i == 0 and d is None else str(d) for i, d in enumerate(shape)) + ")"


def _fits(found: Sequence[int], expected: Shape) -> bool:
    """True if ``found`` (no batch axis) matches ``expected`` (None = any size)."""
    if len(found) != len(expected):
        return False
    return all(e is None or int(e) == int(f) for f, e in zip(found, expected, strict=True))


@dataclass
class InputSource:
    """Model inputs read lazily: ``batch(start, stop)`` returns ``{input name: float32 array}``."""

    path: str
    names: list[str]
    n_samples: int
    shapes: dict[str, tuple[int, ...]]  # per input, without the sample axis
    kind: str  # "npy", "npz" or "images"
    preprocess: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what reading does to the data (resizes, conversions, order)
    class_labels: ClassLabels | None = None  # the samples' classes, when the images come from class folders
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _files: list[str] = field(default_factory=list, repr=False)
    _mode: str = field(default="", repr=False)  # Pillow mode for images: "L" or "RGB"

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start:stop`` of every input, as float32."""
        if self.kind == "images":
            raw = np.stack([self._load_image(f) for f in self._files[start:stop]])
            return {self.names[0]: preprocess_pixels(raw, self.preprocess or "0..1")}
        out = {}
        for name in self.names:
            x = np.asarray(self._arrays[name][start:stop])
            out[name] = preprocess_pixels(x, self.preprocess) if self.preprocess else x.astype(np.float32)
        return out

    @property
    def files(self) -> list[str]:
        """The image files, in the order they are fed (empty for arrays)."""
        return list(self._files)

    def _load_image(self, file: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        height, width, channels = self.shapes[self.names[0]]
        try:
            with Image.open(file) as img:
                img = img.convert(self._mode).resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.float32)
        except Image.DecompressionBombError as exc:
            raise QInspectError(_too_large(exc), file) from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise QInspectError(f"not a readable image ({_one_line(exc)})", file) from None
        return array.reshape(height, width, channels)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def open_inputs(
    path: str | os.PathLike[str],
    input_shapes: dict[str, Shape],
    *,
    samples: int | None = None,
    preprocess: str | None = None,
) -> InputSource:
    """Open INPUTS for a model whose inputs are ``{name: shape without the batch axis}``.

    ``samples`` keeps the first N samples. Raises :class:`QInspectError` for a missing or unreadable
    file, a shape that does not fit, or an image folder without usable images.
    """
    path = os.fspath(path)
    if preprocess is not None and preprocess not in PREPROCESS:
        raise QInspectError(f"unknown --preprocess {preprocess!r}; use one of {', '.join(PREPROCESS)}", path)
    if not os.path.exists(path):
        raise QInspectError("no such file or folder", path)
    check_not_special(path)
    if os.path.isdir(path):
        source = _open_folder(path, input_shapes, preprocess)
    elif path.endswith(".npz") or zipfile.is_zipfile(path):
        source = _open_npz(path, input_shapes, preprocess)
    else:
        source = _open_npy(path, input_shapes, preprocess)
    if samples is not None:
        if samples < 1:
            raise QInspectError(f"--samples must be at least 1 (got {samples})", path)
        if samples > source.n_samples:
            source.warnings.append(fewer_samples(path, samples, source.n_samples))
        source.n_samples = min(samples, source.n_samples)
        source._files = source._files[: source.n_samples]
        if source.class_labels is not None:
            source.class_labels = source.class_labels.first(source.n_samples)
    if source.n_samples == 0:
        raise QInspectError("holds no samples", path)
    return source


def _check_shape(path: str, name: str, found: Sequence[int], expected: Shape, multi: bool) -> None:
    if len(found) < 1 or not _fits(found[1:], expected):
        which = f" for input {name!r}" if multi else ""
        raise QInspectError(
            f"inputs have shape {tuple(found)}; the model expects {_fmt([None, *expected])}{which}", path
        )


def _check_dtype(path: str, array: np.ndarray) -> None:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == bool):
        raise QInspectError(f"inputs have dtype {array.dtype}; a numeric array is needed", path)


def _open_npy(path: str, input_shapes: dict[str, Shape], preprocess: str | None) -> InputSource:
    if len(input_shapes) != 1:
        raise QInspectError(
            f"the model has {len(input_shapes)} inputs ({', '.join(input_shapes)}); give an .npz with one "
            "array per input name",
            path,
        )
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise QInspectError("not a readable .npy file (no NumPy header); give a .npy, .npz or image folder", path)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        # allow_pickle=False refuses object arrays: they would run code from the file.
        raise QInspectError(f"not a numeric .npy array ({_one_line(exc)})", path) from None
    except (OSError, EOFError) as exc:
        raise QInspectError(f"not a readable .npy file ({_one_line(exc)})", path) from None
    if not isinstance(array, np.ndarray):
        raise QInspectError("not a .npy array", path)
    _check_dtype(path, array)
    (name, expected), = input_shapes.items()
    _check_shape(path, name, array.shape, expected, False)
    return InputSource(path, [name], int(array.shape[0]), {name: tuple(array.shape[1:])}, "npy",
                       preprocess, _arrays={name: array})


# An .npz member expanding more than this many times, past 64 MiB, is not data (a zip bomb).
_MAX_NPZ_RATIO = 1000


def _check_npz_sizes(path: str) -> None:
    """Refuse an .npz whose members declare far more bytes than they store, before decompressing any."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise QInspectError(f"not a readable .npz file ({_one_line(exc)})", path) from None
    for info in members:
        if info.file_size > (64 << 20) and info.file_size > _MAX_NPZ_RATIO * max(info.compress_size, 1):
            raise QInspectError(f"{info.filename} declares {info.file_size:,} bytes from {info.compress_size:,} "
                                "stored: not an array (damaged or forged)", path)


def fewer_samples(path: str, asked: int, held: int, kept: bool = False) -> str:
    """The warning for ``--samples`` above what the data holds (``kept``: a capture's samples with full tensors)."""
    return f"{path}: asked for {asked} samples, it holds {held}{' with full tensors' if kept else ''}; using all"


def _open_npz(path: str, input_shapes: dict[str, Shape], preprocess: str | None) -> InputSource:
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except MemoryError:
        raise QInspectError("too large to load into memory (an .npz is read whole; save the inputs as .npy, "
                            "which is read batch by batch)", path) from None
    except ValueError as exc:
        raise QInspectError(f"not a numeric .npz archive ({_one_line(exc)})", path) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise QInspectError(f"not a readable .npz file ({_one_line(exc)})", path) from None
    names = list(input_shapes)
    notes = []
    if len(names) == 1 and len(data) == 1:
        (key, array), = data.items()
        if key != names[0]:
            notes.append(f"{path}: its one array {key!r} is taken for the model's input {names[0]!r}")
        data = {names[0]: array}
    missing = [n for n in names if n not in data]
    if missing:
        raise QInspectError(
            f"no array for model input(s) {', '.join(missing)} (the archive holds {', '.join(data) or 'nothing'})",
            path,
        )
    counts = set()
    for name in names:
        _check_dtype(path, data[name])
        _check_shape(path, name, data[name].shape, input_shapes[name], len(names) > 1)
        counts.add(int(data[name].shape[0]))
    if len(counts) > 1:
        raise QInspectError(f"inputs hold different sample counts {sorted(counts)}", path)
    arrays = {n: data[n] for n in names}
    return InputSource(path, names, counts.pop(), {n: tuple(a.shape[1:]) for n, a in arrays.items()}, "npz",
                       preprocess, notes=notes, _arrays=arrays)


def image_extensions() -> set[str]:
    """File extensions (lower case, with the dot) Pillow can open."""
    from PIL import Image

    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _open_folder(path: str, input_shapes: dict[str, Shape], preprocess: str | None) -> InputSource:
    if len(input_shapes) != 1:
        raise QInspectError(f"the model has {len(input_shapes)} inputs; an image folder feeds only one", path)
    (name, expected), = input_shapes.items()
    if len(expected) != 3 or expected[-1] not in (1, 3) or expected[0] is None or expected[1] is None:
        raise QInspectError(
            f"an image folder needs a model input of fixed size (H, W, 1 or 3); this model's is "
            f"{_fmt([None, *expected])}",
            path,
        )
    if preprocess is None:
        raise QInspectError(f"an image folder needs --preprocess ({' | '.join(PREPROCESS)})", path)
    images, skipped, folders = _scan(path, image_extensions())
    warnings = []
    labels = None
    if not images and folders:
        images, labels, warnings, order_note = _class_folders(path, folders)
    else:
        order_note = (f"{len(images)} image(s) fed in file-name order (by code point: 'B.png' before 'a.png', "
                      "'img10' before 'img2'): sample i is the i-th")
        if folders:
            warnings.append(f"{path}: ignored {len(folders)} sub-folder(s) ({', '.join(folders[:3])}): only the "
                            "folder's own images are read (a folder holding only class folders is read per class)")
    if skipped:
        warnings.insert(0, _skipped_warning(path, skipped))
    if not images:
        raise QInspectError("the folder holds no image files" + (
            f" in its {len(folders)} class folder(s) ({', '.join(folders[:3])})" if folders else ""), path)
    height, width, channels = (int(d) for d in expected)
    mode = "L" if channels == 1 else "RGB"
    notes, warned = _identify(images, (width, height), mode)
    warnings.extend(f"{path}: {w}" for w in warned)
    notes = [f"{path}: {order_note}", *(f"{path}: {n}" for n in notes)]
    return InputSource(path, [name], len(images), {name: (height, width, channels)}, "images", preprocess,
                       warnings, notes, class_labels=labels, _files=images, _mode=mode)


def _scan(folder: str, extensions: set[str]) -> tuple[list[str], list[str], list[str]]:
    """A folder's image files (paths), other files and sub-folders (names), each in name order; hidden
    entries (``.*``) are left out."""
    images, skipped, folders = [], [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry.name)
        elif os.path.splitext(entry.name)[1].lower() in extensions:
            images.append(entry.path)
        else:
            skipped.append(entry.name)
    return images, skipped, folders


def _skipped_warning(folder: str, skipped: list[str]) -> str:
    listed = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    return f"{folder}: skipped {len(skipped)} file(s) that are not images: {listed}"


def _class_folders(path: str, classes: list[str]) -> tuple[list[str], ClassLabels, list[str], str]:
    """A folder of class folders (``val/cat/*.jpg``, ``val/dog/*.jpg``): the images of every class,
    taken in turn from each class (its first image, then every class's second, ...) so that any first
    N samples, the ones the diagnosis measures, cover the classes evenly, and their labels: class ``i``
    is the ``i``-th folder in sorted name order, as Keras's ``image_dataset_from_directory`` numbers
    them (an empty class folder still takes its number). Folders below a class folder are not read."""
    extensions = image_extensions()
    per_class, warnings, empty = [], [], []
    for cls in classes:
        folder = os.path.join(path, cls)
        images, skipped, deeper = _scan(folder, extensions)
        per_class.append(images)
        if skipped:
            warnings.append(_skipped_warning(folder, skipped))
        if deeper:
            warnings.append(f"{folder}: ignored {len(deeper)} sub-folder(s) ({', '.join(deeper[:3])}): a class "
                            "folder's own images are read, not the folders below it")
        if not images:
            empty.append(cls)
    if empty and len(empty) < len(classes):
        warnings.append(f"{path}: {len(empty)} class folder(s) hold no images ({', '.join(empty[:3])}); they still "
                        "number as classes")
    files, values = [], []
    for turn in range(max(len(images) for images in per_class)):
        for index, images in enumerate(per_class):
            if turn < len(images):
                files.append(images[turn])
                values.append(index)
    labels = ClassLabels(np.asarray(values, dtype=np.int64), folder_labels_origin(path, classes), tuple(classes))
    note = (f"{len(files)} image(s) from {len(classes)} class folder(s), taken in turn from each class (every "
            "class's first image, then every class's second, ...; each folder in file-name order), so the first "
            "samples cover the classes evenly; the class folders are the samples' labels (class i is the i-th "
            "folder in sorted name order)")
    return files, labels, warnings, note


# Pillow modes holding more than 8 bits a channel: converting them to L/RGB clips at 255 (16-bit) or
# truncates (float 0..1 to 0), so the model would see other pixels than the file holds.
WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}


def _identify(files: list[str], size: tuple[int, int], mode: str) -> tuple[list[str], list[str]]:
    """Fail early, naming the file, on an image-named file Pillow cannot identify or whose pixels do not
    fit 8 bits (reads headers only); return what loading will do to the others: notes (resizes,
    conversions) and warnings (images stretched to another aspect ratio)."""
    from PIL import Image, UnidentifiedImageError

    resized = stretched = 0
    converted: Counter[str] = Counter()
    for file in files:
        check_not_special(file)
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; qinspect refuses both alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(file) as img:
                    img_mode, img_size = img.mode, img.size
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise QInspectError(_too_large(exc), file) from None
            except (UnidentifiedImageError, OSError) as exc:
                raise QInspectError(f"not a readable image ({_one_line(exc)})", file) from None
        if img_mode in WIDE_MODES:
            raise QInspectError(f"a {WIDE_MODES[img_mode]} image (Pillow mode {img_mode}): image folders are read as "
                                "8-bit pixels, and converting it would clip or truncate its values; convert it to "
                                "8 bits, or give the model's inputs as a .npy", file)
        if img_size != size:
            resized += 1
            stretched += abs(img_size[0] * size[1] - img_size[1] * size[0]) > 0.01 * img_size[0] * size[1]
        if img_mode != mode:
            converted[img_mode] += 1
    notes, warned = [], []
    if resized:
        notes.append(f"{resized} image(s) resized (bilinear) to {size[0]}x{size[1]}")
    if stretched:
        warned.append(f"{stretched} image(s) stretched to the model's aspect ratio ({size[0]}x{size[1]}; not cropped)")
    if converted:
        kinds = ", ".join(f"{n} from {m}" for m, n in sorted(converted.items()))
        notes.append(f"image(s) converted to {mode} ({kinds}" + ("; alpha dropped" if any(
            "A" in m for m in converted) else "") + ")")
    return notes, warned


def _too_large(exc: BaseException) -> str:
    """The one-line refusal of an image Pillow will not decode (a decompression bomb)."""
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return (f"image too large to decode safely ({size}; the limit is {Image.MAX_IMAGE_PIXELS:,}): "
            "resize it or leave it out")
