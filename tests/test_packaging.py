"""Installing qinspect: extras and their install hints, one version source, LICENSE in wheel and sdist."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import tarfile
import textwrap
import types
import zipfile

import pytest
import tomllib
from conftest import REFCASES, REPO, run_cli

from qinspect import extras

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# Requires-Dist as setuptools writes it for pyproject.toml's extras (copied from a built wheel).
WHEEL_REQUIRES = [
    "numpy>=1.26",
    'PySide6-Essentials!=6.12.0,>=6.7; python_version == "3.11" and extra == "gui"',
    'PySide6-Essentials>=6.7; python_version != "3.11" and extra == "gui"',
    'pyqtgraph>=0.13.7; extra == "gui"',
    'tensorflow>=2.16; extra == "capture"',
    'tf_keras>=2.16; extra == "capture"',
    'somepkg>=1; sys_platform == "linux" and extra == "capture"',
    'otherpkg>=2; extra == "demo" and python_version == "3.12"',
]


def _python(monkeypatch, major: int, minor: int) -> None:
    monkeypatch.setattr(extras, "sys", types.SimpleNamespace(version_info=(major, minor, 0), executable="/x y/python",
                                                             frozen=False))


def test_extra_requirements_pick_this_pythons_lines(monkeypatch):
    _python(monkeypatch, 3, 11)
    assert extras.extra_requirements("gui", WHEEL_REQUIRES) == ["PySide6-Essentials!=6.12.0,>=6.7",
                                                               "pyqtgraph>=0.13.7"]
    _python(monkeypatch, 3, 12)
    assert extras.extra_requirements("gui", WHEEL_REQUIRES) == ["PySide6-Essentials>=6.7", "pyqtgraph>=0.13.7"]
    # A marker it does not evaluate is kept for pip to evaluate.
    assert extras.extra_requirements("capture", WHEEL_REQUIRES) == [
        "tensorflow>=2.16", "tf_keras>=2.16", 'somepkg>=1; sys_platform == "linux"']
    assert extras.extra_requirements("demo", WHEEL_REQUIRES) == ["otherpkg>=2"]
    assert extras.extra_requirements("test", WHEEL_REQUIRES) == []


def test_install_command_targets_the_running_python(monkeypatch):
    _python(monkeypatch, 3, 11)
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: WHEEL_REQUIRES)
    words = shlex.split(extras.install_command("gui"))
    assert words == ["/x y/python", "-m", "pip", "install", "PySide6-Essentials!=6.12.0,>=6.7", "pyqtgraph>=0.13.7"]


def test_frozen_app_points_to_pipx(monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert extras.install_command("capture") == "pipx install 'qinspect[capture]'"


def test_pyproject_extras_give_one_tensorflow_and_the_gui_pin_only_where_it_breaks():
    optional = PYPROJECT["project"]["optional-dependencies"]
    capture = [req.split(">")[0].split("=")[0].strip() for req in optional["capture"]]
    # tf_keras requires the `tensorflow` distribution: naming tensorflow-cpu too would install two.
    assert "tf_keras" in capture and "tensorflow" in capture and "tensorflow-cpu" not in capture
    pyside = [req for req in optional["gui"] if req.startswith("PySide6")]
    assert pyside == ["PySide6-Essentials>=6.7,!=6.12.0; python_version == '3.11'",
                      "PySide6-Essentials>=6.7; python_version != '3.11'"]


def test_version_comes_from_the_installed_metadata():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"qinspect {importlib.metadata.version('qinspect')}"
    assert importlib.metadata.version("qinspect") == PYPROJECT["project"]["version"]


def test_license_is_spdx_and_the_apache_text():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert {"Homepage", "Issues", "Source"} <= set(PYPROJECT["project"]["urls"])


# --- missing optional packages: one line, with the command that installs them ----------------------

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Block())
{frozen}
from qinspect.cli import main
raise SystemExit(main({argv!r}))
"""


