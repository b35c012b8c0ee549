"""Experiment trackers through Ray's own Tune logger callbacks: TensorBoard, MLflow, W&B.

Each tracker logs a trial's hyperparameters (:func:`trial_params`) and, per finished task, the
row's numbers (:meth:`TaskRow.scalars`: the value on every task, the running metrics, capacity,
state bytes, timings) at step = tasks done; never the raw lists, which TensorBoard's logger
warns about and trackers cannot plot. Like ``result.json``, a task's row reaches a tracker only
once Tune has registered the task's checkpoint (:class:`RowsAfterCheckpoint`): no tracker shows a
task that a retry or ``--resume`` would train again.

Where the files go, by default under the experiment directory:
``<trial dir>/events.out.tfevents.*`` (TensorBoard), ``mlflow.db`` (MLflow's SQLite store;
``MLFLOW_TRACKING_URI`` points it elsewhere), ``<trial dir>/wandb/offline-run-*`` (W&B, offline
unless ``WANDB_API_KEY`` or ``WANDB_MODE`` says otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import LoggerCallback, TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from blip_ray.experiments.run.loggers import RowsAfterCheckpoint
from blip_ray.experiments.specs.experiment import ExperimentSpec
from blip_ray.records.rows import TaskRow

Param = str | int | float | bool


def trial_params(config: Mapping[str, Any]) -> dict[str, Param]:
    """A trial's hyperparameters as flat scalars: method, seed, the method's ``hp/...`` (searched
    ones as sampled), the benchmark and the run's settings (``train/...`` or ``rl/...``)."""
    method, run = config["method"], config["run"]
    params: dict[str, Any] = {
        "method": method["name"],
        "seed": method["seed"],
        **{key: run[key] for key in ("benchmark", "tasks", "network", "width", "fc_width")},
        "hp": method["hp"],
    }
    params |= {"rl": run["rl"]} if run.get("rl") else {"train": run["train"]}
    return {
        key: value
        for key, value in _flat(params).items()
        if isinstance(value, str | int | float | bool)
    }


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = value
    return out


class TensorBoardRows(RowsAfterCheckpoint, TBXLoggerCallback):
    """Tune's tensorboardX logger: the row's scalars in the trial directory, and its
    hyperparameters (TensorBoard's HParams tab) when the trial ends."""

    @classmethod
    def for_experiment(cls, spec: ExperimentSpec, experiment_dir: Path) -> TensorBoardRows:
        return cls()

    def log_trial_start(self, trial: Any) -> None:
        # A retried trial keeps its open writer: Tune's opens a new one, whose file name (the
        # second it opens and the host) is the old one's when the retry starts within a second,
        # and it would truncate the rows already written.
        if trial in self._trial_writer:
            return
        trial.init_local_path()
        # tensorboardX writes from a thread and flushes every flush_secs (Tune: 30); a row comes
        # once per task, so flushing within a second costs nothing and shows it at once.
        self._trial_writer[trial] = self._summary_writer_cls(trial.local_path, flush_secs=1)
        self._trial_result[trial] = {}

    def _write(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        row = TaskRow.from_result(result)
        if row is None:  # a failure report: nothing to plot
            return
        self.log_trial_start(trial)
        writer, scalars = self._trial_writer[trial], row.scalars()
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=row.tasks_done)
        self._trial_result[trial] = scalars  # the metrics shown next to the hyperparameters
        writer.flush()

    def _try_log_hparams(self, trial: Any, result: dict[str, Any]) -> None:
        from tensorboardX.summary import hparams

        for summary in hparams(hparam_dict=trial_params(trial.config), metric_dict=result):
            self._trial_writer[trial].file_writer.add_summary(summary)


