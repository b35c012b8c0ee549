"""Every committed spec loads, and each paper spec runs ``--smoke`` on tiny real-format files."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_tiny_dataset

from blip_ray.cli import main
from blip_ray.experiments.specs.experiment import load_spec, parse_spec
from blip_ray.methods import METHODS
from blip_ray.rl.sequences import RL_SEQUENCES, get_rl_sequence
from blip_ray.rl.settings import RlSettings

SPECS = sorted(Path(__file__).parent.parent.glob("benchmarks/*.yaml"))
PAPER = ["mnist5", "pmnist", "cifar", "mixture5", "miniimagenet", "miniimagenet-resnet"]


def test_every_committed_spec_is_valid():
    names = {path.stem for path in SPECS}
    assert {"pdigits", "digits5", "pdigits-fprior-sweep", "cartpole3", "atari6", *PAPER} <= names
    for path in SPECS:
        spec = load_spec(path)
        assert spec.name == path.stem
        assert all(spec.track in METHODS[name].tracks for name in spec.methods)
        smoke = spec.smoke()
        assert smoke.tasks == min(spec.tasks, 2)  # a one-task benchmark (minatar4:Asterix) stays
        if spec.rl is None:
            assert smoke.rl is None
            continue
        # the smoke run's two tasks keep their reference returns, the others' are dropped
        first = [task.name for task in get_rl_sequence(spec.benchmark).tasks[:2]]
        references = {k: v for k, v in spec.rl.reference_returns.items() if k in first}
        assert smoke.rl == dataclasses.replace(spec.rl.smoke(), reference_returns=references)


def test_specs_resolve_tasks_and_rl_settings_when_read():
    """Defaults are filled from the sequence while the spec is read, not later in the trial."""
    assert load_spec("benchmarks/pdigits.yaml").tasks == 10
    atari = load_spec("benchmarks/atari6.yaml")
    assert atari.tasks == 6 and atari.network == "atari_cnn" and "frozen" in atari.methods
    assert atari.rl == RlSettings.for_sequence("atari6", steps_per_task=10_000_000)
    assert atari.rl.ppo.train_batch_size == 2000 and atari.rl.num_env_runners == 0
    cartpole = load_spec("benchmarks/cartpole3.yaml")
    assert cartpole.rl.steps_per_task == RL_SEQUENCES["cartpole3"].steps_per_task
    assert (cartpole.rl.eval_episodes, cartpole.rl.eval_interval) == (5, 4)
    assert cartpole.rl.ppo.num_envs == 8  # the sequence's PPO, over the paper's 16


def test_the_trials_get_the_rl_settings_the_spec_resolved():
    from blip_ray.experiments.run.launch import param_space

    spec = parse_spec(
        {
            "name": "c",
            "benchmark": "cartpole3",
            "methods": {"finetune": {}},
            "seeds": [0],
            "resources": {"cpu": 5},
            "rl": {"ppo": {"lr": 0.001}},
        }
    )
    assert spec.rl.num_env_runners == 4  # 8 envs over 4 of 5 CPUs
    run = param_space(spec)["run"]
    assert RlSettings.from_dict(run["rl"]) == spec.rl and run["rl"]["ppo"]["lr"] == 0.001
    assert run["tasks"] == 3


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_paper_spec_runs_smoke_on_tiny_files(name, ray_session, tmp_path):
    spec = load_spec(f"benchmarks/{name}.yaml")
    data = tmp_path / "data"
    write_tiny_dataset(spec.benchmark, data)
    code = main(
        [
            "run",
            f"benchmarks/{name}.yaml",
            "--smoke",
            "--quiet",
            "--data-dir",
            str(data),
            "--storage",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    experiment, rows = _ok_smoke_rows(tmp_path, spec)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name", ["cartpole3", "atari6", "minatar4"])
def test_rl_spec_runs_smoke_through_the_harness(name, ray_session, tmp_path):
    spec = load_spec(f"benchmarks/{name}.yaml")
    code = main(
        [
            "run",
            f"benchmarks/{name}.yaml",
            "--smoke",
            "--quiet",
            "--storage",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    experiment, rows = _ok_smoke_rows(tmp_path, spec)
    with open(experiment / "matrices.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows) * 2 * 2
    report = (experiment / "report.md").read_text()
    assert "normalized return" in report
    policy = {"greedy": "deterministic (greedy)", "sampled": "sampled-policy"}[spec.rl.eval_policy]
    assert f"- 64 env steps per task; evaluation: 1 {policy} episodes" in report
    scale = report.split("## Normalization")[1].split("##")[0]
    tasks = [task.name for task in RL_SEQUENCES[name].tasks[:2]]
    assert all(f"| {task} | " in scale for task in tasks), scale
    for result in experiment.glob("*/result.json"):
        last = json.loads(result.read_text().splitlines()[-1])
        assert len(last["random_row"]) == 2 and all(np.isfinite(last["random_row"]))
    # Single-task references that arrive later rescale the report; unknown names are refused.
    references = tmp_path / "references.yaml"
    references.write_text(f"{tasks[1]}: 1.0e+6\n")
    assert main(["report", str(experiment), "--reference-returns", str(references)]) == 0
    rewritten = (experiment / "report.md").read_text()
    assert rewritten.startswith(f"# {spec.name} ({spec.benchmark})") and "Wall time: " in rewritten
    scale = rewritten.split("## Normalization")[1].split("##")[0]
    assert f"| {tasks[1]} | " in scale and "| 1e+06 | reference |" in scale
    assert "## Raw returns" in rewritten
    references.write_text("NoSuchGame: 1.0\n")
    assert main(["report", str(experiment), "--reference-returns", str(references)]) == 2


def _ok_smoke_rows(tmp_path, spec) -> tuple[Path, list[dict[str, str]]]:
    """The smoke experiment's directory and summary rows: every method, each ok after 2 tasks."""
    (experiment,) = (tmp_path / "runs").iterdir()
    with open(experiment / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == set(spec.methods)
    assert all(r["status"] == "ok" and r["tasks_done"] == "2" for r in rows)
    return experiment, rows
