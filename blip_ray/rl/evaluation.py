"""Evaluation of every task of a sequence on its raw score (no Ray).

The paper's protocol: 10 episodes per game, argmax actions of the game's own head (``greedy``),
raw game score (``bench.Monitor``), every game evaluated after every task. ``sampled`` draws the
actions from the head's softmax instead, as training does. Unseen tasks are evaluated too (their
heads are untrained), so forward transfer can be measured; the official code records 0 for them.
The K episodes of a task run side by side so each step is one batched forward pass. A uniformly
random policy, run the same way, gives the low end of the report's per-game normalization.
"""

from __future__ import annotations

import numpy as np
import torch

from blip_ray.rl.module import ContinualPPOModule
from blip_ray.rl.sequences import RlSequence
from blip_ray.rl.settings import EVAL_POLICIES


@torch.no_grad()
def evaluate_task(
    module: ContinualPPOModule | None,
    sequence: RlSequence,
    task: int,
    *,
    episodes: int,
    max_steps: int | None = None,
    seed: int = 0,
    policy: str = "greedy",
) -> list[float]:
    """Raw returns of ``episodes`` episodes of ``task`` (episode i seeded seed + i), acting with
    ``module``'s head for the task (its argmax for ``policy="greedy"``, a draw from its softmax
    for ``"sampled"``) or, with ``module`` None, uniformly at random over the task's own (minimal)
    action set, never the padding: the random-policy baseline of the report's normalization. Draws
    come from a generator seeded by ``seed`` and the task.

    ``max_steps`` truncates long episodes; None keeps the env's own limit.
    """
    if policy not in EVAL_POLICIES:
        raise ValueError(f"policy: expected one of {', '.join(EVAL_POLICIES)}, got {policy!r}")
    rng = np.random.default_rng([seed, task])
    if module is None:
        actions = sequence.tasks[task].num_actions

        def act(observations: list[np.ndarray]) -> np.ndarray:
            return rng.integers(actions, size=len(observations))

    else:
        device = next(module.parameters()).device

        def act(observations: list[np.ndarray]) -> np.ndarray:
            batch = torch.as_tensor(np.stack(observations), device=device)
            logits = module.policy_logits(batch, task)
            if policy == "greedy":
                return logits.argmax(-1).cpu().numpy()
            # Inverse CDF of the softmax: one uniform draw per episode from the seeded generator.
            cdf = logits.double().softmax(-1).cumsum(-1).cpu().numpy()
            draws = rng.random((len(observations), 1)) * cdf[:, -1:]
            return np.minimum((cdf < draws).sum(-1), cdf.shape[-1] - 1)

    envs = [sequence.make_env(task, training=False) for _ in range(episodes)]
    try:
        observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        steps = 0
        while running.any() and (max_steps is None or steps < max_steps):
            active = np.flatnonzero(running)
            for i, action in zip(active, act([observations[i] for i in active]), strict=True):
                observations[i], reward, terminated, truncated, _ = envs[i].step(int(action))
                returns[i] += float(reward)
                running[i] = not (terminated or truncated)
            steps += 1
    finally:
        for env in envs:
            env.close()
    return returns.tolist()


def evaluate_tasks(
    module: ContinualPPOModule | None,
    sequence: RlSequence,
    *,
    num_tasks: int,
    episodes: int,
    max_steps: int | None = None,
    seed: int = 0,
    policy: str = "greedy",
) -> list[float]:
    """Mean raw return on each of the first ``num_tasks`` tasks (seen and unseen) of ``module``'s
    greedy or sampled ``policy``, or of a uniformly random one with ``module`` None."""
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        return [
            float(
                np.mean(
                    evaluate_task(
                        module,
                        sequence,
                        task,
                        episodes=episodes,
                        max_steps=max_steps,
                        seed=seed,
                        policy=policy,
                    )
                )
            )
            for task in range(num_tasks)
        ]
    finally:
        if module is not None:
            module.train(was_training)