class MlflowRows(RowsAfterCheckpoint, MLflowLoggerCallback):
    """Ray's MLflow logger: one run per trial (tagged with its trial id, found again on
    ``--resume``), its hyperparameters as params and the row's scalars as metrics."""

    def __init__(self, *, tracking_uri: str, experiment_name: str, artifact_location: str):
        super().__init__()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location

    @classmethod
    def for_experiment(cls, spec: ExperimentSpec, experiment_dir: Path) -> MlflowRows:
        return cls(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{experiment_dir.resolve() / 'mlflow.db'}",
            experiment_name=spec.name,
            artifact_location=str(experiment_dir.resolve() / "mlflow-artifacts"),
        )

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self.mlflow_util.setup_mlflow(
            tracking_uri=self.tracking_uri,
            experiment_name=self.experiment_name,
            artifact_location=self.artifact_location,
        )
        self.tags = {}
        self._trial_runs = {}

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            run_id = self._existing_run(trial)
            if run_id is None:
                tags = {"trial_id": trial.trial_id, "trial_name": str(trial)}
                run_id = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            self._trial_runs[trial] = run_id
        params = trial_params(trial.config)
        self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=params)

    def _existing_run(self, trial: Any) -> str | None:
        """The run of a trial that an earlier, interrupted segment of the experiment started."""
        from mlflow.tracking import MlflowClient

        runs = MlflowClient(tracking_uri=self.tracking_uri).search_runs(
            experiment_ids=[self.mlflow_util.experiment_id],
            filter_string=f"tags.trial_id = '{trial.trial_id}'",
        )
        return runs[0].info.run_id if runs else None

    def _write(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        row = TaskRow.from_result(result)
        if row is None:
            return
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        self.mlflow_util.log_metrics(
            run_id=self._trial_runs[trial], metrics_to_log=row.scalars(), step=row.tasks_done
        )


class WandbRows(RowsAfterCheckpoint, WandbLoggerCallback):
    """Ray's W&B logger: a run per trial (id = trial id, grouped by experiment directory) written
    by a small Ray actor into ``<trial dir>/wandb/``; offline (``wandb sync`` uploads it later)
    unless ``WANDB_API_KEY`` is set or ``WANDB_MODE`` chooses."""

    def __init__(self, *, project: str, group: str, mode: str):
        super().__init__()
        self.project, self.group = project, group
        self.kwargs = {"mode": mode}

    @classmethod
    def for_experiment(cls, spec: ExperimentSpec, experiment_dir: Path) -> WandbRows:
        mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline"
        )
        project = os.environ.get("WANDB_PROJECT") or spec.name
        return cls(project=project, group=experiment_dir.name, mode=mode)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.kwargs["mode"] not in ("offline", "disabled"):
            super().setup(*args, **kwargs)  # finds the API key, or fails saying how to set it

    def log_trial_start(self, trial: Any) -> None:
        # Into the trial's directory in storage, not the local staging directory Tune copies
        # from (trial.local_path): the logging actor writes on after Tune's last copy of it.
        Path(trial.path).mkdir(parents=True, exist_ok=True)
        self._start_logging_actor(
            trial,
            [*self._exclude_results, "config"],
            dir=trial.path,
            id=trial.trial_id,
            name=str(trial),
            resume="allow",
            allow_val_change=True,
            group=self.group,
            project=self.project,
            config=trial_params(trial.config),
            **self.kwargs,
        )

    def _write(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        row = TaskRow.from_result(result)
        if row is None:
            return
        # W&B's logging actor takes its step from the training iteration: the tasks done here
        super()._write(iteration, trial, {**row.scalars(), TRAINING_ITERATION: row.tasks_done})


TRACKERS: dict[str, type[TensorBoardRows | MlflowRows | WandbRows]] = {
    "tensorboard": TensorBoardRows,
    "mlflow": MlflowRows,
    "wandb": WandbRows,
}
"""The callbacks of the trackers a spec's ``loggers:`` names (keys as in ``spec.LOGGERS``)."""


def tracker_callbacks(spec: ExperimentSpec, experiment_dir: Path) -> list[LoggerCallback]:
    """The Tune callbacks of the spec's trackers, writing for ``experiment_dir``."""
    return [TRACKERS[name].for_experiment(spec, experiment_dir) for name in spec.loggers]
