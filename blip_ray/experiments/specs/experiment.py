"""Experiment specs: YAML (safe-loaded) -> validated, typed dataclasses, without importing Ray.

Everything a trial would fail on is refused while the spec is read, before Ray starts: unknown or
duplicate keys, wrong types, impossible values, keys the benchmark's track ignores, a network that
cannot take the benchmark's inputs, a method that does not run on the track or a hyperparameter
its config refuses (every searched value), an RL budget below one PPO batch. Each raises
:class:`SpecError` with one line naming the key (``methods.blip.f_prior: must be > 0, got 0.0``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blip_ray.data import SEQUENCES
from blip_ray.experiments.specs import checks
from blip_ray.experiments.specs.checks import SearchLeaf, SpecError
from blip_ray.experiments.specs.search import (
    SearchSettings,
    check_spaces,
    parse_search,
    read_selection,
)
from blip_ray.experiments.specs.tracks import method_networks, rl_section, supervised_sections
from blip_ray.methods import METHODS
from blip_ray.plugins import PluginError, load_plugins
from blip_ray.rl.sequences import RL_SEQUENCES, find_rl_sequence
from blip_ray.rl.settings import RlSettings
from blip_ray.supervised import TrainSettings

#: Keys of the supervised track only: an RL sequence brings its own trunk, PPO and env budget.
SUPERVISED_KEYS = ("network", "width", "fc_width", "train", "data_dir", "download", "device")
#: Longest spec name: the experiment directory is ``<name>-YYYYmmdd-HHMMSS`` (plus ``-N`` when
#: two runs start within a second) and file systems cap a file name at 255 bytes.
MAX_NAME_LENGTH = 200
#: Experiment trackers ``loggers:`` may name -> the module each needs and how to install it
#: (their Tune callbacks are in :mod:`blip_ray.experiments.run.trackers`).
LOGGERS = {
    "tensorboard": ("tensorboardX", "pip install tensorboardX"),
    "mlflow": ("mlflow", "pip install 'blip-ray[trackers]'"),
    "wandb": ("wandb", "pip install 'blip-ray[trackers]'"),
}
DEFAULT_LOGGERS = ("tensorboard",)


@dataclass(frozen=True)
class Resources:
    """Per-trial resources; two 1-CPU trials run at once on a 2-CPU machine."""

    cpu: float = 1.0
    """CPUs of one trial, its RL env runners included."""
    gpu: float = 0.0
    """GPUs of one trial (fractions share a GPU)."""

    @property
    def threads(self) -> int:
        """torch's intra-op threads in a trial: one per whole CPU (at least one). Float results
        depend on it (the kernels split sums by thread), so a run reproduces a trial to the bit
        only with the same count."""
        return max(1, int(self.cpu))


@dataclass(frozen=True)
class FailureInjection:
    """Testing aid: crash every trial once, right after it reports task ``after_task``."""

    after_task: int = 0
    """Index of the task after whose report the trial crashes (once per trial)."""


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole experiment: one trial per method x hyperparameter setting x seed."""

    name: str
    """Names the experiment directory, ``<name>-<YYYYmmdd-HHMMSS>``."""
    benchmark: str
    """A supervised (``blip_ray.data.SEQUENCES``) or RL (``RL_SEQUENCES``) task sequence."""
    methods: dict[str, dict[str, Any]]
    """Method name -> hyperparameters (plain values or :class:`SearchLeaf`) over its defaults;
    on RL benchmarks over the sequence's ``method_defaults``."""
    seeds: tuple[int, ...]
    """One trial per seed for each method and setting; the seed fixes a trial's randomness."""
    network: str
    """The supervised network (default: the sequence's paper network); RL: the sequence's trunk."""
    tasks: int
    """Tasks run: the first ``tasks`` of the sequence (default: all of them)."""
    width: float = 1.0
    """The network's width multiplier (the official ``--mul``)."""
    fc_width: int | None = None
    """Fully connected width where the network has a rule for it (None: the paper's)."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Supervised training settings; searched ones hold their first value here."""
    train_search: dict[str, SearchLeaf] = field(default_factory=dict)
    """Searched training settings (``train: {lr: {grid: [...]}}``)."""
    data_dir: str | None = None
    """Where the supervised sequence's files are (None: sequences that ship offline)."""
    download: bool = True
    """Download missing supervised data where the network allows."""
    samples: int = 1
    """Draws of every sampled (``choice``, ``uniform``, ``loguniform``) hyperparameter."""
    resources: Resources = field(default_factory=Resources)
    """What each trial reserves on the cluster."""
    storage: str = "runs"
    """Directory the experiment directories go under."""
    max_failures: int = 2
    """Retries of a failed trial, each from its last finished task."""
    max_concurrent: int | None = None
    """Most trials at once (None: as many as the cluster fits)."""
    inject_failure: FailureInjection | None = None
    """Testing aid: crash every trial once (None: never)."""
    description: str = ""
    """Free text about the experiment, kept with its results."""
    rl: RlSettings | None = None
    """RL benchmarks: budgets, evaluation, PPO and env runners, resolved; None when supervised."""
    loggers: tuple[str, ...] = DEFAULT_LOGGERS
    """Experiment trackers fed every finished task's row (step = tasks done) and each trial's
    hyperparameters: ``tensorboard``, ``mlflow``, ``wandb``; the spec's ``loggers:`` (default
    ``[tensorboard]``, ``[]`` for none) plus ``--logger``."""
    plugins: tuple[str, ...] = ()
    """The user's modules or files imported before the spec is checked and in every Ray worker
    (:mod:`blip_ray.plugins`): the spec's ``plugins:`` and ``--plugin``."""
    search: SearchSettings | None = None
    """The selection protocol (``search:``): a search stage scored on validation, then the final
    runs of each method's best configuration on ``seeds``; None: every configuration runs on
    ``seeds`` and is reported as it is."""
    configurations: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    """One stage's explicit configurations per method (each: searched hyperparameters and
    ``train.<key>`` settings over the method's fixed values), set by
    :mod:`blip_ray.experiments.plan.stages`; empty: the grid of ``methods`` and ``train``."""
    stage: str | None = None
    """``search`` or ``final`` in a stage of a spec with ``search:``; None otherwise."""
    references: bool = False
    """Single-task references instead of the methods: PPO (``finetune``) on each task alone per
    seed (:meth:`as_references`, ``blip-ray run --references``)."""

    def __post_init__(self) -> None:
        if self.rl is not None and self.rl.reference_returns:
            # A run of the sequence's first tasks (tasks:, --smoke) normalizes only those.
            names = {task.name for task in find_rl_sequence(self.benchmark).tasks[: self.tasks]}
            kept = {k: v for k, v in self.rl.reference_returns.items() if k in names}
            if kept != self.rl.reference_returns:
                rl = dataclasses.replace(self.rl, reference_returns=kept)
                object.__setattr__(self, "rl", rl)

    @property
    def track(self) -> str:
        """``rl`` for RL task sequences, ``supervised`` otherwise."""
        return "rl" if self.rl is not None else "supervised"

    def smoke(self) -> ExperimentSpec:
        """The same experiment shrunk to seconds: one seed, two tasks, one epoch, tiny Fisher."""
        methods = {
            name: {**hp, **METHODS[name].config_class.smoke_values}
            for name, hp in self.methods.items()
        }
        search = self.search
        if search is not None and search.selection is None:  # a committed one is not rerun
            search = dataclasses.replace(
                search,
                seeds=search.seeds[:1],
                budget=min(search.budget, 2),
                first_tasks=None if search.first_tasks is None else min(search.first_tasks, 2),
            )
        return dataclasses.replace(
            self,
            search=search,
            seeds=self.seeds[:1],
            tasks=min(self.tasks, 2),
            samples=min(self.samples, 2),
            train=dataclasses.replace(self.train, epochs=1),
            train_search={k: v for k, v in self.train_search.items() if k != "epochs"},
            methods=methods,
            rl=self.rl.smoke() if self.rl is not None else None,
        )

    def as_references(self) -> ExperimentSpec:
        """The spec's single-task references: each of its tasks trained alone (the one-task
        sequence ``<benchmark>:<task>``) with plain PPO (``finetune``), for every seed, with the
        same network, budget and evaluation; named ``<name>-references``."""
        if self.search is not None:
            raise SpecError(
                "--references: a references run trains each task alone with PPO; it has no "
                "search: remove the spec's search: section (or copy the spec without it)"
            )
        if self.rl is None:
            raise SpecError(
                f"--references: {self.benchmark} is supervised; single-task references are for "
                "RL benchmarks (joint training is the supervised reference: methods: {joint: {}})"
            )
        return dataclasses.replace(
            self,
            name=f"{self.name}-references"[:MAX_NAME_LENGTH],
            methods={"finetune": {}},
            samples=1,
            references=True,
            rl=dataclasses.replace(self.rl, reference_returns={}),
        )

    def single_task_benchmarks(self) -> list[str]:
        """The one-task sequences of a references spec, one per task it runs."""
        sequence = find_rl_sequence(self.benchmark)
        return [sequence.single_task(task).name for task in range(self.tasks)]

    def record(self) -> dict[str, Any]:
        """The spec as plain JSON values: saved with the results, compared on ``--resume``."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


TOP_KEYS = {f.name for f in dataclasses.fields(ExperimentSpec)} - {
    "train_search",
    "references",
    "configurations",
    "stage",
}
TOP_KEYS |= {"device"}
REQUIRED = ("name", "benchmark", "methods", "seeds")


def load_spec(
    path: str | Path, *, plugins: Sequence[str] = (), loggers: Sequence[str] = ()
) -> ExperimentSpec:
    """Read and validate a YAML spec file; ``plugins`` (``--plugin``) are imported first and
    ``loggers`` (``--logger``) add to the spec's."""
    raw = checks.read_yaml(path, example="a YAML file such as benchmarks/pdigits.yaml")
    return parse_spec(raw, plugins=plugins, loggers=loggers, base=Path(path).parent)


