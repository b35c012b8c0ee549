"""Several Ray nodes on 127.0.0.1; one dies mid-run and nothing finished is lost or changed.

A head (1 CPU) and a worker node (1 CPU) from ``ray.cluster_utils.Cluster``, every node given
127.0.0.1 and kept there (the nodes start in-process, so Ray does not swap in the machine's
interface address), token authentication on. Four trials run two at a time, one per node; the
worker node is killed once it has reported a task. Its trial is retried from its last checkpoint
on the head, and every trial's accuracy matrix equals an uninterrupted run's with the same seeds.

The cluster and its driver (``run_experiment`` with the cluster's address, what ``blip-ray run
--address`` calls) run in a subprocess -- this file, run as a script -- because the test process
already holds the session's Ray instance. All nodes share this machine's disk, so checkpoints under
an absolute ``--storage`` reach the surviving node; on machines of their own they need shared
storage (README, "Running on a cluster").
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from cl_fixtures import grid_spec

from blip_ray.experiments.run.launch import run_experiment
from blip_ray.experiments.specs.experiment import load_spec
from blip_ray.records.trials import load_trials, task_rows

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.ray]

SPEC = grid_spec("nodes", "max_failures: 2")


def test_a_dead_worker_node_costs_no_finished_task_and_changes_no_number(
    ray_session, tmp_path, request
):
    spec = tmp_path / "nodes.yaml"
    spec.write_text(SPEC)
    reference = run_experiment(load_spec(spec), storage=str(tmp_path / "reference"), verbose=0)
    expected = {(t.method, t.seed): t.matrix for t in load_trials(reference.experiment_dir)}

    # Short root: Ray's socket paths must stay under the 107-byte AF_UNIX limit.
    root = Path(tempfile.mkdtemp(prefix="br-"))
    (root / "token").write_text(secrets.token_hex(32))
    (root / "token").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(root / "token"),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # the driver resolves 127.0.0.1 to 127.0.0.1
        RAY_TMPDIR=str(root),  # Ray's "current cluster" file stays in the test's directory
    )
    out, log = root / "outcome.json", tmp_path / "driver.log"
    command = [sys.executable, __file__, str(spec), str(root / "runs"), str(out)]
    with open(log, "w") as sink:
        driver = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        assert driver.wait(timeout=400) == 0, log.read_text()[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the cluster too, if the driver hung
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    outcome = json.loads(out.read_text())
    experiment = root / "runs" / "nodes"

    rows = {p.parent.name: _rows(p) for p in experiment.glob("*/result.json")}
    node_ids = {row["node_id"] for trial in rows.values() for row in trial}
    assert node_ids == {outcome["head"], outcome["worker"]}  # trials ran on both nodes
    worker_rows = [r for t in rows.values() for r in t if r["node_id"] == outcome["worker"]]
    # Nothing ran there after the kill: every worker row was made (its trainable's timestamp, whole
    # seconds) by then. A row already on its way to the driver may be written after the count.
    assert len(worker_rows) >= outcome["worker_rows_at_kill"] > 0
    assert max(row["timestamp"] for row in worker_rows) <= outcome["killed_at"]
    moved = [t for t in rows.values() if t[0]["node_id"] == outcome["worker"]]
    assert moved and all(t[-1]["node_id"] == outcome["head"] for t in moved)
    assert all(t[-1]["tasks_done"] == 3 for t in moved)
    for trial, tasks in task_rows(experiment).items():
        assert tasks == [0, 1, 2], f"{trial} redid a task: {tasks}"
    trials = load_trials(experiment)
    assert outcome["failed"] == 0 and all(t.status == "ok" for t in trials)
    assert {(t.method, t.seed): t.matrix for t in trials} == expected
    assert _summary(experiment) == _summary(reference.experiment_dir)


def _summary(experiment: Path) -> dict[tuple[str, str], dict[str, str]]:
    """summary.csv by (method, seed), without the trial ids that differ between runs."""
    with open(experiment / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    return {(r.pop("method"), r.pop("seed")): r for r in rows if r.pop("trial_id")}


def _rows(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a row still being written
            out.append(json.loads(line))
    return out


def _rows_from(experiment: Path, node_id: str) -> int:
    return sum(
        row.get("node_id") == node_id
        for path in experiment.glob("*/result.json")
        for row in _rows(path)
    )


def _kill_node(cluster, node) -> None:
    """Every process of the node at once, as when its machine dies: the raylet and all it started
    (workers included, which ``Cluster.remove_node`` alone would leave to exit on their own)."""
    import psutil

    (raylet,) = node.all_processes["raylet"]
    victims = [psutil.Process(raylet.process.pid)]
    victims += victims[0].children(recursive=True)
    for process in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(victims, timeout=10)
    cluster.remove_node(node, allow_graceful=False)  # the node's remaining daemons


def _main(spec: str, storage: str, out: str) -> None:
    """The subprocess: a two-node cluster on 127.0.0.1, the spec run on it, the worker killed."""
    import ray
    from ray.cluster_utils import Cluster

    root = Path(storage).parent
    common = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 100 << 20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**common, "include_dashboard": False, "temp_dir": str(root / "ray")},
    )
    worker = cluster.add_node(**common)
    experiment = Path(storage) / "nodes"
    killed: dict[str, float] = {}

    def kill_worker_once_it_reported_a_task() -> None:
        while not _rows_from(experiment, worker.node_id):
            time.sleep(0.05)
        _kill_node(cluster, worker)
        killed["at"] = time.time()
        killed["rows"] = _rows_from(experiment, worker.node_id)

    threading.Thread(target=kill_worker_once_it_reported_a_task, daemon=True).start()
    outcome = run_experiment(
        load_spec(spec), address=cluster.address, storage=storage, name="nodes", verbose=0
    )
    result = {
        "head": cluster.head_node.node_id,
        "worker": worker.node_id,
        "worker_rows_at_kill": killed.get("rows"),
        "killed_at": killed.get("at"),
        "failed": outcome.failed,
    }
    Path(out).write_text(json.dumps(result))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    _main(*sys.argv[1:4])
