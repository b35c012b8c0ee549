"""``--dry-run``, the trial count behind it and the ``--yes`` guard: all without starting Ray."""

from __future__ import annotations

import dataclasses
import math

import pytest
from ray.tune.search.variant_generator import generate_variants

from blip_ray.cli import main
from blip_ray.experiments.plan import estimate
from blip_ray.experiments.plan.dry_run import dry_run_text
from blip_ray.experiments.plan.estimate import (
    RL_THROUGHPUT,
    START_S,
    Estimate,
    SupervisedCalibration,
    estimate_wall,
    recorded_rl_seconds,
)
from blip_ray.experiments.plan.grid import (
    MAX_TRIALS_ENV,
    check_trial_count,
    max_trials,
    plan_trials,
)
from blip_ray.experiments.run.launch import param_space
from blip_ray.experiments.specs.experiment import parse_spec

GRID = {
    "name": "g",
    "benchmark": "pdigits",
    "seeds": [0, 1, 2],
    "samples": 2,
    "tasks": 2,
    "train": {"lr": {"grid": [0.01, 0.05]}, "batch_size": {"choice": [32, 64]}},
    "methods": {
        "blip": {"f_prior": {"loguniform": [1e-17, 1e-11]}, "fisher_batches": 4},
        "ewc": {"lamb": {"grid": [10, 100, 1000]}, "fisher_batch_size": {"grid": [10, 20]}},
        "finetune": {},
    },
}
CARTPOLE = {"name": "c", "benchmark": "cartpole3", "seeds": [0, 1], "methods": {"finetune": {}}}


def tune_count(raw: dict) -> int:
    spec = parse_spec(raw)
    return spec.samples * sum(1 for _ in generate_variants(param_space(spec), True))


@pytest.mark.parametrize(
    "raw",
    [GRID, CARTPOLE, {**GRID, "samples": 1, "train": {}}],
    ids=["grids-samples-train", "rl", "methods-only"],
)
def test_the_count_is_what_tune_expands(raw):
    assert plan_trials(parse_spec(raw)).trials == tune_count(raw)


def test_references_count_each_task_alone_per_seed():
    spec = parse_spec(CARTPOLE).as_references()
    plan = plan_trials(spec)
    assert plan.trials == 3 * 2 == sum(1 for _ in generate_variants(param_space(spec), True))
    assert plan.grid_text() == "3 tasks alone x 2 seeds"
    assert plan.total_tasks == 6  # one task per trial


def test_grid_text_and_header_state_the_true_count():
    plan = plan_trials(parse_spec(GRID))
    # (1 blip + 3 x 2 ewc + 1 finetune) settings x 2 lr x 3 seeds x 2 samples
    assert plan.trials == 8 * 2 * 3 * 2 == 96
    assert plan.grid_text() == "8 settings of 3 methods x 2 training settings x 3 seeds x 2 samples"
    assert plan.header(cpus=2, gpus=0) == (
        "g: 96 trials (8 settings of 3 methods x 2 training settings x 3 seeds x 2 samples), "
        "2 at a time (1 CPU each of 2 CPUs), 2 tasks each, 192 tasks in all"
    )


def test_trials_at_once_follow_cpus_gpus_and_max_concurrent():
    spec = parse_spec({**CARTPOLE, "resources": {"cpu": 2, "gpu": 0.5}, "seeds": list(range(9))})
    plan = plan_trials(spec)
    assert plan.at_once(cpus=16, gpus=1) == 2  # the GPU binds
    assert plan.at_once(cpus=16, gpus=4) == 8  # the CPUs bind
    assert plan.at_once(cpus=64, gpus=8) == 9  # no more than there are trials
    capped = plan_trials(dataclasses.replace(spec, max_concurrent=3))
    assert capped.at_once(cpus=64, gpus=8) == 3


def test_dry_run_lists_the_grid_and_resources_with_a_given_estimate():
    seen = []

    def fake(spec, at_once):
        seen.append(at_once)
        return Estimate(3723.0, "a fake calibration")

    text = dry_run_text(parse_spec(GRID), cpus=5, estimator=fake)
    lines = text.splitlines()
    assert lines[0] == (
        "g (pdigits): 96 trials (8 settings of 3 methods x 2 training settings x 3 seeds x "
        "2 samples), 2 tasks each, 192 tasks in all; dry run, nothing started"
    )
    assert (
        "  blip      1 setting -> 12 trials   fisher_batches=4; f_prior: loguniform 1e-17 to 1e-11"
        in lines
    )
    assert "  ewc       6 settings -> 72 trials   lamb: grid [10, 100, 1000]; " in text
    assert "  finetune  1 setting -> 12 trials   defaults" in lines
    assert "training, every method: lr: grid [0.01, 0.05]; batch_size: choice [32, 64]" in lines
    assert "resources: 1 CPU per trial; 5 at a time on 5 CPUs (--cpus)" in lines
    assert lines[-1] == "estimated wall time: about 1h 02m (a fake calibration)"
    assert seen == [5]


