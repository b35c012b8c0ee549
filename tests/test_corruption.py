"""Truncated or garbled experiment files: ``--resume`` refuses with one line naming the file
(exit 2, before Ray starts, nothing changed), and ``blip-ray report`` reports what it can and
names what it left out. Each corruption is planted in a copy of one finished experiment."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from blip_ray.cli import main
from blip_ray.experiments.run.launch import run_experiment
from blip_ray.experiments.specs.experiment import load_spec
from blip_ray.records.checkpoints import MANIFEST, checkpoint_problem
from blip_ray.records.layout import EXPERIMENT_STATE, PROVENANCE_FILE, ROWS_DIR, SPEC_RECORD
from blip_ray.records.rows import read_trial
from blip_ray.records.trials import load_trials, task_rows

SPEC = """\
name: corrupt
benchmark: pdigits
fc_width: 32
tasks: 2
train: {lr: 0.1, epochs: 2}
methods: {finetune: {}}
seeds: [0, 1]
"""


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    (root / "corrupt.yaml").write_text(SPEC)
    outcome = run_experiment(
        load_spec(root / "corrupt.yaml"), storage=str(root), name="base", verbose=0
    )
    assert outcome.failed == 0
    return outcome.experiment_dir


def _copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "e")
    (tmp_path / "corrupt.yaml").write_text(SPEC)
    return tmp_path / "e"


def _garble(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)] + b"\x00garbled")


def _trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p.parent for p in experiment.glob(f"*/{ROWS_DIR}"))


def _resume(tmp_path: Path, capsys) -> tuple[int, str]:
    code = main(
        ["run", str(tmp_path / "corrupt.yaml"), "--storage", str(tmp_path), "--name", "e"]
        + ["--resume", "--quiet"]
    )
    return code, capsys.readouterr().err


def _checkpoint_file(trial: Path) -> Path:
    (checkpoint,) = trial.glob("checkpoint_*")
    return max(
        (p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST),
        key=lambda p: p.stat().st_size,
    )


PLANTED = {
    "checkpoint": lambda e: _checkpoint_file(_trial_dirs(e)[0]),
    "row": lambda e: _trial_dirs(e)[1] / ROWS_DIR / "task-0001.json",
    "trial config": lambda e: _trial_dirs(e)[0] / ROWS_DIR / "trial.json",
    "experiment state": lambda e: max(e.glob(EXPERIMENT_STATE)),
    "provenance": lambda e: e / PROVENANCE_FILE,
    "spec record": lambda e: e / SPEC_RECORD,
}


@pytest.mark.ray
@pytest.mark.parametrize("what", PLANTED)
def test_resume_refuses_a_garbled_file_by_name_and_changes_nothing(
    what, finished, tmp_path, capsys
):
    experiment = _copy(finished, tmp_path)
    target = PLANTED[what](experiment)
    _garble(target)
    before = {p: p.read_bytes() for p in experiment.rglob("*") if p.is_file()}
    code, err = _resume(tmp_path, capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()  # one line, no traceback
    assert str(target) in line and "Traceback" not in err
    assert {p: p.read_bytes() for p in experiment.rglob("*") if p.is_file()} == before


@pytest.mark.ray
def test_a_whole_experiment_resumes_and_a_checkpoint_is_checked_against_its_manifest(
    finished, tmp_path, capsys
):
    experiment = _copy(finished, tmp_path)
    trial = _trial_dirs(experiment)[0]
    (checkpoint,) = trial.glob("checkpoint_*")
    assert (checkpoint / MANIFEST).is_file() and checkpoint_problem(checkpoint) is None
    target = _checkpoint_file(trial)
    target.write_bytes(target.read_bytes()[:-1] + bytes([target.read_bytes()[-1] ^ 1]))  # 1 bit
    assert str(target) in checkpoint_problem(checkpoint)
    shutil.rmtree(experiment)
    _copy(finished, tmp_path)
    code, err = _resume(tmp_path, capsys)  # a finished experiment: nothing left to run
    assert code == 0, err
    assert task_rows(experiment) == task_rows(finished)


@pytest.mark.ray
@pytest.mark.parametrize("what", ["row", "trial config", "provenance", "spec record"])
def test_report_reports_what_it_can_and_names_what_it_skipped(what, finished, tmp_path, capsys):
    experiment = _copy(finished, tmp_path)
    target = PLANTED[what](experiment)
    _garble(target)
    # exit 1 where a trial is left incomplete (its last row unreadable), as for a failed trial
    assert main(["report", str(experiment)]) == (1 if what == "row" else 0)
    out = capsys.readouterr().out
    assert f"skipped: {target}" in out and "Traceback" not in out
    assert f"- {target}" in (experiment / "report.md").read_text()
    kept = load_trials(experiment)
    expected = 1 if what == "trial config" else 2
    assert len(kept) == expected and "finetune" in out
    if what == "row":
        damaged = next(
            t for t in kept if t.trial_id == read_trial(_trial_dirs(experiment)[1]).trial_id
        )
        assert len(damaged.matrix) == 1 and damaged.status == "incomplete"
        other = next(t for t in kept if t is not damaged)
        assert len(other.matrix) == 2 and other.status == "ok"
