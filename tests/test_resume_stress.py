"""A few runs of the interrupt-and-resume stress script (``benchmarks/reliability``): SIGINT and
SIGTERM to the process group at drawn delays beside a CPU hog, then ``--resume``; every trial
keeps every task row exactly once and the summary equals an uninterrupted run's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "reliability" / "resume_stress.py"


@pytest.mark.slow
def test_interrupted_and_resumed_runs_lose_and_repeat_no_row(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "2", "--seed", "1", "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "runs=2 lost_or_repeated=0 mismatched=0"
    runs = [line for line in lines if line.startswith("run ")]
    assert len(runs) == 2 and all("rows ok" in line and "equal" in line for line in runs)
