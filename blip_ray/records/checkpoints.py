"""A manifest in each task checkpoint (file sizes and SHA-256), so a truncated or garbled
checkpoint is found before ``--resume`` hands it to a trial, not as a failure deep inside it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from blip_ray.records.layout import UnreadableFile, read_json, write_json

MANIFEST = "blip_ray_manifest.json"
"""In a checkpoint directory: each of its files' size and SHA-256, relative path -> entry."""


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(checkpoint: Path) -> list[Path]:
    return sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(checkpoint: Path) -> None:
    """Record every file of the (complete) checkpoint directory ``checkpoint``."""
    entries = {
        str(path.relative_to(checkpoint)): {"bytes": path.stat().st_size, "sha256": _digest(path)}
        for path in _files(checkpoint)
    }
    write_json(checkpoint / MANIFEST, entries)


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why the checkpoint directory is not as it was written (a file missing, cut short or
    changed; an unreadable manifest), naming the file; None where it is whole or predates the
    manifest."""
    try:
        entries = read_json(checkpoint / MANIFEST)
    except UnreadableFile as err:
        return str(err)
    if entries is None:
        return None
    for name, entry in entries.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{path}: is missing"
        if path.stat().st_size != entry["bytes"] or _digest(path) != entry["sha256"]:
            return f"{path}: differs from what was written (truncated or garbled)"
    return None
