"""What a spec will run, counted without Ray: trials, the grid behind them, and how many at once.

The count follows Tune's own expansion of :func:`blip_ray.experiments.run.launch.param_space` (a
grid over methods, each method's grid leaves and seeds nested inside it, ``samples`` draws of the
whole), so ``--dry-run``, the ``--yes`` guard and the run's header line can state the true number
before Ray is imported. Tune's own header counts only the outer grid ("Number of trials 2" for an
8-trial run); this is the number to trust.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blip_ray.experiments.specs.checks import SearchLeaf

if TYPE_CHECKING:  # the CLI reads this module's constants for --help: keep it light
    from blip_ray.experiments.specs.experiment import ExperimentSpec

MAX_TRIALS_WITHOUT_YES = 200
"""A spec that makes more trials than this runs only with ``--yes``: a grid of thousands is more
often a typo (a seed list or a grid too long) than a plan. ``--max-trials N`` or the environment
variable :data:`MAX_TRIALS_ENV` moves the limit."""
MAX_TRIALS_ENV = "BLIP_RAY_MAX_TRIALS"
PROGRESS_EVERY_S = 30.0
"""``--quiet``: the overall progress line is printed at most this often (at task ends, and while
nothing ends), so a long run's log (``ray job logs``) stays readable."""


@dataclass(frozen=True)
class MethodGrid:
    """One method's share of the grid."""

    name: str
    settings: int
    """Combinations of its ``grid`` hyperparameters (1 when none is a grid)."""
    searched: dict[str, SearchLeaf]
    """Its searched hyperparameters (grids and sampled ones)."""


@dataclass(frozen=True)
class TrialPlan:
    """The trials of a spec: ``samples x benchmarks x train settings x sum(method settings) x
    seeds``."""

    name: str
    benchmark: str
    methods: tuple[MethodGrid, ...]
    seeds: int
    samples: int
    train_settings: int
    """Combinations of the ``train:`` grid leaves, shared by every method."""
    benchmarks: int
    """One-task sequences of a references run (each task alone), else 1."""
    tasks: int
    """Tasks of one trial."""
    cpu: float
    gpu: float
    max_concurrent: int | None

    @property
    def trials(self) -> int:
        settings = sum(method.settings for method in self.methods)
        return self.samples * self.benchmarks * self.train_settings * settings * self.seeds

    @property
    def total_tasks(self) -> int:
        return self.trials * self.tasks

    def grid_text(self) -> str:
        """How the count comes about, e.g. ``8 methods x 3 seeds`` or
        ``9 settings of 8 methods x 2 training settings x 3 seeds x 2 samples``."""
        return plan_text(self, methods=True)

    def at_once(self, *, cpus: float, gpus: float) -> int:
        """Trials that run at the same time on ``cpus`` CPUs and ``gpus`` GPUs."""
        fits = math.floor(cpus / self.cpu + 1e-9)
        if self.gpu > 0:
            fits = min(fits, math.floor(gpus / self.gpu + 1e-9))
        if self.max_concurrent is not None:
            fits = min(fits, self.max_concurrent)
        return max(0, min(fits, self.trials))

    def header(self, *, cpus: float, gpus: float) -> str:
        """The run's first line: ``minatar4: 24 trials (8 methods x 3 seeds), 2 at a time ...``."""
        each = f"{self.cpu:g} CPU" + (f" + {self.gpu:g} GPU" if self.gpu else "")
        return (
            f"{self.name}: {self.trials:,} trials ({self.grid_text()}), "
            f"{self.at_once(cpus=cpus, gpus=gpus)} at a time ({each} each of {cpus:g} CPUs"
            f"{f', {gpus:g} GPUs' if gpus else ''}), {self.tasks} tasks each, "
            f"{self.total_tasks:,} tasks in all"
        )


def plan_trials(spec: ExperimentSpec) -> TrialPlan:
    """The trials ``spec`` makes, counted as Tune expands them (no Ray needed)."""
    return TrialPlan(
        name=spec.name,
        benchmark=spec.benchmark,
        methods=tuple(
            MethodGrid(
                name=name,
                settings=_settings(spec, name),
                searched={k: v for k, v in hp.items() if isinstance(v, SearchLeaf)},
            )
            for name, hp in spec.methods.items()
        ),
        seeds=len(spec.seeds),
        samples=spec.samples,
        train_settings=1 if spec.stage else _grid_size(spec.train_search.values()),
        benchmarks=spec.tasks if spec.references else 1,
        tasks=1 if spec.references else spec.tasks,
        cpu=spec.resources.cpu,
        gpu=spec.resources.gpu,
        max_concurrent=spec.max_concurrent,
    )


