"""Experiment specs: YAML (safe-loaded) -> validated, typed dataclasses.

Every key is checked before any trial starts: unknown keys, wrong types and impossible values raise
:class:`SpecError` with one line naming the key (``methods.ewc.lamb: expected a number, got 'x'``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blip_ray.data import SEQUENCES
from blip_ray.methods import METHODS
from blip_ray.models import MODELS
from blip_ray.supervised import TrainSettings


class SpecError(ValueError):
    """A malformed experiment spec; the message is one line naming the key and the fix."""


#: The paper's network for each supervised sequence (DESIGN.md "Benchmarks of the paper").
DEFAULT_NETWORKS = {
    "digits5": "mlp",
    "pdigits": "mlp",
    "mnist5": "mlp",
    "pmnist": "mlp",
    "cifar": "alexnet32",
    "mixture5": "alexnet32",
    "miniimagenet": "alexnet84",
}
SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform")
TRAIN_KEYS = (
    "lr",
    "batch_size",
    "epochs",
    "lr_patience",
    "lr_factor",
    "lr_min",
    "momentum",
    "clipgrad",
)


@dataclass(frozen=True)
class SearchLeaf:
    """A searched hyperparameter: ``{grid: [...]}``, ``{choice: [...]}``, ``{uniform: [lo, hi]}``,
    ``{loguniform: [lo, hi]}``."""

    kind: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Resources:
    """Per-trial resources; two 1-CPU trials run at once on a 2-CPU machine."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class FailureInjection:
    """Testing aid: crash every trial once, right after it reports task ``after_task``."""

    after_task: int = 0


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole experiment: one trial per method x hyperparameter setting x seed."""

    name: str
    benchmark: str
    methods: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    network: str
    width: float = 1.0
    fc_width: int | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    train_search: dict[str, SearchLeaf] = field(default_factory=dict)
    """Searched training settings (``train: {lr: {grid: [...]}}``); ``train`` holds their first
    values, which only stand for them in validation."""
    data_dir: str | None = None
    download: bool = True
    tasks: int | None = None
    samples: int = 1
    resources: Resources = field(default_factory=Resources)
    storage: str = "runs"
    max_failures: int = 2
    max_concurrent: int | None = None
    inject_failure: FailureInjection | None = None
    description: str = ""
    rl: Any = None
    """``RlSpec`` (``rl_spec.py``) for RL benchmarks: budgets, evaluation, PPO; None otherwise."""

    @property
    def track(self) -> str:
        """``rl`` for RL task sequences, ``supervised`` otherwise."""
        return "rl" if self.rl is not None else "supervised"

    def smoke(self) -> ExperimentSpec:
        """The same experiment shrunk to seconds: one seed, two tasks, one epoch, tiny Fisher."""
        methods = {}
        for name, hp in self.methods.items():
            hp = dict(hp)
            if name == "blip":
                hp["fisher_batches"] = 2
            methods[name] = hp
        return dataclasses.replace(
            self,
            seeds=self.seeds[:1],
            tasks=min(self.tasks or 2, 2),
            samples=min(self.samples, 2),
            train=dataclasses.replace(self.train, epochs=1),
            train_search={k: v for k, v in self.train_search.items() if k != "epochs"},
            methods=methods,
            rl=self.rl.smoke() if self.rl is not None else None,
        )

    def record(self) -> dict[str, Any]:
        """The spec as plain JSON values: saved with the results, compared on ``--resume``."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


TOP_KEYS = {f.name for f in dataclasses.fields(ExperimentSpec)} - {"train_search"} | {"device"}
REQUIRED = ("name", "benchmark", "methods", "seeds")


class _FloatSafeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-15`` (no dot) as a float, as people write F_prior."""


_FloatSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML spec file."""
    return parse_spec(read_yaml(path, example="a YAML file such as benchmarks/pdigits.yaml"))


