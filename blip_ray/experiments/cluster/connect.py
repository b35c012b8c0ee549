"""Reaching Ray: an existing cluster (``--address`` / ``RAY_ADDRESS``) or an embedded instance.

The embedded instance runs in a session of its own (embedded.py), so a signal to the driver's
process group stops the experiment, not Ray; ``release_ray`` ends it once the run is saved.

Bad addresses fail in seconds with one line (``ray.init`` alone can wait a minute on an address
nobody answers). Clusters started with ``ray start`` use token authentication: a driver given an
explicit address sends the token only with ``RAY_AUTH_MODE=token`` set, so a refusal says that.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import ray

from blip_ray.errors import UserError
from blip_ray.experiments.cluster.embedded import EmbeddedRay
from blip_ray.experiments.specs.experiment import ExperimentSpec

CONNECT_TIMEOUT_S = 5.0
"""How long the TCP probe of a cluster address may wait before the run gives up."""

_embedded: EmbeddedRay | None = None
"""The embedded instance this process started and is connected to, if any."""


def init_ray(address: str | None, *, runtime_env: dict[str, Any] | None = None) -> None:
    """Attach to ``address`` (or RAY_ADDRESS), or start an embedded instance on loopback.

    An already initialized Ray (a test session, a notebook) is reused; an explicit address is
    still checked, so a typo fails instead of being ignored. ``runtime_env`` applies to every
    worker of this driver (the plugins' import hook); a reused Ray keeps its own. The caller's
    SIGTERM handler stays in place of the one ``ray.init`` installs (exit at once).
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "local"):
        check_reachable(address)
    if ray.is_initialized():
        return
    with _callers_sigterm_handler():
        if address in (None, "local"):
            _start_embedded(runtime_env)
            return
        try:
            ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
        except Exception as err:  # ConnectionError, RuntimeError, AuthenticationError, ...
            raise UserError(_connect_failure(address, err)) from None


@contextlib.contextmanager
def _callers_sigterm_handler() -> Iterator[None]:
    """Put back the SIGTERM handler ``ray.init`` replaces: blip-ray's stops like Ctrl+C, so Tune
    saves the experiment; Ray's would exit the driver at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, nothing to put back
            signal.signal(signal.SIGTERM, previous)


def _start_embedded(runtime_env: dict[str, Any] | None) -> None:
    global _embedded
    _embedded = EmbeddedRay.start(num_cpus=os.cpu_count() or 1)
    atexit.unregister(release_ray)  # registered once however often Ray is started
    atexit.register(release_ray)  # a driver that never calls release_ray still ends it
    try:
        ray.init(
            address=_embedded.address,
            _node_ip_address="127.0.0.1",
            configure_logging=False,
            log_to_driver=False,
            runtime_env=runtime_env,
        )
    except BaseException:
        release_ray()
        raise


def release_ray() -> None:
    """Disconnect from the embedded instance and stop it, if this process started one. A cluster
    given by address is left connected and running: it is not this run's to end."""
    global _embedded
    embedded, _embedded = _embedded, None
    if embedded is None:
        return
    ray.shutdown()
    embedded.stop()


def check_reachable(address: str) -> None:
    """Fail fast, with one line, unless something listens where ``ray.init(address)`` dials."""
    if address.startswith(("http://", "https://")):
        raise UserError(
            f"--address {address}: that is the dashboard (job) address; `blip-ray run` needs "
            "the cluster address host:port (port 6379 by default), or submit with `ray job submit`"
        )
    dialed = address.removeprefix("ray://") if "://" in address else _bootstrap(address)
    host, _, port = dialed.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected host:port, e.g. 10.0.0.5:6379, or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        via = f" (dialled as {dialed})" if dialed != address else ""
        raise UserError(
            f"cannot reach the Ray cluster at {address}{via}: {err.strerror or 'no answer'}; "
            "start one with `ray start --head` or check --address / RAY_ADDRESS"
        ) from None


def _bootstrap(address: str) -> str:
    """What ``ray.init`` dials for ``address``: ``auto`` becomes this machine's latest cluster
    (a stale record of a stopped one would make ``ray.init`` hang), and a loopback host the
    machine's interface address unless Ray's single-machine mode is on."""
    from ray._private.services import canonicalize_bootstrap_address  # what ray.init calls

    try:
        return canonicalize_bootstrap_address(address) or address
    except ConnectionError as err:  # "auto" and nothing running
        raise UserError(f"--address {address}: {str(err).split('. ')[0]}") from None
    except ValueError:  # no port
        raise UserError(
            f"--address {address}: expected host:port, e.g. 10.0.0.5:6379, or auto"
        ) from None


def _connect_failure(address: str, err: Exception) -> str:
    text = " ".join(str(err).split())
    if "authentication" in text.lower() or "token" in text.lower():
        return (
            f"the Ray cluster at {address} refused this driver's authentication; export "
            "RAY_AUTH_MODE=token and make the cluster's token available (RAY_AUTH_TOKEN_PATH "
            "or ~/.ray/auth_token)"
        )
    first = text.split(". ")[0][:300]
    return f"cannot connect to the Ray cluster at {address}: {first}"


def check_resources(spec: ExperimentSpec) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: refuse it."""
    available = ray.cluster_resources()
    for key, need in (("CPU", spec.resources.cpu), ("GPU", spec.resources.gpu)):
        have = available.get(key, 0.0)
        if need > have:
            raise UserError(
                f"resources.{key.lower()}: a trial asks for {need:g} {key} but the "
                f"cluster has {have:g}; lower it in the spec"
            )
