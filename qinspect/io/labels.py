"""Class labels for accuracy (``diagnose --labels``, File > Load class labels in the window)."""

from __future__ import annotations

import numpy as np

from qinspect.errors import QInspectError


def read_labels(path: str, n: int) -> np.ndarray:
    """A ``.npy`` of class labels covering ``n`` samples: one class index per sample (integers, shape [N])
    or one one-hot row (shape [N, classes]). Never unpickles; a bad file is a one-line error naming it."""
    try:
        y = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise QInspectError(f"is not a .npy array of labels ({exc})", path) from None
    if y.ndim not in (1, 2) or len(y) < n or not (np.issubdtype(y.dtype, np.integer) or y.ndim == 2):
        raise QInspectError(f"labels must cover the {n} measured samples: class indices (integers, shape [N]) "
                            f"or one-hot rows (shape [N, classes]); got shape {list(y.shape)} of {y.dtype}", path)
    return y
