"""The report folder is written atomically and never overwrites a non-empty folder unasked."""

from __future__ import annotations

import csv
import json

import pytest
from report_fixtures import pillow_renderer, sample_report

from qinspect.errors import QInspectError
from qinspect.report.writer import write_report


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_writes_html_json_csv_and_figures(tmp_path):
    out = write_report(sample_report(), tmp_path / "rep", render_figures=pillow_renderer)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["figures/act-1.png", "figures/propagation.png", "layers.csv", "report.html", "report.json"]
    data = json.loads((out / "report.json").read_text())
    # the files the JSON names exist
    for ref in data["figures"] + data["layers"][0]["figures"]:
        assert (out / ref["file"]).read_bytes().startswith(b"\x89PNG")
    rows = list(csv.DictReader((out / "layers.csv").open()))
    assert len(rows) == 2
    assert _leftovers(tmp_path) == []


def test_refuses_a_non_empty_folder_without_force_and_replaces_it_with(tmp_path):
    dest = tmp_path / "rep"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(QInspectError, match="not empty"):
        write_report(sample_report(), dest)
    assert (dest / "keep.txt").read_text() == "mine"
    write_report(sample_report(), dest, force=True)
    assert not (dest / "keep.txt").exists() and (dest / "report.html").is_file()
    assert _leftovers(tmp_path) == []


def test_an_empty_existing_folder_is_used(tmp_path):
    dest = tmp_path / "rep"
    dest.mkdir()
    write_report(sample_report(), dest)
    assert (dest / "report.json").is_file()


def test_refuses_a_file_as_destination(tmp_path):
    dest = tmp_path / "rep"
    dest.write_text("x")
    with pytest.raises(QInspectError, match="not a folder"):
        write_report(sample_report(), dest, force=True)


def test_failure_while_writing_leaves_the_old_report_and_no_temp_folder(tmp_path):
    dest = write_report(sample_report(), tmp_path / "rep")
    before = (dest / "report.json").read_bytes()

    def broken(specs):
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError):
        write_report(sample_report(), dest, render_figures=broken, force=True)

    report = sample_report()
    report.layers[0].isolated["mse"] = object()  # not serialisable: fails inside the temp folder
    with pytest.raises(TypeError):
        write_report(report, dest, render_figures=pillow_renderer, force=True)
    assert (dest / "report.json").read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_renderer_output_that_is_not_png_is_refused(tmp_path):
    with pytest.raises(ValueError, match="PNG"):
        write_report(sample_report(), tmp_path / "rep", render_figures=lambda specs: {"act-1": b"nope"})
    assert not (tmp_path / "rep").exists()
