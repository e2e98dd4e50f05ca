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
    assert names == ["figures/L1-activation.png", "figures/propagation.png", "layers.csv", "report.html", "report.json"]
    data = json.loads((out / "report.json").read_text())
    # the files the JSON names exist
    for ref in data["figures"] + data["layers"][0]["figures"]:
        assert (out / ref["file"]).read_bytes().startswith(b"\x89PNG")
    rows = list(csv.DictReader((out / "layers.csv").open()))
    assert len(rows) == 2
    assert _leftovers(tmp_path) == []


def _snapshot(folder):
    """Every path under ``folder`` with its bytes (None for folders) and mode: to prove nothing changed."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes(), p.lstat().st_mode)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_that_is_not_a_report_is_refused_whatever_force_says_and_left_byte_identical(tmp_path, force):
    dest = tmp_path / "etc"
    dest.mkdir()
    (dest / "passwd").write_text("root:x:0:0")
    (dest / "sub").mkdir()
    (dest / "sub" / "conf").write_bytes(b"\x00\x01")
    before = _snapshot(dest)
    with pytest.raises(QInspectError, match="is not a qinspect report .*it holds (passwd|sub)"):
        write_report(sample_report(), dest, force=force)
    assert _snapshot(dest) == before
    assert _leftovers(tmp_path) == []


def test_a_report_folder_with_anything_added_is_no_longer_a_report(tmp_path):
    dest = write_report(sample_report(), tmp_path / "rep", render_figures=pillow_renderer)
    (dest / "figures" / "notes.txt").write_text("mine")
    before = _snapshot(dest)
    with pytest.raises(QInspectError, match="it holds figures/notes.txt"):
        write_report(sample_report(), dest, force=True)
    assert _snapshot(dest) == before


def test_a_png_a_report_does_not_name_is_not_the_reports_to_replace(tmp_path):
    # a user's own annotated figure, dropped beside the report's: --force once deleted it with the rest
    dest = write_report(sample_report(), tmp_path / "rep", render_figures=pillow_renderer)
    (dest / "figures" / "my_annotated.png").write_bytes((dest / "figures" / "L1-activation.png").read_bytes())
    before = _snapshot(dest)
    with pytest.raises(QInspectError, match="it holds figures/my_annotated.png"):
        write_report(sample_report(), dest, force=True)
    assert _snapshot(dest) == before


def test_a_look_alike_without_the_report_format_marker_is_refused(tmp_path):
    dest = tmp_path / "rep"
    dest.mkdir()
    (dest / "report.json").write_text('{"format": "something-else"}')
    (dest / "report.html").write_text("<html>mine</html>")
    before = _snapshot(dest)
    with pytest.raises(QInspectError, match="its report.json is not a qinspect report's"):
        write_report(sample_report(), dest, force=True)
    assert _snapshot(dest) == before


def test_a_link_as_destination_is_refused(tmp_path):
    real = write_report(sample_report(), tmp_path / "rep")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(QInspectError, match="symbolic link"):
        write_report(sample_report(), link, force=True)
    assert (real / "report.json").is_file()


def test_a_report_is_replaced_only_with_force(tmp_path):
    dest = write_report(sample_report(), tmp_path / "rep", render_figures=pillow_renderer)
    with pytest.raises(QInspectError, match="holds a qinspect report .use --force"):
        write_report(sample_report(), dest)
    report = sample_report()
    report.model_name = "second"
    write_report(report, dest, force=True)
    assert sorted(p.name for p in dest.iterdir()) == ["layers.csv", "report.html", "report.json"]
    assert json.loads((dest / "report.json").read_text())["model"]["name"] == "second"
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
        write_report(sample_report(), tmp_path / "rep", render_figures=lambda specs: {"L1-activation": b"nope"})
    assert not (tmp_path / "rep").exists()


def test_the_working_folder_is_refused_up_front_even_empty(tmp_path, monkeypatch):
    # it ran the whole report, then failed to swap it in ("Device or resource busy")
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(QInspectError, match="is the working, home or a parent folder"):
        write_report(sample_report(), ".")
    assert list(here.iterdir()) == []


def test_a_file_as_the_parent_is_named_as_such(tmp_path):
    (tmp_path / "cap.h5").write_bytes(b"x")
    with pytest.raises(QInspectError, match="cap.h5 is a file, not a folder"):
        write_report(sample_report(), tmp_path / "cap.h5" / "rep")
