"""Provenance without Ray: what a run segment records, summed wall time over segments, the report's
Provenance section, and ``blip-ray report`` keeping it."""

from __future__ import annotations

import json
import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from test_ray_free import _write_trial

from blip_ray import __version__
from blip_ray.cli import main
from blip_ray.experiments.run import provenance
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.records import layout
from blip_ray.records.layout import PROVENANCE_FILE, RUN_RECORD
from blip_ray.records.trials import TrialResult
from blip_ray.report import write_report

REPO = Path(__file__).parent.parent
SUPERVISED = {"name": "t", "benchmark": "pdigits", "methods": {"blip": {}}, "seeds": [0]}
RL = {"name": "r", "benchmark": "cartpole3", "methods": {"blip": {"f_prior": 1e-12}}, "seeds": [0]}
CLUSTER = {"embedded": True, "nodes": 1, "cpus": 2.0, "gpus": 0.0}


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=where,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _segments(experiment: Path, walls: list[float]) -> dict:
    """Run segments of the RL spec with these wall times (the first new, the others resumed)."""
    experiment.mkdir(exist_ok=True)
    for index, wall in enumerate(walls):
        flags = {"smoke": index == 0, "name": "custom", "resume": index > 0}
        provenance.start_segment(
            experiment, parse_spec(RL), resumed=index > 0, flags=flags, cluster=CLUSTER
        )
        total = layout.finish_segment(experiment, wall_s=wall, interrupted=index == 0)
    assert total == pytest.approx(sum(walls))
    return json.loads((experiment / PROVENANCE_FILE).read_text())


def test_a_segment_records_the_resolved_spec_flags_code_packages_and_machine(tmp_path):
    record = _segments(tmp_path / "e", [12.5])
    (segment,) = record["segments"]
    assert segment["resumed"] is False and segment["interrupted"] is True
    assert segment["wall_s"] == 12.5 and segment["started"].endswith("+00:00")
    assert segment["flags"] == {"smoke": True, "name": "custom", "resume": False}
    assert segment["spec"] == parse_spec(RL).record()
    assert segment["spec"]["rl"]["ppo"]["clip_param"] == 0.2  # PPO defaults filled in
    # the method's own defaults under the sequence's, under the spec's values
    blip = segment["method_settings"]["blip"]
    assert blip["f_prior"] == 1e-12 and "max_bit" in blip
    assert segment["packages"]["python"].count(".") == 2
    for name in ("torch", "ray", "gymnasium"):
        assert segment["packages"][name] == metadata.version(name)
    assert segment["machine"]["cpus"] == os.cpu_count()
    assert segment["machine"]["hostname"] and isinstance(segment["machine"]["gpus"], list)
    assert segment["cluster"] == CLUSTER
    assert segment["code"]["version"] == __version__
    assert segment["code"]["commit"] == _git(REPO, "rev-parse", "HEAD")


def test_supervised_train_settings_are_recorded_with_their_defaults(tmp_path):
    provenance.start_segment(
        tmp_path, parse_spec(SUPERVISED), resumed=False, flags={}, cluster=CLUSTER
    )
    (segment,) = layout.read_provenance(tmp_path)["segments"]
    assert segment["wall_s"] is None  # until the segment ends
    assert segment["spec"]["train"]["lr_patience"] == 5 and segment["spec"]["train"]["epochs"]
    assert segment["spec"]["rl"] is None


def test_resumed_segments_are_appended_and_their_wall_times_summed(tmp_path):
    record = _segments(tmp_path / "e", [30.0, 20.0, 10.0])
    assert [s["resumed"] for s in record["segments"]] == [False, True, True]
    assert [s["interrupted"] for s in record["segments"]] == [True, False, False]
    assert layout.total_wall_s(record) == 60.0
    assert layout.read_provenance(tmp_path / "elsewhere") is None


def test_code_outside_a_checkout_or_untracked_in_one_has_no_commit(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    assert provenance.code_version(package)["commit"] is None  # not a git checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "other.txt").write_text("")
    _git(tmp_path, "add", "other.txt")
    _git(tmp_path, "commit", "-qm", "other")
    # an installed copy inside some other project's checkout is not that project's code
    assert provenance.code_version(package)["commit"] is None
    _git(tmp_path, "add", "pkg/__init__.py")
    _git(tmp_path, "commit", "-qm", "pkg")
    clean = provenance.code_version(package)
    assert clean == {
        "version": __version__,
        "commit": _git(tmp_path, "rev-parse", "HEAD"),
        "dirty": False,
    }
    (package / "__init__.py").write_text("x = 1\n")
    assert provenance.code_version(package)["dirty"] is True
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no git at all
    assert provenance.code_version(package) == {
        "version": __version__,
        "commit": None,
        "dirty": None,
    }


def _ok_trial(seed: int) -> TrialResult:
    return TrialResult(
        trial_id=f"f{seed}",
        method="finetune",
        seed=seed,
        hyperparameters={},
        status="ok",
        task_names=["a", "b"],
        matrix=[[0.9, 0.1], [0.5, 0.9]],
        initial_row=[0.1, 0.1],
        capacity=[None, None],
        state_bytes=[0, 0],
    )


def test_the_report_sums_the_segments_and_shows_the_provenance(tmp_path):
    record = _segments(tmp_path / "e", [30.0, 20.0, 10.0])
    trials = [_ok_trial(0), _ok_trial(1)]
    paths = write_report(trials, tmp_path / "out", title="t", wall_s=60.0, provenance=record)
    text = paths.report_md.read_text()
    assert "Wall time: 1m 00s (60.0 s over 3 run segments), 2.00 trials per minute." in text
    section = text[text.index("## Provenance") :]
    latest = record["segments"][-1]
    commit = latest["code"]["commit"][:12]
    assert f"- Code: blip-ray {__version__}, commit {commit}" in section
    assert f"torch {metadata.version('torch')}" in section
    assert f"{os.cpu_count()} CPUs" in section
    assert "- Ray: embedded local instance, 1 node, 2 CPUs, 0 GPUs." in section
    assert "- Flags: `--name custom --resume`." in section  # the latest segment's
    assert "- Segments: 3 (started " in section and "1 interrupted" in section
    assert PROVENANCE_FILE in section


def test_a_report_without_provenance_has_no_section_and_one_segment(tmp_path):
    text = write_report([_ok_trial(0)], tmp_path, title="t", wall_s=60.0).report_md.read_text()
    assert "## Provenance" not in text
    assert "Wall time: 1m 00s (60.0 s), 1.00 trials per minute." in text


def test_blip_ray_report_keeps_the_provenance_and_the_summed_wall_time(tmp_path, capsys):
    experiment = tmp_path / "e"
    for seed in (0, 1):
        _write_trial(experiment / f"trial_{seed}", seed=seed)
    _segments(experiment, [100.0, 20.0])
    header = {"title": "t (pdigits)", "wall_s": 120.0, "planned": 2}
    (experiment / RUN_RECORD).write_text(json.dumps(header))
    assert main(["report", str(experiment)]) == 0
    text = (experiment / "report.md").read_text()
    assert "Wall time: 2m 00s (120.0 s over 2 run segments), 1.00 trials per minute." in text
    assert "## Provenance" in text and "- Segments: 2 (started " in text
