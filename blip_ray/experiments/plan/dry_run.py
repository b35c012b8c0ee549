"""``blip-ray run SPEC --dry-run``: a spec's trials and an estimated wall time; starts nothing.

Ray is never imported here: the cluster's size comes from ``--cpus`` or this machine
(``os.cpu_count()``), and the output says which.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from blip_ray.experiments.plan.estimate import Estimate, default_estimate
from blip_ray.experiments.plan.grid import (
    TrialPlan,
    duration_text,
    plan_text,
    plan_trials,
    plural,
)
from blip_ray.experiments.specs.checks import SearchLeaf
from blip_ray.experiments.specs.experiment import ExperimentSpec

Estimator = Callable[[ExperimentSpec, int], Estimate]
"""The wall-time estimate of a spec with that many trials at once (tests pass a fake)."""


def dry_run_text(
    spec: ExperimentSpec,
    *,
    cpus: float | None = None,
    remote: bool = False,
    estimator: Estimator | None = None,
) -> str:
    """What ``--dry-run`` prints. ``cpus``: the cluster's CPUs as given (``--cpus``), else this
    machine's; ``remote``: the run would go to a cluster (``--address``/``RAY_ADDRESS``)."""
    if spec.search is not None and spec.stage is None:
        return _stages_text(spec, cpus=cpus, remote=remote, estimator=estimator)
    plan = plan_trials(spec)
    machine_cpus, gpus = _this_machine(spec)
    if cpus is not None:
        where = f"on {cpus:g} CPUs (--cpus)"
    elif remote:
        cpus = machine_cpus
        where = (
            f"on {cpus:g} CPUs: this machine's (os.cpu_count()); the cluster's size is not known "
            "without starting Ray, give it with --cpus N"
        )
    else:
        cpus = machine_cpus
        where = f"on this machine's {cpus:g} CPUs (os.cpu_count())"
    at_once = plan.at_once(cpus=cpus, gpus=gpus)
    each = f"{plan.cpu:g} CPU" + (f" + {plan.gpu:g} GPU" if plan.gpu else "")
    lines = [
        f"{spec.name} ({spec.benchmark}): {plan.trials:,} trials ({plan.grid_text()}), "
        f"{plural(plan.tasks, 'task')} each, {plan.total_tasks:,} tasks in all; dry run, "
        "nothing started",
        *_grid_lines(spec, plan),
        f"resources: {each} per trial; {at_once} at a time {where}",
        (estimator or _estimate)(spec, at_once).text(),
    ]
    return "\n".join(lines)


def _stages_text(
    spec: ExperimentSpec, *, cpus: float | None, remote: bool, estimator: Estimator | None
) -> str:
    """Both stages of a spec with ``search:``, each as its own dry run, and their total."""
    from blip_ray.experiments.plan.stages import final_stage, search_stage

    assert spec.search is not None
    stages = [
        ("search stage", search_stage(spec)),
        ("final stage", final_stage(spec, {name: {} for name in spec.methods})),
    ]
    if spec.search.selection is not None:
        stages = stages[1:]
    total, seconds = 0, 0.0
    lines = [
        f"{spec.name} ({spec.benchmark}): {spec.search.describe(spec.tasks)}, then each "
        f"method's chosen configuration on seeds {', '.join(map(str, spec.seeds))}; dry run, "
        "nothing started"
    ]
    if spec.search.selection is not None:
        lines.append(f"selection: {spec.search.selection} (committed; the search is not run)")
    for title, stage in stages:
        plan = plan_trials(stage)
        total += plan.trials
        at_once = plan.at_once(cpus=cpus or _this_machine(spec)[0], gpus=_this_machine(spec)[1])
        estimate = (estimator or _estimate)(stage, at_once)
        seconds = (
            None if estimate.seconds is None or seconds is None else seconds + estimate.seconds
        )
        text = dry_run_text(stage, cpus=cpus, remote=remote, estimator=estimator)
        lines += [f"{title}:", *(f"  {line}" for line in text.splitlines())]
    both = "none" if seconds is None else f"about {duration_text(seconds)}"
    which = "both stages" if len(stages) == 2 else "in all"
    lines.append(f"{which}: {total:,} trials; estimated wall time {both}")
    return "\n".join(lines)


def _grid_lines(spec: ExperimentSpec, plan: TrialPlan) -> list[str]:
    settings = sum(m.settings for m in plan.methods)
    runs = plan.trials // max(1, settings)
    each = plan_text(plan, methods=False)
    lines = [f"grid: each method setting runs {runs:,} times ({each}):"]
    width = max(len(m.name) for m in plan.methods)
    for method in plan.methods:
        values = spec.methods.get(method.name, {})
        fixed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in values.items() if k not in method.searched]  # fmt: skip
        chosen = "chosen from " if spec.stage == "final" else ""
        searched = [f"{k}: {chosen}{_leaf(v)}" for k, v in method.searched.items()]
        hyperparameters = "; ".join(fixed + searched) or "defaults"
        lines.append(
            f"  {method.name:<{width}}  {plural(method.settings, 'setting')} -> "
            f"{plural(method.settings * runs, 'trial')}   {hyperparameters}"
        )
    if spec.train_search:
        searched = "; ".join(f"{k}: {_leaf(v)}" for k, v in spec.train_search.items())
        each = "each method searches" if spec.stage == "search" else "every method"
        each = "each method's chosen from" if spec.stage == "final" else each
        lines.append(f"training, {each}: {searched}")
    if plan.samples > 1:
        lines.append(
            f"samples: {plan.samples} (each sampled hyperparameter drawn {plan.samples} times, "
            "the same value for every seed)"
        )
    if spec.references:
        lines.append(f"references: each of the {spec.tasks} tasks alone, trained with finetune")
    lines.append(f"seeds: {', '.join(map(str, spec.seeds))}")
    return lines


def _leaf(leaf: SearchLeaf) -> str:
    if leaf.kind in ("grid", "choice"):
        values = (f"{v:g}" if isinstance(v, float) else str(v) for v in leaf.values)
        return f"{leaf.kind} [{', '.join(values)}]"
    low, high = leaf.values
    return f"{leaf.kind} {low:g} to {high:g}"


def _this_machine(spec: ExperimentSpec) -> tuple[float, float]:
    """This machine's CPUs and (only asked when trials want one) GPUs."""
    gpus = 0.0
    if spec.resources.gpu > 0:
        import torch

        gpus = float(torch.cuda.device_count())
    return float(os.cpu_count() or 1), gpus


def _estimate(spec: ExperimentSpec, at_once: int) -> Estimate:
    return default_estimate(spec, at_once=at_once)
