"""Result files whose task rows never run ahead of the checkpoints Tune has registered: blip-ray's
own row files (:class:`RowFiles`, what reports read) and Tune's ``result.json`` and
``progress.csv``.

A trial reports each finished task together with a checkpoint. Tune writes the result to the
trial's ``result.json`` as soon as it arrives, but registers the checkpoint only after a second
round trip to the trial (its ``save``), and a resumed experiment restores trials from the
registered checkpoints. A SIGINT or SIGTERM landing between the two would leave a row for a task
whose checkpoint is lost, and ``--resume`` would train and record that task a second time.

These loggers hold back a result that carries a checkpoint until Tune has registered that
checkpoint (``on_trial_save``), so a row on disk always means its task is in the experiment state
that Tune saves on a graceful stop. A result held back when the trial fails (retried or not) is
dropped with the checkpoint it came with: a retry redoes that task and records it once. Results
without a checkpoint (a failure report) are written at once. The experiment trackers
(``trackers.py``: TensorBoard, MLflow, Weights & Biases) hold their rows back the same way.

Tune's loggers write into the driver's staging directory, which Tune copies to the experiment
directory every so often, and on restoring a trial copy the experiment directory's (possibly
older) ``result.json`` back over it: rows written since the last copy are then gone for good. The
row files are written straight into the experiment directory instead, one per task, and nothing
of Tune's writes or restores them (``blip_ray.records.rows``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback
from ray.tune.result import SHOULD_CHECKPOINT

from blip_ray.records.rows import write_result, write_trial


class RowsAfterCheckpoint:
    """Mixin over a Tune ``LoggerCallback``: write checkpointed results once registered.

    A result is written with :meth:`_write`, the logger's own ``log_trial_result`` unless a
    subclass writes it its own way.
    """

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[Any, tuple[int, dict[str, Any]]] = {}

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if result.get(SHOULD_CHECKPOINT):
            self._held[trial] = (iteration, dict(result))
            return
        self._write(iteration, trial, result)

    def _write(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, trial, result)  # type: ignore[misc]

    def log_trial_save(self, trial: Any) -> None:
        self._release(trial)
        super().log_trial_save(trial)  # type: ignore[misc]

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._held.pop(trial, None)  # died before its save: the retry redoes that task
        super().on_trial_recover(iteration, trials, trial, **info)  # type: ignore[misc]

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if failed:
            self._held.pop(trial, None)
        else:
            self._release(trial)
        super().log_trial_end(trial, failed)  # type: ignore[misc]

    def _release(self, trial: Any) -> None:
        held = self._held.pop(trial, None)
        if held is not None:
            self._write(held[0], trial, held[1])


class RowFiles(RowsAfterCheckpoint, LoggerCallback):
    """blip-ray's row files, in the trial's directory of the experiment (not Tune's staging
    copy of it): the trial's config when it starts, then each reported result."""

    def log_trial_start(self, trial: Any) -> None:
        write_trial(_trial_dir(trial), trial_id=str(trial.trial_id), config=trial.config)

    def _write(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        write_result(_trial_dir(trial), result)


def _trial_dir(trial: Any) -> Path:
    """The trial's directory in the experiment directory (local, or mounted on every node)."""
    return Path(trial.storage.trial_fs_path)


class JsonRows(RowsAfterCheckpoint, JsonLoggerCallback):
    """Tune's ``result.json`` logger (read back by ``results.py``), rows after checkpoints."""

    def log_trial_start(self, trial: Any) -> None:
        # A retried trial keeps its open file. Tune's logger would copy result.json back from
        # storage, which Tune updates only every few seconds: a copy taken before the last
        # registered task's row would overwrite that row. A new driver (--resume) has no open
        # file and restores it from storage, saved there on the graceful stop.
        if trial not in self._trial_files:
            super().log_trial_start(trial)


class CsvRows(RowsAfterCheckpoint, CSVLoggerCallback):
    """Tune's ``progress.csv`` logger, rows after checkpoints."""

    def log_trial_start(self, trial: Any) -> None:
        # Open the file when the trial starts, as the JSON logger does. Tune's CSV logger opens it
        # at the first row, which here comes after the first checkpoint: it would then look for
        # a progress.csv to restore from storage, and warn that there is none. A restarted trial
        # keeps its open file and column order.
        if trial not in self._trial_files:
            self._setup_trial(trial)
