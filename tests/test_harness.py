"""The harness end to end under the session's local Ray instance: run, report, retry, resume."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from blip_ray.experiments.run import launch
from blip_ray.experiments.run.launch import run_experiment
from blip_ray.experiments.run.provenance import start_segment
from blip_ray.experiments.specs.experiment import FailureInjection, parse_spec
from blip_ray.records.layout import RUN_RECORD, read_provenance
from blip_ray.records.trials import load_trials, task_rows

pytestmark = pytest.mark.ray

BASE = {
    "name": "tiny",
    "benchmark": "pdigits",
    "fc_width": 32,
    "tasks": 3,
    "train": {"lr": 0.1, "epochs": 2},
    "methods": {"blip": {"f_prior": 1e-15, "fisher_batches": 2}, "finetune": {}},
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    outcome = run_experiment(parse_spec(BASE), storage=str(storage), verbose=0)
    return outcome, {(t.method, t.seed): t for t in load_trials(outcome.experiment_dir)}


def test_two_methods_two_seeds_end_to_end(uninterrupted):
    outcome, trials = uninterrupted
    assert outcome.trials == 4 and outcome.failed == 0
    directory = outcome.experiment_dir
    with open(directory / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("blip", "0"),
        ("blip", "1"),
        ("finetune", "0"),
        ("finetune", "1"),
    ]
    assert all(r["status"] == "ok" and 0 <= float(r["acc"]) <= 1 for r in rows)
    assert all(float(r["capacity"]) > 0 for r in rows if r["method"] == "blip")
    with open(directory / "matrices.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 3 * 3
    report = (directory / "report.md").read_text()
    assert "blip" in report and "finetune" in report
    assert list(directory.glob("*.png"))
    for trial in trials.values():
        assert len(trial.matrix) == 3 and trial.status == "ok"
    assert "blip" in outcome.table


def test_a_crashing_trial_is_retried_from_its_last_task(uninterrupted, tmp_path):
    _, reference = uninterrupted
    spec = dataclasses.replace(parse_spec(BASE), inject_failure=FailureInjection(after_task=0))
    outcome = run_experiment(spec, storage=str(tmp_path), verbose=0)
    assert outcome.failed == 0
    for trial_id, tasks in task_rows(outcome.experiment_dir).items():
        assert tasks == [0, 1, 2], f"{trial_id} redid a task: {tasks}"
    for trial in load_trials(outcome.experiment_dir):
        assert trial.matrix == reference[(trial.method, trial.seed)].matrix


def test_an_interrupted_experiment_resumes_without_redoing_tasks(uninterrupted, tmp_path):
    _, reference = uninterrupted
    spec = dataclasses.replace(
        parse_spec(BASE), max_failures=0, inject_failure=FailureInjection(after_task=1)
    )
    first = run_experiment(spec, storage=str(tmp_path), verbose=0)
    assert first.failed == 4
    assert all(
        t.status == "failed" and "injected failure" in t.error
        for t in load_trials(first.experiment_dir)
    )
    resumed = run_experiment(spec, storage=str(tmp_path), resume=True, verbose=0)
    assert resumed.experiment_dir == first.experiment_dir and resumed.failed == 0
    for trial_id, tasks in task_rows(resumed.experiment_dir).items():
        assert tasks == [0, 1, 2], f"{trial_id} redid a task: {tasks}"
    for trial in load_trials(resumed.experiment_dir):
        assert trial.matrix == reference[(trial.method, trial.seed)].matrix
    # each run segment is recorded, and the report's wall time is theirs summed
    segments = read_provenance(resumed.experiment_dir)["segments"]
    assert [(s["resumed"], s["interrupted"]) for s in segments] == [(False, False), (True, False)]
    assert [s["wall_s"] for s in segments] == [first.wall_s, resumed.wall_s]
    header = json.loads((resumed.experiment_dir / RUN_RECORD).read_text())
    assert header["wall_s"] == pytest.approx(first.wall_s + resumed.wall_s)
    report = (resumed.experiment_dir / "report.md").read_text()
    assert f"({header['wall_s']:.1f} s over 2 run segments)" in report
    assert f"- Flags: `--storage {tmp_path} --resume`." in report.split("## Provenance")[1]


def test_a_stop_before_any_trial_starts_leaves_an_experiment_that_resumes(
    uninterrupted, tmp_path, monkeypatch
):
    _, reference = uninterrupted
    stops = iter([KeyboardInterrupt])

    def stop_once(*args, **kwargs):  # Ctrl+C while the run is being set up
        for stop in stops:
            raise stop
        return start_segment(*args, **kwargs)

    monkeypatch.setattr(launch, "start_segment", stop_once)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_spec(BASE), storage=str(tmp_path), name="e", verbose=0)
    resumed = run_experiment(parse_spec(BASE), storage=str(tmp_path), resume=True, verbose=0)
    assert resumed.experiment_dir == tmp_path / "e" and resumed.failed == 0
    for trial in load_trials(resumed.experiment_dir):
        assert trial.matrix == reference[(trial.method, trial.seed)].matrix


def test_the_local_instance_stays_on_loopback(ray_session):
    assert {node["NodeManagerAddress"] for node in ray_session.nodes()} == {"127.0.0.1"}
