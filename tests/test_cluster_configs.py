"""The example deployments in deploy/ stay valid: the launcher config against Ray's own schema,
the KubeRay RayJob's token auth and entrypoint against this repository."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import ray
import yaml

from blip_ray.cli import build_parser
from blip_ray.experiments.spec import load_spec

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
