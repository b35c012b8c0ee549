"""Single-task references: one task of a sequence as a sequence of its own, ``blip-ray run
--references`` training each task alone per seed, the reference file it writes, and
``blip-ray report --reference-returns`` normalizing a continual run with it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from blip_ray.cli import main
from blip_ray.experiments.specs.checks import SpecError
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.experiments.specs.tracks import load_reference_returns
from blip_ray.records.trials import TrialResult, load_trials
from blip_ray.report.references import REFERENCE_FILE, references, references_yaml
from blip_ray.rl.sequences import find_rl_sequence, get_rl_sequence

TINY_RL = {
    "steps_per_task": 64,
    "eval_episodes": 2,
    "eval_interval": 1,
    "eval_max_steps": 40,
    "ppo": {"num_envs": 2, "rollout_length": 32, "num_minibatches": 2, "num_epochs": 1},
}


def test_one_task_of_a_sequence_is_a_sequence_of_its_own() -> None:
    parent = get_rl_sequence("minatar4")
    alone = get_rl_sequence("minatar4:Asterix")
    assert alone.name == "minatar4:Asterix" and [t.name for t in alone.tasks] == ["Asterix"]
    assert (alone.trunk, alone.ppo, alone.steps_per_task) == (
        parent.trunk,
        parent.ppo,
        parent.steps_per_task,
    )
    assert alone.max_actions == parent.max_actions == 6  # the same padded action space and heads
    assert alone.method_defaults == parent.method_defaults
    own, theirs = alone.make_env(0, training=False), parent.make_env(2, training=False)
    first, _ = own.reset(seed=3)
    expected, _ = theirs.reset(seed=3)
    np.testing.assert_array_equal(first, expected)  # Asterix's env, not SpaceInvaders'
    for action in (5, 1, 0, 3):
        np.testing.assert_array_equal(own.step(action)[0], theirs.step(action)[0])
    assert find_rl_sequence("minatar4:Pong") is None and find_rl_sequence("pdigits") is None
    with pytest.raises(KeyError, match=r"<sequence>:<task>"):
        get_rl_sequence("minatar4:Pong")


def test_a_spec_may_name_one_task_and_references_need_an_rl_benchmark() -> None:
    spec = parse_spec(
        {"name": "one", "benchmark": "cartpole3:cartpole-1", "methods": {"si": {}}, "seeds": [0]}
    )
    assert spec.tasks == 1 and spec.track == "rl"
    with pytest.raises(SpecError, match=r"^benchmark: unknown 'cartpole3:nope'; .*minatar4"):
        parse_spec({"name": "n", "benchmark": "cartpole3:nope", "methods": {}, "seeds": [0]})
    supervised = parse_spec(
        {"name": "s", "benchmark": "pdigits", "methods": {"finetune": {}}, "seeds": [0]}
    )
    with pytest.raises(SpecError, match=r"^--references: pdigits is supervised"):
        supervised.as_references()
    rl = parse_spec(
        {
            "name": "c",
            "benchmark": "cartpole3",
            "methods": {"blip": {}, "si": {"c": 0.5}},
            "seeds": [0, 1],
            "tasks": 2,
            "rl": {**TINY_RL, "reference_returns": {"cartpole-0": 9.0}},
        }
    )
    refs = rl.as_references()
    assert (refs.name, refs.methods, refs.seeds, refs.references) == (
        "c-references",
        {"finetune": {}},
        (0, 1),
        True,
    )
    assert refs.rl.reference_returns == {} and refs.rl.steps_per_task == 64
    assert refs.single_task_benchmarks() == ["cartpole3:cartpole-0", "cartpole3:cartpole-1"]
    with pytest.raises(SpecError, match=r"^spec: unknown key 'references'"):
        parse_spec({"name": "c", "benchmark": "cartpole3", "methods": {}, "seeds": [0],
                    "references": True})  # fmt: skip


def test_a_spec_reads_its_reference_returns_from_the_file_a_references_run_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("refs.yaml").write_text("# written by --references\ncartpole-1: 150.5  # seeds\n")
    raw = {"name": "r", "benchmark": "cartpole3", "methods": {"finetune": {}}, "seeds": [0]}
    spec = parse_spec({**raw, "rl": {**TINY_RL, "reference_returns": "refs.yaml"}})
    assert spec.rl.reference_returns == {"cartpole-1": 150.5}
    # a run of the first tasks (tasks:, --smoke) keeps only their references
    assert spec.smoke().rl.reference_returns == {"cartpole-1": 150.5}
    first = parse_spec({**raw, "tasks": 1, "rl": {**TINY_RL, "reference_returns": "refs.yaml"}})
    assert first.rl.reference_returns == {}
    with pytest.raises(
        SpecError, match=r"^rl.reference_returns: no file 'gone.yaml' .*--references"
    ):
        parse_spec({**raw, "rl": {**TINY_RL, "reference_returns": "gone.yaml"}})
    Path("bad.yaml").write_text("Pong: 3.0\n")
    with pytest.raises(SpecError, match=r"^rl.reference_returns: unknown task 'Pong'"):
        parse_spec({**raw, "rl": {**TINY_RL, "reference_returns": "bad.yaml"}})


def _trial(task: str, seed: int, final: float, curve: list[tuple[int, float]]) -> TrialResult:
    return TrialResult(
        trial_id=f"{task}-{seed}",
        method="finetune",
        seed=seed,
        hyperparameters={},
        status="ok",
        task_names=[task],
        matrix=[[final]],
        random_row=[1.0 + seed],
        curve=[{"env_steps": n, "returns": [r]} for n, r in curve],
        metric="return",
    )


def test_references_are_the_mean_over_seeds_with_the_curve_read_at_fractions() -> None:
    curve = [(100, 1.0), (200, 2.0), (300, 5.0), (400, 7.0)]
    trials = [
        _trial("Breakout", 1, 12.0, [(n, r + 1) for n, r in curve]),
        _trial("Breakout", 0, 8.0, curve),
        _trial("Freeway", 0, 20.0, []),
        TrialResult("x", "finetune", 2, {}, status="failed", task_names=["Freeway"]),
    ]
    breakout, freeway = references(trials)
    assert (breakout.task, breakout.seeds, breakout.returns) == ("Breakout", [0, 1], [8.0, 12.0])
    assert breakout.mean == 10.0 and breakout.random == 1.5
    # 25% of 400 steps: the evaluation at 100; 50%: 200; 75%: 300 -> means over the two seeds
    assert breakout.along == [1.5, 2.5, 5.5]
    assert freeway.returns == [20.0] and all(math.isnan(v) for v in freeway.along)
    text = references_yaml([breakout, freeway], title="t")
    assert yaml.safe_load(text) == {"Breakout": 10.0, "Freeway": 20.0}


@pytest.mark.ray
def test_references_run_writes_the_file_the_report_normalizes_with(
    ray_session: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {
        "name": "refs",
        "benchmark": "cartpole3",
        "tasks": 2,
        "methods": {"finetune": {}},
        "seeds": [0, 1],
        "resources": {"cpu": 1},
        "rl": TINY_RL,
    }
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump(spec))
    storage = str(tmp_path / "runs")
    assert main(["run", str(path), "--references", "--storage", storage, "--quiet"]) == 0
    (ref_dir,) = Path(storage).glob("refs-references-*")
    finals: dict[str, list[float]] = {}
    for result in ref_dir.glob("*/result.json"):
        last = json.loads(result.read_text().splitlines()[-1])
        finals.setdefault(last["task_names"][0], []).append(last["matrix"][-1][0])
    assert sorted(finals) == ["cartpole-0", "cartpole-1"] and all(
        len(v) == 2 for v in finals.values()
    )
    file = ref_dir / REFERENCE_FILE
    reference = load_reference_returns(file)
    assert reference == pytest.approx({task: float(np.mean(v)) for task, v in finals.items()})
    assert "single-task references" in (ref_dir / "report.md").read_text()

    spec["seeds"] = [0]
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--storage", storage, "--quiet"]) == 0
    (run_dir,) = (p for p in Path(storage).glob("refs-*") if "references" not in p.name)
    capsys.readouterr()
    assert main(["report", str(run_dir), "--reference-returns", str(file)]) == 0
    report = (run_dir / "report.md").read_text()
    (trial,) = load_trials(run_dir, reference=reference)
    for scale in trial.normalization:
        assert scale["source"] == "reference"
        assert scale["high"] == max(reference[scale["task"]], scale["low"])
        assert (
            f"| {scale['task']} | {scale['low']:.4g} | random policy | {scale['high']:.4g} "
            "| reference |" in report
        )
    assert main(["report", str(ref_dir), "--reference-returns", str(file)]) == 2
    assert "is a references experiment" in capsys.readouterr().err
