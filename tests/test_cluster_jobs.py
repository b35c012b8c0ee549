"""The README's cluster path, for real: ``ray start --head`` (token auth on), ``ray job submit``.

A head started as the README says; a smoke run of the default spec submitted as a job with the
repository as its working_dir, followed with ``ray job logs -f``, its report read back from the
storage path; then a submission without the token, and one with a wrong token, refused.

The head runs in its own session, so the test stops exactly what it started (never ``ray stop``,
which stops every Ray instance of the machine). Its ports are free ones, its temp dir is the
test's, the dashboard binds 127.0.0.1 and the head advertises 127.0.0.1: ray 2.60's ``ray start``
turns ``--node-ip-address=127.0.0.1`` into the machine's interface address unless its
single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) is on, which the test sets.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from blip_ray.experiments.specs.experiment import load_spec

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Head:
    """A head started by ``ray start`` in a new session; ``env``: token settings, venv PATH."""

    root: Path
    token: str
    env: dict[str, str]
    dashboard: str
    session: int = 0

    def ray(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "ray"), *args],
            env=self.env if env is None else env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self) -> None:
        dashboard_port = self.dashboard.rpartition(":")[2]
        command = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1"]
        command += [f"--port={free_port()}", "--dashboard-host=127.0.0.1"]
        command += [f"--dashboard-port={dashboard_port}", f"--temp-dir={self.root / 'ray'}"]
        command += ["--num-cpus=2", "--disable-usage-stats", "--object-store-memory=200000000"]
        # Fixed defaults (10001, 52365) would collide with other Ray instances of the machine.
        command += [f"--ray-client-server-port={free_port()}"]
        command += [f"--dashboard-agent-listen-port={free_port()}"]
        process = subprocess.Popen(
            command,
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the head's daemons and workers share it, nothing else does
        )
        self.session = process.pid
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output[-3000:]

    def stop(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, 2), (signal.SIGKILL, 10)):
            for pid in _session_pids(self.session):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while _session_pids(self.session) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


def _session_pids(session: int) -> list[int]:
    """A session's processes: Ray's daemons and its workers (which set their own process group,
    so signalling the ``ray start`` process group alone would miss them)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[3]) == session:
                pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def head():
    # A short root: Ray's socket paths must stay under the 107-byte AF_UNIX limit.
    root = Path(tempfile.mkdtemp(prefix="br-"))
    token = secrets.token_hex(32)
    (root / "token").write_text(token)
    (root / "token").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(root / "token"),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # advertise 127.0.0.1, not the interface
        RAY_TMPDIR=str(root),  # Ray's "current cluster" file stays in the test's directory
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # as with an activated venv
    )
    started = Head(root, token, env, dashboard=f"http://127.0.0.1:{free_port()}")
    try:
        started.start()
        yield started
    finally:
        started.stop()


def test_job_submit_runs_the_smoke_spec_and_the_report_comes_back(head):
    storage = head.root / "runs"
    entrypoint = "blip-ray run benchmarks/pdigits.yaml --smoke --quiet --name smoke --storage"
    submitted = _submit(head, "blip-smoke", *entrypoint.split(), str(storage))
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    followed = head.ray("job", "logs", "-f", "blip-smoke", "--address", head.dashboard)
    status = head.ray("job", "status", "blip-smoke", "--address", head.dashboard)
    assert "Job 'blip-smoke' succeeded" in status.stdout, followed.stdout[-3000:]
    assert "report:" in followed.stdout
    # a run with search: its trials' summary is its final stage's
    with open(storage / "smoke" / "final" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    methods = load_spec("benchmarks/pdigits.yaml").methods  # one smoke trial per method
    assert sorted(r["method"] for r in rows) == sorted(methods)
    assert all(r["status"] == "ok" for r in rows)
    assert (storage / "smoke" / "report.md").read_text().startswith("# pdigits")
    listed = head.ray("list", "nodes", "--address", head.dashboard, "--format", "json")
    assert [node["node_ip"] for node in json.loads(listed.stdout)] == ["127.0.0.1"]
    # The working_dir upload honoured .gitignore: the repository's .venv stayed home.
    (package,) = (head.root / "ray/session_latest/runtime_resources").glob("working_dir_files/*/")
    assert (package / "blip_ray").is_dir() and not (package / ".venv").exists()
    size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    assert size < 20e6, size
    # No secret in what the run wrote, in the job's logs, or in the cluster's own logs.
    for path in [*storage.rglob("*"), *(head.root / "ray/session_latest/logs").rglob("*")]:
        if path.is_file():
            assert head.token.encode() not in path.read_bytes(), path
    assert head.token not in followed.stdout + followed.stderr


def test_a_submission_without_the_token_is_refused(head):
    anonymous = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    anonymous["HOME"] = str(head.root / "home")  # no ~/.ray/auth_token to fall back on
    refused = _submit(head, "anonymous", "echo", "hi", env=anonymous)
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr[-2000:]
    wrong = {**anonymous, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = _submit(head, "wrong-token", "echo", "hi", env=wrong)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr[-2000:]
    listed = head.ray("job", "list", "--address", head.dashboard)
    assert listed.returncode == 0 and "blip-smoke" in listed.stdout
    assert "anonymous" not in listed.stdout and "wrong-token" not in listed.stdout


def _submit(head: Head, job_id: str, *entrypoint: str, env: dict[str, str] | None = None):
    """``ray job submit --no-wait``, retried while the head's job agent is still registering."""
    command = ["job", "submit", "--address", head.dashboard, "--submission-id", job_id]
    command += ["--working-dir", str(REPO), "--no-wait", "--", *entrypoint]
    for _ in range(10):
        submitted = head.ray(*command, env=env)
        if "No available agent" not in submitted.stderr:
            break
        time.sleep(2)
    return submitted