def _run_without(blocked: tuple[str, ...], argv: list[str], frozen: bool = False, cwd=None):
    code = BLOCKER.format(blocked=blocked, argv=argv, frozen="sys.frozen = True" if frozen else "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=cwd or REPO)


def _one_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_window_without_qt_names_the_pip_command():
    line = _one_line(_run_without(("PySide6", "pyqtgraph"), ["gui"]))
    assert "the inspector window needs the 'gui' extra (PySide6 is not installed)" in line
    words = shlex.split(line.split("): ", 1)[1])
    assert words[:4] == [sys.executable, "-m", "pip", "install"] and any(w.startswith("PySide6") for w in words)


def test_capture_without_tensorflow_names_the_pip_command(tmp_path):
    out = tmp_path / "cap.h5"
    model, inputs = REFCASES / "small" / "float.h5", REFCASES / "small" / "calib.npy"
    if not model.is_file():
        pytest.skip("reference cases not found")
    line = _one_line(_run_without(("tensorflow", "tf_keras", "keras"),
                                  ["capture", str(model), "--inputs", str(inputs), "-o", str(out)]))
    assert line.startswith(f"qinspect: error: {model}: capturing needs the 'capture' extra (tensorflow is not")
    assert f"{sys.executable} -m pip install" in line.replace("'", "")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_frozen_app_says_capture_is_not_inside(tmp_path):
    model = REFCASES / "small" / "float.h5"
    if not model.is_file():
        pytest.skip("reference cases not found")
    line = _one_line(_run_without(("tensorflow", "tf_keras", "keras"),
                                  ["capture", str(model), "--inputs", str(model), "-o", str(tmp_path / "c.h5")],
                                  frozen=True))
    assert "capturing needs tensorflow, which this packaged app does not include" in line
    assert line.endswith(": pipx install 'qinspect[capture]'")


def test_demo_without_scikit_image_says_what_to_install(tmp_path):
    line = _one_line(_run_without(("skimage",), ["demo", "-o", str(tmp_path / "demo")]))
    assert "building the demo needs packages that are missing; run:" in line
    assert "scikit-image" in line or "qinspect[demo]" in line
    assert not (tmp_path / "demo").exists()


def test_demo_already_built_is_not_rebuilt(tmp_path):
    from capture_fixtures import write_tiny

    (tmp_path / "demo").mkdir()
    built = write_tiny(tmp_path / "demo" / "demo_capture.h5")
    before = built.read_bytes()
    result = run_cli("demo", "-o", str(built.parent))
    assert result.returncode == 0 and "already built" in result.stdout
    assert built.read_bytes() == before
    # a file of that name that is no capture is not "already built": refused, and left as it was
    built.write_bytes(b"mine")
    result = run_cli("demo", "-o", str(built.parent))
    assert result.returncode == 2 and "is not a qinspect capture" in result.stderr
    assert built.read_bytes() == b"mine"


# --- what a wheel and an sdist carry ----------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The folder holding the wheel and the sdist `python -m build` makes of this tree."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@pytest.mark.slow
def test_wheel_and_sdist_carry_the_license_and_the_desktop_files(built):
    wheel = next(built.glob("qinspect-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Dist: tf_keras>=2.16; extra == \"capture\"" in metadata
    for packaged in ("qinspect/resources/desktop/io.github.qinspect.qinspect.desktop",
                     "qinspect/resources/desktop/io.github.qinspect.qinspect.metainfo.xml",
                     "qinspect/resources/desktop/io.github.qinspect.qinspect.mime.xml",
                     "qinspect/resources/icons/256x256.png", "qinspect/resources/qinspect.svg",
                     "qinspect/report/templates/report.html.j2"):
        assert packaged in names
    sdist = next(built.glob("qinspect-*.tar.gz"))
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"LICENSE", "packaging/qinspect.spec", "docs/capture-format.md", "Makefile"} <= members
    assert not any(m.startswith("resources/demo/") for m in members)


@pytest.mark.slow
def test_the_extras_resolve_to_one_tensorflow_and_the_matching_tf_keras(built, tmp_path):
    """What `pip install 'qinspect[gui,capture,demo]'` would install, resolved by pip against the index."""
    wheel = next(built.glob("qinspect-*.whl"))
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report), f"{wheel}[gui,capture,demo]"],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and not os.environ.get("CI") and "No matching distribution" in result.stderr:
        pytest.skip("the package index is not reachable here")
    assert result.returncode == 0, result.stderr[-2000:]
    installs = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    tensorflows = sorted(name for name in installs if name.startswith("tensorflow") and "io" not in name)
    assert tensorflows == ["tensorflow"], tensorflows
    assert installs["tf-keras"].split(".")[:2] == installs["tensorflow"].split(".")[:2]
    assert "keras" in installs and "pyside6-essentials" in installs and "scikit-image" in installs
    assert not any(name.startswith(("torch", "opencv")) for name in installs)
