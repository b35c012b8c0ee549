"""Plugins: a user's method and benchmark, registered in their own files, run like built-in ones.

In-process tests restore every registry afterwards, so the example's ``l2`` and ``rotated_digits``
never leak into other tests. The end-to-end runs are subprocesses with an embedded Ray of their own:
that is where the workers' setup hook, not the driver's import, must bring the plugins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from blip_ray import plugins
from blip_ray.cli import main
from blip_ray.data import SEQUENCES
from blip_ray.experiments.specs.checks import SpecError
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.methods import METHODS, TaskSamples, make_method
from blip_ray.models import MODELS
from blip_ray.rl.sequences import RL_SEQUENCES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugins"
METHOD_FILE = "examples/plugins/l2_method.py"
BENCHMARK_FILE = "examples/plugins/rotated_digits.py"


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run from the repository root; every registry and loaded plugin restored afterwards."""
    monkeypatch.chdir(ROOT)
    saved = [(registry, dict(registry)) for registry in (METHODS, SEQUENCES, RL_SEQUENCES, MODELS)]
    loaded, modules = dict(plugins._LOADED), set(sys.modules)
    yield
    for registry, content in saved:
        registry.clear()
        registry.update(content)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.mark.usefixtures("registries")
def test_a_spec_names_what_its_plugins_register() -> None:
    raw = {
        "name": "p",
        "benchmark": "rotated_digits",
        "plugins": [BENCHMARK_FILE],
        "methods": {"l2": {"strength": 0.5}, "finetune": {}},
        "seeds": [0],
    }
    with pytest.raises(SpecError, match=r"^methods: unknown method 'l2'"):
        parse_spec(raw)  # the benchmark's plugin alone
    spec = parse_spec(raw, plugins=[METHOD_FILE])  # --plugin adds the method's
    assert spec.plugins == (METHOD_FILE, BENCHMARK_FILE)
    assert spec.methods["l2"] == {"strength": 0.5} and spec.network == "mlp" and spec.tasks == 4
    parse_spec(raw, plugins=[METHOD_FILE, BENCHMARK_FILE])  # imported once: no double register
    with pytest.raises(SpecError, match=r"^methods\.l2\.strength: must be >= 0, got -1"):
        parse_spec({**raw, "methods": {"l2": {"strength": -1}}})


@pytest.mark.usefixtures("registries")
def test_the_example_method_pulls_the_trunk_towards_the_last_task() -> None:
    plugins.load_plugins([METHOD_FILE])
    method = make_method("l2", strength=2.0)
    model = torch.nn.Module()
    model.trunk = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.trunk.weight.copy_(torch.tensor([[1.0, -1.0]]))
    assert method.penalty(model, 0, torch.zeros(1, 2)) is None  # nothing to keep yet
    method.after_task(model, 0, samples=TaskSamples(batches=None, logits=None))
    with torch.no_grad():
        model.trunk.weight.copy_(torch.tensor([[2.0, 1.0]]))
    # 2 / 2 * ((2 - 1)^2 + (1 + 1)^2) = 5
    assert method.penalty(model, 1, torch.zeros(1, 2)).item() == pytest.approx(5.0)
    restored = make_method("l2", strength=2.0)
    restored.load_state_dict(method.state_dict())
    assert restored.penalty(model, 1, torch.zeros(1, 2)).item() == pytest.approx(5.0)


