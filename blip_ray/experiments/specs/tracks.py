"""The track sections of an experiment spec, checked as
:mod:`blip_ray.experiments.specs.experiment` reads it.

- supervised: the network (built for the sequence's inputs and for each method's trunk), ``train``
  (every searched value checked) and the data settings;
- RL: ``rl:`` over the sequence's defaults, and single-task reference returns given inline or as
  the ``reference_returns.yaml`` a ``--references`` run writes.

Each failure is a one-line :class:`~blip_ray.experiments.specs.checks.SpecError` naming its key.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from blip_ray.data import SEQUENCES
from blip_ray.experiments.specs import checks
from blip_ray.experiments.specs.checks import SearchLeaf, SpecError
from blip_ray.methods import METHODS
from blip_ray.models import MODELS, ModelOptions, check_build
from blip_ray.rl.sequences import find_rl_sequence
from blip_ray.rl.settings import PpoSettings, RlSettings
from blip_ray.supervised import TrainSettings


def supervised_sections(raw: dict[str, Any], benchmark: str) -> dict[str, Any]:
    """The supervised track's settings: network (checked against the inputs), training, data."""
    width = checks.number(raw.get("width", 1.0), "width", positive=True)
    fc_width = checks.optional(checks.integer, raw, "fc_width", minimum=1)
    train, train_search = _train(raw.get("train", {}), raw.get("device", "cpu"))
    return {
        "network": _network(raw.get("network"), benchmark, width=width, fc_width=fc_width),
        "width": width,
        "fc_width": fc_width,
        "train": train,
        "train_search": train_search,
        "data_dir": checks.optional(checks.string, raw, "data_dir"),
        "download": checks.boolean(raw.get("download", True), "download"),
    }


def _network(raw: Any, benchmark: str, *, width: float, fc_width: int | None) -> str:
    """The network, built for the sequence's inputs: what a trial's first step would do."""
    shape = SEQUENCES[benchmark].input_shape
    network = SEQUENCES[benchmark].network if raw is None else checks.string(raw, "network")
    if network not in MODELS:
        raise SpecError(f"network: unknown {network!r}; known: {', '.join(sorted(MODELS))}")
    problem = _build_problem(network, shape)
    if problem is not None:
        fits = " or ".join(name for name in sorted(MODELS) if _build_problem(name, shape) is None)
        raise SpecError(f"network: {problem} from {benchmark}; use {fits}")
    problem = _build_problem(network, shape, width=width, fc_width=fc_width)
    if problem is not None:
        raise SpecError(f"{'width' if fc_width is None else 'fc_width'}: {problem}")
    return network


def method_networks(methods: dict[str, Any], benchmark: str, track: dict[str, Any]) -> None:
    """Each method's trunk (quantized, Bayesian, with per-task state) builds on the network."""
    for name in methods:
        cls = METHODS[name]
        problem = _build_problem(
            track["network"],
            SEQUENCES[benchmark].input_shape,
            width=track["width"],
            fc_width=track["fc_width"],
            quantized=cls.quantized_trunk,
            bayesian=cls.bayesian_trunk,
            task_state=cls.trunk_task_state,
        )
        if problem is not None:
            raise SpecError(f"methods.{name}: {problem}")


def _build_problem(network: str, input_shape: tuple[int, ...], **options: Any) -> str | None:
    """Why ``network`` cannot be built for ``input_shape`` (None: it can)."""
    try:
        check_build(network, ModelOptions(input_shape=input_shape, head_sizes=(2,), **options))
    except ValueError as err:
        return str(err)
    return None


