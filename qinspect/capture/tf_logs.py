"""TensorFlow's C++ start-up log, kept off a command line user's terminal."""

from __future__ import annotations

import os


def quiet_tensorflow_logs() -> None:
    """Hide TensorFlow's C++ log below FATAL unless the user set ``TF_CPP_MIN_LOG_LEVEL``; call before importing it.

    The full ``tensorflow`` wheel (the one the ``capture`` extra installs, since tf_keras requires it)
    logs "failed call to cuInit" at ERROR level on every machine without a CUDA driver. Failures that
    matter reach qinspect as Python exceptions and are reported in its own one-line form.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
