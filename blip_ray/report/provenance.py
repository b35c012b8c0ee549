"""report.md's Provenance section, from the experiment's provenance record (a plain mapping with
one entry per run segment; :mod:`blip_ray.experiments.run.provenance` writes it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from blip_ray.records.layout import PROVENANCE_FILE

#: Keys of a segment that say what ran the trials; earlier segments differing in one are named.
ENVIRONMENT_KEYS = ("code", "packages", "machine")


def provenance_lines(record: Mapping[str, Any] | None) -> list[str]:
    """The section's lines (none without a record): the latest segment's code, packages, machine,
    cluster and flags, and how many segments the run took."""
    segments = list((record or {}).get("segments") or [])
    if not segments:
        return []
    latest = segments[-1]
    code, cluster = latest.get("code", {}), latest.get("cluster", {})
    packages = ", ".join(
        f"{'Python' if name == 'python' else name} {v}"
        for name, v in latest.get("packages", {}).items()
    )
    return [
        *("", "## Provenance", ""),
        f"- Code: blip-ray {code.get('version', '?')}, {_commit(code)}.",
        f"- Packages: {packages or 'not recorded'}.",
        f"- Machine: {_machine(latest.get('machine', {}))}.",
        f"- Ray: {_cluster(cluster, latest.get('flags', {}).get('address'))}.",
        f"- Flags: {_flags(latest.get('flags', {}))}.",
        f"- Segments: {_segments(segments)}.",
        *_selection(latest.get("selection")),
        f"- The resolved spec and every method's settings, per segment: {PROVENANCE_FILE}.",
    ]


def _selection(selection: Mapping[str, Any] | None) -> list[str]:
    """A final stage's line: how its configurations were chosen."""
    if not selection:
        return []
    seeds = ", ".join(map(str, selection.get("search_seeds", [])))
    chosen = "; ".join(
        f"{method} {entry.get('score', float('nan')):.3f}"
        for method, entry in selection.get("methods", {}).items()
    )
    return [
        f"- Selection: {selection.get('algorithm')} search, budget {selection.get('budget')} "
        f"per method, validation {selection.get('metric')} on search seeds {seeds} "
        f"({selection.get('tasks_searched')} of {selection.get('tasks')} tasks); chosen "
        f"configurations' validation scores: {chosen}."
    ]


def _commit(code: Mapping[str, Any]) -> str:
    if not code.get("commit"):
        return "commit unknown (not run from a git checkout)"
    return f"commit {code['commit'][:12]}" + (" with uncommitted changes" * bool(code.get("dirty")))


def _machine(machine: Mapping[str, Any]) -> str:
    gpus = Counter(machine.get("gpus") or [])
    gpu_text = ", ".join(f"{n} x {name}" for name, n in gpus.items()) or "no GPU"
    cpus = _count(machine["cpus"], "CPU") if machine.get("cpus") else "CPUs unknown"
    return f"{machine.get('hostname', '?')} ({machine.get('os', '?')}), {cpus}, {gpu_text}"


def _cluster(cluster: Mapping[str, Any], address: str | None) -> str:
    where = "embedded local instance" if cluster.get("embedded") else f"cluster at {address}"
    counts = (_count(cluster.get(key, 0), word) for key, word in _CLUSTER_WORDS)
    return ", ".join([where, *counts])


_CLUSTER_WORDS = (("nodes", "node"), ("cpus", "CPU"), ("gpus", "GPU"))


def _count(number: float, word: str) -> str:
    return f"{number:g} {word}{'s' * (number != 1)}"


def _flags(flags: Mapping[str, Any]) -> str:
    """The flags as given on the command line (``--smoke --name e``); ``none`` without any."""
    words = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value not in (None, False):
            words.append(f"{flag} {value}")
    return f"`{' '.join(words)}`" if words else "none"


def _segments(segments: list[Mapping[str, Any]]) -> str:
    """How the run was split (started, each resume) and which segments ran elsewhere."""
    count = len(segments)
    text = f"{count} (started {segments[0].get('started', '?')}"
    if count > 1:
        text += f", last resumed {segments[-1].get('started', '?')}"
    interrupted = sum(bool(s.get("interrupted")) for s in segments)
    unfinished = sum(s.get("wall_s") is None for s in segments)
    text += f"; {interrupted} interrupted" * bool(interrupted)
    text += f"; {unfinished} ended without recording its time" * bool(unfinished)
    text += ")"
    latest = segments[-1]
    other = [
        str(index + 1)
        for index, segment in enumerate(segments[:-1])
        if any(segment.get(key) != latest.get(key) for key in ENVIRONMENT_KEYS)
    ]
    if other:
        text += f"; segment {', '.join(other)} ran other code, packages or machine than the last"
    return text
