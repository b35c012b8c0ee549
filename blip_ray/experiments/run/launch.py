"""Run an experiment spec with Ray Tune: param space, trials, resume, and the final report."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from blip_ray.data import DataUnavailableError, load_sequence
from blip_ray.errors import UserError
from blip_ray.experiments.cluster.connect import check_resources, init_ray, release_ray
from blip_ray.experiments.plan.grid import plan_trials
from blip_ray.experiments.plan.stages import split_configuration
from blip_ray.experiments.run.loggers import CsvRows, JsonRows, RowFiles
from blip_ray.experiments.run.progress import OverallProgress, quiet_ray_notices
from blip_ray.experiments.run.provenance import start_segment
from blip_ray.experiments.run.storage import experiment_dir_for
from blip_ray.experiments.run.trackers import tracker_callbacks
from blip_ray.experiments.run.trainable import rl_trainable, supervised_trainable
from blip_ray.experiments.specs.experiment import ExperimentSpec, SearchLeaf
from blip_ray.plugins import resolve, worker_runtime_env
from blip_ray.records.layout import (
    finish_segment,
    read_spec_record,
    write_run_record,
    write_spec_record,
)
from blip_ray.records.rows import TaskRow
from blip_ray.records.trials import is_finished
from blip_ray.report.runs import write_experiment_report

__all__ = ["RunOutcome", "UserError", "experiment_dir_for", "param_space", "run_experiment"]


@dataclasses.dataclass
class RunOutcome:
    experiment_dir: Path
    trials: int
    failed: int
    wall_s: float
    table: str
    interrupted: bool = False
    """Stopped by SIGINT/SIGTERM before every trial ended: continue it with ``--resume``."""


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
    """Grid over methods; per method, its searched hyperparameters x seeds (a stage of a search:
    its listed configurations x seeds, each with its own training settings).

    The seed grid sits inside each method's entry and the variant generator runs with
    ``constant_grid_search``, so a sampled hyperparameter (``uniform``, ``loguniform``, ``choice``)
    is drawn once per sample and shared by all seeds: mean ± CI over seeds stays meaningful.
    """
    run = {
        # references: one trial per task alone (its one-task sequence) and seed
        "benchmark": (
            tune.grid_search(spec.single_task_benchmarks()) if spec.references else spec.benchmark
        ),
        "data_dir": _absolute(spec.data_dir),
        "download": spec.download,
        "tasks": 1 if spec.references else spec.tasks,
        "network": spec.network,
        "width": spec.width,
        "fc_width": spec.fc_width,
        "train": {
            **dataclasses.asdict(spec.train),
            **{k: to_tune(v) for k, v in spec.train_search.items()},
        },
        "train_searched": sorted(spec.train_search),
        "cpus_per_trial": spec.resources.cpu,
        "inject_failure_after_task": (
            spec.inject_failure.after_task if spec.inject_failure is not None else None
        ),
        "track": spec.track,
        "rl": spec.rl.to_dict() if spec.rl is not None else None,
        "plugins": resolve(spec.plugins),
    }
    if spec.stage is not None:  # a stage of a search: training settings ride per configuration
        run["train"] = dataclasses.asdict(spec.train)
        run["train_searched"] = []
    if _proposed_by_optuna(spec):
        return {"run": run}  # searchers.MethodSearch proposes each trial's method entry
    if spec.configurations:  # a stage of a search: each method's configurations, as listed
        methods = [
            {"name": name, "hp": hp, "train": train, "seed": tune.grid_search(list(spec.seeds))}
            for name, listed in spec.configurations.items()
            for hp, train in map(split_configuration, listed)
        ]
        return {"run": run, "method": tune.grid_search(methods)}
    methods = [
        {
            "name": name,
            "hp": {k: to_tune(v) for k, v in hp.items()},
            "seed": tune.grid_search(list(spec.seeds)),
        }
        for name, hp in spec.methods.items()
    ]
    return {"run": run, "method": tune.grid_search(methods)}


def _proposed_by_optuna(spec: ExperimentSpec) -> bool:
    return spec.stage == "search" and spec.search is not None and spec.search.algorithm == "optuna"


def _search_alg(spec: ExperimentSpec) -> Any:
    """Tune's variant generator over :func:`param_space`, or an Optuna search stage's searcher."""
    if _proposed_by_optuna(spec):
        from blip_ray.experiments.run.searchers import method_search

        return method_search(spec, param_space(spec)["run"])
    return BasicVariantGenerator(constant_grid_search=True)


def planned_trials(spec: ExperimentSpec) -> int:
    """How many trials the spec's grid makes (as Tune expands :func:`param_space`)."""
    return plan_trials(spec).trials


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


