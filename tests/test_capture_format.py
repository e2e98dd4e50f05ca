"""The capture file format: round trip, lazy reading, versioning, damaged files, atomic writes (no TF)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from capture_fixtures import N_SAMPLES, TinyWeights, tiny_data, tiny_graph, write_tiny

from qinspect.errors import QInspectError, UnsupportedFormatError
from qinspect.io.capture_file import Capture, CaptureWriter, escape_name, samples_per_chunk, unescape_name


@pytest.fixture()
def capture_path(tmp_path):
    return write_tiny(tmp_path / "c.h5")


@pytest.mark.parametrize("compression", [None, "lzf", "gzip"])
def test_round_trip_of_every_tensor(tmp_path, compression):
    data = tiny_data(1)
    path = write_tiny(tmp_path / "c.h5", data, batch=3, compression=compression)
    with Capture.open(path) as cap:
        assert cap.n_samples == N_SAMPLES
        assert cap.layers_with_activations() == ["input", "outer/conv", "dense"]
        for name in ("outer/conv", "dense"):
            np.testing.assert_array_equal(cap.activation(name), data[name])
            assert cap.activation(name).dtype == np.float32
        # The model input's "activation" is the stored input itself (a soft link, not a copy).
        np.testing.assert_array_equal(cap.activation("input"), data["input"])
        np.testing.assert_array_equal(cap.inputs(), data["input"])
        np.testing.assert_array_equal(cap.inputs("input"), data["input"])
        assert cap.input_names() == ["input"]
        assert cap.activation_shape("dense") == (N_SAMPLES, 4, 4, 5)
        assert cap.attrs["format"] == "qinspect-capture" and cap.attrs["version"] == "1.3"
        assert cap.attrs["preprocess"] == "0..1"
        assert cap.graph.source_format == "capture" and cap.graph["outer/conv"].parent == "outer"
    with h5py.File(path, "r") as h5:
        assert isinstance(h5["activations"].get("input", getlink=True), h5py.SoftLink)


def test_weights_keep_names_and_order(capture_path):
    with Capture.open(capture_path) as cap:
        conv = cap.weights("outer/conv")
        assert list(conv) == ["kernel", "bias"]
        np.testing.assert_array_equal(conv["kernel"], TinyWeights.arrays["outer/conv"]["kernel"])
        np.testing.assert_array_equal(conv["bias"], [0.5, -0.5])
        assert cap.weights("input") == {}
        with pytest.raises(KeyError):
            cap.weights("nope")


@pytest.mark.parametrize(
    "samples",
    [slice(2, 7), slice(None, None, 3), slice(None, None, -2), [7, 1, 1, 3], np.array([9, 0]),
     np.array([], dtype=int), [-1, 2], np.arange(10) % 3 == 0],
)
def test_sample_selection(capture_path, samples):
    data = tiny_data()["dense"]
    with Capture.open(capture_path) as cap:
        np.testing.assert_array_equal(cap.activation("dense", samples), data[samples])


def test_single_sample_and_out_of_range(capture_path):
    data = tiny_data()["outer/conv"]
    with Capture.open(capture_path) as cap:
        np.testing.assert_array_equal(cap.activation("outer/conv", 4), data[4])
        with pytest.raises(IndexError):
            cap.activation("outer/conv", [0, N_SAMPLES])
        with pytest.raises(KeyError):
            cap.activation("missing")


def test_names_with_slashes_are_escaped_and_kept(capture_path):
    for name in ["a/b", "a%2Fb", ".hidden", "x/.y", "100%"]:
        assert "/" not in escape_name(name)
        assert unescape_name(escape_name(name)) == name
    with h5py.File(capture_path, "r") as h5:
        ds = h5["activations"]["outer%2Fconv"]
        assert ds.attrs["name"] == "outer/conv"
        assert h5["weights"]["outer%2Fconv"].attrs["name"] == "outer/conv"


def test_chunks_hold_one_sample_or_fill_16k(tmp_path):
    assert samples_per_chunk((112, 112, 32)) == 1
    assert samples_per_chunk((4, 4, 5)) == 16 * 1024 // (4 * 4 * 5 * 4)
    path = write_tiny(tmp_path / "c.h5", compression="lzf")
    with h5py.File(path, "r") as h5:
        assert h5["activations"]["dense"].chunks == (N_SAMPLES, 4, 4, 5)  # tiny: all 10 fit in 16 KiB
        assert h5["activations"]["dense"].compression == "lzf"
    path = write_tiny(tmp_path / "d.h5")
    with h5py.File(path, "r") as h5:  # uncompressed: contiguous, one byte range per sample
        assert h5["activations"]["dense"].chunks is None and h5["activations"]["dense"].compression is None


def test_positions_are_optional(tmp_path, capture_path):
    with Capture.open(capture_path) as cap:
        assert cap.positions() is None
    positions = {"conv": {"w": 7, "a": 5}}
    path = write_tiny(tmp_path / "p.h5", positions=positions)
    with Capture.open(path) as cap:
        assert cap.positions() == positions


def test_open_reads_metadata_only(capture_path, monkeypatch):
    """Opening, listing layers and shapes reads no tensor (they may be larger than RAM): only /graph."""
    read = []
    original = h5py.Dataset.__getitem__

    def recording(self, key):
        read.append(self.name)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    with Capture.open(capture_path) as cap:
        assert cap.layers_with_activations() == ["input", "outer/conv", "dense"]
        assert cap.activation_shape("outer/conv") == (N_SAMPLES, 4, 4, 2)
        assert cap.input_names() == ["input"]
        assert read == ["/graph"]
        cap.activation("dense", [1])
        assert read == ["/graph", "/activations/dense"]


def test_newer_major_version_refused(capture_path):
    with h5py.File(capture_path, "r+") as h5:
        h5.attrs["version"] = "2.0"
    with pytest.raises(UnsupportedFormatError) as info:
        Capture.open(capture_path)
    message = str(info.value)
    assert str(capture_path) in message and "2.0" in message and "1.3" in message
    assert "\n" not in message


def test_newer_minor_version_accepted(capture_path):
    with h5py.File(capture_path, "r+") as h5:
        h5.attrs["version"] = "1.7"
    with Capture.open(capture_path) as cap:
        assert cap.n_samples == N_SAMPLES


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.003])
def test_truncated_capture(tmp_path, capture_path, keep):
    data = capture_path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(QInspectError) as info:
        with Capture.open(cut) as cap:  # some truncations only show when the data is read
            for layer in cap.layers_with_activations():
                cap.activation(layer)
    assert str(cut) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content, words",
    [(b"hello, not hdf5", "not an HDF5 file"), (b"", "not an HDF5 file")],
)
def test_not_hdf5(tmp_path, content, words):
    path = tmp_path / "x.h5"
    path.write_bytes(content)
    with pytest.raises(QInspectError, match=words):
        Capture.open(path)


def test_foreign_hdf5_and_missing_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(UnsupportedFormatError, match="not a qinspect capture"):
        Capture.open(path)
    with pytest.raises(QInspectError, match="no such file"):
        Capture.open(tmp_path / "absent.h5")


def test_abort_leaves_nothing_and_keeps_existing_file(tmp_path):
    dest = write_tiny(tmp_path / "c.h5")
    old = dest.read_bytes()
    data = tiny_data()
    with pytest.raises(RuntimeError, match="boom"):
        with CaptureWriter(dest, tiny_graph(), N_SAMPLES, {"dense": (4, 4, 5)}, {"input": (4, 4, 3)},
                           overwrite=True) as writer:
            writer.write_batch(0, {"input": data["input"][:4]}, {"dense": data["dense"][:4]})
            raise RuntimeError("boom")
    assert dest.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]


def test_overwrite_replaces_only_a_capture(tmp_path):
    dest = tmp_path / "model.h5"
    dest.write_bytes(b"\x89HDF\r\n\x1a\n not a capture")
    with pytest.raises(QInspectError, match="not a qinspect capture"):
        CaptureWriter(dest, tiny_graph(), 1, {}, {"input": (4, 4, 3)}, overwrite=True)
    assert dest.read_bytes() == b"\x89HDF\r\n\x1a\n not a capture"
    assert list(tmp_path.iterdir()) == [dest]


def test_refuses_to_overwrite_without_permission(tmp_path):
    dest = tmp_path / "c.h5"
    dest.write_bytes(b"old")
    # not a capture: refused whatever --force says, so the message does not offer it
    with pytest.raises(QInspectError, match="exists and is not a qinspect capture") as err:
        CaptureWriter(dest, tiny_graph(), 1, {}, {"input": (4, 4, 3)})
    assert "use --force" not in str(err.value)
    assert list(tmp_path.iterdir()) == [dest]
    capture = write_tiny(tmp_path / "cap.h5")
    with pytest.raises(QInspectError, match="already exists; use --force to replace it"):
        CaptureWriter(capture, tiny_graph(), 1, {}, {"input": (4, 4, 3)})


def test_commit_requires_every_sample(tmp_path):
    dest = tmp_path / "c.h5"
    writer = CaptureWriter(dest, tiny_graph(), N_SAMPLES, {"dense": (4, 4, 5)}, {"input": (4, 4, 3)})
    writer.write_batch(0, {"input": tiny_data()["input"][:4]}, {})
    with pytest.raises(ValueError, match="only 4 of 10"):
        writer.commit()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_incomplete_file_refused(tmp_path):
    """A temporary file left by a killed writer is recognisably incomplete."""
    dest = tmp_path / "c.h5"
    writer = CaptureWriter(dest, tiny_graph(), N_SAMPLES, {"dense": (4, 4, 5)}, {"input": (4, 4, 3)})
    writer._h5.close()  # as if the process had been killed: no commit, no cleanup
    with pytest.raises(QInspectError, match="incomplete capture"):
        Capture.open(writer.temp_path)
    assert not dest.exists()


def test_without_pwrite_rows_go_through_h5py(tmp_path, monkeypatch):
    """Platforms without os.pwrite (Windows) write the same file through h5py."""
    import qinspect.io.capture_file as capture_file

    monkeypatch.setattr(capture_file, "_HAS_PWRITE", False)
    data = tiny_data(5)
    path = write_tiny(tmp_path / "c.h5", data, batch=3)
    with Capture.open(path) as cap:
        np.testing.assert_array_equal(cap.activation("outer/conv"), data["outer/conv"])
        np.testing.assert_array_equal(cap.inputs(), data["input"])


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_destination_that_is_an_input_is_refused_through_links(tmp_path, how):
    from qinspect.io.capture_file import check_capture_destination

    model = write_tiny(tmp_path / "model.h5")  # even a capture: being an input is what matters
    dest = {"same": model, "symlink": tmp_path / "link.h5", "hardlink": tmp_path / "hard.h5"}[how]
    if how == "symlink":
        dest.symlink_to(model)
    elif how == "hardlink":
        os.link(model, dest)
    with pytest.raises(QInspectError, match="is one of the capture's inputs"):
        check_capture_destination(dest, True, (str(tmp_path / "x.npy"), str(model)))


def test_a_link_as_destination_is_refused(tmp_path):
    from qinspect.io.capture_file import check_capture_destination

    target = write_tiny(tmp_path / "old.h5")
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    with pytest.raises(QInspectError, match="symbolic link"):
        check_capture_destination(link, True, ())


def test_a_destination_ending_in_a_separator_is_refused_even_with_force(tmp_path):
    """`-o cap.h5/ --force` replaced the capture cap.h5: abspath dropped the slash that names a folder."""
    from qinspect.io.capture_file import check_capture_destination

    old = write_tiny(tmp_path / "cap.h5")
    before = old.read_bytes()
    with pytest.raises(QInspectError, match="ends with a folder separator"):
        check_capture_destination(str(old) + "/", True, ())
    assert old.read_bytes() == before


def test_a_long_legal_capture_name_is_written(tmp_path):
    """The temporary file beside a 245-character name took the whole name and passed the 255-byte limit."""
    path = write_tiny(tmp_path / ("c" * 242 + ".h5"))
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_destination_inside_an_input_folder_is_refused(tmp_path):
    """`capture smcopy --inputs x.npy -o smcopy/cap.h5` added a file to the SavedModel folder it read (report
    refuses the same)."""
    from qinspect.io.capture_file import check_capture_destination

    model = tmp_path / "sm"
    (model / "variables").mkdir(parents=True)
    for dest in (model / "cap.h5", model / "variables" / "cap.h5"):
        with pytest.raises(QInspectError, match="inside the input folder"):
            check_capture_destination(dest, False, (str(model), str(tmp_path / "x.npy")))
    check_capture_destination(tmp_path / "sm_cap.h5", False, (str(model),))  # beside it: fine
