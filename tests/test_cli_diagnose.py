"""``qinspect diagnose`` run as a user would: captures made by ``qinspect capture``, JSON read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from analysis_fixtures import _head, _keras, coverage, leaky

from qinspect.cli import main


@pytest.fixture(scope="module")
def captures(tmp_path_factory, cli_module_runner):
    folder = tmp_path_factory.mktemp("diagnose_cli")
    plant = coverage(folder)
    other = leaky(folder)
    np.save(folder / "calib.npy", plant.calib)
    np.save(folder / "eval.npy", plant.eval)
    np.save(folder / "other.npy", other.calib)
    out = {}
    for name, model, npy in (("calib", plant.path, "calib.npy"), ("eval", plant.path, "eval.npy"),
                             ("other", other.path, "other.npy")):
        path = folder / f"{name}_capture.h5"
        r = cli_module_runner("capture", str(model), "--inputs", str(folder / npy), "-o", str(path), "-q")
        assert r.returncode == 0, r.stderr
        out[name] = path
    # The same layers at another input size: same names and classes, other shapes.
    keras = _keras()
    inp = keras.Input((8, 8, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.ReLU(name="relu1")(x)
    small = keras.Model(inp, _head(keras, x))
    small.save(folder / "small.h5")
    np.save(folder / "small.npy", np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32))
    r = cli_module_runner("capture", str(folder / "small.h5"), "--inputs", str(folder / "small.npy"),
                          "-o", str(folder / "small_capture.h5"), "-q")
    assert r.returncode == 0, r.stderr
    out["small"] = folder / "small_capture.h5"
    out["model"] = plant.path
    out["calib_npy"] = folder / "calib.npy"
    return out


@pytest.fixture(scope="module")
def cli_module_runner():
    from conftest import run_cli

    return run_cli


@pytest.mark.tf
def test_eval_capture_coverage_json(captures, cli):
    r = cli("diagnose", str(captures["calib"]), "--eval", str(captures["eval"]), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    top = data["findings"][0]
    assert (top["layer"], top["kind"]) == ("img", "coverage")
    assert set(top) == {"layer", "kind", "severity", "origin", "affects", "noise_share", "remedy", "evidence", "advice"}
    assert top["severity"] > 1
    assert data["measured_on"].startswith("evaluation")
    # The text reads each finding in the window's and the report's words (qinspect.report.wording).
    from qinspect.report import wording

    text = cli("diagnose", str(captures["calib"]), "--eval", str(captures["eval"])).stdout
    flat = " ".join(text.split())
    assert f"1. {wording.kind_title('coverage')} at img" in flat
    assert wording.finding_sentence(top) in flat and wording.remedy_sentence(top["remedy"]) in flat
    sens = {s["layer"]: s for s in data["sensitivity"]}
    assert {"img", "conv1", "relu1", "gap", "out"} <= set(sens)
    assert all({"keep_float_gain_db", "only_quantized_sqnr_db", "only_noise_share"} <= set(s)
               for s in data["sensitivity"])


@pytest.mark.tf
def test_text_output_and_model_with_inputs(captures, capsys):
    assert main(["diagnose", str(captures["model"]), "--inputs", str(captures["calib_npy"])]) == 0
    text = capsys.readouterr().out
    assert "0 finding(s)" in text and "sensitivity (output SQNR)" in text


@pytest.mark.tf
def test_eval_capture_of_another_model_is_refused(captures, cli):
    r = cli("diagnose", str(captures["calib"]), "--eval", str(captures["other"]))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert str(captures["other"]) in lines[0] and str(captures["calib"]) in lines[0]


@pytest.mark.tf
def test_a_truncated_eval_capture_is_said_damaged_not_another_kind_of_file(captures, cli, tmp_path):
    cut = tmp_path / "cut.h5"
    data = captures["calib"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    r = cli("diagnose", str(captures["calib"]), "--eval", str(cut), "--no-sensitivity")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cut) in lines[0] and "damaged or truncated" in lines[0]
    assert "not a qinspect capture" not in lines[0]


@pytest.mark.tf
def test_eval_capture_with_other_shapes_is_refused(captures, cli):
    r = cli("diagnose", str(captures["calib"]), "--eval", str(captures["small"]))
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "output shape" in line
    assert str(captures["small"]) in line and str(captures["calib"]) in line


def test_bad_input_messages(tmp_path, capsys):
    missing = tmp_path / "nope.h5"
    assert main(["diagnose", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a model at all")
    assert main(["diagnose", str(junk)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(junk) in err


@pytest.mark.tf
def test_model_without_inputs_is_refused(captures, capsys):
    assert main(["diagnose", str(captures["model"])]) == 2
    err = capsys.readouterr().err
    assert "--inputs" in err and str(captures["model"]) in err


@pytest.mark.tf
@pytest.mark.parametrize("positions", ["quantized.h5", "positions.json"])
def test_vitis_positions_show_the_concat_alignment(refcases, tmp_path_factory, cli, positions):
    rich = refcases / "rich"
    cap = tmp_path_factory.getbasetemp() / "rich_capture.h5"
    if not cap.exists():
        r = cli("capture", str(rich / "float.h5"), "--inputs", str(rich / "calib.npy"), "-o", str(cap), "-q")
        assert r.returncode == 0, r.stderr
    r = cli("diagnose", str(cap), "--positions", str(rich / positions), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    top = data["findings"][0]
    assert (top["layer"], top["kind"]) == ("cat10", "alignment")
    assert top["evidence"]["shared_position"]["value"] == 2
    assert str(rich / positions) in data["positions_from"]


@pytest.mark.tf
def test_no_sensitivity_keeps_the_findings_and_reports_progress(captures, cli):
    full = cli("diagnose", str(captures["calib"]), "--eval", str(captures["eval"]), "--json",
               env={"QINSPECT_PROGRESS": "lines"})
    r = cli("diagnose", str(captures["calib"]), "--eval", str(captures["eval"]), "--json", "--no-sensitivity")
    assert r.returncode == 0, r.stderr
    data, ref = json.loads(r.stdout), json.loads(full.stdout)
    assert data["sensitivity"] == [] and ref["sensitivity"]
    assert any("sensitivity skipped" in n for n in data["notes"])
    top = data["findings"][0]
    # The same cause at the same layer; its severity is now the tensor's local cost.
    assert (top["layer"], top["kind"]) == (ref["findings"][0]["layer"], ref["findings"][0]["kind"])
    assert top["evidence"]["severity_basis"]["value"] == "local"
    assert data["output_sqnr_db"] == ref["output_sqnr_db"]
    # Progress on stderr (no terminal here: plain lines, asked for at once), never on stdout.
    lines = full.stderr.strip().splitlines()
    assert any(line.startswith("qinspect diagnose: sensitivity over") and "100%" in line for line in lines)


@pytest.mark.tf
def test_advise_ranks_measured_rows_with_their_quantizer_call(captures, cli):
    r = cli("advise", str(captures["calib"]), "--eval", str(captures["eval"]), "--json", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rows = data["advice"]
    assert rows and all(set(row) == {"options", "calib_samples", "keep_float", "output_sqnr_db", "top1_agreement",
                                     "cpu_layers_added", "command", "quantizer_stops", "calib_exclude",
                                     "calib_data", "sqnr_vs_best_se_db", "simplest_within_noise"} for row in rows)
    assert rows[0]["sqnr_vs_best_se_db"] is None  # the top row is the reference
    assert all(row["calib_exclude"] == [] and row["calib_data"] is None for row in rows)  # advise: the given data
    assert all(row["quantizer_stops"] is None for row in rows)  # no grouped conv: the quantizer runs every row
    # options are quantize_model keywords only: **row["options"] is a valid call
    assert all("calib_samples" not in row["options"] for row in rows)
    sqnrs = [row["output_sqnr_db"] for row in rows]
    # by SQNR, but for a simplest row within the noise of the best, which leads (marked simplest_within_noise)
    rest = sqnrs[1:] if rows[0]["simplest_within_noise"] else sqnrs
    assert rest == sorted(rest, reverse=True)
    if rows[0]["simplest_within_noise"]:
        assert max(sqnrs) - sqnrs[0] < 2 * max(r["sqnr_vs_best_se_db"] or 0 for r in rows) + 1.0
    # CLE on and off were both tried, and the batch size; each row says how to reproduce it.
    assert {row["options"]["include_cle"] for row in rows} == {True, False}
    # (a batch size that calibrates to the same positions is the same model: a note, not a row)
    sizes = {row["options"]["calib_batch_size"] for row in rows}
    assert 8 in sizes and (2 in sizes or any("calib_batch_size=2" in line for line in data["same_model"]))
    for row in rows:
        assert row["command"].startswith("vitis_quantize.VitisQuantizer(model).quantize_model(")
        assert f"include_cle={row['options']['include_cle']}" in row["command"]
        assert (row["keep_float"] != []) == ("ignore_layers=" in row["command"])
        assert row["cpu_layers_added"] == 0 or row["keep_float"]
    # The coverage plant (evaluation inputs 2x the calibration's): keeping layers float is measured too.
    assert any(row["keep_float"] for row in rows)
    # the text says what the table cannot show: the coverage plant's cure is other calibration data
    text = cli("advise", str(captures["calib"]), "--eval", str(captures["eval"]), "--batch-size", "8").stdout
    assert "Data remedies (calibrating on data representative of use" in text and "same --eval" in text


@pytest.mark.tf
def test_advise_measures_the_samples_diagnose_measures_and_says_when_it_takes_fewer(captures, cli):
    # advise used to measure the first 16 rows whatever diagnose used: on the demo (16 faces, then 16
    # background patches) its as-calibrated row read 22.3 dB beside diagnose's 16.3 dB for the same model
    args = (str(captures["calib"]), "--eval", str(captures["eval"]))
    diag = json.loads(cli("diagnose", *args, "--json").stdout)
    r = cli("advise", *args, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["samples"] == diag["sensitivity_samples"] and data["samples_available"] == diag["samples_total"]
    as_calibrated = next(row for row in data["advice"] if not row["keep_float"] and row["options"] == {
        "include_cle": True, "calib_batch_size": 32} and row["calib_samples"] == data["calib_samples"])
    assert as_calibrated["output_sqnr_db"] == pytest.approx(diag["output_sqnr_db"]["value"], abs=1e-6)
    text = cli("advise", *args, "--samples", "3").stdout
    head = next(line for line in text.splitlines() if line.startswith("measured on: "))
    assert f"the first 3 of {data['samples_available']} samples" in head
    # measured on evaluation data: out of sample, no in-sample note; on the calibration data itself: said
    assert data["in_sample"] is None and "In-sample" not in text
    alone = cli("advise", str(captures["calib"]), "--samples", "4")
    assert "In-sample: these rows are measured on the calibration data, so each was calibrated on samples it is " \
           "measured on" in alone.stdout
    assert "give an evaluation capture (--eval)" in alone.stdout


def test_advise_tries_the_relu6_options_where_the_model_caps_at_6(refcases, cli):
    # rich has ReLU6 layers (one inside a hard-sigmoid whose input goes past 6): the advisor tries
    # cle_to_relu6 and convert_relu6_to_relu, and dropping the cap changes the function, so that row
    # measures far worse than the default options (the float reference keeps the cap).
    case = refcases / "rich"
    r = cli("advise", str(case / "float.h5"), "--inputs", str(case / "calib.npy"), "--batch-size", "8",
            "--samples", "8", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["advice"]
    plain = {tuple(sorted({**row["options"], "calib_samples": row["calib_samples"]}.items())): row
             for row in rows if not row["keep_float"]}
    default = next(row for key, row in plain.items() if dict(key) == {
        "include_cle": True, "calib_batch_size": 8, "calib_samples": 32})
    converted = next(row for key, row in plain.items() if dict(key).get("convert_relu6_to_relu"))
    assert any(dict(key).get("cle_to_relu6") for key in plain)
    assert "convert_relu6_to_relu=True" in converted["command"]
    assert converted["output_sqnr_db"] < default["output_sqnr_db"] - 10


def test_option_grid_adds_relu6_options_only_for_relu6_models():
    from qinspect.analysis.advisor import option_grid

    plain = option_grid(8, 32)
    assert not any("cle_to_relu6" in o or "convert_relu6_to_relu" in o for o in plain)
    assert {o["calib_batch_size"] for o in plain} == {8, 2}
    # 8 samples calibrate in one batch of 32 or of 8 alike: no second row that is the first one again
    assert {o["calib_batch_size"] for o in option_grid(32, 8)} == {32}
    capped = option_grid(8, 32, has_relu6=True)
    assert {(o.get("cle_to_relu6", False), o.get("convert_relu6_to_relu", False)) for o in capped} == {
        (False, False), (True, False), (False, True), (True, True)}


@pytest.mark.tf
def test_labels_give_float_and_int8_accuracy(captures, cli, tmp_path):
    from qinspect.io.capture_file import Capture

    with Capture.open(captures["eval"]) as cap:
        float_pred = np.argmax(cap.activation("out")[:16], axis=-1)  # TensorFlow's own float outputs
    labels = float_pred.copy()
    labels[:4] = (labels[:4] + 1) % 4  # 4 of the 16 measured samples labelled otherwise
    np.save(tmp_path / "labels.npy", labels)
    r = cli("diagnose", str(captures["calib"]), "--eval", str(captures["eval"]), "--json", "--no-sensitivity",
            "--sens-samples", "16", "--labels", str(tmp_path / "labels.npy"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["output"]
    assert out["accuracy"]["samples"] == 16 and out["accuracy"]["float"] == pytest.approx(12 / 16)
    assert 0 <= out["accuracy"]["int8"] <= 1 and 0 <= out["top1_agreement"] <= 1
    np.save(tmp_path / "bad.npy", np.zeros(3, np.int64))
    r = cli("diagnose", str(captures["calib"]), "--eval", str(captures["eval"]), "--labels", str(tmp_path / "bad.npy"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "bad.npy" in r.stderr


@pytest.mark.tf
def test_top1_on_tied_outputs_carries_a_near_tie_note(tmp_path, cli_module_runner, cli):
    """A head whose kernel and bias are zero gives every class the same score: each decision is a tie,
    so diagnose must say its top-1 agreement rests on near ties."""
    keras = _keras()
    inp = keras.Input((8, 8, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = keras.layers.ReLU(name="relu1")(x)
    tied = keras.Model(inp, _head(keras, x))
    tied.get_layer("out").set_weights([np.zeros((8, 4), np.float32), np.zeros(4, np.float32)])
    tied.save(tmp_path / "tied.h5")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 3)).astype(np.float32))
    r = cli("diagnose", str(tmp_path / "tied.h5"), "--inputs", str(tmp_path / "x.npy"), "--json",
            "--no-sensitivity")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["output"]
    assert out["near_tie_warning"] and "16 near-tied of 16 decisions" in out["near_tie_warning"]
    assert out["top1_rests_on_near_ties"] is True
    r = cli("diagnose", str(tmp_path / "tied.h5"), "--inputs", str(tmp_path / "x.npy"), "--no-sensitivity")
    assert "note: top-1 agreement rests on 16 near-tied" in r.stdout


def test_captures_scaled_with_different_preprocessing_are_warned_about(tmp_path):
    """Calibration captured with --preprocess 0..1, evaluation with -1..1: the coverage findings measured the
    scaling difference, and nothing said so."""
    import h5py
    from conftest import run_cli
    from gui_fixtures import write_gui_capture

    calib = write_gui_capture(tmp_path / "calib.h5")
    evaluation = write_gui_capture(tmp_path / "eval.h5")
    for path, mode in ((calib, "0..1"), (evaluation, "-1..1")):
        with h5py.File(path, "r+") as f:
            f.attrs["preprocess"] = mode
    r = run_cli("diagnose", str(calib), "--eval", str(evaluation), "--no-sensitivity", "--json")
    assert r.returncode == 0, r.stderr
    notes = json.loads(r.stdout)["notes"]
    assert notes[0].startswith("WARNING: the calibration capture's inputs were scaled with --preprocess 0..1 and "
                               "the evaluation capture's with -1..1")
    with h5py.File(evaluation, "r+") as f:
        f.attrs["preprocess"] = "0..1"
    r = run_cli("diagnose", str(calib), "--eval", str(evaluation), "--no-sensitivity", "--json")
    assert not any("scaled with" in n for n in json.loads(r.stdout)["notes"])
