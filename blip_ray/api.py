"""blip-ray from Python (a notebook, a script): no Ray needed for any of it.

- :func:`run_continual`: one supervised continual run (benchmark, method, settings, seed) in this
  process, the same training a trial of ``blip-ray run`` does; returns the accuracy matrix, the
  metrics, the trained network and the method's state.
- :func:`open_experiment`: an experiment directory's results as pandas DataFrames (the report's
  summary, accuracy matrices, results table and RL learning curves) and its trials.
- :func:`load_model`: a supervised trial's network as its last finished task left it, from the
  experiment's checkpoints.

RL runs need Ray (RLlib samples and learns in Ray actors): ``blip-ray run`` runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from blip_ray import metrics
from blip_ray.data import SEQUENCES
from blip_ray.experiments.specs.experiment import Resources
from blip_ray.methods import ContinualMethod
from blip_ray.models.base import MultiHeadNet
from blip_ray.records.layout import (
    CHECKPOINT_GLOB,
    FINAL_STAGE,
    SELECTION_FILE,
    read_json,
    trial_dirs,
)
from blip_ray.records.rows import read_config
from blip_ray.records.trials import TrialResult, load_trials
from blip_ray.report.protocol import is_protocol_dir
from blip_ray.report.results_table import table_frame, table_rows
from blip_ray.report.tables import matrices_frame, summary_frame
from blip_ray.supervised import LoopState, TrainSettings, run_sequence
from blip_ray.supervised.build import build_continual, build_trial

__all__ = ["ContinualResult", "Experiment", "load_model", "open_experiment", "run_continual"]


@dataclass
class ContinualResult:
    """One continual run: ``matrix[t][u]`` is the test accuracy on task u after training task t."""

    task_names: list[str]
    matrix: np.ndarray
    initial_row: np.ndarray
    """Accuracy of the untrained network on each task (forward transfer's reference)."""
    metrics: dict[str, float]
    """ACC, BWT (both forms), forgetting, FWT (:func:`blip_ray.metrics.summary`)."""
    model: MultiHeadNet
    method: ContinualMethod
    capacity: list[float | None] = field(default_factory=list)
    """The method's capacity after each task (BLIP's bits frozen; None for methods without)."""


def run_continual(
    benchmark: str,
    method: str = "blip",
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int = 0,
    train: TrainSettings | Mapping[str, Any] | None = None,
    network: str | None = None,
    tasks: int | None = None,
    width: float = 1.0,
    fc_width: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    threads: int | None = None,
) -> ContinualResult:
    """Train ``method`` over the supervised ``benchmark``'s tasks (the first ``tasks``) and
    evaluate every task after each; ``network`` defaults to the benchmark's paper network and
    ``train`` to :class:`~blip_ray.supervised.TrainSettings`' defaults (a mapping overrides some).

    ``threads`` is torch's thread count for the run (the process's own is restored after); by
    default that of a trial under a spec's default ``resources``, so the run equals such a trial
    of ``blip-ray run`` to the bit on any machine (float sums depend on the thread count).

    >>> result = run_continual("digits5", "blip", train={"epochs": 5}, tasks=2)
    >>> result.metrics["acc"]  # doctest: +SKIP
    """
    if benchmark not in SEQUENCES:
        raise KeyError(
            f"unknown supervised benchmark {benchmark!r}; known: {', '.join(sorted(SEQUENCES))}"
        )
    settings = train if isinstance(train, TrainSettings) else TrainSettings(**(train or {}))
    sequence, model, continual = build_continual(
        benchmark,
        method,
        hyperparameters=dict(hyperparameters or {}),
        seed=seed,
        network=network or SEQUENCES[benchmark].network,
        tasks=tasks,
        width=width,
        fc_width=fc_width,
        data_dir=data_dir,
        download=download,
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads is not None else Resources().threads)
    try:
        records = list(run_sequence(sequence, model, continual, settings=settings, seed=seed))
    finally:
        torch.set_num_threads(before)
    last = records[-1]
    matrix = np.array(last.matrix, dtype=float)
    initial = np.array(last.initial_row, dtype=float)
    return ContinualResult(
        task_names=list(last.task_names),
        matrix=matrix,
        initial_row=initial,
        metrics=metrics.summary(matrix, initial),
        model=model,
        method=continual,
        capacity=[record.capacity for record in records],
    )


@dataclass
class Experiment:
    """An experiment directory's results, read without Ray."""

    directory: Path
    trials: list[TrialResult]
    selection: dict[str, Any] | None = None
    """A run with ``search:``: its selection record (every configuration tried, its validation
    scores, the chosen one); the trials are its final stage's."""

    @property
    def summary(self) -> pd.DataFrame:
        """summary.csv's frame: one row per trial with its metrics and hyperparameters."""
        return summary_frame(self.trials)

    @property
    def matrices(self) -> pd.DataFrame:
        """matrices.csv's frame: every matrix entry in long form."""
        return matrices_frame(self.trials)

    @property
    def table(self) -> pd.DataFrame:
        """table.csv's frame: mean, 95% half-width and n per method, setting and score."""
        return table_frame(table_rows(self.trials))

    @property
    def curves(self) -> pd.DataFrame:
        """RL learning curves in long form: trial, method, seed, env steps, task, raw return."""
        rows = [
            {
                "trial_id": trial.trial_id,
                "method": trial.method,
                "seed": trial.seed,
                "env_steps": point["env_steps"],
                "task": trial.task_names[u] if u < len(trial.task_names) else f"task {u}",
                "return": value,
            }
            for trial in self.trials
            for point in trial.curve
            for u, value in enumerate(point["returns"])
        ]
        columns = ["trial_id", "method", "seed", "env_steps", "task", "return"]
        return pd.DataFrame(rows, columns=columns)


def open_experiment(
    directory: str | Path, *, reference_returns: Mapping[str, float] | None = None
) -> Experiment:
    """The trials of ``directory`` (RL returns normalized as the report does, with
    ``reference_returns`` if given); of a run with ``search:``, its final stage's, with the
    selection (``open_experiment(DIR / "search")`` opens the search trials)."""
    path, selection = Path(directory), None
    if is_protocol_dir(path):
        selection = read_json(path / SELECTION_FILE)
        path = path / FINAL_STAGE
    if not trial_dirs(path):
        raise FileNotFoundError(f"{path} holds no trials; pass an experiment directory")
    reference = dict(reference_returns) if reference_returns is not None else None
    return Experiment(path, load_trials(path, reference=reference), selection)


def load_model(
    directory: str | Path,
    *,
    method: str,
    seed: int = 0,
    hyperparameters: Mapping[str, Any] | None = None,
) -> MultiHeadNet:
    """The network of the supervised trial of ``method`` (with ``hyperparameters``, where the
    experiment ran several settings) and ``seed``, with the weights its last finished task left
    (the trial's latest checkpoint), in eval mode; ``model.set_task`` picks a task's head where
    the method keeps per-task state."""
    directory = Path(directory)
    if is_protocol_dir(directory):  # a run with search: its final stage's trials
        directory = directory / FINAL_STAGE
    trial_dir = _trial_dir(directory, method=method, seed=seed, hp=hyperparameters)
    config = read_config(trial_dir)
    run = config["run"]
    if run.get("track") == "rl":
        raise ValueError(
            f"{trial_dir.name} is an RL trial: its checkpoint is an RLlib algorithm "
            "(ray.rllib.algorithms.Algorithm.from_checkpoint), not a supervised network"
        )
    checkpoints = sorted(trial_dir.glob(CHECKPOINT_GLOB), key=lambda p: p.name)
    if not checkpoints:
        raise FileNotFoundError(f"{trial_dir} has no checkpoint: no task of it finished")
    _, model, _ = build_trial(config)
    model.load_state_dict(LoopState.load(checkpoints[-1]).model)
    return model.eval()


def _trial_dir(directory: Path, *, method: str, seed: int, hp: Mapping[str, Any] | None) -> Path:
    matches = [
        trial_dir
        for trial_dir in trial_dirs(directory)
        if _matches(read_config(trial_dir)["method"], method, seed, hp)
    ]
    if len(matches) != 1:
        found = "no trial" if not matches else f"{len(matches)} trials (pass hyperparameters=)"
        raise LookupError(f"{directory}: {found} of method {method!r} with seed {seed}")
    return matches[0]


def _matches(
    entry: Mapping[str, Any], method: str, seed: int, hp: Mapping[str, Any] | None
) -> bool:
    if entry["name"] != method or int(entry["seed"]) != seed:
        return False
    return hp is None or all(entry["hp"].get(k) == v for k, v in hp.items())
