"""What produced an experiment's numbers: the resolved spec, the flags, the code, the packages and
the machine of every run segment (the first run and each ``--resume``), kept next to the results
in :data:`~blip_ray.records.layout.PROVENANCE_FILE` (written there by ``records.layout``). No Ray:
the driver passes the cluster in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import blip_ray
from blip_ray import __version__
from blip_ray.experiments.specs.experiment import ExperimentSpec
from blip_ray.methods import METHODS
from blip_ray.records.layout import add_segment
from blip_ray.rl.sequences import find_rl_sequence

PACKAGES = ("torch", "ray", "gymnasium", "ale-py", "minatar", "numpy")
"""Distributions whose versions are recorded (those installed)."""


def start_segment(
    experiment_dir: Path,
    spec: ExperimentSpec,
    *,
    resumed: bool,
    flags: Mapping[str, Any],
    cluster: Mapping[str, Any],
    selection: Mapping[str, Any] | None = None,
) -> None:
    """Append this run segment's provenance to the experiment's record (not finished yet);
    ``selection``: how a search chose the configurations it runs."""
    segment = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed": resumed,
        "wall_s": None,  # filled in by finish_segment; stays None if the driver was killed
        "interrupted": None,
        "flags": dict(flags),
        "spec": spec.record(),
        "method_settings": method_settings(spec),
        "code": code_version(),
        "packages": package_versions(),
        "machine": machine(),
        "cluster": dict(cluster),
    }
    if selection is not None:
        segment["selection"] = dict(selection)
    add_segment(experiment_dir, segment)


def method_settings(spec: ExperimentSpec) -> dict[str, dict[str, Any]]:
    """Every hyperparameter of each method as the trials start from it: the config's defaults,
    then the RL sequence's own defaults, then the spec's values (searched ones as their search)."""
    sequence = find_rl_sequence(spec.benchmark) if spec.track == "rl" else None
    track_defaults = sequence.method_defaults if sequence is not None else {}
    settings = {}
    for name, values in spec.methods.items():
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(METHODS[name].config_class)
            if f.default is not dataclasses.MISSING
        }
        settings[name] = {**defaults, **track_defaults.get(name, {}), **values}
    return json.loads(json.dumps(settings, default=_plain))


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)


def code_version(package: Path | None = None) -> dict[str, Any]:
    """blip-ray's version and, when the package (default: this one's directory) runs from a git
    checkout, its commit and whether tracked files differ from it (``commit`` None otherwise)."""
    package = package or Path(blip_ray.__file__).resolve().parent
    found = {"version": __version__, "commit": None, "dirty": None}
    # The package must be tracked by the repository git finds: an installed copy inside some other
    # checkout (a virtual environment in a project) is not that project's code.
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return found
    commit = _git(package, "rev-parse", "HEAD")
    status = _git(package, "status", "--porcelain", "--untracked-files=no")
    if commit is not None:
        found.update(commit=commit, dirty=None if status is None else bool(status))
    return found


def _git(where: Path, *args: str) -> str | None:
    """``git args`` run in ``where``: its output, or None without git or outside a checkout."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def package_versions() -> dict[str, str]:
    """Python's version and each installed distribution of :data:`PACKAGES`."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, Any]:
    """The driver's machine: host name, operating system, CPUs and the GPUs torch sees."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpus": os.cpu_count(),
        "gpus": gpus,
    }
