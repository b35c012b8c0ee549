"""Task rows reach blip-ray's row files, result.json and progress.csv only once Tune has registered
the task's checkpoint; the row files keep every finished task through a resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from pyarrow.fs import LocalFileSystem
from ray.tune.result import SHOULD_CHECKPOINT

from blip_ray.experiments.run.loggers import CsvRows, JsonRows, RowFiles
from blip_ray.records.rows import TaskRow
from blip_ray.records.trials import load_trials, task_rows


class _Trial:
    """What Tune's JSON and CSV loggers read of a trial."""

    def __init__(self, path: Path) -> None:
        self.local_path = str(path)
        self.trial_id = path.name
        self.config = {"method": {"name": "finetune", "seed": 0, "hp": {}}}
        self.checkpoint = None
        # Where Tune would restore the files from when the trial restarts from a checkpoint.
        remote = path.parent / "storage" / path.name
        self.storage = SimpleNamespace(
            trial_fs_path=str(remote), storage_filesystem=LocalFileSystem()
        )
        self.init_local_path()

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def _result(task: int, *, checkpoint: bool = True) -> dict:
    row = TaskRow(
        task=task,
        task_name=f"task-{task}",
        num_tasks=2,
        task_names=["task-0", "task-1"],
        metric="accuracy",
        row=[0.5, 0.5],
        matrix=[[0.5, 0.5]] * (task + 1),
        initial_row=None,
        capacity=None,
        state_bytes=0,
    )
    return {"trial_id": "t0", **row.to_result(), SHOULD_CHECKPOINT: checkpoint}


def test_a_task_row_waits_for_its_checkpoint_and_a_failed_save_drops_it(tmp_path, caplog):
    trial = _Trial(tmp_path / "t0")
    loggers = [JsonRows(), CsvRows()]

    def send(hook: str, *args) -> None:
        for logger in loggers:
            getattr(logger, hook)(0, [trial], trial, *args)

    send("on_trial_start")
    send("on_trial_result", _result(0))
    assert task_rows(tmp_path) == {}  # reported, checkpoint not registered yet
    trial.checkpoint = "checkpoint_000000"  # registered: the files are open, nothing to restore
    send("on_trial_save")
    assert task_rows(tmp_path) == {"t0": [0]}
    assert "Remote file not found" not in caplog.text

    send("on_trial_result", _result(1))
    send("on_trial_recover")  # the trial died before Tune registered task 1's checkpoint
    send("on_trial_start")  # its retry, from task 0's checkpoint, reports a failure and ends
    send("on_trial_result", {"trial_id": "t0", "failed": "NonFiniteLossError: nan"})
    send("on_trial_complete")
    assert task_rows(tmp_path) == {"t0": [0]}

    send("on_trial_start")  # run again: it finishes task 1, then dies with no retries left
    send("on_trial_result", _result(1))
    send("on_trial_save")
    send("on_trial_result", _result(2))
    send("on_trial_error")
    assert task_rows(tmp_path) == {"t0": [0, 1]}
    rows = (tmp_path / "t0" / "result.json").read_text().splitlines()
    assert len(rows) == 3 and '"failed"' in rows[1]
    csv_lines = (tmp_path / "t0" / "progress.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in csv_lines[1:]] == ["0", "", "1"]  # the failure: no task


def test_a_held_row_is_written_when_the_trial_ends_normally(tmp_path):
    trial = _Trial(tmp_path / "t0")
    logger = JsonRows()
    logger.on_trial_start(0, [trial], trial)
    logger.on_trial_result(0, [trial], trial, _result(0))
    logger.on_trial_complete(0, [trial], trial)
    assert task_rows(tmp_path) == {"t0": [0]}


def test_a_retry_keeps_the_rows_a_stale_copy_in_storage_lacks(tmp_path):
    trial = _Trial(tmp_path / "t0")
    logger = JsonRows()
    logger.on_trial_start(0, [trial], trial)
    logger.on_trial_result(0, [trial], trial, _result(0))
    trial.checkpoint = "checkpoint_000000"
    logger.on_trial_save(0, [trial], trial)
    remote = Path(trial.storage.trial_fs_path)
    remote.mkdir(parents=True)
    (remote / "result.json").write_text("")  # storage last updated before task 0's row
    logger.on_trial_recover(0, [trial], trial)
    logger.on_trial_start(0, [trial], trial)  # the retry, from task 0's checkpoint
    logger.on_trial_result(0, [trial], trial, _result(1))
    logger.on_trial_complete(0, [trial], trial)
    assert task_rows(tmp_path) == {"t0": [0, 1]}


def _send(loggers: list, hook: str, trial: _Trial, *args) -> None:
    for logger in loggers:
        getattr(logger, hook)(0, [trial], trial, *args)


def test_the_row_files_keep_the_rows_a_resume_drops_from_tunes_result_json(tmp_path):
    # Tune's loggers write to the driver's staging directory, which Tune copies to the
    # experiment directory only every so often; a new driver restores result.json from there.
    trial = _Trial(tmp_path / "t0")
    experiment = Path(trial.storage.trial_fs_path).parent
    first = [JsonRows(), RowFiles()]
    _send(first, "on_trial_start", trial)
    _send(first, "on_trial_result", trial, _result(0))
    assert task_rows(experiment) == {}  # held back until the checkpoint is registered
    trial.checkpoint = "checkpoint_000000"
    _send(first, "on_trial_save", trial)
    assert task_rows(experiment) == {"t0": [0]}

    # Stopped before Tune copied the staging files over; --resume runs a new driver whose
    # staging directory is empty, and restores the trial from task 0's checkpoint.
    (tmp_path / "t0" / "result.json").unlink()
    second = [JsonRows(), RowFiles()]
    _send(second, "on_trial_start", trial)
    _send(second, "on_trial_result", trial, _result(1))
    _send(second, "on_trial_save", trial)
    _send(second, "on_trial_complete", trial)
    tune_rows = (tmp_path / "t0" / "result.json").read_text().splitlines()
    assert len(tune_rows) == 1 and '"task": 1' in tune_rows[0]  # task 0's row is gone there
    assert task_rows(experiment) == {"t0": [0, 1]}
    (trial_result,) = load_trials(experiment)
    assert trial_result.status == "ok" and len(trial_result.matrix) == 2


def test_a_redone_task_rewrites_its_row_and_counts_it(tmp_path):
    trial = _Trial(tmp_path / "t0")
    experiment = Path(trial.storage.trial_fs_path).parent
    rows = RowFiles()
    for _ in range(2):  # the first attempt's experiment state never recorded the checkpoint
        _send([rows], "on_trial_start", trial)
        _send([rows], "on_trial_result", trial, _result(0))
        _send([rows], "on_trial_save", trial)
    _send([rows], "on_trial_result", trial, {"trial_id": "t0", "failed": "NonFiniteLossError: nan"})
    assert task_rows(experiment) == {"t0": [0, 0]}
    (failed,) = load_trials(experiment)
    assert failed.status == "failed" and failed.error == "NonFiniteLossError: nan"
    _send([rows], "on_trial_result", trial, _result(1))  # run again, it finishes: no failure left
    _send([rows], "on_trial_complete", trial)
    (ok,) = load_trials(experiment)
    assert ok.status == "ok" and ok.error is None