@pytest.mark.usefixtures("registries")
def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: b\nbenchmark: pdigits\nplugins: [{broken}]\nmethods: {{finetune: {{}}}}\n"
        "seeds: [0]\n"
    )
    assert main(["run", str(spec)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"plugin {broken}: ModuleNotFoundError: No module named 'not_a_module_anywhere'" in error
    assert main(["list", "--plugin", "no_such_package.methods"]) == 2
    assert "plugin no_such_package.methods: ModuleNotFoundError" in capsys.readouterr().err
    with pytest.raises(SpecError, match=r"^plugins: expected a list"):
        parse_spec({"name": "b", "benchmark": "pdigits", "plugins": "x.py", "methods": {},
                    "seeds": [0]})  # fmt: skip


@pytest.mark.usefixtures("registries")
def test_list_shows_a_plugins_method_and_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--plugin", METHOD_FILE, "--plugin", BENCHMARK_FILE]) == 0
    out = capsys.readouterr().out
    assert "  rotated_digits  4 tasks of 64, network mlp" in out
    assert "  l2          supervised, rl: strength=1.0" in out


@pytest.mark.usefixtures("registries")
def test_a_module_plugin_and_the_worker_hook_find_files_where_the_driver_or_cwd_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "mylab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        textwrap.dedent(
            """
            from blip_ray.models import register_model
            from blip_ray.models.mlp import build_mlp

            register_model("mylab_mlp")(build_mlp)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins.load_plugins(["mylab.nets"])
    assert "mylab_mlp" in MODELS
    # A node whose copy of the working directory lies elsewhere: the driver's absolute path is
    # missing there, the path as given is found from the worker's working directory.
    elsewhere = tmp_path / "node"
    (elsewhere / "examples" / "plugins").mkdir(parents=True)
    (elsewhere / METHOD_FILE).write_text((ROOT / METHOD_FILE).read_text())
    monkeypatch.chdir(elsewhere)
    entries = [[METHOD_FILE, str(tmp_path / "gone" / "l2_method.py")]]
    monkeypatch.setenv(plugins.PLUGINS_ENV, json.dumps(entries))
    plugins.setup_worker()
    assert "l2" in METHODS


def _blip_ray(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    return subprocess.run(
        [sys.executable, "-m", "blip_ray.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.ray
def test_the_example_runs_end_to_end_through_blip_ray_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = _blip_ray(
        "run", "examples/plugins/spec.yaml", "--smoke", "--quiet", "--storage", str(runs),
        cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (experiment,) = runs.glob("plugins-example-*")
    methods = {
        json.loads(p.read_text())["method"]["name"] for p in experiment.glob("*/params.json")
    }
    assert methods == {"l2", "finetune"}
    report = (experiment / "report.md").read_text()
    assert "| l2 |" in report and "Trials: 2 ok" in report


@pytest.mark.ray
def test_every_ray_worker_imports_the_plugins_through_the_setup_hook(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import ray
        from blip_ray.experiments.cluster.connect import init_ray
        from blip_ray.plugins import worker_runtime_env

        init_ray(None, runtime_env=worker_runtime_env([{METHOD_FILE!r}, {BENCHMARK_FILE!r}]))

        @ray.remote
        def registered():  # this worker imported nothing of its own
            from blip_ray.data import SEQUENCES
            from blip_ray.methods import METHODS
            return "l2" in METHODS, "rotated_digits" in SEQUENCES

        import blip_ray.methods, blip_ray.data
        print("driver", "l2" in blip_ray.methods.METHODS)
        print("worker", *ray.get(registered.remote()))
        ray.shutdown()
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "driver False" in lines and "worker True True" in lines


RL_PLUGIN = """
import dataclasses

from blip_ray.rl.sequences import get_rl_sequence, register_rl_sequence

# cartpole3's first two tasks under a name of the plugin's own
base = get_rl_sequence("cartpole3")
register_rl_sequence(dataclasses.replace(base, name="mycart", tasks=base.tasks[:2]))
"""


@pytest.mark.ray
@pytest.mark.usefixtures("registries")
def test_an_rl_sequence_from_a_plugin_trains_like_a_built_in_one(ray_session, tmp_path) -> None:
    from blip_ray.experiments.run.launch import run_experiment
    from blip_ray.records.trials import load_trials

    plugin = tmp_path / "mycart.py"
    plugin.write_text(RL_PLUGIN)
    raw = {"name": "rlp", "benchmark": "mycart", "methods": {"finetune": {}}, "seeds": [0]}
    with pytest.raises(SpecError, match=r"^benchmark: unknown 'mycart'"):
        parse_spec(raw)
    spec = parse_spec({**raw, "plugins": [str(plugin)]}).smoke()
    assert spec.track == "rl" and spec.tasks == 2 and "mycart" in RL_SEQUENCES
    outcome = run_experiment(spec, storage=str(tmp_path / "runs"), verbose=0)
    (trial,) = load_trials(outcome.experiment_dir)
    assert trial.status == "ok" and trial.task_names == ["cartpole-0", "cartpole-1"]
