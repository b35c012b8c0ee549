"""Stopping ``blip-ray run`` the way schedulers do, with its embedded Ray instance.

``timeout``, SLURM and systemd signal the whole process group of the job, not only its first
process. Each case starts ``blip-ray run`` as a group of its own, signals it once a task row is
written, and checks that it exits 130 within a bound with its report written and the resume
command printed, that no Ray process of the run is left, and that the printed command finishes
the experiment without redoing a finished task.

``timeout`` is started with a long limit and sent SIGALRM: that is how its limit expires (the
same handler runs), so the signal comes once a row exists rather than after a guessed time.
``--preserve-status`` makes it exit with blip-ray's code instead of its own 124.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cl_fixtures import grid_spec

from blip_ray.records.trials import load_trials, task_rows

pytestmark = [pytest.mark.slow, pytest.mark.ray]

BIN = Path(sys.executable).parent
SPEC = grid_spec("signals")  # 4 trials of 3 tasks
TASKS, TRIALS = 3, 4
STOP_BOUND_S = 60
"""How long blip-ray may take from the signal to its exit (stop, save, report, Ray ended)."""

CASES = {
    "group-sigterm": lambda run, stopper: os.killpg(run.pid, signal.SIGTERM),
    "pid-sigterm": lambda run, stopper: os.kill(run.pid, signal.SIGTERM),
    "group-sigint": lambda run, stopper: os.killpg(run.pid, signal.SIGINT),  # Ctrl+C
    "timeout": lambda run, stopper: os.kill(stopper.pid, signal.SIGALRM),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_stopped_run_exits_130_saved_and_resumes_without_redoing_a_task(case, tmp_path):
    spec = tmp_path / "signals.yaml"
    spec.write_text(SPEC)
    experiment = tmp_path / "runs" / "signals"
    # Short root: Ray's socket paths must stay under the 107-byte AF_UNIX limit. Every process
    # of this run's Ray instance inherits RAY_TMPDIR, which is how leftovers are found.
    root = tempfile.mkdtemp(prefix="brs-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env.update(RAY_TMPDIR=root, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    command = ["blip-ray", "run", str(spec), "--storage", str(experiment.parent)]
    command += ["--name", "signals"]
    if case == "timeout":
        command = ["timeout", "--preserve-status", "-s", "TERM", "600", *command]
    try:
        code, stop_s, log = _run_and_stop(command, env, experiment, CASES[case], tmp_path)
        assert code == 130, log[-4000:]
        assert stop_s < STOP_BOUND_S, f"took {stop_s:.0f} s to stop"
        assert (experiment / "report.md").is_file()
        done = _rows(experiment)
        assert 0 < done < TASKS * TRIALS, f"{done} rows: the signal did not land mid-run"
        assert not _processes_of(root), "Ray processes outlived the run"

        (line,) = [x for x in log.splitlines() if "continue with: " in x]
        resume = shlex.split(line.split("continue with: ", 1)[1])
        assert resume[:2] == ["blip-ray", "run"] and "--resume" in resume
        last = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=400)
        assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
        assert not _processes_of(root), "Ray processes outlived the resumed run"
    finally:
        for pid in _processes_of(root):  # only if a check above failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    rows = task_rows(experiment)
    assert len(rows) == TRIALS
    for trial, tasks in rows.items():
        assert tasks == list(range(TASKS)), f"{trial} redid a task: {tasks}"
    assert all(t.status == "ok" for t in load_trials(experiment))


def _run_and_stop(
    command: list[str],
    env: dict[str, str],
    experiment: Path,
    stop: Callable[[Any, Any], None],
    tmp_path: Path,
) -> tuple[int, float, str]:
    """Start ``command`` in a new session, ``stop`` it at its first task row; return its exit
    code, the seconds from the signal to the exit, and its output."""
    log = tmp_path / "run.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    # under `timeout`, blip-ray is its child: the group (and session) is still process.pid
    run = _child(process.pid) if command[0] == "timeout" else process
    try:
        deadline = time.monotonic() + 300
        while _rows(experiment) < 1:
            assert process.poll() is None, f"ended before the signal: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        stop(run, process)
        signalled = time.monotonic()
        code = process.wait(timeout=STOP_BOUND_S + 60)
        return code, time.monotonic() - signalled, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # only if it hung: its own group


class _Pid:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def _child(parent: int) -> _Pid:
    """The one child of ``parent`` (``timeout``'s command), once it has started."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if children:
            return _Pid(int(children[0]))
        time.sleep(0.05)
    raise AssertionError("timeout did not start its command")


def _rows(experiment: Path) -> int:
    return sum(len(tasks) for tasks in task_rows(experiment).values()) if experiment.is_dir() else 0


def _processes_of(root: str) -> list[int]:
    """Processes that inherited ``RAY_TMPDIR=root``: the run's Ray instance and workers."""
    marker = f"RAY_TMPDIR={root}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
    return found
