"""Where qinspect keeps per-user files: the XDG base directories (``$XDG_DATA_HOME``, default ~/.local/share)."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """``$XDG_DATA_HOME`` when set to an absolute path (as the XDG spec requires), else ~/.local/share."""
    value = os.environ.get("XDG_DATA_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / ".local" / "share"


def demo_folder() -> Path:
    """The folder ``qinspect demo`` builds the demo captures into."""
    return data_home() / "qinspect" / "demo"
