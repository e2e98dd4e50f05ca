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


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (once) with the process's stderr pointed at /dev/null meanwhile.

    Its C++ start-up notices (oneDNN's "custom operations are on", absl's "All log messages before
    absl::InitializeLog() ...") are printed on import whatever ``TF_CPP_MIN_LOG_LEVEL`` says, so a capture's
    one-line error came out as five lines. An import that fails still raises its Python exception, which
    qinspect reports in its own words."""
    import sys

    if "tensorflow" in sys.modules:
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        import tensorflow  # noqa: F401
        return
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
