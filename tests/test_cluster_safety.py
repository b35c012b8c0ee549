"""Safe defaults: the dashboard on loopback, checkpoints loaded as weights only, and example
deployments (deploy/) that keep token authentication on and stay valid against Ray's own schema
and this repository."""

from __future__ import annotations

import json
import os
import pickle
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import torch
import yaml

from blip_ray.cli import build_parser
from blip_ray.experiments.cluster import connect, embedded
from blip_ray.experiments.specs.experiment import load_spec
from blip_ray.supervised import LoopState

REPO = Path(__file__).resolve().parent.parent


def test_the_cluster_launcher_config_fits_rays_schema_and_keeps_auth_on():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "deploy" / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command and "RAY_AUTH_TOKEN_PATH" in command
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]


def test_the_rayjob_runs_a_committed_spec_with_token_auth_on_shared_storage():
    job, claim = yaml.safe_load_all((REPO / "deploy" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and claim["kind"] == "PersistentVolumeClaim"
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == ray.__version__
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[0] == "blip-ray"
    args = build_parser().parse_args(words[1:])
    load_spec(REPO / args.spec)
    for pod in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:  # storage on every node
        (container,) = pod["template"]["spec"]["containers"]
        assert any(args.storage.startswith(m["mountPath"]) for m in container["volumeMounts"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_embedded_instance_keeps_its_dashboard_on_loopback(monkeypatch):
    calls = []
    head = embedded.EmbeddedRay(holder=None, address="127.0.0.1:40000")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(connect, "_embedded", None)  # restored after the test
    monkeypatch.setattr(connect.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(
        connect.EmbeddedRay, "start", lambda num_cpus: calls.append(num_cpus) or head
    )
    monkeypatch.setattr(connect.ray, "init", lambda **kwargs: calls.append(kwargs))
    connect.init_ray(None)
    cpus, driver = calls
    assert cpus == os.cpu_count() and connect._embedded is head
    assert driver["address"] == "127.0.0.1:40000" and driver["_node_ip_address"] == "127.0.0.1"
    held = embedded.head_init_kwargs(cpus)  # what the holder passes to ray.init
    assert held["address"] == "local" and held["include_dashboard"] is False
    assert held["dashboard_host"] == "127.0.0.1" and held["_node_ip_address"] == "127.0.0.1"


class _Payload:
    """Unpickling this calls ``Path.touch``: what a tampered checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_carrying_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    torch.save({"next_task": 1, "model": _Payload(marker)}, checkpoint / LoopState.FILE)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        LoopState.load(checkpoint)
    assert not marker.exists()