def _train(raw: Any, device: Any) -> tuple[TrainSettings, dict[str, SearchLeaf]]:
    """Fixed settings, plus the searched ones (checked value by value, e.g. every grid lr > 0)."""
    if not isinstance(raw, dict):
        raise SpecError("train: expected a mapping of training settings")
    hints = typing.get_type_hints(TrainSettings)
    checks.unknown(raw, set(hints) - {"device"}, "train")
    device = checks.string(device, "device")
    if device not in ("cpu", "cuda", "auto"):
        raise SpecError(f"device: expected cpu, cuda or auto, got {device!r}")
    parsed = {key: checks.searchable(v, hints[key], f"train.{key}") for key, v in raw.items()}
    checks.each_setting(TrainSettings, parsed, "train")
    search = {k: v for k, v in parsed.items() if isinstance(v, SearchLeaf)}
    values = {k: v.values[0] if k in search else v for k, v in parsed.items()}
    return TrainSettings(**values, device=device), search


def rl_section(raw: dict[str, Any], benchmark: str, *, cpus: float) -> RlSettings:
    """The ``rl:`` section over the sequence's defaults; env runners sized from the trial's CPUs."""
    section = raw.get("rl") or {}
    if not isinstance(section, dict):
        raise SpecError("rl: expected a mapping like {steps_per_task: 100000}")
    checks.unknown(section, {f.name for f in dataclasses.fields(RlSettings)}, "rl")
    values: dict[str, Any] = {  # 0 steps would read as "the sequence's default" in for_sequence
        key: checks.integer(value, f"rl.{key}", minimum=1 if key == "steps_per_task" else None)
        for key, value in section.items()
        if key not in ("ppo", "reference_returns", "eval_policy") and value is not None
    }
    if section.get("eval_policy") is not None:
        values["eval_policy"] = checks.string(section["eval_policy"], "rl.eval_policy")
    ppo = section.get("ppo") or {}
    if not isinstance(ppo, dict):
        raise SpecError("rl.ppo: expected a mapping of PPO settings")
    hints = typing.get_type_hints(PpoSettings)
    checks.unknown(ppo, set(hints), "rl.ppo")
    ppo = {k: checks.typed(v, hints[k], f"rl.ppo.{k}") for k, v in ppo.items()}
    references = _references(section.get("reference_returns"), benchmark)
    try:
        return RlSettings.for_sequence(
            benchmark, cpus=cpus, ppo=ppo, reference_returns=references, **values
        )
    except ValueError as err:  # the settings' own checks; each message starts with the field
        raise SpecError(f"rl.{err}") from None


def _references(raw: Any, benchmark: str) -> dict[str, float]:
    """A mapping of task name to return, or the path of a YAML file holding one (the
    ``reference_returns.yaml`` a ``--references`` run writes), relative to the working directory."""
    if raw is None:
        return {}
    names = [task.name for task in find_rl_sequence(benchmark).tasks]
    if isinstance(raw, str):
        if not Path(raw).is_file():
            raise SpecError(
                f"rl.reference_returns: no file {raw!r} (relative to {Path.cwd()}); write one with "
                "`blip-ray run SPEC --references`, or give a mapping like {Breakout: 5.0}"
            )
        raw = checks.read_yaml(raw, example="a YAML mapping of task name to return")
    values = _return_mapping(raw, "rl.reference_returns", example=f"{{{names[0]}: 100.0}}")
    strangers = sorted(k for k in values if k not in names)
    if strangers:
        raise SpecError(
            f"rl.reference_returns: unknown task {strangers[0]!r}; {benchmark}'s tasks are "
            f"{', '.join(names)}"
        )
    return values


def load_reference_returns(path: str | Path) -> dict[str, float]:
    """Single-task reference returns from a YAML file (``{Boxing: 90.0, ...}``), for
    ``blip-ray report --reference-returns``; task names are checked against the experiment's."""
    raw = checks.read_yaml(path, example="a YAML mapping of task name to return")
    return _return_mapping(raw, str(path), example="{Boxing: 90.0}")


def _return_mapping(raw: Any, where: str, *, example: str) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"{where}: expected a mapping of task name to return, like {example}")
    return {str(k): checks.number(v, f"{where}.{k}") for k, v in raw.items()}
