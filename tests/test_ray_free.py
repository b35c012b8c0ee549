"""Reading specs, ``blip-ray list`` and ``blip-ray report`` never import Ray Tune or RLlib, and a
bad spec ends ``blip-ray run`` before Ray is imported at all.

Each check runs in a fresh interpreter, which then names the Ray modules it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from blip_ray.records.rows import TaskRow

REPO = Path(__file__).parent.parent
HEAVY = ("ray.tune", "ray.rllib")


def ray_modules_after(code: str) -> list[str]:
    """Run ``code`` in a new interpreter (in the repository); the ``ray`` modules it imported."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        """
        import sys
        print("RAY:", *sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RAY:"), done.stdout
    return last.split()[1:]


def heavy(modules: list[str]) -> list[str]:
    """The Ray Tune and RLlib modules among ``modules``."""
    return [m for m in modules if ".".join(m.split(".")[:2]) in HEAVY]


def test_reading_every_spec_imports_no_ray():
    modules = ray_modules_after(
        """
        from pathlib import Path
        from blip_ray.experiments.specs.experiment import load_spec
        for path in sorted(Path("benchmarks").glob("*.yaml")):
            spec = load_spec(path)
            spec.smoke().record()
            assert spec.tasks >= 1
        """
    )
    assert modules == []


def test_list_imports_no_ray():
    modules = ray_modules_after(
        """
        from blip_ray.cli import main
        assert main(["list"]) == 0
        """
    )
    assert modules == []


def test_a_bad_spec_ends_the_run_before_ray_is_imported(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: t\nbenchmark: pdigits\nmethods: {blip: {f_prior: 0}}\nseeds: [0]\n")
    modules = ray_modules_after(
        f"""
        from blip_ray.cli import main
        assert main(["run", {str(spec)!r}, "--storage", {str(tmp_path / "runs")!r}]) == 2
        """
    )
    assert modules == []
    assert not (tmp_path / "runs").exists()


def test_report_imports_neither_tune_nor_rllib(tmp_path):
    experiment = tmp_path / "e"
    _write_trial(experiment / "trial_0", seed=0)
    _write_trial(experiment / "trial_1", seed=1)
    modules = ray_modules_after(
        f"""
        from blip_ray.cli import main
        assert main(["report", {str(experiment)!r}]) == 0
        """
    )
    assert heavy(modules) == []
    assert "finetune" in (experiment / "report.md").read_text()


def _write_trial(trial_dir: Path, *, seed: int) -> None:
    """A finished two-task supervised trial as Tune leaves it: params.json and result.json rows."""
    trial_dir.mkdir(parents=True)
    params = {
        "run": {"benchmark": "pdigits", "track": "supervised", "train_searched": [], "rl": None},
        "method": {"name": "finetune", "hp": {}, "seed": seed},
    }
    (trial_dir / "params.json").write_text(json.dumps(params))
    names, matrix = ["pdigits-0", "pdigits-1"], [[0.9, 0.1], [0.5, 0.9]]
    rows = [
        TaskRow(
            task=t,
            task_name=names[t],
            num_tasks=2,
            task_names=names,
            metric="accuracy",
            row=matrix[t],
            matrix=matrix[: t + 1],
            initial_row=[0.1, 0.1],
            capacity=None,
            state_bytes=0,
        ).to_result()
        for t in range(2)
    ]
    lines = [json.dumps({**row, "trial_id": trial_dir.name}) for row in rows]
    (trial_dir / "result.json").write_text("\n".join(lines) + "\n")


def test_a_dry_run_imports_no_ray_and_starts_nothing(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nbenchmark: pdigits\nmethods: {finetune: {}}\nseeds: [0]\ntasks: 2\n")
    modules = ray_modules_after(
        f"""
        from blip_ray.cli import main
        argv = ["run", {str(spec)!r}, "--smoke", "--dry-run", "--storage", {str(tmp_path / "r")!r}]
        assert main(argv) == 0
        """
    )
    assert modules == []
    assert not (tmp_path / "r").exists()


def test_a_grid_above_the_limit_ends_the_run_before_ray_is_imported(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nbenchmark: pdigits\nmethods: {finetune: {}}\nseeds: [0, 1]\n")
    modules = ray_modules_after(
        f"""
        from blip_ray.cli import main
        assert main(["run", {str(spec)!r}, "--max-trials", "1"]) == 2
        """
    )
    assert modules == []
