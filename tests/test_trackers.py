"""Experiment trackers: TensorBoard, MLflow and W&B get every task's row once, at step = tasks
done, only after its checkpoint is registered, and the trial's hyperparameters; the spec refuses
unknown trackers and missing packages before Ray starts."""

from __future__ import annotations

import importlib.util
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.result import SHOULD_CHECKPOINT
from tensorboardX.proto.event_pb2 import Event

from blip_ray.cli import main
from blip_ray.experiments.run.launch import run_experiment
from blip_ray.experiments.run.trackers import (
    TRACKERS,
    MlflowRows,
    TensorBoardRows,
    WandbRows,
    trial_params,
)
from blip_ray.experiments.specs.checks import SpecError
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.metrics import acc
from blip_ray.records.rows import TaskRow
from blip_ray.records.trials import load_trials, task_rows

SPEC = {
    "name": "tracked",
    "benchmark": "pdigits",
    "fc_width": 32,
    "tasks": 2,
    "train": {"lr": 0.1, "epochs": 1},
    "methods": {"blip": {"f_prior": 1e-15, "fisher_batches": 2}},
    "seeds": [0, 1],
    "loggers": ["tensorboard", "mlflow", "wandb"],
    # every trial crashes once right after reporting task 0: no tracker may show that row twice
    "inject_failure": {"after_task": 0},
}


def _tensorboard_scalars(trial_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> (step, value) of every scalar in the trial's event files (TFRecord framing:
    length, its CRC, the Event, its CRC)."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(trial_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 16 + length
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
                else:
                    scalars.setdefault(value.tag, [])
    return scalars


def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline W&B run file (a LevelDB-style log: 32 KiB blocks, each record
    a 7-byte header of CRC, length and kind, split across blocks as FIRST/MIDDLE/LAST)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer or padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            yield Record.FromString(pending)
            pending = b""


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as env:
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
            env.delenv(name, raising=False)
        outcome = run_experiment(parse_spec(SPEC), storage=str(storage), verbose=0)
    assert outcome.trials == 2 and outcome.failed == 0
    trial_dirs = {
        json.loads((p.parent / "result.json").read_text().splitlines()[-1])["trial_id"]: p.parent
        for p in outcome.experiment_dir.glob("*/params.json")
    }
    trials = {t.trial_id: t for t in load_trials(outcome.experiment_dir)}
    assert sorted(trial_dirs) == sorted(trials)
    return outcome.experiment_dir, trial_dirs, trials


def _expected(trial: Any) -> dict[str, list[tuple[int, float]]]:
    """Per tracked name, (step, value) for every task row of a finished trial."""
    steps = range(1, len(trial.matrix) + 1)
    expected = {"running/acc": [(k, acc(trial.matrix[:k])) for k in steps]}
    expected["capacity"] = [(k, trial.capacity[k - 1]) for k in steps]
    expected["state_bytes"] = [(k, trial.state_bytes[k - 1]) for k in steps]
    for u, name in enumerate(trial.task_names):
        expected[f"accuracy/{u}_{name}"] = [(k, trial.matrix[k - 1][u]) for k in steps]
    return expected


@pytest.mark.ray
def test_tensorboard_has_each_tasks_scalars_once_and_the_hyperparameters(tracked):
    experiment_dir, trial_dirs, trials = tracked
    assert all(rows == [0, 1] for rows in task_rows(experiment_dir).values())
    for trial_id, trial in trials.items():
        scalars = _tensorboard_scalars(trial_dirs[trial_id])
        for name, points in _expected(trial).items():
            assert [s for s, _ in scalars[name]] == [1, 2], name  # once each: no redone row
            assert [v for _, v in scalars[name]] == pytest.approx([v for _, v in points], 1e-6)
        assert not any(isinstance(v, list) for v in scalars)
        assert "_hparams_/session_start_info" in scalars


