"""Lean env-runner connectors: what RLlib's default pieces give a stateless single-agent module,
in one step each.

Every env step of sampling runs the env-to-module and module-to-env pipelines once. RLlib's
defaults are general (multi-agent, recurrent modules, nested spaces): they gather each episode's
last observation as a per-episode item, batch the items, and after the forward pass split every
output column back into per-episode items only to collect them again in env order. For the
continual module (one agent, no recurrent state, array observations) that is the same data in the
same order, so the two pieces here produce it directly:

- :class:`BatchObservations` replaces ``AddObservationsFromEpisodesToBatch``,
  ``AddTimeDimToBatchAndZeroPad``, ``AddStatesFromEpisodesToBatch``, ``BatchIndividualItems`` and
  ``NumpyToTensor``: ``{obs: tensor}`` of the episodes' last observations, in episode order.
- :class:`ActionsToEnv` follows RLlib's own ``GetActions`` (the action sampling is untouched) and
  replaces ``TensorToNumpy``, ``UnBatchToIndividualItems``, ``RemoveSingleTsTimeRankFromBatch``,
  ``NormalizeAndClipActions`` (a no-op for discrete actions) and ``ListifyDataForVectorEnv``: the
  columns as numpy arrays, indexed per env by the env runner as the default lists are.

``blip_ray.rl.config.build_ppo_config`` installs them in place of the default pipelines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.annotations import override
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.spaces.space_utils import batch as batch_items
from ray.rllib.utils.torch_utils import convert_to_torch_tensor


def _check_supported(rl_module: Any, episodes: list[Any]) -> None:
    if episodes and not isinstance(episodes[0], SingleAgentEpisode):
        raise TypeError("the lean env-runner connectors serve single-agent episodes only")
    if rl_module is not None and rl_module.is_stateful():
        raise TypeError("the lean env-runner connectors serve stateless modules only")


class BatchObservations(ConnectorV2):
    """Env-to-module: the episodes' last observations, batched, as a tensor on ``device``."""

    def __init__(
        self,
        input_observation_space: Any = None,
        input_action_space: Any = None,
        *,
        device: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self._device = device

    @override(ConnectorV2)
    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any], **kwargs: Any
    ) -> Any:
        if Columns.OBS in batch:
            return batch
        _check_supported(rl_module, episodes)
        observations = [episode.get_observations(-1) for episode in episodes]
        batch[Columns.OBS] = convert_to_torch_tensor(
            batch_items(observations, individual_items_already_have_batch_dim="auto"),
            device=self._device,
        )
        return batch


class ActionsToEnv(ConnectorV2):
    """Module-to-env, after ``GetActions``: every column as one numpy array in env order."""

    @override(ConnectorV2)
    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any], **kwargs: Any
    ) -> Any:
        _check_supported(rl_module, episodes)
        batch = convert_to_numpy(batch)
        for column in (Columns.ACTIONS, Columns.ACTIONS_FOR_ENV):
            if column in batch:  # the defaults hand the env a fresh array
                batch[column] = np.array(batch[column])
        return batch
