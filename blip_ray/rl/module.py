"""The continual PPO RLModule: the paper's trunk, one policy and one value head per task.

The trunk comes from ``blip_ray.models`` (``atari_trunk`` for Atari frames, ``minatar_trunk`` for
MinAtar's object maps, ``trunk_linear`` layers for vectors), quantized with BLIP's RL
parameterisation when ``model_config["quantized"]``. The task being trained is the ``active_task``
buffer, so checkpoints and weight syncs carry it; the module also keeps ``tasks_done`` and the
``return_matrix`` so far, which makes a checkpoint enough to resume a continual run on the right
task.

Heads keep each task's own action count; RLlib needs one action space, so logits are padded to the
sequence's ``Discrete(max)`` with :data:`MASKED_LOGIT`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.typing import StateDict
from torch import nn
from torch.nn import functional as F

from blip_ray.models import ModelOptions, atari_trunk, minatar_trunk, trunk_linear
from blip_ray.models.task_state import set_task, task_layers
from blip_ray.quant import DEFAULT_MAX_BIT, QuantMixin

#: Logit of padded actions. Finite on purpose: softmax gives them exactly probability 0, and the
#: entropy and KL terms stay finite (0 * -1e9 = 0, where 0 * -inf would be NaN).
MASKED_LOGIT = -1e9
#: Orthogonal-init gains of the heads (a2c-ppo-acktr's ``Categorical`` and critic, as the paper).
POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0


@dataclasses.dataclass(frozen=True)
class ModuleSettings:
    """``model_config`` of :class:`ContinualPPOModule` (a plain dict in the module spec)."""

    trunk: str
    """``atari_cnn`` for ``(H, W, C)`` Atari frames, ``minatar_cnn`` for ``(10, 10, C)`` MinAtar
    object maps, ``mlp`` for vectors."""
    action_counts: tuple[int, ...]
    """Actions of each task's head, in task order; the action space must hold the largest."""
    quantized: bool = False
    """BLIP's quantized trunk (learner modules only; env-runner copies never need its state)."""
    max_bit: int = DEFAULT_MAX_BIT
    width: float = 1.0
    """``atari_cnn``/``minatar_cnn`` width multiplier (the papers: 1)."""
    fc_width: int | None = None
    """``atari_cnn``/``minatar_cnn`` hidden width override (the papers: 1024, 128)."""
    mlp_hidden: tuple[int, ...] = (64, 64)
    """``mlp`` hidden widths, tanh after each (the official ``MLPBase``)."""
    task_state: str | None = None
    """Per-task state of the plain trunk layers (HAT's ``gates``, PackNet's ``masks``): in every
    copy, env runners' included, since acting for a task needs it."""

    def __post_init__(self) -> None:
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown trunk {self.trunk!r}; known: {', '.join(sorted(TRUNKS))}")
        if not self.action_counts or min(self.action_counts) < 1:
            raise ValueError(f"action_counts must be non-empty and positive: {self.action_counts}")
        if not self.mlp_hidden or min(self.mlp_hidden) < 1:
            raise ValueError(f"mlp_hidden must be non-empty and positive: {self.mlp_hidden}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModuleSettings:
        """Read back :meth:`to_dict`, ignoring keys RLlib merges into every ``model_config``
        (PPO adds ``vf_share_layers``)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        data = {key: value for key, value in data.items() if key in fields}
        data["action_counts"] = tuple(data["action_counts"])
        data["mlp_hidden"] = tuple(data.get("mlp_hidden", cls.mlp_hidden))
        return cls(**data)

    def options(self, input_shape: tuple[int, ...], *, quantized: bool) -> ModelOptions:
        return ModelOptions(
            input_shape=input_shape,
            head_sizes=self.action_counts,
            quantized=quantized,
            variant="rl",
            width=self.width,
            fc_width=self.fc_width,
            max_bit=self.max_bit,
            task_state=self.task_state,
        )


def _image_options(
    name: str, space: gym.spaces.Box, settings: ModuleSettings, quantized: bool
) -> ModelOptions:
    """Channels-last ``(H, W, C)`` observations seen channels-first, as :meth:`features` feeds
    them to the trunk."""
    if len(space.shape) != 3:
        raise ValueError(f"{name} needs (H, W, C) image observations, got {space.shape}")
    height, width, channels = space.shape
    return settings.options((channels, height, width), quantized=quantized)


def _atari_cnn(
    space: gym.spaces.Box, settings: ModuleSettings, quantized: bool
) -> tuple[nn.Module, int]:
    return atari_trunk(_image_options("atari_cnn", space, settings, quantized))


def _minatar_cnn(
    space: gym.spaces.Box, settings: ModuleSettings, quantized: bool
) -> tuple[nn.Module, int]:
    return minatar_trunk(_image_options("minatar_cnn", space, settings, quantized))


def _mlp(space: gym.spaces.Box, settings: ModuleSettings, quantized: bool) -> tuple[nn.Module, int]:
    if len(space.shape) != 1:
        raise ValueError(f"mlp needs vector observations, got {space.shape}")
    options = settings.options(tuple(space.shape), quantized=quantized)
    layers: list[nn.Module] = []
    width = space.shape[0]
    for hidden in settings.mlp_hidden:
        layers += [trunk_linear(options, width, hidden), nn.Tanh()]
        width = hidden
    return nn.Sequential(*layers), width


#: ``trunk(observation_space, settings, quantized) -> (trunk, feature_dim)`` by family name.
TRUNKS: dict[str, Callable[[gym.spaces.Box, ModuleSettings, bool], tuple[nn.Module, int]]] = {
    "atari_cnn": _atari_cnn,
    "minatar_cnn": _minatar_cnn,
    "mlp": _mlp,
}


def _head(in_features: int, out_features: int, gain: float) -> nn.Linear:
    head = nn.Linear(in_features, out_features)
    nn.init.orthogonal_(head.weight, gain=gain)
    nn.init.zeros_(head.bias)
    return head


class ContinualPPOModule(TorchRLModule, ValueFunctionAPI):
    """Shared trunk -> per-task policy head (padded, masked) and per-task value head."""

    @override(TorchRLModule)
    def setup(self) -> None:
        settings = ModuleSettings.from_dict(self.model_config or {})
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise TypeError(f"needs a Discrete action space, got {self.action_space}")
        if int(self.action_space.n) < max(settings.action_counts):
            raise ValueError(
                f"action space {self.action_space} is smaller than a task's "
                f"{max(settings.action_counts)} actions"
            )
        # Env-runner copies (inference_only) get a plain trunk: same parameter names, none of
        # BLIP's six per-parameter buffers, which only the learner uses.
        quantized = settings.quantized and not self.inference_only
        self.trunk, self.feature_dim = TRUNKS[settings.trunk](
            self.observation_space, settings, quantized
        )
        self.task_layers = task_layers(self.trunk)  # a list, not submodules a second time
        counts = settings.action_counts
        self.pi = nn.ModuleList(_head(self.feature_dim, n, POLICY_HEAD_GAIN) for n in counts)
        self.vf = nn.ModuleList(_head(self.feature_dim, 1, VALUE_HEAD_GAIN) for _ in counts)
        num_tasks = len(counts)
        self.register_buffer("active_task", torch.zeros((), dtype=torch.long))
        self.register_buffer("tasks_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("action_counts", torch.tensor(counts, dtype=torch.long))
        self.register_buffer("return_matrix", torch.full((num_tasks, num_tasks), float("nan")))
        # The same after each task on the evaluation episodes reserved for selection.
        self.register_buffer("selection_matrix", torch.full((num_tasks, num_tasks), float("nan")))
        # The untrained policy's return per task (the forward-transfer baseline), kept here so
        # checkpoints carry it.
        self.register_buffer("untrained_returns", torch.full((num_tasks,), float("nan")))
        # A uniformly random policy's return per task: the low end of the per-game normalization.
        self.register_buffer("random_returns", torch.full((num_tasks,), float("nan")))
        self.image_input = len(self.observation_space.shape) == 3
        # Atari frames arrive as uint8 0..255 (the official CNNBase divides by 255 itself);
        # float observations (vectors, MinAtar's 0/1 object maps) go in as they are.
        self.input_scale = 1.0 / 255.0 if self.observation_space.dtype == np.uint8 else None
        if self.inference_only:
            # Env-runner copies only act: eval mode once here, so that forward_exploration and
            # forward_inference need not switch every submodule to eval and back on each step.
            self.eval()
        self.learner_only_keys = frozenset(
            f"trunk.{name}.{buffer}"
            for name, layer in self.trunk.named_modules()
            if isinstance(layer, QuantMixin)
            for buffer, _ in layer.named_buffers(recurse=False)
        )

    @property
    def num_tasks(self) -> int:
        return len(self.pi)

    def features(self, obs: torch.Tensor, task: int | None = None) -> torch.Tensor:
        """Trunk features of raw env observations (channels-last images are permuted here) for
        ``task`` (default: the active task), which a trunk with per-task state serves."""
        x = obs.permute(0, 3, 1, 2) if self.image_input else obs
        x = x.float()
        if self.input_scale is not None:
            x = x * self.input_scale
        if self.task_layers:
            set_task(self.task_layers, self._task() if task is None else task)
        return self.trunk(x)

    def policy_logits(self, obs: torch.Tensor, task: int) -> torch.Tensor:
        """Task ``task``'s head on ``obs``, unpadded (for evaluation and the Fisher)."""
        return self.pi[task](self.features(obs, task))

    def padded_logits(self, features: torch.Tensor, task: int) -> torch.Tensor:
        """Head ``task`` padded to the action space with :data:`MASKED_LOGIT`."""
        logits = self.pi[task](features)
        missing = int(self.action_space.n) - logits.shape[-1]
        return F.pad(logits, (0, missing), value=MASKED_LOGIT) if missing else logits

    def _task(self) -> int:
        return int(self.active_task)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Inference and exploration: logits only, so no embeddings land in the episodes.
        features = self.features(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self.padded_logits(features, self._task())}

    @override(TorchRLModule)
    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if self.training:  # RLlib's: eval mode for the call, train mode back after it
            return super().forward_exploration(batch, **kwargs)
        return self._forward_exploration(batch, **kwargs)

    @override(TorchRLModule)
    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if self.training:
            return super().forward_inference(batch, **kwargs)
        return self._forward_inference(batch, **kwargs)

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features = self.features(batch[Columns.OBS])
        return {
            Columns.ACTION_DIST_INPUTS: self.padded_logits(features, self._task()),
            Columns.EMBEDDINGS: features,
        }

    @override(ValueFunctionAPI)
    def compute_values(
        self, batch: dict[str, Any], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = embeddings if embeddings is not None else self.features(batch[Columns.OBS])
        return self.vf[self._task()](features).squeeze(-1)

    @torch.no_grad()
    def set_active_task(self, task: int) -> None:
        """Train (and act with) the heads of ``task`` from now on."""
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task {task} out of range for {self.num_tasks} heads")
        self.active_task.fill_(task)

    @torch.no_grad()
    def record_returns(self, task: int, row: list[float], selection_row: list[float]) -> None:
        """Row ``task`` of the return matrix (every task's return after training ``task``) and of
        the selection matrix (the same on the episodes reserved for selection)."""
        self.return_matrix[task] = torch.as_tensor(row, dtype=self.return_matrix.dtype)
        self.selection_matrix[task] = torch.as_tensor(selection_row, dtype=self.return_matrix.dtype)
        self.tasks_done.fill_(max(int(self.tasks_done), task + 1))

    def finished_rows(self, *, selection: bool = False) -> list[list[float]]:
        """The return (or ``selection``) matrix's finished rows, as nested lists."""
        matrix = self.selection_matrix if selection else self.return_matrix
        return matrix[: int(self.tasks_done)].tolist()

    @override(TorchRLModule)
    def get_state(
        self,
        components: Any = None,
        *,
        not_components: Any = None,
        inference_only: bool = False,
        **kwargs: Any,
    ) -> StateDict:
        """The full state, or for ``inference_only`` (weight syncs) all but BLIP's buffers.

        The buffers are dropped before the numpy conversion: converting them (six copies of the
        trunk) only to throw them away cost a weight sync as much as ~6% of a PPO iteration.
        """
        if inference_only and not self.inference_only:
            state = {k: v for k, v in self.state_dict().items() if k not in self.learner_only_keys}
            return convert_to_numpy(state)
        return super().get_state(
            components, not_components=not_components, inference_only=inference_only, **kwargs
        )
