"""The Tune trainable of the RL track: one trial = one continual PPO run over a task sequence.

Same contract as the supervised trainable: one ``tune.report`` per finished task with the new row
of the return matrix (raw scores; the report normalizes them per game) and a checkpoint of the
whole RLlib algorithm, so a retried or resumed trial continues from its last finished task.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import torch
from ray import tune
from ray.rllib.algorithms.ppo import PPO

from blip_ray.rl.callbacks import apply_current_task, learner_call
from blip_ray.rl.config import PpoSettings, RlExperimentConfig, build_ppo_config
from blip_ray.rl.evaluation import evaluate_tasks
from blip_ray.rl.sequences import get_rl_sequence

#: Module buffers with per-task baseline returns, measured before training: the untrained
#: policy's (forward transfer) and a uniformly random policy's (the low end of normalization).
BASELINES = ("untrained_returns", "random_returns")


def experiment_config(run: dict[str, Any], method: dict[str, Any]) -> RlExperimentConfig:
    """The RL run of one trial from the spec's shared ``run`` settings and the trial's method."""
    rl = run["rl"]
    sequence = get_rl_sequence(run["benchmark"])
    ppo = None
    if rl["ppo"]:
        ppo = PpoSettings(**{**dict(sequence.ppo), **rl["ppo"]})
    return RlExperimentConfig(
        sequence=run["benchmark"],
        method=method["name"],
        method_hp=dict(method["hp"]),
        steps_per_task=rl["steps_per_task"],
        num_tasks=run["tasks"],
        eval_episodes=rl["eval_episodes"],
        eval_interval=rl["eval_interval"],
        eval_max_steps=rl["eval_max_steps"],
        seed=int(method["seed"]),
        ppo=ppo,
        num_env_runners=rl["num_env_runners"],
    )


def rl_trainable(config: dict[str, Any]) -> None:
    run, method = config["run"], config["method"]
    torch.set_num_threads(max(1, int(run["cpus_per_trial"])))
    cfg = experiment_config(run, method)
    algo = build_ppo_config(cfg).build_algo()
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                algo.restore_from_path(directory)
            apply_current_task(algo)
            module = algo.get_module()
            baselines = {name: getattr(module, name).tolist() for name in BASELINES}
        else:
            baselines = {
                "untrained_returns": learner_call(algo, lambda learner: learner.evaluate()),
                "random_returns": evaluate_tasks(
                    None,
                    get_rl_sequence(cfg.sequence),
                    num_tasks=cfg.tasks,
                    episodes=cfg.eval_episodes,
                    max_steps=cfg.eval_max_steps,
                    seed=cfg.seed + 20_000,
                ),
            }
            _store_baselines(algo, baselines)
        _train(algo, cfg, baselines)
    finally:
        algo.stop()


def _store_baselines(algo: PPO, baselines: dict[str, list[float]]) -> None:
    """Keep the baseline returns in the module (and the learners') so checkpoints carry them."""
    values = {name: torch.tensor(row, dtype=torch.float32) for name, row in baselines.items()}

    def put(module: Any) -> None:
        for name, row in values.items():
            getattr(module, name).copy_(row)

    learner_call(algo, lambda learner: put(learner.continual_module))
    put(algo.get_module())


def _train(algo: PPO, cfg: RlExperimentConfig, baselines: dict[str, list[float]]) -> None:
    sequence = get_rl_sequence(cfg.sequence)
    names = [task.name for task in sequence.tasks[: cfg.tasks]]
    curve: list[dict[str, Any]] = []
    started = time.perf_counter()
    while True:
        result = algo.train()
        if "eval_returns" in result:
            curve.append(
                {"env_steps": int(_lifetime_steps(result)), "returns": list(result["eval_returns"])}
            )
        if "ended_task" not in result:
            continue
        task = int(result["ended_task"])
        matrix = [list(map(float, row)) for row in result["return_matrix"]]
        report = {
            "task": task,
            "task_name": names[task],
            "tasks_done": task + 1,
            "num_tasks": cfg.tasks,
            "task_names": names,
            "metric": "return",
            "row": matrix[-1],
            "matrix": matrix,
            "initial_row": baselines["untrained_returns"],
            "random_row": baselines["random_returns"],
            "budget": {
                "steps_per_task": cfg.task_steps,
                "eval_episodes": cfg.eval_episodes,
                "eval_max_steps": cfg.eval_max_steps,
            },
            "acc": float(np.mean(matrix[-1])),
            "capacity": result.get("capacity"),
            "state_bytes": _state_bytes(algo),
            "curve": curve,
            "env_steps": int(_lifetime_steps(result)),
            "task_wall_s": time.perf_counter() - started,
        }
        curve, started = [], time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            algo.save_to_path(tmp)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
        if task + 1 >= cfg.tasks:
            return


def _lifetime_steps(result: dict[str, Any]) -> float:
    return result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0)


def _state_bytes(algo: PPO) -> int:
    return int(
        learner_call(algo, lambda learner: learner.method.state_bytes(learner.continual_module))
    )
