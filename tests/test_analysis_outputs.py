"""Models with several outputs: each output's own figures, the note when the pooled figure hides one,
and a diagnosis focused on the outputs the user names."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from analysis_fixtures import Plant, two_heads

from qinspect.analysis.diagnose import diagnose
from qinspect.analysis.outputs import focused, hidden_output_warning, output_figures, resolve_outputs
from qinspect.dpu.emulator import Emulator
from qinspect.dpu.executor import Evaluator
from qinspect.errors import QInspectError


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> tuple[Plant, Emulator]:
    plant = two_heads(tmp_path_factory.mktemp("two_heads"))
    return plant, Emulator.from_model(str(plant.path), calib_inputs=plant.calib, batch_size=8)


def _numpy_sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    return 10 * math.log10(np.sum(ref**2) / np.sum((test - ref) ** 2))


@pytest.mark.tf
def test_each_output_gets_its_own_sqnr_and_signal_share(heads):
    plant, emu = heads
    g = emu.graph
    batch = {g.inputs[0]: plant.calib}
    ref = Evaluator(g, "float").run(batch, keep=g.outputs)
    test = Evaluator(g, "sim").run(batch, keep=g.outputs)
    figures = output_figures(g, ref, test)
    assert [f.layer for f in figures] == ["seg", "cls"]
    for f in figures:
        r, t = ref[f.node].float(), test[f.node].float()
        assert f.sqnr_db == pytest.approx(_numpy_sqnr(r, t), abs=1e-9)
        assert f.values == r.size
    powers = [float(np.sum(ref[f.node].float().astype(np.float64) ** 2)) for f in figures]
    assert [f.signal_share for f in figures] == pytest.approx([p / sum(powers) for p in powers])
    # seg is 2048 values a sample and quantized well; cls, behind the spike-stretched range, is far worse.
    seg, cls = figures
    assert seg.signal_share > 0.9 and cls.sqnr_db < seg.sqnr_db - 10
    assert cls.top1 is not None and cls.top1.total == len(plant.calib)


@pytest.mark.tf
def test_pooled_diagnosis_says_which_output_it_hides(heads):
    plant, emu = heads
    d = diagnose(emu.graph, {emu.graph.inputs[0]: plant.calib})
    seg, cls = d.outputs
    assert d.weighed_outputs == ["seg", "cls"] and seg.weighed and cls.weighed
    # The pooled figure sits between the two, far above cls's own.
    assert cls.sqnr_db < d.output.sqnr_db - 3 < seg.sqnr_db
    warning = d.hidden_output_warning
    assert warning is not None and "cls alone is" in warning and "seg carries" in warning
    # The pooled top-1 agreement counts seg's 8192 per-pixel decisions beside cls's 32: it hides cls too.
    assert cls.top1.agreement < d.top1_agreement - 0.05
    assert f"cls alone agrees on {100 * cls.top1.agreement:.1f}%" in warning
    data = d.to_dict()
    json.dumps(data, allow_nan=False)
    assert [o["layer"] for o in data["output"]["per_output"]] == ["seg", "cls"]
    assert data["output"]["hidden_output_warning"] == warning


@pytest.mark.tf
def test_focused_diagnosis_measures_the_named_output_alone(heads):
    plant, emu = heads
    data = {emu.graph.inputs[0]: plant.calib}
    pooled = diagnose(emu.graph, data)
    d = diagnose(emu.graph, data, outputs=resolve_outputs(emu.graph, ["cls"]))
    cls = next(f for f in pooled.outputs if f.layer == "cls")
    # Every figure is cls's own: the output SQNR is cls's figure, and seg's layers are not rows.
    assert d.output.sqnr_db == pytest.approx(cls.sqnr_db, abs=1e-9)
    assert d.weighed_outputs == ["cls"]
    assert [f.weighed for f in d.outputs] == [False, True]
    assert "seg" not in {s.layer for s in d.sensitivity} and "relu_outlier" in {s.layer for s in d.sensitivity}
    assert any("weighs only the output(s) cls" in n and "seg left out" in n for n in d.notes)
    assert d.hidden_output_warning is None
    top = d.findings[0]
    assert (top.layer, top.kind) == ("relu_outlier", "outlier_range")
    # Its remedy is worth more to cls than to the pooled figure, which seg's error power dilutes.
    pooled_top = next(f for f in pooled.findings if f.layer == "relu_outlier")
    assert top.severity_db > pooled_top.severity_db + 1
    # The graph the diagnosis was given is left whole.
    assert emu.graph.outputs == ["quant_seg", "quant_cls"] and "quant_seg" in emu.graph


@pytest.mark.tf
def test_output_names_resolve_to_nodes_in_graph_order(heads):
    _, emu = heads
    g = emu.graph
    assert resolve_outputs(g, ["cls", "seg"]) == ["quant_seg", "quant_cls"]
    assert resolve_outputs(g, [" quant_cls "]) == ["quant_cls"]
    with pytest.raises(QInspectError, match=r"'relu_outlier' is not an output of the model \(its outputs: seg, cls\)"):
        resolve_outputs(g, ["relu_outlier"])
    with pytest.raises(QInspectError, match="names no output"):
        resolve_outputs(g, ["", " "])
    small = focused(g, ["quant_cls"])
    assert small.outputs == ["quant_cls"] and "quant_seg" not in small and "quant_relu_outlier" in small
    assert focused(g, None) is g and focused(g, list(g.outputs)) is g


def test_no_warning_when_the_worse_output_is_close_or_alone():
    from qinspect.analysis.outputs import OutputFigure

    a = OutputFigure("a", "a", 100, 0.99, 30.0, None)
    b = OutputFigure("b", "b", 4, 0.01, 28.0, None)
    assert hidden_output_warning([a, b], 29.9) is None  # 1.9 dB below: not hidden
    b.sqnr_db = 20.0
    assert "b alone is 20.0 dB, 9.9 dB below" in hidden_output_warning([a, b], 29.9)
    b.weighed = False  # left out by the user's choice: nothing pooled hides it
    assert hidden_output_warning([a, b], 29.9) is None
    assert hidden_output_warning([a], 29.9) is None
    # Shares are of every output's power; the sentence gives the share of what is pooled.
    c = OutputFigure("c", "c", 10, 0.3, 40.0, None)
    d = OutputFigure("d", "d", 10, 0.1, 20.0, None)
    a.weighed = False
    assert "c carries 75.0% of it; d alone is 20.0 dB" in hidden_output_warning([a, c, d], 30.0)


def test_pooled_top1_hides_a_few_bad_decisions():
    from qinspect.analysis.decisions import Top1Tally
    from qinspect.analysis.outputs import OutputFigure

    def tally(agree: int, total: int) -> Top1Tally:
        t = Top1Tally(agree=agree, total=total)
        return t

    pixels = OutputFigure("p", "pixels", 4000, 0.9, 30.0, tally(990, 1000))
    cls = OutputFigure("c", "cls", 40, 0.1, 29.0, tally(6, 10))
    pooled = (990 + 6) / 1010
    text = hidden_output_warning([pixels, cls], 29.9, pooled)
    assert text == ("the top-1 agreement pools the decisions of 2 outputs (pixels makes 1000 of them); cls alone "
                    "agrees on 60.0%, not 98.6%")
    cls.top1 = tally(96, 100)  # 2.6 points below 98.6%: within the gap
    assert hidden_output_warning([pixels, cls], 29.9, (990 + 96) / 1100) is None
    from qinspect.report import wording

    assert wording.pooled_top1_suffix([pixels, cls]) == " (pooled over 2 outputs)"
    cls.weighed = False
    assert wording.pooled_top1_suffix([pixels, cls]) == ""
    assert wording.pooled_top1_suffix([pixels.to_dict(), {**cls.to_dict(), "weighed": True}]) == \
        " (pooled over 2 outputs)"


@pytest.mark.tf
def test_cli_outputs_option(heads, tmp_path, cli):
    plant, _ = heads
    np.save(tmp_path / "calib.npy", plant.calib)
    base = ("diagnose", str(plant.path), "--inputs", str(tmp_path / "calib.npy"), "--no-sensitivity")
    r = cli(*base)
    assert r.returncode == 0, r.stderr
    assert "each output: seg " in r.stdout and ", cls " in r.stdout
    assert "cls alone is" in r.stdout and "--outputs NAME" in r.stdout
    r = cli(*base, "--outputs", "cls", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["output"]["weighed"] == ["cls"]
    cls = next(o for o in data["output"]["per_output"] if o["layer"] == "cls")
    assert data["output"]["sqnr_db"] == pytest.approx(cls["sqnr_db"], abs=1e-9)
    r = cli(*base, "--outputs", "nope")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and str(plant.path) in line and "'nope' is not an output" in line and "seg, cls" in line


@pytest.mark.tf
def test_report_and_advise_weigh_the_named_outputs(heads, tmp_path, cli):
    plant, _ = heads
    np.save(tmp_path / "calib.npy", plant.calib)
    data = ("--inputs", str(tmp_path / "calib.npy"))
    r = cli("report", str(plant.path), *data, "-o", str(tmp_path / "all"), "--no-sensitivity")
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "all" / "report.json").read_text())["output"]
    assert [o["layer"] for o in out["per_output"]] == ["seg", "cls"] and out["weighed"] == ["seg", "cls"]
    html = (tmp_path / "all" / "report.html").read_text()
    assert "<td>cls</td>" in html and "pools seg, cls by their signal power" in html
    assert "cls alone is" in html and "top-1 agreement with float (pooled over 2 outputs)" in html
    r = cli("report", str(plant.path), *data, "-o", str(tmp_path / "cls"), "--no-sensitivity", "--outputs", "cls")
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "cls" / "report.json").read_text())["output"]
    cls = next(o for o in out["per_output"] if o["layer"] == "cls")
    assert out["weighed"] == ["cls"] and out["sqnr_db"] == pytest.approx(cls["sqnr_db"], abs=1e-9)
    assert "is cls's alone" in (tmp_path / "cls" / "report.html").read_text()
    for extra in ((), ("--no-findings",)):  # a wrong name is refused even when no diagnosis would use it
        r = cli("report", str(plant.path), *data, "-o", str(tmp_path / "bad"), "--outputs", "gap", *extra)
        assert r.returncode == 2 and "'gap' is not an output" in r.stderr and str(plant.path) in r.stderr
        assert not (tmp_path / "bad").exists()
    rows = {}
    for names in (None, "cls"):
        r = cli("advise", str(plant.path), *data, "--json", *(("--outputs", names) if names else ()))
        assert r.returncode == 0, r.stderr
        rows[names] = json.loads(r.stdout)
    assert rows[None]["weighed_outputs"] == ["seg", "cls"] and rows["cls"]["weighed_outputs"] == ["cls"]
    # The same option rows, measured on cls alone: far below the pooled figures seg lifts.
    base = [a for a in rows["cls"]["advice"] if not a["keep_float"]]
    pooled = [a for a in rows[None]["advice"] if not a["keep_float"]]
    assert max(a["output_sqnr_db"] for a in base) < min(a["output_sqnr_db"] for a in pooled) - 10
