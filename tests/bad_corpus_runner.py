"""Run qinspect's commands on the bad-file corpus in one child process, under a memory cap.

``python tests/bad_corpus_runner.py PLAN.json RESULTS.json``: PLAN is a list of runs
``{"id", "argv", "cwd", "watch"}``; for each the command runs in-process (``qinspect.cli.main``) with
its stdout and stderr (file descriptors, so C libraries' writes are caught too) sent to files, under
``RLIMIT_AS`` and an alarm. RESULTS gets, per run: exit code, stderr, seconds, whether an exception
escaped (with its traceback), and which paths under ``watch`` were created, changed or removed.
One process for all runs: importing numpy, h5py and qinspect once keeps the corpus test fast.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

MEMORY_CAP = 3 << 30  # bytes of address space: far below what the hostile files ask for
TIME_CAP = 60  # seconds per run; a run that takes longer is reported as a hang


class _Hang(BaseException):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang


def snapshot(folders: list[str]) -> dict[str, tuple[int, int, int]]:
    """path -> (size, mtime_ns, mode) of everything under ``folders`` (links not followed; folders: mode only)."""
    out = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                st = os.lstat(path)
                # A folder's own times change whenever an entry comes and goes (the -o folder's parent
                # gets a probe and a temporary folder); what it holds is compared entry by entry.
                is_dir = os.path.isdir(path) and not os.path.islink(path)
                out[path] = (0, 0, st.st_mode) if is_dir else (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def keras_temp_folders() -> set[str]:
    """The extracted-weights folders of .keras archives (must not outlive the command)."""
    tmp = tempfile.gettempdir()
    return {name for name in os.listdir(tmp) if name.startswith("qinspect-keras-") and "models" not in name}


def run_one(run: dict) -> dict:
    from qinspect.cli import main

    watch = run["watch"]
    before, temps = snapshot(watch), keras_temp_folders()
    os.chdir(run["cwd"])
    result: dict = {"id": run["id"], "escaped": None}
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as err:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        started = time.monotonic()
        signal.alarm(TIME_CAP)
        try:
            result["code"] = main(run["argv"])
        except SystemExit as exc:
            result["code"] = exc.code if isinstance(exc.code, int) else 2
        except _Hang:
            result["code"] = None
            result["escaped"] = f"no answer within {TIME_CAP} s"
        except BaseException:  # noqa: BLE001 - the point is to see anything that escapes
            result["code"] = None
            result["escaped"] = traceback.format_exc()
        finally:
            signal.alarm(0)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        result["seconds"] = time.monotonic() - started
        err.seek(0)
        result["stderr"] = err.read().decode("utf-8", "replace")
    after = snapshot(watch)
    output = run.get("output")
    result["touched"] = sorted(
        path for path in set(before) | set(after)
        if before.get(path) != after.get(path) and not (output and (path + "/").startswith(output.rstrip("/") + "/"))
    )
    result["keras_temps_left"] = sorted(keras_temp_folders() - temps)
    return result


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    signal.signal(signal.SIGALRM, _on_alarm)
    results = [run_one(run) for run in plan]
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