@pytest.mark.ray
def test_mlflow_has_one_run_per_trial_with_params_and_task_steps(tracked):
    from mlflow.tracking import MlflowClient

    experiment_dir, _, trials = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{experiment_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(trials)
    for trial_id, trial in trials.items():
        run = runs[trial_id]
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["method"] == "blip" and params["seed"] == str(trial.seed)
        assert params["hp/f_prior"] == "1e-15" and params["benchmark"] == "pdigits"
        assert params["train/lr"] == "0.1"
        for name, points in _expected(trial).items():
            history = sorted(
                (m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)
            )
            assert [s for s, _ in history] == [1, 2], name
            assert [v for _, v in history] == pytest.approx([v for _, v in points])


@pytest.mark.ray
def test_wandb_writes_an_offline_run_per_trial_with_config_and_task_steps(tracked):
    experiment_dir, trial_dirs, trials = tracked
    for trial_id, trial in trials.items():
        (run_file,) = trial_dirs[trial_id].glob("wandb/offline-run-*/run-*.wandb")
        history: dict[str, list[tuple[int, float]]] = {}
        config: dict[str, Any] = {}
        kinds = []
        for record in _wandb_records(run_file):
            kind = record.WhichOneof("record_type")
            kinds.append(kind)
            if kind == "run":
                assert record.run.run_id == trial_id
                assert record.run.run_group == experiment_dir.name
                config |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
            elif kind == "config":
                config |= {i.key: json.loads(i.value_json) for i in record.config.update}
            elif kind == "history":
                for item in record.history.item:
                    point = (record.history.step.num, json.loads(item.value_json))
                    history.setdefault(item.key or "/".join(item.nested_key), []).append(point)
        assert kinds[-1] == "exit"  # the run finished writing before the experiment returned
        assert config["method"] == "blip" and config["seed"] == trial.seed
        for name, points in _expected(trial).items():
            assert [s for s, _ in history[name]] == [1, 2], name
            assert [v for _, v in history[name]] == pytest.approx([v for _, v in points])


class _Trial:
    """What the TensorBoard and MLflow trackers read of a trial."""

    def __init__(self, path: Path) -> None:
        self.local_path, self.trial_id = str(path), "t0"
        self.config = {
            "method": {"name": "finetune", "seed": 3, "hp": {}},
            "run": {
                "benchmark": "pdigits",
                "tasks": 2,
                "network": "mlp",
                "width": 1.0,
                "fc_width": None,
                "train": {"lr": 0.1},
                "rl": None,
            },
        }
        self.evaluated_params = {"method": self.config["method"]}
        self.checkpoint = None
        self.storage = SimpleNamespace(trial_fs_path=str(path))

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return "trial_t0"


def _result(task: int) -> dict[str, Any]:
    row = TaskRow(
        task=task,
        task_name=f"task-{task}",
        num_tasks=2,
        task_names=["task-0", "task-1"],
        metric="accuracy",
        row=[0.5 + task / 10, 0.25],
        matrix=[[0.5, 0.25], [0.6, 0.25]][: task + 1],
        initial_row=None,
        capacity=None,
        state_bytes=0,
    )
    return {"trial_id": "t0", **row.to_result(), SHOULD_CHECKPOINT: True}


def _steps(name: str, trial: _Trial, tmp_path: Path) -> list[int]:
    """Steps of ``accuracy/0_task-0`` the tracker has written so far."""
    if name == "tensorboard":
        time.sleep(1.5)  # tensorboardX's writer thread flushes within a second (flush_secs=1)
        scalars = _tensorboard_scalars(Path(trial.local_path))
        return [step for step, _ in scalars.get("accuracy/0_task-0", [])]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, "accuracy/0_task-0"))


def _tracker(name: str, tmp_path: Path) -> Any:
    if name == "tensorboard":
        return TensorBoardRows()
    tracker = MlflowRows(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment_name="e",
        artifact_location=str(tmp_path / "artifacts"),
    )
    tracker.setup()
    return tracker


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_a_row_waits_for_its_checkpoint_and_a_lost_one_is_dropped(name, tmp_path):
    trial, tracker = _Trial(tmp_path / "t0"), _tracker(name, tmp_path)
    tracker.on_trial_start(0, [trial], trial)
    tracker.on_trial_result(0, [trial], trial, _result(0))
    assert _steps(name, trial, tmp_path) == []  # reported, checkpoint not registered yet
    tracker.on_trial_save(0, [trial], trial)
    assert _steps(name, trial, tmp_path) == [1]
    tracker.on_trial_result(0, [trial], trial, _result(1))
    tracker.on_trial_recover(0, [trial], trial)  # died before task 1's checkpoint registered
    tracker.on_trial_start(0, [trial], trial)
    tracker.on_trial_result(0, [trial], trial, _result(1))  # the retry redoes task 1
    assert _steps(name, trial, tmp_path) == [1]
    tracker.on_trial_complete(0, [trial], trial)  # ended normally: its last row is written
    assert _steps(name, trial, tmp_path) == [1, 2]


