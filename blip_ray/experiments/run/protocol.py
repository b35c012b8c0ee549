"""A spec with ``search:``: the search stage, the selection on validation scores, the final runs.

The run's directory ``<storage>/<name>-<time>/`` holds the spec record, ``search/`` and ``final/``
(each an ordinary experiment directory: its own Tune run, row files, report and provenance),
``selection.json`` and the run's report. One command runs both stages; ``--resume`` continues
whichever stage was stopped (a finished search is not rerun: its trials are read back and the
selection, deterministic, is made again). The final stage's provenance records the selection.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blip_ray.errors import UserError
from blip_ray.experiments.plan.stages import final_stage, search_stage
from blip_ray.experiments.run.launch import RunOutcome, run_experiment
from blip_ray.experiments.run.storage import protocol_dir_for
from blip_ray.experiments.specs.experiment import ExperimentSpec
from blip_ray.experiments.specs.search import read_selection
from blip_ray.records.layout import (
    FINAL_STAGE,
    SEARCH_STAGE,
    SELECTION_FILE,
    read_spec_record,
    trial_dirs,
    write_json,
    write_spec_record,
)
from blip_ray.records.trials import load_trials
from blip_ray.report.protocol import write_protocol_report
from blip_ray.report.selection import chosen_configurations, select, selection_record


def run_protocol(
    spec: ExperimentSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    storage: str | None = None,
    name: str | None = None,
    verbose: int = 1,
    flags: Mapping[str, Any] | None = None,
) -> RunOutcome:
    """Run (or resume) the search, choose each method's configuration on validation, run the
    final stage, and write the run's report; returns the final stage's outcome (trials of both
    stages counted) in the run's directory."""
    search = spec.search
    if search is None:
        raise ValueError(f"{spec.name}: no search: section; use run_experiment")
    top = protocol_dir_for(spec, storage=storage, name=name, resume=resume)
    top.mkdir(parents=True, exist_ok=True)
    if read_spec_record(top) is None:
        write_spec_record(spec.record(), top)
    stages = {"address": address, "storage": str(top), "verbose": verbose, "flags": flags}
    print(f"{spec.name}: {search.describe(spec.tasks)}; then the final runs on seeds "
          f"{', '.join(map(str, spec.seeds))}", flush=True)  # fmt: skip

    committed = read_selection(search, spec.methods)
    searched = None
    if committed is not None:  # a committed search's choice: the final stage only
        record = committed | {"from": search.selection}
        print(f"selection: {search.selection} (the search is not run again)", flush=True)
    else:
        searched = run_experiment(
            search_stage(spec), name=SEARCH_STAGE, resume=_started(top / SEARCH_STAGE), **stages
        )
        if searched.interrupted:
            return _in_run_dir(searched, top, table=searched.table)
        record = selection_record(
            select(
                load_trials(top / SEARCH_STAGE),
                metric=search.metric,
                higher_is_better=search.higher_is_better,
                seeds=search.seeds,
            ),
            selection_settings(spec),
        )
    write_json(top / SELECTION_FILE, record)

    final = run_experiment(
        final_stage(spec, chosen_configurations(record)),
        name=FINAL_STAGE,
        resume=_started(top / FINAL_STAGE),
        selection=record,
        **stages,
    )
    table = write_protocol_report(top)
    outcome = _in_run_dir(final, top, table=table)
    if searched is not None:
        outcome.trials += searched.trials
        outcome.failed += searched.failed
        outcome.wall_s += searched.wall_s
    return outcome


def selection_settings(spec: ExperimentSpec) -> dict[str, Any]:
    """The search's settings as the selection record keeps them."""
    search = spec.search
    assert search is not None
    return {
        "algorithm": search.algorithm,
        "budget": search.budget,
        "metric": search.metric,
        "mode": search.mode,
        "protocol": search.protocol,
        "tasks_searched": search.search_tasks(spec.tasks),
        "tasks": spec.tasks,
        "search_seeds": list(search.seeds),
        "final_seeds": list(spec.seeds),
        "searcher_seed": search.seed,
    }


def _started(stage_dir: Path) -> bool:
    """Whether a stage already started (resume it) or not (start it). A directory a stop left
    before Tune wrote its state holds no trial yet and is removed, so the stage starts again."""
    if not stage_dir.exists():
        return False
    from ray import tune

    if tune.Tuner.can_restore(str(stage_dir)):
        return True
    if any(True for _ in trial_dirs(stage_dir)):
        raise UserError(
            f"--resume: {stage_dir} holds trials but no Tune state to resume them from; report "
            f"it with `blip-ray report {stage_dir}` and start the run again"
        )
    shutil.rmtree(stage_dir)
    return False


def _in_run_dir(outcome: RunOutcome, top: Path, *, table: str) -> RunOutcome:
    outcome.experiment_dir = top
    outcome.table = table
    return outcome