def stage_plans(spec: ExperimentSpec) -> list[TrialPlan]:
    """The plans of what ``blip-ray run`` starts: the spec's trials, or (``search:``) its search
    stage's and its final stage's (one configuration per method, chosen later)."""
    if spec.search is None or spec.stage is not None:
        return [plan_trials(spec)]
    from blip_ray.experiments.plan.stages import final_stage, search_stage

    final = plan_trials(final_stage(spec, {name: {} for name in spec.methods}))
    if spec.search.selection_path is not None:  # a committed selection: the final stage only
        return [final]
    return [plan_trials(search_stage(spec)), final]


def _settings(spec: ExperimentSpec, method: str) -> int:
    """Settings of ``method``: a stage's configurations (the budget while Optuna proposes them),
    else the combinations of its grid."""
    if spec.stage == "search":
        from blip_ray.experiments.plan.stages import search_budget

        return search_budget(spec, method)
    if spec.stage == "final":
        return 1
    return _grid_size(spec.methods[method].values())


def max_trials(flag: int | None) -> int:
    """The ``--yes`` threshold: ``--max-trials``, else the environment variable, else the
    default."""
    if flag is not None:
        return flag
    raw = os.environ.get(MAX_TRIALS_ENV, "").strip()
    if not raw:
        return MAX_TRIALS_WITHOUT_YES
    if not raw.isdigit():
        raise ValueError(f"{MAX_TRIALS_ENV}: expected a whole number of trials, got {raw!r}")
    return int(raw)


def check_trial_count(plan: TrialPlan, *, limit: int, confirmed: bool) -> None:
    """Refuse a grid above ``limit`` trials unless the user said ``--yes``."""
    if plan.trials > limit and not confirmed:
        raise ValueError(
            f"spec makes {plan.trials:,} trials (above {limit:,}); add --yes to run them, "
            "or --dry-run to list them"
        )


def duration_text(seconds: float) -> str:
    """A rounded duration for people: ``2h 05m``, ``12m 30s``, ``45s``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def progress_line(
    *,
    done: int,
    running: int,
    pending: int,
    trials: int,
    tasks_done: int,
    total_tasks: int,
    tasks_left: int,
    elapsed_s: float,
    rate_tasks: int,
) -> str:
    """``progress: 5/24 trials done, 2 running, 17 pending; tasks 23/96; 12m 30s elapsed, ETA
    38m 10s``. The ETA extrapolates ``rate_tasks`` tasks finished in ``elapsed_s`` over the
    ``tasks_left``; none before the first task ends."""
    eta = "ETA after the first task"
    if tasks_left == 0:
        eta = "ETA 0s"
    elif rate_tasks > 0:
        eta = f"ETA {duration_text(elapsed_s / rate_tasks * tasks_left)}"
    return (
        f"progress: {done}/{trials} trials done, {running} running, {pending} pending; "
        f"tasks {tasks_done}/{total_tasks}; {duration_text(elapsed_s)} elapsed, {eta}"
    )


def plan_text(plan: TrialPlan, *, methods: bool) -> str:
    """The factors of the trial count, with (``methods``) or without the method settings."""
    settings = sum(method.settings for method in plan.methods)
    names = plural(len(plan.methods), "method")
    parts = [names if settings == len(plan.methods) else f"{settings} settings of {names}"]
    if plan.benchmarks > 1:  # references: the one method, each task alone
        parts = [f"{plural(plan.benchmarks, 'task')} alone"]
    elif not methods:
        parts = []
    if plan.train_settings > 1:
        parts.append(plural(plan.train_settings, "training setting"))
    parts.append(plural(plan.seeds, "seed"))
    if plan.samples > 1:
        parts.append(plural(plan.samples, "sample"))
    return " x ".join(parts)


def _grid_size(values: Iterable[Any]) -> int:
    """Combinations of the ``grid`` leaves among ``values`` (sampled ones are drawn, not
    crossed)."""
    return math.prod(
        len(v.values) for v in values if isinstance(v, SearchLeaf) and v.kind == "grid"
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
