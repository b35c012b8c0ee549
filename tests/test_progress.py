"""What a run prints: blip-ray's header with the true trial count, the ``--quiet`` progress line
(rate-limited), and none of Ray's notices that blip-ray replaces or that say nothing to its user.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from blip_ray.experiments.plan.grid import plan_trials, progress_line
from blip_ray.experiments.run.progress import (
    NOISE,
    TOKEN_NOTICE,
    DropMessages,
    OverallProgress,
    quiet_ray_notices,
)
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.records.rows import TaskRow

REPO = Path(__file__).parent.parent
SPEC = {"name": "p", "benchmark": "pdigits", "seeds": [0, 1], "tasks": 3, "methods": {"si": {}}}
RAY_NOISE = (
    "Token authentication is enabled",
    "Number of trials",  # Tune's box
    "Tuner.restore",
    "Failed to fetch metrics",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trial(trial_id: str, status: str = "RUNNING") -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, status=status, last_result={})


def row(done: int) -> dict:
    names = ["a", "b", "c"]
    return TaskRow(
        task=done - 1,
        task_name=names[done - 1],
        num_tasks=3,
        task_names=names,
        metric="accuracy",
        row=[0.5] * 3,
        matrix=[[0.5] * 3] * done,
        initial_row=[0.1] * 3,
        capacity=None,
        state_bytes=0,
    ).to_result()


def test_the_progress_line_reads_at_a_glance():
    line = progress_line(
        done=5,
        running=2,
        pending=17,
        trials=24,
        tasks_done=24,
        total_tasks=96,
        tasks_left=72,
        elapsed_s=750,
        rate_tasks=24,
    )
    assert line == (
        "progress: 5/24 trials done, 2 running, 17 pending; tasks 24/96; 12m 30s elapsed, "
        "ETA 37m 30s"
    )
    assert line.endswith("ETA 37m 30s")  # 750 s per 24 tasks, 72 left: 2,250 s


def test_progress_prints_at_task_ends_at_most_every_interval():
    clock, lines = Clock(), []
    progress = OverallProgress(
        plan_trials(parse_spec(SPEC)), every_s=30, clock=clock, out=lines.append
    )
    progress.setup()
    first, second = trial("t0"), trial("t1")
    trials = [first, second]
    progress.on_step_end(0, trials)
    assert lines == [
        "progress: 0/2 trials done, 2 running, 0 pending; tasks 0/6; 0s elapsed, "
        "ETA after the first task"
    ]
    clock.now += 10
    progress.on_trial_result(1, trials, first, row(1))
    progress.on_step_end(1, trials)
    assert len(lines) == 1  # 10 s after the last line: nothing yet
    clock.now += 20
    progress.on_trial_result(2, trials, second, row(1))
    assert lines[-1] == (
        "progress: 0/2 trials done, 2 running, 0 pending; tasks 2/6; 30s elapsed, ETA 1m 00s"
    )
    clock.now += 30
    progress.on_trial_result(3, trials, first, row(2))
    progress.on_trial_result(3, trials, first, row(3))
    first.status = "TERMINATED"
    progress.on_experiment_end(trials)
    assert lines[-2:] == [
        "progress: 0/2 trials done, 2 running, 0 pending; tasks 3/6; 1m 00s elapsed, ETA 1m 00s",
        "progress: 1/2 trials done, 1 running, 0 pending; tasks 4/6; 1m 00s elapsed, ETA 30s",
    ]


def test_a_stopped_trial_still_has_its_tasks_to_run():
    clock, lines = Clock(), []
    progress = OverallProgress(plan_trials(parse_spec(SPEC)), clock=clock, out=lines.append)
    progress.setup()
    stopped, failed = trial("t0"), trial("t1")
    progress.on_trial_result(0, [stopped, failed], stopped, row(1))
    progress.on_trial_result(0, [stopped, failed], failed, {"failed": "NonFiniteLossError"})
    stopped.status = failed.status = "TERMINATED"  # Ctrl+C; a NaN loss
    clock.now += 60
    progress.on_experiment_end([stopped, failed])
    # the failed trial ended; the stopped one waits for --resume with 2 tasks left
    assert lines[-1] == (
        "progress: 1/2 trials done, 0 running, 1 pending; tasks 1/6; 1m 00s elapsed, ETA 2m 00s"
    )


def test_rays_notices_are_dropped_and_nothing_else():
    (token,) = TOKEN_NOTICE
    for name in (*NOISE, token):  # a clean slate: another test may have filtered already
        logging.getLogger(name).filters.clear()
    quiet_ray_notices(embedded=False)
    assert logging.getLogger(token).filters == []  # a cluster's notice stays
    quiet_ray_notices(embedded=True)
    quiet_ray_notices(embedded=True)  # idempotent: one filter per logger
    kept: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    for name, fragments in (NOISE | TOKEN_NOTICE).items():
        logger = logging.getLogger(name)
        assert [type(f) for f in logger.filters] == [DropMessages]
        handler = Keep()
        logger.addHandler(handler)
        try:
            for fragment in fragments:
                logger.warning(f"before {fragment} after")
            logger.warning("a warning worth reading")
        finally:
            logger.removeHandler(handler)
    assert kept == ["a warning worth reading"] * (len(NOISE) + 1)


def _tiny_spec(tmp_path: Path, *, tasks: int, epochs: int) -> Path:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        f"name: tiny\nbenchmark: pdigits\nmethods: {{finetune: {{}}, si: {{}}}}\n"
        f"seeds: [0, 1, 2]\ntasks: {tasks}\ntrain: {{epochs: {epochs}}}\n"
    )
    return spec


def _blip_ray(*args: str) -> list[str]:
    return [sys.executable, "-m", "blip_ray.cli", *args]


def test_a_quiet_run_prints_the_header_and_progress_and_no_ray_notices(tmp_path):
    spec = _tiny_spec(tmp_path, tasks=2, epochs=1)
    argv = _blip_ray("run", str(spec), "--smoke", "--quiet", "--storage", str(tmp_path / "r"))
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    lines = output.splitlines()
    # --smoke keeps one seed: two trials of two tasks
    assert lines[0].startswith("tiny: 2 trials (2 methods x 1 seed), ")
    assert "progress: 2/2 trials done, 0 running, 0 pending; tasks 4/4;" in output
    assert [n for n in RAY_NOISE if n in output] == []
    assert "\r" not in output


def test_an_interrupted_run_shows_only_blip_rays_resume_command(tmp_path):
    spec = _tiny_spec(tmp_path, tasks=10, epochs=3)
    argv = _blip_ray("run", str(spec), "--quiet", "--storage", str(tmp_path / "r"))
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("["):  # a task ended: trials are running, others pending
            os.killpg(process.pid, signal.SIGINT)  # Ctrl+C reaches the whole process group
            break
    lines += process.stdout.readlines()
    output = "".join(lines)
    assert process.wait(timeout=300) == 130, output[-2000:]
    assert "interrupted; continue with: blip-ray run " in output
    assert [n for n in RAY_NOISE if n in output] == []
