"""The window writes its settings over the whole file on exit: `gui --settings cap.h5 cap.h5` turned the
capture it opened into INI text, and `--settings notes.txt` wiped a user's notes. A settings path is used
only when it is missing, empty, or INI text with the window's own sections; anything else is refused in one
line (exit 2) before the window opens, and the file is left as it was."""

from __future__ import annotations

import os

import pytest

from qinspect.errors import QInspectError
from qinspect.io.paths import check_settings_file


def test_files_the_window_did_not_write_are_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("user notes\n")
    binary = tmp_path / "cap.h5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    foreign_ini = tmp_path / "other.ini"
    foreign_ini.write_text("[database]\npassword=x\n")
    link = tmp_path / "link.ini"
    os.symlink(tmp_path / "missing.ini", link)
    for path, words in ((notes, "is not a qinspect settings file"), (binary, "is not a qinspect settings file"),
                        (foreign_ini, "is not a qinspect settings file"), (tmp_path, "is a folder"),
                        (link, "symbolic link"), (tmp_path / "no" / "s.ini", "folder does not exist")):
        with pytest.raises(QInspectError, match=words):
            check_settings_file(path)
    assert notes.read_text() == "user notes\n"


def test_its_own_files_and_new_ones_are_used(tmp_path):
    check_settings_file(tmp_path / "new.ini")
    (tmp_path / "empty.ini").write_text("")
    check_settings_file(tmp_path / "empty.ini")
    own = tmp_path / "own.ini"
    own.write_text("[files]\nlast_folder=/tmp\n\n[window]\ngeometry=@ByteArray(\\x1\\xd9\\xd0)\n[General]\nx=1\n")
    check_settings_file(own)


def test_the_window_writes_nothing_over_a_refused_file(tmp_path):
    """Through the window's own settings object too (the QINSPECT_SETTINGS route), not only the CLI."""
    pytest.importorskip("PySide6")
    from qinspect.gui.settings import Settings

    notes = tmp_path / "notes.txt"
    notes.write_text("user notes\n")
    with pytest.raises(QInspectError):
        Settings(notes)
    assert notes.read_text() == "user notes\n"
    s = Settings(tmp_path / "fresh.ini")
    s.set_last_folder(tmp_path)
    s.sync()
    check_settings_file(tmp_path / "fresh.ini")  # what it writes, it accepts again


def test_the_cli_refuses_in_one_line(tmp_path):
    from conftest import run_cli

    cap = tmp_path / "cap.h5"
    cap.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    before = cap.read_bytes()
    done = run_cli("gui", "--settings", str(cap), str(cap), env={"QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "is not a qinspect settings file" in done.stderr and cap.read_bytes() == before
