"""Run an experiment spec with Ray Tune: param space, trials, resume, and the final report."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import ray
from ray import tune

from blip_ray.data import DataUnavailableError, load_sequence
from blip_ray.experiments.results import load_trials
from blip_ray.experiments.spec import ExperimentSpec, SearchLeaf
from blip_ray.experiments.trainable import supervised_trainable
from blip_ray.report import markdown_table, write_report


class UserError(ValueError):
    """Bad input that is the user's to fix (exit code 2); the message is one line."""


@dataclasses.dataclass
class RunOutcome:
    experiment_dir: Path
    trials: int
    failed: int
    wall_s: float
    table: str


def to_tune(value: Any) -> Any:
    """A spec value as Tune sees it: search leaves become Tune's domains."""
    if not isinstance(value, SearchLeaf):
        return value
    if value.kind == "grid":
        return tune.grid_search(list(value.values))
    if value.kind == "choice":
        return tune.choice(list(value.values))
    if value.kind == "uniform":
        return tune.uniform(*value.values)
    return tune.loguniform(*value.values)


def param_space(spec: ExperimentSpec) -> dict[str, Any]:
    """Grid over methods (each with its own searched hyperparameters) x seeds."""
    run = {
        "benchmark": spec.benchmark,
        "data_dir": _absolute(spec.data_dir),
        "download": spec.download,
        "tasks": spec.tasks,
        "network": spec.network,
        "width": spec.width,
        "fc_width": spec.fc_width,
        "train": dataclasses.asdict(spec.train),
        "cpus_per_trial": spec.resources.cpu,
        "inject_failure_after_task": (
            spec.inject_failure.after_task if spec.inject_failure is not None else None
        ),
    }
    methods = [
        {"name": name, "hp": {k: to_tune(v) for k, v in hp.items()}}
        for name, hp in spec.methods.items()
    ]
    return {
        "run": run,
        "method": tune.grid_search(methods),
        "seed": tune.grid_search(list(spec.seeds)),
    }


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def init_ray(address: str | None) -> None:
    """Attach to ``address`` (or RAY_ADDRESS), or start an embedded instance on loopback."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(
                f"cannot reach the Ray cluster at {address}: {err}".splitlines()[0]
            ) from None
        return
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
        log_to_driver=False,
    )


def experiment_dir_for(
    spec: ExperimentSpec, *, storage: str | None, name: str | None, resume: bool
) -> Path:
    root = Path(storage or spec.storage).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(
            f"storage {root} is not writable ({err.strerror}); pass --storage DIR"
        ) from None
    if not resume:
        return root / (name or f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}")
    if name:
        candidates = [root / name]
    else:
        candidates = sorted(
            (p for p in root.glob(f"{spec.name}-*") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    for candidate in candidates:
        if tune.Tuner.can_restore(str(candidate)):
            return candidate
    raise UserError(
        f"nothing to resume: no experiment of '{spec.name}' under {root}; "
        "run without --resume to start one"
    )


class TaskProgress(tune.Callback):
    """One line per finished task of each trial, on top of Tune's own progress."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if "task" not in result:
            return
        method = trial.config["method"]["name"]
        print(
            f"[{trial.trial_id}] {method} seed={trial.config['seed']}: task "
            f"{result['tasks_done']}/{result['num_tasks']} ({result['task_name']}) done, "
            f"acc={result['acc']:.3f}",
            flush=True,
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        print(
            f"[{trial.trial_id}] failed; retried from its last finished task while retries remain",
            flush=True,
        )


def run_experiment(
    spec: ExperimentSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    storage: str | None = None,
    name: str | None = None,
    verbose: int = 1,
) -> RunOutcome:
    """Run (or resume) every trial of ``spec``, then write and return the report."""
    experiment_dir = experiment_dir_for(spec, storage=storage, name=name, resume=resume)
    # Per-task checkpoints of many short trials trip Tune's snapshot-frequency warning every few
    # seconds; the snapshots are intended, so the warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    _check_data(spec)
    init_ray(address)
    _check_resources(spec)
    trainable = tune.with_resources(
        supervised_trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    )
    start = time.perf_counter()
    if resume:
        tuner = tune.Tuner.restore(
            str(experiment_dir),
            trainable=trainable,
            resume_errored=True,
            param_space=param_space(spec),
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                num_samples=spec.samples, max_concurrent_trials=spec.max_concurrent
            ),
            run_config=tune.RunConfig(
                name=experiment_dir.name,
                storage_path=str(experiment_dir.parent),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[TaskProgress()],
                verbose=verbose,
            ),
        )
    tuner.fit()
    wall = time.perf_counter() - start
    trials = load_trials(experiment_dir)
    write_report(trials, experiment_dir, title=f"{spec.name} ({spec.benchmark})", wall_s=wall)
    failed = sum(t.status != "ok" for t in trials)
    return RunOutcome(experiment_dir, len(trials), failed, wall, markdown_table(trials))


def _check_data(spec: ExperimentSpec) -> None:
    """Load the sequence once in the driver, so missing files fail before any trial starts."""
    try:
        load_sequence(
            spec.benchmark,
            data_dir=_absolute(spec.data_dir),
            seed=spec.seeds[0],
            download=spec.download,
        )
    except DataUnavailableError as err:
        raise UserError(str(err).splitlines()[0]) from None


def _check_resources(spec: ExperimentSpec) -> None:
    available = ray.cluster_resources()
    for key, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        have = available.get(key, 0.0)
        if need > have:
            raise UserError(
                f"resources.{key.lower()}: a trial asks for {need:g} {key} but the "
                f"cluster has {have:g}; lower it in the spec"
            )