def test_dry_run_says_a_remote_clusters_size_is_unknown():
    text = dry_run_text(parse_spec(CARTPOLE), remote=True, estimator=lambda s, n: Estimate(1, "x"))
    assert "the cluster's size is not known without starting Ray, give it with --cpus N" in text


def test_the_wall_time_schedules_trials_on_the_slots():
    spec = parse_spec({**CARTPOLE, "seeds": [0, 1, 2], "methods": {"finetune": {}, "blip": {}}})
    seconds = {"finetune": 10.0, "blip": 30.0}
    wall = estimate_wall(spec, at_once=2, trial_seconds=lambda s, m: seconds[m])
    # Tune's order ft ft ft blip blip blip on 2 slots, each trial to the first free one:
    # slot 1: ft 0-10, ft 10-20, blip 20-50; slot 2: ft 0-10, blip 10-40, blip 40-70
    assert wall == START_S + 70.0
    assert estimate_wall(spec, at_once=6, trial_seconds=lambda s, m: seconds[m]) == START_S + 30


def test_rl_trials_take_their_steps_at_the_recorded_rate():
    spec = parse_spec({**CARTPOLE, "rl": {"steps_per_task": 20480}})
    rate = RL_THROUGHPUT["mlp"].steps_per_s
    assert recorded_rl_seconds(spec, "finetune") == pytest.approx(
        estimate.RL_TRIAL_START_S + 3 * 20480 / rate
    )
    text = estimate.default_estimate(spec, at_once=2).text()
    assert text.startswith("estimated wall time: about ")
    assert "estimate from recorded figures" in text and "results/cartpole3" in text


def test_the_supervised_extrapolation_counts_batches_epochs_and_evaluation():
    spec = parse_spec({**GRID, "train": {"epochs": 3, "batch_size": 50}, "samples": 1})
    calibration = SupervisedCalibration(spec)
    calibration._costs["finetune"] = (0.01, 0.001)  # seconds per batch, per evaluated sample
    tasks = calibration.sequence.tasks
    test = sum(len(t.test) for t in tasks)
    expected = 0.001 * test + sum(
        3 * (math.ceil(len(t.train) / 50) * 0.01 + len(t.valid) * 0.001) + 0.001 * test
        for t in tasks
    )
    assert calibration(spec, "finetune") == pytest.approx(expected)


def test_a_real_calibration_times_a_few_batches():
    spec = parse_spec({**GRID, "samples": 1}).smoke()
    calibration = SupervisedCalibration(spec, batches=3)
    seconds = calibration(spec, "ewc")
    assert 0 < seconds < 60
    assert calibration.batches >= 2
    found = estimate.default_estimate(spec, at_once=2)
    assert found.seconds is not None and found.seconds > START_S
    assert "short calibration on this machine" in found.basis


def test_dry_run_from_the_command_line_starts_nothing(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nbenchmark: cartpole3\nmethods: {finetune: {}}\nseeds: [0, 1]\n")
    runs = tmp_path / "runs"
    assert main(["run", str(spec), "--dry-run", "--cpus", "4", "--storage", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("t (cartpole3): 2 trials (1 method x 2 seeds), 3 tasks each")
    assert "2 at a time on 4 CPUs (--cpus)" in out
    assert not runs.exists()


def test_a_large_grid_asks_for_yes(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nbenchmark: cartpole3\nmethods: {finetune: {}}\nseeds: [0, 1, 2]\n")
    assert main(["run", str(spec), "--max-trials", "2"]) == 2
    assert capsys.readouterr().err == (
        "blip-ray: error: spec makes 3 trials (above 2); add --yes to run them, or --dry-run "
        "to list them\n"
    )
    monkeypatch.setenv(MAX_TRIALS_ENV, "1")
    assert main(["run", str(spec)]) == 2
    assert "spec makes 3 trials (above 1)" in capsys.readouterr().err
    monkeypatch.setenv(MAX_TRIALS_ENV, "many")
    assert main(["run", str(spec)]) == 2
    assert f"{MAX_TRIALS_ENV}: expected a whole number" in capsys.readouterr().err


def test_the_threshold_default_flag_and_confirmation(monkeypatch):
    monkeypatch.delenv(MAX_TRIALS_ENV, raising=False)
    assert max_trials(None) == 200
    monkeypatch.setenv(MAX_TRIALS_ENV, "50")
    assert max_trials(None) == 50
    assert max_trials(7) == 7  # the flag wins
    plan = plan_trials(parse_spec({**CARTPOLE, "seeds": list(range(201))}))
    with pytest.raises(ValueError, match="spec makes 201 trials"):
        check_trial_count(plan, limit=200, confirmed=False)
    check_trial_count(plan, limit=200, confirmed=True)  # --yes
    check_trial_count(plan, limit=201, confirmed=False)