def parse_spec(
    raw: Any,
    *,
    plugins: Sequence[str] = (),
    loggers: Sequence[str] = (),
    base: Path | None = None,
) -> ExperimentSpec:
    """Validate a spec already loaded into Python objects, after importing its plugins;
    ``loggers`` add to the spec's ``loggers:``; ``base``: the spec file's directory (relative
    paths in it start there)."""
    if not isinstance(raw, dict):
        raise SpecError("spec: expected a mapping of keys (name, benchmark, methods, seeds, ...)")
    checks.unknown(raw, TOP_KEYS, "spec")
    plugins = _plugins(raw.get("plugins"), given=plugins)
    for key in REQUIRED:
        if key not in raw:
            raise SpecError(f"spec: missing required key '{key}'")
    name = checks.string(raw["name"], "name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SpecError(f"name: use letters, digits, '.', '_' or '-' only, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(
            f"name: {len(name)} characters is too long for a directory name; use at most "
            f"{MAX_NAME_LENGTH}"
        )
    benchmark = checks.string(raw["benchmark"], "benchmark")
    rl_sequence = find_rl_sequence(benchmark)
    if benchmark not in SEQUENCES and rl_sequence is None:
        known = ", ".join(sorted([*SEQUENCES, *RL_SEQUENCES]))
        raise SpecError(
            f"benchmark: unknown {benchmark!r}; known: {known} (or one task of an RL "
            "benchmark alone, such as minatar4:Breakout)"
        )
    rl = rl_sequence is not None
    if rl and (missing := rl_sequence.missing_requirement()):
        raise SpecError(f"benchmark: {missing}")
    ignored = [key for key in (SUPERVISED_KEYS if rl else ("rl",)) if key in raw]
    if ignored:
        raise SpecError(
            f"{ignored[0]}: does nothing on the RL benchmark {benchmark} (its trunk, PPO and "
            "budget come from the sequence and rl:); remove it"
            if rl
            else f"rl: only RL benchmarks ({', '.join(sorted(RL_SEQUENCES))}) take it"
        )
    seeds = checks.seed_list(raw["seeds"], "seeds", example="[0, 1, 2]")
    resources = _resources(raw.get("resources", {}))
    if rl:
        track = {"network": rl_sequence.trunk, "rl": rl_section(raw, benchmark, cpus=resources.cpu)}
    else:
        track = supervised_sections(raw, benchmark)
    methods = _methods(raw["methods"], benchmark)
    if not rl:
        method_networks(methods, benchmark, track)
    tasks = _tasks(raw.get("tasks"), benchmark)
    search = parse_search(raw.get("search"), final_seeds=seeds, tasks=tasks, base=base)
    if search is not None:
        read_selection(search, methods)
        if "samples" in raw:
            raise SpecError(
                "samples: a spec with search: draws search.budget configurations per method; "
                "remove samples"
            )
        check_spaces(search, methods, track.get("train_search", {}))
        if rl and search.algorithm == "optuna":
            _check_optuna_rl(track["rl"], rl_sequence, tasks)
    return ExperimentSpec(
        name=name,
        benchmark=benchmark,
        seeds=seeds,
        methods=methods,
        tasks=tasks,
        search=search,
        samples=checks.integer(raw.get("samples", 1), "samples", minimum=1),
        resources=resources,
        storage=checks.string(raw.get("storage", "runs"), "storage"),
        max_failures=checks.integer(raw.get("max_failures", 2), "max_failures", minimum=0),
        max_concurrent=checks.optional(checks.integer, raw, "max_concurrent", minimum=1),
        inject_failure=_injection(raw.get("inject_failure"), tasks),
        description=str(raw.get("description", "")),
        loggers=_loggers(raw.get("loggers", list(DEFAULT_LOGGERS)), given=loggers),
        plugins=plugins,
        **track,
    )


def _check_optuna_rl(rl: RlSettings, sequence: Any, tasks: int) -> None:
    """Optuna scores each configuration as its trials end, on normalized returns: every game
    needs its reference return (the 1 of the scale) before the search starts."""
    missing = [t.name for t in sequence.tasks[:tasks] if t.name not in rl.reference_returns]
    if missing:
        raise SpecError(
            f"search.algorithm: optuna on {sequence.name} scores normalized returns as trials "
            f"end, and {missing[0]} has no reference return; give rl.reference_returns (blip-ray "
            "run SPEC --references measures them) or use algorithm: random or grid"
        )


def _plugins(raw: Any, *, given: Sequence[str]) -> tuple[str, ...]:
    """``--plugin`` then the spec's ``plugins:``, each imported (a failure: one line, exit 2)."""
    if raw is not None and (
        not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw)
    ):
        raise SpecError(
            "plugins: expected a list of module names or Python files, e.g. "
            "[mypkg.methods, ./my_bench.py]"
        )
    plugins = tuple(dict.fromkeys([*given, *(raw or [])]))
    try:
        load_plugins(plugins)
    except PluginError as err:
        raise SpecError(str(err)) from None
    return plugins


