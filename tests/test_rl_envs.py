"""RL task sequences without Ray: atari6's six games, cartpole3, padded actions, whole-game eval,
the random-policy baseline."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.env.wrappers.atari_wrappers import EpisodicLifeEnv

from blip_ray.experiments.specs.checks import SpecError
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.rl.envs import TaskEnv, WholeGame
from blip_ray.rl.evaluation import evaluate_tasks
from blip_ray.rl.sequences import (
    RL_SEQUENCES,
    ContinualEnv,
    RlSequence,
    RlTask,
    get_rl_sequence,
    make_training_env,
)
from blip_ray.rl.settings import RlSettings

ATARI6 = ["KungFuMaster", "Boxing", "Jamesbond", "Krull", "Riverraid", "SpaceInvaders"]


def test_registry() -> None:
    assert {"atari6", "cartpole3"} <= set(RL_SEQUENCES)
    with pytest.raises(KeyError, match="known"):
        get_rl_sequence("atari7")


@pytest.mark.parametrize("training", [True, False])
def test_atari6_games_build_and_step(training: bool) -> None:
    sequence = get_rl_sequence("atari6")
    assert [task.name for task in sequence.tasks] == ATARI6
    assert sequence.action_counts == (14, 18, 18, 18, 18, 6)
    for index in range(6):
        env = sequence.make_env(index, training=training)
        try:
            assert env.action_space == gym.spaces.Discrete(18)
            assert env.get_wrapper_attr("task_actions") == sequence.action_counts[index]
            assert env.get_wrapper_attr("task_index") == index
            obs, _ = env.reset(seed=index)
            for _ in range(5):
                obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
            assert np.moveaxis(obs, -1, 0).shape == (4, 84, 84)  # the trunk's channels-first
            assert not (terminated or truncated)
        finally:
            env.close()


def test_actions_past_the_game_become_noop() -> None:
    env = get_rl_sequence("atari6").make_env(5)  # SpaceInvaders: 6 actions
    try:
        assert isinstance(env, TaskEnv)
        assert env.action(3) == 3 and env.action(17) == 0
        assert env.invalid_actions == 1
    finally:
        env.close()


def test_cartpole3_tasks_are_distinct_transforms() -> None:
    sequence = get_rl_sequence("cartpole3")
    assert sequence.trunk == "mlp" and sequence.action_counts == (2, 2, 2)
    observations = []
    for index in range(3):
        env = make_training_env({"sequence": "cartpole3", "task": index})
        obs, _ = env.reset(seed=0)
        raw = np.asarray(env.unwrapped.state, dtype=np.float32)
        # the same start state, re-encoded differently per task, no information lost
        np.testing.assert_allclose(np.sort(np.abs(obs)), np.sort(np.abs(raw)), rtol=1e-6)
        observations.append(obs)
        assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    assert not np.allclose(observations[0], observations[1])
    assert not np.allclose(observations[1], observations[2])
    assert isinstance(ContinualEnv({"sequence": "cartpole3", "task": 2}).unwrapped, gym.Env)


class _Lives:
    def __init__(self) -> None:
        self.count = 3

    def lives(self) -> int:
        return self.count


class _ThreeLives(gym.Env):
    """A stand-in for ALE: reward 1 per step, a life lost every 4 steps, game over at 0."""

    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.ale = _Lives()
        self.steps = 0

    def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN201
        self.ale.count, self.steps = 3, 0
        return np.zeros(1, np.float32), {}

    def step(self, action):  # noqa: ANN001, ANN201
        self.steps += 1
        if self.steps % 4 == 0:
            self.ale.count -= 1
        return np.zeros(1, np.float32), 1.0, self.ale.count == 0, False, {}


def test_whole_game_scores_all_lives() -> None:
    life_episodes = EpisodicLifeEnv(_ThreeLives())
    life_episodes.reset()
    steps = 1
    while not life_episodes.step(0)[2]:
        steps += 1
    assert steps == 4  # training: one life per episode

    game = WholeGame(EpisodicLifeEnv(_ThreeLives()))
    game.reset()
    total, done = 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = game.step(0)
        total += reward
        done = terminated or truncated
    assert total == 12.0 - 2  # 3 lives x 4 steps, minus the no-op step that restarts each life


class _CountingEnv(gym.Env):
    """One-step episodes whose reward is the action taken; refuses actions past its own set."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, actions: int) -> None:
        self.action_space = gym.spaces.Discrete(actions)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        assert 0 <= action < self.action_space.n, f"action {action} past the task's own set"
        return np.zeros(2, np.float32), float(action), True, False, {}


