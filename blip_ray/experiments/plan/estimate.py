"""How long a spec's trials will take, estimated without Ray (``blip-ray run --dry-run``).

Supervised trials are timed by a short calibration here and now: a few training batches of each
method's network on the benchmark's own data (the real loop with the method's hooks) and one
evaluation batch, extrapolated over the spec's tasks, training-set sizes, batch size and epochs.
RL trials need RLlib, that is Ray, to train at all, so their estimate comes from throughput
recorded on earlier runs (:data:`RL_THROUGHPUT`). Either way the number is an estimate with its
basis printed next to it, never a promise.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from blip_ray.data import DataUnavailableError, load_sequence
from blip_ray.data.base import Split
from blip_ray.experiments.plan.grid import duration_text, plan_trials, plural
from blip_ray.experiments.specs.checks import SearchLeaf
from blip_ray.experiments.specs.experiment import ExperimentSpec
from blip_ray.methods import make_method
from blip_ray.rl.sequences import find_rl_sequence
from blip_ray.supervised.build import build_network
from blip_ray.supervised.loop import TaskBatches, resolve_device, train_epoch

TrialSeconds = Callable[[ExperimentSpec, str], float]
"""Seconds one trial of the named method takes: a calibration, recorded figures or a test's fake."""

START_S = 15.0
"""Starting the embedded Ray instance and the first trial processes (imports, data): measured as
10-20 s on a 2-core machine, added once."""


@dataclass(frozen=True)
class RecordedThroughput:
    """Env steps per second of one RL trial, evaluation included, and where it was measured."""

    steps_per_s: float
    source: str


RL_THROUGHPUT = {
    "atari_cnn": RecordedThroughput(
        90.0,
        "results/atari6-short: 4 trials x 6 games x 30,000 env steps in 3,992 s, 2 trials at once "
        "on 2 CPU cores (CPU learner)",
    ),
    "minatar_cnn": RecordedThroughput(
        2_300.0,
        "benchmarks/minatar4.yaml: measured per trial, 2 trials at once on 2 CPU cores",
    ),
    "mlp": RecordedThroughput(
        2_150.0,
        "results/cartpole3: 24 trials x 3 tasks x 49,152 env steps in 821 s, 2 trials at once on "
        "2 CPU cores",
    ),
}
"""Recorded RL throughput per trunk (the network decides most of a PPO iteration's cost)."""
RL_TRIAL_START_S = 10.0
"""Building one RL trial's PPO algorithm, envs and first evaluation, beyond its env steps."""


@dataclass(frozen=True)
class Estimate:
    """An estimated wall time (None: no estimate) and what it rests on."""

    seconds: float | None
    basis: str

    def text(self) -> str:
        if self.seconds is None:
            return f"estimated wall time: none ({self.basis})"
        return f"estimated wall time: about {duration_text(self.seconds)} ({self.basis})"


def estimate_wall(spec: ExperimentSpec, *, at_once: int, trial_seconds: TrialSeconds) -> float:
    """The run's wall time when each trial takes ``trial_seconds`` and ``at_once`` run together,
    started in grid order as slots free up (Tune's FIFO scheduling), plus :data:`START_S`."""
    plan = plan_trials(spec)
    runs = plan.trials // max(1, sum(m.settings for m in plan.methods) * plan.samples)
    durations = [  # Tune's order: a sample's trials method by method
        seconds
        for m in plan.methods
        for seconds in [trial_seconds(spec, m.name)] * (m.settings * runs)
    ]
    slots = [0.0] * max(1, at_once)
    for duration in durations * plan.samples:
        heapq.heappush(slots, heapq.heappop(slots) + duration)
    return START_S + max(slots)


def default_estimate(spec: ExperimentSpec, *, at_once: int) -> Estimate:
    """The track's estimate: a calibration (supervised) or recorded figures (RL)."""
    if at_once < 1:
        return Estimate(None, "no trial fits the CPUs and GPUs given")
    if spec.track == "rl":
        trunk = find_rl_sequence(spec.benchmark).trunk
        recorded = RL_THROUGHPUT.get(trunk)
        if recorded is None:
            return Estimate(None, f"no recorded throughput for the {trunk} trunk")
        seconds = estimate_wall(spec, at_once=at_once, trial_seconds=recorded_rl_seconds)
        return Estimate(
            seconds,
            f"estimate from recorded figures: {recorded.steps_per_s:,.0f} env steps/s per trial, "
            f"{recorded.source}; a busier or faster machine differs",
        )
    try:
        calibration = SupervisedCalibration(spec)
    except (DataUnavailableError, ValueError) as err:
        return Estimate(None, f"cannot calibrate: {str(err).splitlines()[0]}")
    seconds = estimate_wall(spec, at_once=at_once, trial_seconds=calibration)
    return Estimate(
        seconds,
        f"estimate from a short calibration on this machine: {calibration.batches} training "
        f"batches per method; every task runs its full {plural(spec.train.epochs, 'epoch')} "
        "(early stopping ends tasks sooner); end-of-task steps not counted",
    )


