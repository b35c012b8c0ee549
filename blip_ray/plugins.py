"""Plugins: a user's own modules, imported so that what they register runs like the built-ins.

A plugin is a module name (``mypkg.methods``) or a Python file (``./my_bench.py``) whose import
registers methods (``@register_method``), supervised benchmarks (``@register_sequence``), RL
sequences (``register_rl_sequence``) or networks (``@register_model``). ``blip-ray`` imports the
plugins of the spec's ``plugins:`` key and of ``--plugin`` before it validates the spec, and every
Ray worker imports them before it runs anything (:func:`worker_runtime_env`: Ray's worker setup
hook reads them from an environment variable), so trials, RLlib's env runners and a cluster's
other nodes know the same names as the driver.

A file is imported under a name derived from the path as given, the same in every process. Each
process looks for it at the absolute path the driver resolved and, where that does not exist (a
cluster node with the job's working directory unpacked elsewhere), relative to its own working
directory.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: The plugins of the run, as JSON ``[[given, absolute path or null], ...]``, for the workers.
PLUGINS_ENV = "BLIP_RAY_PLUGINS"
#: What Ray's worker setup hook calls in each new worker process.
SETUP_HOOK = "blip_ray.plugins.setup_worker"

_LOADED: dict[str, ModuleType] = {}


class PluginError(ValueError):
    """A plugin that cannot be imported; the message is one line."""


def is_file(plugin: str) -> bool:
    """Whether ``plugin`` names a Python file (rather than an importable module)."""
    return plugin.endswith(".py") or "/" in plugin or os.sep in plugin


def resolve(plugins: Sequence[str]) -> list[list[str | None]]:
    """``[given, absolute path]`` per plugin (the path None for a module name), as the driver
    sees them: what :data:`PLUGINS_ENV` carries to the workers."""
    return [
        [name, str(Path(name).expanduser().resolve()) if is_file(name) else None]
        for name in plugins
    ]


def load_plugins(plugins: Sequence[str], *, absolute: Sequence[str | None] = ()) -> None:
    """Import each plugin once per process; a failure raises :class:`PluginError` naming it."""
    paths = list(absolute) + [None] * (len(plugins) - len(absolute))
    for name, path in zip(plugins, paths, strict=True):
        if name not in _LOADED:
            _LOADED[name] = _import(name, path)


def _import(name: str, absolute: str | None) -> ModuleType:
    try:
        if not is_file(name):
            return importlib.import_module(name)
        path = Path(absolute) if absolute and Path(absolute).is_file() else Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no such file {str(path)!r}")
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        module_name = f"blip_ray_plugin_{path.stem}_{digest}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module
    except Exception as err:  # the plugin's own error, whatever it is, in one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise PluginError(
            f"plugin {name}: {type(err).__name__}: {first}; check that it imports on its own "
            f"(python -c 'import ...' or python {name})"
        ) from None


def worker_runtime_env(plugins: Sequence[str]) -> dict[str, Any] | None:
    """Ray's runtime environment that makes every worker import ``plugins`` (None: no plugins)."""
    if not plugins:
        return None
    return {
        "env_vars": {PLUGINS_ENV: json.dumps(resolve(plugins))},
        "worker_process_setup_hook": SETUP_HOOK,
    }


def load_resolved(entries: Sequence[Sequence[str | None]]) -> None:
    """Import plugins as :func:`resolve` wrote them (``[given, absolute path]`` each)."""
    load_plugins([given for given, _ in entries], absolute=[path for _, path in entries])


def setup_worker() -> None:
    """Ray's worker setup hook: import the run's plugins (:data:`PLUGINS_ENV`)."""
    load_resolved(json.loads(os.environ.get(PLUGINS_ENV) or "[]"))
