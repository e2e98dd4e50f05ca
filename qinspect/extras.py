"""What to install for an optional feature: the exact command, read from the installed package's metadata.

The extras (``gui``, ``capture``, ``demo``) are declared once, in pyproject.toml. Messages about a missing
package quote the extra's requirements as the installed metadata lists them, for the Python that is
running, so the command printed installs into the right environment (a venv, a pipx venv) at the right
versions. The frozen app cannot add packages: its messages point to the pip-installed command line.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import sys

DISTRIBUTION = "qinspect"


def is_frozen() -> bool:
    """True inside the PyInstaller app (no pip, no TensorFlow)."""
    return bool(getattr(sys, "frozen", False))


def extra_requirements(extra: str, requires: list[str] | None = None) -> list[str]:
    """The requirement strings of ``extra`` for this Python, from ``requires`` (by default the installed
    metadata's Requires-Dist; [] when qinspect is not installed), without the extra's marker."""
    if requires is None:
        try:
            requires = importlib.metadata.requires(DISTRIBUTION) or []
        except importlib.metadata.PackageNotFoundError:
            return []
    extra_clause = re.compile(r"""\s*(?:and\s+)?extra\s*==\s*["']""" + re.escape(extra) + r"""["']""")
    found = []
    for line in requires:
        requirement, _, markers = line.partition(";")
        if not extra_clause.search(markers):
            continue
        rest = re.sub(r"^and\s+|\s+and$", "", extra_clause.sub("", markers).strip())  # the extra, first or last
        if rest and _python_version_clause(rest) is False:
            continue  # for another Python
        keep_marker = rest and _python_version_clause(rest) is None
        found.append(requirement.strip() + (f"; {rest}" if keep_marker else ""))
    return found


def _python_version_clause(marker: str) -> bool | None:
    """The value of a lone ``python_version == / != "X.Y"`` marker here; None for any other marker."""
    match = re.fullmatch(r"""\(?\s*python_version\s*(==|!=)\s*["']([\d.]+)["']\s*\)?""", marker)
    if not match:
        return None
    here = "{}.{}".format(*sys.version_info[:2])
    return (here == match.group(2)) == (match.group(1) == "==")


def pip_command(*requirements: str, no_deps: bool = False) -> str:
    """``python -m pip install ...`` for the running interpreter, quoted for a POSIX shell."""
    words = [sys.executable, "-m", "pip", "install", *(["--no-deps"] if no_deps else []), *requirements]
    return " ".join(shlex.quote(word) for word in words)


def install_command(extra: str) -> str:
    """The one command that adds the packages of ``extra`` to this installation."""
    if is_frozen():
        return f"pipx install '{DISTRIBUTION}[{extra}]'"
    return pip_command(*(extra_requirements(extra) or [f"{DISTRIBUTION}[{extra}]"]))


def missing_message(feature: str, extra: str, module: str | None) -> str:
    """One line: what needs what, which module is missing, and the command that installs it."""
    if is_frozen():
        return (f"{feature} needs {module or 'packages'}, which this packaged app does not include; "
                f"install qinspect with pip for that: {install_command(extra)}")
    missing = f"{module} is not installed" if module else "a package is missing"
    return f"{feature} needs the '{extra}' extra ({missing}): {install_command(extra)}"


def first_missing(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that cannot be imported here (looked up, not imported), else None."""
    import importlib.util

    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ImportError, ValueError):
            return module
    return None
