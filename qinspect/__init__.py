"""qinspect: see where and why int8 quantization for Xilinx/AMD DPUs hurts a Keras model."""

import importlib.metadata


def _installed_version() -> str:
    # pyproject.toml is the one place the version is written; an installed (or editable, or frozen with
    # its metadata) qinspect reports it from there. A bare source tree on sys.path says it is unknown.
    try:
        return importlib.metadata.version("qinspect")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()
