"""Driver interruption and diverging trials.

``blip-ray run`` stopped by SIGINT (Ctrl+C) or SIGTERM (``kill``, ``ray job stop``, a scheduler)
exits 130 and leaves an experiment ``--resume`` finishes without redoing a finished task. A trial
whose loss turns NaN ends as failed with that reason, without retries; the other trials finish.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cl_fixtures import grid_spec

from blip_ray.cli import main
from blip_ray.records.trials import load_trials, task_rows

BLIP_RAY = str(Path(sys.executable).parent / "blip-ray")

SPEC = grid_spec("stop")


@pytest.mark.slow
def test_sigint_and_sigterm_stop_resumably_and_resume_redoes_no_task(tmp_path):
    spec = tmp_path / "stop.yaml"
    spec.write_text(SPEC)
    experiment = tmp_path / "runs" / "stop"
    args = [BLIP_RAY, "run", str(spec), "--storage", str(experiment.parent), "--name", "stop"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray

    first = _run_until_rows(args, env, experiment, rows=1, sig=signal.SIGINT, log=tmp_path / "1")
    assert first == 130, (tmp_path / "1").read_text()[-3000:]
    assert "--resume --name stop" in (tmp_path / "1").read_text()
    done = _rows(experiment)
    assert 0 < done < 12

    resumed = [*args, "--resume"]
    second = _run_until_rows(resumed, env, experiment, done + 1, signal.SIGTERM, tmp_path / "2")
    assert second == 130, (tmp_path / "2").read_text()[-3000:]
    assert _rows(experiment) < 12

    last = subprocess.run(resumed, env=env, capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    for trial, tasks in task_rows(experiment).items():
        assert tasks == [0, 1, 2], f"{trial} redid a task: {tasks}"
    trials = load_trials(experiment)
    assert len(trials) == 4 and all(t.status == "ok" for t in trials)


def _run_until_rows(
    args: list[str], env: dict, experiment: Path, rows: int, sig: int, log: Path
) -> int:
    """Start ``args``, send ``sig`` once ``rows`` task rows exist, return the exit code."""
    with open(log, "w") as sink:
        process = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while _rows(experiment) < rows:
            assert process.poll() is None, f"finished before the signal: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        process.send_signal(sig)
        return process.wait(timeout=120)
    finally:
        process.kill()


def _rows(experiment: Path) -> int:
    return sum(len(tasks) for tasks in task_rows(experiment).values()) if experiment.is_dir() else 0


NAN_SPEC = """\
name: nan
benchmark: pdigits
fc_width: 16
tasks: 2
train: {lr: {grid: [0.1, 1.0e+30]}, epochs: 2}    # 1e30 overflows the first step: loss NaN
methods: {finetune: {}}
seeds: [0]
max_failures: 2
"""


@pytest.mark.ray
def test_a_diverging_trial_fails_alone_with_its_reason(ray_session, tmp_path, capsys):
    spec = tmp_path / "nan.yaml"
    spec.write_text(NAN_SPEC)
    code = main(["run", str(spec), "--storage", str(tmp_path), "--name", "nan", "--quiet"])
    assert code == 1  # some trials failed
    assert "failed, not retried: NonFiniteLossError" in capsys.readouterr().out
    with open(tmp_path / "nan" / "summary.csv") as f:
        rows = {r["train.lr"]: r for r in csv.DictReader(f)}
    assert rows["0.1"]["status"] == "ok" and rows["0.1"]["tasks_done"] == "2"
    diverged = rows["1e+30"]
    assert diverged["status"] == "failed" and diverged["tasks_done"] == "0"
    assert diverged["error"].startswith("NonFiniteLossError: training loss became nan")
    report = (tmp_path / "nan" / "report.md").read_text()
    failures = report.split("## Failed trials")[1].split("##")[0]
    assert "train.lr=1e+30" in failures and "training loss became nan" in failures
    # Deterministic, so not retried: one attempt, no error file from a crash.
    params = [p for p in (tmp_path / "nan").glob("*/params.json") if "1e+30" in p.read_text()]
    assert len(params) == 1 and not (params[0].parent / "error.txt").exists()
