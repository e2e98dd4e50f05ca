"""Desktop integration: what --install-desktop writes passes the freedesktop validators, and the MIME
types it installs make the desktop (GLib's gio, Qt) recognise real captures by their content."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile

import pytest
from capture_fixtures import write_tiny
from conftest import REFCASES, run_cli
from PIL import Image

from qinspect import desktop

TOOLS = {"desktop-file-validate": "desktop-file-utils", "appstreamcli": "appstream",
         "update-mime-database": "shared-mime-info", "gio": "libglib2.0-bin"}


def _tool(name: str) -> str:
    """The tool's path; CI must have it (scripts/sysdeps.sh installs it), elsewhere its absence skips."""
    exe = shutil.which(name)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: scripts/sysdeps.sh must install {TOOLS[name]}")
        pytest.skip(f"{name} not installed (apt-get install {TOOLS[name]})")
    return exe


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A per-user install into a fresh XDG data home, through the command line."""
    home = tmp_path_factory.mktemp("xdg data")  # a space in the path: Exec quoting is exercised
    result = run_cli("--install-desktop", env={"XDG_DATA_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return home


def test_install_writes_every_file_at_the_xdg_places(installed):
    app = desktop.APP_ID
    expected = [f"applications/{app}.desktop", f"metainfo/{app}.metainfo.xml", f"mime/packages/{app}.xml",
                f"icons/hicolor/scalable/apps/{app}.svg"]
    expected += [f"icons/hicolor/{n}x{n}/apps/{app}.png" for n in (16, 24, 32, 48, 64, 128, 256, 512)]
    for rel in expected:
        assert (installed / rel).is_file(), rel
    # Each PNG is the size its folder says (what icon themes look up).
    for png in (installed / "icons" / "hicolor").glob("*x*/apps/*.png"):
        width = int(png.parent.parent.name.split("x")[0])
        assert Image.open(png).size == (width, width)


def test_desktop_file_is_valid_and_runs_this_installation(installed):
    path = installed / "applications" / f"{desktop.APP_ID}.desktop"
    result = subprocess.run([_tool("desktop-file-validate"), str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout
    entry = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    assert entry["Icon"] == desktop.APP_ID
    assert entry["Exec"].endswith(" %f") and os.path.isabs(entry["Exec"].strip('"').split(" ")[0].strip('"'))
    assert {"application/x-qinspect-capture", "application/x-keras"} <= set(entry["MimeType"].split(";"))


def test_exec_quotes_paths_with_spaces_as_the_spec_asks():
    line = next(ln for ln in desktop.desktop_entry(["/opt/my apps/qinspect"]).splitlines() if ln.startswith("Exec="))
    assert line == 'Exec="/opt/my apps/qinspect" %f'
    line = next(ln for ln in desktop.desktop_entry(['/a$b/q"x']).splitlines() if ln.startswith("Exec="))
    assert line == 'Exec="/a\\\\$b/q\\\\"x" %f'


def test_appstream_metadata_is_valid_pedantic_and_matches_the_desktop_id(installed):
    path = installed / "metainfo" / f"{desktop.APP_ID}.metainfo.xml"
    # --no-net: URLs are not fetched (no network in CI); everything else is checked.
    result = subprocess.run([_tool("appstreamcli"), "validate", "--pedantic", "--no-net", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    issues = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:")]
    assert issues == [] and "Validation was successful" in result.stdout, result.stdout
    root = ET.parse(path).getroot()
    assert root.findtext("id") == desktop.APP_ID
    assert root.find("launchable").text == f"{desktop.APP_ID}.desktop"
    assert root.find("content_rating").get("type") == "oars-1.1"
    assert root.find("releases/release").get("version") == run_cli("--version").stdout.split()[1]


@pytest.fixture(scope="module")
def capture_file(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("cap") / "tiny.h5")


def _gio_type(path, home) -> str:
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    out = subprocess.run([_tool("gio"), "info", "-a", "standard::content-type", str(path)], capture_output=True,
                         text=True, timeout=60, env=env).stdout
    return out.strip().rsplit(" ", 1)[-1]


def test_the_desktop_recognises_captures_by_content(installed, capture_file, tmp_path):
    _tool("update-mime-database")  # run by --install-desktop; without it no database was built
    assert (installed / "mime" / "mime.cache").is_file()
    # The magic looks for the `format` attribute's string in the first 16 KiB: a real capture has it there.
    assert b"qinspect-capture" in capture_file.read_bytes()[:16384]
    renamed = tmp_path / "capture.data"
    shutil.copyfile(capture_file, renamed)
    keras = tmp_path / "model.keras"
    with zipfile.ZipFile(keras, "w") as zf:
        zf.writestr("config.json", "{}")
    assert _gio_type(capture_file, installed) == "application/x-qinspect-capture"
    assert _gio_type(renamed, installed) == "application/x-qinspect-capture"  # content, not name
    assert _gio_type(keras, installed) == "application/x-keras"
    model = REFCASES / "small" / "float.h5"
    if model.is_file():  # a Keras .h5 is HDF5 without the attribute: it stays plain HDF
        assert _gio_type(model, installed) == "application/x-hdf"


@pytest.mark.gui
def test_qt_recognises_captures_by_content(installed, capture_file):
    code = ("import sys\nfrom PySide6.QtCore import QMimeDatabase\n"
            "print(' '.join(QMimeDatabase().mimeTypeForFile(p).name() for p in sys.argv[1:]))")
    files = [str(capture_file)] + ([str(REFCASES / "small" / "float.h5")] if REFCASES.is_dir() else [])
    out = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XDG_DATA_HOME": str(installed)}).stdout.split()
    assert out == ["application/x-qinspect-capture", "application/x-hdf"][: len(files)]


def test_uninstall_removes_only_what_it_installed(tmp_path):
    home = tmp_path / "data"
    assert run_cli("--install-desktop", env={"XDG_DATA_HOME": str(home)}).returncode == 0
    edited = home / "metainfo" / f"{desktop.APP_ID}.metainfo.xml"
    edited.write_text(edited.read_text() + "<!-- mine -->\n")
    neighbour = home / "applications" / "other.desktop"
    neighbour.write_text("[Desktop Entry]\n")
    result = run_cli("--uninstall-desktop", env={"XDG_DATA_HOME": str(home)})
    assert result.returncode == 0
    assert f"kept {edited}" in result.stdout
    assert edited.is_file() and neighbour.is_file()
    assert not (home / "applications" / f"{desktop.APP_ID}.desktop").exists()
    assert not list((home / "icons").rglob("*.png"))
    assert not (home / "mime" / "packages" / f"{desktop.APP_ID}.xml").exists()


def test_install_keeps_the_users_own_files(tmp_path):
    """A launcher or MIME file the user wrote or edited was replaced without a word (uninstall keeps them)."""
    home = tmp_path / "data"
    (home / "applications").mkdir(parents=True)
    (home / "mime" / "packages").mkdir(parents=True)
    launcher = home / "applications" / f"{desktop.APP_ID}.desktop"
    launcher.write_text("[Desktop Entry]\nName=My customised qinspect\nExec=/opt/myqinspect %f\n")
    mime = home / "mime" / "packages" / f"{desktop.APP_ID}.xml"
    mime.write_text("<my-own-mime/>\n")
    result = run_cli("--install-desktop", env={"XDG_DATA_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "My customised qinspect" in launcher.read_text() and mime.read_text() == "<my-own-mime/>\n"
    assert f"kept {launcher}" in result.stdout and f"kept {mime}" in result.stdout
    assert (home / "metainfo" / f"{desktop.APP_ID}.metainfo.xml").is_file()  # the rest is installed
    # a launcher qinspect wrote from another installation (only its Exec differs) is still updated
    launcher.write_text(desktop.desktop_entry(["/elsewhere/qinspect"]))
    again = run_cli("--install-desktop", env={"XDG_DATA_HOME": str(home)})
    assert f"kept {launcher}" not in again.stdout and "/elsewhere/" not in launcher.read_text()


def test_a_file_where_a_desktop_folder_goes_is_named(tmp_path):
    """`applications` being a file gave "File exists"; the message names it and says what is wrong."""
    home = tmp_path / "data"
    home.mkdir()
    (home / "applications").write_text("mine")
    result = run_cli("--install-desktop", env={"XDG_DATA_HOME": str(home)})
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"{home / 'applications'}: is a file, not a folder" in result.stderr
    assert (home / "applications").read_text() == "mine"


def test_install_with_a_command_is_refused():
    result = run_cli("--install-desktop", "info", "x.h5")
    assert result.returncode == 2 and "take no command" in result.stderr


@pytest.mark.gui
def test_the_window_names_its_launcher():
    from qinspect.gui.app import application

    assert application().desktopFileName() == desktop.APP_ID
