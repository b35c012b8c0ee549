"""``--resume`` without ``--name`` finds the spec's latest experiment whatever it was named, and a
refused resume names each differing key with both values (hand-built directories, no Ray run)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from blip_ray.errors import UserError
from blip_ray.experiments.run.storage import _check_same_spec, experiment_dir_for
from blip_ray.experiments.specs.experiment import ExperimentSpec, parse_spec
from blip_ray.records.layout import SPEC_RECORD

SPEC = {"name": "t", "benchmark": "pdigits", "methods": {"finetune": {}}, "seeds": [0]}
RL = {"name": "r", "benchmark": "cartpole3", "methods": {"blip": {}}, "seeds": [0]}


def _experiment(root: Path, name: str, spec: ExperimentSpec | None, *, age: int = 0) -> Path:
    """A resumable experiment directory (Tune's tuner.pkl) started ``age`` seconds ago."""
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "tuner.pkl").write_bytes(b"")
    if spec is not None:
        (directory / SPEC_RECORD).write_text(json.dumps(spec.record()))
    when = 1_700_000_000 - age
    os.utime(directory, (when, when))
    return directory


def _resume(spec: ExperimentSpec, root: Path, name: str | None = None) -> Path:
    return experiment_dir_for(spec, storage=str(root), name=name, resume=True)


def test_plain_resume_finds_an_experiment_started_with_another_name(tmp_path):
    spec = parse_spec(SPEC)
    custom = _experiment(tmp_path, "custom", spec)
    _experiment(tmp_path, "unrelated", parse_spec({**SPEC, "name": "u", "seeds": [1]}))
    assert _resume(spec, tmp_path) == custom


def test_a_renamed_spec_computing_the_same_trials_is_found(tmp_path):
    started = _experiment(tmp_path, "first-name-20260101-000000", parse_spec(SPEC))
    assert _resume(parse_spec({**SPEC, "name": "second-name"}), tmp_path) == started


def test_the_latest_candidate_wins_and_references_or_legacy_dirs_are_told_apart(tmp_path):
    spec = parse_spec(SPEC)
    legacy = _experiment(tmp_path, "t-20250101-000000", None, age=50)  # from before SPEC_RECORD
    assert _resume(spec, tmp_path) == legacy
    _experiment(tmp_path, "old", spec, age=100)
    newest = _experiment(tmp_path, "new", spec, age=10)
    assert _resume(spec, tmp_path) == newest
    # a references experiment of an RL spec "t" is named t-references-...: not the spec's
    rl = parse_spec({**RL, "name": "t"})
    _experiment(tmp_path, "t-references-20260101-000000", rl.as_references(), age=0)
    assert _resume(spec, tmp_path) == newest


def test_a_refused_resume_lists_the_other_candidates(tmp_path):
    spec = parse_spec(SPEC)
    _experiment(tmp_path, "a", spec, age=30)
    _experiment(tmp_path, "b", spec, age=20)
    _experiment(tmp_path, "c", dataclasses.replace(spec, seeds=(0, 1)), age=10)
    with pytest.raises(UserError) as refused:
        _resume(spec, tmp_path)
    message = str(refused.value)
    assert message.startswith("--resume: c started with seeds=[0, 1], this spec has seeds=[0];")
    assert message.endswith("; or pick another experiment with --name (b, a)")
    assert "\n" not in message
    assert _resume(spec, tmp_path, name="a") == tmp_path / "a"


def test_nothing_to_resume_without_a_matching_experiment(tmp_path):
    _experiment(tmp_path, "other", parse_spec({**SPEC, "name": "o", "seeds": [3]}))
    with pytest.raises(UserError, match="nothing to resume: no experiment of 't'"):
        _resume(parse_spec(SPEC), tmp_path)


def _refusal(started: dict, now: dict, tmp_path: Path) -> str:
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / SPEC_RECORD).write_text(json.dumps(parse_spec(started).record()))
    with pytest.raises(UserError) as refused:
        _check_same_spec(parse_spec(now), tmp_path / "e")
    return str(refused.value)


def test_the_mismatch_names_the_nested_key_with_both_values(tmp_path):
    message = _refusal(
        {**RL, "rl": {"steps_per_task": 2048}}, {**RL, "rl": {"steps_per_task": 4096}}, tmp_path
    )
    assert message.startswith(
        "--resume: e started with rl.steps_per_task=2048, this spec has rl.steps_per_task=4096; "
        "resume with the spec and flags"
    )


def test_the_mismatch_lists_up_to_three_differences_and_counts_the_rest(tmp_path):
    started = {**RL, "rl": {"steps_per_task": 2048, "ppo": {"lr": 0.001, "gamma": 0.9}}}
    now = {
        **RL,
        "tasks": 2,
        "rl": {"steps_per_task": 4096, "eval_episodes": 3, "ppo": {"lr": 0.002, "gamma": 0.8}},
    }
    message = _refusal(started, now, tmp_path)
    assert message.startswith(
        "--resume: e started with tasks=3, this spec has tasks=2 (also rl.steps_per_task 2048 -> "
        "4096, rl.ppo.lr 0.001 -> 0.002 and 2 more); resume with"
    )


def test_a_key_one_side_lacks_reads_unset(tmp_path):
    message = _refusal(
        {**SPEC, "methods": {"finetune": {}}},
        {**SPEC, "methods": {"finetune": {}, "ewc": {"lamb": 10.0}}},
        tmp_path,
    )
    assert 'started with methods.ewc=(unset), this spec has methods.ewc={"lamb": 10.0}' in message
