"""``qinspect report`` run as a user would: no display, a folder written atomically, one-line errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil

import pytest
from conftest import run_cli
from PIL import Image
from report_fixtures import small_capture  # noqa: F401

from qinspect.report.exports import CSV_COLUMNS

NO_DISPLAY = {"QT_QPA_PLATFORM": "", "DISPLAY": "", "WAYLAND_DISPLAY": ""}


def _one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qinspect: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def _no_temp_left(folder) -> None:
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def written(small_capture, refcases, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("cli") / "rep"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = run_cli("report", str(small_capture), "--positions", str(refcases / "small" / "quantized.h5"),
                     "--no-findings", "-o", str(out), env=env)
    return result, out


@pytest.mark.tf
def test_report_is_written_without_a_display(written):
    result, out = written
    assert result.returncode == 0, result.stderr[-3000:]
    assert "report.html" in result.stdout
    assert {p.name for p in out.iterdir()} == {"report.html", "report.json", "layers.csv", "figures"}
    _no_temp_left(out.parent)


@pytest.mark.tf
def test_html_is_self_contained_with_png_figures(written):
    _, out = written
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    data = json.loads((out / "report.json").read_text())
    n_figures = len(data["figures"]) + sum(len(layer["figures"]) for layer in data["layers"])
    assert len(srcs) == n_figures > 10
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            assert img.format == "PNG" and img.size[0] >= 500
    # the embedded images are the figure files
    first = data["layers"][0]["figures"][0]["file"]
    assert base64.b64encode((out / first).read_bytes()).decode() in page


@pytest.mark.tf
def test_json_and_csv_agree(written):
    _, out = written
    data = json.loads((out / "report.json").read_text())
    rows = list(csv.DictReader((out / "layers.csv").open(encoding="utf-8")))
    assert list(rows[0]) == [name for name, _ in CSV_COLUMNS]
    assert [r["layer"] for r in rows] == [layer["name"] for layer in data["layers"]]
    for row, layer in zip(rows, data["layers"], strict=True):
        acc = layer["accumulated"]
        if acc is None:
            assert row["acc_sqnr_db"] == ""
        elif isinstance(acc["sqnr_db"], float):
            assert float(row["acc_sqnr_db"]) == acc["sqnr_db"]
        out_pos = layer["positions"]["output"]
        assert row["pos_output"] == ("" if out_pos is None else str(out_pos))


@pytest.mark.tf
def test_existing_report_needs_force(written, small_capture):  # noqa: F811
    _, out = written
    before = (out / "report.json").read_bytes()
    result = run_cli("report", str(small_capture), "--no-findings", "-o", str(out))
    _one_line_error(result, str(out), "--force")
    assert (out / "report.json").read_bytes() == before


@pytest.mark.tf
def test_force_replaces_a_report_and_unknown_layer_writes_nothing(written, small_capture, tmp_path):  # noqa: F811
    out = tmp_path / "rep"
    shutil.copytree(written[1], out)
    before = (out / "report.json").read_bytes()
    result = run_cli("report", str(small_capture), "--layer", "nope", "--force", "-o", str(out))
    _one_line_error(result, "no layer named 'nope'")
    assert (out / "report.json").read_bytes() == before  # a failed run leaves the old folder as it was
    result = run_cli("report", str(small_capture), "--layer", "relu2", "--no-findings", "--force", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "report.json").read_text())
    assert data["scope"] == "layer" and [layer["name"] for layer in data["layers"]] == ["relu2"]
    _no_temp_left(tmp_path)


def test_force_never_replaces_a_folder_that_is_not_a_report(small_capture, tmp_path):  # noqa: F811
    out = tmp_path / "etc"
    out.mkdir()
    (out / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (out / "ssh").mkdir()
    (out / "ssh" / "key").write_bytes(bytes(range(256)))
    before = {str(p): (p.is_dir() or p.read_bytes()) for p in out.rglob("*")}
    result = run_cli("report", str(small_capture), "--no-findings", "--force", "-o", str(out))
    _one_line_error(result, str(out), "is not a qinspect report")
    assert {str(p): (p.is_dir() or p.read_bytes()) for p in out.rglob("*")} == before
    _no_temp_left(tmp_path)


def test_missing_input_is_one_line(tmp_path):
    result = run_cli("report", str(tmp_path / "absent.h5"), "-o", str(tmp_path / "rep"))
    _one_line_error(result, "absent.h5", "no such file")
    assert not (tmp_path / "rep").exists()


def test_not_a_model_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not HDF5")
    result = run_cli("report", str(bad), "-o", str(tmp_path / "rep"))
    _one_line_error(result, "bad.h5")
    assert not (tmp_path / "rep").exists()
    _no_temp_left(tmp_path)


def test_bad_positions_file_is_one_line(refcases, tmp_path):
    bad = tmp_path / "positions.json"
    bad.write_text("[1, 2]")
    result = run_cli("report", str(refcases / "small" / "float.h5"), "--positions", str(bad), "-o",
                     str(tmp_path / "rep"))
    _one_line_error(result, "positions.json")
    result = run_cli("report", str(refcases / "small" / "float.h5"), "--positions",
                     str(refcases / "small" / "float.h5"), "-o", str(tmp_path / "rep"))
    _one_line_error(result, "float.h5", "not a Vitis quantized model")
    assert not (tmp_path / "rep").exists()


def test_output_that_is_a_file_is_refused(refcases, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = run_cli("report", str(refcases / "small" / "float.h5"), "-o", str(target))
    _one_line_error(result, "not a folder")
    assert target.read_text() == "x"


def test_model_file_gives_a_weights_report(refcases, tmp_path):
    out = tmp_path / "rep"
    result = run_cli("report", str(refcases / "small" / "float.h5"), "--positions",
                     str(refcases / "small" / "quantized.h5"), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "report.json").read_text())
    layers = {layer["name"]: layer for layer in data["layers"]}
    # the Vitis run's position, on conv2's row: the quantized.h5's conv2 holds bn2 folded into it
    assert layers["conv2"]["positions"]["weights"] == 9 and layers["bn2"]["positions"]["weights"] is None
    assert layers["conv2"]["weights"]["channels"]["min"]  # per-channel ranges of the stored weights
    assert layers["relu2"]["accumulated"] is None  # no activations: not computed, not zero
    assert any("no activations" in w for w in data["warnings"])


@pytest.mark.tf
def test_no_sensitivity_keeps_findings_without_sensitivity_figures(small_capture, tmp_path):  # noqa: F811
    out = tmp_path / "rep"
    result = run_cli("report", str(small_capture), "--no-sensitivity", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "report.json").read_text())
    assert data["findings"] is not None
    assert all(layer["sensitivity"] is None for layer in data["layers"])
    assert any("sensitivity skipped" in note for note in data["notes"])


def test_labels_without_the_findings_pass_are_refused_not_ignored(small_capture, tmp_path):  # noqa: F811
    # the accuracy comes from the findings pass: --no-findings used to drop the labels unread (exit 0)
    import numpy as np

    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(4, np.int64))
    out = tmp_path / "rep"
    result = run_cli("report", str(small_capture), "--no-findings", "--labels", str(labels), "-o", str(out))
    _one_line_error(result, str(labels), "--no-findings")
    assert not out.exists()


def test_a_model_file_without_data_is_refused_as_emulate_refuses_it(refcases, tmp_path):
    """Without --inputs or --positions a model file's report was written with every figure "n/a" (exit 0),
    while emulate, diagnose and calibrate refuse the same call."""
    out = tmp_path / "rep"
    result = run_cli("report", str(refcases / "small" / "float.h5"), "-o", str(out))
    _one_line_error(result, "a report of a model file needs --inputs")
    assert not out.exists()


def test_a_long_legal_name_and_a_dotdot_path_are_written(small_capture, tmp_path):  # noqa: F811
    """A 245-character folder name (legal: 255 is the limit) was refused as "File name too long": qinspect's
    own temporary name added the rest. `-o rep/figures/.. --force` said the folder "changed while the report
    was computed" (its temporary folders were made inside rep)."""
    name = tmp_path / ("a" * 245)
    done = run_cli("report", str(small_capture), "-o", str(name), "--no-findings")
    assert done.returncode == 0, done.stderr
    again = run_cli("report", str(small_capture), "-o", str(name / "figures" / ".."), "--no-findings", "--force")
    assert again.returncode == 0, again.stderr
    assert (name / "report.html").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [name.name]
