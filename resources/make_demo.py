"""Build the demo captures into the source tree (``make demo``); ``qinspect demo`` builds them per user.

The recipe (the fer mini-Xception on scikit-image's LFW crops) is :mod:`qinspect.capture.demo`.

Run: ``python resources/make_demo.py -o resources/demo/demo_capture.h5``: writes ``demo_capture.h5`` and
``demo_eval.h5`` in the folder of ``-o``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qinspect.capture.demo import CAPTURE_NAME, build, build_demo, face_inputs, fer_model_path  # noqa: F401
from qinspect.errors import QInspectError


def main(argv: list[str] | None = None) -> int:
    """Build demo_capture.h5 and demo_eval.h5 beside ``-o``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("-o", "--output", type=Path, default=here / "demo" / CAPTURE_NAME)
    args = parser.parse_args(argv)
    if args.output.name != CAPTURE_NAME:
        parser.error(f"-o must name a file called {CAPTURE_NAME} (demo_eval.h5 is written beside it)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        build_demo(args.output.resolve().parent)
    except QInspectError as exc:
        print(f"make_demo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
