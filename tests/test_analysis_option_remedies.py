"""Quantizer options as remedies inside diagnose: a ReLU6 model whose depthwise kernel spans many bits,
cured by equalizing across the ReLU6 (cle_to_relu6), which the quantizer skips by default."""

from __future__ import annotations

import json

import analysis_fixtures
import numpy as np
import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def relu6_spread(tmp_path_factory):
    """A ReLU6 model whose depthwise kernel spans many bits (analysis_fixtures.relu6_spread)."""
    pytest.importorskip("tf_keras")
    folder = tmp_path_factory.mktemp("relu6_spread")
    plant = analysis_fixtures.relu6_spread(folder)
    np.save(folder / "x.npy", plant.calib)
    return folder


def _diagnose(folder, *extra):
    r = run_cli("diagnose", str(folder / "m.h5"), "--inputs", str(folder / "x.npy"), "--json", "--batch-size", "8",
                *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_spread_is_cured_by_cle_to_relu6_measured(relu6_spread):
    out = _diagnose(relu6_spread)
    top = out["findings"][0]
    # c1's kernel spreads too (random init); both are cured by the same option: one finding names both
    assert top["kind"] == "channel_spread" and "dw" in [top["layer"], *top["affects"]]
    assert sum((f.get("remedy") or {}).get("kind") == "quantizer_option" for f in out["findings"]) == 1
    assert top["evidence"]["cle"]["value"].startswith("not applicable")
    rem = top["remedy"]
    assert rem["kind"] == "quantizer_option" and "cle_to_relu6=True" in rem["action"]
    assert "calib_batch_size=8" in rem["action"]
    assert top["advice"].startswith("Quantize with cle_to_relu6=True (the remedy measured below). Otherwise: ")
    # the Advice rows (the report's first page) lead with the option's quantize_model call
    best = out["advice"][0]
    assert best["options"] == {"calib_batch_size": 8, "cle_to_relu6": True} and best["keep_float"] == []
    assert best["output_sqnr_db"] == pytest.approx(rem["measured_sqnr_db"]) and "cle_to_relu6=True" in best["command"]
    assert rem["measured_gain_db"] > 3.0 and top["severity"] == pytest.approx(rem["measured_gain_db"])
    assert rem["measured_sqnr_db"] == pytest.approx(out["output"]["sqnr_db"] + rem["measured_gain_db"])


def test_with_the_option_given_it_is_not_proposed_again(relu6_spread):
    out = _diagnose(relu6_spread, "--cle-to-relu6")
    for f in out["findings"]:
        assert "cle_to_relu6=True" not in (f.get("remedy") or {}).get("action", "")


def test_positions_from_outside_get_no_option_remedy(relu6_spread, tmp_path):
    """With --positions the user's positions are fixed: a rebuilt, recalibrated graph is not what they run."""
    calib = _diagnose(relu6_spread)
    assert any((f.get("remedy") or {}).get("kind") == "quantizer_option" for f in calib["findings"])
    r = run_cli("calibrate", str(relu6_spread / "m.h5"), "--inputs", str(relu6_spread / "x.npy"), "--batch-size",
                "8", "--json")
    (tmp_path / "p.json").write_text(json.dumps({"positions": json.loads(r.stdout)["positions"]}))
    out = _diagnose(relu6_spread, "--positions", str(tmp_path / "p.json"))
    assert not any((f.get("remedy") or {}).get("kind") == "quantizer_option" for f in out["findings"])


def _relu_chain(folder, cap6: bool):
    """Six conv -> ReLU(6) -> depthwise -> ReLU(6) blocks whose conv output channels are scaled by up to 2x
    each way and the depthwise undoes it: no single layer spreads enough for a channel_spread finding,
    but every pair is CLE's to balance, and with ReLU6 between them the quantizer skips them all."""
    keras = pytest.importorskip("tf_keras")
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    inp = keras.Input((16, 16, 3), name="img")
    x = inp
    for i in range(6):
        x = keras.layers.Conv2D(16, 1, name=f"c{i}")(x)
        x = keras.layers.ReLU(6.0 if cap6 else None, name=f"r{i}a")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", name=f"dw{i}")(x)
        x = keras.layers.ReLU(6.0 if cap6 else None, name=f"r{i}b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="out")(x))
    for i in range(6):
        s = 2.0 ** rng.uniform(-1.0, 1.0, 16)
        w, b = model.get_layer(f"c{i}").get_weights()
        model.get_layer(f"c{i}").set_weights([w * s, b * s])
        w, b = model.get_layer(f"dw{i}").get_weights()
        model.get_layer(f"dw{i}").set_weights([w / s[None, None, :, None], b])
    model.save(folder / "m.h5")
    np.save(folder / "x.npy", rng.uniform(0, 1, (32, 16, 16, 3)).astype(np.float32))
    return folder


@pytest.mark.tf
def test_skipped_cle_pairs_are_a_measured_finding_though_no_layer_spreads(tmp_path):
    folder = _relu_chain(tmp_path, cap6=True)
    out = _diagnose(folder)
    assert not any(f["kind"] == "channel_spread" for f in out["findings"])
    (opt,) = [f for f in out["findings"] if f["kind"] == "quantizer_option"
              and "cle_to_relu6" in f["evidence"]["option"]["value"]]
    # CLE rescales every pair from the first conv on: the origin is c0, the other layers follow
    assert opt["origin"] == opt["layer"] == "c0"
    assert {"dw0", "c1", "dw5"} <= set(opt["affects"])
    assert opt["evidence"]["option"]["value"] == {"cle_to_relu6": True}
    rem = opt["remedy"]
    assert rem["kind"] == "quantizer_option" and "cle_to_relu6=True" in rem["action"]
    assert rem["measured_gain_db"] > 0.5 and rem["measured_gain_se_db"] >= 0
    assert opt["noise_share"] == pytest.approx(1 - 10 ** (-rem["measured_gain_db"] / 10))
    # the option's share (measured on its rebuilt model) and the budget's (on the model as given) do not
    # add: explained is the larger, and the rounding finding says its share is of the model as given
    rounding = [f for f in out["findings"] if f["kind"] == "accumulated_rounding"]
    budget = sum(f["evidence"].get("budget_share", {}).get("value") or 0.0 for f in out["findings"])
    assert out["explained"] == pytest.approx(min(1.0, max(opt["noise_share"], budget)), abs=1e-9)
    for f in rounding:
        assert f["evidence"]["option_apart"]["value"] is True and "measured apart" in f["advice"]


@pytest.mark.tf
def test_no_option_finding_where_cle_already_pairs_everything(tmp_path):
    out = _diagnose(_relu_chain(tmp_path, cap6=False))  # plain ReLU: CLE equalizes every pair already
    assert not any(f["kind"] == "quantizer_option" for f in out["findings"])


def test_the_option_remedy_recalibrates_on_every_calibration_sample(relu6_spread, tmp_path):
    """--samples limits what is measured, not what is calibrated: the remedy's figure is the one the
    option gives when the model is calibrated with it on the same data. The first batch of 8 is dim, the
    three after it bright, so calibrating on the measured 8 alone would choose other positions."""
    x = np.load(relu6_spread / "x.npy")
    x[8:] *= 6.0
    np.save(tmp_path / "x.npy", x)

    def diagnose(*extra):
        r = run_cli("diagnose", str(relu6_spread / "m.h5"), "--inputs", str(tmp_path / "x.npy"), "--json",
                    "--batch-size", "8", "--samples", "8", *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    out = diagnose()
    (rem,) = [f["remedy"] for f in out["findings"] if (f.get("remedy") or {}).get("kind") == "quantizer_option"]
    with_option = diagnose("--cle-to-relu6")
    assert rem["measured_sqnr_db"] == pytest.approx(with_option["output"]["sqnr_db"], abs=1e-9)


def test_the_report_measures_the_same_option_remedy_as_diagnose(relu6_spread, tmp_path):
    """The report's findings are diagnose's: the option remedy (a deployable quantize_model call) leads
    there too, with the same measured figure, rather than a keep-float remedy that gains less."""
    out = _diagnose(relu6_spread)
    rem = out["findings"][0]["remedy"]
    assert rem["options"] == {"cle_to_relu6": True}
    r = run_cli("report", str(relu6_spread / "m.h5"), "--inputs", str(relu6_spread / "x.npy"), "--batch-size", "8",
                "-o", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    findings = report.get("findings") or report["diagnosis"]["findings"]
    top = findings[0]["remedy"]
    assert top["kind"] == "quantizer_option" and top["options"] == {"cle_to_relu6": True}
    assert top["measured_sqnr_db"] == pytest.approx(rem["measured_sqnr_db"], abs=1e-9)
    assert "cle_to_relu6=True" in (tmp_path / "rep" / "report.html").read_text()


@pytest.mark.tf
def test_split_calibration_votes_get_a_larger_batch_as_a_measured_remedy(tmp_path):
    """The two-head model calibrated in batches of 4: the batches chose different positions for four
    tensors and the vote kept noisy ones. A larger calib_batch_size is a quantize_model option, so it is
    tried like the CLE options, and its figure is what calibrating with it really gives."""
    plant = analysis_fixtures.two_heads(tmp_path)
    np.save(tmp_path / "x.npy", plant.calib)

    def diagnose(*extra):
        r = run_cli("diagnose", str(plant.path), "--inputs", str(tmp_path / "x.npy"), "--json", "--no-cle", *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    out = diagnose("--batch-size", "4")
    (f,) = [f for f in out["findings"] if f["kind"] == "quantizer_option"
            and "calib_batch_size" in f["evidence"]["option"]["value"]]
    assert f["evidence"]["option"]["value"] == {"calib_batch_size": 32}
    assert "calibration batches of 4 chose different positions" in f["advice"]
    assert "calib_batch_size=32" in f["remedy"]["action"] and f["remedy"]["measured_gain_db"] > 3
    assert out["findings"][0] is not None and out["findings"][0]["remedy"]["options"] == {"calib_batch_size": 32}
    again = diagnose("--batch-size", "32")
    assert f["remedy"]["measured_sqnr_db"] == pytest.approx(again["output"]["sqnr_db"], abs=1e-9)
    assert not any("calib_batch_size" in str(g["evidence"].get("option")) for g in again["findings"])
