"""HDF5 files that keep data in other files are refused before anything reads them.

A capture or model from elsewhere could store a dataset's bytes in another file ("external storage") or
link a name to another file, which h5py follows on read: qinspect read /dev/zero or any local file into
"inputs" and "activations" (and into reports), and blocked forever on a named pipe, where `info` could not
even be stopped with SIGTERM."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from capture_fixtures import write_tiny
from conftest import REFCASES, run_cli


def _replace_with_external(path, dataset: str, target: str) -> None:
    with h5py.File(path, "r+") as f:
        shape, dtype = f[dataset].shape, f[dataset].dtype
        del f[dataset]
        f.create_dataset(dataset, shape=shape, dtype=dtype,
                         external=[(target, 0, int(np.prod(shape)) * dtype.itemsize)])


def _one_line(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_capture_whose_inputs_live_in_another_file_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4096, dtype=np.float32).tobytes())
    cap = write_tiny(tmp_path / "cap.h5")
    name = next(iter(h5py.File(cap, "r")["inputs"]))
    _replace_with_external(cap, f"inputs/{name}", str(secret))
    for command in ("info", "emulate"):
        _one_line(run_cli(command, str(cap)), f"/inputs/{name} stores its data in another file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_link_to_a_named_pipe_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cap = write_tiny(tmp_path / "cap.h5")
    with h5py.File(cap, "r+") as f:
        name = next(iter(f["inputs"]))
        del f[f"inputs/{name}"]
        f[f"inputs/{name}"] = h5py.ExternalLink(str(fifo), "/x")
    _one_line(run_cli("info", str(cap), timeout=60), f"/inputs/{name} links to {str(fifo)!r}")


def test_a_model_whose_weights_live_in_another_file_is_refused(tmp_path):
    model = tmp_path / "float.h5"
    model.write_bytes((REFCASES / "small" / "float.h5").read_bytes())
    with h5py.File(model, "r") as f:
        kernels = []
        f.visititems(lambda n, o: kernels.append(n) if isinstance(o, h5py.Dataset) and "kernel" in n else None)
    _replace_with_external(model, kernels[0], os.devnull)
    _one_line(run_cli("info", str(model)), "stores its data in another file")


def test_a_format_attribute_that_is_an_array_is_one_line(tmp_path):
    """`format = [1, 2]` at the root: comparing it with the capture format raised numpy's "truth value of an
    array is ambiguous" (a 20-line traceback)."""
    model = tmp_path / "float.h5"
    model.write_bytes((REFCASES / "small" / "float.h5").read_bytes())
    with h5py.File(model, "r+") as f:
        f.attrs["format"] = np.array([1, 2])
    result = run_cli("info", str(model))
    assert result.returncode == 0 or (result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1), \
        result.stderr
    assert "Traceback" not in result.stderr


def test_a_truncated_quantized_model_is_called_truncated(tmp_path):
    """Half a Vitis quantized.h5 given as --positions was "not a Vitis quantized model", which sent users
    looking for another file rather than a broken copy."""
    src = (REFCASES / "small" / "quantized.h5").read_bytes()
    half = tmp_path / "quantized.h5"
    half.write_bytes(src[: len(src) // 2])
    result = run_cli("emulate", str(REFCASES / "small" / "float.h5"), "--positions", str(half),
                     "--inputs", str(REFCASES / "small" / "calib.npy"))
    _one_line(result, "damaged or truncated HDF5 file")
