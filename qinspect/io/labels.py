"""Class labels for accuracy: a ``.npy`` (``--labels``, File > Load class labels in the window), or the
class folders an image folder was read from (kept in the capture as ``/labels``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qinspect.errors import QInspectError, first_line


@dataclass(frozen=True)
class ClassLabels:
    """The classes of samples in data order, and where they come from (said beside every accuracy).

    ``values``: one class index per sample, or one one-hot row per sample (a ``.npy`` may hold either).
    ``classes``: the class names in index order when the labels come from class folders (folder ``i`` in
    sorted name order is class ``i``); empty for a file, which names no classes."""

    values: np.ndarray
    origin: str
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.values)

    def first(self, n: int) -> ClassLabels:
        """The labels of the first ``n`` samples."""
        return ClassLabels(self.values[:n], self.origin, self.classes)


def read_labels(path: str, n: int) -> np.ndarray:
    """A ``.npy`` of class labels covering ``n`` samples: one class index per sample (integers, shape [N])
    or one one-hot row (shape [N, classes]). Never unpickles; a bad file is a one-line error naming it."""
    from qinspect.io.paths import check_not_special

    check_not_special(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise QInspectError(f"cannot read the labels ({exc.strerror or exc})", path) from None
    if magic != b"\x93NUMPY":  # numpy would call any other file "pickled data"
        what = "an .npz archive" if magic.startswith(b"PK") else "no .npy header"
        raise QInspectError(f"is not a .npy array of labels ({what}; save one array of labels with np.save)", path)
    try:
        # memory-mapped: a forged header declaring terabytes is refused by its size, not allocated
        y = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError, MemoryError) as exc:
        raise QInspectError(f"is not a .npy array of labels ({first_line(exc) or type(exc).__name__})", path) from None
    y = np.asarray(y[:max(n, 0) or None]) if y.ndim in (1, 2) else y
    if y.ndim not in (1, 2) or len(y) < n or not (np.issubdtype(y.dtype, np.integer) or y.ndim == 2):
        raise QInspectError(f"labels must cover the {n} measured samples: class indices (integers, shape [N]) "
                            f"or one-hot rows (shape [N, classes]); got shape {list(y.shape)} of {y.dtype}", path)
    return y


def labels_file(path: str, n: int) -> ClassLabels:
    """:func:`read_labels` with its origin (the file)."""
    return ClassLabels(read_labels(path, n), f"the file {path}")


def folder_labels_origin(folder: str, classes: list[str] | tuple[str, ...]) -> str:
    """How labels read from class folders are described beside an accuracy."""
    shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
    return (f"the {len(classes)} class folders of {folder} ({shown}): class i is the i-th folder in sorted "
            "name order, as Keras's image_dataset_from_directory numbers them")
