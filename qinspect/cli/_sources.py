"""One opener for every sub-command: a Keras ``.h5``/``.keras`` model, a qinspect capture, or a
TensorFlow SavedModel folder, each as a ModelSource.

The core (:func:`qinspect.io.model_file.open_model`) never imports TensorFlow, so it refuses a
SavedModel folder with :class:`NeedsTensorFlowError`; here that folder goes to
:mod:`qinspect.capture.savedmodel`, the one place allowed to read it.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def open_any(path: str | os.PathLike[str]) -> Any:
    """A ModelSource for any model-like path; SavedModel folders go through TensorFlow."""
    from qinspect.io.model_file import NeedsTensorFlowError, open_model

    try:
        return open_model(path)
    except NeedsTensorFlowError as exc:
        if "tensorflow" not in sys.modules:
            # Reading a SavedModel runs no TensorFlow op, and oneDNN's start-up notice (which also drags
            # absl's "before InitializeLog" warning onto stderr) would break the one-line error rule.
            os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        try:
            from qinspect.capture.savedmodel import open_savedmodel
        except ImportError:
            raise exc from None
        return open_savedmodel(path)


def is_capture_source(source: Any) -> bool:
    """True for a capture, opened by ``open_any`` or as :class:`Capture` (it holds the calibration inputs)."""
    from qinspect.io.capture_file import Capture

    return isinstance(source, Capture) or getattr(source, "kind", "") == "capture"