def recorded_rl_seconds(spec: ExperimentSpec, method: str) -> float:
    """One RL trial at its trunk's recorded throughput (:data:`RL_THROUGHPUT`)."""
    trunk = find_rl_sequence(spec.benchmark).trunk
    tasks = 1 if spec.references else spec.tasks
    steps = tasks * spec.rl.steps_per_task
    return RL_TRIAL_START_S + steps / RL_THROUGHPUT[trunk].steps_per_s


class SupervisedCalibration:
    """Seconds of one supervised trial per method, from a few timed batches of the real loop.

    A task costs ``epochs x (batches x seconds per batch + validation samples x seconds per
    evaluated sample)`` plus the evaluation of every task's test split; the training set is the
    union of the tasks the method trains on (joint training grows with the tasks).
    """

    def __init__(self, spec: ExperimentSpec, *, batches: int = 10, budget_s: float = 0.5) -> None:
        self.spec, self.batches, self.budget_s = spec, batches, budget_s
        self.sequence = load_sequence(
            spec.benchmark, data_dir=spec.data_dir, seed=spec.seeds[0], download=False
        )
        self.sequence.tasks = self.sequence.tasks[: spec.tasks]
        self._costs: dict[str, tuple[float, float]] = {}

    def __call__(self, spec: ExperimentSpec, method: str) -> float:
        if method not in self._costs:
            self._costs[method] = self._measure(method)
        train_s, eval_s = self._costs[method]
        train, tasks = spec.train, self.sequence.tasks
        probe = make_method(method, **_first_values(spec.methods[method]))
        test_samples = sum(len(task.test) for task in tasks)
        total = eval_s * test_samples  # the untrained network's row
        for task_id in range(len(tasks)):
            trained = {*probe.training_tasks(task_id), task_id}
            n_train = sum(len(tasks[k].train) for k in trained)
            n_valid = sum(len(tasks[k].valid) for k in trained)
            epoch = math.ceil(n_train / train.batch_size) * train_s + n_valid * eval_s
            total += train.epochs * epoch + eval_s * test_samples
        return total

    def _measure(self, name: str) -> tuple[float, float]:
        """Seconds per training batch and per evaluated sample of ``name`` on task 0."""
        spec, task = self.spec, self.sequence.tasks[0]
        method = make_method(name, **_first_values(spec.methods[name]))
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(spec.resources.cpu)))  # what the trial is given
        try:
            device = resolve_device(spec.train.device)
            model = build_network(
                spec.network, self.sequence, method, width=spec.width, fc_width=spec.fc_width
            ).to(device)
            method.setup(model)
            model.on_task_start(0)
            method.before_task(model, 0)
            warm_up = self._train(model, method, device, batches=1)
            count = max(2, min(self.batches, int(self.budget_s / max(warm_up, 1e-6))))
            self.batches = count
            train_s = self._train(model, method, device, batches=count) / count
            size = min(len(task.test), spec.train.eval_batch_size)
            start = time.perf_counter()
            with torch.no_grad():
                model.eval()
                model(task.inputs(task.test.x[:size]).to(device), 0)
            eval_s = (time.perf_counter() - start) / max(size, 1)
        finally:
            torch.set_num_threads(threads)
        return train_s, eval_s

    def _train(self, model: Any, method: Any, device: torch.device, *, batches: int) -> float:
        """Seconds of one epoch of ``batches`` training batches of task 0 (the real loop)."""
        task, settings = self.sequence.tasks[0], self.spec.train
        size = batches * settings.batch_size
        part = dataclasses.replace(task, train=Split(task.train.x[:size], task.train.y[:size]))
        loader = TaskBatches(part, device, torch.Generator().manual_seed(0))
        optimizer = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=settings.lr
        )
        start = time.perf_counter()
        train_epoch(model, method, 0, loader, optimizer, settings=settings)
        return time.perf_counter() - start


def _first_values(hp: dict[str, Any]) -> dict[str, Any]:
    """A searched hyperparameter's first value (a range's low end): one setting to time."""
    return {k: v.values[0] if isinstance(v, SearchLeaf) else v for k, v in hp.items()}
