"""The MinAtar sequences: padded observations and actions, sticky actions, seeding, the MinAtar
trunk, a 2-game continual PPO run through RLlib, and the refusal when MinAtar is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from cl_fixtures import continual_settings
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from blip_ray import quant
from blip_ray.cli import main
from blip_ray.experiments.specs.checks import SpecError
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.rl.envs import (
    MINATAR_CHANNELS,
    MINATAR_MAX_EPISODE_STEPS,
    MINATAR_STICKY_ACTION_PROB,
    MinAtarEnv,
    TaskEnv,
)
from blip_ray.rl.module import MASKED_LOGIT, ContinualPPOModule, ModuleSettings
from blip_ray.rl.sequences import MINATAR_GAMES, get_rl_sequence

GAMES = [game for _, game, _ in MINATAR_GAMES]
SPACE = gym.spaces.Box(0.0, 1.0, (10, 10, MINATAR_CHANNELS), np.float32)


def test_sequences_list_the_games_in_order() -> None:
    minatar4, minatar5 = get_rl_sequence("minatar4"), get_rl_sequence("minatar5")
    assert [t.name for t in minatar4.tasks] == ["SpaceInvaders", "Breakout", "Asterix", "Freeway"]
    assert [t.name for t in minatar5.tasks] == [*(t.name for t in minatar4.tasks), "Seaquest"]
    assert minatar5.action_counts == (4, 3, 5, 3, 6)
    assert minatar4.max_actions == minatar5.max_actions == 6
    assert minatar4.trunk == "minatar_cnn" and minatar4.missing_requirement() is None
    for task in range(5):
        env = minatar5.make_env(task, training=task % 2 == 0)
        assert env.action_space == gym.spaces.Discrete(6) and env.observation_space == SPACE
        assert env.get_wrapper_attr("task_actions") == minatar5.action_counts[task]
        assert env.spec is None or env.spec.max_episode_steps == MINATAR_MAX_EPISODE_STEPS
        env.close()


def test_minatar3_is_minatar4_without_asterix_game_for_game() -> None:
    minatar3, minatar4 = get_rl_sequence("minatar3"), get_rl_sequence("minatar4")
    assert [t.name for t in minatar3.tasks] == ["SpaceInvaders", "Breakout", "Freeway"]
    assert minatar3.action_counts == (4, 3, 3) and minatar3.max_actions == 6
    assert (minatar3.ppo, minatar3.steps_per_task) == (minatar4.ppo, minatar4.steps_per_task)
    for own, theirs in ((0, 0), (1, 1), (2, 3)):  # Freeway is minatar4's fourth game
        a, b = minatar3.make_env(own, training=False), minatar4.make_env(theirs, training=False)
        np.testing.assert_array_equal(a.reset(seed=own)[0], b.reset(seed=own)[0])
        for action in (1, 2, 0, 5, 3):
            np.testing.assert_array_equal(a.step(action)[0], b.step(action)[0])
        assert a.get_wrapper_attr("task_actions") == b.get_wrapper_attr("task_actions")
        a.close(), b.close()


@pytest.mark.parametrize("game", GAMES)
def test_observations_are_the_games_state_zero_padded(game: str) -> None:
    from minatar import Environment

    env, reference = MinAtarEnv(game), Environment(game)
    observation, _ = env.reset(seed=5)
    reference.seed(5)
    reference.reset()
    minimal = reference.minimal_action_set()
    rng = np.random.default_rng(0)
    for _ in range(60):
        channels = reference.state_shape()[2]
        assert observation.dtype == np.float32 and observation.shape == (10, 10, 10)
        np.testing.assert_array_equal(observation[..., :channels], reference.state())
        assert not observation[..., channels:].any()  # the padded channels stay zero
        action = int(rng.integers(len(minimal)))
        observation, reward, terminated, _, _ = env.step(action)
        # padded action i is the game's minimal_action_set()[i]: the same step as MinAtar's own
        assert (reward, terminated) == reference.act(minimal[action])
        if terminated:
            break


def test_padded_actions_map_to_the_minimal_set_and_the_module_masks_the_rest() -> None:
    sequence = get_rl_sequence("minatar4")
    env = sequence.make_env(1)  # Breakout: n, l, r
    game = env.unwrapped.game
    played: list[int] = []
    real_act = game.env.act
    game.sticky_action_prob = 0.0
    game.env.act = lambda a: (played.append(a), real_act(a))[1]
    env.reset(seed=0)
    for action in (0, 1, 2, 5):
        env.step(action)
    assert played == [0, 1, 3, 0] == [*game.minimal_action_set(), 0]
    assert isinstance(env, TaskEnv) and env.invalid_actions == 1

    module = build_module(ModuleSettings(trunk="minatar_cnn", action_counts=sequence.action_counts))
    for task, count in enumerate(sequence.action_counts):
        module.set_active_task(task)
        logits = module.forward_exploration({Columns.OBS: observations()})
        logits = logits[Columns.ACTION_DIST_INPUTS]
        assert logits.shape == (3, 6) and torch.all(logits[:, count:] == MASKED_LOGIT)
        assert torch.all(logits[:, :count] > MASKED_LOGIT)


def test_sticky_actions_repeat_the_last_action_one_time_in_ten() -> None:
    env = MinAtarEnv("breakout")
    assert env.game.sticky_action_prob == MINATAR_STICKY_ACTION_PROB == 0.1
    played: list[int] = []
    real_act = env.game.env.act
    env.game.env.act = lambda a: (played.append(a), real_act(a))[1]
    env.reset(seed=1)
    asked = [1 + 2 * (i % 2) for i in range(4000)]  # l, r, l, r, ...: never the last action
    for action in asked:
        env.step({1: 1, 3: 2}[action])  # Breakout's minimal set n, l, r: l is 1, r is 2
    repeated = np.mean([p != a for p, a in zip(played, asked, strict=True)])
    assert 0.08 < repeated < 0.12, repeated


@pytest.mark.parametrize("game", ["asterix", "seaquest"])
def test_seeded_resets_replay_the_same_episode(game: str) -> None:
    def episode(env: gym.Env, seed: int) -> list[np.ndarray]:
        observations = [env.reset(seed=seed)[0]]
        for step in range(150):
            observation, _, terminated, truncated, _ = env.step(step % env.action_space.n)
            observations.append(observation)
            if terminated or truncated:
                break
        return observations

    env, other = MinAtarEnv(game), MinAtarEnv(game)
    first = episode(env, 3)
    episode(env, 9)  # a different episode in between leaves no trace (last action included)
    for replay in (episode(env, 3), episode(other, 3)):
        assert len(replay) == len(first)
        assert all(np.array_equal(a, b) for a, b in zip(first, replay, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, episode(other, 4), strict=False))


def build_module(settings: ModuleSettings) -> ContinualPPOModule:
    return RLModuleSpec(
        module_class=ContinualPPOModule,
        observation_space=SPACE,
        action_space=gym.spaces.Discrete(6),
        model_config=settings.to_dict(),
    ).build()


def observations(batch: int = 3) -> torch.Tensor:
    return (torch.rand(batch, 10, 10, MINATAR_CHANNELS) < 0.2).float()


@pytest.mark.parametrize(
    ("quantized", "task_state"), [(False, None), (True, None), (False, "gates"), (False, "masks")]
)
def test_minatar_trunk_builds_every_way_a_method_asks(quantized: bool, task_state: str) -> None:
    settings = ModuleSettings(
        trunk="minatar_cnn", action_counts=(4, 3, 5, 3), quantized=quantized, task_state=task_state
    )
    module = build_module(settings)
    assert module.input_scale is None  # 0/1 maps: not divided by 255
    layers = (module.trunk.conv, module.trunk.fc)  # conv 16 3x3, fc 128: 132,656 parameters
    assert sum(layer.weight.numel() + layer.bias.numel() for layer in layers) == 132_656
    assert len(quant.blip_layers(module)) == (2 if quantized else 0)
    assert len(module.task_layers) == (2 if task_state else 0)
    batch = {Columns.OBS: observations(5)}
    out = module.forward_train(batch)
    assert out[Columns.EMBEDDINGS].shape == (5, 128)
    for task in range(4):
        module.set_active_task(task)
        assert module.policy_logits(batch[Columns.OBS], task).shape == (5, (4, 3, 5, 3)[task])
        assert module.compute_values(batch).shape == (5,)


@pytest.mark.ray
def test_two_minatar_games_switch_evaluate_and_restore(ray_session: Any, tmp_path: Path) -> None:
    from blip_ray.rl.callbacks import learner_call
    from blip_ray.rl.config import build_ppo_config

    settings = continual_settings(
        "blip",
        sequence="minatar4",
        num_tasks=2,
        steps_per_task=128,
        eval_episodes=2,
        eval_interval=1,
        eval_max_steps=30,
        ppo={"num_envs": 2, "rollout_length": 32, "num_minibatches": 2, "num_epochs": 1},
    )

    def runner(algorithm: Any) -> tuple[int, tuple[int, ...], int]:
        er = algorithm.env_runner
        tasks = tuple(er.env.unwrapped.get_attr("task_index"))
        return er.config.env_config["task"], tasks, int(er.module.active_task)

    def state(algorithm: Any) -> dict[str, torch.Tensor]:
        return learner_call(
            algorithm,
            lambda learner: {
                k: v.clone() for k, v in learner.continual_module.state_dict().items()
            },
        )

    config = build_ppo_config(settings)
    algorithm = config.build_algo()
    try:
        results = [algorithm.train() for _ in range(3)]
        assert [r["active_task"] for r in results] == [0, 1, 1]
        ended = results[1]  # 2 x 64 env steps: SpaceInvaders' budget is spent
        assert ended["ended_task"] == 0 and len(ended["eval_returns"]) == 2
        assert all(np.isfinite(ended["eval_returns"])) and ended["capacity"] > 0
        assert runner(algorithm) == (1, (1, 1), 1)  # the envs play Breakout now
        algorithm.save_to_path(str(tmp_path))
        saved = state(algorithm)
    finally:
        algorithm.stop()

    restored = config.build_algo()
    try:
        restored.restore(str(tmp_path))
        assert runner(restored) == (1, (1, 1), 1)
        loaded = state(restored)
        assert int(loaded["active_task"]) == 1 and int(loaded["tasks_done"]) == 1
        for key, value in saved.items():
            torch.testing.assert_close(loaded[key], value, equal_nan=True)
        final = restored.train()
        assert final["ended_task"] == 1 and len(final["return_matrix"]) == 2
        trained = state(restored)
        assert torch.equal(trained["pi.0.weight"], loaded["pi.0.weight"])  # SpaceInvaders' head
        assert not torch.equal(trained["pi.1.weight"], loaded["pi.1.weight"])
    finally:
        restored.stop()


@pytest.fixture
def without_minatar(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "minatar" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("without_minatar")
def test_a_minatar_spec_without_minatar_exits_2_with_the_install_command(capsys) -> None:
    with pytest.raises(SpecError, match=r"^benchmark: minatar5 needs .*pip install"):
        parse_spec(
            {"name": "m", "benchmark": "minatar5", "methods": {"finetune": {}}, "seeds": [0]}
        )
    assert main(["run", "benchmarks/minatar4.yaml"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "minatar4 needs the optional package 'minatar'" in error
    assert "pip install 'blip-ray[minatar]'" in error


def test_list_shows_the_minatar_sequences(capsys) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  minatar4       4 tasks, trunk minatar_cnn" in lines
    assert "  minatar5       5 tasks, trunk minatar_cnn" in lines
    assert "  minatar3       3 tasks, trunk minatar_cnn" in lines
