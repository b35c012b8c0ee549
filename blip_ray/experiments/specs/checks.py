"""The YAML reader and the one-line checks of single values that experiment specs are built from.

Every failure is a :class:`SpecError` whose message starts with the key it is about.
"""

from __future__ import annotations

import itertools
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blip_ray.errors import UserError

SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform")


class SpecError(UserError):
    """A malformed experiment spec; the message is one line naming the key and the fix."""


@dataclass(frozen=True)
class SearchLeaf:
    """A searched hyperparameter: ``{grid: [...]}``, ``{choice: [...]}``, ``{uniform: [lo, hi]}``,
    ``{loguniform: [lo, hi]}``."""

    kind: str
    """One of :data:`SEARCH_KINDS`."""
    values: tuple[Any, ...]
    """The listed values, typed; a range's two ends."""


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would keep the last one silently) and reads
    ``1e-15`` (no dot) as a float, as people write F_prior."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            if (key.tag, key.value) in first:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key.value!r} (first at line "
                    f"{first[key.tag, key.value]}); keep one of them",
                    problem_mark=key.start_mark,
                )
            first[key.tag, key.value] = key.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _safe_load(text: str) -> Any:
    """``text`` through :class:`_SpecLoader`, a SafeLoader (no arbitrary Python objects)."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path, *, example: str) -> Any:
    """The safe-loaded content of a YAML file; a SpecError names what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise SpecError(f"{path} {problem}; pass {example}")
    try:
        return _safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file; pass {example}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', err)}") from None


def unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    for key in raw:
        if key not in known:
            raise SpecError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")


def searchable(value: Any, hint: Any, where: str) -> Any:
    """A value of type ``hint``, or a :class:`SearchLeaf` whose every value (or end) is one."""
    if not isinstance(value, dict):
        return typed(value, hint, where)
    if len(value) != 1 or next(iter(value)) not in SEARCH_KINDS:
        raise SpecError(
            f"{where}: a searched value is one of {{grid: [...]}}, {{choice: [...]}}, "
            f"{{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}}; got {value!r}"
        )
    kind, values = next(iter(value.items()))
    if not isinstance(values, list) or not values:
        raise SpecError(f"{where}.{kind}: expected a non-empty list")
    if kind in ("grid", "choice"):
        return SearchLeaf(
            kind, tuple(typed(v, hint, f"{where}.{kind}[{i}]") for i, v in enumerate(values))
        )
    if hint is not float:
        raise SpecError(f"{where}: {kind} needs a real-valued setting; use grid")
    if len(values) != 2:
        raise SpecError(f"{where}.{kind}: expected [low, high]")
    low, high = (number(v, f"{where}.{kind}") for v in values)
    if not low < high or (kind == "loguniform" and low <= 0):
        raise SpecError(
            f"{where}.{kind}: need 0 < low < high for loguniform, low < high for uniform; "
            f"got [{low}, {high}]"
        )
    return SearchLeaf(kind, (low, high))


def optional(check: Callable[..., Any], raw: dict[str, Any], key: str, **rule: Any) -> Any:
    """``raw[key]`` through ``check`` (e.g. :func:`integer`), or None when it is missing or null."""
    return None if raw.get(key) is None else check(raw[key], key, **rule)


def typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a dataclass field's type (Literal, bool, int, float, str)."""
    if typing.get_origin(hint) is typing.Literal:
        if value not in typing.get_args(hint):
            options = ", ".join(map(str, typing.get_args(hint)))
            raise SpecError(f"{where}: expected one of {options}, got {value!r}")
        return value
    check = {bool: boolean, int: integer, float: number, str: string}.get(hint)
    return value if check is None else check(value, where)


def string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}: expected true or false, got {value!r}")
    return value


def integer(value: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{where}: must be >= {minimum}, got {value}")
    return value


def seed_list(value: Any, where: str, *, example: str) -> tuple[int, ...]:
    """A non-empty list of distinct seeds (integers >= 0)."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: expected a non-empty list of integers, e.g. {example}")
    seeds = tuple(integer(s, f"{where}[{i}]", minimum=0) for i, s in enumerate(value))
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: the list repeats a seed")
    return seeds


def number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    if positive and not value > 0:
        raise SpecError(f"{where}: must be > 0, got {value}")
    return float(value)


def each_setting(config_class: type, values: dict[str, Any], where: str) -> None:
    """The config's own checks on every combination of searched values (both ends of a range):
    each config a trial could build. Its one-line ValueError names the field."""
    choices = [v.values if isinstance(v, SearchLeaf) else (v,) for v in values.values()]
    for combination in itertools.product(*choices):
        try:
            config_class(**dict(zip(values, combination, strict=True)))
        except ValueError as err:
            raise SpecError(f"{where}.{err}") from None
