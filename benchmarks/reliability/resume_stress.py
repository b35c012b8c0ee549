"""Stress test of interrupting and resuming: no finished task row is lost or counted twice.

Runs a small pdigits experiment (2 methods x 2 seeds x 3 tasks) once uninterrupted, then, RUNS
times: starts it with ``blip-ray run`` in a process group of its own next to a CPU-hog process,
sends SIGINT or SIGTERM (alternating) to the whole group after a delay drawn from a range,
resumes it with ``--resume`` (interrupted again, by the other signal, on every second run), and
finally resumes it to the end. Each run then checks that every trial has every task's row
exactly once (``task_rows``: a redone task would show twice) and that every trial's accuracy
matrix and the report's summary equal the uninterrupted run's.

Run:   .venv/bin/python benchmarks/reliability/resume_stress.py [--runs 20] [--seed 0]
Prints one line per run and ``runs=N lost_or_repeated=N mismatched=N``; exits 1 if any run
lost, repeated or changed a row.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from blip_ray.records.trials import load_trials, task_rows

BLIP_RAY = str(Path(sys.executable).parent / "blip-ray")
TASKS = 3
SPEC = f"""\
name: stress
benchmark: pdigits
fc_width: 32
tasks: {TASKS}
train: {{lr: 0.1, epochs: 40, lr_patience: 1000}}
methods: {{finetune: {{}}, ewc: {{lamb: 100}}}}
seeds: [0, 1]
"""
DELAYS = (0.1, 0.95)
"""The range of the interruption delays, as fractions of the uninterrupted run's wall time: from
while Ray is still starting (no experiment directory yet: the next run starts it afresh) to its
last tasks."""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray


def _blip_ray(args: list[str], log: Path, *, stop_after: float | None, sig: int) -> int:
    """Run ``blip-ray ARGS`` in its own process group; with ``stop_after``, signal the group
    then. Returns the exit code."""
    with open(log, "a") as sink:
        process = subprocess.Popen(
            [BLIP_RAY, *args], stdout=sink, stderr=sink, env=_env(), start_new_session=True
        )
        try:
            process.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, sig)
        return process.wait(timeout=600)


def _resume(experiment: Path) -> list[str]:
    """``--resume`` where the interrupted run created the experiment (with Tune's state); a run
    stopped before that (Ray still starting) left nothing, and starts afresh."""
    return ["--resume"] if experiment.exists() else []


def _matrices(experiment: Path) -> dict[tuple[str, int], list[list[float]]]:
    return {(t.method, t.seed): t.matrix for t in load_trials(experiment) if t.status == "ok"}


def _summary(experiment: Path) -> pd.DataFrame:
    columns = ["method", "seed", "acc", "bwt", "forgetting", "status"]
    frame = pd.read_csv(experiment / "summary.csv")[columns]
    return frame.sort_values(["method", "seed"]).reset_index(drop=True)


def stress(runs: int, seed: int, root: Path) -> tuple[int, int]:
    """The stress runs under ``root``; returns (runs that lost or repeated a row, runs whose
    matrices or summary differ from the uninterrupted run's)."""
    spec = root / "stress.yaml"
    spec.write_text(SPEC)
    base = ["run", str(spec), "--storage", str(root), "--quiet"]
    start = time.perf_counter()
    code = _blip_ray([*base, "--name", "reference"], root / "reference.log", stop_after=None, sig=0)
    assert code == 0, (root / "reference.log").read_text()[-3000:]
    wall_s = time.perf_counter() - start
    print(f"uninterrupted run: {wall_s:.0f} s", flush=True)
    reference, reference_summary = _matrices(root / "reference"), _summary(root / "reference")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    draw = random.Random(seed)
    lost = mismatched = 0
    try:
        for run in range(runs):
            name, log = f"run{run}", root / f"run{run}.log"
            signals = [signal.SIGINT, signal.SIGTERM][:: 1 if run % 2 == 0 else -1]
            delays = [draw.uniform(*DELAYS) * wall_s for _ in range(2)]
            start, experiment = time.perf_counter(), root / name
            codes = [_blip_ray([*base, "--name", name], log, stop_after=delays[0], sig=signals[0])]
            if run % 2 == 1:  # a resume interrupted too
                args = [*base, "--name", name, *_resume(experiment)]
                codes.append(_blip_ray(args, log, stop_after=delays[1], sig=signals[1]))
            args = [*base, "--name", name, *_resume(experiment)]
            codes.append(_blip_ray(args, log, stop_after=None, sig=0))
            rows = task_rows(experiment)
            bad_rows = {t: r for t, r in rows.items() if r != list(range(TASKS))}
            bad_rows |= {"(trials)": len(rows)} if len(rows) != len(reference) else {}
            same = _matrices(experiment) == reference and _summary(experiment).equals(
                reference_summary
            )
            lost += bool(bad_rows) or codes[-1] != 0
            mismatched += not same
            stops = ", ".join(
                f"{signal.Signals(s).name} at {d:.1f} s -> {c}"
                for s, d, c in zip(signals, delays, codes[:-1], strict=False)
            )
            print(
                f"run {run}: {stops}; final resume -> {codes[-1]}; rows "
                f"{bad_rows or 'ok'}; matrices and summary "
                f"{'equal' if same else 'DIFFER'}; {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    finally:
        hog.kill()
        hog.wait()
    return lost, mismatched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn delays")
    parser.add_argument("--keep", type=Path, help="keep the experiments under this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resume-stress-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        lost, mismatched = stress(args.runs, args.seed, root)
    print(f"runs={args.runs} lost_or_repeated={lost} mismatched={mismatched}")
    return 1 if lost or mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
