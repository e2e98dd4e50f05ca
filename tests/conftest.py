"""Fixtures every test area shares: where the Vitis reference cases are, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Qt tests run headless unless a test asks for a real (Xvfb) display itself.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# TensorFlow's start-up chatter would bury test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
REFCASES = REPO.parent / "shared" / "refcases" / "vitis"


@pytest.fixture(scope="session")
def refcases() -> Path:
    """The folder holding the real Vitis AI quantizer runs (``small``, ``rich``)."""
    if not REFCASES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"reference cases missing at {REFCASES}: CI must have shared/ beside the clone")
        pytest.skip(f"reference cases not found at {REFCASES}")
    return REFCASES


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m qinspect ARGS`` as a user would, capturing text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "qinspect", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture()
def cli():
    """The :func:`run_cli` helper as a fixture."""
    return run_cli
