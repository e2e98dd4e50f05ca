"""What the window remembers between runs: last folder, window geometry and layout, metric, recent files,
and the quantizer options the model is emulated under.

Stored with ``QSettings``. ``QINSPECT_SETTINGS`` (an ini file path) overrides the platform location, so
tests and CI use an isolated file and never touch (or read) the user's own settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from qinspect.dpu.options import QuantizerOptions

MAX_RECENT = 10
ENV_VAR = "QINSPECT_SETTINGS"


class Settings:
    """Typed access to the persisted settings."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        path = path or os.environ.get(ENV_VAR)
        if path:
            from qinspect.io.paths import check_settings_file

            check_settings_file(path)  # never write settings over a file the window did not write
            self._qs = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self._qs = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "qinspect", "qinspect")

    @property
    def file_name(self) -> str:
        """Where the settings are stored."""
        return self._qs.fileName()

    def sync(self) -> None:
        """Write pending changes to disk."""
        self._qs.sync()

    # --- last folder -------------------------------------------------------------------------------
    def last_folder(self) -> str:
        """The folder of the last file opened (the home folder at first)."""
        folder = str(self._qs.value("files/last_folder", "") or "")
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    def set_last_folder(self, folder: str | os.PathLike[str]) -> None:
        """Remember ``folder`` for the next file dialog."""
        self._qs.setValue("files/last_folder", str(folder))

    # --- recent files ------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        """Recently opened files, newest first, only those that still exist."""
        value = self._qs.value("files/recent", [])
        if isinstance(value, str):  # QSettings gives a bare string for a one-element list in ini files
            value = [value]
        return [p for p in (value or []) if p and Path(p).exists()]

    def add_recent_file(self, path: str | os.PathLike[str]) -> list[str]:
        """Put ``path`` first in the recent list (deduplicated, at most MAX_RECENT); return the list."""
        path = str(Path(path).resolve())
        files = [path] + [p for p in self.recent_files() if p != path]
        files = files[:MAX_RECENT]
        self._qs.setValue("files/recent", files)
        self.set_last_folder(Path(path).parent)
        return files

    def clear_recent_files(self) -> None:
        """Forget the recent files."""
        self._qs.setValue("files/recent", [])

    # --- metric ------------------------------------------------------------------------------------
    def metric(self) -> str:
        """The chosen error metric ("sqnr", "mse" or "cosine")."""
        value = str(self._qs.value("view/metric", "sqnr") or "sqnr")
        return value if value in ("sqnr", "mse", "cosine") else "sqnr"

    def set_metric(self, metric: str) -> None:
        """Remember the chosen metric."""
        self._qs.setValue("view/metric", metric)

    # --- window ------------------------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        """Saved ``QMainWindow.saveGeometry()`` bytes, if any."""
        value = self._qs.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def window_state(self) -> QByteArray | None:
        """Saved ``QMainWindow.saveState()`` bytes (docks, toolbars), if any."""
        value = self._qs.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window(self, geometry: QByteArray, state: QByteArray) -> None:
        """Remember the window's geometry and dock layout."""
        self._qs.setValue("window/geometry", geometry)
        self._qs.setValue("window/state", state)

    # --- quantizer options -------------------------------------------------------------------------
    def quantizer_options(self) -> QuantizerOptions:
        """The vai_q_tensorflow2 options the window emulates under (the quantizer's defaults at first,
        or when the stored value is unreadable)."""
        raw = self._qs.value("quantizer/options", "")
        try:
            return QuantizerOptions.from_dict(json.loads(str(raw))) if raw else QuantizerOptions()
        except (ValueError, TypeError):
            return QuantizerOptions()

    def set_quantizer_options(self, options: QuantizerOptions) -> None:
        """Remember the quantizer options."""
        self._qs.setValue("quantizer/options", json.dumps(options.to_dict()))