def _loggers(raw: Any, *, given: Sequence[str]) -> tuple[str, ...]:
    """The spec's ``loggers:`` then ``--logger``, each known and its package installed."""
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise SpecError(
            f"loggers: expected a list of tracker names ({', '.join(LOGGERS)}), e.g. "
            "[tensorboard, mlflow]; [] for none"
        )
    loggers = tuple(dict.fromkeys([*raw, *given]))
    for name in loggers:
        if name not in LOGGERS:
            raise SpecError(f"loggers: unknown {name!r}; known: {', '.join(LOGGERS)}")
        module, install = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise SpecError(
                f"loggers: {name} needs the optional package {module!r}; install it: {install}"
            )
    return loggers


def _tasks(raw: Any, benchmark: str) -> int:
    """How many tasks run: the sequence's first ``tasks`` (default: all of them)."""
    rl_sequence = find_rl_sequence(benchmark)
    length = len(rl_sequence.tasks) if rl_sequence else SEQUENCES[benchmark].num_tasks
    tasks = length if raw is None else checks.integer(raw, "tasks", minimum=1)
    if tasks > length:
        raise SpecError(f"tasks: {benchmark} has {length} tasks; use 1 to {length}, got {tasks}")
    return tasks


def _methods(raw: Any, benchmark: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(
            "methods: expected a mapping of method name -> hyperparameters, "
            "e.g. {blip: {f_prior: 1e-15}, finetune: {}}"
        )
    rl_sequence = find_rl_sequence(benchmark)
    track = "rl" if rl_sequence is not None else "supervised"
    defaults = rl_sequence.method_defaults if rl_sequence is not None else {}
    out: dict[str, dict[str, Any]] = {}
    for method, hp in raw.items():
        if method not in METHODS:
            known = ", ".join(sorted(METHODS))
            raise SpecError(f"methods: unknown method {method!r}; known: {known}")
        if track not in METHODS[method].tracks:
            accepted = ", ".join(sorted(n for n, cls in METHODS.items() if track in cls.tracks))
            raise SpecError(
                f"methods.{method}: does not run on {'RL' if track == 'rl' else track} "
                f"benchmarks; {benchmark} accepts {accepted}"
            )
        hp = {} if hp is None else hp
        if not isinstance(hp, dict):
            raise SpecError(f"methods.{method}: expected a mapping of hyperparameters, got {hp!r}")
        config_class, where = METHODS[method].config_class, f"methods.{method}"
        hints = typing.get_type_hints(config_class)
        checks.unknown(hp, {f.name for f in dataclasses.fields(config_class)}, where)
        out[method] = {k: checks.searchable(v, hints[k], f"{where}.{k}") for k, v in hp.items()}
        checks.each_setting(config_class, {**defaults.get(method, {}), **out[method]}, where)
    return out


def _resources(raw: Any) -> Resources:
    if not isinstance(raw, dict):
        raise SpecError("resources: expected a mapping like {cpu: 1, gpu: 0}")
    checks.unknown(raw, {"cpu", "gpu"}, "resources")
    cpu = checks.number(raw.get("cpu", 1.0), "resources.cpu", positive=True)
    gpu = checks.number(raw.get("gpu", 0.0), "resources.gpu")
    if gpu < 0:
        raise SpecError(f"resources.gpu: must be >= 0, got {gpu}")
    return Resources(cpu=cpu, gpu=gpu)


def _injection(raw: Any, tasks: int) -> FailureInjection | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecError("inject_failure: expected a mapping like {after_task: 0}")
    checks.unknown(raw, {"after_task"}, "inject_failure")
    after = checks.integer(raw.get("after_task", 0), "inject_failure.after_task", minimum=0)
    if after >= tasks:
        raise SpecError(
            f"inject_failure.after_task: the run has tasks 0 to {tasks - 1}, got {after}"
        )
    return FailureInjection(after)
