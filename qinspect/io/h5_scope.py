"""An HDF5 file qinspect reads must hold its own data.

HDF5 can keep a dataset's bytes in another file ("external storage") and link a name to an object in
another file (an external link); h5py follows both when the object is read. A capture or model from
elsewhere could then make qinspect read any local path into "activations" (and into a shareable report),
or block forever on a named pipe (``info`` could not even be stopped with SIGTERM). Both are refused,
before anything reads an object, by walking the file's links and datasets (metadata only).
"""

from __future__ import annotations

from typing import Any

import h5py

from qinspect.errors import QInspectError


def refuse_outside_data(h5: h5py.File, path: str) -> None:
    """Refuse ``h5`` if any of its names links to another file, or any dataset stores its data in one.
    Low-level walks: the high-level ones took 340 ms on a 1622-object MobileNetV2 capture, these ~70 ms."""
    found: list[str] = []

    def link(name: bytes, info: Any) -> int | None:
        if info.type == h5py.h5l.TYPE_EXTERNAL:
            target = h5.id.links.get_val(name)
            found.append(f"/{name.decode(errors='replace')} links to {target[0].decode(errors='replace')!r}")
            return 1  # stop: one is enough to refuse
        return None

    h5.id.links.visit(link, info=True)
    if not found:
        datasets: list[bytes] = []

        def collect(name: bytes, info: Any) -> None:
            if info.type == h5py.h5o.TYPE_DATASET:
                datasets.append(name)

        h5py.h5o.visit(h5.id, collect, info=True)
        for name in datasets:
            if h5py.h5o.open(h5.id, name).get_create_plist().get_external_count() > 0:
                found.append(f"/{name.decode(errors='replace')} stores its data in another file")
                break
    if found:
        raise QInspectError(f"{found[0]} (HDF5 external storage or link): qinspect reads only what the file "
                            "itself holds", path)
