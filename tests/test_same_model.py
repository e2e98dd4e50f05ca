"""One rule, one message, wherever two captures are put side by side: ``diagnose --eval``, ``advise
--eval``, ``report --eval`` and the window's evaluation capture refuse a capture of another model."""

from __future__ import annotations

import dataclasses

import pytest
from capture_fixtures import N_SAMPLES, TinyWeights, run_here, tiny_data, tiny_graph, write_tiny

from qinspect.errors import QInspectError
from qinspect.io.capture_file import Capture, CaptureWriter


def _renamed(path, rename: dict[str, str]):
    """:func:`tiny_graph`'s capture with layers renamed (another model)."""
    graph = tiny_graph()
    graph.layers = [dataclasses.replace(layer, name=rename.get(layer.name, layer.name),
                                        inbound=[rename.get(n, n) for n in layer.inbound]) for layer in graph.layers]
    graph.outputs = [rename.get(n, n) for n in graph.outputs]
    data = tiny_data(1)
    shapes = {"outer/conv": (4, 4, 2), "dense": (4, 4, 5)}

    class Weights(TinyWeights):
        arrays = {rename.get(k, k): v for k, v in TinyWeights.arrays.items()}

    with CaptureWriter(path, graph, N_SAMPLES, {rename.get(k, k): v for k, v in shapes.items()}, {"input": (4, 4, 3)},
                       input_links={"input": "input"}, attrs={"preprocess": "0..1"}) as writer:
        writer.write_weights(Weights(), [layer.name for layer in graph.leaves()])
        writer.write_batch(0, {"input": data["input"]}, {rename.get(k, k): data[k] for k in shapes})
    return path


@pytest.fixture
def pair(tmp_path):
    return write_tiny(tmp_path / "calib.h5"), _renamed(tmp_path / "other.h5", {"dense": "head"})


EXPECTED = ("is not a capture of the same model as {calib} (layer 'dense' missing; 1 layer(s) only in {calib}, "
            "1 only here)")


@pytest.mark.parametrize("command", [["diagnose"], ["advise"], ["report", "-o", "{out}"]])
def test_commands_refuse_an_evaluation_capture_of_another_model_in_one_line(pair, tmp_path, command):
    calib, other = pair
    args = [a.format(out=tmp_path / "rep") for a in command]
    done = run_here(args[0], str(calib), *args[1:], "--eval", str(other))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and str(other) in done.stderr
    assert EXPECTED.format(calib=calib) in done.stderr
    assert not (tmp_path / "rep").exists()


def test_the_window_refuses_it_in_the_same_words(pair):
    from qinspect.gui.compare_job import check_same_model

    calib, other = pair
    with Capture.open(calib) as a, Capture.open(other) as b:
        with pytest.raises(QInspectError) as err:
            check_same_model(a, b, str(calib), str(other))
        assert EXPECTED.format(calib=calib) in str(err.value) and str(other) in str(err.value)
        with Capture.open(calib) as again:
            assert check_same_model(a, again, str(calib), str(calib)) == ["input", "outer/conv", "dense"]


def test_another_input_size_is_refused_naming_the_layer(tmp_path):
    from qinspect.io.same_model import check_same_model

    a, b = tiny_graph(), tiny_graph()
    b.layers[-1] = dataclasses.replace(b.layers[-1], output_shape=[None, 8, 8, 5])
    with pytest.raises(QInspectError, match=r"layer 'dense' has output shape \[N, 8, 8, 5\] here but \[N, 4, 4, 5\] in "
                                            r"a\.h5: not the same model shapes"):
        check_same_model(a, "a.h5", b, "b.h5")
    c = tiny_graph()
    c.layers[-1] = dataclasses.replace(c.layers[-1], class_name="Conv2D")
    with pytest.raises(QInspectError, match="layer 'dense' is a Conv2D here but a Dense in a.h5: not the same model"):
        check_same_model(a, "a.h5", c, "c.h5")
    check_same_model(a, "a.h5", tiny_graph(), "t.h5")  # the same model: no error
