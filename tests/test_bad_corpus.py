"""Every reading command on every file of the bad-file corpus (tests/bad_corpus.py).

Four things hold for each: exit code 2 with one line naming the file (and saying what is wrong), no
traceback, an answer within seconds under a memory cap (tests/bad_corpus_runner.py runs all of them
in one child process with RLIMIT_AS and an alarm), and nothing outside ``-o`` created, changed or
removed (the corpus folder and the working folder are compared before and after each run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_corpus import make_corpus, runs
from conftest import REPO

HERE = Path(__file__).resolve().parent


def _argv(case, command: str, calib: str, out: str) -> list[str]:
    if case.kind == "eval":
        argv = [command, str(case.model), "--eval", str(case.path)]
    elif case.kind == "positions":
        if command == "compare-dump":
            return [command, str(case.path), case.extra["dump"], "--inputs", case.extra["dump_inputs"]]
        argv = [command, str(case.model), "--positions", str(case.path)]
        if command != "report":
            argv += ["--inputs", calib]
    elif case.kind == "inputs":
        argv = [command, str(case.model), "--inputs", case.extra.get("inputs", str(case.path))]
        if "preprocess" in case.extra:
            argv += ["--preprocess", case.extra["preprocess"]]
    elif case.kind == "capture" or command == "info":
        argv = [command, str(case.path)]  # a capture holds its own inputs
    else:
        argv = [command, str(case.path), "--inputs", case.extra.get("inputs", calib)]
    if command == "calibrate":
        argv += ["--batch-size", "4"]
    if command == "report":
        argv += ["--no-findings", "-o", out]
    return argv


@pytest.fixture(scope="module")
def results(refcases, tmp_path_factory) -> dict[tuple[str, str], dict]:
    root = tmp_path_factory.mktemp("corpus")
    corpus, work = root / "files", root / "work"
    work.mkdir()
    (root / "out").mkdir()
    cases = make_corpus(corpus, refcases / "small")
    calib = str(refcases / "small" / "calib.npy")
    plan = []
    for case in cases:
        for command in case.commands:
            out = str(root / "out" / f"{case.id}-{command}")
            plan.append({"id": [case.id, command], "argv": _argv(case, command, calib, out), "cwd": str(work),
                         "watch": [str(corpus), str(work), str(root)], "output": out, "path": str(case.path),
                         "fragment": case.fragment})
    (root / "plan.json").write_text(json.dumps(plan))
    # A private temporary folder: leftover checks must see this run's files only, not those of other
    # processes sharing /tmp.
    private_tmp = root / "tmp"
    private_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    proc = subprocess.run([sys.executable, str(HERE / "bad_corpus_runner.py"), str(root / "plan.json"),
                           str(root / "results.json")], cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((root / "results.json").read_text())
    return {tuple(r["id"]): {**r, **p} for r, p in zip(got, plan, strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize("case_id, command", runs(), ids=[f"{c}-{m}" for c, m in runs()])
def test_bad_file_gets_one_line_exit_2_and_touches_nothing(results, case_id, command):
    r = results[(case_id, command)]
    assert r["escaped"] is None, f"{r['argv']}\n{r['escaped']}"
    assert "Traceback" not in r["stderr"], r["stderr"]
    lines = r["stderr"].strip().splitlines()
    assert r["code"] == 2 and len(lines) == 1, (r["argv"], r["code"], r["stderr"])
    assert lines[0].startswith(f"qinspect: error: {r['path']}: "), lines[0]
    assert r["fragment"] in lines[0], lines[0]
    assert r["touched"] == [], r["touched"]
    assert r["keras_temps_left"] == []