def read_yaml(path: str | Path, *, example: str) -> Any:
    """The safe-loaded content of a YAML file; a SpecError names what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise SpecError(f"{path} {problem}; pass {example}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_FloatSafeLoader)  # noqa: S506 (safe)
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file; pass {example}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}") from None


def parse_spec(raw: Any) -> ExperimentSpec:
    """Validate a spec already loaded into Python objects."""
    if not isinstance(raw, dict):
        raise SpecError("spec: expected a mapping of keys (name, benchmark, methods, seeds, ...)")
    _unknown(raw, TOP_KEYS, "spec")
    for key in REQUIRED:
        if key not in raw:
            raise SpecError(f"spec: missing required key '{key}'")
    name = _string(raw["name"], "name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SpecError(f"name: use letters, digits, '.', '_' or '-' only, got {name!r}")
    benchmark = _string(raw["benchmark"], "benchmark")
    from blip_ray.experiments.rl_spec import RL_SEQUENCES, parse_rl

    rl = benchmark in RL_SEQUENCES
    if benchmark not in SEQUENCES and not rl:
        known = ", ".join(sorted([*SEQUENCES, *RL_SEQUENCES]))
        raise SpecError(f"benchmark: unknown {benchmark!r}; known: {known}")
    if not rl and "rl" in raw:
        raise SpecError(f"rl: only RL benchmarks ({', '.join(sorted(RL_SEQUENCES))}) take it")
    network = _string(raw.get("network", DEFAULT_NETWORKS.get(benchmark, "mlp")), "network")
    if network not in MODELS:
        raise SpecError(f"network: unknown {network!r}; known: {', '.join(sorted(MODELS))}")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise SpecError("seeds: expected a non-empty list of integers, e.g. [0, 1, 2]")
    seeds = tuple(_integer(s, f"seeds[{i}]", minimum=0) for i, s in enumerate(seeds))
    if len(set(seeds)) != len(seeds):
        raise SpecError("seeds: the list repeats a seed")
    train, train_search = _train(raw.get("train", {}), raw.get("device", "cpu"))
    return ExperimentSpec(
        name=name,
        benchmark=benchmark,
        network=network,
        seeds=seeds,
        methods=_methods(raw["methods"], rl=rl),
        width=_number(raw.get("width", 1.0), "width", positive=True),
        fc_width=None
        if raw.get("fc_width") is None
        else _integer(raw["fc_width"], "fc_width", minimum=1),
        train=train,
        train_search=train_search,
        data_dir=None if raw.get("data_dir") is None else _string(raw["data_dir"], "data_dir"),
        download=_boolean(raw.get("download", True), "download"),
        tasks=None if raw.get("tasks") is None else _integer(raw["tasks"], "tasks", minimum=1),
        samples=_integer(raw.get("samples", 1), "samples", minimum=1),
        resources=_resources(raw.get("resources", {})),
        storage=_string(raw.get("storage", "runs"), "storage"),
        max_failures=_integer(raw.get("max_failures", 2), "max_failures", minimum=0),
        max_concurrent=None
        if raw.get("max_concurrent") is None
        else _integer(raw["max_concurrent"], "max_concurrent", minimum=1),
        inject_failure=_injection(raw.get("inject_failure")),
        description=str(raw.get("description", "")),
        rl=parse_rl(raw.get("rl"), benchmark) if rl else None,
    )


def _methods(raw: Any, *, rl: bool = False) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not raw:
        raise SpecError(
            "methods: expected a mapping of method name -> hyperparameters, "
            "e.g. {blip: {f_prior: 1e-15}, finetune: {}}"
        )
    out: dict[str, dict[str, Any]] = {}
    registry = _rl_methods() if rl else {name: cls.config_class for name, cls in METHODS.items()}
    for name, hp in raw.items():
        if name not in registry:
            track = "RL " if rl else ""
            raise SpecError(
                f"methods: unknown {track}method {name!r}; known: {', '.join(sorted(registry))}"
            )
        hp = {} if hp is None else hp
        if not isinstance(hp, dict):
            raise SpecError(f"methods.{name}: expected a mapping of hyperparameters, got {hp!r}")
        config_class = registry[name]
        fields = {f.name: f for f in dataclasses.fields(config_class)}
        hints = typing.get_type_hints(config_class)
        _unknown(hp, set(fields), f"methods.{name}")
        parsed = {}
        for key, value in hp.items():
            where = f"methods.{name}.{key}"
            if isinstance(value, dict):
                leaf = _search_leaf(value, where)
                if leaf.kind in ("grid", "choice"):
                    typed = [
                        _typed(v, hints[key], f"{where}.{leaf.kind}[{i}]")
                        for i, v in enumerate(leaf.values)
                    ]
                    leaf = SearchLeaf(leaf.kind, tuple(typed))
                parsed[key] = leaf
            else:
                parsed[key] = _typed(value, hints[key], where)
        try:  # the config's own checks on one representative setting
            config_class(**{k: _representative(v) for k, v in parsed.items()})
        except (TypeError, ValueError) as err:
            raise SpecError(f"methods.{name}: {err}") from None
        out[name] = parsed
    return out


def _rl_methods() -> dict[str, type]:
    """RL method name -> the config class of the shared method it builds on."""
    from blip_ray.rl.methods import RL_METHODS

    return {name: METHODS[entry.method].config_class for name, entry in RL_METHODS.items()}


def _search_leaf(value: dict[str, Any], where: str) -> SearchLeaf:
    if len(value) != 1 or next(iter(value)) not in SEARCH_KINDS:
        raise SpecError(
            f"{where}: a searched value is one of {{grid: [...]}}, {{choice: [...]}}, "
            f"{{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}}; got {value!r}"
        )
    kind, values = next(iter(value.items()))
    if not isinstance(values, list) or not values:
        raise SpecError(f"{where}.{kind}: expected a non-empty list")
    if kind in ("uniform", "loguniform"):
        if len(values) != 2:
            raise SpecError(f"{where}.{kind}: expected [low, high]")
        low, high = (_number(v, f"{where}.{kind}") for v in values)
        if not low < high or (kind == "loguniform" and low <= 0):
            raise SpecError(
                f"{where}.{kind}: need 0 < low < high for loguniform, low < high "
                f"for uniform; got [{low}, {high}]"
            )
        values = [low, high]
    return SearchLeaf(kind, tuple(values))


def _representative(value: Any) -> Any:
    if isinstance(value, SearchLeaf):
        return value.values[0]
    return value


def _typed(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            options = ", ".join(map(str, typing.get_args(hint)))
            raise SpecError(f"{where}: expected one of {options}, got {value!r}")
        return value
    if hint is bool:
        return _boolean(value, where)
    if hint is int:
        return _integer(value, where)
    if hint is float:
        return _number(value, where)
    if hint is str:
        return _string(value, where)
    return value


def _train(raw: Any, device: Any) -> tuple[TrainSettings, dict[str, SearchLeaf]]:
    """Fixed settings, plus the searched ones (checked value by value, e.g. every grid lr > 0)."""
    if not isinstance(raw, dict):
        raise SpecError("train: expected a mapping of training settings")
    _unknown(raw, set(TRAIN_KEYS), "train")
    hints = typing.get_type_hints(TrainSettings)
    values, search = {}, {}
    for key, value in raw.items():
        if isinstance(value, dict):
            leaf = _search_leaf(value, f"train.{key}")
            if leaf.kind not in ("grid", "choice") and hints[key] is not float:
                raise SpecError(f"train.{key}: {leaf.kind} needs a real-valued setting; use grid")
            checked = [
                _train_value(key, v, hints[key], f"train.{key}.{leaf.kind}[{i}]")
                for i, v in enumerate(leaf.values)
            ]
            if leaf.kind in ("grid", "choice"):
                leaf = SearchLeaf(leaf.kind, tuple(checked))
            search[key], values[key] = leaf, checked[0]
        else:
            values[key] = _train_value(key, value, hints[key], f"train.{key}")
    device = _string(device, "device")
    if device not in ("cpu", "cuda", "auto"):
        raise SpecError(f"device: expected cpu, cuda or auto, got {device!r}")
    return TrainSettings(**values, device=device), search


def _train_value(key: str, value: Any, hint: Any, where: str) -> Any:
    value = _typed(value, hint, where)
    if key in ("lr", "batch_size", "epochs", "lr_factor") and not value > 0:
        raise SpecError(f"{where}: must be > 0, got {value}")
    if key in ("lr_patience", "lr_min", "momentum", "clipgrad") and value < 0:
        raise SpecError(f"{where}: must be >= 0, got {value}")
    return value


def _resources(raw: Any) -> Resources:
    if not isinstance(raw, dict):
        raise SpecError("resources: expected a mapping like {cpu: 1, gpu: 0}")
    _unknown(raw, {"cpu", "gpu"}, "resources")
    cpu = _number(raw.get("cpu", 1.0), "resources.cpu", positive=True)
    gpu = _number(raw.get("gpu", 0.0), "resources.gpu")
    if gpu < 0:
        raise SpecError(f"resources.gpu: must be >= 0, got {gpu}")
    return Resources(cpu=cpu, gpu=gpu)


def _injection(raw: Any) -> FailureInjection | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecError("inject_failure: expected a mapping like {after_task: 0}")
    _unknown(raw, {"after_task"}, "inject_failure")
    return FailureInjection(
        _integer(raw.get("after_task", 0), "inject_failure.after_task", minimum=0)
    )


def _unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    for key in raw:
        if key not in known:
            raise SpecError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: expected true or false, got {value!r}")
    return value


def _integer(value: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    if positive and not value > 0:
        raise SpecError(f"{where}: must be > 0, got {value}")
    return float(value)
