"""A real minatar4 trial's env steps per second over the RLlib path's steady state, same settings.

What it measures (CPU, one torch thread, the machine otherwise idle), with the spec's own PPO
settings and method (default ``benchmarks/minatar4.yaml``, BLIP with its F_prior):

- ``steady``: training iterations of the harness's PPO (``blip_ray.rl.config``, the learner,
  module and callback of a trial) on the sequence's first game with no evaluation and no task end,
  timed after two warm-up iterations, in this process: the benchmark's steady state;
- ``trial``: one real trial, ``blip-ray run`` of the spec cut to one method and one seed (so it
  runs alone), every game, evaluations, task ends and checkpoints included: its env steps over
  Tune's ``time_total_s`` of the trial.

``trial_efficiency`` is trial / steady (target >= 0.8). The trial's time is split by its rows:
training (``train_s``), every evaluation (``eval_s``: the reported episodes inside each task and
after it, the selection episodes after it), the method's end-of-task step (``end_task_s``) and the
rest (building the algorithm, the untrained and random policies' baselines before the first game,
checkpoints, Tune), each as a share of the trial's time; ``trial_train_steps_per_s`` (env steps
over ``train_s``) against ``steady`` says what the training itself loses.

Run: ``.venv/bin/python benchmarks/perf/minatar_trial.py [--spec S] [--method M] [--seed N]
[--steps-per-task N]`` (not in ``make bench``: the whole trial takes about 7-9 minutes on 2 cores;
``--steps-per-task 60000`` gives a rough figure in about 2). Prints ``key=value`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback

import ray  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from pairs import start_local_ray, steady_rl_settings  # noqa: E402

from blip_ray.experiments.specs.experiment import load_spec  # noqa: E402
from blip_ray.rl.config import build_ppo_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WARMUP_ITERATIONS = 2
TARGET = 0.8


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--spec", default="benchmarks/minatar4.yaml", help="an RL spec")
    parser.add_argument("--method", default="blip", help="one of the spec's methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-task", type=int, help="default: the spec's")
    parser.add_argument(
        "--iterations", type=int, default=60, help="timed steady-state iterations (default 60)"
    )
    return parser.parse_args()


def trial_spec(args: argparse.Namespace, directory: Path) -> Path:
    """The spec cut to ``args.method`` and ``args.seed`` (and the budget), written to
    ``directory``."""
    raw = yaml.safe_load((ROOT / args.spec).read_text())
    if args.method not in raw["methods"]:
        sys.exit(f"--method {args.method}: not in {args.spec}; pick one of {list(raw['methods'])}")
    raw["name"] = "trial-efficiency"
    raw["methods"] = {args.method: raw["methods"][args.method]}
    raw["seeds"] = [args.seed]
    raw["rl"].pop("reference_returns", None)  # the report's normalization: not timed here
    if args.steps_per_task:
        raw["rl"]["steps_per_task"] = args.steps_per_task
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def steady_steps_per_s(path: Path, method: str, iterations: int) -> float:
    """Env steps per second of training iterations on the first game (no evaluation)."""
    spec = load_spec(path)
    settings = steady_rl_settings(
        spec.benchmark, spec.rl.ppo, method=method, hp=spec.methods[method]
    )
    algo = build_ppo_config(settings).build_algo()
    try:
        for _ in range(WARMUP_ITERATIONS):
            algo.train()
        steps, start = 0, time.perf_counter()
        for _ in range(iterations):
            result = algo.train()
            steps += int(result["env_runners"]["num_env_steps_sampled"])
        return steps / (time.perf_counter() - start)
    finally:
        algo.stop()


def run_trial(path: Path, storage: Path) -> dict[str, float]:
    """One ``blip-ray run`` of the cut spec; the trial's steps, time and its rows' time split."""
    command = [str(Path(sys.executable).parent / "blip-ray"), "run", str(path), "--quiet"]
    command += ["--storage", str(storage), "--name", "trial"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    (trial,) = (storage / "trial").glob("rl_trainable_*")
    results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    rows = [r for r in results if "task" in r]
    return {
        "env_steps": float(rows[-1]["env_steps"]),
        "time_total_s": float(results[-1]["time_total_s"]),
        "train_s": sum(r["train_s"] for r in rows),
        "eval_s": sum(r["eval_s"] for r in rows),
        "end_task_s": sum(r["end_task_s"] for r in rows),
        "experiment_wall_s": wall,
    }


def main() -> None:
    args = arguments()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = trial_spec(args, Path(tmp))
        start_local_ray()
        steady = steady_steps_per_s(path, args.method, args.iterations)
        ray.shutdown()
        trial = run_trial(path, Path(tmp) / "runs")
    total = trial["time_total_s"]
    rate = trial["env_steps"] / total
    print(f"spec={args.spec}")
    print(f"method={args.method}")
    print(f"steady_steps_per_s={steady:.1f}")
    print(f"trial_env_steps={trial['env_steps']:.0f}")
    print(f"trial_time_total_s={total:.1f}")
    print(f"trial_steps_per_s={rate:.1f}")
    print(f"trial_train_steps_per_s={trial['env_steps'] / trial['train_s']:.1f}")
    rest = total - trial["train_s"] - trial["eval_s"] - trial["end_task_s"]
    for key, value in (("train", trial["train_s"]), ("eval", trial["eval_s"])):
        print(f"trial_{key}_share={value / total:.3f}")
    print(f"trial_end_task_share={trial['end_task_s'] / total:.3f}")
    print(f"trial_rest_share={rest / total:.3f}")
    print(f"experiment_wall_s={trial['experiment_wall_s']:.1f}")
    print(f"trial_efficiency={rate / steady:.3f}")
    print(f"targets_met={'yes' if rate / steady >= TARGET else 'no'}")


if __name__ == "__main__":
    main()
