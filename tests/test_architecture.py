"""The arrows of DESIGN.md hold: the core imports neither Qt nor TensorFlow, and works without them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

from conftest import REFCASES, REPO

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("PySide6", "pyqtgraph", "tensorflow", "tf_keras", "keras", "superqt")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the core must not need it")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run_blocked(body: str) -> subprocess.CompletedProcess:
    code = BLOCKER + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(REPO / ".venv" / "bin")) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency"
    result = subprocess.run([exe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_packages_import_with_qt_and_tensorflow_blocked():
    result = _run_blocked(
        """
        import pkgutil, importlib, qinspect
        for pkg in ("io", "dpu", "analysis", "report"):
            mod = importlib.import_module(f"qinspect.{pkg}")
            for info in pkgutil.walk_packages(mod.__path__, prefix=f"qinspect.{pkg}."):
                importlib.import_module(info.name)
        # every CLI module registers its parser without Qt or TensorFlow
        from qinspect.cli import build_parser
        build_parser().format_help()
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_core_commands_work_with_qt_and_tensorflow_blocked():
    small = REFCASES / "small"
    if not small.is_dir():
        import pytest

        pytest.skip("reference cases not available")
    result = _run_blocked(
        f"""
        from qinspect.cli import main
        rc = main(["info", {str(small / "float.h5")!r}, "--json"])
        assert rc == 0, rc
        """
    )
    assert result.returncode == 0, result.stderr
    assert '"layers"' in result.stdout


def test_ruff_is_clean():
    exe = shutil.which("ruff", path=str(REPO / ".venv" / "bin")) or shutil.which("ruff")
    assert exe, "ruff is a test dependency"
    result = subprocess.run([exe, "check", "."], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
