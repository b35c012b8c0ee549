"""Deterministic evaluation of every task of a sequence on its raw score (no Ray).

The paper's protocol: 10 episodes per game, argmax actions of the game's own head, raw game score
(``bench.Monitor``), every game evaluated after every task. Unseen tasks are evaluated too (their
heads are untrained), so forward transfer can be measured; the official code records 0 for them.
The K episodes of a task run side by side so each step is one batched forward pass. A uniformly
random policy, run the same way, gives the low end of the report's per-game normalization.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from blip_ray.rl.module import ContinualPPOModule
from blip_ray.rl.sequences import RlSequence


@torch.no_grad()
def evaluate_task(
    module: ContinualPPOModule,
    sequence: RlSequence,
    task: int,
    *,
    episodes: int,
    max_steps: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Raw returns of ``episodes`` deterministic episodes of ``task`` (episode i seeded seed + i).

    ``max_steps`` truncates long episodes (smoke runs); None keeps the env's own limit.
    """
    device = next(module.parameters()).device

    def act(observations: list[np.ndarray]) -> np.ndarray:
        batch = torch.as_tensor(np.stack(observations), device=device)
        return module.policy_logits(batch, task).argmax(-1).cpu().numpy()

    return _episodes(sequence, task, act, episodes=episodes, max_steps=max_steps, seed=seed)


def random_policy_returns(
    sequence: RlSequence,
    *,
    num_tasks: int,
    episodes: int,
    max_steps: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Mean raw return of a uniformly random policy on each task (the low end of normalization).

    Actions are drawn uniformly from the task's own (minimal) action set, never the padding, by a
    generator seeded with ``seed`` and the task; episodes are seeded as in :func:`evaluate_task`.
    """
    out = []
    for task in range(num_tasks):
        rng = np.random.default_rng([seed, task])
        actions = sequence.tasks[task].num_actions

        def act(observations: list[np.ndarray]) -> np.ndarray:
            return rng.integers(actions, size=len(observations))  # noqa: B023

        returns = _episodes(sequence, task, act, episodes=episodes, max_steps=max_steps, seed=seed)
        out.append(float(np.mean(returns)))
    return out


def _episodes(
    sequence: RlSequence,
    task: int,
    act: Callable[[list[np.ndarray]], np.ndarray],
    *,
    episodes: int,
    max_steps: int | None,
    seed: int,
) -> list[float]:
    """Raw returns of ``episodes`` episodes run side by side, ``act`` choosing each step's actions
    for the episodes still running."""
    envs = [sequence.make_env(task, training=False) for _ in range(episodes)]
    try:
        observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        steps = 0
        while running.any() and (max_steps is None or steps < max_steps):
            active = np.flatnonzero(running)
            actions = act([observations[i] for i in active])
            for i, action in zip(active, actions, strict=True):
                observations[i], reward, terminated, truncated, _ = envs[i].step(int(action))
                returns[i] += float(reward)
                running[i] = not (terminated or truncated)
            steps += 1
    finally:
        for env in envs:
            env.close()
    return returns.tolist()


def evaluate_tasks(
    module: ContinualPPOModule,
    sequence: RlSequence,
    *,
    num_tasks: int,
    episodes: int,
    max_steps: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Mean raw return on each of the first ``num_tasks`` tasks (seen and unseen)."""
    was_training = module.training
    module.eval()
    try:
        return [
            float(
                np.mean(
                    evaluate_task(
                        module, sequence, task, episodes=episodes, max_steps=max_steps, seed=seed
                    )
                )
            )
            for task in range(num_tasks)
        ]
    finally:
        module.train(was_training)