class TaskProgress(tune.Callback):
    """One line per finished task of each trial, on top of Tune's own progress."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        if "failed" in result:
            print(f"[{trial.trial_id}] failed, not retried: {result['failed']}", flush=True)
        row = TaskRow.from_result(result)
        if row is None:
            return
        method, rl = trial.config["method"], trial.config["run"].get("rl") or {}
        print(
            f"[{trial.trial_id}] {method['name']} seed={method['seed']}: task "
            f"{row.tasks_done}/{row.num_tasks} ({row.task_name}) done, "
            f"{row.progress(rl.get('reference_returns'))}",
            flush=True,
        )

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info):
        print(f"[{trial.trial_id}] failed; retrying from its last finished task", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info):
        print(f"[{trial.trial_id}] failed; no retries left", flush=True)


def run_experiment(
    spec: ExperimentSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    storage: str | None = None,
    name: str | None = None,
    verbose: int = 1,
    flags: Mapping[str, Any] | None = None,
    selection: Mapping[str, Any] | None = None,
) -> RunOutcome:
    """Run (or resume) every trial of ``spec``, then write and return the report.

    ``flags`` are the command line's other choices (``--smoke``, ``--data-dir``, ...), recorded
    with this run segment's provenance next to ``address``, ``storage``, ``name`` and ``resume``;
    ``selection`` (a search's final stage) is how its configurations were chosen, recorded there
    too.
    """
    experiment_dir = experiment_dir_for(spec, storage=storage, name=name, resume=resume)
    # Per-task checkpoints of many short trials trip Tune's snapshot-frequency warning every few
    # seconds; the snapshots are intended, so the warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    _check_data(spec)
    quiet_ray_notices(embedded=(address or os.environ.get("RAY_ADDRESS")) in (None, "", "local"))
    if verbose == 0:  # Tune's new output prints its box even at verbose=0; the legacy one does not
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    with sigterm_as_sigint():
        try:
            init_ray(address, runtime_env=worker_runtime_env(spec.plugins))
            check_resources(spec)
            resources = ray.cluster_resources()
            cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
            print(plan_trials(spec).header(cpus=cpus, gpus=gpus))
            # Tune's state first (the Tuner writes it as it creates the directory), so a stop
            # from here on leaves an experiment that --resume continues, never a directory of
            # blip-ray's records alone that can neither be resumed nor started again.
            tuner = _tuner(spec, experiment_dir, resume=resume, verbose=verbose)
            if read_spec_record(experiment_dir) is None:  # new, or stopped right after the Tuner
                write_spec_record(spec.record(), experiment_dir)
            given = address or os.environ.get("RAY_ADDRESS") or None
            start_segment(
                experiment_dir,
                spec,
                resumed=resume,
                flags={"address": given, "storage": storage, "name": name, "resume": resume}
                | dict(flags or {}),
                cluster=_cluster(embedded=given in (None, "local")),
                selection=selection,
            )
            start = time.perf_counter()
            grid = tuner.fit()
            return _report(spec, experiment_dir, grid, wall_s=time.perf_counter() - start)
        finally:
            # The embedded instance ends once the experiment and its report are saved, or on
            # an error; a repeated SIGTERM meanwhile is still ignored, so the stop completes.
            release_ray()


def _tuner(spec: ExperimentSpec, experiment_dir: Path, *, resume: bool, verbose: int) -> Any:
    trainable = trial_trainable(spec)
    if resume:
        return tune.Tuner.restore(
            str(experiment_dir),
            trainable=trainable,
            resume_errored=True,
            param_space=param_space(spec),
        )
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            # an Optuna search proposes every trial: as many samples as its trials
            num_samples=planned_trials(spec) if _proposed_by_optuna(spec) else spec.samples,
            max_concurrent_trials=spec.max_concurrent,
            search_alg=_search_alg(spec),
            # A trial's randomness is all seeded by the trial, so a finished trial's process
            # can run the next one: no process start and imports per trial (many tiny trials).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment_dir.name,
            storage_path=str(experiment_dir.parent),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # resume and retries read only the latest checkpoint (README: the disk a run needs)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # blip-ray's row files (what reports read), Tune's JSON and CSV and the spec's
            # trackers, each task's row written only once its checkpoint is registered
            # (loggers.py, trackers.py). Tune's
            # own TensorBoard logger stays off: it warns on every list-valued metric (matrix
            # rows, task names); trackers.py logs the rows' numbers instead.
            callbacks=[
                TaskProgress(),
                RowFiles(),
                JsonRows(),
                CsvRows(),
                *tracker_callbacks(spec, experiment_dir),
                *[OverallProgress(plan_trials(spec))] * (verbose == 0),
            ],
            verbose=verbose,
        ),
    )


def _report(spec: ExperimentSpec, experiment_dir: Path, grid: Any, *, wall_s: float) -> RunOutcome:
    # Tune ends fit() early, without raising, on SIGINT (its graceful stop): trials that neither
    # finished nor failed are what an interruption leaves behind.
    interrupted = any(r.error is None and not is_finished(r.metrics or {}) for r in grid)
    header = {
        "title": f"{spec.name} ({spec.benchmark})",
        # every segment's: a resumed run's own seconds would overstate its trials per minute
        "wall_s": finish_segment(experiment_dir, wall_s=wall_s, interrupted=interrupted),
        "planned": planned_trials(spec),
    }
    write_run_record(experiment_dir, header)
    trials, table = write_experiment_report(experiment_dir, spec.references, header)
    failed = sum(t.status != "ok" for t in trials)
    return RunOutcome(experiment_dir, len(trials), failed, wall_s, table, interrupted)


def _cluster(*, embedded: bool) -> dict[str, Any]:
    """The Ray cluster the trials run on, as the provenance records it."""
    resources = ray.cluster_resources()
    return {
        "embedded": embedded,
        "nodes": sum(node.get("Alive", False) for node in ray.nodes()),
        "cpus": resources.get("CPU", 0.0),
        "gpus": resources.get("GPU", 0.0),
    }


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """Make SIGTERM (``kill``, ``timeout``, SLURM, systemd, ``ray job stop``) stop like Ctrl+C.

    During ``fit()`` Tune's SIGINT handler stops the trials and saves the experiment state, so
    the run can be resumed; Ray's own SIGTERM handler would exit at once instead. Only the first
    SIGTERM is passed on: ``timeout`` and schedulers signal the driver and then its whole group,
    and a second SIGINT would make Tune skip the save. Ctrl+C twice still skips it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    passed_on = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal passed_on
        if passed_on:
            return
        passed_on = True
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def trial_trainable(spec: ExperimentSpec) -> Any:
    """The track's trainable with its resources: an RL trial also reserves its env runners."""
    if spec.track == "supervised":
        return tune.with_resources(
            supervised_trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
        )

    runners = spec.rl.num_env_runners
    trial = {"CPU": max(spec.resources.cpu - runners, 1.0), "GPU": spec.resources.gpu}
    bundles = [trial] + [{"CPU": 1.0}] * runners
    return tune.with_resources(rl_trainable, tune.PlacementGroupFactory(bundles))


def _check_data(spec: ExperimentSpec) -> None:
    """Load the sequence once in the driver, so missing files fail before any trial starts."""
    if spec.track == "rl":
        return  # ALE ROMs ship with ale-py; CartPole with gymnasium
    try:
        load_sequence(
            spec.benchmark,
            data_dir=_absolute(spec.data_dir),
            seed=spec.seeds[0],
            download=spec.download,
        )
    except DataUnavailableError as err:
        raise UserError(str(err).splitlines()[0]) from None
