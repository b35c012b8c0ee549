"""Load: one spec of 51 tiny trials on the local instance; every trial accounted for, and the report
states the run's wall time and trials per minute."""

from __future__ import annotations

import csv
import re

import pytest

from blip_ray.cli import main

LEARNING_RATES = [round(0.01 * i, 2) for i in range(1, 18)]
SPEC = f"""\
name: load
benchmark: pdigits
fc_width: 16
tasks: 2
train: {{lr: {{grid: {LEARNING_RATES}}}, epochs: 1}}
methods: {{finetune: {{}}}}
seeds: [0, 1, 2]
"""


@pytest.mark.ray
@pytest.mark.slow
def test_fifty_one_tiny_trials_all_accounted_for(ray_session, tmp_path, capsys):
    spec = tmp_path / "load.yaml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--storage", str(tmp_path), "--name", "load", "--quiet"]) == 0
    with open(tmp_path / "load" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    settings = sorted((float(r["train.lr"]), int(r["seed"])) for r in rows)
    assert settings == sorted((lr, seed) for lr in LEARNING_RATES for seed in (0, 1, 2))
    assert all(r["status"] == "ok" and r["tasks_done"] == "2" for r in rows)
    report = (tmp_path / "load" / "report.md").read_text()
    assert "Trials: 51 ok, 0 failed, 0 incomplete (51 in all)." in report
    stated = re.search(r"Wall time: .* \(([\d.]+) s\), ([\d.]+) trials per minute\.", report)
    assert stated, report[:500]
    wall_s, per_minute = map(float, stated.groups())
    assert per_minute == pytest.approx(51 * 60 / wall_s, rel=0.01)
    with capsys.disabled():
        print(f"\nload: 51 trials in {wall_s:.1f} s, {per_minute:.0f} trials per minute")
