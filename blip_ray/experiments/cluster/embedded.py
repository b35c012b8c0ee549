"""The embedded Ray instance: a head on loopback in a session of its own, stopped with the run.

``timeout``, SLURM and systemd stop a job by signalling its whole process group. Had the driver
started Ray itself (``ray.init()``), the GCS and raylet would be in that group: the SIGTERM meant
for the driver would kill them too, before Tune could save the experiment, and the driver would
wait a minute for the GCS and exit without a report. So a small holder process, started in a new
session where no signal to the driver's group reaches, starts the head with ``ray.init`` and the
driver connects to it like to any cluster. The holder ends the instance when the driver closes its
stdin, or dies (the kernel then closes the pipe), and kills whatever is left of its session.

Run as ``python -m blip_ray.experiments.cluster.embedded NUM_CPUS``: the holder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Any

from blip_ray.errors import UserError

ADDRESS_LINE = "embedded Ray head at "
"""What the holder prints, followed by the GCS address, once the head is up."""

STOP_TIMEOUT_S = 30.0
"""How long a stop waits for the holder to shut Ray down before killing its session."""


def head_init_kwargs(num_cpus: int) -> dict[str, Any]:
    """``ray.init``'s arguments in the holder: a new instance with every address on loopback
    (the machine's interface address is never advertised), no dashboard, and Ray's logs kept in
    its session directory rather than on the console."""
    return {
        "address": "local",
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "dashboard_host": "127.0.0.1",
        "_node_ip_address": "127.0.0.1",
        "configure_logging": False,
        "log_to_driver": False,
    }


class EmbeddedRay:
    """A running embedded head: its GCS ``address`` and the holder that owns it."""

    def __init__(self, holder: subprocess.Popen, address: str) -> None:
        self.holder = holder
        self.address = address

    @classmethod
    def start(cls, num_cpus: int) -> EmbeddedRay:
        """Start the holder and wait until its head answers; raise UserError if it cannot."""
        _token_auth_as_ray_init_does()
        holder = subprocess.Popen(
            [sys.executable, "-m", __name__, str(num_cpus)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # out of reach of signals to the driver's process group
        )
        try:
            line = holder.stdout.readline()
        except BaseException:  # interrupted while the head starts
            _kill(holder)
            raise
        holder.stdout.close()
        if not line.startswith(ADDRESS_LINE):
            _kill(holder)
            raise UserError(
                f"the embedded Ray instance did not start (exit code {holder.returncode}); "
                "Ray's message is above"
            )
        return cls(holder, line.removeprefix(ADDRESS_LINE).strip())

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Let the holder shut Ray down; kill its whole session if that takes too long."""
        with contextlib.suppress(OSError):
            self.holder.stdin.close()
        try:
            self.holder.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(self.holder)


def _token_auth_as_ray_init_does() -> None:
    """Token authentication on unless RAY_AUTH_MODE says otherwise, a token made if none
    exists: what ``ray.init()`` does for a new local instance. Set here, in the driver, so the
    holder inherits the mode and the driver presents the token when it connects."""
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default,
        ensure_token_if_auth_enabled,
    )

    enable_token_auth_by_default()
    ensure_token_if_auth_enabled({}, create_token_if_missing=True)


def _kill(holder: subprocess.Popen) -> None:
    """Kill the holder's session: the holder, the GCS, the raylet and every worker. The holder
    is not reaped before, so its session id cannot have been reused."""
    if holder.poll() is None:
        kill_session(holder.pid)
    holder.wait()


def kill_session(session: int, *, spare: int | None = None) -> None:
    """SIGKILL every process of ``session`` (but ``spare``). Ray's workers lead process groups of
    their own, so killing the holder's group would miss them; the session holds them all."""
    if not os.path.isdir("/proc"):  # no process table to read: the group, workers die with it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(session, signal.SIGKILL)
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == spare:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getsid(int(entry)) == session:
                os.kill(int(entry), signal.SIGKILL)


def _hold(num_cpus: int) -> None:
    """The holder: start the head, say where it is, keep it until stdin closes, then end it."""
    import ray

    # Ray's processes inherit stdout: give them /dev/null, so none writes into the driver's pipe
    # (or blocks once it is full), and keep the pipe for the one line the driver waits for.
    to_driver = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    context = ray.init(**head_init_kwargs(num_cpus))
    to_driver.write(ADDRESS_LINE + context.address_info["gcs_address"] + "\n")
    to_driver.close()
    sys.stdin.read()  # returns when the driver closes the pipe or dies
    ray.shutdown()
    kill_session(os.getsid(0), spare=os.getpid())  # anything ray.shutdown left behind


if __name__ == "__main__":
    _hold(int(sys.argv[1]))