def test_random_policy_draws_from_each_tasks_own_actions_reproducibly() -> None:
    counts = (2, 5)
    sequence = RlSequence(
        name="counting",
        tasks=tuple(RlTask(f"t{i}", n) for i, n in enumerate(counts)),
        trunk="mlp",
        builder=lambda task, training: _CountingEnv(counts[task]),
        description="test",
        steps_per_task=1,
    )
    returns = evaluate_tasks(None, sequence, num_tasks=2, episodes=400, seed=3)
    # Uniform over {0..n-1}: mean (n - 1) / 2 (0.5 and 2.0), within sampling noise.
    assert returns == pytest.approx([0.5, 2.0], abs=0.2)
    assert evaluate_tasks(None, sequence, num_tasks=2, episodes=400, seed=3) == returns
    assert evaluate_tasks(None, sequence, num_tasks=2, episodes=400, seed=4) != returns


def test_random_policy_on_cartpole_scores_like_a_random_policy() -> None:
    returns = evaluate_tasks(None, get_rl_sequence("cartpole3"), num_tasks=3, episodes=20)
    assert all(10 < r < 45 for r in returns), returns  # random CartPole: about 22 on average


class _ThreeToOne(torch.nn.Module):
    """A policy whose head gives actions 0 and 1 probabilities 1/4 and 3/4 on every observation."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.log(torch.tensor([0.25, 0.75])))

    def policy_logits(self, observations: torch.Tensor, task: int) -> torch.Tensor:
        return self.logits.expand(len(observations), 2)


def test_evaluation_acts_greedily_or_samples_the_policy_reproducibly() -> None:
    sequence = RlSequence(
        name="counting",
        tasks=(RlTask("t0", 2),),
        trunk="mlp",
        builder=lambda task, training: _CountingEnv(2),
        description="test",
        steps_per_task=1,
    )
    policy = _ThreeToOne()

    def mean_action(**kwargs: object) -> float:
        return evaluate_tasks(policy, sequence, num_tasks=1, episodes=400, **kwargs)[0]

    assert mean_action() == mean_action(policy="greedy") == 1.0  # argmax: always action 1
    sampled = mean_action(policy="sampled", seed=3)
    assert sampled == pytest.approx(0.75, abs=0.06)
    assert mean_action(policy="sampled", seed=3) == sampled
    assert mean_action(policy="sampled", seed=4) != sampled
    with pytest.raises(ValueError, match="policy: expected one of greedy, sampled"):
        mean_action(policy="boltzmann")


def test_eval_policy_setting_is_checked_when_the_spec_is_read() -> None:
    assert RlSettings.for_sequence("cartpole3").eval_policy == "greedy"
    raw = {"name": "c", "benchmark": "cartpole3", "methods": {"finetune": {}}, "seeds": [0]}
    assert parse_spec({**raw, "rl": {"eval_policy": "sampled"}}).rl.eval_policy == "sampled"
    with pytest.raises(SpecError, match=r"^rl\.eval_policy: expected one of greedy, sampled"):
        parse_spec({**raw, "rl": {"eval_policy": "argmax"}})
    with pytest.raises(SpecError, match=r"^rl\.eval_policy: expected a non-empty string"):
        parse_spec({**raw, "rl": {"eval_policy": 1}})
