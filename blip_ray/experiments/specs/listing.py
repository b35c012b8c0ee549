"""``blip-ray list``: everything a spec can name, with its defaults, read off the registries and
the settings dataclasses (so a new method, benchmark or setting appears here by itself)."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping

from blip_ray.data import SEQUENCES
from blip_ray.experiments.specs.experiment import REQUIRED, SUPERVISED_KEYS, ExperimentSpec
from blip_ray.methods import METHODS
from blip_ray.models import MODELS
from blip_ray.rl.sequences import RL_SEQUENCES, TASK_SEPARATOR, RlSequence
from blip_ray.rl.settings import PpoSettings, RlSettings
from blip_ray.supervised import TrainSettings

#: Spec keys whose default comes from the benchmark rather than the dataclass.
FROM_BENCHMARK = {"network": "the sequence's", "tasks": "all of the sequence's"}
SEARCHABLE = "each may be searched: {grid: [...]}, {choice: [...]}, {uniform: [lo, hi]}, ..."


def listing_lines() -> list[str]:
    """The lines of ``blip-ray list``."""
    return [
        *_benchmarks(),
        "networks: " + ", ".join(sorted(MODELS)),
        *_methods(),
        *_spec_keys(),
        f"train: (supervised; {SEARCHABLE})",
        _wrap(_defaults(TrainSettings, skip=("device",))),
        "rl: (RL benchmarks; defaults are the paper's unless the sequence has its own)",
        _wrap(_defaults(RlSettings, skip=("steps_per_task", "ppo", "num_env_runners"))),
        "  steps_per_task: " + ", ".join(f"{s.name} {s.steps_per_task:,}" for s in _rl_sequences()),
        "  num_env_runners: sized from resources.cpu when not given (0 on 2 CPUs or fewer)",
        "rl.ppo:",
        _wrap(_defaults(PpoSettings)),
        *(_wrap(f"on {s.name}: {_assignments(s.ppo)}") for s in _rl_sequences() if s.ppo),
    ]


def _benchmarks() -> list[str]:
    lines = ["supervised benchmarks:"]
    for name, entry in sorted(SEQUENCES.items()):
        shape = "x".join(map(str, entry.input_shape))
        lines.append(f"  {name:<13}{entry.num_tasks:>3} tasks of {shape}, network {entry.network}")
        if entry.description:
            lines.append(f"  {'':<16}{entry.description}")
    lines.append(
        f"RL benchmarks (one task alone: <benchmark>{TASK_SEPARATOR}<task>, e.g. "
        f"cartpole3{TASK_SEPARATOR}{RL_SEQUENCES['cartpole3'].tasks[0].name}):"
        if "cartpole3" in RL_SEQUENCES
        else f"RL benchmarks (one task alone: <benchmark>{TASK_SEPARATOR}<task>):"
    )
    for sequence in _rl_sequences():
        lines.append(f"  {sequence.name:<13}{len(sequence.tasks):>3} tasks, trunk {sequence.trunk}")
        lines.append(f"  {'':<16}{', '.join(task.name for task in sequence.tasks)}")
    return lines


def _methods() -> list[str]:
    lines = ["methods (tracks: hyperparameter defaults; on an RL sequence, its own defaults):"]
    for name, method in sorted(METHODS.items()):
        defaults = {f.name: f.default for f in dataclasses.fields(method.config_class)}
        role = " (a reference, not a continual method)" if method.role == "reference" else ""
        lines.append(f"  {name:<11} {', '.join(method.tracks)}{role}: {_assignments(defaults)}")
        for sequence in _rl_sequences() if "rl" in method.tracks else ():
            if own := sequence.method_defaults.get(name):
                lines.append(f"  {'':<11} on {sequence.name}: {_assignments(own)}")
    return lines


def _spec_keys() -> list[str]:
    """The spec's top-level keys: required, shared, and each track's own."""
    fields = {f.name: f for f in dataclasses.fields(ExperimentSpec)}
    hidden = {"train_search", "references", "rl", *REQUIRED, *SUPERVISED_KEYS}
    shared = {name: _default(field) for name, field in fields.items() if name not in hidden}
    supervised = {
        key: _default(fields[key]) if key in fields else _Text("cpu (or cuda, auto)")
        for key in SUPERVISED_KEYS
        if key != "train"
    }
    return [
        f"spec keys (required: {', '.join(REQUIRED)}):",
        _wrap(_assignments(shared)),
        _wrap(f"supervised: {_assignments(supervised)}, train (below)"),
        "  RL: rl (below)",
    ]


def _default(field: dataclasses.Field) -> object:
    if field.name in FROM_BENCHMARK:
        return _Text(FROM_BENCHMARK[field.name])
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        if dataclasses.is_dataclass(value):  # written as in a spec: {cpu: 1.0, gpu: 0.0}
            pairs = ", ".join(f"{k}: {v}" for k, v in dataclasses.asdict(value).items())
            return _Text(f"{{{pairs}}}")
        return value
    return [] if field.default == () else field.default


class _Text(str):
    """Printed as is (not quoted) by :func:`_assignments`."""

    def __repr__(self) -> str:
        return str(self)


def _defaults(settings: type, *, skip: tuple[str, ...] = ()) -> str:
    values = {f.name: _default(f) for f in dataclasses.fields(settings) if f.name not in skip}
    return _assignments(values)


def _wrap(text: str) -> str:
    """A long line of settings folded at 100 columns, continuation lines indented."""
    return textwrap.fill(
        text, width=100, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False
    )


def _rl_sequences() -> list[RlSequence]:
    return [sequence for _, sequence in sorted(RL_SEQUENCES.items())]


def _assignments(values: Mapping[str, object]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in values.items()) or "none"
