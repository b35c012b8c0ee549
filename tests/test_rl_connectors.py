"""The lean env-runner connectors give the data of RLlib's default pipelines."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from cl_fixtures import continual_settings
from ray.rllib.connectors.env_to_module import (
    AddObservationsFromEpisodesToBatch,
    AddStatesFromEpisodesToBatch,
    AddTimeDimToBatchAndZeroPad,
    BatchIndividualItems,
    EnvToModulePipeline,
    NumpyToTensor,
)
from ray.rllib.connectors.module_to_env import (
    GetActions,
    ListifyDataForVectorEnv,
    ModuleToEnvPipeline,
    NormalizeAndClipActions,
    RemoveSingleTsTimeRankFromBatch,
    TensorToNumpy,
    UnBatchToIndividualItems,
)
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from blip_ray.rl.config import build_ppo_config
from blip_ray.rl.connectors import ActionsToEnv, BatchObservations
from blip_ray.rl.module import ContinualPPOModule, ModuleSettings

SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACTIONS = gym.spaces.Discrete(3)


def module() -> ContinualPPOModule:
    return RLModuleSpec(
        module_class=ContinualPPOModule,
        observation_space=SPACE,
        action_space=ACTIONS,
        model_config=ModuleSettings(trunk="mlp", action_counts=(2, 3)).to_dict(),
        inference_only=True,
    ).build()


def episodes(count: int = 5) -> list[SingleAgentEpisode]:
    rng = np.random.default_rng(0)
    result = []
    for i in range(count):
        episode = SingleAgentEpisode(observation_space=SPACE, action_space=ACTIONS)
        episode.add_env_reset(observation=rng.normal(size=4).astype(np.float32))
        for _ in range(i):  # episodes at different lengths, one just reset
            episode.add_env_step(
                observation=rng.normal(size=4).astype(np.float32),
                action=int(rng.integers(3)),
                reward=1.0,
            )
        result.append(episode)
    return result


def default_env_to_module() -> EnvToModulePipeline:
    return EnvToModulePipeline(
        input_observation_space=SPACE,
        input_action_space=ACTIONS,
        connectors=[
            AddObservationsFromEpisodesToBatch(),
            AddTimeDimToBatchAndZeroPad(),
            AddStatesFromEpisodesToBatch(),
            BatchIndividualItems(),
            NumpyToTensor(),
        ],
    )


def default_module_to_env() -> ModuleToEnvPipeline:
    return ModuleToEnvPipeline(
        input_observation_space=SPACE,
        input_action_space=ACTIONS,
        connectors=[
            GetActions(),
            TensorToNumpy(),
            UnBatchToIndividualItems(),
            RemoveSingleTsTimeRankFromBatch(),
            NormalizeAndClipActions(ACTIONS, normalize_actions=False, clip_actions=False),
            ListifyDataForVectorEnv(),
        ],
    )


def test_observations_batched_as_the_default_pipeline() -> None:
    rl_module, eps = module(), episodes()
    shared: dict = {}
    default = default_env_to_module()(
        rl_module=rl_module, batch={}, episodes=eps, explore=True, shared_data=shared
    )
    lean = BatchObservations()(
        rl_module=rl_module, batch={}, episodes=eps, explore=True, shared_data={}
    )
    assert default.keys() == lean.keys() == {Columns.OBS}
    assert lean[Columns.OBS].dtype == default[Columns.OBS].dtype == torch.float32
    assert torch.equal(lean[Columns.OBS], default[Columns.OBS])


def test_actions_and_model_outputs_as_the_default_pipeline() -> None:
    rl_module, eps = module(), episodes()
    shared: dict = {}
    to_module = default_env_to_module()(
        rl_module=rl_module, batch={}, episodes=eps, explore=True, shared_data=shared
    )
    with torch.no_grad():
        out = rl_module.forward_exploration(to_module)
    torch.manual_seed(3)
    default = default_module_to_env()(
        rl_module=rl_module, batch=dict(out), episodes=eps, explore=True, shared_data=shared
    )
    torch.manual_seed(3)
    lean_pipeline = ModuleToEnvPipeline(
        input_observation_space=SPACE,
        input_action_space=ACTIONS,
        connectors=[GetActions(), ActionsToEnv()],
    )
    lean = lean_pipeline(
        rl_module=rl_module, batch=dict(out), episodes=eps, explore=True, shared_data={}
    )
    assert default.keys() == lean.keys()
    actions = default[Columns.ACTIONS]
    assert isinstance(lean[Columns.ACTIONS], np.ndarray)
    assert lean[Columns.ACTIONS].dtype == actions.dtype
    np.testing.assert_array_equal(lean[Columns.ACTIONS], actions)
    for column, items in default.items():  # what the env runner stores per env
        for env_index in range(len(eps)):
            want, got = np.asarray(items[env_index]), np.asarray(lean[column][env_index])
            assert want.dtype == got.dtype and want.shape == got.shape
            np.testing.assert_array_equal(got, want)


def test_the_config_installs_the_lean_connectors() -> None:
    config = build_ppo_config(continual_settings("finetune"))
    env_to_module = config.build_env_to_module_connector(spaces=None)
    assert [type(c) for c in env_to_module.connectors] == [BatchObservations]
    module_to_env = config.build_module_to_env_connector(spaces=None)
    assert [type(c) for c in module_to_env.connectors] == [GetActions, ActionsToEnv]