def test_a_resumed_experiment_logs_into_the_trials_mlflow_run(tmp_path):
    trial, first = _Trial(tmp_path / "t0"), _tracker("mlflow", tmp_path)
    first.on_trial_start(0, [trial], trial)
    first.on_trial_result(0, [trial], trial, _result(0))
    first.on_trial_save(0, [trial], trial)
    resumed = _tracker("mlflow", tmp_path)  # a new driver: --resume
    resumed.on_trial_start(0, [trial], trial)
    assert resumed._trial_runs[trial] == first._trial_runs[trial]
    resumed.on_trial_result(0, [trial], trial, _result(1))
    resumed.on_trial_complete(0, [trial], trial)
    assert _steps("mlflow", trial, tmp_path) == [1, 2]


def test_row_scalars_leave_out_what_is_undefined() -> None:
    scalars = TaskRow.from_result(_result(0)).scalars()
    assert scalars["accuracy/0_task-0"] == 0.5 and scalars["accuracy/1_task-1"] == 0.25
    assert scalars["running/acc"] == 0.5 and scalars["running/bwt"] == 0.0
    # one finished task: nothing to forget (GEM's BWT is NaN), no capacity, no FWT baseline
    assert not {"running/bwt_gem", "running/forgetting", "running/fwt", "capacity"} & set(scalars)
    later = TaskRow.from_result(_result(1)).scalars()
    assert later["running/acc"] == pytest.approx((0.6 + 0.25) / 2)
    assert later["running/bwt_gem"] == pytest.approx(0.1)


def test_wandb_is_offline_without_an_api_key(monkeypatch, tmp_path) -> None:
    spec = parse_spec({**SPEC, "loggers": ["wandb"]})
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    offline = WandbRows.for_experiment(spec, tmp_path / "tracked-1")
    assert offline.kwargs == {"mode": "offline"} and offline.project == "tracked"
    assert offline.group == "tracked-1"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert WandbRows.for_experiment(spec, tmp_path).kwargs == {"mode": "online"}
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbRows.for_experiment(spec, tmp_path).kwargs == {"mode": "disabled"}


def test_trial_params_are_flat_scalars() -> None:
    config = _Trial(Path("unused")).config
    assert trial_params(config) == {
        "method": "finetune",
        "seed": 3,
        "benchmark": "pdigits",
        "tasks": 2,
        "network": "mlp",
        "width": 1.0,
        "train/lr": 0.1,
    }


def test_loggers_default_to_tensorboard_and_add_the_flags() -> None:
    base = {k: v for k, v in SPEC.items() if k not in ("loggers", "inject_failure")}
    assert parse_spec(base).loggers == ("tensorboard",)
    assert parse_spec({**base, "loggers": []}).loggers == ()
    assert parse_spec({**base, "loggers": []}, loggers=["mlflow"]).loggers == ("mlflow",)
    both = parse_spec(base, loggers=["wandb", "tensorboard"])
    assert both.loggers == ("tensorboard", "wandb")
    assert set(TRACKERS) == {"tensorboard", "mlflow", "wandb"}


def test_an_unknown_logger_is_a_one_line_spec_error() -> None:
    with pytest.raises(
        SpecError, match=r"^loggers: unknown 'neptune'; known: tensorboard, mlflow, wandb$"
    ):
        parse_spec({**SPEC, "loggers": ["neptune"]})
    with pytest.raises(SpecError, match=r"^loggers: expected a list"):
        parse_spec({**SPEC, "loggers": "mlflow"})


def test_a_missing_tracker_package_exits_2_with_the_install_command(
    monkeypatch, tmp_path, capsys
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "mlflow" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nbenchmark: pdigits\nmethods: {finetune: {}}\nseeds: [0]\n")
    assert main(["run", str(spec), "--logger", "mlflow", "--storage", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "loggers: mlflow needs the optional package 'mlflow'" in error
    assert "pip install 'blip-ray[trackers]'" in error
    assert not list(tmp_path.glob("t-*"))  # refused before any experiment directory
